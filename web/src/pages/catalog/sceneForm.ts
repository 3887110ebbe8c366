// The scene policy editor's logic: the form it edits, the conversion between that form and the
// console API's scene body (per back-off strategy), the server's field errors placed at the
// form's fields, and the preview request. No Vue here, so the rules are tested on their own.
import type { Schemas } from '@/api/client'

export type Scene = Schemas['Scene']
export type Backoff = Schemas['Backoff']
export type ScenePolicy = Schemas['ScenePolicy']
export type CreateSceneBody = Schemas['CreateSceneInputBody']
export type PreviewBody = Schemas['PreviewInputBody']

export type Strategy = Backoff['strategy']
export type Mode = Scene['mode']
export type Routing = Scene['routing']
export type Jitter = 'none' | 'full' | 'equal'

export const STRATEGIES: readonly Strategy[] = ['fixed', 'exponential', 'levels', 'cron', 'random']
export const MODES: readonly Mode[] = ['LOCAL_REMOTE', 'LOCAL', 'REMOTE']
export const ROUTINGS: readonly Routing[] = ['round_robin', 'random', 'consistent_hash', 'least_recently_used']
export const JITTERS: readonly Jitter[] = ['none', 'full', 'equal']

/** The fields each strategy reads; the others are not sent. */
export const STRATEGY_FIELDS: Record<Strategy, readonly (keyof BackoffForm)[]> = {
  fixed: ['interval'],
  exponential: ['base', 'multiplier', 'cap', 'jitter'],
  levels: ['levels'],
  cron: ['cron'],
  random: ['min', 'max'],
}

/** Limits of the scene's rules (retry.Scene.Validate). */
export const LIMITS = {
  localAttempts: 100,
  maxAttempts: 1000,
  callbackAttempts: 1000,
  rateLimit: 1_000_000,
  previewCount: 50,
} as const

/**
 * The server's default ladder of the levels strategy (backoff.DefaultLevels), shown as the
 * placeholder of an empty table.
 */
export const DEFAULT_LEVELS = '10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h …'

/** A back-off as the form edits it: every strategy's fields at once, so switching keeps them. */
export interface BackoffForm {
  strategy: Strategy
  interval: string
  base: string
  /** 0 means the server's default growth (2). */
  multiplier: number
  cap: string
  jitter: Jitter
  /** The waits separated by spaces or commas; empty means the default ladder. */
  levels: string
  cron: string
  min: string
  max: string
}

/** The whole policy as the editor holds it. */
export interface SceneForm {
  name: string
  description: string
  enabled: boolean
  mode: Mode
  local_attempts: number
  local_backoff: BackoffForm
  max_attempts: number
  backoff: BackoffForm
  timeout: string
  deadline: string
  routing: Routing
  rate_limit: number
  callback: { enabled: boolean; max_attempts: number; backoff: BackoffForm }
}

/** emptyBackoff is a back-off of strategy with no field set. */
export function emptyBackoff(strategy: Strategy): BackoffForm {
  return { strategy, interval: '', base: '', multiplier: 0, cap: '', jitter: 'none', levels: '', cron: '', min: '', max: '' }
}

/**
 * tidyDuration writes a Go duration the short way the server accepts back: 1h0m0s → 1h,
 * 2m0s → 2m, 1h30m0s → 1h30m.
 */
export function tidyDuration(d: string | undefined): string {
  if (!d) return ''
  return d.replace(/(\d)m0s$/, '$1m').replace(/(\d)h0m$/, '$1h')
}

const DURATION_RE = /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/

/** isDuration says whether s is a duration the server reads (such as 500ms, 10s, 1h30m, or 0). */
export function isDuration(s: string): boolean {
  const v = s.trim()
  return v === '0' || DURATION_RE.test(v)
}

/** splitLevels reads a levels table written with spaces or commas. */
export function splitLevels(s: string): string[] {
  return s.split(/[\s,;]+/).map((x) => x.trim()).filter(Boolean)
}

/** backoffToForm is an API back-off as the form shows it. */
export function backoffToForm(b: Backoff | undefined): BackoffForm {
  const f = emptyBackoff(b?.strategy ?? 'fixed')
  if (!b) return f
  f.interval = tidyDuration(b.interval)
  f.base = tidyDuration(b.base)
  f.multiplier = b.multiplier ?? 0
  f.cap = tidyDuration(b.cap)
  f.jitter = b.jitter === 'full' || b.jitter === 'equal' ? b.jitter : 'none'
  f.levels = (b.levels ?? []).map(tidyDuration).join(' ')
  f.cron = b.cron ?? ''
  f.min = tidyDuration(b.min)
  f.max = tidyDuration(b.max)
  return f
}

