"""``BedrockTitanEmbedder``: the exact ``InvokeModel`` requests (botocore's Stubber; moto has no
Bedrock runtime), the vectors in order, and every answer that is not a unit vector of the asked
dimension refused by name; the factory's choice of embedder per environment."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from mangaassist.core.errors import ConfigError
from mangaassist.platform.aws.embeddings_bedrock import BedrockTitanEmbedder, EmbeddingError
from mangaassist.platform.embeddings import HashingEmbedder, model_id
from mangaassist.platform.factory import platform_for

MODEL = "amazon.titan-embed-text-v2:0"


def _unit(dim: int, seed: int) -> list[float]:
    v = np.random.default_rng(seed).normal(size=dim)
    return [float(x) for x in v / np.linalg.norm(v)]


def _answer(vector: Any) -> dict[str, Any]:
    raw = json.dumps({"embedding": vector, "inputTextTokenCount": 7}).encode()
    return {"body": StreamingBody(io.BytesIO(raw), len(raw)), "contentType": "application/json"}


def _request(text: str, dim: int) -> dict[str, Any]:
    return {
        "modelId": MODEL,
        "body": json.dumps({"inputText": text, "dimensions": dim, "normalize": True}),
        "contentType": "application/json",
        "accept": "application/json",
    }


@pytest.fixture
def client() -> Any:
    return boto3.client(
        "bedrock-runtime", region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    )


def test_texts_are_embedded_one_call_each_in_order(client: Any) -> None:
    embedder = BedrockTitanEmbedder(client, MODEL, 256, concurrency=1)
    texts = ["returns within 30 days", "shipping to Canada"]
    with Stubber(client) as stub:
        for i, text in enumerate(texts):
            stub.add_response("invoke_model", _answer(_unit(256, i)), _request(text, 256))
        matrix = embedder.embed(texts)
        stub.assert_no_pending_responses()
    assert matrix.shape == (2, 256) and matrix.dtype == np.float32
    assert np.allclose(matrix[1], _unit(256, 1), atol=1e-6)
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-3)
    assert embedder.embed([]).shape == (0, 256)
    assert model_id(embedder) == f"{MODEL}@256"  # another dimension is another embedding version


def test_concurrent_calls_keep_the_order(client: Any) -> None:
    embedder = BedrockTitanEmbedder(client, MODEL, 256, concurrency=4)
    texts = [f"question {i}" for i in range(6)]
    expected = {t: _unit(256, i) for i, t in enumerate(texts)}

    # the Stubber answers in the order calls arrive, which threads do not fix: answer by content
    calls: list[str] = []

    def fake_invoke(**kwargs: Any) -> dict[str, Any]:
        text = json.loads(kwargs["body"])["inputText"]
        calls.append(text)
        return _answer(expected[text])

    client.invoke_model = fake_invoke  # type: ignore[method-assign]
    matrix = embedder.embed(texts)
    assert sorted(calls) == sorted(texts)
    for i, text in enumerate(texts):
        assert np.allclose(matrix[i], expected[text], atol=1e-6)


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        (_unit(512, 3), "expected 256 values, got 512"),
        ([2.0 / math.sqrt(256)] * 256, "length is 2.0000, not 1"),
        ([float("nan")] * 256, "not a number"),
        ("nope", "expected 256 values, got str"),
    ],
)
def test_an_answer_that_is_not_a_unit_vector_of_the_dimension_is_refused(
    client: Any, vector: Any, message: str
) -> None:
    embedder = BedrockTitanEmbedder(client, MODEL, 256)
    with Stubber(client) as stub:
        stub.add_response("invoke_model", _answer(vector), _request("hello", 256))
        with pytest.raises(EmbeddingError, match=message):
            embedder.embed(["hello"])


def test_bedrock_errors_and_empty_texts_are_named(client: Any) -> None:
    embedder = BedrockTitanEmbedder(client, MODEL, 256)
    with Stubber(client) as stub:
        stub.add_client_error("invoke_model", "AccessDeniedException", "no model access", 403)
        with pytest.raises(EmbeddingError, match=r"text 0: AccessDeniedException: no model access"):
            embedder.embed(["hello"])
        with pytest.raises(EmbeddingError, match="text 1 is empty"):
            embedder.embed(["hello", "  "])
        stub.assert_no_pending_responses()  # nothing was sent for the batch with an empty text


def test_settings_out_of_range_are_refused(client: Any) -> None:
    with pytest.raises(ConfigError, match="embedding_dimensions 300"):
        BedrockTitanEmbedder(client, MODEL, 300)
    with pytest.raises(ConfigError, match=r"only amazon\.titan-embed-text-v2"):
        BedrockTitanEmbedder(client, "cohere.embed-english-v3", 1024)


def test_the_factory_picks_bedrock_only_where_an_aws_environment_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "mangaassist.toml"
    config.write_text(
        '[environments.dev]\nprovider = "local"\nhome = "state"\n\n'
        '[environments.prod]\nprovider = "aws"\n[environments.prod.aws]\nregion = "eu-west-1"\n'
        f'embedding_model = "{MODEL}"\nembedding_dimensions = 512\n\n'
        '[environments.staging]\nprovider = "aws"\n[environments.staging.aws]\nregion = "eu-west-1"\n'
        'embedding_model = "amazon.titan-embed-text-v2:0"\nembedding_dimensions = "wide"\n'
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("MANGAASSIST_EMBEDDER", "hashing")
    prod = platform_for("prod", config=config).embedder()
    assert isinstance(prod, BedrockTitanEmbedder) and prod.dim == 512
    assert isinstance(platform_for("dev", config=config).embedder(), HashingEmbedder)
    with pytest.raises(ConfigError, match="embedding_dimensions = 'wide'"):
        platform_for("staging", config=config).embedder()
