// Signing in and out, a lost session, the language, the theme, the password, and what a viewer
// does not see.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { apiSession, start, stop, ADMIN_PASSWORD } from '../harness.mjs'

let h
before(async () => {
  h = await start()
})
after(async () => {
  await stop(h)
})

describe('auth and preferences', () => {
  test('a signed-out visit goes to login and comes back to the page after signing in', async () => {
    const page = await h.newPage()
    await page.goto(`${h.base}/tasks?state=waiting`)
    await page.waitForURL(/\/login\?redirect=/)
    await h.shot(page, 'login')
    await page.locator('[data-test=username]').fill('admin')
    await page.locator('[data-test=password]').fill('wrong password')
    await page.locator('[data-test=login-submit]').click()
    await page.locator('[data-test=login-error]').waitFor()
    await page.locator('[data-test=password]').fill(ADMIN_PASSWORD)
    await page.locator('[data-test=login-submit]').click()
    await page.locator('[data-test=task-table]').waitFor()
    assert.match(page.url(), /\/tasks\?state=waiting$/)
    await page.context().close()
  })

  test('a session lost mid-way returns to login and then to the page the user was on', async () => {
    await h.createUser('lou', 'lou-password', '*', 'operator')
    const page = await h.newPage()
    await h.login(page, 'lou', 'lou-password', '/tasks?key=order-1')
    await page.locator('[data-test=task-table]').waitFor()
    await page.waitForLoadState('networkidle') // the rows' scene and group names are in
    // Signing out through the API ends every session of the user, the browser's included.
    await (await apiSession(h.base, 'lou', 'lou-password')).post('/api/v1/console/auth/logout')
    await page.locator('[data-test=filter-key]').fill('order-2')
    await page.locator('[data-test=filter-apply]').click()
    await page.waitForURL(/\/login\?redirect=/)
    await page.locator('[data-test=username]').fill('lou')
    await page.locator('[data-test=password]').fill('lou-password')
    await page.locator('[data-test=login-submit]').click()
    await page.locator('[data-test=filter-key]').waitFor()
    assert.match(page.url(), /\/tasks\?key=order-2$/)
    await page.context().close()
  })

  test('switching the language translates the console and is remembered', async () => {
    const page = await h.newPage()
    await h.login(page)
    await page.locator('[data-test=locale]').click()
    await page.locator('[data-test=locale-zh-CN]').click()
    await page.locator('[data-test=nav]').getByText('仪表盘').waitFor()
    await page.locator('[data-test=nav]').getByText('死信').waitFor()
    await page.goto(`${h.base}/tasks`)
    await page.locator('[data-test=task-table]').waitFor()
    await page.getByText('最后错误').first().waitFor()
    await h.shot(page, 'tasks-zh-CN')
    await page.reload()
    await page.locator('[data-test=nav]').getByText('仪表盘').waitFor()
    await page.locator('[data-test=locale]').click()
    await page.locator('[data-test=locale-en]').click()
    await page.locator('[data-test=nav]').getByText('Dashboard').waitFor()
    await page.context().close()
  })

  test('the theme switches to dark and back', async () => {
    const page = await h.newPage()
    await h.login(page)
    await page.locator('[data-test=theme]').click()
    await page.waitForFunction(() => document.documentElement.classList.contains('dark'))
    await page.goto(`${h.base}/dashboard`)
    await page.locator('[data-test=dash-chart]').waitFor()
    await h.shot(page, 'dashboard-dark')
    await page.locator('[data-test=theme]').click()
    await page.waitForFunction(() => !document.documentElement.classList.contains('dark'))
    await page.context().close()
  })

  test('a user changes the password, signs out, and signs in with the new one', async () => {
    await h.createUser('pat', 'first-password', '*', 'viewer')
    const page = await h.newPage()
    await h.login(page, 'pat', 'first-password', '/account')
    await page.locator('[data-test=current-password]').fill('first-password')
    await page.locator('[data-test=new-password]').fill('second-password')
    await page.locator('[data-test=repeat-password]').fill('second-password')
    await h.shot(page, 'account')
    await page.locator('[data-test=password-submit]').click()
    await page.getByText('Password changed').waitFor()
    await page.locator('[data-test=user-menu]').click()
    await page.locator('[data-test=logout]').click()
    await page.locator('[data-test=login-submit]').waitFor()
    await h.login(page, 'pat', 'second-password')
    await page.context().close()
  })

  test('a viewer finds no change buttons', async () => {
    await h.createUser('vera', 'viewer-password', 'default', 'viewer')
    await h.deadLetters()
    const page = await h.newPage()
    await h.login(page, 'vera', 'viewer-password', '/tasks')
    await page.locator('[data-test=task-table]').waitFor()
    assert.equal(await page.locator('[data-test=bulk-action]').count(), 0, 'bulk action button')
    assert.equal(await page.locator('[data-test=task-table] .el-checkbox').count(), 0, 'row selection')
    await h.shot(page, 'viewer-tasks')

    await page.goto(`${h.base}/dead-letters`)
    await page.locator('[data-test=task-table]').waitFor()
    assert.equal(await page.locator('[data-test=bulk-action]').count(), 0, 'dead letter actions')

    await page.locator('[data-test=task-link]').first().click()
    await page.locator('[data-test=task-attempts]').waitFor()
    await page.locator('[data-test=view-only]').waitFor()
    assert.equal(await page.locator('[data-test=task-actions]').count(), 0, 'task actions')
    assert.equal(await page.locator('[data-test=edit-args]').count(), 0, 'argument edit')
    await h.shot(page, 'viewer-task')

    // No administration entries in the navigation either.
    assert.equal(await page.locator('[data-test=nav]').getByText('Users').count(), 0)
    assert.equal(await page.locator('[data-test=nav]').getByText('Audit log').count(), 0)
    await page.context().close()
  })
})
