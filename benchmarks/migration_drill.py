"""CD-07 drill: a migration applied under live writers, its backfill SIGKILLed and resumed.

Everything the operator would run is the real CLI (``mangaassist migrate apply|resume|verify``,
``runs show``) in child processes with an explicit environment; the drill itself only seeds the
table, plays the application (writers) and watches.

Set-up (nothing in the checkout changes): a temporary project root (symlinks to the checkout's
top-level entries, except ``migrations/`` holding one drill migration, ``0001_drill_label.yaml``,
``label = join(name, v, sep='#')`` on table ``drill``; ``infra/`` whose ``resources.toml`` is a copy
that also declares ``[tables.drill]``; and a copy of ``mangaassist.toml``), a temporary
``MANGAASSIST_HOME`` (engine state, config server, local tables file) per scenario. With
``--provider dynamodb`` the environment takes its tables from aws (``[environments.dev.providers]
tables = "aws"``) on a moto server process (``tests.moto_server``), where the drill creates
``mangaassist-dev-drill``. The local provider needs no provisioning for an ``add_attribute``
migration (no index), so ``deploy infra`` is not run.

Main scenario:

1. ``--items`` items are seeded (``pk = dNNNNNNN``, ``sk = item``, sources ``name`` and ``v``):
   SQLite rows in batches (the rows ``SqliteTables`` writes, same segment hash), or DynamoDB
   ``BatchWriteItem``.
2. ``--writers`` threads put (new ``name`` and ``v``), update (``v``) and delete random keys at
   ``--write-rate`` operations a second in total, through ``ShapedTables`` whose rules come from the
   live config store (``live_rules`` polled every 0.5 s, like the chatbot): they dual-write once
   expand has published the rule. Each writer owns every W-th key, so the drill knows the truth
   (the last completed operation per key). The children get ``MANGAASSIST_CONFIG_POLL=0.5``.
3. ``migrate apply 1 --bake 0 --rate R --segments S --json`` runs; ``--kills`` times, at a random
   moment (progress fractions stratified over 5%..90% of the items, read from the process's own
   running count on its stderr, ``backfill: progress N items scanned``, every 0.5 s, plus a random
   delay of up to 0.5 s), the drill checks in the engine's state that the run is in step
   ``backfill`` (``engine_steps``) and SIGKILLs the process, then starts ``migrate resume RUN``.
4. After the run: writers stop, ``migrate verify 1 --json``, and the table is compared with the
   truth.

Pages redone per restart (how it is measured): right after the kill the drill reads each segment's
last checkpoint (``engine_checkpoints``, step ``backfill``, ``segment-N``: the resumed run starts
exactly there) and, with the writers paused, scans forward from that checkpoint's ``next`` with the
same ``Tables.scan_page`` calls the resumed run will make (same segment, page size and start). An
item there that carries the new shape although no writer wrote it while the rule was live (the
writers record every key they write under the rule) can only have been shaped by the killed attempt
after its last checkpoint: a *witness*. Pages redone for the segment = the index of the resumed
run's last page that holds a witness (0 if none). By design it is at most 1 (the page in flight).
It is a lower bound of the true number (an in-flight item that was already shaped, or a conflict,
leaves no trace), but a checkpoint that lags by a page or more leaves witnesses on the second page
and beyond, and nearly every seeded item needs a write. The drill also checks that no checkpoint
observed after a restart has fewer pages than the one the kill left (a resume from an older
position or from the start), and records a second, coarser lower bound: the killed process's last
running count minus what its checkpoints kept, which by design is at most one page per segment.

Rate: each attempt's throughput as the engine counts it: for the attempt that finished, the backfill
step's ``rate_achieved`` (items scanned by that process / its elapsed time); for a killed attempt
(no output), its progress lines: the running count's increase from its first line to its last over
the time between them (stamped on arrival, polled every 0.1 s). The checkpointed counts over the
engine's ``saved_at`` times are reported beside (coarse: a page per segment). The target is on the
overall rate (the attempts' items / their seconds) within 10% of ``--rate``; the per-attempt rates
are reported.

Checks against the truth: lost (truth: exists, table: missing or ``name``/``v`` differ),
resurrected (truth: deleted, table: present), stale overwrites (present with ``label`` not what
``derive(name, v)`` gives now, ``has_shape`` false). A writer operation that raised leaves its key
uncertain: counted and reported (``writer_errors``), and a target of its own.

Refusal scenario (a fresh state directory, and a fresh table on moto): a small table, and a rogue
writer that updates ``v`` with plain ``Tables`` (no rule) during the backfill: verify must find
differences, the run must end ``rolled_back`` (or ``failed``) without a cutover, and the rule must be
withdrawn. ``cutover_refused`` is true when that holds.

Targets: 0 lost, 0 resurrected, 0 stale overwrites, at most 1 page redone per segment per restart,
every kill done during backfill, overall backfill rate within 10% of ``--rate``, and no cutover in
any scenario whose verify found a difference (the refusal scenario must find one). Exit 1 if a
target fails.

Usage::

    python benchmarks/migration_drill.py [--items 20000] [--writers 4] [--kills 3] [--seed 7]
        [--provider local|dynamodb] [--rate ITEMS_PER_S] [--segments 4] [--page N]
        [--write-rate 200] [--out PATH] [--note TEXT] [--no-refusal] [--keep]

Writes ``benchmarks/results/migration_drill_<provider>.json`` (or ``--out``). The defaults take
about a minute on a 2-core machine (local: 1000 items/s). Moto's server process does about 200
writes a second in all and a ``Scan`` page costs it a pass over the whole table (~0.5 s at 50,000
items), so ``--provider dynamodb`` defaults to 75 items/s, pages of 500 and 20 writer operations a
second (about 6 minutes). On moto the backfill falls 7-10% short of its rate: its segments reach
their page ends together and no token is taken while they wait for their ``Scan`` calls (at 50,000
items: 69.6/s for 75, 88.8/s for 100).
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host_platform
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT / "src", ROOT):  # the package, and tests.moto_server
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from mangaassist.core.migrations import Rules  # noqa: E402
from mangaassist.delivery.migrations.backfill import has_shape  # noqa: E402
from mangaassist.delivery.migrations.spec import load_migration  # noqa: E402
from mangaassist.delivery.pipelines.migration import live_rules  # noqa: E402
from mangaassist.platform.factory import platform_for  # noqa: E402
from mangaassist.platform.tables import ShapedTables, Tables  # noqa: E402

MANGAASSIST = Path(sys.executable).with_name("mangaassist")
ENV = "dev"
TABLE = "drill"
MIGRATION = "0001_drill_label"
SK = "item"
POLL_S = 0.5
"""How often the writers read the live rules (and ``MANGAASSIST_CONFIG_POLL`` of the children)."""
TABLE_TOML = """

