"""The chatbot's side of an embedding release, without models: a version embedded by another model
is served with an embedder of that model, pinned together with the version; a rollback brings the
chatbot's own embedder back; an unknown model or an embedder of the wrong model is refused; the
query a pinned version searches with is its own embedder's; and the kinds map to model names."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest

from mangaassist.chatbot.knowledge import LiveKnowledge, QueryBound
from mangaassist.core.errors import ConfigError
from mangaassist.platform.embeddings import HashingEmbedder, embedder_kind, make_embedder, model_id
from mangaassist.platform.vector import SearchHit

OWN = "all-MiniLM-L6-v2@0.1.0"
OTHER = model_id(HashingEmbedder())  # hashing-v1@256: a model this process can make


class _Index:
    """The ``VectorIndex`` calls ``LiveKnowledge`` makes; versions named after their model."""

    def __init__(self, models: dict[str, tuple[str, int]]) -> None:
        self.models = models
        self.alias = next(iter(models))
        self.searched: list[Any] = []

    def resolve(self, alias: str) -> str:
        return self.alias

    def version(self, name: str) -> Any:
        model, dim = self.models[name]
        return SimpleNamespace(model=model, dim=dim)

    def records(self, name: str) -> list[Any]:
        raise NotImplementedError  # the store's own search is used

    def search(
        self, name: str, vector: Any, query: str, k: int = 3, kind: str | None = None
    ) -> list[SearchHit]:
        self.searched.append(vector)
        return [SearchHit("c", "d", name, "h", "text", "policy", 1.0, 1.0)]


def embedders(made: list[str]) -> Any:
    def make(model: str) -> Any:
        made.append(model)
        if embedder_kind(model) is None:
            raise ConfigError(f"no embedder for {model}")
        return make_embedder(str(embedder_kind(model)))

    return make


def test_the_version_and_its_embedder_switch_together_and_roll_back_together() -> None:
    index = _Index({"kb-own": (OWN, 384), "kb-other": (OTHER, 256)})
    made: list[str] = []
    live = LiveKnowledge(cast(Any, index), OWN, None, embedders=embedders(made))
    first = cast(Any, live.pinned())
    assert first.version == "kb-own" and first.embedder is None  # the chatbot's own

    index.alias = "kb-other"
    assert live.refresh() is True
    pinned = cast(Any, live.pinned())
    assert pinned.version == "kb-other" and pinned.model == OTHER
    assert model_id(pinned.embedder) == OTHER
    assert first.version == "kb-own" and first.embedder is None  # a pinned view never changes

    index.alias = "kb-own"  # the rollback
    assert live.refresh() is True
    back = cast(Any, live.pinned())
    assert back.version == "kb-own" and back.embedder is None
    index.alias = "kb-other"
    assert live.refresh() is True
    assert made == [OTHER]  # made once, kept for the next flip


def test_a_model_without_an_embedder_or_a_wrong_one_is_refused() -> None:
    index = _Index({"kb-own": (OWN, 384), "kb-titan": ("amazon.titan-embed-text-v2:0@1024", 1024)})
    live = LiveKnowledge(cast(Any, index), OWN, None, embedders=embedders([]))
    index.alias = "kb-titan"
    assert live.refresh() is False and live.version == "kb-own"

    wrong = _Index({"kb-own": (OWN, 384), "kb-other": (OTHER, 256)})
    liar = LiveKnowledge(cast(Any, wrong), OWN, None, embedders=lambda model: HashingEmbedder(dim=64))
    wrong.alias = "kb-other"
    assert liar.refresh() is False and liar.version == "kb-own"  # dimension 64, not the version's 256

    plain = _Index({"kb-own": (OWN, 384), "kb-other": (OTHER, 256)})
    strict = LiveKnowledge(cast(Any, plain), OWN, None)  # no embedders: only our own model
    plain.alias = "kb-other"
    assert strict.refresh() is False and strict.version == "kb-own"


def test_a_bound_view_searches_with_its_own_vector() -> None:
    index = _Index({"kb-other": (OTHER, 256)})
    live = LiveKnowledge(cast(Any, index), OWN, None, embedders=embedders([]))
    own = np.ones(256, dtype=np.float32)
    bound = QueryBound(live.pinned(), own, OTHER)
    bound.search(np.zeros(384, dtype=np.float32), "q")
    assert index.searched[-1] is own and bound.version == "kb-other"


def test_kinds_and_model_names() -> None:
    assert embedder_kind("all-MiniLM-L6-v2@0.1.0") == "minilm"
    assert embedder_kind("all-MiniLM-L6-v2-int8@0.1.0") == "minilm-int8"
    assert embedder_kind("hashing-v1@256") == "hashing"
    assert embedder_kind("amazon.titan-embed-text-v2:0@1024") is None
    with pytest.raises(ConfigError, match="'bert': expected one of minilm, minilm-int8, hashing"):
        make_embedder("bert")
