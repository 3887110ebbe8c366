// The dashboard's figures from GET dashboard: the activity per minute (or hour) summed over
// the scenes, the range's totals, and the scenes that fail most.
import type { Schemas } from '@/api/client'

export type DashboardBody = Schemas['DashboardBody'] & {
  /** Tasks by state, now (a newer server's field; absent on older ones). */
  states?: Record<string, number> | null
}
export type SceneSeries = Schemas['SceneSeries']

/** The counts the chart draws. */
export const CHART_COUNTS = ['reported', 'succeeded', 'failed', 'exhausted'] as const
export type ChartCount = (typeof CHART_COUNTS)[number]

/** The ranges offered, in milliseconds. */
export const RANGES = { '15m': 15 * 60e3, '1h': 60 * 60e3, '6h': 6 * 60 * 60e3, '24h': 24 * 60 * 60e3, '7d': 7 * 24 * 60 * 60e3 } as const
export type RangeKey = keyof typeof RANGES

/**
 * activity sums the scenes' points into one row per step from `from` to `until` (a step with
 * no point is zero), so the chart shows quiet minutes as zero rather than as a gap.
 */
export function activity(body: Pick<DashboardBody, 'from' | 'until' | 'resolution' | 'series'>): { t: number[]; counts: Record<ChartCount, number[]> } {
  const step = body.resolution === 'hour' ? 3600e3 : 60e3
  const floor = (ms: number) => Math.floor(ms / step) * step
  const points = (body.series ?? []).flatMap((s) => s.points ?? [])
  const stamps = points.map((p) => floor(new Date(p.minute).getTime()))
  // Every step of the range, and of any point at its edges (clocks differ a little).
  const lo = Math.min(floor(new Date(body.from).getTime()), ...stamps)
  const hi = Math.max(new Date(body.until).getTime(), ...stamps.map((x) => x + step))
  const t: number[] = []
  for (let x = lo; x < hi && t.length < 20000; x += step) t.push(x)
  const counts = Object.fromEntries(CHART_COUNTS.map((c) => [c, t.map(() => 0)])) as Record<ChartCount, number[]>
  points.forEach((p, k) => {
    const i = (stamps[k]! - lo) / step
    if (i < 0 || i >= t.length) return
    for (const c of CHART_COUNTS) counts[c][i]! += p[c]
  })
  return { t, counts }
}

/** totals adds up the scenes' totals. */
export function totals(series: readonly SceneSeries[] | null | undefined): Record<ChartCount, number> {
  const out = { reported: 0, succeeded: 0, failed: 0, exhausted: 0 }
  for (const s of series ?? []) for (const c of CHART_COUNTS) out[c] += s.totals[c]
  return out
}

/** topFailing is the n scenes with the most failed attempts and exhausted tasks, none with zero. */
export function topFailing(series: readonly SceneSeries[] | null | undefined, n = 5): SceneSeries[] {
  return [...(series ?? [])]
    .filter((s) => s.totals.failed + s.totals.exhausted > 0)
    .sort((a, b) => b.totals.exhausted - a.totals.exhausted || b.totals.failed - a.totals.failed || a.scene_id - b.scene_id)
    .slice(0, n)
}
