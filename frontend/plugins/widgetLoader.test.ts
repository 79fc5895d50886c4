import { describe, expect, it } from 'vitest';

import { finishLoader, WIDGET_FILES_TOKEN } from './widgetLoader.ts';

const FILES = { js: 'assets/widget-abc.js', css: ['assets/widget-def.css'] };

/** Run finished loader code as a classic script would, returning what it put on `out`. */
function run(code: string): unknown {
  const out: { files?: unknown } = {};
  new Function('out', code)(out);
  return out.files;
}

describe('finishLoader', () => {
  it.each(['"', "'", '`'])('puts the widget files where the %s-quoted placeholder was', (quote) => {
    const code = `out.files = JSON.parse(${quote}${WIDGET_FILES_TOKEN}${quote});`;
    const finished = finishLoader(code, FILES);
    expect(finished).not.toContain(WIDGET_FILES_TOKEN);
    expect(run(finished)).toEqual(FILES);
  });

  it('wraps the code in a function, so its names stay out of the page', () => {
    const finished = finishLoader(`var leaked = JSON.parse("${WIDGET_FILES_TOKEN}");`, FILES);
    expect(finished.startsWith('(function(){"use strict";')).toBe(true);
    expect(finished.trimEnd().endsWith('})();')).toBe(true);
  });

  it('refuses code without the placeholder, or with it twice', () => {
    expect(() => finishLoader('out.files = null;', FILES)).toThrow(/found it 0 times/);
    const twice = `a("${WIDGET_FILES_TOKEN}"); b("${WIDGET_FILES_TOKEN}");`;
    expect(() => finishLoader(twice, FILES)).toThrow(/found it 2 times/);
  });
});
