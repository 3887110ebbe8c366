export default {
  title: '登录 retryhub',
  username: '用户名',
  password: '密码',
  submit: '登录',
  required: '请输入用户名和密码。',
  bad: '用户名或密码错误。',
  throttled: '尝试次数过多，请 {seconds} 秒后再试。',
  disabled: '该账户已停用。',
  expired: '会话已结束，请重新登录。',
  roles: '角色',
  role: { viewer: '只读', operator: '操作员', admin: '管理员' },
  everyNamespace: '所有命名空间',
}
