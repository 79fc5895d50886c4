"""Feature-flag evaluation by the Unleash client specification, and the config rollout bucket.

Pure functions over plain data (no IO), used by the chatbot to read flags and to pick the config
version of a session, by the config pipeline to validate the ``flags`` profile, and by tests that
run the specification's own suites (``../shared/peer-specs/unleash-client-specification``).

``FlagSet(state).is_enabled(name, context)`` and ``.get_variant(name, context)`` take the
Unleash client API state (``{"version", "features", "segments"}``) and a context
(``userId``, ``sessionId``, ``remoteAddress``, ``environment``, ``appName``, ``currentTime``,
``properties``). What the specification says, as implemented here:

- gradual rollout: ``normalized_value(id, group) = murmur3_x86_32("group:id", seed 0) % 100 + 1``,
  enabled when ``<= percentage``; variants use seed 86028157 and the total weight as normalizer;
- stickiness ``default`` is userId, then sessionId, then random (variants: also remoteAddress);
  a custom stickiness field that the context lacks disables a flexible rollout;
- constraints (all must hold; ``inverted`` negates; ``caseInsensitive`` for the string
  operators): IN, NOT_IN, STR_*, NUM_*, DATE_*, SEMVER_*, REGEX (RE2 semantics: no lookaround or
  backreferences, inline flags, POSIX classes), IN_CIDR; an unknown operator is false;
- segments add their constraints to a strategy; a missing segment disables the strategy;
- dependent features: every parent must exist, have no parents itself, and be enabled (or
  disabled if the dependency says ``enabled: false``) with one of the named variants, if any.

``config_bucket(profile, session_id)`` is CD-06's published rule for which sessions get a new
config version: ``murmur3_x86_32("profile:session_id", seed 0) % 10_000``; a session is on the new
version when its bucket is below ``percentage * 100``, so raising the percentage only adds sessions.

ADR 0011 measured this evaluation against Unleash's own engine (``yggdrasil-engine``) and kept it:
equal on every specification case and bucket, and faster from Python. Murmur3 is ``mmh3``'s.
"""

from __future__ import annotations

import functools
import ipaddress
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import mmh3

from mangaassist.core import saferegex
from mangaassist.core.errors import ConfigError

VARIANT_SEED = 86028157
BUCKETS = 10_000
"""Config rollout buckets: a percentage has a resolution of 0.01 point."""

_MASK = 0xFFFFFFFF


def murmur3_32(data: bytes | str, seed: int = 0) -> int:
    """MurmurHash3 x86_32, unsigned, of the UTF-8 bytes of a string (``mmh3``, C; ADR 0011).

    The same function as Austin Appleby's reference, so every id keeps its bucket: the published
    vectors and buckets pinned from the earlier pure-Python version are in the tests.
    """
    return mmh3.hash(data, seed & _MASK, signed=False)


def normalized_value(identifier: str, group_id: str, normalizer: int = 100, seed: int = 0) -> int:
    """Unleash's ``normalizedValue``: 1..normalizer."""
    return murmur3_32(f"{group_id}:{identifier}", seed) % normalizer + 1


def config_bucket(profile: str, session_id: str) -> int:
    """The bucket (0..9999) of a session for a config profile's rollout."""
    return murmur3_32(f"{profile}:{session_id}", 0) % BUCKETS


def on_new_version(profile: str, session_id: str, percentage: float) -> bool:
    """Whether a session gets the version being rolled out at ``percentage`` (0..100)."""
    return config_bucket(profile, session_id) < round(percentage * 100)


# -- evaluation ------------------------------------------------------------------------------------

_TOP_LEVEL = ("userId", "sessionId", "remoteAddress", "environment", "appName", "currentTime")


@dataclass(frozen=True)
class Variant:
    name: str
    enabled: bool
    feature_enabled: bool
    payload: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "enabled": self.enabled}
        if self.payload is not None:
            out["payload"] = self.payload
        out["feature_enabled"] = self.feature_enabled
        return out


