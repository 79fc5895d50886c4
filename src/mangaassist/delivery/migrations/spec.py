"""Migration files (``migrations/NNNN_name.yaml``): loaded, validated against CD-02's declaration of
the tables (``infra/resources.toml``), and compiled to the ``core.migrations.Rule`` writers follow.

A file says what changes in one table, declaratively::

    description: Orders get status_updated_at, the epoch seconds of their last status change
    table: orders
    kind: add_attribute            # add_attribute | add_index | add_ttl | rename_attribute | split_attribute
    add:
      status_updated_at: {fn: epoch, from: placed_at}
    backfill: {rate: 200, segments: 4, page: 100}   # items/s (required), parallel segments, page size
    rollback_window: {dev: 0s, staging: 1h, prod: 7d}
    bake: {dev: 5s, staging: 5m, prod: 30m}

Kinds:

* ``add_attribute``: ``add`` derives one or more new attributes from each item's others.
* ``add_index``: ``index`` names a global secondary index of the table that ``infra/resources.toml``
  declares (CD-02 provisions it); ``add`` derives the key attributes its items need. Reads switch to
  the index at cutover.
* ``add_ttl``: ``add`` derives exactly the table's declared ``ttl_attribute``.
* ``rename_attribute``: ``rename: {from: OLD, to: NEW}``; the contract removes ``OLD``.
* ``split_attribute``: ``split: {from: OLD, into: {NEW: {fn: ...}, ...}}`` (each transform reads
  ``OLD``); the contract removes ``OLD``.
* ``change_key``: ``to: NEW_TABLE`` (declared, keyed by pk and sk) and ``key: {pk: {fn: ...}, sk:
  {fn: ...}}``: every item is copied to the new table under keys derived from it (writers write
  both, in one transaction); readers switch to the new table at cutover (``Rules.moved_to``); the
  old table keeps its items for the rollback window, and the contract deletes them.

A contract that removes attributes is irreversible: the file must say ``contract: {irreversible:
true}``, and that contract then waits for at least one recorded approval in every environment.

Every problem is reported with the file and line (``Problem``), all of them at once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mangaassist.core.errors import ConfigError
from mangaassist.core.migrations import TRANSFORMS, Derive, Move, Rule
from mangaassist.core.resources import Declaration, Table
from mangaassist.delivery.config_profiles import Document, Problem, load_document
from mangaassist.delivery.monitoring.slo import parse_duration

KINDS = ("add_attribute", "add_index", "add_ttl", "rename_attribute", "split_attribute", "change_key")
NOT_BUILT: dict[str, str] = {}
FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.yaml$")
ATTRIBUTE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENVIRONMENTS = ("dev", "staging", "prod")
DEFAULT_WINDOW = {"dev": 0, "staging": 3600, "prod": 7 * 86400}
DEFAULT_BAKE = {"dev": 5, "staging": 300, "prod": 1800}
TOP = {
    "description",
    "table",
    "kind",
    "add",
    "index",
    "rename",
    "split",
    "backfill",
    "rollback_window",
    "bake",
    "contract",
    "to",
    "key",
}


class MigrationError(ConfigError):
    """A migration file with problems; ``problems`` lists each with its file and line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class Backfill:
    rate: float
    """Items a second, at most, across all segments (the token bucket's rate)."""
    segments: int = 4
    page: int = 100


@dataclass(frozen=True)
class Migration:
    """One validated migration file."""

    id: str
    """The file's stem: ``0001_orders_status_updated_at``."""
    number: int
    path: Path
    digest: str
    """SHA-256 of the file's bytes: a run refuses to resume if it changed."""
    description: str
    table: str
    kind: str
    adds: tuple[tuple[str, Derive], ...]
    removes: tuple[str, ...]
    index: str | None
    backfill: Backfill
    rollback_window_s: dict[str, float] = field(default_factory=dict)
    bake_s: dict[str, float] = field(default_factory=dict)
    irreversible: bool = False
    move: Move | None = None
    """``change_key``: the new table and how each item's new keys derive from it."""

    def rule(self, phase: str, cut_over_at: float | None = None) -> Rule:
        return Rule(self.id, self.table, phase, self.adds, self.removes, self.index, cut_over_at, self.move)

    @property
    def added(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.adds)

    @property
    def sources(self) -> tuple[str, ...]:
        return self.rule("expand").sources

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "table": self.table,
            "kind": self.kind,
            "description": self.description,
            "adds": {n: d.as_dict() for n, d in self.adds},
            "removes": list(self.removes),
            "index": self.index,
            "backfill": {
                "rate": self.backfill.rate,
                "segments": self.backfill.segments,
                "page": self.backfill.page,
            },
            "rollback_window_s": self.rollback_window_s,
            "bake_s": self.bake_s,
            "irreversible": self.irreversible,
            "move": self.move.as_dict() if self.move else None,
            "digest": self.digest,
        }