[tables.drill]
description = "CD-07 drill: items whose label derives from name and v (benchmarks/migration_drill.py)"
attributes = { pk = "S", sk = "S" }
partition_key = "pk"
sort_key = "sk"
"""
MIGRATION_YAML = """\
description: Drill items get label, their name and v joined by '#' (benchmarks/migration_drill.py).
table: drill
kind: add_attribute
add:
  label: {{fn: join, from: [name, v], sep: "#"}}
backfill: {{rate: {rate}, segments: {segments}, page: {page}}}
rollback_window: {{dev: 0s, staging: 1h, prod: 7d}}
bake: {{dev: 0s, staging: 5m, prod: 30m}}
"""
DEFAULTS = {
    "local": {"rate": 1000.0, "page": 100},
    "dynamodb": {"rate": 75.0, "page": 500},
}
STARTED = time.monotonic()


def say(text: str) -> None:
    print(f"[drill {time.monotonic() - STARTED:7.1f}s] {text}", flush=True)


def key_of(i: int) -> str:
    return f"d{i:07d}"


def name_of(i: int, gen: int) -> str:
    return f"n{i}-{gen}"


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


# -- the temporary project ------------------------------------------------------------------------


def make_root(base: Path, rate: float, segments: int, page: int) -> Path:
    """A project root that borrows the checkout's files but has its own migrations, resources
    declaration and platform settings."""
    root = base / "root"
    root.mkdir()
    for entry in sorted(ROOT.iterdir()):
        if entry.name.startswith(".") or entry.name in ("migrations", "infra", "mangaassist.toml"):
            continue
        (root / entry.name).symlink_to(entry)
    (root / "infra").mkdir()
    for entry in sorted((ROOT / "infra").iterdir()):
        if entry.name != "resources.toml":
            (root / "infra" / entry.name).symlink_to(entry)
    (root / "infra" / "resources.toml").write_text(
        (ROOT / "infra" / "resources.toml").read_text() + TABLE_TOML
    )
    (root / "migrations").mkdir()
    (root / "migrations" / f"{MIGRATION}.yaml").write_text(
        MIGRATION_YAML.format(rate=rate, segments=segments, page=page)
    )
    shutil.copy(ROOT / "mangaassist.toml", root / "mangaassist.toml")
    return root


def use_moto(root: Path, endpoint: str) -> None:
    """The drill's environment takes its tables from DynamoDB on the moto server."""
    path = root / "mangaassist.toml"
    settings = tomllib.loads(path.read_text())["environments"][ENV]
    if "providers" in settings or "aws" in settings:
        raise SystemExit(f"{ROOT / 'mangaassist.toml'}: [environments.{ENV}] already has providers/aws")
    with path.open("a") as out:
        out.write(
            f'\n[environments.{ENV}.providers]\ntables = "aws"\n\n'
            f'[environments.{ENV}.aws]\nregion = "us-east-1"\nendpoint_url = "{endpoint}"\n'
        )
    assert tomllib.loads(path.read_text())["environments"][ENV]["providers"] == {"tables": "aws"}


