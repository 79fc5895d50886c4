"""What every ``Tables`` provider must do for CD-07's migrations: conditional partial updates, paged
and segmented scans that resume from a key, and reads through a global secondary index."""

from __future__ import annotations

import pytest

from mangaassist.platform.tables import Condition, ConditionFailed, Tables, Write


def test_update_sets_and_removes_attributes_and_keeps_the_rest(tables: Tables) -> None:
    tables.put("t", {"pk": "a", "sk": "1", "keep": "k", "old": 1})
    tables.update("t", "a", "1", set={"new": "n", "n": 2.5}, remove=["old"])
    assert tables.get("t", "a", "1") == {"pk": "a", "sk": "1", "keep": "k", "new": "n", "n": 2.5}
    tables.update("t", "b", "1", set={"x": 1})  # an absent item is created, as UpdateItem does
    assert tables.get("t", "b", "1") == {"pk": "b", "sk": "1", "x": 1}
    with pytest.raises(ValueError, match="keys"):
        tables.update("t", "a", "1", set={"pk": "z"})


def test_a_conditional_update_never_resurrects_a_deleted_item(tables: Tables) -> None:
    tables.put("t", {"pk": "a", "sk": "1", "v": 1})
    read = tables.get("t", "a", "1")
    assert read is not None
    tables.delete("t", "a", "1")
    with pytest.raises(ConditionFailed):
        tables.update(
            "t", "a", "1", set={"derived": 2}, condition=Condition.unchanged(read, ["v", "derived"])
        )
    assert tables.get("t", "a", "1") is None


def test_a_conditional_update_never_overwrites_a_newer_write(tables: Tables) -> None:
    tables.put("t", {"pk": "a", "sk": "1", "v": 1})
    read = tables.get("t", "a", "1")
    assert read is not None
    tables.put("t", {"pk": "a", "sk": "1", "v": 2, "derived": 20})  # the application, meanwhile
    with pytest.raises(ConditionFailed):
        tables.update(
            "t", "a", "1", set={"derived": 10}, condition=Condition.unchanged(read, ["v", "derived"])
        )
    assert tables.get("t", "a", "1") == {"pk": "a", "sk": "1", "v": 2, "derived": 20}
    fresh = tables.get("t", "a", "1")
    assert fresh is not None
    tables.update("t", "a", "1", set={"derived": 21}, condition=Condition.unchanged(fresh, ["v", "derived"]))
    assert tables.get("t", "a", "1") == {"pk": "a", "sk": "1", "v": 2, "derived": 21}


def test_absent_and_equals_conditions(tables: Tables) -> None:
    tables.put("t", {"pk": "a", "sk": "1", "v": None, "w": "x"})
    tables.update(
        "t", "a", "1", set={"y": 1}, condition=Condition(exists=True, equals=(("v", None),), absent=("y",))
    )
    with pytest.raises(ConditionFailed):
        tables.update("t", "a", "1", set={"y": 2}, condition=Condition(absent=("y",)))
    with pytest.raises(ConditionFailed):  # equal to None means present with a null value
        tables.update("t", "a", "1", set={"z": 1}, condition=Condition(equals=(("missing", None),)))
    assert tables.get("t", "a", "1") == {"pk": "a", "sk": "1", "v": None, "w": "x", "y": 1}


def test_paged_segmented_scan_covers_each_item_once_and_resumes_from_a_key(tables: Tables) -> None:
    keys = {(f"pk-{i:03d}", f"sk-{j}") for i in range(150) for j in range(2)}
    for pk, sk in keys:
        tables.put("t", {"pk": pk, "sk": sk, "n": 1})
    seen: list[tuple[str, str]] = []
    for segment in range(3):
        start = None
        pages = 0
        while True:
            page = tables.scan_page("t", segment=segment, total_segments=3, start=start, limit=17)
            assert len(page.items) <= 17
            seen.extend((i["pk"], i["sk"]) for i in page.items)
            pages += 1
            if page.next is None:
                break
            start = page.next
        assert pages > 1
    assert sorted(seen) == sorted(keys)
    # a scan resumed from a checkpointed key reads what follows it, not what came before
    first = tables.scan_page("t", segment=0, total_segments=1, limit=10)
    assert first.next is not None
    rest: list[tuple[str, str]] = []
    start = first.next
    while start is not None:
        page = tables.scan_page("t", start=dict(start), limit=50)
        rest.extend((i["pk"], i["sk"]) for i in page.items)
        start = page.next
    assert len(rest) == len(keys) - 10
    assert not {(i["pk"], i["sk"]) for i in first.items} & set(rest)


def test_query_index_is_sparse_and_ordered_by_its_sort_key(tables: Tables) -> None:
    assert [(i.name, i.partition_key, i.sort_key) for i in tables.indexes("ix")] == [
        ("by-owner", "owner", "rank")
    ]
    assert tables.indexes("t") == []
    tables.put("ix", {"pk": "a", "sk": "1", "owner": "ann", "rank": 3})
    tables.put("ix", {"pk": "b", "sk": "1", "owner": "ann", "rank": 1})
    tables.put("ix", {"pk": "c", "sk": "1", "owner": "bob", "rank": 2})
    tables.put("ix", {"pk": "d", "sk": "1"})  # no key attribute: not in the index
    assert [i["pk"] for i in tables.query_index("ix", "by-owner", "ann")] == ["b", "a"]
    assert [i["pk"] for i in tables.query_index("ix", "by-owner", "ann", descending=True, limit=1)] == ["a"]
    assert tables.query_index("ix", "by-owner", "nobody") == []
    tables.update("ix", "d", "1", set={"owner": "bob", "rank": 9})
    assert [i["pk"] for i in tables.query_index("ix", "by-owner", "bob")] == ["c", "d"]
    with pytest.raises(Exception, match="no index"):
        tables.query_index("ix", "by-nothing", "x")


def test_a_transaction_writes_all_or_nothing_and_names_the_failed_write(tables: Tables) -> None:
    tables.put("t", {"pk": "old", "sk": "1", "v": 1})
    tables.put("ix", {"pk": "gone", "sk": "1"})
    moved = Write.put(
        "ix", {"pk": "new", "sk": "1", "v": 1, "owner": "ann", "rank": 1}, Condition.not_exists()
    )
    tables.transact(
        [Write.check("t", "old", "1", Condition.attr_equals(v=1)), moved, Write.delete("ix", "gone", "1")]
    )
    assert tables.get("ix", "new", "1") == {"pk": "new", "sk": "1", "v": 1, "owner": "ann", "rank": 1}
    assert tables.get("ix", "gone", "1") is None
    with pytest.raises(ConditionFailed, match=r"transaction write 1 \(put ix 'new'/'1'\)"):
        tables.transact([Write.put("t", {"pk": "old", "sk": "1", "v": 2}), moved])
    assert tables.get("t", "old", "1") == {"pk": "old", "sk": "1", "v": 1}  # the first write did not happen
    with pytest.raises(ConditionFailed, match="transaction write 0"):
        tables.transact(
            [Write.check("t", "old", "1", Condition.attr_equals(v=5)), Write.delete("ix", "new", "1")]
        )
    assert tables.get("ix", "new", "1") is not None
    with pytest.raises(ValueError, match="each item once"):
        tables.transact([Write.delete("t", "old", "1"), Write.put("t", {"pk": "old", "sk": "1"})])
    with pytest.raises(ValueError, match="1 to 100 writes"):
        tables.transact([])
