// useSwitchRow: turning a row on or off (enable or disable a namespace, group or user). Turning
// off asks first; the row being switched is known (for its button's spinner); the outcome is
// said in a message, and the list is read again.
import { ref } from 'vue'
import { useI18n } from 'vue-i18n'
import { ElMessage, ElMessageBox } from 'element-plus'
import { errorText } from '@/api/client'

export interface SwitchStep {
  id: number
  // confirm, when set, is asked first (title and button are the action's name).
  confirm?: { message: string; action: string }
  call: () => Promise<unknown>
  done: string
}

export function useSwitchRow(refresh: () => Promise<unknown>) {
  const { t } = useI18n()
  const switching = ref(0)
  async function run(step: SwitchStep) {
    if (step.confirm) {
      try {
        await ElMessageBox.confirm(step.confirm.message, step.confirm.action, {
          type: 'warning', confirmButtonText: step.confirm.action, cancelButtonText: t('common.cancel'),
        })
      } catch {
        return
      }
    }
    switching.value = step.id
    try {
      await step.call()
      ElMessage.success(step.done)
      await refresh()
    } catch (e) {
      ElMessage.error(t('common.failed', { error: errorText(e) }))
    } finally {
      switching.value = 0
    }
  }
  return { switching, run }
}