class Scenario:
    """One state directory (engine state, config server, local tables) and the CLI run in it."""

    def __init__(self, name: str, base: Path, root: Path, provider: str, dynamo: Any | None) -> None:
        self.name = name
        self.root = root
        self.home = base / name
        self.home.mkdir()
        self.provider = provider
        self.dynamo = dynamo
        self.logs = base / "logs"
        self.logs.mkdir(exist_ok=True)
        self.platform = platform_for(ENV, home=self.home, config=root / "mangaassist.toml")
        self.config_url = self.platform.config_server_url()  # started here, stopped by close()
        self._tables: Tables | None = None
        self._engine: sqlite3.Connection | None = None
        self.procs: list[subprocess.Popen[bytes]] = []
        self.closed = False

    @property
    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MANGAASSIST_", "AWS_")) and k not in ("COLUMNS",)
        }
        env.update(
            MANGAASSIST_ROOT=str(self.root),
            MANGAASSIST_HOME=str(self.home),
            MANGAASSIST_PLATFORM_CONFIG=str(self.root / "mangaassist.toml"),
            MANGAASSIST_CONFIG_URL=self.config_url,
            MANGAASSIST_CONFIG_POLL=str(POLL_S),
            MANGAASSIST_ENV=ENV,
            COLUMNS="200",
        )
        if self.provider == "dynamodb":
            from tests.moto_server import CREDENTIALS  # moto's fixed test credentials

            env["AWS_ACCESS_KEY_ID"] = CREDENTIALS["aws_access_key_id"]
            env["AWS_SECRET_ACCESS_KEY"] = CREDENTIALS["aws_secret_access_key"]
            env["AWS_DEFAULT_REGION"] = CREDENTIALS["region_name"]
        return env

    def tables(self) -> Tables:
        if self._tables is None:
            if self.provider == "local":
                self._tables = self.platform.tables()
            else:
                from mangaassist.platform.aws.tables_dynamodb import DynamoTables

                self._tables = DynamoTables(self.dynamo, table_prefix=f"mangaassist-{ENV}-")
        return self._tables

    def cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(MANGAASSIST), *args],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, tag: str, *args: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
        out, err = self.logs / f"{self.name}-{tag}.out", self.logs / f"{self.name}-{tag}.err"
        proc = subprocess.Popen(
            [str(MANGAASSIST), *args],
            env=self.env,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=out.open("wb"),
            stderr=err.open("wb"),
        )
        self.procs.append(proc)
        return proc, out, err

    # the engine's state, read only (what `migrate status` and `runs show` read)
    def engine(self) -> sqlite3.Connection:
        if self._engine is None:
            path = self.home / "state.sqlite3"
            self._engine = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        return self._engine

    def steps(self, run: str) -> dict[str, str]:
        rows = self.engine().execute("SELECT name, status FROM engine_steps WHERE run_id = ?", (run,))
        return dict(rows.fetchall())

    def checkpoints(self, run: str) -> dict[int, tuple[dict[str, Any], float]]:
        rows = self.engine().execute(
            "SELECT name, value, saved_at FROM engine_checkpoints WHERE run_id = ? AND step = 'backfill'",
            (run,),
        )
        return {int(n.split("-")[1]): (json.loads(v), epoch(at)) for n, v, at in rows.fetchall()}

    def live(self) -> Rules:
        return live_rules(self.platform.config_store(self.config_url))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for proc in self.procs:  # only the processes this drill started
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        self.platform.stop_config_server()
        self.platform.close()


# -- seeding ---------------------------------------------------------------------------------------


def seed(scenario: Scenario, n: int) -> float:
    """``n`` items in the old shape; returns the seconds it took."""
    started = time.perf_counter()
    if scenario.provider == "local":
        from mangaassist.platform.local.tables import _segment_of  # the provider's own segment hash

        scenario.tables()  # the schema, WAL
        conn = sqlite3.connect(scenario.home / "tables.sqlite3", timeout=30, isolation_level=None)
        for lo in range(0, n, 20_000):
            rows = []
            for i in range(lo, min(n, lo + 20_000)):
                pk = key_of(i)
                item = {"pk": pk, "sk": SK, "name": name_of(i, 0), "v": i}
                body = json.dumps(item, separators=(",", ":"), sort_keys=True)
                rows.append((TABLE, pk, SK, _segment_of(pk), body))
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT OR REPLACE INTO items (tbl, pk, sk, seg, body) VALUES (?, ?, ?, ?, ?)", rows
            )
            conn.execute("COMMIT")
        conn.close()
    else:
        from concurrent.futures import ThreadPoolExecutor

        from mangaassist.platform.aws.tables_dynamodb import serialize_item

        physical = f"mangaassist-{ENV}-{TABLE}"
        dynamo = scenario.dynamo
        assert dynamo is not None

        def batch(lo: int) -> None:
            requests = [
                {
                    "PutRequest": {
                        "Item": serialize_item({"pk": key_of(i), "sk": SK, "name": name_of(i, 0), "v": i})
                    }
                }
                for i in range(lo, min(n, lo + 25))
            ]
            while requests:
                left = dynamo.batch_write_item(RequestItems={physical: requests})
                requests = left.get("UnprocessedItems", {}).get(physical, [])

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(batch, range(0, n, 25)))
    return time.perf_counter() - started


# -- the application: writers through the live rules ----------------------------------------------


