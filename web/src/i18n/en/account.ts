export default {
  title: 'Account',
  signedInAs: 'Signed in as {name}',
  changePassword: 'Change password',
  current: 'Current password',
  new: 'New password',
  repeat: 'Repeat the new password',
  mismatch: 'The two new passwords differ.',
  tooShort: 'At least {n} characters.',
  changed: 'Password changed. Your other sessions are signed out.',
  preferences: 'Preferences',
}
