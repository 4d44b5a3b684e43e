import { defineConfig } from 'vite';

// `npm run dev` proxies the API to a running Caracal (CARACAL_URL, default :8080).
const target = process.env.CARACAL_URL ?? 'http://127.0.0.1:8080';

export default defineConfig({
  base: '/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
  },
  server: {
    proxy: {
      '/api': target,
      '/healthz': target,
    },
  },
});
