// The console's messages. Each area has its own file per locale, web/src/i18n/<locale>/<area>.ts,
// exporting a default object; the file's name is the area's key (`tasks.ts` → t('tasks.…')).
// This index finds the files itself, so adding an area touches no shared file.
import { createI18n } from 'vue-i18n'

export const LOCALES = ['en', 'zh-CN'] as const
export type Locale = (typeof LOCALES)[number]

type Messages = Record<string, unknown>

const files = import.meta.glob<{ default: Messages }>('./*/*.ts', { eager: true })

/** messagesOf gathers a locale's area files. */
export function messagesOf(locale: Locale): Record<string, Messages> {
  const out: Record<string, Messages> = {}
  for (const [path, mod] of Object.entries(files)) {
    const m = /^\.\/([^/]+)\/([^/]+)\.ts$/.exec(path)
    if (m && m[1] === locale && m[2] !== 'index') out[m[2]!] = mod.default
  }
  return out
}

const STORAGE_KEY = 'retryhub.locale'

/** initialLocale is the saved choice, else the browser's language. */
export function initialLocale(): Locale {
  const saved = typeof localStorage === 'undefined' ? null : localStorage.getItem(STORAGE_KEY)
  if (saved === 'en' || saved === 'zh-CN') return saved
  const nav = typeof navigator === 'undefined' ? '' : navigator.language
  return nav.toLowerCase().startsWith('zh') ? 'zh-CN' : 'en'
}

export const i18n = createI18n({
  legacy: false,
  locale: initialLocale(),
  fallbackLocale: 'en',
  messages: { en: messagesOf('en'), 'zh-CN': messagesOf('zh-CN') } as never,
  missingWarn: false,
  fallbackWarn: false,
})

/** setLocale switches the language and remembers it. */
export function setLocale(l: Locale) {
  i18n.global.locale.value = l
  localStorage.setItem(STORAGE_KEY, l)
  document.documentElement.lang = l
}
