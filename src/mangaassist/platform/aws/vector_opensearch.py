"""``VectorIndex`` on Amazon OpenSearch Service (opensearch-py): one index per version, the alias
moved with one atomic ``POST /_aliases`` request (``remove`` the old target, ``add`` the new one,
``must_exist`` on the remove so a concurrent move makes the request fail instead of leaving two
targets).

Version metadata (state, model, dimension, rows, gate metrics) is one document per version in the
``kb-versions`` index; the alias history is one document per move in ``kb-alias-moves``. Search is
the same hybrid as locally: a k-NN query for the vector candidates plus a ``match`` on the text,
re-scored with ``HybridScorer`` over the returned candidates so scores mean the same everywhere.

Status: request bodies are unit-tested against a stubbed transport
(``tests/unit/kb/test_opensearch_requests.py``); it has not run against a real domain yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from mangaassist.platform.vector import (
    AliasConflict,
    AliasMove,
    HybridScorer,
    IndexRecord,
    IndexVersion,
    SearchHit,
    Vector,
    VersionError,
    VersionState,
)

VERSIONS = "kb-versions"
MOVES = "kb-alias-moves"
_FIELDS = ("chunk_id", "doc_id", "doc_title", "heading", "text", "content_hash", "kind")


def index_body(dim: int) -> dict[str, Any]:
    """Settings and mappings of one version's index (k-NN on ``vector``, cosine)."""
    return {
        "settings": {"index": {"knn": True, "number_of_shards": 1, "number_of_replicas": 1}},
        "mappings": {
            "properties": {
                **{f: {"type": "keyword"} for f in ("chunk_id", "doc_id", "content_hash", "kind")},
                "doc_title": {"type": "text"},
                "heading": {"type": "text"},
                "text": {"type": "text"},
                "vector": {
                    "type": "knn_vector",
                    "dimension": dim,
                    "method": {"name": "hnsw", "space_type": "cosinesimil", "engine": "lucene"},
                },
            }
        },
    }


def alias_actions(alias: str, version: str, previous: str | None) -> dict[str, Any]:
    """One request: both actions apply together or not at all."""
    actions: list[dict[str, Any]] = []
    if previous is not None:
        actions.append({"remove": {"index": previous, "alias": alias, "must_exist": True}})
    actions.append({"add": {"index": version, "alias": alias}})
    return {"actions": actions}


def search_body(vector: Vector, text: str, candidates: int, kind: str | None) -> dict[str, Any]:
    knn: dict[str, Any] = {"vector": {"vector": [float(x) for x in vector], "k": candidates}}
    if kind is not None:
        knn["vector"]["filter"] = {"term": {"kind": kind}}
    should: list[dict[str, Any]] = [{"knn": knn}]
    if text.strip():
        should.append({"match": {"text": {"query": text}}})
    query: dict[str, Any] = {"bool": {"should": should}}
    if kind is not None:
        query["bool"]["filter"] = [{"term": {"kind": kind}}]
    return {"size": candidates * 2, "query": query, "_source": [*_FIELDS, "vector"]}