def _seconds(doc: Document, where: tuple[Any, ...], raw: Any, problems: list[Problem]) -> float | None:
    if isinstance(raw, int | float) and not isinstance(raw, bool) and raw >= 0:
        return float(raw)
    if isinstance(raw, str):
        if raw.strip() in ("0", "0s"):
            return 0.0
        try:
            return float(parse_duration(raw))
        except ValueError as exc:
            problems.append(doc.problem(where, str(exc)))
            return None
    problems.append(doc.problem(where, f"{raw!r} is not a duration (5s, 1h, 7d) or a number of seconds"))
    return None


def _per_env(doc: Document, key: str, default: dict[str, float], problems: list[Problem]) -> dict[str, float]:
    raw = doc.data.get(key)
    if raw is None:
        return dict(default)
    if not isinstance(raw, Mapping):
        problems.append(
            doc.problem((key,), "expected a mapping of environment to duration (dev: 0s, prod: 7d)")
        )
        return dict(default)
    out = dict(default)
    for env, value in raw.items():
        if env not in ENVIRONMENTS:
            problems.append(
                doc.problem((key, env), f"unknown environment {env!r} (expected {', '.join(ENVIRONMENTS)})")
            )
            continue
        seconds = _seconds(doc, (key, env), value, problems)
        if seconds is not None:
            out[env] = seconds
    return out


def _derive(
    doc: Document, where: tuple[Any, ...], raw: Any, problems: list[Problem], default_from: str | None = None
) -> Derive | None:
    if not isinstance(raw, Mapping):
        problems.append(doc.problem(where, "expected {fn: NAME, from: ATTRIBUTE(S), ...parameters}"))
        return None
    fn = raw.get("fn")
    transform = TRANSFORMS.get(str(fn))
    if transform is None:
        problems.append(
            doc.problem((*where, "fn"), f"unknown transform {fn!r} (known: {', '.join(sorted(TRANSFORMS))})")
        )
        return None
    if raw.get("from") is None and default_from is not None:
        raw = {**raw, "from": default_from}
    derive = Derive.from_dict(raw)
    if not derive.sources:
        problems.append(doc.problem(where, f"{fn}: name the source attribute(s) in 'from'"))
    elif transform.sources is not None and len(derive.sources) != transform.sources:
        problems.append(
            doc.problem(
                (*where, "from"),
                f"{fn} takes {transform.sources} source attribute(s), got {len(derive.sources)}",
            )
        )
    for name in derive.sources:
        if not ATTRIBUTE.match(name):
            problems.append(doc.problem((*where, "from"), f"{name!r} is not an attribute name"))
    params = dict(derive.params)
    for needed in transform.params:
        if needed not in params:
            problems.append(doc.problem(where, f"{fn} needs the parameter {needed!r}"))
    if fn == "add_seconds" and "seconds" in params and not isinstance(params["seconds"], int | float):
        problems.append(doc.problem((*where, "seconds"), "seconds must be a number"))
    return derive


