"""Benchmark: feature-flag evaluation, hand-written against maintained libraries (ADR 0011).

Side by side in one run, on the same flag sets and the same contexts:

* ``hand`` — ``core/flags.py``'s evaluation with the pure-Python MurmurHash3 it used to carry
  (kept below verbatim as ``reference_murmur3_32``: the bucket rule every existing user is on);
* ``mmh3`` — the same evaluation with ``mmh3.hash(key, seed, signed=False)`` as its murmur3. Flag
  REGEX constraints are compiled with RE2 (``google-re2``) in both: there is no regex translation
  left to replace (removed in 68b10af);
* ``yggdrasil`` — Unleash's official evaluator (``yggdrasil-engine``, Rust through ctypes) fed the
  same Unleash client API JSON, asked with ``check_enabled`` / ``check_variant`` (the public calls
  that do not record metrics);
* ``yggdrasil-ffi`` (speed only) — the engine's C entry point called directly with the context as
  JSON, skipping the Python wrapper's second FFI call (impression events) and custom strategies:
  the fastest this engine can be asked from Python.

Measured per variant:

* speed, single thread: evaluations/s over a workload, and p50/p99 of individually timed
  evaluations; three rounds, the variants interleaved within each round, the median round kept.
  Workloads: ``repo`` (``config/flags.yaml`` as the chatbot asks it: ``handoff-offer`` for a
  session and a customer) and ``mixed`` (19 flags: rollouts at 10 percentages, constraints with
  every operator family, a segment, feature and strategy variants, a dependency, userWithId,
  remoteAddress, asked for every context, variants with ``get_variant``);
* memory: resident set size in a fresh process (``--memory VARIANT``): what importing the
  evaluator adds, and what building the mixed set and running its workload adds;
* correctness: the vendored Unleash client specification cases (suites 01-18, 21, 22), and
  agreement with ``hand`` on every evaluation of the mixed workload;
* sticky buckets: ``--users`` user ids (default 100,000). ``mmh3``: the exact bucket of every id
  for every rollout group (seed 0, 1..100), every variant group (seed 86028157, 1..total weight)
  and every config profile (CD-06, 0..9999). ``yggdrasil``: enabled or not for every id on every
  rollout flag of both sets (11 percentages), the variant of every id on both variant flags, the
  exact variant bucket (a flag of 100 variants of weight 1) and the exact rollout bucket (binary
  search over 100 flags at 1..100%) of every id. A user whose answer differs would move.

``yggdrasil-engine`` is not a dependency of MangaAssist (ADR 0011 kept the hand-written evaluation):
install it for this benchmark, ``pip install yggdrasil-engine==2.0.0``. Run it niced (the machine is
shared with CI)::

    nice -n 10 python benchmarks/flags_eval.py [--users 100000] [--rounds 3]

Writes ``benchmarks/results/flags_eval.json``.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import yaml  # noqa: E402

SPEC_DIR = ROOT / "tests" / "fixtures" / "unleash-client-specification" / "specifications"
SUITES = [f"{n:02d}" for n in (*range(1, 19), 21, 22)]
FLAGS_FILE = ROOT / "src" / "mangaassist" / "core" / "flags.py"
PROFILES = ("runtime", "prompts", "guardrails", "flags")
PERCENTAGES = (1, 5, 10, 25, 33, 50, 75, 90, 99, 100)
VARIANT_SEED = 86028157

_C1 = 0xCC9E2D51
_C2 = 0x1B873593
_MASK = 0xFFFFFFFF


def reference_murmur3_32(data: bytes | str, seed: int = 0) -> int:
    """The hand-written MurmurHash3 x86_32 ``core/flags.py`` carried before ADR 0011, verbatim."""
    key = data.encode("utf-8") if isinstance(data, str) else data
    h = seed & _MASK
    n = len(key)
    tail = n - n % 4
    for i in range(0, tail, 4):
        k = int.from_bytes(key[i : i + 4], "little")
        k = (k * _C1) & _MASK
        k = ((k << 15) | (k >> 17)) & _MASK
        k = (k * _C2) & _MASK
        h ^= k
        h = ((h << 13) | (h >> 19)) & _MASK
        h = (h * 5 + 0xE6546B64) & _MASK
    k = 0
    rest = n & 3
    if rest == 3:
        k ^= key[tail + 2] << 16
    if rest >= 2:
        k ^= key[tail + 1] << 8
    if rest >= 1:
        k ^= key[tail]
        k = (k * _C1) & _MASK
        k = ((k << 15) | (k >> 17)) & _MASK
        k = (k * _C2) & _MASK
        h ^= k
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    h ^= h >> 16
    return h


def mmh3_32(data: bytes | str, seed: int = 0) -> int:
    import mmh3

    return int(mmh3.hash(data, seed, signed=False))


# -- the variants ----------------------------------------------------------------------------------


def flags_module(label: str, murmur: Callable[[bytes | str, int], int]) -> ModuleType:
    """A private copy of ``core/flags.py`` whose murmur3 is ``murmur`` (both run in one process)."""
    spec = importlib.util.spec_from_file_location(f"_flags_eval_{label}", FLAGS_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    module.murmur3_32 = murmur
    return module


class Evaluator:
    """What the benchmark asks of every variant."""

    def enabled(self, name: str, ctx: Mapping[str, Any]) -> bool:
        raise NotImplementedError

    def variant(self, name: str, ctx: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


class Hand(Evaluator):
    def __init__(self, module: ModuleType, state: Mapping[str, Any]) -> None:
        self.flags = module.FlagSet(state, rng=random.Random(7))

    def enabled(self, name: str, ctx: Mapping[str, Any]) -> bool:
        return bool(self.flags.is_enabled(name, ctx))

    def variant(self, name: str, ctx: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = self.flags.get_variant(name, ctx).as_dict()
        return out


def unleash_json(state: Mapping[str, Any]) -> str:
    """The state as the Unleash client API serves it (the engine rejects a state without version)."""
    features = [{"strategies": [], **f} for f in state.get("features", [])]
    return json.dumps({"version": 1, **state, "features": features})


class Ygg(Evaluator):
    def __init__(self, state: Mapping[str, Any]) -> None:
        from yggdrasil_engine.engine import UnleashEngine

        self.engine = UnleashEngine()
        raw = unleash_json(state).encode("utf-8")
        # take_state swallows a parse error (every flag would then be off): check it ourselves
        ptr = self.engine.lib.take_state(self.engine.state, raw)
        answer = json.loads(ctypes.cast(ptr, ctypes.c_char_p).value or b"{}")
        self.engine.lib.free_response(ptr)
        message = str(answer.get("error_message") or "")
        # "Error" also carries warnings (the state is taken, a flag it cannot compile is off)
        if answer.get("status_code") == "Error" and not message.startswith("Engine state was updated"):
            raise RuntimeError(f"yggdrasil refused the state: {answer.get('error_message')}")
        self.engine.custom_strategy_handler.update_strategies(raw.decode("utf-8"))

    def enabled(self, name: str, ctx: Mapping[str, Any]) -> bool:
        return bool(self.engine.check_enabled(name, dict(ctx)).is_enabled)

    def variant(self, name: str, ctx: Mapping[str, Any]) -> dict[str, Any]:
        v = self.engine.check_variant(name, dict(ctx)).variant
        out: dict[str, Any] = {"name": v.name, "enabled": v.enabled}
        if v.payload is not None:
            out["payload"] = v.payload
        out["feature_enabled"] = v.feature_enabled
        return out


class YggFfi(Ygg):
    """The engine's ``check_enabled``/``check_variant`` entry points, without the wrapper."""

    def _call(self, fn: Any, name: str, ctx: Mapping[str, Any]) -> Any:
        lib = self.engine.lib
        ptr = fn(self.engine.state, name.encode("utf-8"), json.dumps(ctx).encode("utf-8"), b"{}")
        try:
            return json.loads(ctypes.cast(ptr, ctypes.c_char_p).value or b"{}").get("value")
        finally:
            lib.free_response(ptr)

    def enabled(self, name: str, ctx: Mapping[str, Any]) -> bool:
        return bool(self._call(self.engine.lib.check_enabled, name, ctx))

    def variant(self, name: str, ctx: Mapping[str, Any]) -> dict[str, Any]:
        v = self._call(self.engine.lib.check_variant, name, ctx) or {}
        out: dict[str, Any] = {"name": v.get("name", "disabled"), "enabled": bool(v.get("enabled"))}
        if v.get("payload") is not None:
            out["payload"] = v["payload"]
        out["feature_enabled"] = bool(v.get("featureEnabled"))
        return out


