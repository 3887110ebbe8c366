// The console's one API client: openapi-fetch typed by schema.d.ts, which openapi-typescript
// generates from openapi.json, the document the server writes (`make web`). It sends the
// session cookie, repeats the CSRF cookie in the CSRF header on every change, and hands a 401
// to the handler the router installs (back to login, then to the page the user was on).
import createClient, { type Middleware } from 'openapi-fetch'
import type { components, paths } from './schema'

export type Schemas = components['schemas']

/** The cookie the server sets at login, readable by scripts. */
export const CSRF_COOKIE = 'retryhub_csrf'
/** The header that must repeat it on a change. */
export const CSRF_HEADER = 'X-Retryhub-CSRF'

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

/** cookie reads one cookie from a document.cookie string. */
export function cookie(all: string, name: string): string {
  for (const part of all.split(';')) {
    const [k, ...v] = part.trim().split('=')
    if (k === name) return decodeURIComponent(v.join('='))
  }
  return ''
}

export interface ClientOptions {
  baseUrl?: string
  fetch?: typeof globalThis.fetch
  /** The cookies (document.cookie in the browser). */
  cookies?: () => string
  /** Called on a 401 to any request but the login itself. */
  onUnauthorized?: () => void
}

/** The middleware that adds the CSRF header and reports a lost session. */
export function sessionMiddleware(opts: ClientOptions): Middleware {
  return {
    onRequest({ request }) {
      if (!SAFE_METHODS.has(request.method.toUpperCase())) {
        const csrf = cookie(opts.cookies?.() ?? '', CSRF_COOKIE)
        if (csrf) request.headers.set(CSRF_HEADER, csrf)
      }
      return request
    },
    onResponse({ request, response }) {
      if (response.status === 401 && !new URL(request.url).pathname.endsWith('/auth/login')) {
        opts.onUnauthorized?.()
      }
      return response
    },
  }
}

/** createApi makes a client; the console uses the one `api` below. */
export function createApi(opts: ClientOptions = {}) {
  const client = createClient<paths>({
    baseUrl: opts.baseUrl ?? '',
    credentials: 'same-origin',
    ...(opts.fetch ? { fetch: opts.fetch } : {}),
  })
  client.use(sessionMiddleware(opts))
  return client
}

export type Api = ReturnType<typeof createApi>

/** The handler of a lost session; the router sets it. */
let unauthorized: () => void = () => {}

/** onUnauthorized installs what a 401 does. */
export function onUnauthorized(fn: () => void) {
  unauthorized = fn
}

/** lostSession runs the installed handler of a 401. */
export function lostSession() {
  unauthorized()
}

/** browserCookies reads the page's cookies. */
export const browserCookies = () => (typeof document === 'undefined' ? '' : document.cookie)

/** The console's client. */
export const api = createApi({ cookies: browserCookies, onUnauthorized: lostSession })

/** ApiError is a failed call, with the server's code, message and field details. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: { field?: string; reason?: string }[] = [],
  ) {
    super(message)
    this.name = 'ApiError'
  }
}

interface ErrorBody {
  error?: { code?: string; message?: string; details?: { field?: string; reason?: string }[] | null }
}

/**
 * unwrap turns an openapi-fetch answer into its data, or throws an ApiError carrying the
 * server's message (or the network's failure).
 */
export async function unwrap<T>(p: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  let r: { data?: T; error?: unknown; response: Response }
  try {
    r = await p
  } catch (e) {
    throw new ApiError(0, 'network', e instanceof Error ? e.message : String(e))
  }
  if (r.response.ok) return r.data as T
  const body = (r.error ?? {}) as ErrorBody
  throw new ApiError(
    r.response.status,
    body.error?.code ?? String(r.response.status),
    body.error?.message ?? r.response.statusText,
    body.error?.details ?? [],
  )
}

/** errorText is what a page shows for a failure. */
export function errorText(e: unknown): string {
  if (e instanceof ApiError) {
    const details = e.details.map((d) => [d.field, d.reason].filter(Boolean).join(': ')).join('; ')
    return details ? `${e.message} (${details})` : e.message
  }
  return e instanceof Error ? e.message : String(e)
}
