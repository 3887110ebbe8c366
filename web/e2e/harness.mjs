// The browser suite's harness: a server built from this tree on a temp SQLite database and a
// free port, a real SDK client (examples/cmd/failing) reporting failing tasks, and Debian's
// chromium driven by playwright-core. Each spec file starts one harness (start()) and stops it
// (stop()); screenshots go to e2e/out/screenshots, whose path stop() prints.
import { spawn, execFileSync } from 'node:child_process'
import { mkdtempSync, mkdirSync, rmSync, existsSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'

const here = dirname(fileURLToPath(import.meta.url))
export const repo = resolve(here, '..', '..')
export const outDir = join(here, 'out')
export const shotDir = join(outDir, 'screenshots')
const binDir = join(outDir, 'bin')

export const ADMIN_PASSWORD = 'e2e-admin-password'
export const GROUP_TOKEN = 'e2e-group-token-0123456789abcdef0123456789abcdef'
/** The calls of each scene the client reports. */
export const TASKS_PER_SCENE = 12

const CHROMIUM = process.env.RETRYHUB_E2E_CHROMIUM || '/usr/bin/chromium'
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run', '--disable-dev-shm-usage',
]

/** freePort asks the system for a port nobody listens on. */
export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer()
    s.unref()
    s.on('error', rej)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => res(port))
    })
  })
}

/** waitUntil polls fn until it returns a truthy value, or fails after timeout ms. */
export async function waitUntil(what, fn, timeout = 30000, every = 200) {
  const deadline = Date.now() + timeout
  let last
  for (;;) {
    try {
      const v = await fn()
      if (v) return v
    } catch (e) {
      last = e
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`)
    await new Promise((r) => setTimeout(r, every))
  }
}

function build() {
  mkdirSync(binDir, { recursive: true })
  const go = process.env.GO || 'go'
  execFileSync(go, ['build', '-o', join(binDir, 'retryhub-server'), './server/cmd/retryhub-server'], { cwd: repo, stdio: 'inherit' })
  execFileSync(go, ['build', '-o', join(binDir, 'failing'), './examples/cmd/failing'], { cwd: repo, stdio: 'inherit' })
}

function startProcess(name, bin, args, env, logs) {
  const p = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  const lines = []
  const keep = (chunk) => {
    for (const l of chunk.toString().split('\n')) if (l) lines.push(l)
    if (lines.length > 2000) lines.splice(0, lines.length - 2000)
  }
  p.stdout.on('data', keep)
  p.stderr.on('data', keep)
  logs[name] = lines
  return p
}

function stopProcess(p) {
  if (!p || p.exitCode !== null || p.signalCode !== null) return Promise.resolve()
  return new Promise((res) => {
    const kill = setTimeout(() => p.kill('SIGKILL'), 10000)
    p.once('exit', () => {
      clearTimeout(kill)
      res()
    })
    p.kill('SIGTERM')
  })
}

/**
 * start builds and starts everything: the server, the failing client (after the scenes' tasks
 * are all in the server), and the browser. It answers the harness h that specs use.
 */
export async function start({ tasks = TASKS_PER_SCENE } = {}) {
  build()
  const dir = mkdtempSync(join(tmpdir(), 'retryhub-e2e-'))
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const logs = {}
  const h = { base, dir, logs, procs: [], shots: [] }
  h.server = startProcess('server', join(binDir, 'retryhub-server'), [], {
    RETRYHUB_SERVER_LISTEN: `127.0.0.1:${port}`,
    RETRYHUB_DATABASE_DSN: `sqlite://${join(dir, 'retryhub.db')}`,
    RETRYHUB_BOOTSTRAP_ADMIN_PASSWORD: ADMIN_PASSWORD,
    RETRYHUB_BOOTSTRAP_GROUP_TOKEN: GROUP_TOKEN,
    RETRYHUB_AUTH_BCRYPT_COST: '4',
    RETRYHUB_AUTH_ALLOW_WEAK_HASH: 'true',
    RETRYHUB_LOG_LEVEL: 'warn',
  }, logs)
  h.procs.push(h.server)
  await waitUntil('the server', async () => (await fetch(`${base}/healthz`)).ok, 60000).catch((e) => {
    throw new Error(`${e.message}\n${logs.server.join('\n')}`)
  })
  h.api = await apiSession(base, 'admin', ADMIN_PASSWORD)

  const clientPort = await freePort()
  h.client = startProcess('client', join(binDir, 'failing'), ['-server', base, '-listen', `127.0.0.1:${clientPort}`, '-tasks', String(tasks)], {
    RETRYHUB_TOKEN: GROUP_TOKEN,
  }, logs)
  h.procs.push(h.client)
  await waitUntil('the client\'s reports', async () => {
    if (h.client.exitCode !== null) throw new Error(`the client exited: ${logs.client.join('\n')}`)
    const r = await h.api.get('/api/v1/console/tasks/count')
    return r.count >= 2 * tasks
  }, 60000)

  h.browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS })
  mkdirSync(shotDir, { recursive: true })

  /** newPage opens a fresh browser context (no cookies) at 1280×800, the smallest laptop the console serves. */
  h.newPage = async (opts = {}) => {
    const ctx = await h.browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US', timezoneId: 'Asia/Shanghai', ...opts })
    const page = await ctx.newPage()
    page.setDefaultTimeout(20000)
    // Script errors, Vue's included (it logs them to the console), are kept for specs to check.
    page.scriptErrors = []
    page.on('pageerror', (e) => page.scriptErrors.push(e.message))
    page.on('console', (m) => {
      if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) page.scriptErrors.push(m.text())
    })
    return page
  }

  /** login signs in through the login page and waits for the navigation. */
  h.login = async (page, username = 'admin', password = ADMIN_PASSWORD, path = '/') => {
    await page.goto(base + path)
    await page.locator('[data-test=username]').fill(username)
    await page.locator('[data-test=password]').fill(password)
    await page.locator('[data-test=login-submit]').click()
    await page.locator('[data-test=nav]').waitFor()
  }

  /** shot saves a full-page screenshot as <name>.png. */
  h.shot = async (page, name) => {
    await page.waitForTimeout(300) // let transitions (menus, dialogs) settle before the picture
    const path = join(shotDir, `${name}.png`)
    await page.screenshot({ path, fullPage: true })
    h.shots.push(path)
    return path
  }

  /** deadLetters waits until at least n tasks are exhausted (the notify scene's, after 2 replays). */
  h.deadLetters = (n = 1) =>
    waitUntil(`${n} dead letters`, async () => (await h.api.get('/api/v1/console/tasks/count?state=exhausted')).count >= n, 60000)

  /** createUser makes a console user with one grant. */
  h.createUser = (username, password, namespace, role) =>
    h.api.post('/api/v1/console/users', { username, password, roles: [{ namespace, role }] })

  return h
}