/** backoffFromForm is the API's back-off: the strategy and its own fields, empty ones left out. */
export function backoffFromForm(f: BackoffForm): Backoff {
  const b: Backoff = { strategy: f.strategy }
  const put = (k: 'interval' | 'base' | 'cap' | 'cron' | 'min' | 'max', v: string) => {
    const s = v.trim()
    if (s) b[k] = s
  }
  switch (f.strategy) {
    case 'fixed':
      put('interval', f.interval)
      break
    case 'exponential':
      put('base', f.base)
      if (f.multiplier) b.multiplier = f.multiplier
      put('cap', f.cap)
      if (f.jitter !== 'none') b.jitter = f.jitter
      break
    case 'levels': {
      const levels = splitLevels(f.levels)
      if (levels.length) b.levels = levels
      break
    }
    case 'cron':
      put('cron', f.cron)
      break
    case 'random':
      put('min', f.min)
      put('max', f.max)
      break
  }
  return b
}

/**
 * defaultSceneForm is a new scene with the server's default policy (retry.DefaultScene): local
 * then remote; three local attempts, exponential from 100ms to 2s with equal jitter; sixteen
 * replays on the default ladder; 30s per attempt; round robin; callback off (8 attempts,
 * exponential from 5s to 10m).
 */
export function defaultSceneForm(): SceneForm {
  return {
    name: '',
    description: '',
    enabled: true,
    mode: 'LOCAL_REMOTE',
    local_attempts: 3,
    local_backoff: { ...emptyBackoff('exponential'), base: '100ms', cap: '2s', jitter: 'equal' },
    max_attempts: 16,
    backoff: emptyBackoff('levels'),
    timeout: '30s',
    deadline: '0s',
    routing: 'round_robin',
    rate_limit: 0,
    callback: { enabled: false, max_attempts: 8, backoff: { ...emptyBackoff('exponential'), base: '5s', cap: '10m' } },
  }
}

/** sceneToForm is a scene as the editor edits it. */
export function sceneToForm(s: Scene): SceneForm {
  return {
    name: s.name,
    description: s.description,
    enabled: s.enabled,
    mode: s.mode,
    local_attempts: s.local_attempts,
    local_backoff: backoffToForm(s.local_backoff),
    max_attempts: s.max_attempts,
    backoff: backoffToForm(s.backoff),
    timeout: tidyDuration(s.timeout),
    deadline: tidyDuration(s.deadline),
    routing: s.routing,
    rate_limit: s.rate_limit,
    callback: {
      enabled: s.callback.enabled,
      max_attempts: s.callback.max_attempts,
      backoff: backoffToForm(s.callback.backoff),
    },
  }
}

/** policyOf is the whole policy of a form as the API takes it (a duration left empty is 0). */
export function policyOf(f: SceneForm): Required<Omit<ScenePolicy, 'callback'>> & { callback: Required<NonNullable<ScenePolicy['callback']>> } {
  return {
    description: f.description,
    enabled: f.enabled,
    mode: f.mode,
    local_attempts: f.local_attempts,
    local_backoff: backoffFromForm(f.local_backoff),
    max_attempts: f.max_attempts,
    backoff: backoffFromForm(f.backoff),
    timeout: f.timeout.trim() || '0s',
    deadline: f.deadline.trim() || '0s',
    routing: f.routing,
    rate_limit: f.rate_limit,
    callback: {
      enabled: f.callback.enabled,
      max_attempts: f.callback.max_attempts,
      backoff: backoffFromForm(f.callback.backoff),
    },
  }
}

/** createBody is the body that creates the form's scene. */
export function createBody(f: SceneForm): CreateSceneBody {
  return { name: f.name.trim(), ...policyOf(f) }
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b)

/**
 * patchBody is the body of an edit: only the fields that differ from the scene as loaded, so
 * the audit log names what changed and an edit made meanwhile to another field stays. A
 * back-off is sent whole when any of its fields changed (the server replaces it whole).
 */
export function patchBody(f: SceneForm, original: Scene): ScenePolicy {
  const now = policyOf(f)
  const was = policyOf(sceneToForm(original))
  const out: Record<string, unknown> = {}
  for (const k of Object.keys(now) as (keyof typeof now)[]) {
    if (k === 'callback') continue
    if (!same(now[k], was[k])) out[k] = now[k]
  }
  const cb: Record<string, unknown> = {}
  for (const k of ['enabled', 'max_attempts', 'backoff'] as const) {
    if (!same(now.callback[k], was.callback[k])) cb[k] = now.callback[k]
  }
  if (Object.keys(cb).length) out.callback = cb
  return out as ScenePolicy
}

/** Field errors by the form's field: 'name', 'backoff.base', 'callback.backoff.levels', … */
export type FieldErrors = Record<string, string>

/**
 * fieldKey is where the editor shows an error the server gave for field: a level's index is
 * dropped (backoff.levels[2] → backoff.levels), anything unknown is '' (shown above the form).
 */
export function fieldKey(field: string | undefined): string {
  if (!field) return ''
  const f = field.replace(/\[\d+\]$/, '')
  const bo = '(local_backoff|backoff|callback\\.backoff)'
  const re = new RegExp(
    `^(name|description|enabled|mode|local_attempts|max_attempts|timeout|deadline|routing|rate_limit|callback\\.enabled|callback\\.max_attempts|${bo}(\\.(strategy|interval|base|multiplier|cap|jitter|levels|cron|min|max))?)$`,
  )
  return re.test(f) ? f.replace(/\.strategy$/, '') : ''
}

