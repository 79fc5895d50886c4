/**
 * `loader.js`: the one script a host page includes. It finds (or creates) the mount element,
 * links the widget's stylesheet and imports the widget's content-hashed module, both resolved
 * against this script's own URL. It must not share modules with the widget: the build refuses a
 * loader that imports anything (see `plugins/widgetLoader.ts`), and fills in `WIDGET_FILES`.
 */
import type { WidgetOptions } from '../widget/options';
import { MOUNT_ID, readLoaderOptions, resolveAssetUrl, scriptBase } from './resolve';

interface WidgetModule {
  mount(element: HTMLElement, options: WidgetOptions): () => void;
}

// Replaced at build time by the widget's hashed file names, e.g. {"js":"assets/widget-x.js",...}.
const WIDGET_FILES = JSON.parse('__MANGAASSIST_WIDGET_FILES__') as { js: string; css: string[] };

// Only readable while this script first runs, not later in a callback.
const script = document.currentScript as HTMLScriptElement | null;

function start(): void {
  const base = scriptBase(script, document.baseURI);
  let element = document.getElementById(MOUNT_ID);
  if (!element) {
    element = document.createElement('div');
    element.id = MOUNT_ID;
    document.body.appendChild(element);
  }
  if (element.dataset.mounted) return; // the tag was included twice
  element.dataset.mounted = 'true';
  for (const css of WIDGET_FILES.css) {
    const link = document.createElement('link');
    link.rel = 'stylesheet';
    link.href = resolveAssetUrl(css, base);
    document.head.appendChild(link);
  }
  const mountInto = element;
  import(/* @vite-ignore */ resolveAssetUrl(WIDGET_FILES.js, base)).then(
    (widget: WidgetModule) => widget.mount(mountInto, readLoaderOptions(script)),
    (error: unknown) => console.error('MangaAssist: the chat widget could not be loaded', error),
  );
}

if (document.readyState === 'loading') {
  document.addEventListener('DOMContentLoaded', start);
} else {
  start();
}
