// Unit tests of the widget component: a stub transport stands in for the chat API.
import { render, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';

import type { ChatAnswer, Transport } from './api';
import { ChatWidget } from './ChatWidget';
import type { ChatWidgetProps } from './ChatWidget';
import { SESSION_ID_PATTERN, SESSION_KEY } from './session';

const ANSWER: ChatAnswer = {
  answer: 'Volume 110 of One Piece is out now.',
  intent: 'product_question',
  confidence: 0.93,
  sources: [
    { id: 'cat-one-piece-110', title: 'One Piece, vol. 110' },
    { id: 'kb-shipping', title: 'Shipping times' },
  ],
  session_id: 'ignored-by-the-widget',
  versions: { revision: 'rev-1', model: 'm', config: 'c', index: 'i' },
};

const json = (body: unknown, status = 200): Response =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });

/** A transport answering every chat with `ANSWER` and every feedback with ok. */
function stubTransport() {
  return vi.fn<Transport>(async (url) => (url.endsWith('/v1/feedback') ? json({ ok: true }) : json(ANSWER)));
}

type Call = { url: string; headers: Record<string, string>; body: Record<string, unknown> };

function calls(transport: ReturnType<typeof vi.fn<Transport>>, path?: string): Call[] {
  return transport.mock.calls
    .map(([url, init]) => ({
      url,
      headers: init.headers as Record<string, string>,
      body: JSON.parse(init.body as string) as Record<string, unknown>,
    }))
    .filter((call) => !path || call.url.endsWith(path));
}

function setup(props: Partial<ChatWidgetProps> = {}) {
  const transport = props.transport ? vi.fn(props.transport) : stubTransport();
  const user = userEvent.setup();
  const view = render(<ChatWidget endpoint="" defaultOpen {...props} transport={transport} />);
  const input = () => screen.getByLabelText('Message MangaAssist');
  return { transport, user, view, input };
}

describe('sending a message', () => {
  it('posts the session and message and shows the answer with its sources', async () => {
    const { transport, user, input } = setup();
    await user.type(input(), 'Is One Piece 110 out?{Enter}');

    expect(await screen.findByText(ANSWER.answer)).toBeTruthy();
    const sources = screen.getAllByRole('listitem').map((item) => item.textContent);
    expect(sources).toEqual(['One Piece, vol. 110', 'Shipping times']);
    const [call] = calls(transport);
    expect(call?.url).toBe('/v1/chat');
    expect(transport.mock.calls[0]?.[1].method).toBe('POST');
    expect(Object.keys(call?.body ?? {}).sort()).toEqual(['message', 'session_id']);
    expect(call?.body.message).toBe('Is One Piece 110 out?');
    expect(screen.getByText('Is One Piece 110 out?')).toBeTruthy();
  });

  it('shows a typing indicator until the answer arrives', async () => {
    let answer!: (response: Response) => void;
    const { user, input } = setup({ transport: () => new Promise<Response>((resolve) => (answer = resolve)) });
    await user.type(input(), 'Hello{Enter}');

    expect(screen.getByText('MangaAssist is typing…')).toBeTruthy();
    answer(json(ANSWER));
    await screen.findByText(ANSWER.answer);
    expect(screen.queryByText('MangaAssist is typing…')).toBeNull();
  });

  it('sends to the configured endpoint', async () => {
    const { transport, user, input } = setup({ endpoint: 'https://chat.example.com/' });
    await user.type(input(), 'Hello{Enter}');
    await screen.findByText(ANSWER.answer);
    expect(calls(transport)[0]?.url).toBe('https://chat.example.com/v1/chat');
  });
});

describe('keyboard', () => {
  it('sends on Enter and inserts a new line on Shift+Enter', async () => {
    const { transport, user, input } = setup();
    await user.type(input(), 'line one{Shift>}{Enter}{/Shift}line two');

    expect(transport).not.toHaveBeenCalled();
    expect((input() as HTMLTextAreaElement).value).toBe('line one\nline two');

    await user.keyboard('{Enter}');
    await screen.findByText(ANSWER.answer);
    expect(calls(transport).map((call) => call.body.message)).toEqual(['line one\nline two']);
    expect((input() as HTMLTextAreaElement).value).toBe('');
  });
});

describe('session', () => {
  it('keeps one session id across a remount and sends it as X-Session-Id', async () => {
    const first = setup();
    await first.user.type(first.input(), 'first{Enter}');
    await screen.findByText(ANSWER.answer);
    first.view.unmount();

    const second = setup();
    await second.user.type(second.input(), 'second{Enter}');
    await screen.findByText(ANSWER.answer);

    const sent = [...calls(first.transport), ...calls(second.transport)];
    const stored = window.sessionStorage.getItem(SESSION_KEY);
    expect(stored).toMatch(SESSION_ID_PATTERN);
    expect(sent.map((call) => call.headers['X-Session-Id'])).toEqual([stored, stored]);
    expect(sent.map((call) => call.body.session_id)).toEqual([stored, stored]);
  });
});

