/**
 * The chat session id: made once per browser tab and kept in `sessionStorage`, so a reload or a
 * remount continues the same conversation and the router's sticky header keeps it on one revision.
 */

export const SESSION_KEY = 'mangaassist.session';

/** What the chatbot and the router accept as a session id (the router's sticky header value). */
export const SESSION_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

function newSessionId(): string {
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  // randomUUID needs a secure context; plain http pages (a local demo) get 128 random bits in hex.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * The stored session id, or a new one (stored) when there is none or it is malformed. Storage that
 * throws (disabled, sandboxed frames) gives a session id that lasts as long as the widget.
 */
export function loadSessionId(storage: Pick<Storage, 'getItem' | 'setItem'> | undefined): string {
  try {
    const stored = storage?.getItem(SESSION_KEY);
    if (stored && SESSION_ID_PATTERN.test(stored)) return stored;
  } catch {
    // fall through to a new id
  }
  const id = newSessionId();
  try {
    storage?.setItem(SESSION_KEY, id);
  } catch {
    // not persisted: this tab's conversation restarts on reload
  }
  return id;
}

/** `window.sessionStorage`, or undefined where reading the property itself throws. */
export function browserSessionStorage(): Storage | undefined {
  try {
    return window.sessionStorage;
  } catch {
    return undefined;
  }
}
