// The browser's preferences: language and light or dark.
import { defineStore } from 'pinia'
import { ref, watch } from 'vue'
import { i18n, setLocale, type Locale } from '@/i18n'

const THEME_KEY = 'retryhub.theme'

export type Theme = 'light' | 'dark'

function initialTheme(): Theme {
  const saved = localStorage.getItem(THEME_KEY)
  if (saved === 'light' || saved === 'dark') return saved
  return window.matchMedia?.('(prefers-color-scheme: dark)').matches ? 'dark' : 'light'
}

export const usePrefs = defineStore('prefs', () => {
  const theme = ref<Theme>(initialTheme())
  const locale = ref<Locale>(i18n.global.locale.value as Locale)

  watch(
    theme,
    (t) => {
      document.documentElement.classList.toggle('dark', t === 'dark')
      localStorage.setItem(THEME_KEY, t)
    },
    { immediate: true },
  )
  watch(locale, (l) => setLocale(l), { immediate: true })

  function toggleTheme() {
    theme.value = theme.value === 'dark' ? 'light' : 'dark'
  }

  return { theme, locale, toggleTheme }
})
