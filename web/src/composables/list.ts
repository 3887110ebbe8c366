// One list page's state: server-side pages by cursor, loading, empty and error states.
import { computed, ref, shallowRef, type Ref } from 'vue'
import { errorText } from '@/api/client'

/** A page of a list as the server gives it: the items and the cursor of the next page ('' at the end). */
export interface Page<T> {
  items: T[]
  next: string
}

/** The fetcher of a list: the page that starts at cursor ('' for the first). */
export type Fetcher<T> = (cursor: string) => Promise<Page<T>>

export interface List<T> {
  items: Ref<T[]>
  loading: Ref<boolean>
  error: Ref<string>
  /** The state to show: 'loading' on a first load, 'error', 'empty' or 'ready'. */
  status: Ref<'loading' | 'error' | 'empty' | 'ready'>
  /** 1-based number of the shown page. */
  pageNumber: Ref<number>
  hasNext: Ref<boolean>
  hasPrev: Ref<boolean>
  /** reload fetches the first page again (after a filter change). */
  reload: () => Promise<void>
  /** refresh fetches the shown page again. */
  refresh: () => Promise<void>
  next: () => Promise<void>
  prev: () => Promise<void>
}

/**
 * useList pages through a list by cursor. It keeps the cursors of the pages seen, so Previous
 * goes back without offsets; an answer that arrives after a newer request is dropped.
 */
export function useList<T>(fetcher: Fetcher<T>): List<T> {
  const items = shallowRef<T[]>([]) as Ref<T[]>
  const loading = ref(false)
  const error = ref('')
  const loaded = ref(false)
  const cursors = ref<string[]>(['']) // cursors[i] starts page i+1
  const nextCursor = ref('')
  let seq = 0

  async function load(index: number) {
    const my = ++seq
    loading.value = true
    error.value = ''
    try {
      const page = await fetcher(cursors.value[index] ?? '')
      if (my !== seq) return
      items.value = page.items
      nextCursor.value = page.next
      cursors.value = cursors.value.slice(0, index + 1)
      loaded.value = true
    } catch (e) {
      if (my !== seq) return
      error.value = errorText(e)
    } finally {
      if (my === seq) loading.value = false
    }
  }

  const pageIndex = computed(() => cursors.value.length - 1)

  return {
    items,
    loading,
    error,
    status: computed(() => {
      if (error.value) return 'error'
      if (!loaded.value) return 'loading'
      return items.value.length ? 'ready' : 'empty'
    }),
    pageNumber: computed(() => pageIndex.value + 1),
    hasNext: computed(() => nextCursor.value !== ''),
    hasPrev: computed(() => pageIndex.value > 0),
    reload: () => {
      cursors.value = ['']
      loaded.value = false
      return load(0)
    },
    refresh: () => load(pageIndex.value),
    next: async () => {
      if (!nextCursor.value) return
      cursors.value = [...cursors.value, nextCursor.value]
      await load(cursors.value.length - 1)
    },
    prev: async () => {
      if (pageIndex.value === 0) return
      cursors.value = cursors.value.slice(0, -1)
      await load(cursors.value.length - 1)
    },
  }
}