def _disabled(feature_enabled: bool = False) -> Variant:
    return Variant("disabled", False, feature_enabled)


def context_value(context: Mapping[str, Any], field: str) -> str | None:
    if field in _TOP_LEVEL and context.get(field) is not None:
        return str(context[field])
    props = context.get("properties") or {}
    value = props.get(field, context.get(field))
    return None if value is None else str(value)


class FlagSet:
    """One Unleash state (features and segments), evaluated against contexts."""

    def __init__(self, state: Mapping[str, Any], rng: random.Random | None = None) -> None:
        self.features: dict[str, Mapping[str, Any]] = {f["name"]: f for f in state.get("features", [])}
        self.segments: dict[Any, Sequence[Mapping[str, Any]]] = {
            s["id"]: s.get("constraints") or [] for s in state.get("segments") or []
        }
        self._rng = rng or random.Random()

    def names(self) -> list[str]:
        return sorted(self.features)

    def is_enabled(self, name: str, context: Mapping[str, Any] | None = None) -> bool:
        return self._evaluate(name, context or {})[0]

    def get_variant(self, name: str, context: Mapping[str, Any] | None = None) -> Variant:
        ctx = context or {}
        feature = self.features.get(name)
        enabled, strategy_variant = self._evaluate(name, ctx)
        if feature is None or not enabled:
            return _disabled()
        if strategy_variant is not None:
            return strategy_variant
        variants = [v for v in feature.get("variants") or [] if v.get("weight", 0) > 0]
        chosen = self._select(name, variants, ctx, None)
        return _disabled(True) if chosen is None else _as_variant(chosen)

    # a strategy's variants win over the feature's; the second item is that variant, if any
    def _evaluate(self, name: str, ctx: Mapping[str, Any]) -> tuple[bool, Variant | None]:
        feature = self.features.get(name)
        if feature is None or not feature.get("enabled", False):
            return False, None
        if not self._parents_satisfied(feature, ctx):
            return False, None
        strategies = feature.get("strategies") or []
        if not strategies:
            return True, None
        for strategy in strategies:
            if self._strategy_on(name, strategy, ctx):
                variants = [v for v in strategy.get("variants") or [] if v.get("weight", 0) > 0]
                if variants:
                    params = strategy.get("parameters") or {}
                    group = str(params.get("groupId") or name)
                    chosen = self._select(group, variants, ctx, params.get("stickiness"))
                    if chosen is not None:
                        return True, _as_variant(chosen)
                return True, None
        return False, None

    def _parents_satisfied(self, feature: Mapping[str, Any], ctx: Mapping[str, Any]) -> bool:
        for dep in feature.get("dependencies") or []:
            parent = self.features.get(dep.get("feature", ""))
            if parent is None or parent.get("dependencies"):
                return False  # missing parents, cycles and transitive dependencies all disable
            want_enabled = dep.get("enabled", True)
            parent_on = self.is_enabled(parent["name"], ctx)
            if parent_on != bool(want_enabled):
                return False
            wanted = dep.get("variants") or []
            if want_enabled and wanted and self.get_variant(parent["name"], ctx).name not in wanted:
                return False
        return True

    def _strategy_on(self, feature: str, strategy: Mapping[str, Any], ctx: Mapping[str, Any]) -> bool:
        constraints = list(strategy.get("constraints") or [])
        for segment_id in strategy.get("segments") or []:
            if segment_id not in self.segments:
                return False
            constraints.extend(self.segments[segment_id])
        if not all(constraint_holds(c, ctx) for c in constraints):
            return False
        params = strategy.get("parameters") or {}
        kind = strategy.get("name")
        if kind == "default":
            return True
        if kind == "userWithId":
            user = context_value(ctx, "userId")
            return user is not None and user in _csv(params.get("userIds", ""))
        if kind in ("gradualRolloutUserId", "gradualRolloutSessionId"):
            field = "userId" if kind == "gradualRolloutUserId" else "sessionId"
            ident = context_value(ctx, field)
            if ident is None:
                return False
            group = str(params.get("groupId", feature))
            return normalized_value(ident, group) <= _percent(params.get("percentage"))
        if kind == "gradualRolloutRandom":
            return self._rng.randint(1, 100) <= _percent(params.get("percentage"))
        if kind == "flexibleRollout":
            ident = self._sticky_id(params.get("stickiness") or "default", ctx, variants=False)
            if ident is None:
                return False
            group = str(params.get("groupId") or feature)
            return normalized_value(ident, group) <= _percent(params.get("rollout"))
        if kind == "remoteAddress":
            address = context_value(ctx, "remoteAddress")
            return address is not None and _in_cidrs(address, _csv(params.get("IPs", "")))
        if kind == "applicationHostname":
            host = context_value(ctx, "hostname")
            return host is not None and host.lower() in (h.lower() for h in _csv(params.get("hostNames", "")))
        return False  # unknown strategies are off, as the specification asks

    def _sticky_id(self, stickiness: str, ctx: Mapping[str, Any], *, variants: bool) -> str | None:
        if stickiness == "default":
            fields = ("userId", "sessionId", "remoteAddress") if variants else ("userId", "sessionId")
            for f in fields:
                value = context_value(ctx, f)
                if value is not None:
                    return value
            return str(self._rng.randint(1, 100_000))
        if stickiness == "random":
            return str(self._rng.randint(1, 100_000))
        value = context_value(ctx, stickiness)
        if value is None and variants:
            return str(self._rng.randint(1, 100_000))
        return value

    def _select(
        self,
        group: str,
        variants: Sequence[Mapping[str, Any]],
        ctx: Mapping[str, Any],
        stickiness: str | None,
    ) -> Mapping[str, Any] | None:
        total = sum(int(v.get("weight", 0)) for v in variants)
        if total <= 0:
            return None
        for v in variants:
            for override in v.get("overrides") or []:
                if context_value(ctx, override.get("contextName", "")) in (override.get("values") or []):
                    return v
        sticky = variants[0].get("stickiness") or stickiness or "default"
        ident = self._sticky_id(str(sticky), ctx, variants=True) or ""
        target = normalized_value(ident, group, total, VARIANT_SEED)
        counter = 0
        for v in variants:
            counter += int(v.get("weight", 0))
            if counter >= target:
                return v
        return None


