export default {
  title: '账户',
  signedInAs: '当前用户：{name}',
  changePassword: '修改密码',
  current: '当前密码',
  new: '新密码',
  repeat: '再次输入新密码',
  mismatch: '两次输入的新密码不一致。',
  tooShort: '至少 {n} 个字符。',
  changed: '密码已修改，其他会话已退出。',
  preferences: '偏好设置',
}
