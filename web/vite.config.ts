import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

// The app reads its network from /config.json at start (written by the server that serves it),
// so one build serves every network. `npm run dev` proxies the API and config.json to a running
// `decloud dev` (DECLOUD_ORCHESTRATOR, default http://127.0.0.1:8080).
const orchestrator = process.env.DECLOUD_ORCHESTRATOR ?? 'http://127.0.0.1:8080';

export default defineConfig({
  plugins: [react()],
  server: {
    proxy: { '/api': orchestrator, '/config.json': orchestrator },
  },
  // wagmi + viem + React make one ~700 kB chunk (~210 kB gzip); its size is measured and tracked in
  // BENCHMARKS.md rather than warned about on every build.
  build: { sourcemap: false, chunkSizeWarningLimit: 800 },
});
