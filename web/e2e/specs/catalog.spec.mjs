// The catalog pages: a group made through the pages (its token shown once, its SDK snippet, a
// rotation), a scene made in the policy editor with the preview timeline redrawn while typing
// and the server's errors at the fields, a scene paused and resumed from the list, and a viewer
// who finds no change buttons there.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { start, stop, waitUntil } from '../harness.mjs'

const GROUP = 'e2e-billing'
const SCENE = 'charge'
const VIEWER = 'e2e-catalog-viewer'
const VIEWER_PASSWORD = 'viewer-password-1'

let h
let ns // the first namespace
before(async () => {
  h = await start()
  ns = (await h.api.get('/api/v1/console/namespaces')).items[0]
})
after(async () => {
  await stop(h)
})

/** shot pictures the page from its top (a page scrolled by the test would picture its sticky header mid-page). */
async function shot(page, name) {
  await page.evaluate(() => window.scrollTo(0, 0))
  await h.shot(page, name)
}

/** visibleDialog is the dialog on top. */
const visibleDialog = (page) => page.locator('.el-dialog:visible')

/** confirmBox accepts an ElMessageBox confirmation. */
async function confirmBox(page) {
  await page.locator('.el-message-box__btns .el-button--primary').click()
}

/** previewRows waits for the preview to list n times, and answers their "after the failure" column. */
async function previewRows(page, n) {
  await waitUntil(`${n} preview rows`, async () => (await page.locator('[data-test=preview-row]').count()) === n, 15000)
  return page.locator('[data-test=preview-row] td:nth-child(2)').allInnerTexts()
}

