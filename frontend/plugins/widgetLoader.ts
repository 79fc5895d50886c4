/**
 * The Vite plugin that finishes `loader.js`, the one unhashed script a host page includes.
 *
 * The loader cannot know the widget's content-hashed file names when it is compiled, so it holds a
 * placeholder (`WIDGET_FILES_TOKEN`); once the bundle is written in memory, this plugin replaces
 * the placeholder with the widget entry's file names and wraps the loader in a function, so that
 * it runs as a classic `<script>` without leaking names into the host page's global scope.
 * `vite.config.ts` is its only user.
 */
import type { Plugin, Rolldown } from 'vite';

/** The string literal in `src/loader/index.ts` that stands for the widget's files. */
export const WIDGET_FILES_TOKEN = '__MANGAASSIST_WIDGET_FILES__';

/** The widget's hashed files, relative to `loader.js`: its entry module and its stylesheets. */
export interface WidgetFiles {
  js: string;
  css: string[];
}

const TOKEN_LITERAL = new RegExp(`(["'\`])${WIDGET_FILES_TOKEN}\\1`, 'g');

/**
 * The loader's final code: the placeholder replaced by a string literal holding `files` as JSON
 * (the loader parses it), wrapped in a strict-mode function. Refuses code that has the placeholder
 * anything but exactly once, since a minifier that duplicated or folded it would ship a loader
 * that cannot find the widget.
 */
export function finishLoader(code: string, files: WidgetFiles): string {
  const found = code.match(TOKEN_LITERAL)?.length ?? 0;
  if (found !== 1) {
    throw new Error(`loader.js: expected the placeholder ${WIDGET_FILES_TOKEN} once, found it ${found} times`);
  }
  const literal = JSON.stringify(JSON.stringify(files));
  return `(function(){"use strict";\n${code.replace(TOKEN_LITERAL, () => literal)}\n})();\n`;
}

/** The plugin: `loaderName` and `widgetName` are the names of the two JS entries in `input`. */
export function widgetLoader(loaderName: string, widgetName: string): Plugin {
  return {
    name: 'mangaassist-widget-loader',
    apply: 'build',
    enforce: 'post',
    generateBundle(_options, bundle) {
      const entries = Object.values(bundle).filter(
        (item): item is Rolldown.OutputChunk => item.type === 'chunk' && item.isEntry,
      );
      const loader = entries.find((chunk) => chunk.name === loaderName);
      const widget = entries.find((chunk) => chunk.name === widgetName);
      if (!loader || !widget) {
        this.error(`the bundle has no "${loaderName}" or no "${widgetName}" entry chunk`);
      }
      // A classic script cannot import: a module shared with the widget would become a chunk the
      // loader imports statically, so the loader must stay self-contained.
      if (loader.imports.length || loader.dynamicImports.length || loader.exports.length) {
        this.error(`${loader.fileName} must not import or export modules (it shares code with the widget?)`);
      }
      const css = [...(widget.viteMetadata?.importedCss ?? [])].sort();
      loader.code = finishLoader(loader.code, { js: widget.fileName, css });
    },
  };
}
