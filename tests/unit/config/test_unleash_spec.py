"""The Unleash client specification's evaluation suites (01-18, 21, 22) against ``core.flags``.

The suites used are vendored, with the specification's licence and source, in
``tests/fixtures/unleash-client-specification`` (``MANGAASSIST_UNLEASH_SPEC`` points elsewhere).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from mangaassist.core.flags import VARIANT_SEED, FlagSet, config_bucket, murmur3_32, normalized_value

SPEC_DIR = (
    Path(
        os.environ.get(
            "MANGAASSIST_UNLEASH_SPEC",
            Path(__file__).resolve().parents[2] / "fixtures" / "unleash-client-specification",
        )
    )
    / "specifications"
)
SUITES = [f"{n:02d}" for n in (*range(1, 19), 21, 22)]


def _suite(prefix: str) -> dict[str, Any]:
    assert SPEC_DIR.is_dir(), f"Unleash client specification not found at {SPEC_DIR}"
    matches = sorted(SPEC_DIR.glob(f"{prefix}-*.json"))
    assert matches, f"suite {prefix} missing from {SPEC_DIR}"
    data: dict[str, Any] = json.loads(matches[0].read_text(encoding="utf-8"))
    return data


def _cases(kind: str) -> list[Any]:
    out = []
    for prefix in SUITES:
        suite = _suite(prefix)
        for i, case in enumerate(suite.get(kind, [])):
            out.append(pytest.param(prefix, case, id=f"{prefix}-{i}-{case['description'][:60]}"))
    return out


@pytest.mark.parametrize(("prefix", "case"), _cases("tests"))
def test_is_enabled_matches_the_specification(prefix: str, case: dict[str, Any]) -> None:
    flags = FlagSet(_suite(prefix)["state"])
    assert flags.is_enabled(case["toggleName"], case["context"]) is case["expectedResult"], case[
        "description"
    ]


@pytest.mark.parametrize(("prefix", "case"), _cases("variantTests"))
def test_get_variant_matches_the_specification(prefix: str, case: dict[str, Any]) -> None:
    flags = FlagSet(_suite(prefix)["state"])
    got = flags.get_variant(case["toggleName"], case["context"]).as_dict()
    expected = dict(case["expectedResult"])
    if "feature_enabled" not in expected:  # older suites do not state it
        got.pop("feature_enabled")
    assert got == expected, case["description"]


def test_every_evaluation_suite_is_exercised() -> None:
    assert SPEC_DIR.is_dir(), f"no Unleash spec at {SPEC_DIR} (vendored under tests/fixtures)"
    counted = sum(len(_suite(p).get("tests", [])) + len(_suite(p).get("variantTests", [])) for p in SUITES)
    assert counted >= 250


def test_murmur3_reference_vectors() -> None:
    # published MurmurHash3_x86_32 vectors (SMHasher / the reference implementation)
    assert murmur3_32(b"", 0) == 0
    assert murmur3_32(b"", 1) == 0x514E28B7
    assert murmur3_32(b"hello", 0) == 0x248BFA47
    assert murmur3_32(b"The quick brown fox jumps over the lazy dog", 0) == 0x2E4FF723
    assert murmur3_32("Hellø", 0) == murmur3_32("Hellø".encode(), 0)


def test_normalized_value_is_in_range_and_config_bucket_follows_the_published_rule() -> None:
    assert all(1 <= normalized_value(str(i), "g") <= 100 for i in range(500))
    assert config_bucket("prompts", "s-1") == murmur3_32("prompts:s-1", 0) % 10_000


# Buckets computed with the pure-Python murmur3 core/flags.py carried before ADR 0011: sticky
# bucketing means no id may ever change bucket (every tail length 0..3, non-ASCII, long ids).
_PINNED_IDS = [
    "", "a", "ab", "abc", "abcd", "abcde", "u-1", "s-7f3a9c", "Hellø", "顧客-42", "user@example.com",
    "123e4567-e89b-12d3-a456-426614174000",
]


def test_buckets_are_the_ones_existing_users_are_on() -> None:
    assert [murmur3_32(i, 0) for i in _PINNED_IDS] == [
        0, 1009084850, 2613040991, 3017643002, 1139631978, 3902511862, 2107383395, 3407126935,
        567617844, 604628317, 1104125020, 439536286,
    ]
    assert [normalized_value(i, "handoff-offer") for i in _PINNED_IDS] == [
        48, 61, 20, 73, 50, 20, 32, 65, 28, 13, 75, 92,
    ]
    assert [normalized_value(i, "prompt-style", 1000, VARIANT_SEED) for i in _PINNED_IDS] == [
        758, 329, 202, 45, 427, 882, 424, 790, 164, 610, 303, 676,
    ]
    assert [config_bucket("prompts", i) for i in _PINNED_IDS] == [
        7590, 9127, 6649, 4665, 8852, 4441, 7031, 2096, 4112, 2921, 4323, 7282,
    ]


def test_murmur3_takes_any_seed_modulo_two_to_the_32() -> None:
    assert murmur3_32("x", -1) == murmur3_32("x", 0xFFFFFFFF)
    assert murmur3_32("x", 1 << 32) == murmur3_32("x", 0)
