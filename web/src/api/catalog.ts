// Namespaces, groups and scenes on top of the client: pages by the API's `after` id as the
// string cursors useList keeps, and the lists the pickers need.
import { api, unwrap, type Schemas } from './client'
import type { Page } from '@/composables/list'

export type Namespace = Schemas['Namespace']
export type Group = Schemas['Group']
export type Scene = Schemas['Scene']
export type SummaryCounts = Schemas['SummaryCounts']

/** The most a picker lists at once (the API's page limit). */
export const PICKER_LIMIT = 200

/** afterOf reads a useList cursor as the API's after id (undefined for the first page). */
export function afterOf(cursor: string): number | undefined {
  const n = Number(cursor)
  return cursor && Number.isFinite(n) && n > 0 ? n : undefined
}

/** pageOf turns an answer paged by next_after into a useList page. */
export function pageOf<T>(r: { items: T[] | null; next_after: number }): Page<T> {
  return { items: r.items ?? [], next: r.next_after ? String(r.next_after) : '' }
}

/** enabledParam is the API's enabled filter of a select's value ('' for both). */
export function enabledParam(v: string | undefined): 'true' | 'false' | undefined {
  return v === 'true' || v === 'false' ? v : undefined
}

export async function namespacePage(cursor: string, opts: { name?: string; enabled?: string; limit?: number } = {}) {
  const r = await unwrap(api.GET('/api/v1/console/namespaces', {
    params: { query: { after: afterOf(cursor), limit: opts.limit ?? 50, name: opts.name || undefined, enabled: enabledParam(opts.enabled) } },
  }))
  return pageOf(r)
}

export async function groupPage(namespaceId: number, cursor: string, opts: { name?: string; enabled?: string; limit?: number } = {}) {
  const r = await unwrap(api.GET('/api/v1/console/namespaces/{id}/groups', {
    params: { path: { id: namespaceId }, query: { after: afterOf(cursor), limit: opts.limit ?? 50, name: opts.name || undefined, enabled: enabledParam(opts.enabled) } },
  }))
  return pageOf(r)
}

export async function scenePage(groupId: number, cursor: string, opts: { name?: string; enabled?: string; limit?: number } = {}) {
  const r = await unwrap(api.GET('/api/v1/console/groups/{id}/scenes', {
    params: { path: { id: groupId }, query: { after: afterOf(cursor), limit: opts.limit ?? 50, name: opts.name || undefined, enabled: enabledParam(opts.enabled) } },
  }))
  return pageOf(r)
}

/** allNamespaces is the namespaces the caller may read, for pickers. */
export async function allNamespaces(): Promise<Namespace[]> {
  return (await namespacePage('', { limit: PICKER_LIMIT })).items
}

/** groupsOf is a namespace's groups, for pickers. */
export async function groupsOf(namespaceId: number): Promise<Group[]> {
  return (await groupPage(namespaceId, '', { limit: PICKER_LIMIT })).items
}

/**
 * sceneFigures is what happened to each scene of a namespace over the last `hours` hours, by
 * scene id, from the dashboard's summaries (never a count of the tasks).
 */
export async function sceneFigures(namespaceId: number, hours = 24): Promise<Map<number, SummaryCounts>> {
  const until = new Date()
  const from = new Date(until.getTime() - hours * 3600_000)
  const r = await unwrap(api.GET('/api/v1/console/dashboard', {
    params: { query: { namespace_id: namespaceId, from: from.toISOString(), until: until.toISOString() } },
  }))
  const out = new Map<number, SummaryCounts>()
  for (const s of r.series ?? []) out.set(s.scene_id, s.totals)
  return out
}
