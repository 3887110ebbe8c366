export default {
  title: 'Sign in to retryhub',
  username: 'User name',
  password: 'Password',
  submit: 'Sign in',
  required: 'Enter your user name and password.',
  bad: 'Wrong user name or password.',
  throttled: 'Too many attempts; try again in {seconds} s.',
  disabled: 'This account is disabled.',
  expired: 'Your session ended; sign in again.',
  roles: 'Roles',
  role: { viewer: 'viewer', operator: 'operator', admin: 'admin' },
  everyNamespace: 'every namespace',
}
