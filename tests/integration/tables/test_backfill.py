"""The backfill under live writers, on each ``Tables`` provider (SQLite file, DynamoDB on moto's
server): writers put, update and delete through the dual-write rule while the backfill runs, is
stopped mid-way (as a kill would) and resumed from its saved checkpoints. Nothing written by a
writer is lost or overwritten by a stale value, nothing deleted comes back, verify finds 0
differences, and a resumed segment reads at most the one page it had not checkpointed again."""

from __future__ import annotations

import copy
import random
import threading
import time
from typing import Any

from mangaassist.core.migrations import Derive, Move, Rule, Rules
from mangaassist.delivery.migrations.backfill import (
    SegmentProgress,
    TokenBucket,
    backfill,
    clear,
    has_shape,
    strip,
    verify,
)
from mangaassist.platform.aws.tables_dynamodb import DynamoTables
from mangaassist.platform.tables import ShapedTables, Tables

RULE = Rule(
    "0001_t_derived",
    "t",
    "expand",
    (
        ("label", Derive("join", ("pk", "v"), (("sep", ":"),))),
        ("ttl", Derive("add_seconds", ("at",), (("seconds", 10),))),
    ),
)


class Writers:
    """``count`` threads writing through the rule, each owning its own keys, recording what it did
    last to each (the truth the table must end with)."""

    def __init__(self, tables: Tables, keys: list[tuple[str, str]], count: int, seed: int) -> None:
        self.tables = ShapedTables(tables, lambda: Rules((RULE,)))
        self.truth: dict[tuple[str, str], dict[str, Any] | None] = {}
        self.stop = threading.Event()
        self.ops = 0
        self.threads = [
            threading.Thread(target=self._run, args=(keys[i::count], random.Random(seed + i)), daemon=True)
            for i in range(count)
        ]

    def _run(self, keys: list[tuple[str, str]], rng: random.Random) -> None:
        while not self.stop.is_set():
            pk, sk = rng.choice(keys)
            op = rng.random()
            if op < 0.4:
                item = {"pk": pk, "sk": sk, "v": rng.randrange(1000), "at": rng.randrange(10**6)}
                self.tables.put("t", item)
                self.truth[(pk, sk)] = {"v": item["v"], "at": item["at"]}
            elif op < 0.8:
                if self.truth.get((pk, sk), "seeded") is None:
                    continue  # deleted: an update would create it again (the app does not do that)
                v = rng.randrange(1000)
                self.tables.update("t", pk, sk, set={"v": v})
                before = self.truth.get((pk, sk)) or {}
                self.truth[(pk, sk)] = {**before, "v": v}
            else:
                self.tables.delete("t", pk, sk)
                self.truth[(pk, sk)] = None
            self.ops += 1
            time.sleep(0.002)

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def _seed(tables: Tables, n: int) -> tuple[list[tuple[str, str]], dict[tuple[str, str], dict[str, Any]]]:
    keys = [(f"p{i:05d}", f"s{i % 3}") for i in range(n)]
    seeded = {}
    for i, (pk, sk) in enumerate(keys):
        item = {"pk": pk, "sk": sk, "v": i, "at": 1000 + i}
        tables.put("t", item)  # written before the rule: the backfill brings these
        seeded[(pk, sk)] = {"v": i, "at": 1000 + i}
    return keys, seeded


def test_a_backfill_stopped_and_resumed_under_writers_loses_and_resurrects_nothing(tables: Tables) -> None:
    keys, seeded = _seed(tables, 600)
    saved: dict[int, dict[str, Any]] = {}

    def save(p: SegmentProgress) -> None:
        saved[p.segment] = copy.deepcopy(p.as_dict())

    progress = [SegmentProgress(i) for i in range(3)]
    with Writers(tables, keys, 3, seed=7) as writers:
        stop = threading.Event()
        first = threading.Thread(
            target=backfill,
            args=(tables, RULE, progress),
            kwargs={"rate": 400, "page": 25, "save": save, "stop": stop},
        )
        first.start()
        time.sleep(0.6)
        stop.set()  # a kill: what was not checkpointed is forgotten
        first.join()
        assert not all(p.done for p in progress)
        pages_at_kill = {i: s["pages"] for i, s in saved.items()}
        resumed = [
            SegmentProgress.from_dict(saved[i]) if i in saved else SegmentProgress(i) for i in range(3)
        ]
        report = backfill(tables, RULE, resumed, rate=2000, page=25, save=save)
        assert report.done
        time.sleep(0.2)
    assert writers.ops > 50
    # a resumed segment starts from its checkpoint, not from the beginning
    for i, pages in pages_at_kill.items():
        assert resumed[i].pages >= pages
    totals = report.totals()
    assert totals["written"] + totals["already"] + totals["conflicts"] == totals["scanned"]

    truth = {**{k: dict(v) for k, v in seeded.items()}, **writers.truth}
    lost, resurrected, stale = [], [], []
    for (pk, sk), want in truth.items():
        got = tables.get("t", pk, sk)
        if want is None:
            if got is not None:
                resurrected.append((pk, sk))
            continue
        if got is None or got.get("v") != want["v"] or got.get("at") != want.get("at", got.get("at")):
            lost.append((pk, sk))
        elif not has_shape(RULE, got):
            stale.append((pk, sk))
    assert (lost, resurrected, stale) == ([], [], [])
    checked = verify(tables, RULE, segments=2, page=50)
    assert checked.differences == 0 and checked.checked == sum(1 for v in truth.values() if v is not None)


