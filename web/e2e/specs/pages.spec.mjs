// Every page of the console loads for an admin, and leaves a screenshot.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { start, stop } from '../harness.mjs'

let h
before(async () => {
  h = await start()
})
after(async () => {
  await stop(h)
})

// [screenshot name, path]; ids 1 are the bootstrap namespace, group and the first scene.
const pages = [
  ['dashboard', '/dashboard'],
  ['namespaces', '/namespaces'],
  ['groups', '/namespaces/1/groups'],
  ['scenes', '/scenes'],
  ['scene-editor', '/scenes/1'],
  ['tasks-page', '/tasks'],
  ['dead-letters-page', '/dead-letters'],
  ['jobs-page', '/jobs'],
  ['instances', '/instances'],
  ['nodes', '/nodes'],
  ['users', '/users'],
  ['tokens', '/tokens'],
  ['audit', '/audit'],
  ['alert-channels', '/alerts/channels'],
  ['alert-rules', '/alerts/rules'],
  ['alert-history', '/alerts/history'],
  ['account-page', '/account'],
  ['not-found', '/no/such/page'],
]

describe('every page', () => {
  test('loads without a script error and is pictured', async () => {
    await h.deadLetters()
    const page = await h.newPage()
    await h.login(page)
    for (const [name, path] of pages) {
      await page.goto(h.base + path)
      await page.locator('[data-test=nav]').waitFor()
      await page.locator('.page-title, .el-result').first().waitFor()
      await page.waitForLoadState('networkidle')
      await h.shot(page, name)
    }
    assert.deepEqual(page.scriptErrors, [])
    await page.context().close()
  })

  test('the dashboard shows the activity, the failing scenes and the live counts', async () => {
    const page = await h.newPage()
    await h.login(page, 'admin', undefined, '/dashboard?range=15m')
    await page.locator('[data-test=dash-chart] canvas').waitFor()
    await page.locator('[data-test=dash-failing]').getByText('notify').waitFor()
    await page.locator('[data-test=dash-failing]').getByText('550 mailbox unavailable').first().waitFor()
    assert.equal((await page.locator('[data-test=dash-nodes] .dash__num').innerText()).trim(), '1')
    assert.equal((await page.locator('[data-test=dash-instances] .dash__num').innerText()).trim(), '1')
    await h.shot(page, 'dashboard-15m')
    await page.context().close()
  })
})
