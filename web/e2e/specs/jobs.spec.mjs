// Bulk actions as server jobs (POST/GET /api/v1/console/jobs).
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

describe('bulk jobs', () => {
  test('bulk-cancel "all matching" and watch the progress finish', async () => {
    const page = await h.newPage()
    // The charge scene's tasks wait an hour between replays: cancel all of them, over two pages.
    const scenes = await h.api.get('/api/v1/console/groups/1/scenes')
    const charge = scenes.items.find((s) => s.name === 'charge')
    await h.login(page, 'admin', undefined, `/tasks?namespace=default&group_id=1&scene_id=${charge.id}&state=waiting,held`)
    await page.locator('[data-test=task-table]').waitFor()
    await page.locator('[data-test=select-all-filter]').click()
    await page.getByText(`All ${TASKS_PER_SCENE} matching tasks are selected.`).waitFor()
    await page.locator('[data-test=bulk-action]').click()
    await page.locator('[data-test=bulk-cancel]').click()
    await page.getByText(`all ${TASKS_PER_SCENE} tasks that match`).waitFor()
    await h.shot(page, 'bulk-confirm')
    await page.getByRole('button', { name: 'Start' }).click()
    await page.locator('[data-test=job-progress]').waitFor()
    await page.locator('[data-test=job-finished]').waitFor({ timeout: 60000 })
    assert.match(await page.locator('[data-test=job-counts]').innerText(), new RegExp(`${TASKS_PER_SCENE} of ${TASKS_PER_SCENE} done`))
    await h.shot(page, 'bulk-progress')
    await page.locator('[data-test=job-close]').click()
    await waitUntil('no waiting charge task', async () =>
      (await h.api.get(`/api/v1/console/tasks/count?scene_id=${charge.id}&state=waiting,held`)).count === 0)
    await page.goto(`${h.base}/jobs`)
    await page.locator('[data-test=jobs-table] [data-state=done]').first().waitFor()
    await h.shot(page, 'jobs')
    await page.context().close()
  })
})