def test_verify_reports_an_item_written_without_the_rule_and_strip_removes_the_new_shape(
    tables: Tables,
) -> None:
    _seed(tables, 30)
    backfill(tables, RULE, [SegmentProgress(0)], rate=10_000, page=7, save=lambda p: None)
    assert verify(tables, RULE, segments=1).differences == 0
    tables.put("t", {"pk": "p00003", "sk": "s0", "v": 99, "at": 1})  # a writer that missed the rule
    report = verify(tables, RULE, segments=1)
    assert report.differences == 1
    assert report.sample == [
        {
            "pk": "p00003",
            "sk": "s0",
            "expected": {"label": "p00003:99", "ttl": 11},
            "found": {"label": None, "ttl": None},
        }
    ]
    assert strip(tables, RULE, ("label", "ttl"), rate=10_000, segments=2, page=10) == 29
    assert all(
        "label" not in i and "ttl" not in i
        for i in (tables.get("t", pk, sk) for pk, sk in [("p00001", "s1")])
        if i
    )


def test_the_token_bucket_holds_the_rate_and_a_throttle_holds_it_back() -> None:
    now = [0.0]

    class Clockwork(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            now[0] += timeout or 0.0  # waiting moves the fake clock
            return False

    bucket = TokenBucket(100.0, burst=5, clock=lambda: now[0])
    for _ in range(105):
        assert bucket.take(1.0, stop=Clockwork())
    assert abs(now[0] - 1.0) < 1e-6  # 5 from the burst, 100 at 100 a second
    bucket.penalize(0.5)
    before = now[0]
    assert bucket.take(1.0, stop=Clockwork())
    assert abs(now[0] - before - 0.51) < 1e-6  # half a second held, then one token's time


MOVE = Rule(
    "0002_t_by_group",
    "t",
    "expand",
    (),
    move=Move("ix", Derive("join", ("group", "pk"), (("sep", "#"),)), Derive("copy", ("sk",))),
)


def test_change_key_copies_every_item_once_under_writers_that_move_them(tables: Tables) -> None:
    """Items are copied to the new table under keys derived from an attribute the writers keep
    changing (so copies move); a backfill stopped and resumed; at the end every item has exactly its
    copy, no copy is an orphan, and a rollback's clear empties the new table.

    On DynamoDB the writers write between the backfill's pages, and the backfill scans one segment,
    so that nothing runs beside a transaction: moto's server backs up whole tables for each
    transaction without a lock, so concurrent transactions fail (500) and its restore loses other
    requests' writes (a moto limitation; AWS isolates transactions). The concurrent version (three
    writer threads, two segments) runs on SQLite."""
    keys = [(f"p{i:04d}", "s") for i in range(300)]
    for i, (pk, sk) in enumerate(keys):
        tables.put("t", {"pk": pk, "sk": sk, "group": "abc"[i % 3], "v": i})
    shaped = ShapedTables(tables, lambda: Rules((MOVE,)))
    truth: dict[tuple[str, str], dict[str, Any] | None] = {}
    stop = threading.Event()
    concurrent = not isinstance(tables, DynamoTables)

    def write_once(rng: random.Random, mine: list[tuple[str, str]]) -> None:
        pk, sk = rng.choice(mine)
        op = rng.random()
        if op < 0.5:
            item = {"pk": pk, "sk": sk, "group": rng.choice("abc"), "v": rng.randrange(100)}
            shaped.put("t", item)
            truth[(pk, sk)] = item
        elif op < 0.8 and truth.get((pk, sk), {}) is not None:
            group = rng.choice("abc")
            shaped.update("t", pk, sk, set={"group": group})
            truth[(pk, sk)] = {**(truth.get((pk, sk)) or tables.get("t", pk, sk) or {}), "group": group}
        else:
            shaped.delete("t", pk, sk)
            truth[(pk, sk)] = None

    def write(seed: int) -> None:
        rng, mine = random.Random(seed), keys[seed::3]
        while not stop.is_set():
            write_once(rng, mine)
            time.sleep(0.003)

    between = random.Random(99)
    saved: dict[int, dict[str, Any]] = {}

    def save(p: SegmentProgress) -> None:
        saved[p.segment] = copy.deepcopy(p.as_dict())
        if not concurrent:
            for _ in range(5):
                write_once(between, keys)

    writers = [threading.Thread(target=write, args=(i,), daemon=True) for i in range(3)] if concurrent else []
    for w in writers:
        w.start()
    segments = 2 if concurrent else 1  # one segment: on moto, nothing runs beside a transaction
    progress = [SegmentProgress(i) for i in range(segments)]
    halt = threading.Event()
    first = threading.Thread(
        target=backfill,
        args=(tables, MOVE, progress),
        kwargs={"rate": 300, "page": 20, "save": save, "stop": halt},
    )
    first.start()
    time.sleep(0.4)
    halt.set()
    first.join()
    resumed = [
        SegmentProgress.from_dict(saved[i]) if i in saved else SegmentProgress(i) for i in range(segments)
    ]
    report = backfill(tables, MOVE, resumed, rate=5000, page=20, save=save)
    time.sleep(0.2)
    stop.set()
    for w in writers:
        w.join()
    assert report.done and report.totals()["unmovable"] == 0
    assert len(truth) > 20

    checked = verify(tables, MOVE, segments=2, page=50)
    assert checked.differences == 0, checked.sample
    for (pk, sk), want in truth.items():
        got = tables.get("t", pk, sk)
        if want is None:
            assert got is None
            continue
        assert got is not None and got["group"] == want["group"]
        expected = {**got, "pk": f"{want['group']}#{pk}", "moved_from": [pk, sk]}
        assert tables.get("ix", f"{want['group']}#{pk}", sk) == expected
    copies = sum(1 for _ in tables.scan("ix"))
    assert copies == sum(1 for _ in tables.scan("t"))
    assert clear(tables, "ix", rate=10_000, segments=2, page=50) == copies
    assert not list(tables.scan("ix"))