def make_variants() -> dict[str, Callable[[Mapping[str, Any]], Evaluator]]:
    hand_mod = flags_module("hand", reference_murmur3_32)
    mmh3_mod = flags_module("mmh3", mmh3_32)
    return {
        "hand": lambda s: Hand(hand_mod, s),
        "mmh3": lambda s: Hand(mmh3_mod, s),
        "yggdrasil": Ygg,
        "yggdrasil-ffi": YggFfi,
    }


# -- flag sets and contexts ------------------------------------------------------------------------


def repo_flags() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "config" / "flags.yaml").read_text(encoding="utf-8"))
    return data


def mixed_flags() -> dict[str, Any]:
    def rollout(name: str, pct: int, stickiness: str = "default", **extra: Any) -> dict[str, Any]:
        strategy = {
            "name": "flexibleRollout",
            "parameters": {"rollout": str(pct), "stickiness": stickiness, "groupId": name},
            **extra,
        }
        return {"name": name, "enabled": True, "strategies": [strategy]}

    def default(name: str, constraints: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "name": name,
            "enabled": True,
            "strategies": [{"name": "default", "constraints": constraints}],
        }

    features = [rollout(f"rollout-{p}", p) for p in PERCENTAGES]
    features += [
        rollout("handoff-offer", 50, "sessionId"),
        rollout(
            "new-recs",
            30,
            "userId",
            constraints=[
                {"contextName": "appName", "operator": "IN", "values": ["chatbot"]},
                {"contextName": "tier", "operator": "IN", "values": ["plus", "premium"]},
                {"contextName": "country", "operator": "NOT_IN", "values": ["XX"], "inverted": True},
            ],
        ),
        default(
            "typed-gates",
            [
                {"contextName": "appVersion", "operator": "SEMVER_GTE", "value": "2.3.0"},
                {
                    "contextName": "userId",
                    "operator": "STR_STARTS_WITH",
                    "values": ["U-"],
                    "caseInsensitive": True,
                },
                {"contextName": "age", "operator": "NUM_GTE", "value": "18"},
                {"contextName": "currentTime", "operator": "DATE_AFTER", "value": "2024-01-01T00:00:00.000Z"},
                {
                    "contextName": "userId",
                    "operator": "REGEX",
                    "value": "^u-[0-9a-f]{2}[0-7]",
                    "caseInsensitive": True,
                },
                {"contextName": "remoteAddress", "operator": "IN_CIDR", "values": ["10.0.0.0/9"]},
            ],
        ),
        {
            "name": "segment-gate",
            "enabled": True,
            "strategies": [
                {
                    "name": "flexibleRollout",
                    "parameters": {"rollout": "60", "stickiness": "default", "groupId": "segment-gate"},
                    "segments": [1],
                }
            ],
        },
        {
            "name": "prompt-style",
            "enabled": True,
            "strategies": [
                {
                    "name": "flexibleRollout",
                    "parameters": {"rollout": "100", "stickiness": "default", "groupId": "prompt-style"},
                }
            ],
            "variants": [
                {
                    "name": "concise",
                    "weight": 500,
                    "weightType": "variable",
                    "stickiness": "default",
                    "payload": {"type": "string", "value": "concise"},
                },
                {"name": "friendly", "weight": 300, "weightType": "variable", "stickiness": "default"},
                {"name": "formal", "weight": 200, "weightType": "variable", "stickiness": "default"},
            ],
        },
        {
            "name": "answer-layout",
            "enabled": True,
            "strategies": [
                {
                    "name": "flexibleRollout",
                    "parameters": {"rollout": "80", "stickiness": "default", "groupId": "answer-layout"},
                    "variants": [
                        {"name": "cards", "weight": 500, "weightType": "variable", "stickiness": "default"},
                        {"name": "list", "weight": 500, "weightType": "variable", "stickiness": "default"},
                    ],
                }
            ],
        },
        {
            "name": "concise-extras",
            "enabled": True,
            "dependencies": [{"feature": "prompt-style", "variants": ["concise"]}],
            "strategies": [{"name": "default"}],
        },
        {
            "name": "beta-users",
            "enabled": True,
            "strategies": [
                {"name": "userWithId", "parameters": {"userIds": ",".join(f"u-{i:04x}" for i in range(64))}}
            ],
        },
        {
            "name": "office-network",
            "enabled": True,
            "strategies": [{"name": "remoteAddress", "parameters": {"IPs": "10.0.0.0/8, 192.168.1.0/24"}}],
        },
    ]
    segments = [
        {"id": 1, "constraints": [{"contextName": "country", "operator": "IN", "values": ["JP", "US", "FR"]}]}
    ]
    return {"version": 1, "features": features, "segments": segments}