class RulesPoller:
    """The live rules, read from the config store every ``POLL_S`` (as the chatbot polls)."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.rules = Rules()
        self.stop = threading.Event()
        self.errors = 0
        self.thread = threading.Thread(target=self._run, name="rules-poller", daemon=True)

    def _run(self) -> None:
        store = self.scenario.platform.config_store(self.scenario.config_url)
        while True:
            try:
                self.rules = live_rules(store)
            except Exception:  # the config server is a separate process: keep the last rules
                self.errors += 1
            if self.stop.wait(POLL_S):
                return

    def current(self) -> Rules:
        return self.rules

    def live(self) -> bool:
        return self.rules.get(MIGRATION) is not None

    def __enter__(self) -> RulesPoller:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


@dataclass
class Truth:
    """Per key: ``v`` (None: deleted) and the generation of its ``name``; ``dual``: written by a
    writer while the rule was live; ``uncertain``: an operation on it raised."""

    v: list[int | None]
    gen: list[int]
    dual: bytearray
    uncertain: set[int] = field(default_factory=set)

    @classmethod
    def seeded(cls, n: int) -> Truth:
        return cls(list(range(n)), [0] * n, bytearray(n))

    def want(self, i: int) -> dict[str, Any] | None:
        v = self.v[i]
        return None if v is None else {"name": name_of(i, self.gen[i]), "v": v}


class Writers:
    """``count`` threads at ``rate`` operations a second in all; writer ``w`` owns keys ``w::count``."""

    def __init__(
        self, tables: Tables, poller: RulesPoller, truth: Truth, count: int, rate: float, seed_: int
    ) -> None:
        self.tables = ShapedTables(tables, poller.current)
        self.poller = poller
        self.truth = truth
        self.count = count
        self.interval = count / rate if rate > 0 else 0.0
        self.stop = threading.Event()
        self.locks = [threading.Lock() for _ in range(count)]
        self.ops = {"put": 0, "update": 0, "delete": 0}
        self.errors: list[str] = []
        self.started = 0.0
        self.stopped = 0.0
        n = len(truth.v)
        self.threads = [
            threading.Thread(
                target=self._run, args=(w, range(w, n, count), random.Random(seed_ * 1000 + w)), daemon=True
            )
            for w in range(count)
        ]

    def _run(self, w: int, keys: range, rng: random.Random) -> None:
        truth = self.truth
        due = time.monotonic()
        while not self.stop.is_set():
            due += self.interval
            delay = due - time.monotonic()
            if delay > 0 and self.stop.wait(delay):
                return
            i = rng.choice(keys)
            roll = rng.random()
            with self.locks[w]:
                if self.poller.live():
                    truth.dual[i] = 1
                try:
                    if roll < 0.4 or (roll < 0.8 and truth.v[i] is None):
                        gen, v = truth.gen[i] + 1, rng.randrange(10**6)
                        self.tables.put(TABLE, {"pk": key_of(i), "sk": SK, "name": name_of(i, gen), "v": v})
                        truth.gen[i], truth.v[i] = gen, v
                        self.ops["put"] += 1
                    elif roll < 0.8:
                        v = rng.randrange(10**6)
                        self.tables.update(TABLE, key_of(i), SK, set={"v": v})
                        truth.v[i] = v
                        self.ops["update"] += 1
                    else:
                        self.tables.delete(TABLE, key_of(i), SK)
                        truth.v[i] = None
                        self.ops["delete"] += 1
                except Exception as exc:  # the outcome is unknown: the key leaves the comparison
                    truth.uncertain.add(i)
                    self.errors.append(f"{key_of(i)}: {type(exc).__name__}: {exc}"[:300])
                if self.poller.live():
                    truth.dual[i] = 1

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No writer operation in flight while the drill looks at the table."""
        for lock in self.locks:
            lock.acquire()
        try:
            yield
        finally:
            for lock in reversed(self.locks):
                lock.release()

    def __enter__(self) -> Writers:
        self.started = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def halt(self) -> None:
        if not self.stop.is_set():
            self.stop.set()
            for t in self.threads:
                t.join()
            self.stopped = time.monotonic()

    def __exit__(self, *_: object) -> None:
        self.halt()

    def summary(self) -> dict[str, Any]:
        total = sum(self.ops.values())
        seconds = (self.stopped or time.monotonic()) - self.started
        return {
            "threads": self.count,
            "ops": dict(self.ops),
            "total": total,
            "seconds": round(seconds, 1),
            "rate_achieved": round(total / seconds, 1) if seconds > 0 else 0.0,
            "errors": len(self.errors),
            "error_sample": self.errors[:5],
        }


# -- the run, killed and resumed ------------------------------------------------------------------


PROGRESS = re.compile(r"backfill: progress (\d+) items scanned")


@dataclass
class Attempt:
    """One process driving the run, as the drill sees it: the backfill's progress lines on its
    stderr (the process's own running count, every 0.5 s; stamped with the drill's clock as they
    arrive) and the checkpoints it saved (engine time, items checkpointed)."""

    tag: str
    err: Path
    since: float = field(default_factory=time.time)
    """When its process started: checkpoints saved before are an earlier attempt's."""
    lines: list[tuple[float, int]] = field(default_factory=list)
    samples: list[tuple[float, int]] = field(default_factory=list)
    _offset: int = 0
    _partial: str = ""

    def observe(self, cps: dict[int, tuple[dict[str, Any], float]]) -> None:
        with self.err.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        self._offset += len(chunk)
        text = self._partial + chunk.decode(errors="replace")
        *complete, self._partial = text.split("\n")
        now = time.monotonic()
        for line in complete:
            found = PROGRESS.search(line)
            if found:
                self.lines.append((now, int(found.group(1))))
        if not cps:
            return
        at = max(t for _, t in cps.values())
        if at < self.since:
            return
        scanned = sum(int(v["scanned"]) for v, _ in cps.values())
        if not self.samples or at > self.samples[-1][0]:
            self.samples.append((at, scanned))

    @property
    def running_count(self) -> int:
        return self.lines[-1][1] if self.lines else 0

    def rate(self) -> dict[str, Any]:
        """Items a second from the progress lines (first to last) and from the checkpoints."""
        out: dict[str, Any] = {"attempt": self.tag}
        if len(self.lines) >= 2:
            items, seconds = self.lines[-1][1] - self.lines[0][1], self.lines[-1][0] - self.lines[0][0]
            out.update(items=items, window_s=round(seconds, 2), source="progress lines")
            out["rate_achieved"] = round(items / seconds, 1) if seconds > 0 else None
        else:
            out.update(items=0, window_s=0.0, rate_achieved=None, source="progress lines")
        if len(self.samples) >= 2:
            items, seconds = (
                self.samples[-1][1] - self.samples[0][1],
                self.samples[-1][0] - self.samples[0][0],
            )
            out["checkpoint_window"] = {
                "items": items,
                "seconds": round(seconds, 2),
                "rate": round(items / seconds, 1) if seconds > 0 else None,
            }
        return out


