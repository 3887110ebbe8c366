import { describe, expect, it, vi } from 'vitest'
import { ApiError, CSRF_HEADER, cookie, createApi, errorText, unwrap } from '@/api/client'
import { jobsClient } from '@/api/jobs'

function fakeFetch(status: number, body: unknown) {
  const calls: Request[] = []
  const f = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    calls.push(input instanceof Request ? input : new Request(String(input), init))
    return new Response(body === undefined ? null : JSON.stringify(body), {
      status,
      headers: { 'Content-Type': 'application/json' },
    })
  })
  return { f: f as unknown as typeof fetch, calls }
}

const base = 'http://console.test'

describe('the API client', () => {
  it('reads one cookie', () => {
    expect(cookie('a=1; retryhub_csrf=x%3Dy; b=2', 'retryhub_csrf')).toBe('x=y')
    expect(cookie('', 'retryhub_csrf')).toBe('')
  })

  it('repeats the CSRF cookie on a change, not on a read', async () => {
    const { f, calls } = fakeFetch(200, { id: 1, kind: 'user', username: 'ann', roles: [] })
    const api = createApi({ baseUrl: base, fetch: f, cookies: () => 'retryhub_csrf=tok123' })
    await api.GET('/api/v1/console/auth/me')
    await api.POST('/api/v1/console/tasks/{id}/{action}', { params: { path: { id: 7, action: 'replay' } } })
    expect(calls[0]!.headers.get(CSRF_HEADER)).toBeNull()
    expect(calls[1]!.headers.get(CSRF_HEADER)).toBe('tok123')
    expect(new URL(calls[1]!.url).pathname).toBe('/api/v1/console/tasks/7/replay')
  })

  it('reports a 401 as a lost session, except on login', async () => {
    const lost = vi.fn()
    const { f } = fakeFetch(401, { error: { code: 'unauthenticated', message: 'sign in' } })
    const api = createApi({ baseUrl: base, fetch: f, onUnauthorized: lost })
    await expect(unwrap(api.GET('/api/v1/console/auth/me'))).rejects.toMatchObject({ status: 401, code: 'unauthenticated' })
    expect(lost).toHaveBeenCalledTimes(1)
    await api.POST('/api/v1/console/auth/login', { body: { username: 'a', password: 'b' } })
    expect(lost).toHaveBeenCalledTimes(1)
  })

  it('turns an error body into an ApiError with its details', async () => {
    const { f } = fakeFetch(400, {
      error: { code: 'invalid', message: 'bad input', details: [{ field: 'body.name', reason: 'too long' }] },
    })
    const api = createApi({ baseUrl: base, fetch: f })
    const err = await unwrap(api.POST('/api/v1/console/namespaces', { body: { name: 'x' } })).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ApiError)
    expect(errorText(err)).toBe('bad input (body.name: too long)')
  })

  it('turns a network failure into an ApiError', async () => {
    const f = (async () => {
      throw new TypeError('Failed to fetch')
    }) as unknown as typeof fetch
    const api = createApi({ baseUrl: base, fetch: f })
    await expect(unwrap(api.GET('/api/v1/console/nodes'))).rejects.toMatchObject({ status: 0, code: 'network' })
  })
})

describe('the jobs client', () => {
  it('posts a job over a filter with the CSRF header', async () => {
    const job = { id: 3, action: 'cancel', state: 'running', total: 10, done: 0, failed: 0 }
    const { f, calls } = fakeFetch(202, job)
    const jobs = jobsClient(createApi({ baseUrl: base, fetch: f, cookies: () => 'retryhub_csrf=abc' }))
    const got = await jobs.create({ action: 'cancel', filter: { namespace: 'default', state: 'waiting' } })
    expect(got.id).toBe(3)
    expect(calls[0]!.method).toBe('POST')
    expect(calls[0]!.headers.get(CSRF_HEADER)).toBe('abc')
    expect(await calls[0]!.json()).toEqual({ action: 'cancel', filter: { namespace: 'default', state: 'waiting' } })
  })

  it('pages with the query and reports a 401', async () => {
    const lost = vi.fn()
    const { f, calls } = fakeFetch(401, { error: { code: 'unauthenticated', message: 'no' } })
    const jobs = jobsClient(createApi({ baseUrl: base, fetch: f, onUnauthorized: lost }))
    await expect(jobs.list({ state: 'running', cursor: 'c1' })).rejects.toBeInstanceOf(ApiError)
    expect(calls[0]!.url).toContain('/api/v1/console/jobs?state=running&cursor=c1')
    expect(lost).toHaveBeenCalled()
  })

  it('sends set_next with its time', async () => {
    const { f, calls } = fakeFetch(202, { id: 4, action: 'set_next', state: 'running', total: 2, done: 0, failed: 0 })
    const jobs = jobsClient(createApi({ baseUrl: base, fetch: f }))
    await jobs.create({ action: 'set_next', ids: [1, 2], at: '2026-01-02T03:04:05Z' })
    expect(await calls[0]!.json()).toEqual({ action: 'set_next', ids: [1, 2], at: '2026-01-02T03:04:05Z' })
  })
})
