// Bulk jobs: a hand-written client for /api/v1/console/jobs, whose routes are not in the
// document yet. It goes through the same fetch, cookie and CSRF handling as the generated
// client; once the document has the routes, these types become aliases of the generated ones.
import { ApiError, CSRF_COOKIE, CSRF_HEADER, browserCookies, cookie, lostSession } from './client'
import type { TaskFilter } from './tasks'

/** The actions a job applies to each task. */
export type JobAction = 'trigger' | 'pause' | 'resume' | 'cancel' | 'replay' | 'discard'
export type JobState = 'running' | 'done' | 'cancelled' | 'failed'

/** Job is a bulk action's progress. */
export interface Job {
  id: number
  action: JobAction
  state: JobState
  total: number
  done: number
  failed: number
  created_by: string
  created_at: string
  updated_at: string
  ended_at?: string | null
  error?: string
}

/** JobFilter is the task list's filter (its query parameters' names). */
export type JobFilter = Omit<TaskFilter, 'order' | 'cursor' | 'limit'>

export type CreateJob = { action: JobAction; ids: number[] } | { action: JobAction; filter: JobFilter }

export interface JobList {
  items: Job[] | null
  next_cursor: string
}

const base = '/api/v1/console/jobs'

export interface JobsOptions {
  fetch?: typeof globalThis.fetch
  cookies?: () => string
  onUnauthorized?: () => void
}

/** jobsClient makes the jobs client; `jobs` below is the console's. */
export function jobsClient(opts: JobsOptions = {}) {
  const f = opts.fetch ?? ((...a: Parameters<typeof fetch>) => globalThis.fetch(...a))
  async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Accept: 'application/json' }
    if (body !== undefined) headers['Content-Type'] = 'application/json'
    if (method !== 'GET') {
      const csrf = cookie(opts.cookies?.() ?? '', CSRF_COOKIE)
      if (csrf) headers[CSRF_HEADER] = csrf
    }
    let res: Response
    try {
      res = await f(path, {
        method,
        headers,
        credentials: 'same-origin',
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      })
    } catch (e) {
      throw new ApiError(0, 'network', e instanceof Error ? e.message : String(e))
    }
    if (res.status === 401) opts.onUnauthorized?.()
    const text = await res.text()
    const data = text ? (JSON.parse(text) as unknown) : undefined
    if (!res.ok) {
      const err = (data ?? {}) as { error?: { code?: string; message?: string } }
      throw new ApiError(res.status, err.error?.code ?? String(res.status), err.error?.message ?? res.statusText)
    }
    return data as T
  }
  return {
    create: (req: CreateJob) => call<Job>('POST', base, req),
    list: (q: { state?: JobState; cursor?: string; limit?: number } = {}) => {
      const p = new URLSearchParams()
      for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== '') p.set(k, String(v))
      const qs = p.toString()
      return call<JobList>('GET', qs ? `${base}?${qs}` : base)
    },
    get: (id: number) => call<Job>('GET', `${base}/${id}`),
    cancel: (id: number) => call<Job>('POST', `${base}/${id}/cancel`),
  }
}

/** The console's jobs client. */
export const jobs = jobsClient({ cookies: browserCookies, onUnauthorized: lostSession })