def run_id_of(err: Path, deadline: float) -> str:
    while time.monotonic() < deadline:
        found = re.search(r"run (run-[0-9a-f]+) started", err.read_text(errors="replace"))
        if found:
            return found.group(1)
        time.sleep(0.05)
    raise RuntimeError(f"no run id announced in {err}:\n{err.read_text(errors='replace')[-2000:]}")


def pages_redone(
    scenario: Scenario,
    rule: Any,
    truth: Truth,
    segment: int,
    segments: int,
    checkpoint: dict[str, Any] | None,
    page: int,
    look: int = 2,
) -> dict[str, Any]:
    """Witnesses of the killed attempt's uncheckpointed work in ``segment`` (module docstring)."""
    if checkpoint is not None and checkpoint.get("done"):
        return {"segment": segment, "done": True, "pages_redone": 0, "witnesses": 0}
    start = checkpoint.get("next") if checkpoint else None
    tables = scenario.tables()
    last_page, witnesses = 0, 0
    for index in range(1, look + 1):
        got = tables.scan_page(TABLE, segment=segment, total_segments=segments, start=start, limit=page)
        for item in got.items:
            i = int(item["pk"][1:])
            if "label" in item and has_shape(rule, item) and not truth.dual[i]:
                witnesses += 1
                last_page = index
        if got.next is None:
            break
        start = got.next
    return {
        "segment": segment,
        "checkpoint_pages": int(checkpoint["pages"]) if checkpoint else 0,
        "checkpoint_scanned": int(checkpoint["scanned"]) if checkpoint else 0,
        "pages_redone": last_page,
        "witnesses": witnesses,
    }


def drive(
    scenario: Scenario,
    args: argparse.Namespace,
    truth: Truth,
    writers: Writers,
    rule: Any,
    rng: random.Random,
) -> dict[str, Any]:
    """``migrate apply`` killed ``--kills`` times during the backfill and resumed each time."""
    n = args.items
    apply_args = ["migrate", "apply", "1", "--env", ENV, "--bake", "0", "--json"]
    apply_args += ["--rate", f"{args.rate:g}", "--segments", str(args.segments)]
    started = time.monotonic()
    proc, _, err = scenario.start("apply", *apply_args)
    attempts = [Attempt("apply", err)]
    run = run_id_of(err, time.monotonic() + 120)
    say(f"run {run} started (pid {proc.pid})")
    fractions = [0.05 + 0.85 * (k + rng.uniform(0.15, 0.85)) / args.kills for k in range(args.kills)]
    bound = args.segments * args.page  # items a kill may lose: one page in flight per segment
    kills: list[dict[str, Any]] = []
    floors: dict[int, int] = {}  # segment -> pages its checkpoint had at the last kill
    regressions: list[dict[str, Any]] = []

    def look() -> tuple[dict[str, str], dict[int, tuple[dict[str, Any], float]]]:
        steps, cps = scenario.steps(run), scenario.checkpoints(run)
        attempts[-1].observe(cps)
        for s, (value, _) in cps.items():
            if int(value["pages"]) < floors.get(s, 0):
                regressions.append({"attempt": attempts[-1].tag, "segment": s, "checkpoint": value})
        return steps, cps

    for k, fraction in enumerate(fractions, start=1):
        while proc.poll() is None:
            steps, cps = look()
            scanned = max(sum(int(v["scanned"]) for v, _ in cps.values()), attempts[-1].running_count)
            if steps.get("backfill") == "running" and scanned >= fraction * n:
                break
            time.sleep(0.1)
        if proc.poll() is not None:
            say(f"the run's process ended before kill {k} (exit {proc.returncode})")
            break
        # the progress lines come every 0.5 s: any moment after, but before the backfill's end
        time.sleep(rng.uniform(0.0, min(0.5, 0.05 * n / args.rate)))
        steps, _ = look()
        if steps.get("backfill") != "running":
            say(f"kill {k}: the run left the backfill (steps: {steps}); not killed")
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed = time.monotonic()
        _, cps = look()
        with writers.paused():
            segments = [
                pages_redone(
                    scenario, rule, truth, s, args.segments, cps[s][0] if s in cps else None, args.page
                )
                for s in range(args.segments)
            ]
        floors = {s: int(v["pages"]) for s, (v, _) in cps.items()}
        checkpointed = sum(int(v["scanned"]) for v, _ in cps.values())
        last_line = attempts[-1].running_count
        record = {
            "kill": k,
            "at_s": round(killed - started, 2),
            "step": "backfill",
            "checkpointed_items": checkpointed,
            "checkpointed_fraction": round(checkpointed / n, 3),
            "segments": segments,
            "max_pages_redone": max(s["pages_redone"] for s in segments),
            "witnesses": sum(s["witnesses"] for s in segments),
            # the killed process's last running count minus what its checkpoints kept: a lower
            # bound of the items it processed that the resumed run reads again (<= one page per
            # segment by design)
            "last_progress_line_items": last_line,
            "uncheckpointed_items_lower_bound": max(0, last_line - checkpointed),
            "uncheckpointed_bound": bound,
        }
        kills.append(record)
        say(
            f"kill {k}: SIGKILL at {record['at_s']}s in backfill, {checkpointed} items checkpointed; "
            f"pages redone per segment {[s['pages_redone'] for s in segments]}"
        )
        proc, _, err = scenario.start(f"resume-{k}", "migrate", "resume", run, "--json")
        attempts.append(Attempt(f"resume-{k}", err))
        record["resumed_pid"] = proc.pid
    deadline = time.monotonic() + args.timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"the run did not finish within {args.timeout:g}s; see {err}")
        look()
        time.sleep(0.2)
    look()
    finished = time.monotonic()
    final_rc = proc.returncode
    shown = scenario.cli("runs", "show", run, "--json")
    record_of_run = json.loads(shown.stdout) if shown.returncode == 0 else {}
    timeline = {s["name"]: s for s in record_of_run.get("timeline", [])}
    backfill_out = (timeline.get("backfill") or {}).get("output") or {}
    verify_step = timeline.get("verify") or {}
    rates = [a.rate() for a in attempts[:-1]]
    final_seconds = float(backfill_out.get("elapsed_s") or 0.0)
    final = attempts[-1].rate()
    final.update(
        items=round(float(backfill_out.get("rate_achieved") or 0.0) * final_seconds),
        window_s=final_seconds,
        rate_achieved=backfill_out.get("rate_achieved"),
        source="backfill step output",
    )
    rates.append(final)
    items_total = sum(r["items"] for r in rates if r["rate_achieved"] is not None)
    seconds_total = sum(r["window_s"] for r in rates if r["rate_achieved"] is not None)
    return {
        "run": run,
        "exit_code": final_rc,
        "state": record_of_run.get("state"),
        "reason": record_of_run.get("reason"),
        "wall_s": round(finished - started, 1),
        "steps": {name: s.get("status") for name, s in timeline.items()},
        "kills": kills,
        "kills_done": len(kills),
        "checkpoint_regressions": regressions,
        "backfill": {k: v for k, v in backfill_out.items() if k != "segments"},
        "verify_step": (verify_step.get("output") or verify_step.get("detail") or {}),
        "rates": rates,
        "rate_overall": round(items_total / seconds_total, 1) if seconds_total > 0 else 0.0,
        "items_per_wall_s": round(n / (finished - started), 1),
    }


