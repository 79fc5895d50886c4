"""One contract for ``ModelRegistry`` (``platform/model_registry.py``), the same assertions on both
providers: ``local`` is ``MlflowModelRegistry`` on a real MLflow store (SQLite and artifacts under
a temporary directory); ``aws`` is ``SageMakerModelRegistry`` on moto's server process.

What is covered is what CD-03 relies on (``delivery/pipelines/model.py``,
``delivery/model_promotion.py``): numbered versions oldest first with their metrics, params and
tags; ``get`` and ``alias``; ``promote`` (``champion`` to the target, ``previous`` to the old
champion) and ``rollback`` (``champion`` back, ``previous`` removed, a second rollback refused);
every alias move in ``history`` with who and why; ``download`` giving the registered files back;
``NotFoundError`` for an unknown model or version, ``ConfigError`` for a bad alias or package.

On moto (real requests to its server): S3 (packages, registration files, alias moves) and
SageMaker's ``CreateModelPackageGroup``, ``DescribeModelPackageGroup``, ``CreateModelPackage``,
``ListModelPackages``, ``DescribeModelPackage`` and ``UpdateModelPackage``.

Shimmed (``_MotoUpdateModelPackage``), because moto 5's ``UpdateModelPackage`` does not do what
SageMaker does: moto *replaces* ``CustomerMetadataProperties`` instead of merging them, resets
``ModelApprovalStatus`` and ``ApprovalDescription`` to none when the request leaves them out, and
answers 500 to ``CustomerMetadataPropertiesToRemove``. The shim rewrites each ``UpdateModelPackage``
request (after botocore validated it) into the one that gives SageMaker's result under moto's
semantics: it describes the package on moto, merges the added properties, drops the removed ones
and carries the status and description over; the request still goes to moto and the state lives
there. Nothing is stubbed with ``Stubber`` here (the exact SageMaker requests are asserted in
``tests/unit/platform/test_model_registry_sagemaker.py``).

Differences both sides keep (not asserted as equal): version ``tags`` on SageMaker also carry
``sagemaker.approval_status`` (the contract asserts the registered tags are there, not that they
are all); ``source`` is an MLflow artifact URI or an ``s3://`` URI; a model's name is 1-63
letters, digits and ``-`` on SageMaker (a model package group's name), more on MLflow.

Divergence found and fixed: moto answers a missing package version with a ``ValidationException``
"... not found", which ``SageMakerModelRegistry`` did not take as ``NotFoundError`` (it knew
"does not exist"); ``compute_sagemaker.is_not_found`` now takes both wordings.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from mangaassist.core.errors import ConfigError, NotFoundError
from mangaassist.delivery.model_promotion import promote, rollback
from mangaassist.platform.aws.model_registry_sagemaker import SageMakerModelRegistry
from mangaassist.platform.local.model_registry_mlflow import MlflowModelRegistry
from mangaassist.platform.model_registry import ModelRegistry
from tests.moto_server import client, moto_server

SIDES = ("local", "aws")
BUCKET = "contract-models"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mangaassist-intent:contract"


class _MotoUpdateModelPackage:
    """Rewrites ``UpdateModelPackage`` requests to moto's replace semantics (module docstring)."""

    def __init__(self, sagemaker: Any, endpoint: str) -> None:
        self.plain = client(endpoint, "sagemaker")  # no shim: reads what moto holds
        self.rewritten = 0
        sagemaker.meta.events.register("before-parameter-build.sagemaker.UpdateModelPackage", self)

    def __call__(self, params: dict[str, Any], **_: Any) -> None:
        found = self.plain.describe_model_package(ModelPackageName=params["ModelPackageArn"])
        merged = dict(found.get("CustomerMetadataProperties") or {})
        merged.update(params.get("CustomerMetadataProperties") or {})
        for key in params.pop("CustomerMetadataPropertiesToRemove", None) or []:
            merged.pop(key, None)
        params["CustomerMetadataProperties"] = merged
        params.setdefault("ModelApprovalStatus", found.get("ModelApprovalStatus"))
        if found.get("ApprovalDescription") is not None:
            params.setdefault("ApprovalDescription", found["ApprovalDescription"])
        self.rewritten += 1


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def mlflow_registry(tmp_path_factory: pytest.TempPathFactory) -> MlflowModelRegistry:
    home = tmp_path_factory.mktemp("contract-mlflow")
    return MlflowModelRegistry(f"sqlite:///{home / 'mlflow.db'}", home / "artifacts")


