import { describe, expect, it } from 'vitest'
import {
  backoffFromForm, backoffSummary, backoffToForm, createBody, defaultSceneForm, emptyBackoff, fieldErrors, fieldKey, isDuration,
  localErrors, offsetText, patchBody, previewBody, sceneToForm, splitLevels, tidyDuration, type Backoff, type Scene,
} from '@/pages/catalog/sceneForm'

/** A scene as the API answers it: Go's duration strings, the default policy. */
function apiScene(over: Partial<Scene> = {}): Scene {
  return {
    id: 7, group_id: 3, name: 'pay', description: 'payments', enabled: true, mode: 'LOCAL_REMOTE',
    local_attempts: 3, local_backoff: { strategy: 'exponential', base: '100ms', cap: '2s', jitter: 'equal' },
    max_attempts: 16, backoff: { strategy: 'levels' },
    timeout: '30s', deadline: '0s', routing: 'round_robin', rate_limit: 0,
    callback: { enabled: false, max_attempts: 8, backoff: { strategy: 'exponential', base: '5s', cap: '10m0s', jitter: 'none' } },
    version: 4, created_at: '2026-12-01T10:00:00Z', updated_at: '2026-12-01T10:00:00Z',
    ...over,
  }
}

const msg = (k: string) => k

describe('durations', () => {
  it('writes Go durations the short way', () => {
    expect(tidyDuration('1h0m0s')).toBe('1h')
    expect(tidyDuration('2m0s')).toBe('2m')
    expect(tidyDuration('1h30m0s')).toBe('1h30m')
    expect(tidyDuration('10m0s')).toBe('10m')
    expect(tidyDuration('100ms')).toBe('100ms')
    expect(tidyDuration('0s')).toBe('0s')
    expect(tidyDuration('1m30s')).toBe('1m30s')
    expect(tidyDuration(undefined)).toBe('')
  })

  it('knows what the server reads as a duration', () => {
    for (const ok of ['0', '0s', '500ms', '10s', '1h30m', '1.5h', '2h45m30s']) expect(isDuration(ok), ok).toBe(true)
    for (const bad of ['', '10', 'ten seconds', '1d', '-5s', 's']) expect(isDuration(bad), bad).toBe(false)
  })

  it('splits a levels table on spaces and commas', () => {
    expect(splitLevels(' 10s, 1m  10m;1h ')).toEqual(['10s', '1m', '10m', '1h'])
    expect(splitLevels('   ')).toEqual([])
  })
})

describe('back-off form ⇄ API, per strategy', () => {
  const cases: { name: string; api: Backoff; form: Partial<ReturnType<typeof emptyBackoff>> }[] = [
    { name: 'fixed', api: { strategy: 'fixed', interval: '30s' }, form: { interval: '30s' } },
    {
      name: 'exponential with every field',
      api: { strategy: 'exponential', base: '1s', multiplier: 3, cap: '10m', jitter: 'full' },
      form: { base: '1s', multiplier: 3, cap: '10m', jitter: 'full' },
    },
    { name: 'exponential with defaults', api: { strategy: 'exponential', base: '1s' }, form: { base: '1s', multiplier: 0, cap: '', jitter: 'none' } },
    { name: 'levels of its own', api: { strategy: 'levels', levels: ['10s', '1m', '1h'] }, form: { levels: '10s 1m 1h' } },
    { name: 'levels on the default ladder', api: { strategy: 'levels' }, form: { levels: '' } },
    { name: 'cron', api: { strategy: 'cron', cron: '*/5 * * * *' }, form: { cron: '*/5 * * * *' } },
    { name: 'random', api: { strategy: 'random', min: '1s', max: '1m' }, form: { min: '1s', max: '1m' } },
  ]
  for (const c of cases) {
    it(`round-trips ${c.name}`, () => {
      const f = backoffToForm(c.api)
      expect(f).toMatchObject({ strategy: c.api.strategy, ...c.form })
      expect(backoffFromForm(f)).toEqual(c.api)
    })
  }

  it('sends only the fields of the chosen strategy', () => {
    const f = { ...emptyBackoff('fixed'), interval: '5s', base: '1s', cap: '1h', levels: '1s 2s', cron: '@hourly', min: '1s', max: '2s' }
    expect(backoffFromForm(f)).toEqual({ strategy: 'fixed', interval: '5s' })
    expect(backoffFromForm({ ...f, strategy: 'random' })).toEqual({ strategy: 'random', min: '1s', max: '2s' })
    expect(backoffFromForm({ ...f, strategy: 'levels' })).toEqual({ strategy: 'levels', levels: ['1s', '2s'] })
    expect(backoffFromForm({ ...f, strategy: 'cron' })).toEqual({ strategy: 'cron', cron: '@hourly' })
  })

  it('reads the API\'s long durations and empty jitter', () => {
    const f = backoffToForm({ strategy: 'exponential', base: '5s', cap: '10m0s', jitter: '' })
    expect(f.cap).toBe('10m')
    expect(f.jitter).toBe('none')
    expect(backoffFromForm(f)).toEqual({ strategy: 'exponential', base: '5s', cap: '10m' })
  })

  it('summarises a back-off for lists', () => {
    expect(backoffSummary({ strategy: 'levels' })).toBe('levels')
    expect(backoffSummary({ strategy: 'fixed', interval: '1m0s' })).toBe('fixed 1m')
    expect(backoffSummary({ strategy: 'exponential', base: '1s', cap: '1h0m0s', multiplier: 3 })).toBe('exponential 1s…1h ×3')
    expect(backoffSummary({ strategy: 'random', max: '30s' })).toBe('random 0s…30s')
  })
})