def table_items(scenario: Scenario, segments: int) -> Iterator[dict[str, Any]]:
    """Every item of the drill table now (local: the SQLite rows read directly, in one pass)."""
    if scenario.provider == "local":
        conn = sqlite3.connect(f"file:{scenario.home / 'tables.sqlite3'}?mode=ro", uri=True, timeout=30)
        try:
            for (body,) in conn.execute("SELECT body FROM items WHERE tbl = ?", (TABLE,)):
                yield json.loads(body)
        finally:
            conn.close()
    else:
        for s in range(segments):
            yield from scenario.tables().scan(TABLE, segment=s, total_segments=segments)


def compare(scenario: Scenario, truth: Truth, rule: Any, segments: int) -> dict[str, Any]:
    """The table against the truth: lost, resurrected, stale overwrites."""
    n = len(truth.v)
    seen = bytearray(n)
    lost, resurrected, stale, unexpected = [], [], [], []
    count = 0
    for item in table_items(scenario, segments):
        count += 1
        i = int(item["pk"][1:])
        if not 0 <= i < n or item.get("sk") != SK or seen[i]:
            unexpected.append(f"{item['pk']}/{item.get('sk')}")
            continue
        seen[i] = 1
        if i in truth.uncertain:
            continue
        want = truth.want(i)
        if want is None:
            resurrected.append(key_of(i))
        elif item.get("name") != want["name"] or item.get("v") != want["v"]:
            lost.append(key_of(i))  # an older value than the last write: the write was lost
        elif not has_shape(rule, item):
            stale.append(key_of(i))
    lost += [
        key_of(i) for i in range(n) if not seen[i] and truth.v[i] is not None and i not in truth.uncertain
    ]
    return {
        "items_in_table": count,
        "items_expected": sum(1 for v in truth.v if v is not None),
        "lost": len(lost),
        "resurrected": len(resurrected),
        "stale_overwrites": len(stale),
        "unexpected_items": len(unexpected),
        "uncertain_keys": len(truth.uncertain),
        "samples": {
            "lost": lost[:5],
            "resurrected": resurrected[:5],
            "stale": stale[:5],
            "unexpected": unexpected[:5],
        },
    }


# -- the refusal scenario --------------------------------------------------------------------------


