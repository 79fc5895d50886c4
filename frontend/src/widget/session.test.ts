import { describe, expect, it } from 'vitest';

import { loadSessionId, SESSION_ID_PATTERN, SESSION_KEY } from './session';

function memoryStorage(initial: Record<string, string> = {}) {
  const items = new Map(Object.entries(initial));
  return { getItem: (k: string) => items.get(k) ?? null, setItem: (k: string, v: string) => void items.set(k, v), items };
}

describe('loadSessionId', () => {
  it('makes a valid id once and stores it', () => {
    const storage = memoryStorage();
    const id = loadSessionId(storage);
    expect(id).toMatch(SESSION_ID_PATTERN);
    expect(storage.items.get(SESSION_KEY)).toBe(id);
    expect(loadSessionId(storage)).toBe(id);
  });

  it('replaces a stored id the router would refuse', () => {
    const storage = memoryStorage({ [SESSION_KEY]: 'not a valid id; <script>' });
    const id = loadSessionId(storage);
    expect(id).toMatch(SESSION_ID_PATTERN);
    expect(storage.items.get(SESSION_KEY)).toBe(id);
  });

  it('still gives an id when storage throws', () => {
    const broken = {
      getItem: (): string | null => {
        throw new DOMException('denied', 'SecurityError');
      },
      setItem: (): void => {
        throw new DOMException('denied', 'SecurityError');
      },
    };
    expect(loadSessionId(broken)).toMatch(SESSION_ID_PATTERN);
  });
});
