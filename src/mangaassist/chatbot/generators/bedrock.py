"""Amazon Bedrock through the Converse API (boto3). Tested with botocore's Stubber only."""

from __future__ import annotations

import asyncio
from typing import Any

from mangaassist.chatbot.generators.base import GenerationRequest, GeneratorError, render_prompt


class BedrockGenerator:
    name = "bedrock"

    def __init__(
        self, model_id: str, client: Any = None, region: str = "us-east-1", max_tokens: int = 400
    ) -> None:
        if client is None:
            import boto3

            client = boto3.client("bedrock-runtime", region_name=region)
        self.client = client
        self.model_id = model_id
        self.max_tokens = max_tokens

    def generate_sync(self, request: GenerationRequest) -> str:
        try:
            response = self.client.converse(
                modelId=self.model_id,
                system=[{"text": request.system_prompt}] if request.system_prompt else [],
                messages=[{"role": "user", "content": [{"text": render_prompt(request)}]}],
                inferenceConfig={"maxTokens": self.max_tokens, "temperature": 0.0},
            )
        except Exception as exc:  # botocore raises many types; the caller needs one
            raise GeneratorError(f"bedrock converse failed: {exc}") from exc
        try:
            parts = response["output"]["message"]["content"]
            text = "".join(p.get("text", "") for p in parts).strip()
        except (KeyError, TypeError) as exc:
            raise GeneratorError("bedrock response has no output.message.content") from exc
        if not text:
            raise GeneratorError("bedrock returned an empty answer")
        return text

    async def generate(self, request: GenerationRequest) -> str:
        return await asyncio.to_thread(self.generate_sync, request)
