"""The backfill and the verification of a migration: a parallel, throttled, checkpointed scan-write.

``backfill`` scans the table in ``segments`` parallel segments (``Tables.scan_page``), a page at a
time. For each item it computes the migration's added attributes (``core.migrations.Rule``) and,
unless the item already has them, writes them with one conditional ``update``: the item must still
exist (a deleted item is never resurrected) and every source and added attribute must be as the
scan read it (a newer write of the application, which under the dual-write rule already carries the
new shape, is never overwritten). A failed condition is counted as a conflict and left alone: the
application's write is newer.

After every page the segment's next key is saved (``save``: the engine's checkpoint), so a backfill
killed at any moment resumes where its last checkpoint says; at most the page in flight is read
again, and its writes are no-ops (already shaped) or conflicts.

Throttle: one ``TokenBucket`` shared by all segments at ``rate`` items a second (items scanned,
whether written or not: a scan costs read capacity either way). A provider's throttling error
(``ThrottledError``) empties the bucket and backs off exponentially (with jitter) before the item is
tried again.

``verify`` compares every item's added attributes with what the migration derives from its sources
now: a difference is an item the application wrote without the rule, or a backfill that did not
finish; it returns the count and a sample.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

from mangaassist.core.migrations import MISSING, Rule
from mangaassist.platform.tables import Condition, ConditionFailed, Item, Key, Tables, ThrottledError, Write


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; ``take`` blocks until one is there.
    Thread-safe; ``penalize`` empties it and holds every taker for ``seconds`` (a throttle)."""

    def __init__(
        self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate {rate}: a positive number of items a second")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self.clock = clock
        self._tokens = self.burst
        self._at = clock()
        self._lock = threading.Lock()

    def take(self, n: float = 1.0, stop: threading.Event | None = None) -> bool:
        """Wait for ``n`` tokens; False if ``stop`` was set meanwhile."""
        while True:
            with self._lock:
                now = self.clock()
                self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
                self._at = now
                if self._tokens >= n - 1e-9:  # a wait of exactly the missing time may land a hair short
                    self._tokens -= n
                    return True
                wait = (n - self._tokens) / self.rate
            if stop is not None:
                if stop.wait(wait):
                    return False
            else:
                time.sleep(wait)

    def penalize(self, seconds: float) -> None:
        with self._lock:
            self._tokens = -seconds * self.rate
            self._at = self.clock()


@dataclass
class SegmentProgress:
    """One segment's place in the scan and its counts: what the engine checkpoints after a page."""

    segment: int
    next: Key | None = None
    done: bool = False
    pages: int = 0
    scanned: int = 0
    written: int = 0
    already: int = 0
    """Items that had the new shape already (written by the application under the rule, or by an
    earlier attempt of this backfill)."""
    conflicts: int = 0
    """Conditional writes refused: the item changed or went since the scan read it."""
    unmovable: int = 0
    """``change_key``: items whose new keys cannot be derived (verify reports them)."""
    throttled: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SegmentProgress:
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


@dataclass
class BackfillReport:
    segments: list[SegmentProgress]
    elapsed_s: float
    scanned_this_run: int
    rate: float

    @property
    def done(self) -> bool:
        return all(s.done for s in self.segments)

    def totals(self) -> dict[str, int]:
        keys = ("pages", "scanned", "written", "already", "conflicts", "unmovable", "throttled")
        return {k: sum(int(getattr(s, k)) for s in self.segments) for k in keys}

    def as_dict(self) -> dict[str, Any]:
        achieved = self.scanned_this_run / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return {
            "done": self.done,
            **self.totals(),
            "elapsed_s": round(self.elapsed_s, 3),
            "rate_requested": self.rate,
            "rate_achieved": round(achieved, 2),
            "segments": [s.as_dict() for s in self.segments],
        }


def has_shape(rule: Rule, item: Item) -> bool:
    """True when ``item``'s added attributes are what ``rule`` derives from it now."""
    for name, value in rule.derived(item).items():
        if value is MISSING:
            if name in item:
                return False
        elif item.get(name) != value:
            return False
    return True


def move_one(tables: Tables, rule: Rule, item: Item) -> str:
    """``change_key``: copy one scanned item to the new table under its new keys, in a transaction
    with a check that the item is still as read (a deleted or changed item is never copied: the
    application's dual write has its newer copy)."""
    assert rule.move is not None
    copy = rule.move.moved(item)
    if copy is None:
        return "unmovable"
    if tables.get(rule.move.table, copy["pk"], copy["sk"]) == copy:
        return "already"
    try:
        tables.transact(
            [
                Write.check(rule.table, item["pk"], item["sk"], Condition.unchanged(item, list(item))),
                Write.put(rule.move.table, copy),
            ]
        )
    except ConditionFailed:
        return "conflict"
    return "written"


def shape_one(tables: Tables, rule: Rule, item: Item) -> str:
    """Bring one scanned item to the new shape: ``written``, ``already``, ``conflict`` (or, moving
    keys, ``unmovable``: its new keys cannot be derived)."""
    if rule.move is not None:
        return move_one(tables, rule, item)
    if has_shape(rule, item):
        return "already"
    derived = rule.derived(item)
    set_ = {n: v for n, v in derived.items() if v is not MISSING}
    remove = [n for n, v in derived.items() if v is MISSING and n in item]
    guard = Condition.unchanged(item, [*rule.sources, *derived])
    try:
        tables.update(rule.table, item["pk"], item["sk"], set=set_, remove=remove, condition=guard)
    except ConditionFailed:
        return "conflict"
    return "written"


def backfill(
    tables: Tables,
    rule: Rule,
    progress: list[SegmentProgress],
    *,
    rate: float,
    page: int,
    save: Callable[[SegmentProgress], None],
    stop: threading.Event | None = None,
    report: Callable[[BackfillReport], None] | None = None,
    max_backoff_s: float = 5.0,
) -> BackfillReport:
    """Run every unfinished segment of ``progress`` to its end (or until ``stop``), in parallel;
    ``save`` is called with a segment's progress after each page (from that segment's thread)."""
    stop = stop or threading.Event()
    # a burst of a page: the tokens that accrue while a segment waits for its next page are spent on
    # that page, so slow scan calls do not drag the rate below what was asked (the average still
    # cannot exceed ``rate``)
    bucket = TokenBucket(rate, burst=max(1.0, rate / 10, float(page)))
    total = len(progress)
    started = time.monotonic()
    scanned = [0]
    lock = threading.Lock()

    def run(p: SegmentProgress) -> None:
        backoff = 0.05
        while not p.done and not stop.is_set():
            try:
                got = tables.scan_page(
                    rule.table, segment=p.segment, total_segments=total, start=p.next, limit=page
                )
            except ThrottledError:
                p.throttled += 1
                bucket.penalize(backoff)
                stop.wait(backoff * random.uniform(0.5, 1.5))
                backoff = min(backoff * 2, max_backoff_s)
                continue
            for item in got.items:
                if not bucket.take(1.0, stop):
                    return  # stopped mid-page: the page is not checkpointed, it is read again
                while True:
                    try:
                        outcome = shape_one(tables, rule, item)
                        backoff = 0.05
                        break
                    except ThrottledError:
                        p.throttled += 1
                        bucket.penalize(backoff)
                        if stop.wait(backoff * random.uniform(0.5, 1.5)):
                            return
                        backoff = min(backoff * 2, max_backoff_s)
                if outcome == "written":
                    p.written += 1
                elif outcome == "already":
                    p.already += 1
                elif outcome == "unmovable":
                    p.unmovable += 1
                else:
                    p.conflicts += 1
                p.scanned += 1
                with lock:
                    scanned[0] += 1
            p.pages += 1
            p.next = got.next
            p.done = got.next is None
            save(p)

    pending = [p for p in progress if not p.done]
    if pending:
        with ThreadPoolExecutor(max_workers=len(pending), thread_name_prefix="backfill") as pool:
            futures = [pool.submit(run, p) for p in pending]
            while wait(futures, timeout=0.5, return_when=FIRST_EXCEPTION).not_done:
                if any(f.done() and f.exception() is not None for f in futures):
                    stop.set()  # one segment failed: the others stop at their next item
                if report is not None:
                    report(BackfillReport(progress, time.monotonic() - started, scanned[0], rate))
            for f in futures:
                f.result()
    return BackfillReport(progress, time.monotonic() - started, scanned[0], rate)


@dataclass
class VerifyReport:
    checked: int = 0
    differences: int = 0
    sample: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"checked": self.checked, "differences": self.differences, "sample": self.sample}