def refusal(scenario: Scenario, args: argparse.Namespace, rule: Any, rng: random.Random) -> dict[str, Any]:
    """A writer without the rule during the backfill: verify must refuse the cutover."""
    n = min(args.items, 1000)
    rate = min(args.rate, max(50.0, n / 2))
    seed(scenario, n)
    tables = scenario.tables()
    proc, _, err = scenario.start(
        "apply", "migrate", "apply", "1", "--env", ENV, "--bake", "0", "--json", "--rate", f"{rate:g}"
    )
    run = run_id_of(err, time.monotonic() + 120)
    say(f"refusal: run {run} on {n} items at {rate:g}/s; a rogue writer updates v without the rule")
    rogue = 0
    deadline = time.monotonic() + args.timeout
    while proc.poll() is None and time.monotonic() < deadline:
        step = scenario.steps(run).get("backfill")
        if step == "running":
            i = rng.randrange(n)
            try:
                tables.update(TABLE, key_of(i), SK, set={"v": rng.randrange(10**6)})
                rogue += 1
            except Exception as exc:
                say(f"refusal: rogue write failed: {exc}")
            time.sleep(0.02)
        elif step in ("done", "failed"):
            break
        else:
            time.sleep(0.05)
    try:
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the refusal run did not finish; see {err}") from None
    shown = scenario.cli("runs", "show", run, "--json")
    record = json.loads(shown.stdout) if shown.returncode == 0 else {}
    timeline = {s["name"]: s for s in record.get("timeline", [])}
    verify_step = timeline.get("verify") or {}
    differences = int(((verify_step.get("detail") or {}).get("numbers") or {}).get("differences", 0) or 0)
    if not differences:
        differences = int((verify_step.get("detail") or {}).get("differences", 0) or 0)
    cutover_status = (timeline.get("cutover") or {}).get("status")
    live = scenario.live().get(MIGRATION)
    refused = (
        differences > 0
        and verify_step.get("status") == "failed"
        and cutover_status != "done"
        and record.get("state") in ("rolled_back", "failed")
        and (live is None or live.phase == "expand")
    )
    result = {
        "items": n,
        "rate": rate,
        "run": run,
        "exit_code": proc.returncode,
        "state": record.get("state"),
        "reason": record.get("reason"),
        "rogue_writes": rogue,
        "verify_status": verify_step.get("status"),
        "verify_differences": differences,
        "cutover_status": cutover_status,
        "rule_after": None if live is None else live.phase,
        "cutover_refused": refused,
    }
    say(
        f"refusal: verify found {differences} differences after {rogue} rogue writes; "
        f"run {record.get('state')}, cutover {cutover_status}, rule after: {result['rule_after']}"
    )
    return result


# -- main ----------------------------------------------------------------------------------------------


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=20_000, help="items seeded (default 20000)")
    parser.add_argument("--writers", type=int, default=4, help="writer threads (default 4)")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs during the backfill (default 3)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--provider", choices=("local", "dynamodb"), default="local")
    parser.add_argument("--rate", type=float, help="backfill items a second (local 1000, dynamodb 75)")
    parser.add_argument("--segments", type=int, default=4, help="parallel scan segments (default 4)")
    parser.add_argument("--page", type=int, help="backfill page size (local 100, dynamodb 500)")
    parser.add_argument(
        "--write-rate", type=float, help="writer operations a second in all (local 200, dynamodb 20)"
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds a run may take (default 3600)")
    parser.add_argument(
        "--out", type=Path, help="report path (default benchmarks/results/migration_drill_PROVIDER.json)"
    )
    parser.add_argument("--note", help="a note for the report")
    parser.add_argument("--no-refusal", action="store_true", help="skip the refusal scenario")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    defaults = DEFAULTS[args.provider]
    args.rate = args.rate or defaults["rate"]
    args.page = args.page or defaults["page"]
    if args.write_rate is None:
        args.write_rate = 200.0 if args.provider == "local" else 20.0
    if args.items < 100 or args.writers < 1 or args.kills < 0 or args.rate <= 0:
        parser.error("--items >= 100, --writers >= 1, --kills >= 0, --rate > 0")
    if not 1 <= args.segments <= 64 or not 1 <= args.page <= 1000:
        parser.error("--segments 1..64, --page 1..1000")
    args.out = args.out or ROOT / "benchmarks" / "results" / f"migration_drill_{args.provider}.json"
    return args


def command_line() -> str:
    """How the drill was started (a ``--note``'s text is in the report's ``note``)."""
    words, skip = [Path(sys.argv[0]).name], False
    for word in sys.argv[1:]:
        if skip:
            words.append("TEXT")
        elif not word.startswith("--note="):
            words.append(word)
        skip = word == "--note"
    return " ".join(words)


def main() -> int:
    args = parse()
    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="migration-drill-"))
    say(
        f"{args.provider}: {args.items} items, {args.writers} writers at {args.write_rate:g} ops/s, "
        f"{args.kills} kills, backfill {args.rate:g} items/s in {args.segments} segments of pages of "
        f"{args.page}; working in {base}"
    )
    report: dict[str, Any] = {
        "benchmark": "migration_drill",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": host_platform.python_version(),
            "system": f"{host_platform.system()} {host_platform.release()}",
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "params": {
            "provider": args.provider,
            "items": args.items,
            "writers": args.writers,
            "write_rate": args.write_rate,
            "kills": args.kills,
            "seed": args.seed,
            "rate": args.rate,
            "segments": args.segments,
            "page": args.page,
        },
        "command": command_line(),
    }
    if args.note:
        report["note"] = args.note
    try:
        drill(args, report, rng, base)
    except Exception as exc:  # the report says what broke; no target passes
        report["error"] = f"{type(exc).__name__}: {exc}"
        report["traceback"] = traceback.format_exc()
        say(f"the drill broke: {report['error']}")
    report["targets"] = targets(report, args) if "error" not in report else {}
    report["passed"] = bool(report["targets"]) and all(t["pass"] for t in report["targets"].values())
    report["total_s"] = round(time.monotonic() - STARTED, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, t in report["targets"].items():
        say(f"target {name}: {'pass' if t['pass'] else 'FAIL'} ({t['value']} vs {t['target']})")
    say(f"{'all targets met' if report['passed'] else 'TARGETS FAILED'}; report in {args.out}")
    return 0 if report["passed"] else 1


def drill(args: argparse.Namespace, report: dict[str, Any], rng: random.Random, base: Path) -> None:
    """Both scenarios; what they measure goes into ``report``."""
    with ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, base, ignore_errors=True)
        root = make_root(base, args.rate, args.segments, args.page)
        rule = load_migration(root / "migrations" / f"{MIGRATION}.yaml", _declaration(root)).rule("expand")
        dynamo = None
        if args.provider == "dynamodb":
            from tests.moto_server import client, create_table, moto_server

            endpoint = stack.enter_context(moto_server())
            dynamo = client(endpoint)
            stack.callback(dynamo.close)
            use_moto(root, endpoint)
            report["moto_endpoint"] = endpoint

        def fresh_table() -> None:
            if dynamo is None:
                return
            physical = f"mangaassist-{ENV}-{TABLE}"
            if physical in dynamo.list_tables()["TableNames"]:
                dynamo.delete_table(TableName=physical)
                dynamo.get_waiter("table_not_exists").wait(TableName=physical)
            create_table(
                dynamo,
                physical,
                {"attributes": {"pk": "S", "sk": "S"}, "partition_key": "pk", "sort_key": "sk"},
            )

        main_scenario = Scenario("main", base, root, args.provider, dynamo)
        stack.callback(main_scenario.close)
        fresh_table()
        seconds = seed(main_scenario, args.items)
        say(f"seeded {args.items} items in {seconds:.1f}s")
        report["seed_s"] = round(seconds, 1)
        truth = Truth.seeded(args.items)
        with (
            RulesPoller(main_scenario) as poller,
            Writers(
                main_scenario.tables(), poller, truth, args.writers, args.write_rate, args.seed
            ) as writers,
        ):
            run = drive(main_scenario, args, truth, writers, rule, rng)
            writers.halt()
            report["writers"] = writers.summary()
            report["rules_poll_errors"] = poller.errors
        say(
            f"run {run['run']} {run['state']} (exit {run['exit_code']}) in {run['wall_s']}s; "
            f"backfill rate overall {run['rate_overall']} items/s (requested {args.rate:g})"
        )
        report["run"] = run
        verified = main_scenario.cli("migrate", "verify", "1", "--env", ENV, "--json")
        verify_doc = json.loads(verified.stdout) if verified.stdout.strip() else {}
        report["verify"] = {
            "exit_code": verified.returncode,
            "checked": verify_doc.get("checked"),
            "differences": verify_doc.get("differences"),
            "sample": verify_doc.get("sample", [])[:3],
        }
        say(
            f"migrate verify: {verify_doc.get('checked')} checked, "
            f"{verify_doc.get('differences')} differences"
        )
        report["truth"] = compare(main_scenario, truth, rule, args.segments)
        t = report["truth"]
        say(
            f"against the truth: {t['lost']} lost, {t['resurrected']} resurrected, "
            f"{t['stale_overwrites']} stale, {t['uncertain_keys']} uncertain; "
            f"{t['items_in_table']} items in the table, {t['items_expected']} expected"
        )
        main_scenario.close()
        if not args.no_refusal:
            refuse_scenario = Scenario("refusal", base, root, args.provider, dynamo)
            stack.callback(refuse_scenario.close)
            fresh_table()
            report["refusal"] = refusal(refuse_scenario, args, rule, rng)
            refuse_scenario.close()


