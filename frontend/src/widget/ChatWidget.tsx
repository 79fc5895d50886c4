/**
 * The chat widget: a toggle button and the panel it opens (header, conversation log, message
 * form). It owns the conversation state; `api.ts` does the talking and `session.ts` keeps the
 * session id. `mount()` in `index.tsx` renders it into the host page; tests render it directly.
 */
import { useCallback, useEffect, useId, useMemo, useRef, useState } from 'react';
import type { KeyboardEvent } from 'react';

import { ChatClient, ChatRequestError } from './api';
import type { ChatAnswer, Rating, Transport } from './api';
import type { WidgetOptions } from './options';
import { browserSessionStorage, loadSessionId } from './session';

/** The chatbot's limit on one message (`MAX_MESSAGE` in `src/mangaassist/chatbot/app.py`). */
export const MAX_MESSAGE = 4000;

export interface ChatWidgetProps extends WidgetOptions {
  /** Replaces `fetch` (tests). */
  transport?: Transport;
  timeoutMs?: number;
  /** Where the session id is kept; `window.sessionStorage` by default. */
  storage?: Pick<Storage, 'getItem' | 'setItem'>;
  /** Start with the panel open (the host page decides; the widget never steals focus on load). */
  defaultOpen?: boolean;
}

/** One answer's feedback: whether a rating was sent, is on its way, or failed and may be resent. */
type Feedback =
  | { state: 'none' }
  | { state: 'sending' | 'sent'; rating: Rating }
  | { state: 'failed' };

/** One item of the conversation log. An error keeps the message it failed to send, for Retry. */
type Entry =
  | { kind: 'question'; id: number; text: string }
  | { kind: 'answer'; id: number; answer: ChatAnswer; feedback: Feedback }
  | { kind: 'error'; id: number; text: string; message: string };

type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;
type NewEntry = WithoutId<Entry>;

export function ChatWidget({
  endpoint,
  customerToken,
  transport,
  timeoutMs,
  storage,
  defaultOpen = false,
}: ChatWidgetProps) {
  const client = useMemo(
    () => new ChatClient({ endpoint, customerToken, transport, timeoutMs }),
    [endpoint, customerToken, transport, timeoutMs],
  );
  const [sessionId] = useState(() => loadSessionId(storage ?? browserSessionStorage()));
  const [open, setOpen] = useState(defaultOpen);
  const [entries, setEntries] = useState<Entry[]>([]);
  const [draft, setDraft] = useState('');
  const [pending, setPending] = useState(false);

  const nextId = useRef(0);
  const inFlight = useRef<AbortController | null>(null);
  // Ratings already on their way, by answer id: a second click must not post before re-render.
  const rated = useRef(new Set<number>());
  // Where focus goes after the panel opens or closes; null on first render (no focus stealing).
  const focusAfterToggle = useRef<'input' | 'toggle' | null>(null);
  const inputRef = useRef<HTMLTextAreaElement>(null);
  const toggleRef = useRef<HTMLButtonElement>(null);
  const logRef = useRef<HTMLDivElement>(null);
  const panelId = useId();
  const inputId = useId();

  useEffect(() => () => inFlight.current?.abort(), []);

  useEffect(() => {
    const target = focusAfterToggle.current === 'input' ? inputRef.current : toggleRef.current;
    if (focusAfterToggle.current) target?.focus();
    focusAfterToggle.current = null;
  }, [open]);

  useEffect(() => {
    const log = logRef.current;
    if (log) log.scrollTop = log.scrollHeight;
  }, [entries, pending]);

  const append = useCallback((entry: NewEntry) => {
    const id = nextId.current++;
    setEntries((current) => [...current, { ...entry, id } as Entry]);
  }, []);

  const ask = useCallback(
    async (message: string) => {
      const controller = new AbortController();
      inFlight.current = controller;
      setPending(true);
      try {
        const answer = await client.chat(sessionId, message, controller.signal);
        append({ kind: 'answer', answer, feedback: { state: 'none' } });
      } catch (error) {
        if (controller.signal.aborted) return; // the widget was unmounted
        const text = error instanceof ChatRequestError ? error.message : 'Something went wrong.';
        append({ kind: 'error', text, message });
      } finally {
        if (inFlight.current === controller) {
          inFlight.current = null;
          setPending(false);
        }
      }
    },
    [client, sessionId, append],
  );

  const send = (): void => {
    const message = draft.trim();
    if (!message || pending) return;
    setDraft('');
    append({ kind: 'question', text: message });
    void ask(message);
  };

  const retry = (failed: Entry & { kind: 'error' }): void => {
    if (pending) return;
    setEntries((current) => current.filter((entry) => entry.id !== failed.id));
    void ask(failed.message);
  };

  const setFeedback = (answerId: number, feedback: Feedback): void =>
    setEntries((current) =>
      current.map((entry) => (entry.id === answerId && entry.kind === 'answer' ? { ...entry, feedback } : entry)),
    );

  const rate = (answerId: number, rating: Rating): void => {
    if (rated.current.has(answerId)) return;
    rated.current.add(answerId);
    setFeedback(answerId, { state: 'sending', rating });
    client.feedback(sessionId, rating).then(
      () => setFeedback(answerId, { state: 'sent', rating }),
      () => {
        rated.current.delete(answerId);
        setFeedback(answerId, { state: 'failed' });
      },
    );
  };

  const toggle = (): void => {
    focusAfterToggle.current = open ? 'toggle' : 'input';
    setOpen(!open);
  };

  const onInputKeyDown = (event: KeyboardEvent<HTMLTextAreaElement>): void => {
    // Enter sends, Shift+Enter is a new line; Enter that confirms an IME composition (Japanese
    // input, say) is neither.
    if (event.key !== 'Enter' || event.shiftKey || event.nativeEvent.isComposing) return;
    event.preventDefault();
    send();
  };

  const onPanelKeyDown = (event: KeyboardEvent<HTMLElement>): void => {
    if (event.key === 'Escape') toggle();
  };

  return (
    <div className="ma-root">
      <section id={panelId} className="ma-panel" aria-label="MangaAssist chat" hidden={!open} onKeyDown={onPanelKeyDown}>
        <header className="ma-header">
          <h2 className="ma-title">MangaAssist</h2>
          <span className="ma-account">{customerToken ? 'Signed in' : 'Guest'}</span>
        </header>
        <div ref={logRef} className="ma-log" role="log" aria-live="polite" aria-label="Conversation">
          {entries.length === 0 && <p className="ma-hint">Ask about a series, a volume or your order.</p>}
          {entries.map((entry) => (
            <EntryView key={entry.id} entry={entry} onRetry={retry} onRate={rate} retryDisabled={pending} />
          ))}
          {pending && <p className="ma-typing">MangaAssist is typing…</p>}
        </div>
        <form
          className="ma-form"
          onSubmit={(event) => {
            event.preventDefault();
            send();
          }}
        >
          <label htmlFor={inputId} className="ma-sr-only">
            Message MangaAssist
          </label>
          <textarea
            id={inputId}
            ref={inputRef}
            className="ma-input"
            rows={2}
            maxLength={MAX_MESSAGE}
            placeholder="Ask about manga…"
            value={draft}
            onChange={(event) => setDraft(event.target.value)}
            onKeyDown={onInputKeyDown}
          />
          <button type="submit" className="ma-button" disabled={pending}>
            Send
          </button>
        </form>
      </section>
      <button
        ref={toggleRef}
        type="button"
        className="ma-toggle"
        aria-expanded={open}
        aria-controls={panelId}
        onClick={toggle}
      >
        {open ? 'Close chat' : 'Chat with MangaAssist'}
      </button>
    </div>
  );
}

