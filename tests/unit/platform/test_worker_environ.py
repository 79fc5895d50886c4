"""What a worker inherits from the control plane's environment: an allow-list, not everything."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mangaassist.platform.local.supervisor import RevisionSupervisor, worker_environ

SRC = Path(__file__).resolve().parents[3] / "src" / "mangaassist"


def test_only_the_allow_list_passes() -> None:
    environ = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "TMPDIR": "/tmp/x",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MANGAASSIST_HOME": "/state",
        "MANGAASSIST_ROOT": "/repo",
        "MANGAASSIST_FAULT": "error_rate=0.1",
        "MANGAASSIST_EMBEDDER": "hashing",
        "MANGAASSIST_CONFIG_URL": "http://127.0.0.1:9000",
        "MANGAASSIST_INTENT_URL": "http://127.0.0.1:8081",
        # never implicitly
        "MLFLOW_TRACKING_URI": "postgresql://user:pw@db/mlflow",
        "MANGAASSIST_STATE_URL": "postgresql://user:pw@db/state",
        "MANGAASSIST_TEST_PG_URL": "postgresql://user:pw@db/test",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "OPENAI_API_KEY": "sk-secret",
        "GITHUB_TOKEN": "ghp_secret",
        "PYTHONPATH": "/elsewhere",  # the supervisor builds PYTHONPATH itself
        "HTTPS_PROXY": "http://proxy:3128",
        "TESTAPP_STATUS": "500",  # a test workload's knob comes with the revision's env, not inherited
        "MANGAASSIST_HOMEX": "lookalike",
        "XLC_ALL": "lookalike",
    }
    passed = worker_environ(environ)
    assert passed == {
        k: environ[k]
        for k in (
            "PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
            "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MANGAASSIST_HOME",
            "MANGAASSIST_ROOT", "MANGAASSIST_FAULT", "MANGAASSIST_EMBEDDER", "MANGAASSIST_CONFIG_URL",
            "MANGAASSIST_INTENT_URL",
        )
    }  # fmt: skip


def _worker_variables() -> set[str]:
    """Every ``MANGAASSIST_*`` name the worker code (chatbot, model server, what they load) reads."""
    files = [*(SRC / "chatbot").rglob("*.py"), SRC / "platform" / "embeddings.py"]
    names: set[str] = set()
    for path in files:
        names |= set(re.findall(r"[\"'](MANGAASSIST_[A-Z0-9_]+)[\"']", path.read_text()))
    return names


# read by workers outside the chatbot package (platform.settings, platform.factory), or set by the
# control plane but also honoured when inherited
KNOWN_WORKER_VARIABLES = {
    "MANGAASSIST_ROOT", "MANGAASSIST_HOME", "MANGAASSIST_REVISION", "MANGAASSIST_PROVIDER",
    "MANGAASSIST_ENV", "MANGAASSIST_TORCH_THREADS",
}  # fmt: skip


def test_no_variable_a_worker_reads_is_lost() -> None:
    names = _worker_variables()
    # the scan finds what it must (it cannot silently find nothing)
    assert {"MANGAASSIST_FAULT", "MANGAASSIST_EMBEDDER", "MANGAASSIST_CONFIG_URL"} <= names
    assert {"MANGAASSIST_INTENT_URL", "MANGAASSIST_MODEL_PACKAGE", "MANGAASSIST_KB_REFRESH_SECONDS"} <= names
    names |= KNOWN_WORKER_VARIABLES
    environ = {name: "x" for name in names}
    assert sorted(names - set(worker_environ(environ))) == []


def test_the_supervisor_gives_workers_the_allow_list_plus_the_revisions_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///secret.db")
    monkeypatch.setenv("MANGAASSIST_STATE_URL", "postgresql://user:pw@db/state")
    monkeypatch.setenv("MANGAASSIST_FAULT", "error_rate=1")
    monkeypatch.setenv("MANGAASSIST_EMBEDDER", "hashing")
    monkeypatch.setenv("PYTHONPATH", "/extra")
    sup = RevisionSupervisor(
        name="chatbot-r2",
        app="mangaassist.platform.local.testing_app:create_app",
        workdir=tmp_path,
        env={"MANGAASSIST_REVISION": "r2", "MANGAASSIST_FAULT": "", "TESTAPP_STATUS": "500"},
        replicas=1,
        log_dir=tmp_path / "logs",
        on_change=lambda: None,
        on_pids=lambda: None,
    )
    assert "MLFLOW_TRACKING_URI" not in sup.env
    assert "MANGAASSIST_STATE_URL" not in sup.env
    assert sup.env["MANGAASSIST_FAULT"] == ""  # the revision's own value wins over the inherited one
    assert sup.env["MANGAASSIST_EMBEDDER"] == "hashing"
    assert sup.env["TESTAPP_STATUS"] == "500"
    assert sup.env["PYTHONPATH"].split(":") == [str(tmp_path), "/extra"]
    assert sup.revision == "r2"  # what readiness expects the workers to stamp


@pytest.mark.parametrize(
    ("inherited", "revision", "expected"),
    [(None, None, "1"), ("2", None, "2"), ("2", "3", "3"), (None, "4", "4")],
)
def test_workers_get_one_embedding_thread_unless_told_otherwise(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    inherited: str | None,
    revision: str | None,
    expected: str,
) -> None:
    """Workers share the cores: one embedding thread each by default (a worker with a thread per
    core stalls for up to a second when its threads lose the CPU); the control plane's environment
    and the revision's env may say otherwise, in that order."""
    if inherited is None:
        monkeypatch.delenv("MANGAASSIST_TORCH_THREADS", raising=False)
    else:
        monkeypatch.setenv("MANGAASSIST_TORCH_THREADS", inherited)
    env = {"MANGAASSIST_REVISION": "r3"}
    if revision is not None:
        env["MANGAASSIST_TORCH_THREADS"] = revision
    sup = RevisionSupervisor(
        name="chatbot-r3",
        app="mangaassist.platform.local.testing_app:create_app",
        workdir=tmp_path,
        env={"MANGAASSIST_REVISION": "r3"}
        | ({} if revision is None else {"MANGAASSIST_TORCH_THREADS": revision}),
        replicas=1,
        log_dir=tmp_path / "logs",
        on_change=lambda: None,
        on_pids=lambda: None,
    )
    assert sup.env["MANGAASSIST_TORCH_THREADS"] == expected


def test_a_revision_built_with_data_reads_its_own_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MANGAASSIST_DATA_DIR", "/repo/data")  # what the control plane was started with

    def supervisor(workdir: Path) -> RevisionSupervisor:
        return RevisionSupervisor(
            name="chatbot-r4",
            app="mangaassist.platform.local.testing_app:create_app",
            workdir=workdir,
            env={"MANGAASSIST_REVISION": "r4"},
            replicas=1,
            log_dir=tmp_path / "logs",
            on_change=lambda: None,
            on_pids=lambda: None,
        )

    (tmp_path / "with" / "revision-data").mkdir(parents=True)
    assert supervisor(tmp_path / "with").env["MANGAASSIST_DATA_DIR"] == str(
        tmp_path / "with" / "revision-data"
    )
    (tmp_path / "without").mkdir()
    assert supervisor(tmp_path / "without").env["MANGAASSIST_DATA_DIR"] == "/repo/data"  # inherited
