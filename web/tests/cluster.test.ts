import { describe, expect, it } from 'vitest'
import { bucketRanges, sinceText } from '@/pages/cluster/live'

describe('cluster lists', () => {
  it('writes buckets as ranges, in order', () => {
    expect(bucketRanges([9, 0, 1, 2, 3, 7, 10])).toBe('0–3, 7, 9–10')
    expect(bucketRanges([5])).toBe('5')
    expect(bucketRanges([])).toBe('')
    expect(bucketRanges(null)).toBe('')
  })

  it('says how long ago a heartbeat was', () => {
    const now = Date.parse('2026-12-02T12:00:00Z')
    expect(sinceText('2026-12-02T11:59:48Z', now)).toBe('12s')
    expect(sinceText('2026-12-02T11:57:00Z', now)).toBe('3m')
    expect(sinceText('2026-12-02T09:00:00Z', now)).toBe('3h')
    expect(sinceText('2026-11-27T12:00:00Z', now)).toBe('5d')
    expect(sinceText('2026-12-02T12:00:05Z', now)).toBe('0s')
  })
})
