"""Migration rules (``core.migrations``): derived values, how writers shape items, the dual write
of ``platform.tables.ShapedTables`` on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from mangaassist.core.migrations import MISSING, Derive, Rule, Rules
from mangaassist.platform.local.tables import SqliteTables
from mangaassist.platform.tables import Condition, ConditionFailed, ShapedTables


def test_transforms_derive_from_the_item_and_are_missing_without_a_source() -> None:
    assert Derive("epoch", ("placed_at",)).value({"placed_at": "2026-06-01T02:31:00Z"}) == 1780281060
    assert Derive("epoch", ("placed_at",)).value({}) is MISSING
    assert (
        Derive("join", ("pk", "status"), (("sep", "#"),)).value({"pk": "c1", "status": "shipped"})
        == "c1#shipped"
    )
    assert Derive("join", ("pk", "status")).value({"pk": "c1"}) is MISSING  # every source is needed
    ttl = Derive("add_seconds", ("at", "created_at"), (("seconds", 60),))
    assert ttl.value({"created_at": 100.5}) == 160  # the first present source
    assert ttl.value({"at": 10, "created_at": 100}) == 70
    assert ttl.value({"other": 1}) is MISSING
    assert Derive("email_of", ("contact",)).value(
        {"contact": "Ann, ann.lee@Example.com, +1 (555) 010-2233"}
    ) == ("a***@example.com")
    assert (
        Derive("phone_of", ("contact",)).value({"contact": "ann.lee@example.com / +1 (555) 010-2233"})
        == "***2233"
    )
    assert Derive("phone_of", ("contact",)).value({"contact": "no number"}) is MISSING


def _split(phase: str) -> Rule:
    return Rule(
        "0009_split_contact",
        "tickets",
        phase,
        (("email", Derive("email_of", ("contact",))), ("phone", Derive("phone_of", ("contact",)))),
        ("contact",),
    )


def test_a_rule_shapes_writes_by_phase_and_round_trips_as_config() -> None:
    item = {"pk": "t1", "sk": "meta", "contact": "bo@x.io 0612345678", "phone": "stale"}
    assert _split("expand").shape(item) == {**item, "email": "b***@x.io", "phone": "***5678"}
    assert _split("contracted").shape(item) == {
        "pk": "t1",
        "sk": "meta",
        "email": "b***@x.io",
        "phone": "***5678",
    }
    no_contact = {"pk": "t2", "sk": "meta", "phone": "stale"}
    assert _split("expand").shape(no_contact) == {"pk": "t2", "sk": "meta"}  # nothing to derive from: absent
    rules = Rules((_split("cutover"),))
    assert Rules.from_content(rules.content()) == rules
    assert rules.reads_new("tickets", "email") and not rules.reads_new("tickets", "contact")
    assert not Rules((_split("expand"),)).reads_new("tickets", "email")
    with pytest.raises(ValueError, match="phase 'done'"):
        Rule.from_dict({**_split("expand").as_dict(), "phase": "done"})


def test_shaped_tables_dual_write_puts_and_updates(tmp_path: Path) -> None:
    inner = SqliteTables(tmp_path / "t.sqlite3")
    live = [Rules()]
    tables = ShapedTables(inner, lambda: live[0])
    tables.put("tickets", {"pk": "t1", "sk": "meta", "contact": "a@b.co"})
    assert inner.get("tickets", "t1", "meta") == {
        "pk": "t1",
        "sk": "meta",
        "contact": "a@b.co",
    }  # no rule yet
    live[0] = Rules((_split("expand"),))
    tables.put("tickets", {"pk": "t1", "sk": "meta", "contact": "c@d.co 555 123 4567"})
    assert inner.get("tickets", "t1", "meta") == {
        "pk": "t1",
        "sk": "meta",
        "contact": "c@d.co 555 123 4567",
        "email": "c***@d.co",
        "phone": "***4567",
    }
    tables.update("tickets", "t1", "meta", set={"contact": "e@f.co"})  # derived again from the whole item
    assert inner.get("tickets", "t1", "meta") == {
        "pk": "t1",
        "sk": "meta",
        "contact": "e@f.co",
        "email": "e***@f.co",
    }
    tables.put("orders", {"pk": "c", "sk": "o", "contact": "x@y.zz"})  # other tables are not shaped
    assert inner.get("orders", "c", "o") == {"pk": "c", "sk": "o", "contact": "x@y.zz"}
    with pytest.raises(ConditionFailed):
        tables.update("tickets", "t9", "meta", set={"contact": "g@h.co"}, condition=Condition(exists=True))
    assert inner.get("tickets", "t9", "meta") is None
