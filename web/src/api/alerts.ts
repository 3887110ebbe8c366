// Alert types and the facts the pages need about each kind (README "Alerts").
import type { Schemas } from './client'

export type AlertChannel = Schemas['AlertChannel']
export type AlertRule = Schemas['AlertRule']
export type AlertSilence = Schemas['AlertSilence']
export type AlertMessage = Schemas['AlertMessage']

export const CHANNEL_KINDS = ['email', 'webhook', 'dingtalk', 'lark', 'wecom'] as const
export type ChannelKind = (typeof CHANNEL_KINDS)[number]

/** The secrets of each channel kind: the API blanks them and says `<field>_set`. */
export const CHANNEL_SECRETS: Record<ChannelKind, readonly string[]> = {
  email: ['password'],
  webhook: ['secret'],
  dingtalk: ['secret'],
  lark: ['secret'],
  wecom: [],
}

export const RULE_KINDS = [
  'tasks_exhausted', 'failed_attempts', 'failure_ratio', 'callbacks_exhausted', 'backlog',
  'oldest_waiting', 'no_live_instance', 'node_lost', 'buckets_unowned',
] as const
export type RuleKind = (typeof RULE_KINDS)[number]
export type RuleField = 'threshold' | 'window' | 'min_volume' | 'for' | 'scope'

/** The fields each rule kind reads; the server clears the others. */
export const RULE_FIELDS: Record<RuleKind, readonly RuleField[]> = {
  tasks_exhausted: ['threshold', 'window', 'scope'],
  failed_attempts: ['threshold', 'window', 'scope'],
  failure_ratio: ['threshold', 'window', 'min_volume', 'scope'],
  callbacks_exhausted: ['threshold', 'window', 'scope'],
  backlog: ['threshold', 'scope'],
  oldest_waiting: ['for', 'scope'],
  no_live_instance: ['for', 'scope'],
  node_lost: ['for'],
  buckets_unowned: ['threshold', 'for'],
}

export const SEVERITIES = ['critical', 'warning', 'info'] as const
export const MESSAGE_STATUSES = ['pending', 'sent', 'failed', 'recorded'] as const

/** shortDuration writes a Go duration without its zero parts: "1h0m0s" → "1h", "5m0s" → "5m". */
export function shortDuration(d: string): string {
  if (!d || d === '0s') return '0'
  const s = d.replace(/(\d)h0m0s$/, '$1h').replace(/(\d)m0s$/, '$1m').replace(/h0m(\d)/, 'h$1')
  return s
}
