// Bulk jobs on the generated client: POST/GET /api/v1/console/jobs, GET jobs/{id},
// POST jobs/{id}/cancel (operations jobs-create, jobs-list, jobs-get, jobs-cancel).
import { api as consoleApi, unwrap, type Api, type Schemas } from './client'
import type { paths } from './schema'

/** Job is a bulk action's progress. */
export type Job = Schemas['Job']
/** The actions a job applies to each task (set_next takes `at`). */
export type JobAction = Job['action']
export type JobState = Job['state']
/** JobFilter is the task list's filter, under its query parameters' names. */
export type JobFilter = Schemas['JobFilterBody']
/** CreateJob is a job's request: ids or a filter, the action, and `at` for set_next. */
export type CreateJob = Schemas['CreateJobInputBody']
export type JobList = Schemas['JobListBody']
export type JobListQuery = NonNullable<paths['/api/v1/console/jobs']['get']['parameters']['query']>

/** jobsClient makes the jobs helpers on a client; `jobs` below is the console's. */
export function jobsClient(api: Api = consoleApi) {
  return {
    create: (body: CreateJob) => unwrap(api.POST('/api/v1/console/jobs', { body })),
    list: (query: JobListQuery = {}) => unwrap(api.GET('/api/v1/console/jobs', { params: { query } })),
    get: (id: number) => unwrap(api.GET('/api/v1/console/jobs/{id}', { params: { path: { id } } })),
    cancel: (id: number) => unwrap(api.POST('/api/v1/console/jobs/{id}/cancel', { params: { path: { id } } })),
  }
}

/** The console's jobs client. */
export const jobs = jobsClient()