def scan_all(tables: Tables, table: str, segments: int, page: int) -> Iterator[Item]:
    for segment in range(segments):
        start: Key | None = None
        while True:
            got = tables.scan_page(table, segment=segment, total_segments=segments, start=start, limit=page)
            yield from got.items
            if got.next is None:
                break
            start = got.next


def verify(
    tables: Tables, rule: Rule, *, segments: int = 4, page: int = 500, sample: int = 10
) -> VerifyReport:
    """Every item of the table against the new shape (not throttled: a read-only pass; run it when
    the table's read capacity allows)."""
    if rule.move is not None:
        return _verify_moved(tables, rule, segments=segments, page=page, sample=sample)
    out = VerifyReport()
    for item in scan_all(tables, rule.table, segments, page):
        out.checked += 1
        if not has_shape(rule, item):
            out.differences += 1
            if len(out.sample) < sample:
                derived = {n: (None if v is MISSING else v) for n, v in rule.derived(item).items()}
                out.sample.append(
                    {
                        "pk": item["pk"],
                        "sk": item["sk"],
                        "expected": derived,
                        "found": {n: item.get(n) for n in derived},
                    }
                )
    return out


def _verify_moved(tables: Tables, rule: Rule, *, segments: int, page: int, sample: int) -> VerifyReport:
    """``change_key``: every item has its copy, equal to it under its new keys, and every copy an
    item it is the copy of (no orphan: a copy of a deleted or re-keyed item)."""
    assert rule.move is not None
    move = rule.move
    out = VerifyReport()

    def differ(pk: str, sk: str, expected: Any, found: Any) -> None:
        out.differences += 1
        if len(out.sample) < sample:
            out.sample.append({"pk": pk, "sk": sk, "expected": expected, "found": found})

    for item in scan_all(tables, rule.table, segments, page):
        out.checked += 1
        copy = move.moved(item)
        if copy is None:
            differ(item["pk"], item["sk"], "new keys", "none derivable")
            continue
        found = tables.get(move.table, copy["pk"], copy["sk"])
        if found != copy:
            differ(
                item["pk"],
                item["sk"],
                {"copy": [copy["pk"], copy["sk"]]},
                {"copy": found and [found["pk"], found["sk"]]},
            )
    for moved in scan_all(tables, move.table, segments, page):
        out.checked += 1
        origin = moved.get("moved_from")
        source = (
            tables.get(rule.table, str(origin[0]), str(origin[1]))
            if isinstance(origin, list) and len(origin) == 2
            else None
        )
        if source is None or move.moved(source) != moved:
            differ(moved["pk"], moved["sk"], {"copy of": origin}, "an orphan (its item is gone or moved)")
    return out


def clear(tables: Tables, table: str, *, rate: float, segments: int, page: int) -> int:
    """Delete every item of ``table``, throttled (a ``change_key`` rollback clears the new table,
    its contract the old one). Returns how many items went."""
    bucket = TokenBucket(rate)
    removed = 0
    for item in scan_all(tables, table, segments, page):
        bucket.take()
        tables.delete(table, item["pk"], item["sk"])
        removed += 1
    return removed


def strip(
    tables: Tables, rule: Rule, attributes: tuple[str, ...], *, rate: float, segments: int, page: int
) -> int:
    """Remove ``attributes`` from every item that has them (a rollback of expand, or a contract),
    throttled like the backfill; each removal is conditional on the item still existing. Returns
    how many items changed."""
    bucket = TokenBucket(rate)
    changed = 0
    for item in scan_all(tables, rule.table, segments, page):
        present = [a for a in attributes if a in item]
        if not present:
            continue
        bucket.take()
        try:
            tables.update(
                rule.table, item["pk"], item["sk"], remove=present, condition=Condition(exists=True)
            )
            changed += 1
        except ConditionFailed:
            continue  # deleted meanwhile
    return changed
