// The alert pages: an admin creates a webhook channel pointing at a receiver this spec runs,
// sends it a test (the page says sent, the receiver has it), creates a rule on dead letters and
// a silence, and finds the test message in the history with its content; a viewer sees the
// pages without change buttons.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { start, stop, waitUntil } from '../harness.mjs'

let h
let receiver
const received = []
before(async () => {
  receiver = createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += c))
    req.on('end', () => {
      received.push({ method: req.method, url: req.url, headers: req.headers, body })
      res.writeHead(200, { 'Content-Type': 'application/json' })
      res.end('{}')
    })
  })
  await new Promise((res) => receiver.listen(0, '127.0.0.1', res))
  h = await start()
})
after(async () => {
  await stop(h)
  await new Promise((res) => receiver.close(res))
})

const visibleDialog = (page) => page.locator('.el-dialog:visible')

async function shot(page, name) {
  await page.evaluate(() => window.scrollTo(0, 0))
  await h.shot(page, name)
}

describe('alerts', () => {
  test('a webhook channel, its test, a rule, a silence and the history', async () => {
    const hook = `http://127.0.0.1:${receiver.address().port}/hook`
    const page = await h.newPage()
    await h.login(page, 'admin', undefined, '/alerts/channels')
    // Without a namespace in the URL the page picks the first one and writes it there.
    await page.waitForURL(/namespace=default/)
    await page.locator('[data-test=list-empty]').waitFor()

    await page.locator('[data-test=channel-new]').click()
    let dialog = visibleDialog(page)
    await dialog.locator('[data-test=channel-name]').fill('oncall-hook')
    await dialog.locator('[data-test=channel-url]').fill(hook)
    await dialog.getByPlaceholder('One "Name: value" a line').fill('X-Team: payments')
    await dialog.locator('[data-test=channel-save]').click()
    await dialog.waitFor({ state: 'hidden' })
    const row = page.locator('[data-test=channel-table] .el-table__row', { hasText: 'oncall-hook' })
    await row.waitFor()

    await row.locator('[data-test=channel-test]').click()
    await row.locator('[data-test=test-sent]').waitFor()
    await waitUntil('the receiver got the test', async () => received.length > 0)
    assert.equal(received[0].method, 'POST')
    assert.equal(received[0].url, '/hook')
    assert.equal(received[0].headers['x-team'], 'payments')
    assert.ok(JSON.parse(received[0].body), 'a JSON body')
    await shot(page, 'alert-channels')

    // Editing shows the stored secret as set, never its value.
    const ch = (await h.api.get('/api/v1/console/namespaces/1/alert-channels')).items[0]
    await h.api.patch(`/api/v1/console/alert-channels/${ch.id}`, { settings: { url: hook, secret: 'hook-secret', headers: { 'X-Team': 'payments' } } })
    await page.reload()
    await row.getByRole('button', { name: 'Edit' }).click()
    dialog = visibleDialog(page)
    await dialog.getByPlaceholder('set — leave empty to keep').waitFor()
    assert.equal(await dialog.getByPlaceholder('set — leave empty to keep').inputValue(), '')
    await dialog.getByRole('button', { name: 'Cancel' }).click()
    await dialog.waitFor({ state: 'hidden' })

    // A rule on dead letters that tells the channel; the form shows only what the kind reads.
    await page.goto(`${h.base}/alerts/rules?namespace=default`)
    await page.locator('[data-test=list-empty]').waitFor()
    await page.locator('[data-test=rule-new]').click()
    dialog = visibleDialog(page)
    await dialog.locator('[data-test=rule-name]').fill('dead-letters')
    assert.equal(await dialog.getByText('Window', { exact: true }).count(), 1)
    assert.equal(await dialog.getByText('For', { exact: true }).count(), 0)
    await dialog.locator('[data-test=rule-channels]').click()
    await page.locator('.el-select-dropdown__item:visible', { hasText: 'oncall-hook' }).click()
    await dialog.locator('[data-test=rule-name]').click()
    await dialog.locator('[data-test=rule-save]').click()
    await dialog.waitFor({ state: 'hidden' })
    const ruleRow = page.locator('[data-test=rule-table] .el-table__row', { hasText: 'dead-letters' })
    await ruleRow.waitFor()
    assert.match(await ruleRow.innerText(), /Tasks exhausted/)
    assert.match(await ruleRow.innerText(), /oncall-hook/)
    const rules = await h.api.get('/api/v1/console/namespaces/1/alert-rules')
    assert.equal(rules.items[0].kind, 'tasks_exhausted')
    assert.deepEqual(rules.items[0].channel_ids, [ch.id])
    await shot(page, 'alert-rules')

    // A silence of two hours, on the second tab (kept in the URL).
    await page.getByRole('tab', { name: 'Silences' }).click()
    await page.waitForURL(/tab=silences/)
    await page.locator('[data-test=silence-new]').click()
    dialog = visibleDialog(page)
    await dialog.getByRole('textbox').last().fill('partner maintenance')
    await dialog.getByRole('button', { name: 'Save' }).click()
    await dialog.waitFor({ state: 'hidden' })
    await page.locator('[data-test=silence-table]').getByText('partner maintenance').waitFor()
    await page.locator('[data-test=silence-table]').getByText('in force').waitFor()
    await shot(page, 'alert-silences')

    // The history lists the test message, sent; a row opens to its content.
    await page.goto(`${h.base}/alerts/history?namespace=default&status=sent`)
    // (The rule may have fired by now too: the scenes' tasks run out of attempts; the test is
    // the row whose subject says so.)
    const msg = page.locator('[data-test=history-table] .el-table__row', { hasText: 'test message of channel oncall-hook' })
    await msg.waitFor()
    assert.match(await msg.innerText(), /\btest\b/)
    await msg.locator('[data-status=sent]').waitFor()
    await msg.locator('.el-table__expand-icon').click()
    await page.locator('[data-test=history-content]:visible').waitFor()
    await shot(page, 'alert-history')
    // The filter is in the URL: failed ones are none.
    await page.goto(`${h.base}/alerts/history?namespace=default&status=failed`)
    await page.getByText('Nothing matches these filters.').waitFor()
    assert.deepEqual(page.scriptErrors, [])
    await page.context().close()
  })

  test('a viewer sees the alert pages without change buttons', async () => {
    await h.api.post('/api/v1/console/users', { username: 'alert-viewer', password: 'viewer-password-3', roles: [{ namespace: '*', role: 'viewer' }] })
    const page = await h.newPage()
    await h.login(page, 'alert-viewer', 'viewer-password-3', '/alerts/channels?namespace=default')
    await page.locator('[data-test=channel-table]').getByText('oncall-hook').waitFor()
    assert.equal(await page.locator('[data-test=channel-new]').count(), 0)
    assert.equal(await page.locator('[data-test=channel-test]').count(), 0)
    await page.goto(`${h.base}/alerts/rules?namespace=default`)
    await page.locator('[data-test=rule-table]').getByText('dead-letters').waitFor()
    assert.equal(await page.locator('[data-test=rule-new]').count(), 0)
    assert.equal(await page.getByRole('button', { name: 'Edit' }).count(), 0)
    await page.context().close()
  })
})
