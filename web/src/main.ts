import { createApp } from 'vue'
import { createPinia } from 'pinia'
import 'element-plus/theme-chalk/dark/css-vars.css'
import './styles.css'
import App from './App.vue'
import { i18n } from './i18n'
import { makeRouter } from './router'

const app = createApp(App)
app.use(createPinia())
app.use(i18n)
app.use(makeRouter())
app.mount('#app')
