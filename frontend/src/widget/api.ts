/**
 * The chat API client: `POST /v1/chat` and `POST /v1/feedback` on the chatbot router (the edge
 * server proxies `/v1/*` on the page's origin). Every request carries the session id as
 * `X-Session-Id` (the router's sticky header) and, for a signed-in customer, the customer's token
 * as `Authorization: Bearer`. The body never names a customer: who the customer is comes from the
 * token, checked server-side, not from anything the page says.
 */
import type { WidgetOptions } from './options';

export interface Source {
  id: string;
  title: string;
}

/** The chatbot's answer (`ChatResponse` in `src/mangaassist/chatbot/app.py`). */
export interface ChatAnswer {
  answer: string;
  intent: string;
  confidence: number;
  sources: Source[];
  session_id: string;
  versions: { revision: string; [name: string]: unknown };
}

export type Rating = 'up' | 'down';

/** `fetch`'s shape; tests pass a stub instead of patching the global. */
export type Transport = (url: string, init: RequestInit) => Promise<Response>;

/** Why a request failed; each kind has its own message and all of them can be retried. */
export enum FailureKind {
  /** The server answered with a non-2xx status. */
  Http = 'http',
  /** No answer at all: offline, DNS, CORS refused, connection reset. */
  Network = 'network',
  /** No answer within the client's timeout; the request was aborted. */
  Timeout = 'timeout',
  /** A 2xx answer that is not a chat answer. */
  BadResponse = 'bad-response',
}

export class ChatRequestError extends Error {
  readonly kind: FailureKind;
  readonly status: number | undefined;

  constructor(kind: FailureKind, message: string, status?: number) {
    super(message);
    this.name = 'ChatRequestError';
    this.kind = kind;
    this.status = status;
  }
}

export const DEFAULT_TIMEOUT_MS = 15_000;

const UNREADABLE = 'MangaAssist sent an answer the widget cannot read.';

export interface ClientOptions extends WidgetOptions {
  timeoutMs?: number;
  transport?: Transport;
}

export class ChatClient {
  private readonly base: string;
  private readonly token: string | undefined;
  private readonly timeoutMs: number;
  private readonly transport: Transport;

  constructor(options: ClientOptions) {
    this.base = options.endpoint.replace(/\/+$/, '');
    this.token = options.customerToken;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    // Bound late, so a page (or a test) that replaces window.fetch after mounting is honoured.
    this.transport = options.transport ?? ((url, init) => globalThis.fetch(url, init));
  }

  /** Ask the chatbot; `signal` cancels (the widget unmounting), the timeout applies on top. */
  async chat(sessionId: string, message: string, signal?: AbortSignal): Promise<ChatAnswer> {
    const body: unknown = await this.post('/v1/chat', sessionId, { session_id: sessionId, message }, signal);
    if (!isChatAnswer(body)) {
      throw new ChatRequestError(FailureKind.BadResponse, UNREADABLE);
    }
    return body;
  }

  async feedback(sessionId: string, rating: Rating): Promise<void> {
    await this.post('/v1/feedback', sessionId, { session_id: sessionId, rating });
  }

  private async post(path: string, sessionId: string, payload: object, signal?: AbortSignal): Promise<unknown> {
    const headers: Record<string, string> = {
      Accept: 'application/json',
      'Content-Type': 'application/json',
      'X-Session-Id': sessionId,
    };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;

    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, this.timeoutMs);
    const cancel = (): void => controller.abort();
    signal?.addEventListener('abort', cancel);
    try {
      const response = await this.transport(`${this.base}${path}`, {
        method: 'POST',
        headers,
        body: JSON.stringify(payload),
        signal: controller.signal,
      });
      if (!response.ok) {
        throw new ChatRequestError(
          FailureKind.Http,
          `MangaAssist could not answer (HTTP ${response.status}).`,
          response.status,
        );
      }
      return await response.json();
    } catch (error) {
      if (error instanceof ChatRequestError) throw error;
      if (timedOut) throw new ChatRequestError(FailureKind.Timeout, 'MangaAssist took too long to answer.');
      if (signal?.aborted) throw error; // cancelled by the caller: not a failure to show
      if (error instanceof SyntaxError) throw new ChatRequestError(FailureKind.BadResponse, UNREADABLE);
      throw new ChatRequestError(FailureKind.Network, 'Could not reach MangaAssist. Check your connection.');
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', cancel);
    }
  }
}

function isChatAnswer(value: unknown): value is ChatAnswer {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Partial<ChatAnswer>;
  return (
    typeof v.answer === 'string' &&
    Array.isArray(v.sources) &&
    v.sources.every((s) => typeof s === 'object' && s !== null && typeof s.title === 'string')
  );
}
