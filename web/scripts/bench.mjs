// Measures the built app: the gzip size of what a first visit downloads, and the first load on
// loopback in Debian's Chromium against a real `decloud dev` (the orchestrator serving web/dist).
// Usage: npm run build && node scripts/bench.mjs [loads]
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { launchBrowser } from '../tests/support/browser.mjs';
import { startNetwork, webDir } from '../tests/support/network.mjs';

const loads = Number(process.argv[2] ?? 20);
const dist = join(webDir, 'dist');

// Every file of the build, raw and gzipped (level 9, what a static server's precompression gives).
const files = [];
const walk = (dir) => {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path);
    else {
      const bytes = readFileSync(path);
      files.push({ file: path.slice(dist.length + 1), raw: bytes.length, gzip: gzipSync(bytes, { level: 9 }).length });
    }
  }
};
walk(dist);
const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
// What a first visit downloads: the page and what it links; other chunks load only when used.
const index = readFileSync(join(dist, 'index.html'), 'utf8');
const linked = new Set([...index.matchAll(/(?:src|href)="\/([^"]+)"/g)].map((m) => m[1]));
const first = files.filter((f) => f.file === 'index.html' || linked.has(f.file)).sort((a, b) => b.gzip - a.gzip);
const lazy = files.filter((f) => !first.includes(f));
const sum = (list, key) => list.reduce((t, f) => t + f[key], 0);
console.log('| file | raw | gzip |\n|---|---:|---:|');
for (const f of first) console.log(`| ${f.file} | ${kib(f.raw)} | ${kib(f.gzip)} |`);
console.log(`| first visit: index.html and what it links | ${kib(sum(first, 'raw'))} | ${kib(sum(first, 'gzip'))} |`);
console.log(`| ${lazy.length} chunks loaded only when used | ${kib(sum(lazy, 'raw'))} | ${kib(sum(lazy, 'gzip'))} |`);
console.log(`| whole build | ${kib(sum(files, 'raw'))} | ${kib(sum(files, 'gzip'))} |\n`);

const network = await startNetwork();
const browser = await launchBrowser();
try {
  const samples = [];
  for (let i = 0; i < loads; i++) {
    // A fresh context each time: an empty cache, as on a first visit.
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(network.appUrl);
    await page.getByRole('heading', { name: 'The DeCloud network' }).waitFor();
    const timing = await page.evaluate(() => {
      const nav = performance.getEntriesByType('navigation')[0];
      const fcp = performance.getEntriesByName('first-contentful-paint')[0];
      return { domContentLoaded: nav.domContentLoadedEventEnd, load: nav.loadEventEnd, fcp: fcp?.startTime ?? NaN };
    });
    samples.push(timing);
    await context.close();
  }
  const median = (key) => {
    const sorted = samples.map((s) => s[key]).sort((a, b) => a - b);
    return sorted[Math.floor(sorted.length / 2)].toFixed(0);
  };
  console.log(`first load on loopback, ${loads} cold loads, median ms:`);
  console.log(`  first contentful paint ${median('fcp')}, DOMContentLoaded ${median('domContentLoaded')}, load ${median('load')}`);
} finally {
  await browser.close();
  await network.stop();
}
