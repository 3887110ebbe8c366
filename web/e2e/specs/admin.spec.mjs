// The administration pages: an admin creates a viewer through the Users page, who then signs in
// and finds no change buttons; an API token is made (its secret shown once), works, and stops
// working when revoked; the audit log finds these changes through its server-side filters, kept in the URL.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { start, stop } from '../harness.mjs'

const VIEWER = 'e2e-viewer'
const VIEWER_PASSWORD = 'viewer-password-2'
const TOKEN = 'e2e-script'

let h
before(async () => {
  h = await start()
})
after(async () => {
  await stop(h)
})

/** shot pictures the page from its top (a page scrolled by the test would picture its sticky header mid-page). */
async function shot(page, name) {
  await page.evaluate(() => window.scrollTo(0, 0))
  await h.shot(page, name)
}

const visibleDialog = (page) => page.locator('.el-dialog:visible')

describe('administration', () => {
  test('an admin creates a viewer, who sees no change buttons', async () => {
    const page = await h.newPage()
    await h.login(page, 'admin', undefined, '/users')
    await page.locator('[data-test=users-table]').getByText('admin', { exact: true }).waitFor()
    await page.locator('[data-test=user-create]').click()
    const dialog = visibleDialog(page)
    await dialog.locator('[data-test=user-name]').fill(VIEWER)
    await dialog.locator('[data-test=user-password]').fill(VIEWER_PASSWORD)
    // The dialog starts with a viewer role over every namespace.
    assert.equal(await dialog.locator('[data-test=role-row]').count(), 1)
    await shot(page, 'admin-user-new')
    await dialog.locator('[data-test=dialog-save]').click()
    const row = page.locator('[data-test=users-table] .el-table__row', { hasText: VIEWER })
    await row.getByText('every namespace · viewer').waitFor()
    const users = (await h.api.get('/api/v1/console/users')).items
    assert.deepEqual(users.find((u) => u.username === VIEWER).roles, [{ namespace: '*', role: 'viewer' }])
    await shot(page, 'admin-users')
    await page.context().close()

    const viewer = await h.newPage()
    await h.login(viewer, VIEWER, VIEWER_PASSWORD, '/namespaces')
    await viewer.locator('[data-test=namespaces-table]').waitFor()
    assert.equal(await viewer.locator('[data-test=nav]').getByText('Administration').count(), 0)
    assert.equal(await viewer.locator('[data-test=namespace-create], [data-test=namespace-edit]').count(), 0)
    await viewer.goto(`${h.base}/tokens`)
    await viewer.getByText('This page needs the admin role in a namespace.').waitFor()
    assert.equal(await viewer.locator('[data-test=token-create]').count(), 0)
    await viewer.goto(`${h.base}/users`)
    await viewer.getByText('This page needs the admin role over every namespace.').waitFor()
    assert.equal(await viewer.locator('[data-test=user-create]').count(), 0)
    await shot(viewer, 'admin-viewer-users')
    await viewer.context().close()
  })

  test('disabling a user asks first; enabling does not', async () => {
    const page = await h.newPage()
    await h.login(page, 'admin', undefined, '/users')
    const row = page.locator('[data-test=users-table] .el-table__row', { hasText: VIEWER })
    await row.getByRole('button', { name: 'Disable', exact: true }).click()
    await page.locator('.el-message-box__btns .el-button--primary').click()
    await page.getByText(`${VIEWER} is disabled.`).waitFor()
    await row.getByRole('button', { name: 'Enable', exact: true }).waitFor()
    assert.equal((await h.api.get('/api/v1/console/users')).items.find((u) => u.username === VIEWER).disabled, true)
    await row.getByRole('button', { name: 'Enable', exact: true }).click()
    await page.getByText(`${VIEWER} is enabled.`).waitFor()
    assert.equal((await h.api.get('/api/v1/console/users')).items.find((u) => u.username === VIEWER).disabled, false)
  })

  test('an API token is shown once, works, and is revoked', async () => {
    const page = await h.newPage()
    await h.login(page, 'admin', undefined, '/tokens')
    await page.locator('[data-test=token-create]').click()
    await visibleDialog(page).locator('[data-test=token-name]').fill(TOKEN)
    await visibleDialog(page).getByText('operator', { exact: true }).click()
    await visibleDialog(page).locator('[data-test=dialog-save]').click()
    const shown = visibleDialog(page)
    await shown.getByText(`Token ${TOKEN} created`).waitFor()
    const secret = (await shown.locator('[data-test=copy-text]').first().innerText()).trim()
    assert.ok(secret.length >= 20, 'the secret is shown')
    await shot(page, 'admin-token-created')
    await shown.locator('[data-test=token-done]').click()

    const me = await fetch(`${h.base}/api/v1/console/auth/me`, { headers: { Authorization: `Bearer ${secret}` } })
    assert.equal(me.status, 200)
    assert.deepEqual((await me.json()).roles, [{ namespace: '*', role: 'operator' }])

    const row = page.locator('[data-test=tokens-table] .el-table__row', { hasText: TOKEN })
    await row.waitFor()
    await page.reload()
    await row.getByText(/\d{2}:\d{2}:\d{2}/).first().waitFor() // its last use
    await row.locator('[data-test=token-revoke]').click()
    await page.locator('.el-message-box__btns .el-button--primary').click()
    await row.getByText('revoked', { exact: true }).waitFor()
    assert.equal(await row.locator('[data-test=token-revoke]').count(), 0)
    const after = await fetch(`${h.base}/api/v1/console/auth/me`, { headers: { Authorization: `Bearer ${secret}` } })
    assert.equal(after.status, 401)
    await shot(page, 'admin-tokens')
    await page.context().close()
  })

  test('the audit log is filtered by the server, the filters kept in the URL', async () => {
    const page = await h.newPage()
    await h.login(page, 'admin', undefined, '/audit?action=users-create')
    const table = page.locator('[data-test=audit-table]')
    await table.getByText(VIEWER).first().waitFor()
    for (const action of await table.locator('.el-table__row td:nth-child(3)').allInnerTexts()) assert.equal(action.trim(), 'users-create')
    await shot(page, 'admin-audit-users-create')

    // Another filter through the page's fields lands in the URL.
    await page.locator('[data-test=audit-actor]').fill('admin')
    await page.locator('[data-test=audit-action] input').fill('tokens-revoke')
    await page.keyboard.press('Enter')
    await page.locator('[data-test=audit-search]').click()
    await page.waitForURL(/action=tokens-revoke/)
    assert.match(page.url(), /actor=admin/)
    await table.getByText(TOKEN).first().waitFor()

    await page.goto(`${h.base}/audit`)
    await table.waitFor()
    assert.ok((await table.locator('.el-table__row').count()) > 3)
    await shot(page, 'admin-audit')
    await page.context().close()
  })
})
