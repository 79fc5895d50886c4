"""The SQLite implementation of the Tables protocol, on real SQLite files."""

import multiprocessing
from pathlib import Path

import pytest

from mangaassist.platform.local.tables import SqliteTables
from mangaassist.platform.tables import Condition, ConditionFailed


@pytest.fixture
def tables(tmp_path: Path) -> SqliteTables:
    return SqliteTables(tmp_path / "t.sqlite3")


def test_put_get_roundtrip_and_overwrite(tables: SqliteTables) -> None:
    tables.put("orders", {"pk": "cust-1", "sk": "MA-1", "status": "shipped"})
    assert tables.get("orders", "cust-1", "MA-1") == {"pk": "cust-1", "sk": "MA-1", "status": "shipped"}
    tables.put("orders", {"pk": "cust-1", "sk": "MA-1", "status": "delivered"})
    assert tables.get("orders", "cust-1", "MA-1")["status"] == "delivered"
    assert tables.get("orders", "cust-2", "MA-1") is None
    assert tables.get("other", "cust-1", "MA-1") is None


def test_conditional_put_not_exists(tables: SqliteTables) -> None:
    tables.put("t", {"pk": "a", "sk": "1", "v": 1}, condition=Condition.not_exists())
    with pytest.raises(ConditionFailed, match="already exists"):
        tables.put("t", {"pk": "a", "sk": "1", "v": 2}, condition=Condition.not_exists())
    assert tables.get("t", "a", "1")["v"] == 1  # the failed write changed nothing


def test_conditional_put_attr_equals(tables: SqliteTables) -> None:
    tables.put("t", {"pk": "a", "sk": "1", "version": 1})
    tables.put("t", {"pk": "a", "sk": "1", "version": 2}, condition=Condition.attr_equals(version=1))
    with pytest.raises(ConditionFailed, match="expected 1"):
        tables.put("t", {"pk": "a", "sk": "1", "version": 3}, condition=Condition.attr_equals(version=1))
    with pytest.raises(ConditionFailed, match="does not exist"):
        tables.put("t", {"pk": "b", "sk": "1"}, condition=Condition.attr_equals(version=1))
    assert tables.get("t", "a", "1")["version"] == 2


def test_query_by_prefix_order_and_limit(tables: SqliteTables) -> None:
    for sk in ["turn#000002", "turn#000001", "meta", "turn#000010", "feedback#1"]:
        tables.put("s", {"pk": "sess", "sk": sk})
    tables.put("s", {"pk": "other", "sk": "turn#000001"})
    assert [i["sk"] for i in tables.query("s", "sess", sk_prefix="turn#")] == [
        "turn#000001",
        "turn#000002",
        "turn#000010",
    ]
    assert [i["sk"] for i in tables.query("s", "sess", sk_prefix="turn#", limit=1, descending=True)] == [
        "turn#000010"
    ]
    # LIKE wildcards in a prefix are literal
    tables.put("s", {"pk": "sess", "sk": "a_b"})
    tables.put("s", {"pk": "sess", "sk": "axb"})
    assert [i["sk"] for i in tables.query("s", "sess", sk_prefix="a_")] == ["a_b"]


def test_delete_with_condition(tables: SqliteTables) -> None:
    tables.put("t", {"pk": "a", "sk": "1", "owner": "x"})
    with pytest.raises(ConditionFailed):
        tables.delete("t", "a", "1", condition=Condition.attr_equals(owner="y"))
    tables.delete("t", "a", "1", condition=Condition.attr_equals(owner="x"))
    assert tables.get("t", "a", "1") is None
    tables.delete("t", "a", "1")  # absent and unconditional: fine


def test_segmented_scan_covers_each_item_once(tables: SqliteTables) -> None:
    keys = {(f"pk-{i}", f"sk-{j}") for i in range(200) for j in range(2)}
    for pk, sk in keys:
        tables.put("big", {"pk": pk, "sk": sk})
    seen: list[tuple[str, str]] = []
    for segment in range(4):
        part = [(i["pk"], i["sk"]) for i in tables.scan("big", segment=segment, total_segments=4)]
        assert 0 < len(part) < len(keys)  # the split is real
        seen.extend(part)
    assert sorted(seen) == sorted(keys)
    with pytest.raises(ValueError, match="segment 4"):
        list(tables.scan("big", segment=4, total_segments=4))


def test_items_need_string_keys(tables: SqliteTables) -> None:
    with pytest.raises(ValueError, match="pk"):
        tables.put("t", {"pk": 1, "sk": "x"})
    with pytest.raises(ValueError, match="pk"):
        tables.put("t", {"sk": "x"})


def _claim(path: str, who: int, results: "multiprocessing.Queue[tuple[int, bool]]") -> None:
    t = SqliteTables(path)
    try:
        t.put("locks", {"pk": "deploy", "sk": "dev", "holder": who}, condition=Condition.not_exists())
        results.put((who, True))
    except ConditionFailed:
        results.put((who, False))


def test_conditional_put_is_atomic_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "race.sqlite3")
    SqliteTables(path).close()
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[tuple[int, bool]] = ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(path, i, results)) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    outcomes = [results.get(timeout=5) for _ in procs]
    winners = [who for who, won in outcomes if won]
    assert len(winners) == 1
    assert SqliteTables(path).get("locks", "deploy", "dev")["holder"] == winners[0]
