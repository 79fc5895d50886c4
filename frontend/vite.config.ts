/**
 * The widget's build (CD-05). Three entries, and `loader.js` is the only unhashed script:
 * - `index.html`, the demo host page (an entry file, served no-cache);
 * - `src/loader/index.ts` -> `loader.js` (an entry file, served no-cache): the one script tag;
 * - `src/widget/index.tsx` -> `assets/widget-[hash].js`, which the loader imports, with React in
 *   `assets/react-[hash].js` and the styles in `assets/widget-[hash].css` (all immutable).
 * `manifest.json` lists every file for the deploy tool. `base: './'` keeps every URL relative, so
 * one build serves at `/` and under a preview prefix.
 */
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vitest/config';

import { widgetLoader } from './plugins/widgetLoader.ts';

export default defineConfig({
  base: './',
  plugins: [react(), widgetLoader('loader', 'widget')],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    manifest: 'manifest.json',
    assetsDir: 'assets',
    rolldownOptions: {
      input: {
        index: 'index.html',
        loader: 'src/loader/index.ts',
        widget: 'src/widget/index.tsx',
      },
      // The widget's `mount` export is its contract with the loader: keep it.
      preserveEntrySignatures: 'exports-only',
      output: {
        entryFileNames: (chunk) => (chunk.name === 'loader' ? 'loader.js' : 'assets/[name]-[hash].js'),
        chunkFileNames: 'assets/[name]-[hash].js',
        assetFileNames: 'assets/[name]-[hash][extname]',
        // React changes less often than the widget: its own chunk stays cached across releases.
        codeSplitting: {
          groups: [{ name: 'react', test: /[\\/]node_modules[\\/](react|react-dom|scheduler)[\\/]/ }],
        },
      },
    },
  },
  preview: {
    // `npm run preview` serves dist/ and sends the chat API to the local chatbot router.
    proxy: { '/v1': 'http://127.0.0.1:8080' },
  },
  test: {
    environment: 'jsdom',
    include: ['src/**/*.test.{ts,tsx}', 'plugins/**/*.test.ts'],
    setupFiles: ['src/test/setup.ts'],
  },
});