def load_migration(path: Path, declaration: Declaration) -> Migration:
    """Load and validate one file; ``MigrationError`` lists every problem with its line."""
    problems: list[Problem] = []
    doc = load_document(path)
    match = FILENAME.match(path.name)
    if match is None:
        problems.append(
            Problem(
                str(path), 1, "", "a migration file is named NNNN_name.yaml (four digits, lower-case name)"
            )
        )
    if not isinstance(doc.data, Mapping):
        raise MigrationError([*problems, doc.problem((), "expected a mapping at the top level")])
    data: Mapping[str, Any] = doc.data
    for key in data:
        if key not in TOP:
            problems.append(doc.problem((key,), f"unknown field {key!r} (fields: {', '.join(sorted(TOP))})"))
    kind = data.get("kind")
    if kind in NOT_BUILT:
        problems.append(doc.problem(("kind",), NOT_BUILT[str(kind)]))
    elif kind not in KINDS:
        problems.append(doc.problem(("kind",), f"kind {kind!r}: expected one of {', '.join(KINDS)}"))
    description = data.get("description")
    if not isinstance(description, str) or not description.strip():
        problems.append(doc.problem(("description",), "say what the migration changes and why (description)"))
    table_name = data.get("table")
    table: Table | None = declaration.tables.get(str(table_name)) if table_name is not None else None
    if table is None:
        problems.append(
            doc.problem(
                ("table",),
                f"table {table_name!r} is not declared in infra/resources.toml "
                f"(declared: {', '.join(sorted(declaration.tables)) or 'none'})",
            )
        )
    keys = {"pk", "sk"}
    if table is not None:
        keys = {table.partition_key, *([table.sort_key] if table.sort_key else [])}

    adds: dict[str, Derive] = {}
    removes: list[str] = []
    raw_add = data.get("add")
    if kind in ("add_attribute", "add_index", "add_ttl"):
        if not isinstance(raw_add, Mapping) or not raw_add:
            problems.append(
                doc.problem(("add",), "name the attribute(s) to add: {NAME: {fn: ..., from: ...}}")
            )
        else:
            for name, raw in raw_add.items():
                derive = _derive(doc, ("add", name), raw, problems)
                if derive is not None:
                    adds[str(name)] = derive
    elif raw_add is not None:
        problems.append(doc.problem(("add",), f"'add' is not a field of kind {kind}"))
    if kind == "rename_attribute":
        rename = data.get("rename")
        if not isinstance(rename, Mapping) or not rename.get("from") or not rename.get("to"):
            problems.append(doc.problem(("rename",), "expected rename: {from: OLD, to: NEW}"))
        else:
            adds[str(rename["to"])] = Derive("copy", (str(rename["from"]),))
            removes.append(str(rename["from"]))
    if kind == "split_attribute":
        split = data.get("split")
        if (
            not isinstance(split, Mapping)
            or not split.get("from")
            or not isinstance(split.get("into"), Mapping)
        ):
            problems.append(
                doc.problem(("split",), "expected split: {from: OLD, into: {NEW: {fn: ...}, ...}}")
            )
        else:
            for name, raw in split["into"].items():
                derive = _derive(doc, ("split", "into", name), raw, problems, default_from=str(split["from"]))
                if derive is not None:
                    adds[str(name)] = derive
            removes.append(str(split["from"]))
    for name in adds:
        where = (
            ("add", name) if kind in ("add_attribute", "add_index", "add_ttl") else (str(kind).split("_")[0],)
        )
        if not ATTRIBUTE.match(name):
            problems.append(
                doc.problem(where, f"{name!r}: an attribute name is letters, digits and underscores")
            )
        if name in keys:
            problems.append(
                doc.problem(where, f"{name!r} is a key of table {table_name}: keys never change in place")
            )
        if any(name in d.sources for d in adds.values()):
            problems.append(
                doc.problem(where, f"{name!r} is derived from itself or from another added attribute")
            )
    for name in removes:
        if name in keys or (table is not None and name in table.attributes):
            problems.append(
                doc.problem((str(kind).split("_")[0],), f"{name!r} is a key attribute: it cannot be removed")
            )

    move: Move | None = None
    if kind == "change_key":
        target = data.get("to")
        declared_to = declaration.tables.get(str(target)) if target is not None else None
        if declared_to is None or target == table_name:
            problems.append(
                doc.problem(
                    ("to",),
                    f"to {target!r}: the new table, declared in infra/resources.toml and not {table_name!r} "
                    f"(declared: {', '.join(sorted(declaration.tables)) or 'none'})",
                )
            )
        elif (declared_to.partition_key, declared_to.sort_key) != ("pk", "sk"):
            problems.append(
                doc.problem(("to",), f"table {target!r} must be keyed by pk and sk, as every table here")
            )
        raw_key = data.get("key")
        if not isinstance(raw_key, Mapping) or set(raw_key) != {"pk", "sk"}:
            problems.append(
                doc.problem(("key",), "expected key: {pk: {fn: ..., from: ...}, sk: {fn: ..., from: ...}}")
            )
        else:
            pk = _derive(doc, ("key", "pk"), raw_key["pk"], problems)
            sk = _derive(doc, ("key", "sk"), raw_key["sk"], problems)
            if pk is not None and sk is not None and declared_to is not None:
                move = Move(str(target), pk, sk)
    else:
        for field_name in ("to", "key"):
            if field_name in data:
                problems.append(
                    doc.problem((field_name,), f"{field_name!r} is a field of kind change_key, not {kind}")
                )
    index = data.get("index")
    if kind == "add_index":
        declared = {i.name: i for i in table.indexes} if table is not None else {}
        spec = declared.get(str(index))
        if spec is None:
            problems.append(
                doc.problem(
                    ("index",),
                    f"index {index!r} is not declared for table {table_name} in infra/resources.toml "
                    f"(declared: {', '.join(sorted(declared)) or 'none'}); "
                    "declare it there, CD-02 creates it",
                )
            )
        elif spec.partition_key not in adds:
            problems.append(
                doc.problem(("add",), f"derive the index's partition key {spec.partition_key!r} in 'add'")
            )
    elif index is not None:
        problems.append(doc.problem(("index",), f"'index' is a field of kind add_index, not {kind}"))
    if kind == "add_ttl" and table is not None:
        if table.ttl_attribute is None:
            problems.append(
                doc.problem(
                    ("table",), f"table {table_name} declares no ttl_attribute in infra/resources.toml"
                )
            )
        elif set(adds) != {table.ttl_attribute}:
            problems.append(
                doc.problem(
                    ("add",), f"add_ttl derives exactly the declared ttl_attribute {table.ttl_attribute!r}"
                )
            )

    raw_backfill = data.get("backfill")
    backfill = Backfill(rate=1.0)
    if not isinstance(raw_backfill, Mapping) or raw_backfill.get("rate") is None:
        problems.append(
            doc.problem(("backfill",), "a backfill needs a throttle: backfill: {rate: ITEMS_PER_S}")
        )
    else:
        rate, segments, page = (
            raw_backfill.get("rate"),
            raw_backfill.get("segments", 4),
            raw_backfill.get("page", 100),
        )
        ok = True
        if not isinstance(rate, int | float) or isinstance(rate, bool) or rate <= 0:
            problems.append(
                doc.problem(("backfill", "rate"), f"rate {rate!r}: a positive number of items a second")
            )
            ok = False
        if not isinstance(segments, int) or isinstance(segments, bool) or not 1 <= segments <= 64:
            problems.append(
                doc.problem(("backfill", "segments"), f"segments {segments!r}: a whole number from 1 to 64")
            )
            ok = False
        if not isinstance(page, int) or isinstance(page, bool) or not 1 <= page <= 1000:
            problems.append(
                doc.problem(("backfill", "page"), f"page {page!r}: a whole number from 1 to 1000")
            )
            ok = False
        if ok:
            backfill = Backfill(float(rate), int(segments), int(page))  # type: ignore[arg-type]
    window = _per_env(doc, "rollback_window", {k: float(v) for k, v in DEFAULT_WINDOW.items()}, problems)
    bake = _per_env(doc, "bake", {k: float(v) for k, v in DEFAULT_BAKE.items()}, problems)
    contract = data.get("contract") or {}
    irreversible = bool(isinstance(contract, Mapping) and contract.get("irreversible") is True)
    if kind == "change_key" and not irreversible:
        problems.append(
            doc.problem(
                ("contract",) if "contract" in data else ("kind",),
                f"the contract deletes the items of {table_name} for good (their copies stay): "
                "declare contract: {irreversible: true}",
            )
        )
    if removes and not irreversible:
        problems.append(
            doc.problem(
                ("contract",) if "contract" in data else ("kind",),
                f"the contract removes {', '.join(removes)} for good: "
                "declare contract: {irreversible: true} "
                "(it then waits for a recorded approval in every environment)",
            )
        )
    if problems:
        raise MigrationError(problems)
    number = int(match.group(1)) if match else 0
    return Migration(
        id=path.stem,
        number=number,
        path=path,
        digest=hashlib.sha256(path.read_bytes()).hexdigest(),
        description=str(description),
        table=str(table_name),
        kind=str(kind),
        adds=tuple(adds.items()),
        removes=tuple(removes),
        index=str(index) if index is not None else None,
        backfill=backfill,
        rollback_window_s=window,
        bake_s=bake,
        irreversible=irreversible,
        move=move,
    )


def load_all(directory: Path, declaration: Declaration) -> list[Migration]:
    """Every migration under ``directory``, by number; all problems of all files at once."""
    if not directory.is_dir():
        raise ConfigError(f"{directory}: no migrations directory")
    found: list[Migration] = []
    problems: list[Problem] = []
    numbers: dict[int, Path] = {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            migration = load_migration(path, declaration)
        except MigrationError as exc:
            problems.extend(exc.problems)
            continue
        if migration.number in numbers:
            problems.append(
                Problem(
                    str(path),
                    1,
                    "",
                    f"number {migration.number:04d} is also used by {numbers[migration.number].name}",
                )
            )
        numbers[migration.number] = path
        found.append(migration)
    if problems:
        raise MigrationError(problems)
    return sorted(found, key=lambda m: m.number)


def find(directory: Path, declaration: Declaration, ident: str) -> Migration:
    """The migration named ``ident``: its full id (``0001_name``) or its number (``1``, ``0001``)."""
    migrations = load_all(directory, declaration)
    for m in migrations:
        if ident in (m.id, str(m.number), f"{m.number:04d}"):
            return m
    raise ConfigError(
        f"no migration {ident!r} in {directory} (have: {', '.join(m.id for m in migrations) or 'none'})"
    )
