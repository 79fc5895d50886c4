"""Any OpenAI-compatible chat completions server (vLLM, Ollama, ...) via httpx.

Tested with httpx.MockTransport only.
"""

from __future__ import annotations

import httpx

from mangaassist.chatbot.generators.base import GenerationRequest, GeneratorError, render_prompt


class OpenAICompatibleGenerator:
    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 20.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, transport=transport, timeout=timeout_s
        )

    async def generate(self, request: GenerationRequest) -> str:
        messages = []
        if request.system_prompt:
            messages.append({"role": "system", "content": request.system_prompt})
        messages.append({"role": "user", "content": render_prompt(request)})
        try:
            response = await self._client.post(
                "/chat/completions",
                json={"model": self.model, "messages": messages, "temperature": 0},
            )
            response.raise_for_status()
            body = response.json()
            text = str(body["choices"][0]["message"]["content"] or "").strip()
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise GeneratorError(f"openai-compatible server failed: {exc}") from exc
        if not text:
            raise GeneratorError("openai-compatible server returned an empty answer")
        return text

    async def aclose(self) -> None:
        await self._client.aclose()
