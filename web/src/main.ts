import { createApp } from 'vue'
import { createPinia } from 'pinia'
import 'element-plus/theme-chalk/dark/css-vars.css'
// ElMessage and ElMessageBox are called as functions, which the component plugin does not see:
// their styles load once here, for every page.
import 'element-plus/es/components/message/style/css'
import 'element-plus/es/components/message-box/style/css'
import './styles.css'
import App from './App.vue'
import { i18n } from './i18n'
import { makeRouter } from './router'

const app = createApp(App)
app.use(createPinia())
app.use(i18n)
app.use(makeRouter())
app.mount('#app')
