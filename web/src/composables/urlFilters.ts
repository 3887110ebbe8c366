// Filters kept in the URL's query, so that a view can be shared and survives a reload.
import { computed, type ComputedRef } from 'vue'
import { useRoute, useRouter, type LocationQuery, type LocationQueryRaw } from 'vue-router'

/** The kinds of value a filter holds. */
export type FieldKind = 'string' | 'number' | 'list'

/** FilterSpec names each filter with its kind. */
export type FilterSpec = Record<string, FieldKind>

/** The values of a spec: text, a number, or a list of texts; undefined when unset. */
export type FilterValues<S extends FilterSpec> = {
  -readonly [K in keyof S]?: S[K] extends 'number' ? number : S[K] extends 'list' ? string[] : string
}

function first(v: LocationQuery[string] | undefined): string | undefined {
  const s = Array.isArray(v) ? v[0] : v
  return s === null || s === undefined || s === '' ? undefined : s
}

/** fromQuery reads the filters of spec from a route query; anything malformed is left out. */
export function fromQuery<S extends FilterSpec>(spec: S, query: LocationQuery): FilterValues<S> {
  const out: Record<string, unknown> = {}
  for (const [name, kind] of Object.entries(spec)) {
    const raw = first(query[name])
    if (raw === undefined) continue
    if (kind === 'number') {
      const n = Number(raw)
      if (Number.isFinite(n) && raw.trim() !== '') out[name] = n
    } else if (kind === 'list') {
      const items = raw.split(',').map((s) => s.trim()).filter(Boolean)
      if (items.length) out[name] = items
    } else {
      out[name] = raw
    }
  }
  return out as FilterValues<S>
}

/**
 * toQuery writes filters as a route query: lists comma separated, empty values left out, the
 * names in the spec's order (so equal filters make equal URLs). Keys not in spec are kept from
 * keep (for instance the page's own parameters).
 */
export function toQuery<S extends FilterSpec>(spec: S, values: FilterValues<S>, keep: LocationQuery = {}): LocationQueryRaw {
  const out: LocationQueryRaw = {}
  for (const [k, v] of Object.entries(keep)) if (!(k in spec)) out[k] = v
  for (const [name, kind] of Object.entries(spec)) {
    const v = (values as Record<string, unknown>)[name]
    if (v === undefined || v === null || v === '') continue
    if (kind === 'list') {
      const items = (v as string[]).filter(Boolean)
      if (items.length) out[name] = items.join(',')
    } else if (kind === 'number') {
      if (Number.isFinite(v as number)) out[name] = String(v)
    } else {
      out[name] = String(v)
    }
  }
  return out
}

/** sameFilters compares two filter values by what their URLs would say. */
export function sameFilters<S extends FilterSpec>(spec: S, a: FilterValues<S>, b: FilterValues<S>): boolean {
  return JSON.stringify(toQuery(spec, a)) === JSON.stringify(toQuery(spec, b))
}

/**
 * useUrlFilters binds a page's filters to the URL: `filters` follows the query, and `apply`
 * writes new filters into it (replacing the history entry, dropping any cursor).
 */
export function useUrlFilters<S extends FilterSpec>(spec: S): {
  filters: ComputedRef<FilterValues<S>>
  apply: (values: FilterValues<S>) => Promise<void>
} {
  const route = useRoute()
  const router = useRouter()
  const filters = computed(() => fromQuery(spec, route.query))
  async function apply(values: FilterValues<S>) {
    const keep = { ...route.query }
    delete keep.cursor
    await router.replace({ query: toQuery(spec, values, keep) })
  }
  return { filters, apply }
}
