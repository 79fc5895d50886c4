import { describe, expect, it } from 'vitest';

import { readLoaderOptions, resolveAssetUrl, scriptBase } from './resolve';

describe('resolveAssetUrl', () => {
  it('resolves next to a loader served at the root', () => {
    expect(resolveAssetUrl('assets/widget-abc123.js', 'https://shop.example/loader.js')).toBe(
      'https://shop.example/assets/widget-abc123.js',
    );
  });

  it('resolves under a preview prefix', () => {
    expect(resolveAssetUrl('assets/widget-abc123.js', 'https://shop.example/previews/feat-x/loader.js')).toBe(
      'https://shop.example/previews/feat-x/assets/widget-abc123.js',
    );
  });

  it('ignores the loader URL query and follows a CDN host', () => {
    expect(resolveAssetUrl('assets/widget-abc123.css', 'https://cdn.example/w/loader.js?v=3')).toBe(
      'https://cdn.example/w/assets/widget-abc123.css',
    );
  });
});

function loaderScript(attributes: Record<string, string>, src = 'https://shop.example/previews/b/loader.js') {
  const script = document.createElement('script');
  script.src = src;
  for (const [name, value] of Object.entries(attributes)) script.setAttribute(name, value);
  return script;
}

describe('scriptBase', () => {
  it("uses the script's own URL, not the page's", () => {
    expect(scriptBase(loaderScript({}), 'https://shop.example/products/1')).toBe(
      'https://shop.example/previews/b/loader.js',
    );
  });

  it("falls back to the page's base URL without a script", () => {
    expect(scriptBase(null, 'https://shop.example/products/1')).toBe('https://shop.example/products/1');
  });
});

describe('readLoaderOptions', () => {
  it('reads the endpoint and the customer token', () => {
    const script = loaderScript({ 'data-endpoint': 'https://chat.example', 'data-customer-token': 'tok-1' });
    expect(readLoaderOptions(script)).toEqual({ endpoint: 'https://chat.example', customerToken: 'tok-1' });
  });

  it('treats a missing or blank token as a guest and a missing endpoint as same origin', () => {
    expect(readLoaderOptions(loaderScript({ 'data-customer-token': '  ' }))).toEqual({ endpoint: '' });
    expect(readLoaderOptions(null)).toEqual({ endpoint: '' });
  });
});
