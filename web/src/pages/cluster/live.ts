// What the cluster's live lists share: a refresh every few seconds while the page is shown
// (not while the tab is hidden), and buckets written as ranges.
import { onBeforeUnmount, onMounted, ref } from 'vue'

/** How often the live lists ask again. */
export const LIVE_REFRESH_MS = 5000

/**
 * useAutoRefresh calls fn every interval while on is true and the document is visible, and once
 * at once when the tab comes back.
 */
export function useAutoRefresh(fn: () => unknown, interval = LIVE_REFRESH_MS) {
  const on = ref(true)
  let timer: ReturnType<typeof setInterval> | undefined
  const tick = () => {
    if (on.value && document.visibilityState !== 'hidden') void fn()
  }
  const visible = () => {
    if (document.visibilityState === 'visible') tick()
  }
  onMounted(() => {
    timer = setInterval(tick, interval)
    document.addEventListener('visibilitychange', visible)
  })
  onBeforeUnmount(() => {
    if (timer) clearInterval(timer)
    document.removeEventListener('visibilitychange', visible)
  })
  return { on }
}

/** bucketRanges writes bucket numbers as ranges: [0,1,2,3,7,9,10] → "0–3, 7, 9–10". */
export function bucketRanges(buckets: readonly number[] | null | undefined): string {
  const b = [...(buckets ?? [])].sort((x, y) => x - y)
  const parts: string[] = []
  for (let i = 0; i < b.length; ) {
    let j = i
    while (j + 1 < b.length && b[j + 1] === b[j]! + 1) j++
    parts.push(j > i ? `${b[i]}–${b[j]}` : `${b[i]}`)
    i = j + 1
  }
  return parts.join(', ')
}

/** sinceText is how long ago a time was, in seconds, minutes, hours or days ("12s", "3m", "2h", "5d"). */
export function sinceText(at: string, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - new Date(at).getTime()) / 1000))
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m`
  if (s < 86400) return `${Math.floor(s / 3600)}h`
  return `${Math.floor(s / 86400)}d`
}
