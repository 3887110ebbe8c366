// The task list's filters as the URL holds them, and the API query they make.
import type { FilterSpec, FilterValues } from '@/composables/urlFilters'
import type { TaskFilter, TaskQuery } from '@/api/tasks'

/** The URL's task filters (the names are the API's, so a link reads like the API call). */
export const TASK_FILTERS = {
  namespace: 'string',
  group_id: 'number',
  scene_id: 'number',
  state: 'list',
  key: 'string',
  error: 'string',
  arg: 'string',
  created_from: 'string',
  created_to: 'string',
  next_from: 'string',
  next_to: 'string',
  order: 'string',
} as const satisfies FilterSpec

export type TaskFilterValues = FilterValues<typeof TASK_FILTERS>

/** The dead letters: the task list narrowed to exhausted tasks. */
export const DEAD_LETTER_STATE = 'exhausted'

/** taskFilter makes the API's filter from the URL's; deadLetters pins the state to exhausted. */
export function taskFilter(v: TaskFilterValues, deadLetters = false): TaskFilter {
  const f: TaskFilter = {}
  if (v.namespace) f.namespace = v.namespace
  if (v.group_id) f.group_id = v.group_id
  if (v.scene_id) f.scene_id = v.scene_id
  const states = deadLetters ? [DEAD_LETTER_STATE] : (v.state ?? [])
  if (states.length) f.state = states.join(',')
  if (v.key) f.key = v.key
  if (v.error) f.error = v.error
  if (v.arg) f.arg = v.arg
  if (v.created_from) f.created_from = v.created_from
  if (v.created_to) f.created_to = v.created_to
  if (v.next_from) f.next_from = v.next_from
  if (v.next_to) f.next_to = v.next_to
  return f
}

/** taskQuery is a page's query: the filter, the order and the cursor. */
export function taskQuery(v: TaskFilterValues, cursor: string, limit: number, deadLetters = false): TaskQuery {
  const q: TaskQuery = { ...taskFilter(v, deadLetters), limit }
  if (v.order === 'due') q.order = 'due'
  if (cursor) q.cursor = cursor
  return q
}

/** isFiltered says whether anything narrows the list (beyond the dead letters' own state). */
export function isFiltered(v: TaskFilterValues, deadLetters = false): boolean {
  const f = taskFilter(v, false)
  if (deadLetters) delete f.state
  return Object.keys(f).length > 0
}

/** timeRange reads a [from, to] pair of RFC 3339 strings into dates for a picker. */
export function timeRange(from?: string, to?: string): [Date, Date] | null {
  if (!from || !to) return null
  const a = new Date(from)
  const b = new Date(to)
  return Number.isNaN(a.getTime()) || Number.isNaN(b.getTime()) ? null : [a, b]
}