VARIANT_FLAGS = ("prompt-style", "answer-layout")


def contexts(n: int, seed: int = 20261126) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        user, session = f"u-{rng.getrandbits(48):012x}-{i}", f"s-{rng.getrandbits(64):016x}"
        address = (rng.choice((10, 192)), rng.randrange(256), rng.randrange(256), rng.randrange(1, 255))
        out.append(
            {
                "userId": user,
                "sessionId": session,
                "remoteAddress": ".".join(map(str, address)),
                "appName": rng.choice(("chatbot", "chatbot", "dashboard")),
                "environment": "prod",
                "properties": {
                    "tier": rng.choice(("free", "plus", "premium")),
                    "country": rng.choice(("JP", "US", "FR", "DE", "BR")),
                    "appVersion": f"{rng.randrange(1, 4)}.{rng.randrange(0, 6)}.{rng.randrange(0, 12)}",
                    "age": str(rng.randrange(12, 70)),
                },
            }
        )
    return out


def workloads(
    n_repo: int, n_mixed: int
) -> dict[str, tuple[dict[str, Any], list[tuple[str, str, dict[str, Any]]]]]:
    """Per workload: the state, and the (kind, flag, context) calls, the same for every variant."""
    repo_calls = [
        ("enabled", "handoff-offer", {"sessionId": c["sessionId"], "userId": c["userId"]})
        for c in contexts(n_repo, seed=1)
    ]
    mixed = mixed_flags()
    names = [f["name"] for f in mixed["features"]]
    mixed_calls = [
        ("variant" if name in VARIANT_FLAGS else "enabled", name, c)
        for c in contexts(n_mixed, seed=2)
        for name in names
    ]
    return {"repo": (repo_flags(), repo_calls), "mixed": (mixed, mixed_calls)}


