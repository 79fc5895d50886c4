"""How the application writes a table while CD-07 reshapes it: derived attributes and write rules.

A migration (``migrations/NNNN_name.yaml``, loaded by ``delivery.migrations.spec``) adds attributes
whose values derive from an item's other attributes (``Derive``: a named, pure ``TRANSFORMS``
function of some source attributes). While it runs, CD-07 publishes a ``Rule`` per migration through
the runtime config's ``schema`` profile; every writer of the table applies the rules of that table
to each item it writes (``Rules.shape``), so from the expand step on the application writes both
shapes, and the backfill only has to bring the items written before.

Pure data and pure functions: the chatbot (``platform.tables.ShapedTables``), the backfill and the
verification all compute a derived value with the same code, so "the new shape of this item" means
one thing everywhere.

Phases of a rule (``Rule.phase``):

* ``expand``: writes add the derived attributes; reads use the old shape.
* ``cutover``: writes add them; reads use the new shape (``Rules.reads_new``).
* ``contracted``: writes add them and drop the attributes the migration retires (``Rule.removes``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

PHASES = ("expand", "cutover", "contracted")
SCHEMA_PROFILE = "schema"
"""The runtime-config profile CD-07 publishes its rules in (never a file under ``config/``)."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""What a transform returns when the item has nothing to derive from: the attribute is not written."""

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"\+?\d[\d\s().-]{6,}\d")


def _mask_email(text: str) -> Any:
    found = _EMAIL.search(text)
    if found is None:
        return MISSING
    local, _, domain = found.group(0).partition("@")
    return f"{local[0]}***@{domain.lower()}"


def _mask_phone(text: str) -> Any:
    found = _PHONE.search(text)
    if found is None:
        return MISSING
    digits = re.sub(r"\D", "", found.group(0))
    return f"***{digits[-4:]}"


