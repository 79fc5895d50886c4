"""One factory: the generator named in the chatbot config."""

from __future__ import annotations

import os

from mangaassist.chatbot.config import GeneratorConfig
from mangaassist.chatbot.generators.base import ResponseGenerator
from mangaassist.chatbot.generators.local import LocalComposer


def make_generator(cfg: GeneratorConfig) -> ResponseGenerator:
    if cfg.kind == "bedrock":
        from mangaassist.chatbot.generators.bedrock import BedrockGenerator

        return BedrockGenerator(model_id=cfg.model, region=cfg.region)
    if cfg.kind == "openai":
        from mangaassist.chatbot.generators.openai import OpenAICompatibleGenerator

        # the key comes from the environment only, never from a file in the repo
        api_key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        return OpenAICompatibleGenerator(base_url=cfg.base_url, model=cfg.model, api_key=api_key)
    return LocalComposer()
