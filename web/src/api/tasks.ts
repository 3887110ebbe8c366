// Task types and helpers shared by the task pages.
import type { paths } from './schema'
import type { Schemas } from './client'

/** TaskQuery is the task list's query (its filter, order and cursor). */
export type TaskQuery = NonNullable<paths['/api/v1/console/tasks']['get']['parameters']['query']>
/** TaskFilter is what selects tasks: the list's query without order and paging. */
export type TaskFilter = Omit<TaskQuery, 'order' | 'cursor' | 'limit'>
export type Task = Schemas['Task']
export type TaskDetail = Schemas['TaskDetailBody']
export type Attempt = Schemas['Attempt']

/** The task states, in lifecycle order. */
export const TASK_STATES = ['waiting', 'held', 'running', 'paused', 'succeeded', 'exhausted', 'cancelled'] as const
export type TaskState = (typeof TASK_STATES)[number]

/** The single actions on a task (POST tasks/{id}/{action}). */
export const TASK_ACTIONS = ['trigger', 'pause', 'resume', 'cancel', 'replay', 'discard'] as const
export type TaskAction = (typeof TASK_ACTIONS)[number]

const scheduled: readonly string[] = ['waiting', 'held', 'paused']

/** The states each action applies to (the server's retry/actions.go). */
export const ACTION_STATES: Record<TaskAction | 'set_next', readonly string[]> = {
  trigger: scheduled,
  pause: ['waiting', 'held'],
  resume: ['paused'],
  cancel: ['waiting', 'held', 'running', 'paused'],
  replay: ['exhausted'],
  discard: ['exhausted'],
  set_next: scheduled,
}

/** The states in which a task's arguments may be replaced. */
export const ARGS_EDITABLE_STATES: readonly string[] = ['waiting', 'held', 'paused', 'exhausted']

/** actionApplies says whether the action is allowed in the state. */
export function actionApplies(action: TaskAction | 'set_next', state: string): boolean {
  return ACTION_STATES[action].includes(state)
}
