/**
 * The loader's decisions, kept pure so they can be tested without a page: where the widget's
 * files are (relative to the loader's own URL, so one build serves at `/` and under a preview
 * prefix such as `/previews/<branch>/`), and what the script tag asks for.
 */
import type { WidgetOptions } from '../widget/options';

/** The element the widget mounts into; the loader creates it when the page has none. */
export const MOUNT_ID = 'mangaassist-widget';

/** `path` (e.g. `assets/widget-3f2a.js`) as an absolute URL next to the loader script. */
export function resolveAssetUrl(path: string, scriptSrc: string): string {
  return new URL(path, scriptSrc).href;
}

/**
 * The URL the widget's files are resolved against: the loader script's own `src`, or the page's
 * base URL when the script has none (inlined, or `document.currentScript` was not available).
 */
export function scriptBase(script: HTMLScriptElement | null, pageBase: string): string {
  return script?.src || pageBase;
}

/** The widget's options from the script tag's `data-endpoint` and `data-customer-token`. */
export function readLoaderOptions(script: HTMLScriptElement | null): WidgetOptions {
  const endpoint = script?.dataset.endpoint ?? '';
  const token = script?.dataset.customerToken?.trim();
  return token ? { endpoint, customerToken: token } : { endpoint };
}
