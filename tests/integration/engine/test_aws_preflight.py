"""A run in an aws environment is refused before anything is recorded or changed when the
environment lacks its region, AWS credentials or the shared state database: the real CLI, a
temporary config, no AWS anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mangaassist.core.errors import ConfigError
from mangaassist.delivery.engine.state import StateStore
from mangaassist.views.runs import preflight
from tests.integration.engine.conftest import aws_free_env

MANGAASSIST = Path(sys.executable).with_name("mangaassist")
CONFIG = """\
[environments.dev]
provider = "local"
home = "home"

[environments.staging]
provider = "aws"
[environments.staging.aws]
region = "eu-west-1"

[environments.prod]
provider = "aws"
"""


@pytest.fixture
def no_aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """An environment with no AWS credentials anywhere boto3 looks (variables, files, profiles)."""
    env = aws_free_env(tmp_path, CONFIG)
    for key in [k for k in os.environ if k.startswith("AWS_") or k == "MANGAASSIST_STATE_URL"]:
        monkeypatch.delenv(key)
    for key in (
        "MANGAASSIST_PLATFORM_CONFIG",
        "MANGAASSIST_HOME",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
    ):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return env


def test_every_missing_piece_is_named(
    no_aws: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    with pytest.raises(ConfigError) as staging:
        preflight("staging", store)
    text = str(staging.value)
    assert "environment staging (aws) cannot start a run, nothing was changed" in text
    assert "no AWS credentials" in text and "MANGAASSIST_STATE_URL=postgresql://" in text
    assert "region is required" not in text
    with pytest.raises(ConfigError, match=r"\[environments\.prod\.aws\] region is required"):
        preflight("prod", store)
    preflight("dev", store)  # a local environment needs none of it
    preflight("no-such-environment", store)  # a test or demo pipeline's environment: nothing to check

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example")
    with pytest.raises(ConfigError) as only_state:
        preflight("staging", store)
    assert "no AWS credentials" not in str(only_state.value) and "MANGAASSIST_STATE_URL" in str(
        only_state.value
    )


def test_a_deploy_to_staging_without_them_changes_nothing(no_aws: dict[str, str]) -> None:
    done = subprocess.run(
        [str(MANGAASSIST), "deploy", "app", "--env", "staging", "--yes", "--json"],
        env=no_aws,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    error = json.loads(done.stdout)["error"]
    assert "no AWS credentials" in error and "MANGAASSIST_STATE_URL" in error
    listed = subprocess.run(
        [str(MANGAASSIST), "runs", "list", "--json"], env=no_aws, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stdout  # no run recorded