/** stop ends the browser and the processes and prints where the screenshots are. */
export async function stop(h) {
  if (!h) return
  await h.browser?.close().catch(() => {})
  for (const p of [...h.procs].reverse()) await stopProcess(p)
  if (h.dir && existsSync(h.dir)) rmSync(h.dir, { recursive: true, force: true })
  if (h.shots.length) console.log(`screenshots (${h.shots.length}) in ${shotDir}:\n  ${h.shots.map((s) => s.slice(shotDir.length + 1)).join('\n  ')}`)
}

/** apiSession signs in through the API and answers get/post/patch/put with the bearer token. */
export async function apiSession(base, username, password) {
  const login = await fetch(`${base}/api/v1/console/auth/login`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ username, password }),
  })
  if (!login.ok) throw new Error(`login ${username}: ${login.status} ${await login.text()}`)
  const { token } = await login.json()
  const call = async (method, path, body) => {
    const r = await fetch(base + path, {
      method,
      headers: { Authorization: `Bearer ${token}`, ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    })
    const text = await r.text()
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`)
    return text ? JSON.parse(text) : undefined
  }
  return {
    token,
    get: (p) => call('GET', p),
    post: (p, b) => call('POST', p, b),
    patch: (p, b) => call('PATCH', p, b),
    put: (p, b) => call('PUT', p, b),
    del: (p) => call('DELETE', p),
  }
}