describe('errors', () => {
  it('shows an HTTP error with Retry, which resends the same message', async () => {
    const responses = [json({ error: 'not ready' }, 503), json(ANSWER)];
    const { transport, user, input } = setup({ transport: async () => responses.shift()! });
    await user.type(input(), 'Where is my order?{Enter}');

    expect(await screen.findByText('MangaAssist could not answer (HTTP 503).')).toBeTruthy();
    await user.click(screen.getByRole('button', { name: 'Retry' }));

    await screen.findByText(ANSWER.answer);
    expect(calls(transport).map((call) => call.body.message)).toEqual(['Where is my order?', 'Where is my order?']);
    expect(screen.queryByRole('button', { name: 'Retry' })).toBeNull();
    expect(screen.queryByText(/HTTP 503/)).toBeNull();
  });

  it('shows a network failure with Retry', async () => {
    const { user, input } = setup({ transport: () => Promise.reject(new TypeError('Failed to fetch')) });
    await user.type(input(), 'Hello{Enter}');
    expect(await screen.findByText('Could not reach MangaAssist. Check your connection.')).toBeTruthy();
    expect(screen.getByRole('button', { name: 'Retry' })).toBeTruthy();
  });

  it('gives up after the timeout and aborts the request', async () => {
    let signal: AbortSignal | null | undefined;
    const hanging: Transport = (_url, init) =>
      new Promise((_resolve, reject) => {
        signal = init.signal;
        init.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
      });
    const { user, input } = setup({ transport: hanging, timeoutMs: 30 });
    await user.type(input(), 'Hello{Enter}');

    expect(await screen.findByText('MangaAssist took too long to answer.')).toBeTruthy();
    expect(signal?.aborted).toBe(true);
    expect(screen.getByRole('button', { name: 'Retry' })).toBeTruthy();
  });
});

describe('feedback', () => {
  it('posts one rating per answer and shows it was sent', async () => {
    const { transport, user, input } = setup();
    await user.type(input(), 'Hello{Enter}');
    await screen.findByText(ANSWER.answer);

    await user.click(screen.getByRole('button', { name: 'Helpful' }));
    expect(await screen.findByText('Thanks for your feedback.')).toBeTruthy();
    await user.click(screen.getByRole('button', { name: 'Helpful' }));
    await user.click(screen.getByRole('button', { name: 'Not helpful' }));

    const feedback = calls(transport, '/v1/feedback');
    const sessionId = window.sessionStorage.getItem(SESSION_KEY);
    expect(feedback).toHaveLength(1);
    expect(feedback[0]?.body).toEqual({ session_id: sessionId, rating: 'up' });
    expect(feedback[0]?.headers['X-Session-Id']).toBe(sessionId);
    expect(screen.getByRole('button', { name: 'Helpful' }).getAttribute('aria-pressed')).toBe('true');
    expect(screen.getByRole('button', { name: 'Not helpful' }).hasAttribute('disabled')).toBe(true);
  });
});

describe('signed-in customer', () => {
  it('sends the token as a bearer header and never a customer_id', async () => {
    const { transport, user, input } = setup({ customerToken: 'tok-123' });
    expect(screen.getByText('Signed in')).toBeTruthy();
    await user.type(input(), 'Where is my order?{Enter}');
    await screen.findByText(ANSWER.answer);
    await user.click(screen.getByRole('button', { name: 'Not helpful' }));
    await screen.findByText('Thanks for your feedback.');

    const sent = calls(transport);
    expect(sent.map((call) => call.url)).toEqual(['/v1/chat', '/v1/feedback']);
    expect(sent.map((call) => call.headers.Authorization)).toEqual(['Bearer tok-123', 'Bearer tok-123']);
    expect(sent.filter((call) => 'customer_id' in call.body)).toEqual([]);
  });

  it('sends no Authorization header for a guest', async () => {
    const { transport, user, input } = setup();
    expect(screen.getByText('Guest')).toBeTruthy();
    await user.type(input(), 'Hello{Enter}');
    await screen.findByText(ANSWER.answer);
    expect(calls(transport)[0]?.headers).not.toHaveProperty('Authorization');
  });
});

describe('accessibility', () => {
  it('announces the conversation in a polite live region', async () => {
    const { user, input } = setup();
    const log = screen.getByRole('log');
    expect(log.getAttribute('aria-live')).toBe('polite');
    await user.type(input(), 'Hello{Enter}');
    expect(await within(log).findByText(ANSWER.answer)).toBeTruthy();
    expect(within(log).getByText('Hello')).toBeTruthy();
  });

  it('opens and closes from the keyboard, moving focus into and out of the panel', async () => {
    const user = userEvent.setup();
    render(<ChatWidget endpoint="" transport={stubTransport()} />);
    const toggle = screen.getByRole('button', { name: 'Chat with MangaAssist' });
    expect(toggle.getAttribute('aria-expanded')).toBe('false');
    expect(screen.queryByRole('textbox', { name: 'Message MangaAssist' })).toBeNull(); // hidden panel

    await user.tab();
    expect(document.activeElement).toBe(toggle);
    await user.keyboard('{Enter}');
    expect(toggle.getAttribute('aria-expanded')).toBe('true');
    expect(document.getElementById(toggle.getAttribute('aria-controls')!)?.hidden).toBe(false);
    await waitFor(() => expect(document.activeElement).toBe(screen.getByLabelText('Message MangaAssist')));

    await user.keyboard('{Escape}');
    expect(toggle.getAttribute('aria-expanded')).toBe('false');
    expect(document.activeElement).toBe(toggle);
  });
});
