// Times as the browser's zone shows them.
import { useI18n } from 'vue-i18n'

/** The browser's time zone. */
export const zone = Intl.DateTimeFormat().resolvedOptions().timeZone

/** formatTime shows an RFC 3339 time in the browser's zone and the given locale. */
export function formatTime(value: string | null | undefined, locale: string): string {
  if (!value) return ''
  const d = new Date(value)
  if (Number.isNaN(d.getTime()) || d.getUTCFullYear() <= 1) return ''
  return d.toLocaleString(locale, {
    year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false,
  })
}

/** useTime gives components a formatter bound to the current language. */
export function useTime() {
  const { locale } = useI18n()
  return { fmt: (v: string | null | undefined) => formatTime(v, locale.value), zone }
}
