// Names of namespaces, groups and scenes, for filters and for rows that carry only ids. Each
// list is fetched once per session (up to 200 entries: enough for pickers; a longer catalog
// is searched on its own pages) and each id looked up once.
import { defineStore } from 'pinia'
import { reactive } from 'vue'
import { api, unwrap, type Schemas } from '@/api/client'

export type Namespace = Schemas['Namespace']
export type Group = Schemas['Group']
export type Scene = Schemas['Scene']

const LIMIT = 200

export const useNames = defineStore('names', () => {
  const groups = reactive(new Map<number, Group>())
  const scenes = reactive(new Map<number, Scene>())
  const lists = new Map<string, Promise<unknown>>()

  function once<T>(key: string, load: () => Promise<T>): Promise<T> {
    let p = lists.get(key) as Promise<T> | undefined
    if (!p) {
      p = load()
      p.catch(() => lists.delete(key))
      lists.set(key, p)
    }
    return p
  }

  function namespaces(): Promise<Namespace[]> {
    return once('ns', async () => {
      const r = await unwrap(api.GET('/api/v1/console/namespaces', { params: { query: { limit: LIMIT } } }))
      return r.items ?? []
    })
  }

  function groupsOf(namespaceId: number): Promise<Group[]> {
    return once(`groups:${namespaceId}`, async () => {
      const r = await unwrap(api.GET('/api/v1/console/namespaces/{id}/groups', { params: { path: { id: namespaceId }, query: { limit: LIMIT } } }))
      for (const g of r.items ?? []) groups.set(g.id, g)
      return r.items ?? []
    })
  }

  function scenesOf(groupId: number): Promise<Scene[]> {
    return once(`scenes:${groupId}`, async () => {
      const r = await unwrap(api.GET('/api/v1/console/groups/{id}/scenes', { params: { path: { id: groupId }, query: { limit: LIMIT } } }))
      for (const s of r.items ?? []) scenes.set(s.id, s)
      return r.items ?? []
    })
  }

  /** group looks a group up by id (cached); undefined when it cannot be read. */
  async function group(id: number): Promise<Group | undefined> {
    const known = groups.get(id)
    if (known) return known
    return once(`group:${id}`, async () => {
      const g = await unwrap(api.GET('/api/v1/console/groups/{id}', { params: { path: { id } } }))
      groups.set(id, g)
      return g
    }).catch(() => undefined)
  }

  async function scene(id: number): Promise<Scene | undefined> {
    const known = scenes.get(id)
    if (known) return known
    return once(`scene:${id}`, async () => {
      const s = await unwrap(api.GET('/api/v1/console/scenes/{id}', { params: { path: { id } } }))
      scenes.set(id, s)
      return s
    }).catch(() => undefined)
  }

  /** resolve looks up the groups and scenes of rows, so that groupName and sceneName can show them. */
  async function resolve(rows: readonly { group_id: number; scene_id: number }[]) {
    await Promise.all([
      ...[...new Set(rows.map((r) => r.group_id))].map(group),
      ...[...new Set(rows.map((r) => r.scene_id))].map(scene),
    ])
  }

  const groupName = (id: number) => groups.get(id)?.name ?? `#${id}`
  const sceneName = (id: number) => scenes.get(id)?.name ?? `#${id}`
  const namespaceOfGroup = (id: number) => groups.get(id)?.namespace

  /** forget drops what is cached (after the catalog changed). */
  function forget() {
    lists.clear()
    groups.clear()
    scenes.clear()
  }

  return { namespaces, groupsOf, scenesOf, group, scene, resolve, groupName, sceneName, namespaceOfGroup, forget }
})
