"""The OpenSearch provider's request bodies, through a real opensearch-py client whose transport
is stubbed: the alias moves in one atomic ``_aliases`` request, versions are k-NN indexes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from opensearchpy import OpenSearch

from mangaassist.platform.aws.vector_opensearch import VERSIONS, OpenSearchVectorIndex
from mangaassist.platform.vector import AliasConflict, IndexRecord, VersionError


class Recorder:
    def __init__(self, alias_target: str | None = "kb-a") -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.alias_target = alias_target

    def __call__(self, method: str, url: str, params: Any = None, body: Any = None, **_: Any) -> Any:
        self.calls.append((method, url, body))
        if url.startswith(f"/{VERSIONS}/_doc/") and method == "GET":
            name = url.rsplit("/", 1)[1]
            return {"found": True, "_source": {"name": name, "model": "m@1", "dim": 3, "state": "ready",
                                               "rows": 1, "created_at": "t", "meta": {}}}  # fmt: skip
        if url.startswith("/_alias/"):
            return {self.alias_target: {"aliases": {"kb-live": {}}}} if self.alias_target else {}
        if url == "/_bulk":
            return {"errors": False}
        if url.endswith("/_search"):
            src = {"chunk_id": "d#0", "doc_id": "d", "doc_title": "D", "heading": "h", "text": "gift cards",
                   "content_hash": "x", "kind": "policy", "vector": [1.0, 0.0, 0.0]}  # fmt: skip
            return {"hits": {"hits": [{"_source": src}]}}
        return {"acknowledged": True}


@pytest.fixture
def stub() -> tuple[OpenSearchVectorIndex, Recorder]:
    client = OpenSearch(hosts=["http://127.0.0.1:9"])
    recorder = Recorder()
    client.transport.perform_request = recorder  # type: ignore[method-assign]
    return OpenSearchVectorIndex(client), recorder


def test_alias_moves_in_one_atomic_request(stub: tuple[OpenSearchVectorIndex, Recorder]) -> None:
    index, rec = stub
    index.move_alias("kb-live", "kb-b", expect="kb-a", reason="run-1/promote/move-alias")
    aliases = [c for c in rec.calls if c[1] == "/_aliases"]
    assert aliases == [
        (
            "POST",
            "/_aliases",
            {
                "actions": [
                    {"remove": {"index": "kb-a", "alias": "kb-live", "must_exist": True}},
                    {"add": {"index": "kb-b", "alias": "kb-live"}},
                ]
            },
        )
    ]


def test_alias_move_checks_the_expected_target_first(stub: tuple[OpenSearchVectorIndex, Recorder]) -> None:
    index, rec = stub
    with pytest.raises(AliasConflict):
        index.move_alias("kb-live", "kb-b", expect="kb-z")
    assert not [c for c in rec.calls if c[1] == "/_aliases"]


def test_first_alias_has_no_remove_action() -> None:
    client = OpenSearch(hosts=["http://127.0.0.1:9"])
    rec = Recorder(alias_target=None)
    client.transport.perform_request = rec  # type: ignore[method-assign]
    OpenSearchVectorIndex(client).move_alias("kb-live", "kb-a", expect=None)
    body = next(c[2] for c in rec.calls if c[1] == "/_aliases")
    assert body == {"actions": [{"add": {"index": "kb-a", "alias": "kb-live"}}]}


def test_version_index_is_knn_with_the_model_dimension() -> None:
    client = OpenSearch(hosts=["http://127.0.0.1:9"])
    rec = Recorder()
    original = rec.__call__

    def unknown_versions(method: str, url: str, params: Any = None, body: Any = None, **kw: Any) -> Any:
        if url.startswith(f"/{VERSIONS}/_doc/") and method == "GET":
            rec.calls.append((method, url, body))
            return {"found": False}
        return original(method, url, params, body, **kw)

    client.transport.perform_request = unknown_versions  # type: ignore[method-assign]
    OpenSearchVectorIndex(client).create_version("kb-c", model="m@1", dim=384, meta={})
    put = next(c[2] for c in rec.calls if c[0] == "PUT" and c[1] == "/kb-c")
    assert put["settings"]["index"]["knn"] is True
    vector = put["mappings"]["properties"]["vector"]
    assert vector["type"] == "knn_vector" and vector["dimension"] == 384
    assert vector["method"]["space_type"] == "cosinesimil"
    meta = next(c[2] for c in rec.calls if c[0] == "PUT" and c[1] == f"/{VERSIONS}/_doc/kb-c")
    assert meta["state"] == "building" and meta["model"] == "m@1"


def test_sealed_versions_are_immutable(stub: tuple[OpenSearchVectorIndex, Recorder]) -> None:
    index, rec = stub  # the stub answers "ready" for every version
    with pytest.raises(VersionError, match="already exists"):
        index.create_version("kb-a", model="m@1", dim=3, meta={})
    assert not [c for c in rec.calls if c[0] == "PUT" and c[1] == "/kb-a"]


def test_bulk_and_search_bodies(stub: tuple[OpenSearchVectorIndex, Recorder]) -> None:
    index, rec = stub
    vec = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    index.add("kb-b", [IndexRecord("d#0", "d", "D", "h", "text", "hash", "policy", vec)])
    bulk = next(c[2] for c in rec.calls if c[1] == "/_bulk")
    assert bulk[0] == {"index": {"_index": "kb-b", "_id": "d#0"}}
    assert bulk[1]["vector"] == [1.0, 0.0, 0.0] and bulk[1]["kind"] == "policy"
    hits = index.search("kb-b", vec, "gift cards", k=3, kind="policy")
    assert [h.doc_id for h in hits] == ["d"] and hits[0].score == pytest.approx(1.1)
    body = next(c[2] for c in rec.calls if c[1] == "/kb-b/_search")
    should = body["query"]["bool"]["should"]
    assert should[0]["knn"]["vector"]["k"] == 32 and should[0]["knn"]["vector"]["filter"] == {
        "term": {"kind": "policy"}
    }
    assert should[1] == {"match": {"text": {"query": "gift cards"}}}
    assert body["query"]["bool"]["filter"] == [{"term": {"kind": "policy"}}]
