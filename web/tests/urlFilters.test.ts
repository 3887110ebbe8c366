import { describe, expect, it } from 'vitest'
import { fromQuery, sameFilters, toQuery, type FilterSpec } from '@/composables/urlFilters'
import { isFiltered, taskFilter, taskQuery, TASK_FILTERS, timeRange } from '@/pages/tasks/taskFilters'

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

describe('the task list filters', () => {
  it('reads a shared link into the API query', () => {
    const v = fromQuery(TASK_FILTERS, {
      namespace: 'default', scene_id: '3', state: 'waiting,held', arg: 'orderId=42', order: 'due', cursor: 'abc',
      created_from: '2026-12-01T00:00:00.000Z', created_to: '2026-12-02T00:00:00.000Z',
    })
    expect(taskQuery(v, 'c2', 50)).toEqual({
      namespace: 'default', scene_id: 3, state: 'waiting,held', arg: 'orderId=42', order: 'due', cursor: 'c2', limit: 50,
      created_from: '2026-12-01T00:00:00.000Z', created_to: '2026-12-02T00:00:00.000Z',
    })
  })

  it('pins the dead letters to exhausted, whatever the URL says', () => {
    const v = fromQuery(TASK_FILTERS, { state: 'waiting', key: 'k1' })
    expect(taskFilter(v, true)).toEqual({ state: 'exhausted', key: 'k1' })
    expect(isFiltered(fromQuery(TASK_FILTERS, {}), true)).toBe(false)
    expect(isFiltered(v, true)).toBe(true)
  })

  it('writes the newest-first order as no parameter', () => {
    expect(taskQuery({ order: 'newest' }, '', 20)).toEqual({ limit: 20 })
  })

  it('reads a time range only when both ends are valid', () => {
    expect(timeRange('2026-12-01T00:00:00Z', '2026-12-02T00:00:00Z')?.[1].toISOString()).toBe('2026-12-02T00:00:00.000Z')
    expect(timeRange('2026-12-01T00:00:00Z', undefined)).toBeNull()
    expect(timeRange('x', 'y')).toBeNull()
  })
})
