export default {
  title: '批量作业',
  hint: '对任务的批量操作在服务端以作业形式分批执行。',
  state: { running: '执行中', done: '已完成', cancelled: '已取消', failed: '失败' },
  allStates: '全部状态',
  col: { id: 'ID', action: '操作', state: '状态', progress: '进度', by: '发起人', created: '开始时间', ended: '结束时间', error: '错误' },
  cancel: '取消',
  cancelConfirm: '取消作业 {id}？已完成的任务保持不变。',
  cancelled: '作业 {id} 已取消。',
  unavailable: '此服务端尚未提供作业接口。',
}