describe('catalog', () => {
  let groupId
  let sceneId

  test('a group is created through the pages, its token shown once, then rotated', async () => {
    const page = await h.newPage()
    await h.login(page, 'admin', undefined, '/namespaces')
    await page.locator('[data-test=namespaces-table]').getByText(ns.name, { exact: true }).waitFor()
    await shot(page, 'catalog-namespaces')
    await page.locator('[data-test=namespace-link]', { hasText: ns.name }).click()
    await page.waitForURL(`**/namespaces/${ns.id}/groups`)

    await page.locator('[data-test=group-create]').click()
    await page.locator('[data-test=group-name]').fill(GROUP)
    await page.locator('[data-test=dialog-save]:visible').click()
    const dialog = visibleDialog(page)
    await dialog.getByText(`Group ${GROUP} created`).waitFor()
    const token = (await dialog.locator('[data-test=copy-text]').first().innerText()).trim()
    assert.match(token, /^[0-9a-f]{48}$/)
    await shot(page, 'catalog-group-token')
    await dialog.locator('[data-test=token-done]').click()

    const row = page.locator('[data-test=groups-table] .el-table__row', { hasText: GROUP })
    await row.waitFor()
    const groups = (await h.api.get(`/api/v1/console/namespaces/${ns.id}/groups`)).items
    groupId = groups.find((g) => g.name === GROUP).id

    // The SDK snippet names the namespace and the group, ready to paste.
    await row.locator('[data-test=group-snippet]').click()
    const snippet = visibleDialog(page).locator('[data-test=copy-text]')
    await snippet.getByText(`Group:      "${GROUP}"`).waitFor()
    assert.match(await snippet.innerText(), new RegExp(`Namespace:\\s+"${ns.name}"`))
    await shot(page, 'catalog-group-snippet')
    await page.keyboard.press('Escape')
    await visibleDialog(page).waitFor({ state: 'hidden' })

    // A rotation with an hour's grace shows a new token once; the old one is kept for the hour.
    await row.locator('[data-test=group-rotate]').click()
    await visibleDialog(page).getByText('1 hour').click()
    await page.locator('[data-test=rotate-confirm]').click()
    const rotated = visibleDialog(page)
    await rotated.getByText(`New token of ${GROUP}`).waitFor()
    const next = (await rotated.locator('[data-test=copy-text]').first().innerText()).trim()
    assert.match(next, /^[0-9a-f]{48}$/)
    assert.notEqual(next, token)
    await rotated.locator('[data-test=token-done]').click()
    await row.getByText(/^until /).waitFor()
    const g = await h.api.get(`/api/v1/console/groups/${groupId}`)
    assert.ok(g.prev_token_until, 'the old token has a grace')
    await shot(page, 'catalog-groups')
    await page.context().close()
  })

  test('a scene is created in the policy editor, with the preview redrawn while typing', async () => {
    assert.ok(groupId, 'the group exists')
    const page = await h.newPage()
    await h.login(page, 'admin', undefined, `/scenes?namespace_id=${ns.id}&group_id=${groupId}`)
    await page.locator('[data-test=scene-create]').click()
    await page.waitForURL(/\/scenes\/new\?group_id=/)

    // The default policy's preview: the default ladder, 16 replays.
    const ladder = await previewRows(page, 16)
    assert.equal(ladder[0], '+10s')

    await page.locator('[data-test=scene-name]').fill(SCENE)
    await page.locator('[data-test=backoff-strategy-fixed]').click()
    await page.locator('[data-test=backoff-interval]').fill('30s')
    await page.locator('[data-test=max-attempts] input').fill('5')
    await page.locator('[data-test=max-attempts] input').press('Tab')
    const fixed = await previewRows(page, 5)
    assert.deepEqual(fixed, ['+30s', '+1m', '+1m30s', '+2m', '+2m30s'])

    // A duration the server cannot read is said at its field, by the preview's answer.
    await page.locator('[data-test=backoff-interval]').fill('abc')
    await page.locator('.el-form-item__error', { hasText: 'is not a duration' }).waitFor()
    await page.locator('[data-test=preview-error]').waitFor()
    await page.locator('[data-test=backoff-interval]').fill('1m')
    assert.equal((await previewRows(page, 5))[0], '+1m')
    await page.locator('.el-form-item__error').waitFor({ state: 'detached' })

    // Exponential: the timeline follows each field.
    await page.locator('[data-test=backoff-strategy-exponential]').click()
    await page.locator('[data-test=backoff-base]').fill('2s')
    await page.locator('[data-test=backoff-cap]').fill('1m')
    await waitUntil('the exponential preview', async () => {
      const rows = await page.locator('[data-test=preview-row] td:nth-child(3)').allInnerTexts()
      return rows.join(' ') === '+2s +4s +8s +16s +32s'
    }, 15000)
    await shot(page, 'catalog-scene-new')

    await page.locator('[data-test=scene-save]').click()
    await page.waitForURL(/\/scenes\/\d+$/)
    sceneId = Number(new URL(page.url()).pathname.split('/').pop())
    const sc = await h.api.get(`/api/v1/console/scenes/${sceneId}`)
    assert.equal(sc.name, SCENE)
    assert.equal(sc.max_attempts, 5)
    assert.deepEqual(sc.backoff, { strategy: 'exponential', base: '2s', cap: '1m0s' })

    // A cron expression the server refuses: its 400 is shown at the back-off's field on save.
    await page.locator('[data-test=backoff-strategy-cron]').click()
    await page.locator('[data-test=backoff-cron]').fill('not a cron')
    await page.locator('[data-test=scene-save]').click()
    await page.locator('[data-test=editor-error]').waitFor()
    await page.locator('.el-form-item__error', { hasText: 'cron expression' }).first().waitFor()
    await shot(page, 'catalog-scene-errors')
    await page.locator('[data-test=backoff-cron]').fill('*/10 * * * *')
    await page.locator('[data-test=scene-save]').click()
    await page.getByText(/Saved: version \d+/).waitFor()
    assert.equal((await h.api.get(`/api/v1/console/scenes/${sceneId}`)).backoff.cron, '*/10 * * * *')
    await shot(page, 'catalog-scene-editor')

    // Leaving with an unsaved change asks first: staying keeps the page, leaving goes.
    await page.locator('[data-test=scene-description]').fill('charges the card')
    const nav = page.locator('[data-test=nav]').getByText('Namespaces & groups')
    await nav.click()
    await page.getByText('Leave without saving them?').waitFor()
    await page.locator('.el-message-box__btns .el-button').filter({ hasText: 'Stay' }).click()
    await page.locator('.el-message-box').waitFor({ state: 'hidden' })
    assert.match(new URL(page.url()).pathname, /^\/scenes\/\d+$/)
    await nav.click()
    await page.locator('.el-message-box__btns .el-button').filter({ hasText: 'Leave' }).click()
    await page.waitForURL('**/namespaces')
    assert.equal((await h.api.get(`/api/v1/console/scenes/${sceneId}`)).description, '')
    await page.context().close()
  })

  test('a scene is paused and resumed from the list', async () => {
    assert.ok(sceneId, 'the scene exists')
    const page = await h.newPage()
    await h.login(page, 'admin', undefined, `/scenes?namespace_id=${ns.id}&group_id=${groupId}`)
    const row = page.locator('[data-test=scenes-table] .el-table__row', { hasText: SCENE })
    await row.locator('[data-test=scene-state]', { hasText: 'Running' }).waitFor()
    await row.locator('[data-test=scene-pause]').click()
    await confirmBox(page)
    await row.locator('[data-test=scene-state]', { hasText: 'Paused' }).waitFor()
    assert.equal((await h.api.get(`/api/v1/console/scenes/${sceneId}`)).enabled, false)
    await shot(page, 'catalog-scenes-paused')
    await row.locator('[data-test=scene-resume]').click()
    await row.locator('[data-test=scene-state]', { hasText: 'Running' }).waitFor()
    assert.equal((await h.api.get(`/api/v1/console/scenes/${sceneId}`)).enabled, true)
    await page.context().close()
  })

  test('a viewer reads the catalog and finds no change buttons', async () => {
    await h.createUser(VIEWER, VIEWER_PASSWORD, '*', 'viewer')
    const page = await h.newPage()
    await h.login(page, VIEWER, VIEWER_PASSWORD, `/namespaces/${ns.id}/groups`)
    await page.locator('[data-test=groups-table] .el-table__row', { hasText: GROUP }).waitFor()
    for (const sel of ['group-create', 'group-rotate']) assert.equal(await page.locator(`[data-test=${sel}]`).count(), 0, sel)
    await page.goto(`${h.base}/namespaces`)
    await page.locator('[data-test=namespaces-table]').waitFor()
    assert.equal(await page.locator('[data-test=namespace-create], [data-test=namespace-edit]').count(), 0)
    await page.goto(`${h.base}/scenes?namespace_id=${ns.id}&group_id=${groupId}`)
    await page.locator('[data-test=scenes-table] .el-table__row', { hasText: SCENE }).waitFor()
    assert.equal(await page.locator('[data-test=scene-create], [data-test=scene-pause], [data-test=scene-resume]').count(), 0)
    await page.goto(`${h.base}/scenes/${sceneId}`)
    await page.getByText('You can read this policy').waitFor()
    await previewRows(page, 5)
    assert.equal(await page.locator('[data-test=scene-save], [data-test=scene-pause]').count(), 0)
    await shot(page, 'catalog-scene-viewer')
    await page.context().close()
  })

  test('the policy editor reads in Chinese, at a laptop\'s width', async () => {
    assert.ok(sceneId, 'the scene exists')
    const page = await h.newPage({ viewport: { width: 1280, height: 800 } })
    await page.addInitScript(() => localStorage.setItem('retryhub.locale', 'zh-CN'))
    await h.login(page, 'admin', undefined, `/scenes/${sceneId}`)
    await page.getByText('接下来的触发时间').waitFor()
    await page.getByText('远程重放（由服务端执行）').waitFor()
    await previewRows(page, 5)
    await shot(page, 'catalog-scene-editor-zh')
    await page.context().close()
  })
})
