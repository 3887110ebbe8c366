// Tasks as an operator sees them: the reported failures arrive in the list, the filters live in
// the URL, a task's attempts can be read, and a dead letter can be replayed.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { start, stop, waitUntil, TASKS_PER_SCENE } from '../harness.mjs'

let h
before(async () => {
  h = await start()
})
after(async () => {
  await stop(h)
})

describe('tasks', () => {
  test('the reported tasks appear in the task list, newest first, paged', async () => {
    const page = await h.newPage()
    await h.login(page, 'admin', undefined, '/tasks')
    const rows = page.locator('[data-test=task-table] .el-table__body tr')
    await waitUntil('the reported tasks in the list', async () => (await rows.count()) >= 2 * TASKS_PER_SCENE, 30000, 500).catch(async (e) => {
      await page.reload()
      throw e
    })
    const keys = await page.locator('[data-test=task-table] .el-table__body tr td:nth-child(3)').allInnerTexts()
    assert.ok(keys.includes(`order-${TASKS_PER_SCENE}`), `keys ${keys.join(', ')}`)
    await page.getByText('payment gateway unavailable').first().waitFor()
    await h.shot(page, 'tasks')
    await page.context().close()
  })

  test('filters are kept in the URL: an argument filter finds one order in each scene', async () => {
    const page = await h.newPage()
    await h.login(page, 'admin', undefined, '/tasks')
    await page.locator('[data-test=filter-arg]').fill('orderId=3')
    await page.locator('[data-test=filter-apply]').click()
    await page.waitForURL(/arg=orderId%3D3|arg=orderId=3/)
    const rows = page.locator('[data-test=task-table] .el-table__body tr')
    await waitUntil('two rows', async () => (await rows.count()) === 2)
    // The same URL in a new tab shows the same view.
    const url = page.url()
    const again = await h.newPage()
    await h.login(again, 'admin', undefined, new URL(url).pathname + new URL(url).search)
    await waitUntil('two rows again', async () => (await again.locator('[data-test=task-table] .el-table__body tr').count()) === 2)
    assert.equal(await again.locator('[data-test=filter-arg]').inputValue(), 'orderId=3')
    await again.context().close()
    // A filter that matches nothing says so in words.
    await page.locator('[data-test=filter-key]').fill('no-such-key')
    await page.locator('[data-test=filter-apply]').click()
    await page.locator('[data-test=list-empty]').waitFor()
    await page.context().close()
  })

  test('a task page shows the attempts with their errors', async () => {
    await h.deadLetters()
    const page = await h.newPage()
    await h.login(page, 'admin', undefined, '/tasks?state=exhausted')
    await page.locator('[data-test=task-link]').first().click()
    await page.locator('[data-test=task-attempts]').waitFor()
    await waitUntil('two attempts', async () => (await page.locator('[data-test=attempt]').count()) >= 2)
    const errors = await page.locator('[data-test=attempt-error]').allInnerTexts()
    assert.ok(errors.every((e) => e.includes('550 mailbox unavailable')), errors.join(' | '))
    assert.match(await page.locator('[data-test=task-args]').innerText(), /"orderId": \d+/)
    await page.locator('[data-test=task-callback]').waitFor()
    await h.shot(page, 'task')
    await page.context().close()
  })

  test('a dead letter is replayed from its page', async () => {
    await h.deadLetters(2)
    const page = await h.newPage()
    await h.login(page, 'admin', undefined, '/dead-letters')
    await page.locator('[data-test=task-table]').waitFor()
    await h.shot(page, 'dead-letters')
    const link = page.locator('[data-test=task-link]').first()
    const id = Number(await link.innerText())
    await link.click()
    await page.locator('[data-test=action-replay]').click()
    await page.getByText('Replaying.').waitFor()
    const task = await h.api.get(`/api/v1/console/tasks/${id}`)
    assert.notEqual(task.state, 'exhausted', 'the replayed task left the dead letters')
    // It runs again: one more attempt is recorded (and fails, as everything here does).
    await waitUntil('a third attempt', async () => (await h.api.get(`/api/v1/console/tasks/${id}`)).attempts.length >= 3, 30000)
    await page.context().close()
  })

  test('a waiting task is paused and resumed, and its arguments edited', async () => {
    const page = await h.newPage()
    // A charge task: it waits an hour between replays, so nothing moves it meanwhile.
    const list = await h.api.get('/api/v1/console/tasks?state=waiting&error=payment&limit=1')
    const id = list.items[0].id
    await h.login(page, 'admin', undefined, `/tasks/${id}`)
    await page.locator('[data-test=action-pause]').click()
    await page.getByText('Paused.').waitFor()
    await page.locator('[data-test=task-state] >> text=paused').waitFor()
    await page.locator('[data-test=edit-args]').click()
    await page.locator('[data-test=args-editor]').fill('{"orderId": 4242, "email": "new@example.com"}')
    await page.locator('[data-test=save-args]').click()
    await page.getByText('Arguments saved.').waitFor()
    assert.match(await page.locator('[data-test=task-args]').innerText(), /4242/)
    await page.locator('[data-test=action-resume]').click()
    await page.getByText('Resumed.').waitFor()
    assert.equal((await h.api.get(`/api/v1/console/tasks/${id}`)).state, 'waiting')
    await page.context().close()
  })
})
