import { describe, expect, it } from 'vitest'
import { fromQuery, sameFilters, toQuery, type FilterSpec } from '@/composables/urlFilters'

const spec = { namespace: 'string', scene_id: 'number', state: 'list', arg: 'string' } satisfies FilterSpec

describe('filters in the URL', () => {
  it('reads each kind and leaves out what is empty or malformed', () => {
    const f = fromQuery(spec, { namespace: 'default', scene_id: '12', state: 'waiting, exhausted,', arg: '', other: 'x' })
    expect(f).toEqual({ namespace: 'default', scene_id: 12, state: ['waiting', 'exhausted'] })
    expect(fromQuery(spec, { scene_id: 'abc' })).toEqual({})
    expect(fromQuery(spec, { scene_id: ' ' })).toEqual({})
  })

  it('takes the first of repeated parameters', () => {
    expect(fromQuery(spec, { namespace: ['a', 'b'] })).toEqual({ namespace: 'a' })
  })

  it('writes lists comma separated, in the spec order, without empty values', () => {
    const q = toQuery(spec, { state: ['exhausted', 'waiting'], namespace: 'ns', arg: '', scene_id: undefined })
    expect(q).toEqual({ namespace: 'ns', state: 'exhausted,waiting' })
    expect(Object.keys(toQuery(spec, { arg: 'orderId=42', namespace: 'a' }))).toEqual(['namespace', 'arg'])
  })

  it('keeps parameters that are not filters', () => {
    expect(toQuery(spec, { namespace: 'b' }, { order: 'due', namespace: 'a' })).toEqual({ order: 'due', namespace: 'b' })
  })

  it('round-trips an argument filter with = and spaces', () => {
    const values = { arg: 'orderId=42', namespace: 'my ns', state: ['held'] }
    const back = fromQuery(spec, toQuery(spec, values) as Record<string, string>)
    expect(back).toEqual(values)
    expect(sameFilters(spec, values, back)).toBe(true)
    expect(sameFilters(spec, values, { ...values, arg: 'orderId=43' })).toBe(false)
  })
})
