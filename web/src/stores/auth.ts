// Who is signed in, and what they may do.
import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import { api, unwrap, type Schemas } from '@/api/client'

export type Role = 'viewer' | 'operator' | 'admin'
export type Me = Schemas['Me']
export type Grant = Schemas['Grant']

/** The namespace name of a grant that holds everywhere. */
export const ALL_NAMESPACES = '*'

const rank: Record<Role, number> = { viewer: 1, operator: 2, admin: 3 }

/**
 * allows says whether grants give at least role in namespace (a name); with no namespace,
 * whether they give it in some namespace (enough to show a page that lists several).
 */
export function allows(grants: readonly Grant[], role: Role, namespace?: string): boolean {
  const want = rank[role]
  return grants.some((g) => {
    const have = rank[g.role as Role] ?? 0
    if (have < want) return false
    return namespace === undefined || g.namespace === ALL_NAMESPACES || g.namespace === namespace
  })
}

export const useAuth = defineStore('auth', () => {
  const me = ref<Me | null>(null)
  /** Whether GET auth/me has answered once (signed in or not). */
  const checked = ref(false)

  const grants = computed<Grant[]>(() => me.value?.roles ?? [])
  const signedIn = computed(() => me.value !== null)
  /** Admin on every namespace: users, the audit log, the signing key. */
  const globalAdmin = computed(() => grants.value.some((g) => g.namespace === ALL_NAMESPACES && g.role === 'admin'))

  /** can says whether the caller has at least role in namespace (any namespace when omitted). */
  function can(role: Role, namespace?: string): boolean {
    return allows(grants.value, role, namespace)
  }

  /** load asks the server who the caller is; a 401 leaves the store signed out. */
  async function load(): Promise<Me | null> {
    const r = await api.GET('/api/v1/console/auth/me')
    me.value = r.response.ok && r.data ? r.data : null
    checked.value = true
    return me.value
  }

  async function login(username: string, password: string) {
    await unwrap(api.POST('/api/v1/console/auth/login', { body: { username, password } }))
    return load()
  }

  async function logout() {
    try {
      await api.POST('/api/v1/console/auth/logout')
    } finally {
      me.value = null
    }
  }

  /** forget drops the session locally (after a 401). */
  function forget() {
    me.value = null
  }

  return { me, checked, grants, signedIn, globalAdmin, can, load, login, logout, forget }
})
