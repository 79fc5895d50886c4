"""Routing decisions, stats and settings of the local platform: pure, no processes."""

from __future__ import annotations

import collections
import random
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mangaassist.core.errors import ConfigError
from mangaassist.platform.artifacts import pack_source, unpack
from mangaassist.platform.local.router import (
    RouteTarget,
    RoutingTable,
    StickySessions,
    WeightedDeck,
    _session_of,
)
from mangaassist.platform.local.stats import (
    DISAGREEMENT_TEXT_MAX,
    DISAGREEMENTS_KEPT,
    Histogram,
    RouterCollector,
    RouterStats,
)
from mangaassist.platform.local.upstream import UpstreamPool
from mangaassist.platform.settings import load_settings

ROOT = Path(__file__).parents[3]


def _target(name: str, ready: int = 1) -> RouteTarget:
    return RouteTarget(name, tuple(UpstreamPool("127.0.0.1", 1000 + i) for i in range(ready)))


def test_draw_follows_weights_exactly_in_every_block_of_100() -> None:
    table = RoutingTable.build(1, {"a": _target("a"), "b": _target("b")}, {"a": 95, "b": 5})
    rng = random.Random(7)
    drawn = [table.draw(rng).name for _ in range(2_000)]  # type: ignore[union-attr]
    for block in range(0, 2_000, 100):
        assert collections.Counter(drawn[block : block + 100]) == {"a": 95, "b": 5}


def test_draw_order_is_random_so_a_periodic_client_sees_the_split() -> None:
    """A client cycling through 20 questions must not have one question always on the canary."""
    table = RoutingTable.build(1, {"a": _target("a"), "b": _target("b")}, {"a": 95, "b": 5})
    rng = random.Random(3)
    drawn = [table.draw(rng).name for _ in range(20_000)]  # type: ignore[union-attr]
    per_phase = [sum(1 for d in drawn[phase::20] if d == "b") for phase in range(20)]
    assert all(20 <= n <= 80 for n in per_phase), per_phase  # 50 expected per phase
    first_blocks = [tuple(drawn[i : i + 100]) for i in (0, 100, 200)]
    assert len(set(first_blocks)) == 3


@pytest.mark.parametrize(
    ("weights", "size"),
    [({"a": 70, "b": 30}, 100), ({"a": 99.5, "b": 0.5}, 1_000), ({"a": 2, "b": 1}, 10_000)],
)
def test_deck_size_holds_each_share(weights: dict[str, float], size: int) -> None:
    deck = WeightedDeck(tuple(weights), tuple(weights.values()))
    assert deck.size == size
    drawn = collections.Counter(deck.draw(random.Random(1)) for _ in range(size))
    assert sum(drawn.values()) == size
    for name, w in weights.items():
        assert abs(drawn[name] - w * size / sum(weights.values())) <= 1


def test_revisions_without_ready_workers_get_no_new_conversations() -> None:
    table = RoutingTable.build(1, {"a": _target("a"), "b": _target("b", ready=0)}, {"a": 50, "b": 50})
    rng = random.Random(1)
    assert {table.draw(rng).name for _ in range(200)} == {"a"}  # type: ignore[union-attr]


def test_when_nobody_is_ready_the_weighted_revision_takes_the_counted_failure() -> None:
    table = RoutingTable.build(1, {"a": _target("a", ready=0)}, {"a": 100})
    target = table.draw(random.Random(1))
    assert target is not None and target.pick() is None
    assert RoutingTable.build(1, {"a": _target("a")}, {}).draw(random.Random(1)) is None


def test_sticky_sessions_forget_the_least_recently_used() -> None:
    sticky = StickySessions(capacity=2)
    sticky.set("s1", "a")
    sticky.set("s2", "b")
    assert sticky.get("s1") == "a"  # s1 is now the most recent
    sticky.set("s3", "a")
    assert sticky.get("s2") is None and sticky.get("s1") == "a"
    assert sticky.counts() == {"a": 2}


def test_session_id_comes_from_header_then_cookie() -> None:
    assert _session_of([(b"x-session-id", b"h"), (b"cookie", b"ma_session=c")]) == ("h", None)
    assert _session_of([(b"cookie", b"a=1; ma_session=c2")]) == ("c2", None)
    assert _session_of([(b"x-mangaassist-revision", b"r2")]) == (None, "r2")
    assert _session_of([(b"cookie", b"ma_session")]) == (None, None)


