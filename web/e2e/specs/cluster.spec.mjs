// The cluster pages: the SDK client's instance is listed live with its group, address, version
// and capacity; the one server node leads and holds every bucket; both lists ask again by
// themselves.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { start, stop, waitUntil } from '../harness.mjs'

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

/** refreshes counts the answers to path the page receives from now on. */
function refreshes(page, path) {
  const seen = { n: 0 }
  page.on('response', (r) => {
    if (new URL(r.url()).pathname === path && r.ok()) seen.n++
  })
  return seen
}

describe('cluster', () => {
  test('client instances are listed live and refresh themselves', async () => {
    const [inst] = (await h.api.get('/api/v1/console/instances')).items
    assert.ok(inst, 'the harness\'s client registered')
    const page = await h.newPage()
    const seen = refreshes(page, '/api/v1/console/instances')
    await h.login(page, 'admin', undefined, '/instances')
    const row = page.locator('[data-test=instances-table] .el-table__row', { hasText: inst.id })
    await row.waitFor()
    await row.getByText('live', { exact: true }).waitFor()
    await row.getByText(`${inst.namespace} / ${inst.group}`).waitFor()
    await row.getByText(inst.executor_url).waitFor()
    assert.match(await row.innerText(), new RegExp(`\\b${inst.capacity}\\b`))
    await page.locator('[data-test=instances-count]').getByText(/\d+ of \d+ live/).waitFor()
    await waitUntil('the list to ask again by itself', () => seen.n >= 2, 20000)
    await shot(page, 'cluster-instances')

    // Narrowed to the instance's namespace through the URL.
    await page.goto(`${h.base}/instances?namespace_id=${inst.namespace_id}`)
    await row.waitFor()
    await page.goto(`${h.base}/instances?namespace_id=${inst.namespace_id}&group_id=999999`)
    await page.locator('[data-test=list-empty]').waitFor()
    await page.context().close()
  })

  test('server nodes show the leader and the buckets each holds', async () => {
    const [node] = (await h.api.get('/api/v1/console/nodes')).items
    const page = await h.newPage()
    const seen = refreshes(page, '/api/v1/console/nodes')
    await h.login(page, 'admin', undefined, '/nodes')
    const row = page.locator('[data-test=nodes-table] .el-table__row', { hasText: node.id })
    await row.waitFor()
    await row.locator('[data-test=leader]').waitFor()
    await row.getByText('live', { exact: true }).waitFor()
    await row.getByText(node.address).waitFor()
    const held = node.buckets.length
    assert.ok(held > 0)
    await page.locator('[data-test=nodes-count]').getByText(`1 of 1 live, ${held} buckets held`).waitFor()
    await row.getByText(`0–${held - 1}`).waitFor()
    await waitUntil('the list to ask again by itself', () => seen.n >= 2, 20000)
    await shot(page, 'cluster-nodes')
    await page.context().close()
  })
})
