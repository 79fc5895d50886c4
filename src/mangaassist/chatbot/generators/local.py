"""The deterministic local composer: the lead sentence, then the grounded facts, verbatim."""

from __future__ import annotations

from mangaassist.chatbot.generators.base import GenerationRequest


class LocalComposer:
    name = "local"

    def compose(self, request: GenerationRequest) -> str:
        return " ".join(part for part in (request.lead, *request.facts) if part).strip()

    async def generate(self, request: GenerationRequest) -> str:
        return self.compose(request)
