"""``LiveKnowledge.pinned``: one request reads one knowledge-base version and reports that one,
whatever the alias does meanwhile (the swap-under-load race: an answer from the old version that
named the new one)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import numpy as np

from mangaassist.chatbot.knowledge import LiveKnowledge
from mangaassist.platform.vector import SearchHit


class _Index:
    """The few ``VectorIndex`` calls ``LiveKnowledge`` makes; each version answers with its name."""

    def __init__(self) -> None:
        self.alias = "v1"

    def resolve(self, alias: str) -> str:
        return self.alias

    def version(self, name: str) -> Any:
        return SimpleNamespace(model="m", dim=2)

    def search(
        self, name: str, vector: Any, query: str, k: int = 3, kind: str | None = None
    ) -> list[SearchHit]:
        return [SearchHit("c", "d", name, "h", f"text of {name}", "policy", 1.0, 1.0)]


def test_a_pinned_view_keeps_its_version_across_a_swap() -> None:
    index = _Index()
    live = LiveKnowledge(cast(Any, index), model="m", fallback=None)
    assert live.version == "v1"
    view = live.pinned()
    index.alias = "v2"
    assert live.refresh() is True and live.version == "v2"
    vector = np.zeros(2, dtype=np.float32)
    assert view.version == "v1" and view.search(vector, "q")[0].chunk.doc_title == "v1"
    assert live.pinned().search(vector, "q")[0].chunk.doc_title == "v2"


def test_without_a_live_version_or_a_build_nothing_is_found() -> None:
    index = _Index()
    index.alias = None  # type: ignore[assignment]
    live = LiveKnowledge(cast(Any, index), model="m", fallback=None)
    view = live.pinned()
    assert view.version == "none" and view.search(np.zeros(2, dtype=np.float32), "q") == []