def test_histogram_quantiles_use_fine_buckets() -> None:
    h = Histogram()
    for ms in [0.3] * 98 + [1.6, 40.0]:
        h.observe(ms)
    assert h.quantile(0.5) == 0.5
    assert h.quantile(0.99) == 1.75
    assert h.quantile(1.0) == 40
    assert Histogram().quantile(0.5) is None


def test_observations_after_a_cursor_and_prometheus_text() -> None:
    stats = RouterStats("svc", keep=3)
    for i in range(5):
        stats.record("r1", 200 if i else 503, 1.0 + i, None, i == 1, False, False, f"s{i}")
    stats.record("r2", 0, 2.0, "reset", False, False, True, None)
    stats.record_feedback("r1", "s1", "up")
    # only the 3 most recent are kept; a cursor inside the window returns what is newer
    assert [o["seq"] for o in stats.observations_after(0)] == [5, 6, 7]
    assert [o["seq"] for o in stats.observations_after(6)] == [7]
    assert list(stats.observations_after(7)) == []
    snap = stats.snapshot()
    assert snap["revisions"]["r1"]["failed"] == 1 and snap["revisions"]["r2"]["failed"] == 1
    assert snap["revisions"]["r1"]["fallback"] == 1 and snap["revisions"]["r1"]["feedback"] == {"up": 1}
    registry = CollectorRegistry()
    registry.register(RouterCollector(stats))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    count = {
        s.labels["revision"]: s.value
        for s in families["mangaassist_router_latency_seconds"].samples
        if s.name.endswith("_count")
    }
    assert count == {"r1": 5.0, "r2": 1.0}


def test_shadow_disagreements_are_a_bounded_sample_with_truncated_text() -> None:
    stats = RouterStats("intent-model")
    shadow = stats.shadow("m2")
    for i in range(DISAGREEMENTS_KEPT + 5):
        shadow.compared("order_status", "chit_chat", f"where is order {i} " + "x" * 500)
    shadow.compared("faq", "faq", "how long is shipping?")
    data = stats.snapshot()["shadow"]["m2"]
    assert data["intent_compared"] == DISAGREEMENTS_KEPT + 6 and data["intent_agreed"] == 1
    kept = data["disagreements"]
    assert len(kept) == DISAGREEMENTS_KEPT  # the newest only
    assert kept[0]["text"].startswith("where is order 5 ")
    assert kept[-1]["text"].startswith("where is order 24 ")
    assert {len(d["text"]) for d in kept} == {DISAGREEMENT_TEXT_MAX}
    assert {(d["primary"], d["shadow"]) for d in kept} == {("order_status", "chit_chat")}


def test_settings_of_the_repository_and_bad_files(tmp_path: Path) -> None:
    dev = load_settings("dev", ROOT / "mangaassist.toml", home=tmp_path)
    assert dev.provider == "local" and dev.control_port != dev.services["chatbot"].router_port
    assert dev.services["chatbot"].router_port == 8080 and dev.services["chatbot"].first_revision == "r1"
    bad = tmp_path / "bad.toml"
    bad.write_text("[environments.x.services.s]\nrouter_port = 1\n")
    with pytest.raises(ConfigError, match="'app'"):
        load_settings("x", bad)
    with pytest.raises(ConfigError, match=r"no \[environments\.nope\]"):
        load_settings("nope", ROOT / "mangaassist.toml")


def test_source_artifacts_are_reproducible_and_checked(tmp_path: Path) -> None:
    src = tmp_path / "src" / "pkg"
    src.mkdir(parents=True)
    (src / "m.py").write_text("X = 1\n")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"junk")
    a = pack_source(tmp_path / "src", tmp_path / "store")
    assert pack_source(tmp_path / "src", tmp_path / "store") == a
    assert (unpack(a, tmp_path / "unpacked") / "pkg" / "m.py").read_text() == "X = 1\n"
    (src / "m.py").write_text("X = 2\n")
    b = pack_source(tmp_path / "src", tmp_path / "store")
    assert b.digest != a.digest
    b.path.write_bytes(b"tampered")
    with pytest.raises(ConfigError, match="digest"):
        unpack(b, tmp_path / "unpacked")
