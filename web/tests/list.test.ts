import { describe, expect, it } from 'vitest'
import { useList, type Page } from '@/composables/list'
import { ApiError } from '@/api/client'

// A list of 5 items served 2 a page, cursors being the next item's index.
const items = ['a', 'b', 'c', 'd', 'e']
function pages(fail = { on: -1 }) {
  const seen: string[] = []
  const fetcher = async (cursor: string): Promise<Page<string>> => {
    seen.push(cursor)
    const start = cursor ? Number(cursor) : 0
    if (start === fail.on) throw new ApiError(503, 'unavailable', 'try again')
    const end = Math.min(start + 2, items.length)
    return { items: items.slice(start, end), next: end < items.length ? String(end) : '' }
  }
  return { fetcher, seen }
}

describe('useList', () => {
  it('pages forward by cursor and back without refetching from the start', async () => {
    const { fetcher, seen } = pages()
    const l = useList(fetcher)
    expect(l.status.value).toBe('loading')
    await l.reload()
    expect(l.items.value).toEqual(['a', 'b'])
    expect([l.pageNumber.value, l.hasPrev.value, l.hasNext.value]).toEqual([1, false, true])
    await l.next()
    await l.next()
    expect(l.items.value).toEqual(['e'])
    expect([l.pageNumber.value, l.hasNext.value]).toEqual([3, false])
    await l.prev()
    expect(l.items.value).toEqual(['c', 'd'])
    expect(seen).toEqual(['', '2', '4', '2'])
  })

  it('says empty and error in its status', async () => {
    const empty = useList(async () => ({ items: [] as string[], next: '' }))
    await empty.reload()
    expect(empty.status.value).toBe('empty')
    const { fetcher } = pages({ on: 2 })
    const l = useList(fetcher)
    await l.reload()
    await l.next()
    expect(l.status.value).toBe('error')
    expect(l.error.value).toBe('try again')
  })

  it('drops an answer that arrives after a newer request', async () => {
    let release: (v: Page<string>) => void = () => {}
    let call = 0
    const l = useList<string>((cursor) => {
      call++
      if (call === 1) return new Promise((r) => (release = r))
      return Promise.resolve({ items: ['new ' + cursor], next: '' })
    })
    const slow = l.reload()
    await l.reload()
    release({ items: ['stale'], next: '' })
    await slow
    expect(l.items.value).toEqual(['new '])
  })
})
