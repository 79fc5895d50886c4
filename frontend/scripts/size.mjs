#!/usr/bin/env node
// The widget's size budget, checked on dist/ after `npm run build`: prints the gzip sizes as JSON
// and exits 1 when loader.js or the whole widget (all JS and CSS) is over budget.
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const LOADER_BUDGET = 10 * 1024; // bytes gzip: the one file every page view fetches uncached
const TOTAL_BUDGET = 150 * 1024; // bytes gzip: everything a first chat costs

const dist = fileURLToPath(new URL('../dist/', import.meta.url));

function* walk(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* walk(path);
    else yield path;
  }
}

const gzipBytes = (path) => gzipSync(readFileSync(path), { level: 9 }).length;

let files;
try {
  files = [...walk(dist)].filter((path) => /\.(js|css)$/.test(path)).sort();
} catch (error) {
  console.error(`size: cannot read ${dist} (${error.code}); run \`npm run build\` first`);
  process.exit(1);
}
const sizes = Object.fromEntries(files.map((path) => [relative(dist, path), gzipBytes(path)]));
if (!('loader.js' in sizes)) {
  console.error('size: dist/loader.js is missing; run `npm run build` first');
  process.exit(1);
}
const total = Object.values(sizes).reduce((sum, n) => sum + n, 0);
const report = {
  loader_gzip_bytes: sizes['loader.js'],
  loader_budget_bytes: LOADER_BUDGET,
  total_gzip_bytes: total,
  total_budget_bytes: TOTAL_BUDGET,
  files: sizes,
  ok: sizes['loader.js'] <= LOADER_BUDGET && total <= TOTAL_BUDGET,
};
console.log(JSON.stringify(report, null, 2));
process.exit(report.ok ? 0 : 1);
