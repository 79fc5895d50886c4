"""Hostile or careless files handed to every YAML reader of the delivery system (config profiles,
``policy.yaml``, SLO specs, migrations, the model's and the embedding release's settings): each is
refused with an error naming the file, quickly, never with a traceback, and nothing is built from it
(``core.safeyaml``). The corpus and how it was made: ``tests/fixtures/hostile/README.md``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mangaassist.chatbot.intent_training import TrainingConfig
from mangaassist.core import safeyaml
from mangaassist.core.errors import ConfigError
from mangaassist.core.flags import FlagSet
from mangaassist.core.resources import load_declaration
from mangaassist.delivery.config_profiles import load_document
from mangaassist.delivery.embedding_release import ReleaseConfig
from mangaassist.delivery.engine.policy import load_policy
from mangaassist.delivery.migrations.spec import load_migration
from mangaassist.delivery.model_gate import GateConfig
from mangaassist.delivery.monitoring.slo import load_slos

ROOT = Path(__file__).parents[2]
HOSTILE = ROOT / "tests" / "fixtures" / "hostile"
WHY = {
    "alias-bomb.yaml": "anchors (&a0) are not accepted",
    "binary.yaml": "not a text file",
    "not-utf8.yaml": "not a text file (not UTF-8",
    "nul.yaml": "control character 0x00",
    "deep.yaml": "nested deeper than 64 levels",
    "too-large.yaml": "over the limit of 1,048,576",
}


def _corpus(tmp_path: Path) -> list[Path]:
    files = [HOSTILE / name for name in WHY if (HOSTILE / name).exists()]
    big = tmp_path / "too-large.yaml"
    big.write_text("key: " + "x" * safeyaml.MAX_BYTES + "\n")
    return [*files, big]


def _migration(path: Path) -> Any:
    return load_migration(path, load_declaration(ROOT / "infra" / "resources.toml"))


READERS: dict[str, Callable[[Path], Any]] = {
    "config profile": load_document,
    "policy": load_policy,
    "SLO spec": lambda path: load_slos([path]),
    "migration": _migration,
    "model gate": GateConfig.load,
    "model training": TrainingConfig.load,
    "embedding release": lambda path: ReleaseConfig.load(path, ROOT),
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_reader_refuses_every_hostile_file_quickly_naming_it(reader: str, tmp_path: Path) -> None:
    for path in _corpus(tmp_path):
        started = time.perf_counter()
        with pytest.raises(ConfigError) as caught:
            READERS[reader](path)
        took = time.perf_counter() - started
        message = str(caught.value)
        assert str(path) in message, (reader, path.name, message)
        assert WHY[path.name] in message, (reader, path.name, message)
        assert took < 1.0, (reader, path.name, took)


def test_an_alias_bomb_is_refused_at_its_first_anchor_with_the_line() -> None:
    with pytest.raises(ConfigError, match=r"alias-bomb\.yaml:1: not valid YAML: anchors \(&a0\)"):
        safeyaml.load_bytes((HOSTILE / "alias-bomb.yaml").read_bytes(), str(HOSTILE / "alias-bomb.yaml"))


def test_an_alias_alone_is_refused_too() -> None:
    with pytest.raises(ConfigError, match=r"t\.yaml:1: not valid YAML: aliases \(\*x\) are not accepted"):
        safeyaml.load("a: *x\n", "t.yaml")


def test_plain_documents_still_load_with_their_values() -> None:
    text = "name: prompts\nlist: [1, 2]\nnested: {a: {b: [x, y]}}\nquoted: '&not-an-anchor *nor-alias'\n"
    assert safeyaml.load(text, "t.yaml") == {
        "name": "prompts",
        "list": [1, 2],
        "nested": {"a": {"b": ["x", "y"]}},
        "quoted": "&not-an-anchor *nor-alias",
    }
    with pytest.raises(ConfigError, match="could not determine a constructor"):
        safeyaml.load("x: !!python/object/apply:os.system ['true']\n", "t.yaml")


def test_config_validate_names_a_hostile_profile_and_json_stays_json(tmp_path: Path) -> None:
    config = tmp_path / "config"
    shutil.copytree(ROOT / "config", config)
    shutil.copy(HOSTILE / "alias-bomb.yaml", config / "prompts.yaml")
    before = {p: p.read_bytes() for p in config.rglob("*") if p.is_file()}
    cli = [
        sys.executable,
        "-m",
        "mangaassist.cli.main",
        "config",
        "validate",
        "prompts",
        "--dir",
        str(config),
    ]
    started = time.perf_counter()
    plain = subprocess.run(cli, capture_output=True, text=True, timeout=60, check=False)
    as_json = subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=60, check=False)
    assert time.perf_counter() - started < 30  # two interpreter starts; the refusal itself is instant
    assert plain.returncode == 2 and "Traceback" not in plain.stderr + plain.stdout
    assert "anchors (&a0) are not accepted" in plain.stdout + plain.stderr
    error = json.loads(as_json.stdout)
    assert as_json.returncode == 2 and "anchors (&a0) are not accepted" in json.dumps(error)
    assert {p: p.read_bytes() for p in config.rglob("*") if p.is_file()} == before


def test_a_flag_constraint_with_a_catastrophic_regex_is_evaluated_in_linear_time() -> None:
    flags = FlagSet(
        {
            "features": [
                {
                    "name": "beta",
                    "enabled": True,
                    "strategies": [
                        {
                            "name": "default",
                            "constraints": [
                                {"contextName": "userId", "operator": "REGEX", "value": "(a+)+$"}
                            ],
                        }
                    ],
                }
            ]
        }
    )
    started = time.perf_counter()
    assert flags.is_enabled("beta", {"userId": "a" * 50_000 + "!"}) is False
    assert time.perf_counter() - started < 0.5
    assert flags.is_enabled("beta", {"userId": "aaaa"}) is True
