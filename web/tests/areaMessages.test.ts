import { describe, expect, it } from 'vitest'
import { createI18n } from 'vue-i18n'
import { messagesOf } from '@/i18n'

/** leaves lists the keys of a message tree with their texts. */
function leaves(tree: unknown, prefix = ''): [string, string][] {
  if (typeof tree === 'string') return [[prefix, tree]]
  return Object.entries(tree as Record<string, unknown>).flatMap(([k, v]) => leaves(v, prefix ? `${prefix}.${k}` : k))
}

/** createI18n, typed loosely: its message types are too deep for a tree read at run time. */
const makeI18n = createI18n as unknown as (o: object) => { global: { t: (key: string, args: Record<string, unknown>) => string } }

const AREAS = ['catalog', 'cluster', 'admin']

describe.each(AREAS)('the %s messages', (area) => {
  const en = messagesOf('en')[area]
  const zh = messagesOf('zh-CN')[area]

  it('exist in both languages with the same keys', () => {
    expect(en).toBeDefined()
    expect(zh).toBeDefined()
    expect(leaves(zh).map(([k]) => k).sort()).toEqual(leaves(en).map(([k]) => k).sort())
  })

  it('compile, and none is empty or cut by a plural bar', () => {
    for (const locale of ['en', 'zh-CN'] as const) {
      const { t } = makeI18n({ legacy: false, locale, messages: { [locale]: messagesOf(locale) } }).global
      for (const [key, text] of leaves(locale === 'en' ? en : zh)) {
        expect(text.trim(), `${locale} ${area}.${key}`).not.toBe('')
        expect(text, `${locale} ${area}.${key}`).not.toContain('|')
        expect(() => t(`${area}.${key}`, { n: 1, name: 'x' }), `${locale} ${area}.${key}`).not.toThrow()
      }
    }
  })
})
