// Every page of the console, lazy loaded, under the signed-in layout (except login).
import { createRouter, createWebHistory, type RouteRecordRaw } from 'vue-router'
import { onUnauthorized } from '@/api/client'
import { useAuth } from '@/stores/auth'
import AppLayout from '@/layouts/AppLayout.vue'

declare module 'vue-router' {
  interface RouteMeta {
    /** The i18n key of the page's title. */
    title?: string
    /** Reachable without signing in. */
    public?: boolean
    /** Needs admin on every namespace (users, audit log). */
    globalAdmin?: boolean
  }
}

export const routes: RouteRecordRaw[] = [
  { path: '/login', name: 'login', component: () => import('@/pages/auth/LoginPage.vue'), meta: { public: true, title: 'nav.login' } },
  {
    path: '/',
    component: AppLayout,
    children: [
      { path: '', redirect: { name: 'dashboard' } },
      { path: 'dashboard', name: 'dashboard', component: () => import('@/pages/dashboard/DashboardPage.vue'), meta: { title: 'nav.dashboard' } },
      // Catalog
      { path: 'namespaces', name: 'namespaces', component: () => import('@/pages/catalog/NamespacesPage.vue'), meta: { title: 'nav.namespaces' } },
      { path: 'namespaces/:id/groups', name: 'groups', component: () => import('@/pages/catalog/GroupsPage.vue'), meta: { title: 'nav.groups' } },
      { path: 'scenes', name: 'scenes', component: () => import('@/pages/catalog/ScenesPage.vue'), meta: { title: 'nav.scenes' } },
      { path: 'scenes/new', name: 'scene-new', component: () => import('@/pages/catalog/SceneEditor.vue'), meta: { title: 'nav.sceneEditor' } },
      { path: 'scenes/:id', name: 'scene', component: () => import('@/pages/catalog/SceneEditor.vue'), meta: { title: 'nav.sceneEditor' } },
      // Work
      { path: 'tasks', name: 'tasks', component: () => import('@/pages/tasks/TasksPage.vue'), meta: { title: 'nav.tasks' } },
      { path: 'tasks/:id', name: 'task', component: () => import('@/pages/tasks/TaskPage.vue'), meta: { title: 'nav.task' } },
      { path: 'dead-letters', name: 'dead-letters', component: () => import('@/pages/tasks/DeadLettersPage.vue'), meta: { title: 'nav.deadLetters' } },
      { path: 'jobs', name: 'jobs', component: () => import('@/pages/jobs/JobsPage.vue'), meta: { title: 'nav.jobs' } },
      // Cluster
      { path: 'instances', name: 'instances', component: () => import('@/pages/cluster/InstancesPage.vue'), meta: { title: 'nav.instances' } },
      { path: 'nodes', name: 'nodes', component: () => import('@/pages/cluster/NodesPage.vue'), meta: { title: 'nav.nodes' } },
      // Administration
      { path: 'users', name: 'users', component: () => import('@/pages/admin/UsersPage.vue'), meta: { title: 'nav.users', globalAdmin: true } },
      { path: 'tokens', name: 'tokens', component: () => import('@/pages/admin/TokensPage.vue'), meta: { title: 'nav.tokens' } },
      { path: 'audit', name: 'audit', component: () => import('@/pages/admin/AuditPage.vue'), meta: { title: 'nav.audit', globalAdmin: true } },
      // Alerts
      { path: 'alerts', redirect: { name: 'alert-rules' } },
      { path: 'alerts/channels', name: 'alert-channels', component: () => import('@/pages/alerts/ChannelsPage.vue'), meta: { title: 'nav.alertChannels' } },
      { path: 'alerts/rules', name: 'alert-rules', component: () => import('@/pages/alerts/RulesPage.vue'), meta: { title: 'nav.alertRules' } },
      { path: 'alerts/history', name: 'alert-history', component: () => import('@/pages/alerts/HistoryPage.vue'), meta: { title: 'nav.alertHistory' } },
      // Account
      { path: 'account', name: 'account', component: () => import('@/pages/account/AccountPage.vue'), meta: { title: 'nav.account' } },
      { path: ':rest(.*)*', name: 'not-found', component: () => import('@/pages/NotFoundPage.vue'), meta: { title: 'nav.notFound' } },
    ],
  },
]

/** loginTarget is where a lost session sends the user: login, then back to path. */
export function loginTarget(path: string) {
  return path && path !== '/' && !path.startsWith('/login') ? { name: 'login', query: { redirect: path } } : { name: 'login' }
}

/** safeRedirect keeps a redirect inside the console. */
export function safeRedirect(v: unknown): string {
  const s = Array.isArray(v) ? v[0] : v
  return typeof s === 'string' && s.startsWith('/') && !s.startsWith('//') ? s : '/dashboard'
}

export function makeRouter() {
  const router = createRouter({ history: createWebHistory(), routes })

  router.beforeEach(async (to) => {
    const auth = useAuth()
    if (!auth.checked) await auth.load().catch(() => null)
    if (to.meta.public) return true
    if (!auth.signedIn) return loginTarget(to.fullPath)
    return true
  })

  onUnauthorized(() => {
    const auth = useAuth()
    // The first "who am I" runs inside the guard above, which sends the user to login itself.
    if (!auth.checked) return
    auth.forget()
    const current = router.currentRoute.value
    if (current.meta.public) return
    void router.replace(loginTarget(current.fullPath))
  })

  return router
}
