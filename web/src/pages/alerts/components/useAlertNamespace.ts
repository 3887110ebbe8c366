// The alert pages' namespace, kept in the URL (?namespace=<name>); without one, the first
// namespace the user reads.
import { computed, ref } from 'vue'
import { useRoute, useRouter } from 'vue-router'
import { errorText } from '@/api/client'
import { useNames, type Namespace } from '@/stores/names'

export function useAlertNamespace() {
  const route = useRoute()
  const router = useRouter()
  const names = useNames()
  const namespaces = ref<Namespace[]>([])
  const error = ref('')
  const loaded = ref(false)
  const name = computed(() => (typeof route.query.namespace === 'string' ? route.query.namespace : ''))
  const current = computed(() => namespaces.value.find((n) => n.name === name.value))
  const id = computed(() => current.value?.id ?? 0)

  async function choose(n: string) {
    await router.replace({ query: { ...route.query, namespace: n, rule_id: undefined, channel_id: undefined } })
  }

  names
    .namespaces()
    .then(async (list) => {
      namespaces.value = list
      if (!name.value && list[0]) await choose(list[0].name)
    })
    .catch((e: unknown) => (error.value = errorText(e)))
    .finally(() => (loaded.value = true))

  return { namespaces, name, current, id, error, loaded, choose }
}
