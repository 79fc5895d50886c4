"""What every response generator receives and promises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from mangaassist.core.errors import MangaAssistError


class GeneratorError(MangaAssistError):
    """The generator could not produce an answer (transport error, bad response)."""


@dataclass(frozen=True)
class GenerationRequest:
    """A handler's grounded draft: the only facts a generator may state."""

    intent: str
    message: str
    """The customer's message with personal data already masked."""
    lead: str
    """An opening sentence that states no facts."""
    facts: list[str] = field(default_factory=list)
    """Complete sentences, each grounded in the catalog, an order or a cited document."""
    system_prompt: str = ""


class ResponseGenerator(Protocol):
    @property
    def name(self) -> str: ...

    async def generate(self, request: GenerationRequest) -> str:
        """The answer text. Raises ``GeneratorError`` when it cannot answer."""


def render_prompt(request: GenerationRequest) -> str:
    """The user turn sent to an LLM: the question, then the facts it may use, numbered."""
    facts = "\n".join(f"{i}. {f}" for i, f in enumerate(request.facts, start=1)) or "(none)"
    return (
        f"Customer message: {request.message}\n"
        f"Detected intent: {request.intent}\n"
        f"Facts you may use (and nothing else):\n{facts}\n"
        "Write a short, friendly answer using only these facts. Never invent prices, stock "
        "counts, dates or policies. If the facts are empty, say you could not find the answer."
    )