def _as_variant(v: Mapping[str, Any]) -> Variant:
    payload = v.get("payload")
    return Variant(str(v["name"]), True, True, dict(payload) if payload is not None else None)


def _csv(raw: Any) -> list[str]:
    return [p.strip() for p in str(raw).split(",") if p.strip()]


def _percent(raw: Any) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return 0.0


def _in_cidrs(address: str, networks: Sequence[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    for raw in networks:
        try:
            if ip in ipaddress.ip_network(raw.strip(), strict=False):
                return True
        except ValueError:
            continue  # invalid entries are ignored, the valid ones still count
    return False


# -- constraints -----------------------------------------------------------------------------------

OPERATORS = frozenset(
    {
        "IN",
        "NOT_IN",
        "STR_CONTAINS",
        "STR_STARTS_WITH",
        "STR_ENDS_WITH",
        "NUM_EQ",
        "NUM_GT",
        "NUM_GTE",
        "NUM_LT",
        "NUM_LTE",
        "DATE_AFTER",
        "DATE_BEFORE",
        "SEMVER_EQ",
        "SEMVER_GT",
        "SEMVER_GTE",
        "SEMVER_LT",
        "SEMVER_LTE",
        "REGEX",
        "IN_CIDR",
    }
)


def constraint_holds(constraint: Mapping[str, Any], ctx: Mapping[str, Any]) -> bool:
    result = _operator(constraint, ctx)
    return not result if constraint.get("inverted") else result


def _operator(c: Mapping[str, Any], ctx: Mapping[str, Any]) -> bool:
    op = c.get("operator", "")
    field = str(c.get("contextName", ""))
    if field == "currentTime" and context_value(ctx, field) is None:
        value: str | None = datetime.now(UTC).isoformat()
    else:
        value = context_value(ctx, field)
    values = [str(v) for v in c.get("values") or []]
    single = c.get("value")
    if op in ("IN", "NOT_IN"):
        inside = value is not None and value in values
        return not inside if op == "NOT_IN" else inside
    if value is None or op not in OPERATORS:
        return False
    if op.startswith("STR_"):
        fold = bool(c.get("caseInsensitive"))
        subject = value.lower() if fold else value
        needles = [v.lower() for v in values] if fold else values
        if op == "STR_CONTAINS":
            return any(n in subject for n in needles)
        if op == "STR_STARTS_WITH":
            return any(subject.startswith(n) for n in needles)
        return any(subject.endswith(n) for n in needles)
    if op.startswith("NUM_"):
        try:
            left, right = float(value), float(str(single))
        except ValueError:
            return False
        return _compare(op[4:], (left > right) - (left < right))
    if op.startswith("DATE_"):
        try:
            left_t, right_t = _date(value), _date(str(single))
        except ValueError:
            return False
        return left_t > right_t if op == "DATE_AFTER" else left_t < right_t
    if op.startswith("SEMVER_"):
        a, b = _semver(value), _semver(str(single))
        if a is None or b is None:
            return False
        return _compare(op[7:], _semver_cmp(a, b))
    if op == "REGEX":
        pattern = compile_re2(str(single), bool(c.get("caseInsensitive")))
        return pattern is not None and pattern.search(value) is not None
    return _in_cidrs(value, values)  # IN_CIDR


def _compare(kind: str, sign: int) -> bool:
    return {"EQ": sign == 0, "GT": sign > 0, "GTE": sign >= 0, "LT": sign < 0, "LTE": sign <= 0}[kind]


def _date(raw: str) -> datetime:
    parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)


def _semver(raw: str) -> tuple[tuple[int, int, int], list[str]] | None:
    m = _SEMVER.match(raw.strip())
    if m is None:
        return None
    core = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
    return core, (m.group(4).split(".") if m.group(4) else [])


def _semver_cmp(a: tuple[tuple[int, int, int], list[str]], b: tuple[tuple[int, int, int], list[str]]) -> int:
    if a[0] != b[0]:
        return (a[0] > b[0]) - (a[0] < b[0])
    pa, pb = a[1], b[1]
    if not pa or not pb:  # a release ranks above its pre-releases
        return (not pa) - (not pb)
    for x, y in zip(pa, pb, strict=False):
        if x == y:
            continue
        if x.isdigit() and y.isdigit():
            return (int(x) > int(y)) - (int(x) < int(y))
        if x.isdigit() != y.isdigit():
            return -1 if x.isdigit() else 1
        return (x > y) - (x < y)
    return (len(pa) > len(pb)) - (len(pa) < len(pb))


@functools.lru_cache(maxsize=1024)
def compile_re2(pattern: str, case_insensitive: bool = False) -> saferegex.Pattern | None:
    """Compile a pattern with RE2 itself (what Unleash servers accept), or None if RE2 refuses it.

    RE2 has no lookaround or backreferences, allows inline flags anywhere and knows POSIX classes
    such as ``[[:alpha:]]``; its ``\\d`` and ``\\b`` are ASCII-only. Matching is linear in the input
    whatever the pattern (``core.saferegex``). Compiled once per (pattern, case) and kept.
    """
    try:
        return saferegex.compile_linear(pattern, case_insensitive=case_insensitive)
    except ConfigError:
        return None
