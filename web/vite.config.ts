import { fileURLToPath, URL } from 'node:url'
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { defineConfig, type Plugin } from 'vite'
import vue from '@vitejs/plugin-vue'
import AutoImport from 'unplugin-auto-import/vite'
import Components from 'unplugin-vue-components/vite'
import { ElementPlusResolver } from 'unplugin-vue-components/resolvers'

// The build goes where the server embeds it (server/internal/web/static).
const outDir = fileURLToPath(new URL('../server/internal/web/static', import.meta.url))

// precompress writes a .gz beside every text file worth compressing, which the server sends to
// clients that accept gzip. gzipSync writes no time stamp, so the output is reproducible.
function precompress(): Plugin {
  return {
    name: 'retryhub-precompress',
    apply: 'build',
    closeBundle() {
      const walk = (dir: string) => {
        for (const name of readdirSync(dir)) {
          const path = join(dir, name)
          if (statSync(path).isDirectory()) walk(path)
          else if (/\.(js|css|html|svg|json)$/.test(name)) {
            const raw = readFileSync(path)
            if (raw.length < 1024) continue
            const gz = gzipSync(raw, { level: 9 })
            if (gz.length < raw.length) writeFileSync(path + '.gz', gz)
          }
        }
      }
      walk(outDir)
    },
  }
}

export default defineConfig({
  plugins: [
    vue(),
    AutoImport({ resolvers: [ElementPlusResolver()], dts: 'src/auto-imports.d.ts' }),
    Components({ resolvers: [ElementPlusResolver()], dts: 'src/components.d.ts', dirs: [] }),
    precompress(),
  ],
  resolve: { alias: { '@': fileURLToPath(new URL('./src', import.meta.url)) } },
  build: {
    outDir,
    emptyOutDir: true,
    assetsDir: 'assets',
    chunkSizeWarningLimit: 800,
  },
  server: {
    proxy: { '/api': process.env.RETRYHUB_URL ?? 'http://localhost:8080' },
  },
})