describe('scene form ⇄ API body', () => {
  it('keeps the server\'s default policy for a new scene', () => {
    const body = createBody({ ...defaultSceneForm(), name: ' orders ' })
    expect(body).toEqual({
      name: 'orders', description: '', enabled: true, mode: 'LOCAL_REMOTE', local_attempts: 3,
      local_backoff: { strategy: 'exponential', base: '100ms', cap: '2s', jitter: 'equal' },
      max_attempts: 16, backoff: { strategy: 'levels' }, timeout: '30s', deadline: '0s', routing: 'round_robin', rate_limit: 0,
      callback: { enabled: false, max_attempts: 8, backoff: { strategy: 'exponential', base: '5s', cap: '10m' } },
    })
  })

  it('sends nothing when nothing changed', () => {
    const s = apiScene()
    expect(patchBody(sceneToForm(s), s)).toEqual({})
  })

  it('sends only the changed fields, a back-off whole', () => {
    const s = apiScene()
    const f = sceneToForm(s)
    f.max_attempts = 5
    f.backoff = { ...f.backoff, strategy: 'fixed', interval: '1m' }
    f.callback.enabled = true
    f.deadline = ''
    expect(patchBody(f, s)).toEqual({
      max_attempts: 5,
      backoff: { strategy: 'fixed', interval: '1m' },
      callback: { enabled: true },
    })
  })

  it('sends a back-off whole when one of its fields changed', () => {
    const s = apiScene()
    const f = sceneToForm(s)
    f.local_backoff.cap = '5s'
    expect(patchBody(f, s)).toEqual({ local_backoff: { strategy: 'exponential', base: '100ms', cap: '5s', jitter: 'equal' } })
  })

  it('does not count a field of another strategy as a change', () => {
    const s = apiScene({ backoff: { strategy: 'fixed', interval: '30s' } })
    const f = sceneToForm(s)
    f.backoff.base = '9s'
    expect(patchBody(f, s)).toEqual({})
  })
})

describe('errors at the fields', () => {
  it('maps the server\'s field names to the form\'s', () => {
    expect(fieldKey('max_attempts')).toBe('max_attempts')
    expect(fieldKey('backoff')).toBe('backoff')
    expect(fieldKey('backoff.strategy')).toBe('backoff')
    expect(fieldKey('local_backoff.base')).toBe('local_backoff.base')
    expect(fieldKey('callback.backoff.levels[2]')).toBe('callback.backoff.levels')
    expect(fieldKey('callback.max_attempts')).toBe('callback.max_attempts')
    expect(fieldKey('limit')).toBe('')
    expect(fieldKey(undefined)).toBe('')
  })

  it('places details and keeps the rest', () => {
    const { fields, rest } = fieldErrors([
      { field: 'backoff', reason: 'exponential strategy needs base > 0' },
      { field: 'timeout', reason: '"x" is not a duration' },
      { field: '', reason: 'something else' },
    ])
    expect(fields).toEqual({ backoff: 'exponential strategy needs base > 0', timeout: '"x" is not a duration' })
    expect(rest).toEqual(['something else'])
  })

  it('moves a preview\'s errors to the back-off it was made of', () => {
    const { fields } = fieldErrors([{ field: 'backoff.levels[0]', reason: 'not a duration' }], 'callback.backoff')
    expect(fields).toEqual({ 'callback.backoff.levels': 'not a duration' })
  })

  it('finds the plain mistakes before the server', () => {
    const f = defaultSceneForm()
    f.timeout = 'soon'
    f.max_attempts = 0
    f.backoff = { ...emptyBackoff('fixed') }
    f.callback.backoff = { ...emptyBackoff('exponential'), base: '1s', multiplier: 0.5 }
    expect(localErrors(f, true, msg)).toEqual({
      name: 'required',
      timeout: 'notDuration',
      max_attempts: 'range',
      'backoff.interval': 'required',
      'callback.backoff.multiplier': 'multiplier',
    })
    expect(localErrors({ ...defaultSceneForm(), name: 'x' }, true, msg)).toEqual({})
  })
})

describe('preview', () => {
  it('asks for as many times as the attempts, at most 50', () => {
    const f = defaultSceneForm()
    expect(previewBody(f, 'backoff')).toEqual({ backoff: { strategy: 'levels' }, count: 16 })
    f.max_attempts = 500
    expect(previewBody(f, 'backoff').count).toBe(50)
    expect(previewBody(f, 'callback.backoff')).toEqual({ backoff: { strategy: 'exponential', base: '5s', cap: '10m' }, count: 8 })
  })

  it('writes offsets in two units at most', () => {
    expect(offsetText(500)).toBe('+500ms')
    expect(offsetText(10_000)).toBe('+10s')
    expect(offsetText(90_000)).toBe('+1m30s')
    expect(offsetText(3600_000 + 61_000)).toBe('+1h1m')
    expect(offsetText(2 * 86400_000 + 3 * 3600_000 + 5_000)).toBe('+2d3h')
  })
})