@pytest.fixture(scope="module")
def sagemaker_registry(moto_endpoint: str) -> Iterator[SageMakerModelRegistry]:
    s3 = client(moto_endpoint, "s3")
    s3.create_bucket(Bucket=BUCKET)
    sm = client(moto_endpoint, "sagemaker")
    shim = _MotoUpdateModelPackage(sm, moto_endpoint)
    yield SageMakerModelRegistry(sm, s3, bucket=BUCKET, image=IMAGE, prefix="registry/", group_prefix="ma-")
    assert shim.rewritten > 0, "no UpdateModelPackage went through the shim"


@pytest.fixture(params=SIDES)
def registry(request: pytest.FixtureRequest) -> ModelRegistry:
    fixture = {"local": "mlflow_registry", "aws": "sagemaker_registry"}[request.param]
    side: ModelRegistry = request.getfixturevalue(fixture)
    return side


@pytest.fixture
def name() -> str:
    """A model of its own per test (both stores live for the module)."""
    return f"intent-{uuid4().hex[:8]}"


def _package(root: Path, label: str) -> Path:
    package = root / f"package-{label}"
    (package / "classifier").mkdir(parents=True)
    (package / "model.joblib").write_bytes(f"fitted classifier {label}".encode() + bytes(range(256)))
    (package / "classifier" / "labels.json").write_text('["order_status", "recommend", "返品"]')
    return package


def _register(registry: ModelRegistry, name: str, root: Path, label: str, accuracy: float) -> str:
    made = registry.register(
        name,
        _package(root, label),
        metrics={"accuracy": accuracy, "macro_f1": accuracy - 0.05},
        params={"C": "1.0", "label": label},
        tags={"package_version": label},
    )
    return made.version


def _moves(registry: ModelRegistry, name: str) -> list[tuple[Any, ...]]:
    return [
        (m["alias"], m["version"], m["previous"], m["actor"], m["reason"]) for m in registry.history(name)
    ]


def test_register_numbers_versions_and_keeps_metrics_params_and_tags(
    registry: ModelRegistry, name: str, tmp_path: Path
) -> None:
    first = registry.register(
        name,
        _package(tmp_path, "a"),
        metrics={"accuracy": 0.91, "macro_f1": 0.875},
        params={"C": "1.0", "ngram": "1-2"},
        tags={"package_version": "a", "trained_by": "ci"},
    )
    assert (first.name, first.version, first.aliases) == (name, "1", ())
    assert first.metrics == {"accuracy": 0.91, "macro_f1": 0.875}
    assert first.params == {"C": "1.0", "ngram": "1-2"}
    assert {"package_version": "a", "trained_by": "ci"}.items() <= first.tags.items()
    assert first.created_at.endswith("+00:00") and first.source

    second = _register(registry, name, tmp_path, "b", 0.93)
    assert second == "2"
    assert registry.get(name, "1") == first
    listed = registry.versions(name)
    assert [v.version for v in listed] == ["1", "2"]  # oldest first
    assert [v.tags["package_version"] for v in listed] == ["a", "b"]
    assert listed[1].metrics["accuracy"] == pytest.approx(0.93)


