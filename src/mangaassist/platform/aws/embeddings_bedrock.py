"""``BedrockTitanEmbedder``: the ``Embedder`` protocol on Amazon Bedrock's Titan Text Embeddings.

In AWS the knowledge base (CD-04) and the chatbot's queries can embed with Bedrock instead of the
in-process all-MiniLM-L6-v2: ``[environments.NAME.aws] embedding_model`` (default
``amazon.titan-embed-text-v2:0``) and ``embedding_dimensions`` (256, 512 or 1024; default 1024),
chosen by ``platform.factory.Platform.embedder``. Titan v2 embeds one text per ``InvokeModel``
call::

    request   {"inputText": TEXT, "dimensions": D, "normalize": true}
    response  {"embedding": [D floats], "inputTextTokenCount": N}

so ``embed`` sends a batch's texts concurrently (``concurrency`` threads, 8 by default; botocore's
``adaptive`` retry mode backs off on ``ThrottlingException``) and returns them in order.

What is checked on every answer, so a wrong vector never reaches an index: the dimension is the one
asked for, every value is finite, and the vector is unit length within 1e-3 (Titan's
``normalize``); anything else raises ``EmbeddingError`` naming the model and the text's position.
An empty text is refused before any call (Bedrock answers it with a ``ValidationException``), and
texts are cut to ``max_chars`` (Titan v2 takes up to 8,192 tokens; 30,000 characters is well
below). ``name`` is the model id, ``model_id`` of ``platform.embeddings`` adds the dimension
(``amazon.titan-embed-text-v2:0@1024``): vectors of different models or dimensions never share an
index version, and the index gate checks the dimension (``delivery/pipelines/kb.py``).

Tested with botocore's ``Stubber`` (exact requests; moto has no Bedrock runtime).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from botocore.exceptions import BotoCoreError, ClientError

from mangaassist.core.errors import ConfigError, MangaAssistError
from mangaassist.platform.embeddings import Matrix

DEFAULT_MODEL = "amazon.titan-embed-text-v2:0"
DIMENSIONS = (256, 512, 1024)
MAX_CHARS = 30_000


class EmbeddingError(MangaAssistError):
    """Bedrock refused a text, or answered with a vector that is not what was asked for."""


class BedrockTitanEmbedder:
    """Unit-length vectors from Titan Text Embeddings v2 (``bedrock-runtime`` client injected)."""

    def __init__(
        self,
        client: Any,
        model: str = DEFAULT_MODEL,
        dimensions: int = 1024,
        *,
        concurrency: int = 8,
        max_chars: int = MAX_CHARS,
    ) -> None:
        if dimensions not in DIMENSIONS:
            raise ConfigError(
                f"embedding_dimensions {dimensions}: Titan Text Embeddings v2 gives "
                f"{', '.join(map(str, DIMENSIONS))}"
            )
        if not model.startswith("amazon.titan-embed-text-v2"):
            raise ConfigError(
                f"embedding_model {model!r}: only amazon.titan-embed-text-v2 models are supported"
            )
        if not 1 <= concurrency <= 64:
            raise ConfigError(f"concurrency {concurrency}: expected 1..64")
        self.client = client
        self.name = model
        self.dim = dimensions
        self.version = str(dimensions)
        self.concurrency = concurrency
        self.max_chars = max_chars

    def embed(self, texts: Sequence[str]) -> Matrix:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            if not text or not text.strip():
                raise EmbeddingError(f"{self.name}: text {i} is empty (Bedrock refuses empty input)")
        if len(texts) == 1 or self.concurrency == 1:
            rows = [self._one(i, t) for i, t in enumerate(texts)]
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(texts))) as pool:
                rows = list(pool.map(self._one, range(len(texts)), texts))
        return np.asarray(rows, dtype=np.float32)

    def _one(self, position: int, text: str) -> list[float]:
        body = json.dumps({"inputText": text[: self.max_chars], "dimensions": self.dim, "normalize": True})
        try:
            answer = self.client.invoke_model(
                modelId=self.name, body=body, contentType="application/json", accept="application/json"
            )
            payload = json.loads(answer["body"].read())
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise EmbeddingError(
                f"{self.name}: text {position}: {error.get('Code', '?')}: {error.get('Message', exc)}"
            ) from None
        except (BotoCoreError, ValueError) as exc:
            raise EmbeddingError(f"{self.name}: text {position}: {exc}") from None
        vector = payload.get("embedding") if isinstance(payload, dict) else None
        if not isinstance(vector, list) or len(vector) != self.dim:
            got = len(vector) if isinstance(vector, list) else type(vector).__name__
            raise EmbeddingError(f"{self.name}: text {position}: expected {self.dim} values, got {got}")
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in vector):
            raise EmbeddingError(f"{self.name}: text {position}: the vector has a value that is not a number")
        norm = math.sqrt(sum(v * v for v in vector))
        if abs(norm - 1.0) > 1e-3:
            raise EmbeddingError(f"{self.name}: text {position}: the vector's length is {norm:.4f}, not 1")
        return [float(v) for v in vector]