# -- measurements ----------------------------------------------------------------------------------


def run_calls(ev: Evaluator, calls: list[tuple[str, str, dict[str, Any]]]) -> float:
    enabled, variant = ev.enabled, ev.variant
    started = time.perf_counter()
    for kind, name, ctx in calls:
        if kind == "enabled":
            enabled(name, ctx)
        else:
            variant(name, ctx)
    return time.perf_counter() - started


def timed_calls(ev: Evaluator, calls: list[tuple[str, str, dict[str, Any]]]) -> list[int]:
    enabled, variant, clock = ev.enabled, ev.variant, time.perf_counter_ns
    out = []
    for kind, name, ctx in calls:
        t0 = clock()
        if kind == "enabled":
            enabled(name, ctx)
        else:
            variant(name, ctx)
        out.append(clock() - t0)
    return out


def pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] / 1000  # microseconds


def speed(variants: dict[str, Callable[[Mapping[str, Any]], Evaluator]], rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for wname, (state, calls) in workloads(100_000, 5_000).items():
        evs = {name: make(state) for name, make in variants.items()}
        for ev in evs.values():  # warm-up (regex compilation, caches)
            run_calls(ev, calls[:2000])
        per: dict[str, list[dict[str, float]]] = {name: [] for name in evs}
        for r in range(rounds):
            for name, ev in evs.items():
                elapsed = run_calls(ev, calls)
                lat = timed_calls(ev, calls)
                per[name].append(
                    {
                        "evals_per_s": len(calls) / elapsed,
                        "p50_us": pct(lat, 50),
                        "p99_us": pct(lat, 99),
                    }
                )
                print(
                    f"  {wname:<6} round {r + 1} {name:<14} {len(calls) / elapsed:>10,.0f} evals/s  "
                    f"p99 {pct(lat, 99):6.1f} us",
                    flush=True,
                )
        out[wname] = {
            "calls": len(calls),
            **{
                name: {
                    "evals_per_s": round(statistics.median(m["evals_per_s"] for m in rows)),
                    "p50_us": round(statistics.median(m["p50_us"] for m in rows), 2),
                    "p99_us": round(statistics.median(m["p99_us"] for m in rows), 2),
                    "rounds": [{k: round(v, 2) for k, v in m.items()} for m in rows],
                }
                for name, rows in per.items()
            },
        }
    return out


def spec_cases(make: Callable[[Mapping[str, Any]], Evaluator]) -> dict[str, Any]:
    passed, failures, total = 0, [], 0
    for prefix in SUITES:
        path = sorted(SPEC_DIR.glob(f"{prefix}-*.json"))[0]
        suite = json.loads(path.read_text(encoding="utf-8"))
        ev = make(suite["state"])
        for case in suite.get("tests", []):
            total += 1
            if ev.enabled(case["toggleName"], case["context"]) is case["expectedResult"]:
                passed += 1
            else:
                failures.append(f"{prefix}: {case['description']}")
        for case in suite.get("variantTests", []):
            total += 1
            got = ev.variant(case["toggleName"], case["context"])
            expected = dict(case["expectedResult"])
            if "feature_enabled" not in expected:
                got.pop("feature_enabled", None)
            if got == expected:
                passed += 1
            else:
                failures.append(f"{prefix}: {case['description']}")
    return {"passed": passed, "total": total, "failures": failures}


def agreement(variants: dict[str, Callable[[Mapping[str, Any]], Evaluator]]) -> dict[str, Any]:
    state, calls = workloads(1, 5_000)["mixed"]
    answers: dict[str, list[Any]] = {}
    for name, make in variants.items():
        ev = make(state)
        answers[name] = [
            ev.enabled(flag, ctx) if kind == "enabled" else ev.variant(flag, ctx) for kind, flag, ctx in calls
        ]
    ref = answers["hand"]
    return {
        name: {
            "evaluations": len(got),
            "differ_from_hand": sum(a != b for a, b in zip(ref, got, strict=True)),
        }
        for name, got in answers.items()
    }


def buckets(variants: dict[str, Callable[[Mapping[str, Any]], Evaluator]], users: int) -> dict[str, Any]:
    rng = random.Random(99)
    ids = [f"u-{rng.getrandbits(48):012x}-{i}" for i in range(users)]
    mixed = mixed_flags()
    rollout_groups = [
        (f["name"], f["strategies"][0]["parameters"])
        for f in mixed["features"]
        if f["strategies"] and f["strategies"][0]["name"] == "flexibleRollout"
    ]
    variant_groups = [("prompt-style", 1000), ("answer-layout", 1000)]
    out: dict[str, Any] = {"users": users}

    # mmh3: the exact bucket of every id, against the reference
    started = time.perf_counter()
    checks = moved = 0
    for uid in ids:
        for group, _ in rollout_groups:
            key = f"{group}:{uid}"
            checks += 1
            moved += reference_murmur3_32(key, 0) % 100 != mmh3_32(key, 0) % 100
        for group, total in variant_groups:
            key = f"{group}:{uid}"
            checks += 1
            moved += reference_murmur3_32(key, VARIANT_SEED) % total != mmh3_32(key, VARIANT_SEED) % total
        for profile in PROFILES:
            key = f"{profile}:{uid}"
            checks += 1
            moved += reference_murmur3_32(key, 0) % 10_000 != mmh3_32(key, 0) % 10_000
        checks += 1  # and the full 32-bit hash, which every rule above is a function of
        moved += reference_murmur3_32(uid, 0) != mmh3_32(uid, 0)
    out["mmh3"] = {
        "what": "exact buckets: 15 rollout groups (1..100), 2 variant groups (1..1000), "
        "4 config profiles (0..9999), the raw 32-bit hash",
        "checks": checks,
        "moved": moved,
        "seconds": round(time.perf_counter() - started, 1),
    }

    # yggdrasil: its answers for every id, against hand's
    started = time.perf_counter()
    hand, ygg = variants["hand"](mixed), variants["yggdrasil-ffi"](mixed)
    repo = repo_flags()
    hand_repo, ygg_repo = variants["hand"](repo), variants["yggdrasil-ffi"](repo)
    plain = [f"rollout-{p}" for p in PERCENTAGES]
    checks = moved = 0
    for uid in ids:
        ctx = {"userId": uid}
        for name in plain:
            checks += 1
            moved += hand.enabled(name, ctx) != ygg.enabled(name, ctx)
        checks += 1
        moved += hand_repo.enabled("handoff-offer", {"sessionId": uid}) != ygg_repo.enabled(
            "handoff-offer", {"sessionId": uid}
        )
        for name in VARIANT_FLAGS:
            checks += 1
            moved += hand.variant(name, ctx)["name"] != ygg.variant(name, ctx)["name"]
    # exact buckets: a flag of 100 variants of weight 1 (the variant bucket, seed 86028157), and the
    # rollout bucket by binary search over flags at 1..100% of one group (seed 0)
    probe = {
        "version": 1,
        "features": [
            {
                "name": "variant-bucket",
                "enabled": True,
                "strategies": [{"name": "default"}],
                "variants": [
                    {"name": str(b), "weight": 1, "weightType": "variable", "stickiness": "default"}
                    for b in range(1, 101)
                ],
            },
            *(
                {
                    "name": f"at-{p}",
                    "enabled": True,
                    "strategies": [
                        {
                            "name": "flexibleRollout",
                            "parameters": {
                                "rollout": str(p),
                                "stickiness": "default",
                                "groupId": "handoff-offer",
                            },
                        }
                    ],
                }
                for p in range(1, 101)
            ),
        ],
    }
    yprobe = variants["yggdrasil-ffi"](probe)
    exact_checks = exact_moved = 0
    for uid in ids:
        ctx = {"userId": uid}
        exact_checks += 2
        exact_moved += int(yprobe.variant("variant-bucket", ctx)["name"]) != (
            reference_murmur3_32(f"variant-bucket:{uid}", VARIANT_SEED) % 100 + 1
        )
        lo, hi = 1, 100  # smallest p with the id enabled at p% is its bucket
        while lo < hi:
            mid = (lo + hi) // 2
            if yprobe.enabled(f"at-{mid}", ctx):
                hi = mid
            else:
                lo = mid + 1
        exact_moved += lo != reference_murmur3_32(f"handoff-offer:{uid}", 0) % 100 + 1
    out["yggdrasil"] = {
        "what": "enabled on 11 rollout flags (1..100%, userId and sessionId stickiness), variant on 2 "
        "variant flags, exact variant bucket (1..100) and exact rollout bucket (1..100) of every id",
        "checks": checks + exact_checks,
        "moved": moved + exact_moved,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return out


# -- memory, in a fresh process per variant --------------------------------------------------------


def rss_mb() -> tuple[float, float]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def memory_probe(variant: str) -> dict[str, float]:
    # loaded by the chatbot whatever evaluates its flags: google-re2 (guardrails), mangaassist.core
    import re2  # noqa: F401

    import mangaassist.core  # noqa: F401

    base, _ = rss_mb()
    make: Callable[[Mapping[str, Any]], Evaluator]
    if variant in ("hand", "mmh3"):
        import mmh3  # noqa: F401

        module = flags_module(variant, reference_murmur3_32 if variant == "hand" else mmh3_32)
        make = lambda s: Hand(module, s)  # noqa: E731
    else:
        import yggdrasil_engine.engine  # noqa: F401

        make = Ygg
    imported, _ = rss_mb()
    state, calls = workloads(1, 5_000)["mixed"]
    after_calls, _ = rss_mb()
    ev = make(state)
    run_calls(ev, calls)
    run_calls(ev, calls)
    final, peak = rss_mb()
    return {
        "import_mb": round(imported - base, 1),
        "state_and_workload_mb": round(final - after_calls, 1),
        "rss_mb": round(final, 1),
        "peak_rss_mb": round(peak, 1),
    }


def memory(names: list[str]) -> dict[str, Any]:
    out = {}
    for name in names:
        proc = subprocess.run(
            [sys.executable, __file__, "--memory", name], capture_output=True, text=True, check=True
        )
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "flags_eval.json")
    args = parser.parse_args()
    if args.memory:
        print(json.dumps(memory_probe(args.memory)))
        return

    import mmh3
    import yggdrasil_engine

    variants = make_variants()
    print("spec cases ...", flush=True)
    spec = {name: spec_cases(make) for name, make in variants.items()}
    for name, s in spec.items():
        print(f"  {name:<14} {s['passed']}/{s['total']}", flush=True)
    print("agreement on the mixed workload ...", flush=True)
    agree = agreement(variants)
    print(f"  {agree}", flush=True)
    print("speed ...", flush=True)
    fast = speed(variants, args.rounds)
    print("memory ...", flush=True)
    mem = memory(["hand", "mmh3", "yggdrasil"])
    print(f"  {mem}", flush=True)
    print(f"sticky buckets, {args.users:,} users ...", flush=True)
    sticky = buckets(variants, args.users)
    print(f"  {sticky}", flush=True)

    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "nice": os.nice(0)},
        "versions": {
            "mmh3": getattr(mmh3, "__version__", "5.3.1"),
            "yggdrasil_engine": "2.0.0",
            "yggdrasil_core": getattr(yggdrasil_engine, "__yggdrasil_core_version__", "?"),
        },
        "spec": spec,
        "agreement_on_mixed": agree,
        "speed": fast,
        "memory": mem,
        "buckets": sticky,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    print(
        "\n| variant | spec | repo evals/s | repo p99 us | mixed evals/s | mixed p99 us | import MB | moved |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in variants:
        s = spec[name]
        moved = sticky.get(name.removesuffix("-ffi"), {}).get("moved", 0 if name == "hand" else "-")
        mem_row = mem.get(name, {})
        print(
            f"| {name} | {s['passed']}/{s['total']} | {fast['repo'][name]['evals_per_s']:,} | "
            f"{fast['repo'][name]['p99_us']} | {fast['mixed'][name]['evals_per_s']:,} | "
            f"{fast['mixed'][name]['p99_us']} | {mem_row.get('import_mb', '-')} | {moved} |"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