def test_unknown_models_and_versions(registry: ModelRegistry, name: str, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        registry.get(name, "1")  # no such model
    assert registry.versions(name) == []
    assert registry.alias(name, "champion") is None
    assert registry.history(name) == []
    with pytest.raises(NotFoundError):
        registry.set_alias(name, "candidate", "1", actor="ci")

    _register(registry, name, tmp_path, "a", 0.9)
    for missing in ("2", "0", "latest"):
        with pytest.raises(NotFoundError):
            registry.get(name, missing)
    with pytest.raises(NotFoundError):
        registry.set_alias(name, "champion", "7", actor="ci")  # refused before anything moves
    assert registry.alias(name, "champion") is None
    assert registry.history(name) == []
    with pytest.raises(NotFoundError):
        registry.download(name, "2", tmp_path / "downloads")


def test_bad_aliases_and_packages_are_config_errors(
    registry: ModelRegistry, name: str, tmp_path: Path
) -> None:
    version = _register(registry, name, tmp_path, "a", 0.9)
    with pytest.raises(ConfigError):
        registry.set_alias(name, "production", version, actor="ci")
    with pytest.raises(ConfigError):
        registry.alias(name, "latest")
    not_a_directory = tmp_path / "model.joblib"
    not_a_directory.write_bytes(b"bytes")
    with pytest.raises(ConfigError):
        registry.register(name, not_a_directory, metrics={}, params={})
    assert [v.version for v in registry.versions(name)] == [version]
    assert registry.history(name) == []


def test_candidate_alias_moves_and_is_reported_on_versions(
    registry: ModelRegistry, name: str, tmp_path: Path
) -> None:
    v1 = _register(registry, name, tmp_path, "a", 0.9)
    v2 = _register(registry, name, tmp_path, "b", 0.92)
    registry.set_alias(name, "candidate", v1, actor="trainer", reason="trained a")
    found = registry.alias(name, "candidate")
    assert found is not None and (found.version, found.aliases) == (v1, ("candidate",))

    registry.set_alias(name, "candidate", v2, actor="trainer", reason="trained b")
    found = registry.alias(name, "candidate")
    assert found is not None and found.version == v2 and found.tags["package_version"] == "b"
    assert {v.version: v.aliases for v in registry.versions(name)} == {v1: (), v2: ("candidate",)}
    assert registry.get(name, v2).aliases == ("candidate",)

    registry.delete_alias(name, "candidate", actor="ci", reason="rejected")
    assert registry.alias(name, "candidate") is None
    registry.delete_alias(name, "candidate", actor="ci", reason="nothing to remove")  # a no-op
    assert _moves(registry, name) == [
        ("candidate", v1, None, "trainer", "trained a"),
        ("candidate", v2, v1, "trainer", "trained b"),
        ("candidate", None, v2, "ci", "rejected"),
    ]


def test_promotion_and_rollback_as_the_pipeline_does_them(
    registry: ModelRegistry, name: str, tmp_path: Path
) -> None:
    v1 = _register(registry, name, tmp_path, "a", 0.9)
    v2 = _register(registry, name, tmp_path, "b", 0.92)

    first = promote(registry, name, v1, actor="alice", reason="first model")
    assert (first.champion_before, first.champion, first.previous) == (None, v1, None)
    with pytest.raises(ConfigError):
        promote(registry, name, v1, actor="alice")  # already the champion
    with pytest.raises(NotFoundError):
        promote(registry, name, "9", actor="alice")

    registry.set_alias(name, "candidate", v2, actor="trainer", reason="trained b")
    second = promote(registry, name, v2, actor="bob", reason="canary passed")
    assert (second.champion_before, second.champion, second.previous) == (v1, v2, v1)
    champion, previous = registry.alias(name, "champion"), registry.alias(name, "previous")
    assert champion is not None and champion.version == v2
    assert previous is not None and previous.version == v1
    assert champion.aliases == ("candidate", "champion")  # in ALIASES order
    assert {v.version: v.aliases for v in registry.versions(name)} == {
        v1: ("previous",),
        v2: ("candidate", "champion"),
    }

    back = rollback(registry, name, actor="carol", reason="latency regression")
    assert (back.champion_before, back.champion, back.previous) == (v2, v1, None)
    champion = registry.alias(name, "champion")
    assert champion is not None and champion.version == v1
    assert registry.alias(name, "previous") is None
    with pytest.raises(NotFoundError):
        rollback(registry, name, actor="carol")  # nothing left to roll back to

    assert _moves(registry, name) == [
        ("champion", v1, None, "alice", "first model"),
        ("candidate", v2, None, "trainer", "trained b"),
        ("previous", v1, None, "bob", "canary passed"),
        ("champion", v2, v1, "bob", "canary passed"),
        ("champion", v1, v2, "carol", "latency regression"),
        ("previous", None, v1, "carol", "latency regression"),
    ]
    assert all(m["at"].endswith("+00:00") for m in registry.history(name))


def test_download_gives_the_registered_files_back(registry: ModelRegistry, name: str, tmp_path: Path) -> None:
    package = _package(tmp_path, "a")
    version = registry.register(name, package, metrics={"accuracy": 0.9}, params={}).version
    _register(registry, name, tmp_path, "b", 0.91)

    got = registry.download(name, version, tmp_path / "downloads")
    assert got == tmp_path / "downloads" / f"{name}-v{version}" and got.is_dir()
    files = {p.relative_to(got).as_posix(): p.read_bytes() for p in got.rglob("*") if p.is_file()}
    assert files == {
        p.relative_to(package).as_posix(): p.read_bytes() for p in package.rglob("*") if p.is_file()
    }
    assert registry.download(name, version, tmp_path / "downloads") == got  # versions never change
    other = registry.download(name, "2", tmp_path / "downloads")
    assert other != got and b"fitted classifier b" in (other / "model.joblib").read_bytes()