interface EntryViewProps {
  entry: Entry;
  onRetry: (entry: Entry & { kind: 'error' }) => void;
  onRate: (answerId: number, rating: Rating) => void;
  retryDisabled: boolean;
}

function EntryView({ entry, onRetry, onRate, retryDisabled }: EntryViewProps) {
  switch (entry.kind) {
    case 'question':
      return (
        <p className="ma-msg ma-msg-user">
          <span className="ma-sr-only">You: </span>
          {entry.text}
        </p>
      );
    case 'error':
      return (
        <div className="ma-msg ma-msg-error">
          <p>{entry.text}</p>
          <button type="button" className="ma-button" disabled={retryDisabled} onClick={() => onRetry(entry)}>
            Retry
          </button>
        </div>
      );
    case 'answer':
      return <AnswerView id={entry.id} answer={entry.answer} feedback={entry.feedback} onRate={onRate} />;
  }
}

interface AnswerViewProps {
  id: number;
  answer: ChatAnswer;
  feedback: Feedback;
  onRate: (answerId: number, rating: Rating) => void;
}

function AnswerView({ id, answer, feedback, onRate }: AnswerViewProps) {
  const chosen = feedback.state === 'sending' || feedback.state === 'sent' ? feedback.rating : null;
  return (
    <article className="ma-msg ma-msg-bot" data-revision={answer.versions?.revision}>
      <p>
        <span className="ma-sr-only">MangaAssist: </span>
        {answer.answer}
      </p>
      {answer.sources.length > 0 && (
        <div className="ma-sources">
          <p className="ma-sources-title">Sources</p>
          <ul>
            {answer.sources.map((source, index) => (
              <li key={`${source.id}-${index}`}>{source.title}</li>
            ))}
          </ul>
        </div>
      )}
      <div className="ma-feedback" role="group" aria-label="Was this answer helpful?">
        {(['up', 'down'] as const).map((rating) => (
          <button
            key={rating}
            type="button"
            className="ma-rate"
            aria-label={rating === 'up' ? 'Helpful' : 'Not helpful'}
            aria-pressed={chosen === rating}
            disabled={chosen !== null}
            onClick={() => onRate(id, rating)}
          >
            <Thumb down={rating === 'down'} />
          </button>
        ))}
        {feedback.state === 'sent' && <span className="ma-note">Thanks for your feedback.</span>}
        {feedback.state === 'failed' && <span className="ma-note">Feedback not sent; try again.</span>}
      </div>
    </article>
  );
}

/** A thumb drawn inline (no emoji font needed, no request): up, or turned down. */
function Thumb({ down }: { down: boolean }) {
  return (
    <svg viewBox="0 0 24 24" aria-hidden="true" focusable="false" style={down ? { transform: 'rotate(180deg)' } : undefined}>
      <path
        fill="currentColor"
        d="M2 21h4V9H2v12zm20-11a2 2 0 0 0-2-2h-6.3l1-4.6v-.3a1.5 1.5 0 0 0-.4-1L13.2 1 6.6 7.6A2 2 0 0 0 6 9v10a2 2 0 0 0 2 2h9a2 2 0 0 0 1.8-1.2l3-7.1c.1-.2.2-.5.2-.7v-2z"
      />
    </svg>
  );
}