/**
 * fieldErrors places a 400's details at the form's fields; those that match no field are
 * returned in rest. prefix moves a preview's errors (always on "backoff") to the back-off the
 * preview was made of.
 */
export function fieldErrors(details: readonly { field?: string; reason?: string }[], prefix = ''): { fields: FieldErrors; rest: string[] } {
  const fields: FieldErrors = {}
  const rest: string[] = []
  for (const d of details) {
    let field = d.field ?? ''
    if (prefix && (field === 'backoff' || field.startsWith('backoff.'))) field = prefix + field.slice('backoff'.length)
    const key = fieldKey(field)
    const reason = d.reason ?? ''
    if (key) fields[key] = fields[key] ? `${fields[key]}; ${reason}` : reason
    else rest.push([d.field, reason].filter(Boolean).join(': '))
  }
  return { fields, rest }
}

/** Which of the scene's back-offs the preview draws. */
export type PreviewTarget = 'backoff' | 'callback.backoff'

/** previewBody asks for the trigger times of one back-off: as many as its attempts, at most 50. */
export function previewBody(f: SceneForm, target: PreviewTarget): PreviewBody {
  const b = target === 'backoff' ? f.backoff : f.callback.backoff
  const attempts = target === 'backoff' ? f.max_attempts : f.callback.max_attempts
  const count = Math.max(1, Math.min(LIMITS.previewCount, Number.isFinite(attempts) && attempts > 0 ? attempts : 10))
  return { backoff: backoffFromForm(b), count }
}

/**
 * localErrors are the mistakes the editor sees before asking the server: a missing name, a
 * duration it cannot read, a number out of range. The server checks everything again.
 */
export function localErrors(f: SceneForm, isNew: boolean, msg: (key: string, args?: Record<string, unknown>) => string): FieldErrors {
  const e: FieldErrors = {}
  if (isNew && !f.name.trim()) e.name = msg('required')
  const dur = (key: string, v: string, required: boolean) => {
    if (!v.trim()) {
      if (required) e[key] = msg('required')
    } else if (!isDuration(v)) e[key] = msg('notDuration')
  }
  dur('timeout', f.timeout, false)
  dur('deadline', f.deadline, false)
  const range = (key: string, v: number, min: number, max: number) => {
    if (!Number.isInteger(v) || v < min || v > max) e[key] = msg('range', { min, max })
  }
  range('local_attempts', f.local_attempts, 1, LIMITS.localAttempts)
  range('max_attempts', f.max_attempts, 1, LIMITS.maxAttempts)
  range('rate_limit', f.rate_limit, 0, LIMITS.rateLimit)
  range('callback.max_attempts', f.callback.max_attempts, 1, LIMITS.callbackAttempts)
  for (const [prefix, b] of [['local_backoff', f.local_backoff], ['backoff', f.backoff], ['callback.backoff', f.callback.backoff]] as const) {
    switch (b.strategy) {
      case 'fixed':
        dur(`${prefix}.interval`, b.interval, true)
        break
      case 'exponential':
        dur(`${prefix}.base`, b.base, true)
        dur(`${prefix}.cap`, b.cap, false)
        if (b.multiplier !== 0 && !(b.multiplier >= 1)) e[`${prefix}.multiplier`] = msg('multiplier')
        break
      case 'levels':
        if (splitLevels(b.levels).some((l) => !isDuration(l))) e[`${prefix}.levels`] = msg('notDuration')
        break
      case 'cron':
        if (!b.cron.trim()) e[`${prefix}.cron`] = msg('required')
        break
      case 'random':
        dur(`${prefix}.min`, b.min, false)
        dur(`${prefix}.max`, b.max, true)
        break
    }
  }
  return e
}

/** backoffSummary is a back-off in a few words for lists: "levels", "fixed 30s", "exp 1s…10m". */
export function backoffSummary(b: Backoff): string {
  switch (b.strategy) {
    case 'fixed':
      return `fixed ${tidyDuration(b.interval)}`
    case 'exponential':
      return `exponential ${tidyDuration(b.base)}${b.cap ? '…' + tidyDuration(b.cap) : ''}${b.multiplier ? ' ×' + b.multiplier : ''}`
    case 'levels':
      return b.levels?.length ? `levels ${b.levels.map(tidyDuration).join(' ')}` : 'levels'
    case 'cron':
      return `cron ${b.cron ?? ''}`
    case 'random':
      return `random ${tidyDuration(b.min) || '0s'}…${tidyDuration(b.max)}`
  }
  return b.strategy
}

/** offsetText writes the time from a preview's start to a trigger as "+1h2m", "+30s". */
export function offsetText(ms: number): string {
  if (ms < 1000) return `+${Math.max(0, Math.round(ms))}ms`
  let s = Math.round(ms / 1000)
  const d = Math.floor(s / 86400)
  s -= d * 86400
  const h = Math.floor(s / 3600)
  s -= h * 3600
  const m = Math.floor(s / 60)
  s -= m * 60
  const parts = [d && `${d}d`, h && `${h}h`, m && `${m}m`, s && `${s}s`].filter(Boolean)
  return '+' + (parts.slice(0, 2).join('') || '0s')
}
