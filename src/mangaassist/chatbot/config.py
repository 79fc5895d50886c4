"""Runtime configuration of the chatbot: ``config/chatbot.yaml``, validated with Pydantic.

The config pipeline (CD-06) will serve versions of this document from the ConfigStore; the
version the chatbot reports is the digest of the validated content.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mangaassist.core.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GeneratorConfig(_Strict):
    kind: Literal["local", "bedrock", "openai"] = "local"
    model: str = ""
    region: str = "us-east-1"
    base_url: str = "http://127.0.0.1:11434/v1"
    api_key_env: str = ""
    """Name of the environment variable holding the API key (never the key itself)."""


class RetrievalConfig(_Strict):
    top_k: int = Field(3, ge=1, le=10)
    min_score: float = Field(0.35, ge=0.0, le=1.0)
    """Below this cosine similarity a policy question gets the fallback answer."""
    product_min_score: float = Field(0.5, ge=0.0, le=2.0)
    """A descriptive product search ("horror manga about spirals") lists only series scoring at least
    this (hybrid score); below it the customer gets the fallback instead of unrelated titles."""
    max_sentences: int = Field(3, ge=1, le=10)
    chunk_words: int = Field(160, ge=20, le=1000)
    chunk_overlap: int = Field(30, ge=0, le=500)


class RecommendationConfig(_Strict):
    count: int = Field(3, ge=1, le=10)


class IntentConfig(_Strict):
    min_confidence: float = Field(0.3, ge=0.0, le=1.0)
    """Below this the chatbot asks the customer to rephrase instead of guessing."""


class GuardrailConfig(_Strict):
    block_prompt_injection: bool = True
    check_output_claims: bool = True


class ChatbotConfig(_Strict):
    generator: GeneratorConfig = GeneratorConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    recommendation: RecommendationConfig = RecommendationConfig()
    intent: IntentConfig = IntentConfig()
    guardrails: GuardrailConfig = GuardrailConfig()
    system_prompt: str = (
        "You are MangaAssist, the shopping assistant of a manga store. Answer only from the facts provided."
    )

    @property
    def version(self) -> str:
        blob = json.dumps(self.model_dump(), sort_keys=True).encode()
        return f"cfg-{hashlib.sha256(blob).hexdigest()[:12]}"


def load_config(path: Path) -> ChatbotConfig:
    """Read and validate; errors name the file and the offending field."""
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    try:
        return ChatbotConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from exc
