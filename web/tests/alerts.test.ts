import { describe, expect, it } from 'vitest'
import { RULE_FIELDS, RULE_KINDS, shortDuration } from '@/api/alerts'

describe('the alert helpers', () => {
  it('writes Go durations without their zero parts', () => {
    expect(shortDuration('5m0s')).toBe('5m')
    expect(shortDuration('1h0m0s')).toBe('1h')
    expect(shortDuration('1h30m0s')).toBe('1h30m')
    expect(shortDuration('30s')).toBe('30s')
    expect(shortDuration('0s')).toBe('0')
  })

  it('knows the fields of every rule kind', () => {
    for (const k of RULE_KINDS) expect(RULE_FIELDS[k].length).toBeGreaterThan(0)
    expect(RULE_FIELDS.failure_ratio).toContain('min_volume')
    expect(RULE_FIELDS.node_lost).not.toContain('scope')
  })
})