class OpenSearchVectorIndex:
    """``client`` is an ``opensearchpy.OpenSearch``; every call goes through its transport."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def _req(self, method: str, url: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        return self.client.transport.perform_request(method, url, params=params, body=body)

    def version(self, name: str) -> IndexVersion | None:
        found = self._req("GET", f"/{VERSIONS}/_doc/{name}", params={"ignore": 404})
        if not found or not found.get("found"):
            return None
        s = found["_source"]
        return IndexVersion(
            s["name"],
            s["model"],
            s["dim"],
            VersionState(s["state"]),
            s["rows"],
            s["created_at"],
            0,
            s["meta"],
        )

    def versions(self) -> list[IndexVersion]:
        found = self._req("POST", f"/{VERSIONS}/_search", {"size": 1000, "sort": [{"created_at": "asc"}]})
        out = []
        for hit in found["hits"]["hits"]:
            s = hit["_source"]
            out.append(
                IndexVersion(
                    s["name"],
                    s["model"],
                    s["dim"],
                    VersionState(s["state"]),
                    s["rows"],
                    s["created_at"],
                    0,
                    s["meta"],
                )
            )
        return out

    def _put_meta(self, info: IndexVersion) -> None:
        self._req("PUT", f"/{VERSIONS}/_doc/{info.name}", {**info.as_dict(), "state": info.state.value})

    def create_version(self, name: str, *, model: str, dim: int, meta: dict[str, Any]) -> IndexVersion:
        existing = self.version(name)
        if existing is not None and existing.state is VersionState.READY:
            raise VersionError(f"index version {name} already exists and is sealed")
        self._req("DELETE", f"/{name}", params={"ignore_unavailable": "true"})
        self._req("PUT", f"/{name}", index_body(dim))
        info = IndexVersion(
            name, model, dim, VersionState.BUILDING, 0, datetime.now(UTC).isoformat(), 0, meta
        )
        self._put_meta(info)
        return info

    def add(self, name: str, records: Sequence[IndexRecord]) -> None:
        lines: list[dict[str, Any]] = []
        for r in records:
            lines.append({"index": {"_index": name, "_id": r.chunk_id}})
            lines.append({**{f: getattr(r, f) for f in _FIELDS}, "vector": [float(x) for x in r.vector]})
        if lines:
            result = self._req("POST", "/_bulk", lines)
            if result.get("errors"):
                raise VersionError(f"bulk indexing into {name} reported errors")

    def seal(self, name: str, meta: dict[str, Any]) -> IndexVersion:
        info = self.version(name)
        if info is None or info.state is not VersionState.BUILDING:
            raise VersionError(f"{name} is not a building version")
        self._req("POST", f"/{name}/_refresh")
        rows = int(self._req("GET", f"/{name}/_count")["count"])
        sealed = IndexVersion(
            name, info.model, info.dim, VersionState.READY, rows, info.created_at, 0, {**info.meta, **meta}
        )
        self._put_meta(sealed)
        return sealed

    def update_meta(self, name: str, meta: dict[str, Any]) -> None:
        info = self.version(name)
        if info is None:
            raise VersionError(f"no index version named {name}")
        self._put_meta(
            IndexVersion(
                name, info.model, info.dim, info.state, info.rows, info.created_at, 0, {**info.meta, **meta}
            )
        )

    def drop(self, name: str) -> None:
        aliased = self._req("GET", f"/{name}/_alias", params={"ignore": 404}) or {}
        if aliased.get(name, {}).get("aliases"):
            raise VersionError(f"{name} is the target of an alias; move the alias first")
        self._req("DELETE", f"/{name}", params={"ignore_unavailable": "true"})
        self._req("DELETE", f"/{VERSIONS}/_doc/{name}", params={"ignore": 404})

    def records(self, name: str) -> list[IndexRecord]:
        found = self._req("POST", f"/{name}/_search", {"size": 10000, "query": {"match_all": {}}})
        return [self._record(h["_source"]) for h in found["hits"]["hits"]]

    @staticmethod
    def _record(s: dict[str, Any]) -> IndexRecord:
        return IndexRecord(
            s["chunk_id"], s["doc_id"], s["doc_title"], s["heading"], s["text"], s["content_hash"], s["kind"],
            np.asarray(s["vector"], dtype=np.float32),
        )  # fmt: skip

    def search(
        self, name: str, vector: Vector, text: str, k: int = 10, kind: str | None = None
    ) -> list[SearchHit]:
        found = self._req("POST", f"/{name}/_search", search_body(vector, text, max(k * 8, 32), kind))
        rows = [self._record(h["_source"]) for h in found["hits"]["hits"]]
        if not rows:
            return []
        return HybridScorer(rows, np.stack([r.vector for r in rows])).search(vector, text, k, kind)

    def resolve(self, alias: str) -> str | None:
        found = self._req("GET", f"/_alias/{alias}", params={"ignore": 404}) or {}
        names = [n for n, v in found.items() if isinstance(v, dict) and alias in v.get("aliases", {})]
        return names[0] if names else None

    def move_alias(self, alias: str, version: str, *, expect: str | None, reason: str = "") -> AliasMove:
        info = self.version(version)
        if info is None or info.state is not VersionState.READY:
            raise VersionError(f"{version} is not a ready index version")
        current = self.resolve(alias)
        if current != expect:
            raise AliasConflict(f"alias {alias} points at {current}, not {expect}: someone moved it")
        self._req("POST", "/_aliases", alias_actions(alias, version, expect))
        move = AliasMove(alias, version, expect, datetime.now(UTC).isoformat(), reason)
        self._req("POST", f"/{MOVES}/_doc", move.__dict__)
        return move

    def alias_history(self, alias: str) -> list[AliasMove]:
        found = self._req(
            "POST",
            f"/{MOVES}/_search",
            {"size": 1000, "query": {"term": {"alias": alias}}, "sort": [{"at": "asc"}]},
        )
        return [AliasMove(**h["_source"]) for h in found["hits"]["hits"]]