def _epoch(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    return None


def _copy(values: list[Any], params: Mapping[str, Any]) -> Any:
    return values[0]


def _join(values: list[Any], params: Mapping[str, Any]) -> Any:
    return str(params.get("sep", "#")).join(str(v) for v in values)


def _epoch_of(values: list[Any], params: Mapping[str, Any]) -> Any:
    seconds = _epoch(next(v for v in values if v is not None))
    return MISSING if seconds is None else int(seconds)


def _add_seconds(values: list[Any], params: Mapping[str, Any]) -> Any:
    seconds = _epoch(next(v for v in values if v is not None))
    return MISSING if seconds is None else int(seconds + float(params["seconds"]))


def _email_of(values: list[Any], params: Mapping[str, Any]) -> Any:
    return _mask_email(str(values[0]))


def _phone_of(values: list[Any], params: Mapping[str, Any]) -> Any:
    return _mask_phone(str(values[0]))


def _lower(values: list[Any], params: Mapping[str, Any]) -> Any:
    return str(values[0]).lower()


@dataclass(frozen=True)
class Transform:
    """A named derivation: ``sources`` is how many source attributes it takes (None: one or more),
    ``params`` the parameters it requires. ``first_present``: it reads the first of its sources
    that the item has (``from: [at, created_at]``); otherwise every source must be present."""

    apply: Callable[[list[Any], Mapping[str, Any]], Any]
    sources: int | None
    params: tuple[str, ...]
    doc: str
    first_present: bool = False


TRANSFORMS: dict[str, Transform] = {
    "copy": Transform(_copy, 1, (), "the source's value as it is (a rename)"),
    "join": Transform(
        _join, None, (), "the sources' values as text joined by `sep` (default '#'): a composite key"
    ),
    "epoch": Transform(
        _epoch_of, None, (), "the first present source, an ISO-8601 time or a number, in epoch seconds", True
    ),
    "add_seconds": Transform(
        _add_seconds,
        None,
        ("seconds",),
        "the first present source, a time (ISO-8601 or epoch seconds), plus `seconds`, in epoch seconds",
        True,
    ),
    "email_of": Transform(
        _email_of, 1, (), "the first e-mail address in the text, masked (a***@example.com)"
    ),
    "phone_of": Transform(
        _phone_of, 1, (), "the first phone number in the text, masked to its last four digits"
    ),
    "lower": Transform(_lower, 1, (), "the source's text in lower case"),
}


@dataclass(frozen=True)
class Derive:
    """One derived attribute: ``fn`` of the item's ``sources`` (``TRANSFORMS``) with ``params``."""

    fn: str
    sources: tuple[str, ...]
    params: tuple[tuple[str, Any], ...] = ()

    def value(self, item: Mapping[str, Any]) -> Any:
        """The derived value of ``item``, or ``MISSING`` when a source is absent or null."""
        values = [item.get(s) for s in self.sources]
        transform = TRANSFORMS[self.fn]
        if all(v is None for v in values) or (not transform.first_present and any(v is None for v in values)):
            return MISSING
        return transform.apply(values, dict(self.params))

    def as_dict(self) -> dict[str, Any]:
        return {"fn": self.fn, "from": list(self.sources), **dict(self.params)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Derive:
        sources = raw.get("from")
        names = [sources] if isinstance(sources, str) else list(sources or [])
        params = tuple(sorted((k, v) for k, v in raw.items() if k not in ("fn", "from")))
        return cls(str(raw["fn"]), tuple(str(n) for n in names), params)


@dataclass(frozen=True)
class Move:
    """``change_key``: each item of the rule's table has a copy in ``table`` under keys derived from
    it, with ``moved_from`` holding its original keys (so a copy can be traced to its item)."""

    table: str
    pk: Derive
    sk: Derive

    def key(self, item: Mapping[str, Any]) -> tuple[str, str] | None:
        pk, sk = self.pk.value(item), self.sk.value(item)
        if pk is MISSING or sk is MISSING or pk == "":
            return None
        return str(pk), str(sk)

    def moved(self, item: Mapping[str, Any]) -> dict[str, Any] | None:
        """The copy of ``item`` in the new table, or None when its new keys cannot be derived."""
        key = self.key(item)
        if key is None:
            return None
        return {**item, "pk": key[0], "sk": key[1], "moved_from": [item["pk"], item["sk"]]}

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "pk": self.pk.as_dict(), "sk": self.sk.as_dict()}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Move:
        return cls(str(raw["table"]), Derive.from_dict(raw["pk"]), Derive.from_dict(raw["sk"]))


@dataclass(frozen=True)
class Rule:
    """What writers of ``table`` do for one migration while it is live (see the module docstring)."""

    migration: str
    table: str
    phase: str
    adds: tuple[tuple[str, Derive], ...]
    removes: tuple[str, ...] = ()
    index: str | None = None
    """The global secondary index the migration fills (readable once cut over)."""
    cut_over_at: float | None = None
    """When reads switched to the new shape (epoch seconds): the rollback window starts there."""
    move: Move | None = None
    """``change_key``: the table every item is copied to under its new keys (writers write both
    until the contract, then only the new table)."""

    @property
    def sources(self) -> tuple[str, ...]:
        derives = [d for _, d in self.adds] + ([self.move.pk, self.move.sk] if self.move else [])
        return tuple(dict.fromkeys(s for d in derives for s in d.sources))

    def derived(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """The added attributes of ``item`` as this migration defines them (``MISSING`` where a
        source is absent: the attribute must then be absent too)."""
        return {name: d.value(item) for name, d in self.adds}

    def shape(self, item: dict[str, Any]) -> dict[str, Any]:
        out = dict(item)
        for name, value in self.derived(item).items():
            if value is MISSING:
                out.pop(name, None)
            else:
                out[name] = value
        if self.phase == "contracted":
            for name in self.removes:
                out.pop(name, None)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "migration": self.migration,
            "table": self.table,
            "phase": self.phase,
            "adds": {name: d.as_dict() for name, d in self.adds},
            "removes": list(self.removes),
            "index": self.index,
            "cut_over_at": self.cut_over_at,
            "move": self.move.as_dict() if self.move else None,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Rule:
        phase = str(raw.get("phase"))
        if phase not in PHASES:
            raise ValueError(
                f"rule {raw.get('migration')!r}: phase {phase!r} is not one of {', '.join(PHASES)}"
            )
        return cls(
            str(raw["migration"]),
            str(raw["table"]),
            phase,
            tuple((str(k), Derive.from_dict(v)) for k, v in dict(raw.get("adds") or {}).items()),
            tuple(str(r) for r in raw.get("removes") or ()),
            raw.get("index"),
            float(raw["cut_over_at"]) if raw.get("cut_over_at") is not None else None,
            Move.from_dict(raw["move"]) if raw.get("move") else None,
        )


@dataclass(frozen=True)
class Rules:
    """Every live rule, as the ``schema`` profile carries them (``{"rules": [...]}``)."""

    rules: tuple[Rule, ...] = field(default_factory=tuple)

    @classmethod
    def from_content(cls, content: Mapping[str, Any] | None) -> Rules:
        return cls(tuple(Rule.from_dict(r) for r in (content or {}).get("rules") or ()))

    def content(self) -> dict[str, Any]:
        return {"rules": [r.as_dict() for r in self.rules]}

    def of(self, table: str) -> list[Rule]:
        return [r for r in self.rules if r.table == table]

    def get(self, migration: str) -> Rule | None:
        return next((r for r in self.rules if r.migration == migration), None)

    def shape(self, table: str, item: dict[str, Any]) -> dict[str, Any]:
        """``item`` as writers must write it to ``table`` now."""
        for rule in self.of(table):
            item = rule.shape(item)
        return item

    def reads_new(self, table: str, attribute: str) -> bool:
        """True when a migration adding ``attribute`` to ``table`` is cut over (reads may use it)."""
        return any(r.phase in ("cutover", "contracted") and attribute in dict(r.adds) for r in self.of(table))

    def moves(self, table: str) -> list[Rule]:
        """The ``change_key`` rules of ``table`` (its items are copied to another table)."""
        return [r for r in self.of(table) if r.move is not None]

    def moved_to(self, table: str) -> str | None:
        """The table readers of ``table`` use now: its ``change_key`` target once cut over."""
        return next(
            (r.move.table for r in self.moves(table) if r.move and r.phase in ("cutover", "contracted")), None
        )

    def index_readable(self, table: str, index: str) -> bool:
        return any(r.index == index and r.phase in ("cutover", "contracted") for r in self.of(table))

    def with_rule(self, rule: Rule) -> Rules:
        return Rules((*(r for r in self.rules if r.migration != rule.migration), rule))

    def without(self, migration: str) -> Rules:
        return Rules(tuple(r for r in self.rules if r.migration != migration))


def describe_transforms() -> Iterable[tuple[str, str]]:
    return ((name, t.doc) for name, t in sorted(TRANSFORMS.items()))