def _declaration(root: Path) -> Any:
    from mangaassist.core.resources import load_declaration

    return load_declaration(root / "infra" / "resources.toml")


def targets(report: dict[str, Any], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Each target: its value, what it must be, and whether it passed."""
    run, truth = report["run"], report["truth"]
    redone = max((k["max_pages_redone"] for k in run["kills"]), default=0)
    inflight_ok = all(
        k["uncheckpointed_items_lower_bound"] <= k["uncheckpointed_bound"] for k in run["kills"]
    )
    rate = run["rate_overall"]
    step_diff = int(run["verify_step"].get("differences", 0) or 0)
    main_cut = run["steps"].get("cutover") == "done"
    refusal_doc = report.get("refusal")
    refused = refusal_doc is None or bool(refusal_doc["cutover_refused"])
    checks = {
        "run_succeeded": (
            run["state"],
            "succeeded, and migrate verify finds 0 differences",
            run["state"] == "succeeded" and report["verify"]["differences"] == 0,
        ),
        "lost": (truth["lost"], 0, truth["lost"] == 0 and truth["unexpected_items"] == 0),
        "resurrected": (truth["resurrected"], 0, truth["resurrected"] == 0),
        "stale_overwrites": (truth["stale_overwrites"], 0, truth["stale_overwrites"] == 0),
        "writer_errors": (report["writers"]["errors"], 0, report["writers"]["errors"] == 0),
        "kills_in_backfill": (run["kills_done"], args.kills, run["kills_done"] == args.kills),
        "max_pages_redone_per_segment_per_restart": (
            redone,
            "<= 1 (and no checkpoint regression, uncheckpointed items <= a page per segment)",
            redone <= 1 and not run["checkpoint_regressions"] and inflight_ok,
        ),
        "backfill_rate_within_10pct": (
            rate,
            f"{args.rate:g} +/- 10%",
            abs(rate - args.rate) <= 0.1 * args.rate,
        ),
        "cutover_refused_when_verify_differs": (
            {
                "main": {"verify_differences": step_diff, "cutover": main_cut},
                "refusal": None
                if refusal_doc is None
                else {
                    "verify_differences": refusal_doc["verify_differences"],
                    "cutover_refused": refusal_doc["cutover_refused"],
                },
            },
            "no cutover whenever verify's differences > 0 (the refusal scenario must find some)",
            (step_diff == 0 or not main_cut) and refused,
        ),
    }
    return {name: {"value": v, "target": t, "pass": bool(ok)} for name, (v, t, ok) in checks.items()}


if __name__ == "__main__":
    raise SystemExit(main())
