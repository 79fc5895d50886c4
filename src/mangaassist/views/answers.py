"""One chat exchange as ``mangaassist chat`` prints it (``make demo``'s tour prints its answers so).

``render_answer(console, question, body, headers)``: the question, the answer, then a dim line with
the intent, its confidence, the sources and the flags the response's headers raise (fallback,
guardrail). User text and data are escaped: a ``[tag]`` in them is content, not Rich markup.
"""

from __future__ import annotations

from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape


def answer_flags(headers: httpx.Headers) -> dict[str, bool]:
    """The flags of a ``/v1/chat`` response: did it fall back, did a guardrail act."""
    return {
        "fallback": headers.get("X-MangaAssist-Fallback") == "1",
        "guardrail": headers.get("X-MangaAssist-Guardrail") == "1",
    }


def render_answer(console: Console, question: str, body: dict[str, Any], headers: httpx.Headers) -> None:
    """One exchange: question, answer, intent, sources, flags."""
    flags = [name for name, on in answer_flags(headers).items() if on]
    console.print(f"[bold cyan]you>[/] {escape(question)}", highlight=False)
    console.print(f"[bold green]bot>[/] {escape(body['answer'])}", highlight=False)
    sources = escape(", ".join(f"{s['title']} [{s['id']}]" for s in body["sources"]) or "none")
    console.print(
        f"     [dim]intent {body['intent']} ({body['confidence']:.2f}) | sources: {sources}"
        f"{' | flags: ' + ', '.join(flags) if flags else ''}[/]",
        highlight=False,
    )
