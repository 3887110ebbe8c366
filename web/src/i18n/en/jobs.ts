export default {
  title: 'Jobs',
  hint: 'Bulk actions over tasks run on the server as jobs, in batches.',
  state: { running: 'running', done: 'done', cancelled: 'cancelled', failed: 'failed' },
  allStates: 'All states',
  col: { id: 'ID', action: 'Action', state: 'State', progress: 'Progress', by: 'Started by', created: 'Started', ended: 'Ended', error: 'Error' },
  cancel: 'Cancel',
  cancelConfirm: 'Cancel job {id}? Tasks already done stay done.',
  cancelled: 'Job {id} cancelled.',
  unavailable: 'This server has no jobs API yet.',
}
