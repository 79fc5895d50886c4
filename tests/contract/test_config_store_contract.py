"""One contract for ``ConfigStore`` (``platform/config_store.py``), the same assertions on both
providers: ``local`` is ``HttpConfigStore`` against a real config server process (SQLite under a
temporary home); ``aws`` is ``AppConfigStore`` against moto's server process. The sides are in
``tests/contract/_sides_config.py``, whose docstring lists the calls on moto (applications,
configuration profiles, hosted versions; CloudWatch's metrics) and the ones a documented shim
answers through botocore's event hooks because moto lacks them (``ListApplications``,
environments, deployment strategies, deployments, ``ListHostedConfigurationVersions`` and the
whole ``appconfigdata`` data API). No ``Stubber`` queue: the calls' order is the provider's
business; their exact shapes are asserted in ``tests/unit/platform/test_config_appconfig.py``.

What is covered is what CD-06 relies on (``delivery/pipelines/config.py``): ``create_version``
idempotent by content (``PROFILE-<digest>``), ``version``/``versions`` oldest first; the first
version promoted directly, later ones rolled out to a percentage of session buckets, promoted or
aborted; ``previous_stable`` (the rollback target) from the history's promotions; a worker's read
(a new client) seeing what was deployed; the history with who, what and why; per-version
observations the judge compares; ``ConfigStoreError`` for an unknown version, a candidate without
a stable version and a percentage outside 0..100, with nothing changed.

Inherent differences (asserted as what both promise, documented in docs/aws.md):

* ``Observations.latencies_ms``: the local server keeps each reported latency; CloudWatch keeps no
  raw samples, so ``AppConfigStore`` returns it empty (the CD-06 judge compares rates on AWS;
  ``latency_percentiles`` gives p50/p90/p99). The contract asserts the counts only.
* The AWS unknown-version error is also a ``core.errors.NotFoundError``; the contract asserts the
  ``ConfigStoreError`` both raise.
* A worker's read on AWS goes through AppConfig's data API, which a client may poll only every
  ``poll_seconds`` (15 s at least): a client sees its own writes at once, another client's within
  its poll interval. The contract reads with a new client each time (a worker that just started).
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest

from mangaassist.core.configspec import version_of
from mangaassist.delivery.pipelines.config import cursor_of, previous_stable
from mangaassist.platform.config_store import ConfigStoreError, Observations, Rollout
from tests.contract._sides_config import (
    AppConfigShim,
    AwsConfigSide,
    ConfigSide,
    LocalConfigSide,
    config_server,
)
from tests.moto_server import moto_server

SIDES = ("local", "aws")

RUNTIME_V1 = {
    "retrieval": {"top_k": 5, "min_score": 0.35},
    "llm": {"temperature": 0.2},
    "greeting": "いらっしゃいませ",
}
RUNTIME_V2 = {**RUNTIME_V1, "retrieval": {"top_k": 8, "min_score": 0.3}}
RUNTIME_V3 = {**RUNTIME_V1, "llm": {"temperature": 0.0}}


@pytest.fixture(scope="module")
def local_side(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalConfigSide]:
    with config_server(tmp_path_factory.mktemp("contract-config") / "home") as url:
        side = LocalConfigSide(url)
        yield side
        side.close()


@pytest.fixture(scope="module")
def aws_shim() -> Iterator[tuple[str, AppConfigShim]]:
    with moto_server() as endpoint:
        shim = AppConfigShim(endpoint)
        yield endpoint, shim
        # every operation the shim stands in for was needed (else it should not be shimmed)
        assert set(shim.answered) == set(AppConfigShim.CONTROL + AppConfigShim.DATA), shim.answered


@pytest.fixture(scope="module")
def aws_side(aws_shim: tuple[str, AppConfigShim]) -> AwsConfigSide:
    return AwsConfigSide(*aws_shim)


@pytest.fixture(params=SIDES)
def side(request: pytest.FixtureRequest) -> ConfigSide:
    chosen: ConfigSide = request.getfixturevalue(f"{request.param}_side")
    return chosen


@pytest.fixture
def profile() -> str:
    """A profile of its own per test (the stores live for the module)."""
    return f"runtime{uuid4().hex[:8]}"


def _events(side: ConfigSide, profile: str) -> list[tuple[object, ...]]:
    return [
        (e["action"], e["version"], e["percentage"], e["actor"], e["reason"])
        for e in side.store().history(profile)
    ]


def test_versions_are_named_by_content_and_created_once(side: ConfigSide, profile: str) -> None:
    store = side.store()
    first = store.create_version(profile, RUNTIME_V1, author="alice", message="tune retrieval 検索")
    assert first.version == version_of(profile, RUNTIME_V1)
    assert (first.profile, first.content, first.author, first.message) == (
        profile,
        RUNTIME_V1,
        "alice",
        "tune retrieval 検索",
    )
    assert first.created_at.endswith("+00:00")
    again = side.store().create_version(
        profile, dict(reversed(RUNTIME_V1.items())), author="bob", message="x"
    )
    assert again == first  # the same content (keys in any order) is the same version, unchanged
    second = store.create_version(profile, RUNTIME_V2, author="bob")
    assert second.version == version_of(profile, RUNTIME_V2) != first.version

    reader = side.store()
    assert [v.version for v in reader.versions(profile)] == [first.version, second.version]
    assert reader.version(profile, first.version) == first
    assert reader.version(profile, second.version).content == RUNTIME_V2
    assert _events(side, profile) == [
        ("create", first.version, None, "alice", "tune retrieval 検索"),
        ("create", second.version, None, "bob", ""),
    ]


def test_an_unknown_profile_or_version(side: ConfigSide, profile: str) -> None:
    store = side.store()
    assert store.versions(profile) == []
    assert store.rollout(profile) == Rollout(profile, None, None, 0.0, 0)
    assert store.history(profile) == []
    assert store.observations(profile) == {}
    with pytest.raises(ConfigStoreError):
        store.version(profile, f"{profile}-000000000000")
    with pytest.raises(ConfigStoreError):
        store.promote(profile, f"{profile}-000000000000", actor="ci")

    made = store.create_version(profile, RUNTIME_V1, author="ci").version
    with pytest.raises(ConfigStoreError):
        store.version(profile, f"{profile}-000000000000")
    with pytest.raises(ConfigStoreError):
        store.set_rollout(profile, candidate=made, percentage=10, actor="ci")  # no stable version yet
    store.promote(profile, made, actor="ci", reason="first version")
    for bad in (
        {"candidate": f"{profile}-000000000000", "percentage": 10.0},
        {"candidate": made, "percentage": 101.0},
    ):
        with pytest.raises(ConfigStoreError):
            store.set_rollout(profile, actor="ci", **bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigStoreError):
        store.set_rollout(profile, candidate=made, percentage=-1, actor="ci")
    assert side.store().rollout(profile) == Rollout(profile, made, None, 0.0, 1)  # nothing changed
    assert [e[0] for e in _events(side, profile)] == ["create", "promote"]


def test_a_rollout_promoted_then_rolled_back(side: ConfigSide, profile: str) -> None:
    """The config pipeline's path: first version, phases, promotion, then the rollback pipeline."""
    store = side.store()
    v1 = store.create_version(profile, RUNTIME_V1, author="alice").version
    assert store.rollout(profile).stable is None
    first = store.promote(profile, v1, actor="alice", reason="first version")
    assert first == Rollout(profile, v1, None, 0.0, 1)
    assert side.store().rollout(profile) == first  # what a worker reads
    assert previous_stable(store, profile) is None

    v2 = store.create_version(profile, RUNTIME_V2, author="bob").version
    assert store.set_rollout(profile, candidate=v2, percentage=10, actor="bob", reason="step 10%") == Rollout(
        profile, v1, v2, 10.0, 2
    )
    assert side.store().rollout(profile) == Rollout(profile, v1, v2, 10.0, 2)
    store.set_rollout(profile, candidate=v2, percentage=50, actor="bob", reason="step 50%")
    assert side.store().rollout(profile) == Rollout(profile, v1, v2, 50.0, 3)
    promoted = store.promote(profile, v2, actor="bob", reason="rollout passed")
    assert promoted == Rollout(profile, v2, None, 0.0, 4)
    assert side.store().rollout(profile) == promoted
    assert previous_stable(side.store(), profile) == v1

    back = side.store().promote(profile, v1, actor="田中", reason="ロールバック: 返品の回答")  # _move_pointer
    assert back == Rollout(profile, v1, None, 0.0, 5)
    assert side.store().rollout(profile) == back
    assert previous_stable(side.store(), profile) == v2
    assert _events(side, profile) == [
        ("create", v1, None, "alice", ""),
        ("promote", v1, 100.0, "alice", "first version"),
        ("create", v2, None, "bob", ""),
        ("rollout", v2, 10.0, "bob", "step 10%"),
        ("rollout", v2, 50.0, "bob", "step 50%"),
        ("promote", v2, 100.0, "bob", "rollout passed"),
        ("promote", v1, 100.0, "田中", "ロールバック: 返品の回答"),
    ]
    history = side.store().history(profile)
    assert [e["at"] for e in history] == sorted(e["at"] for e in history)


def test_an_aborted_rollout_leaves_the_stable_version(side: ConfigSide, profile: str) -> None:
    store = side.store()
    v1 = store.create_version(profile, RUNTIME_V1, author="alice").version
    store.promote(profile, v1, actor="alice")
    v3 = store.create_version(profile, RUNTIME_V3, author="bob").version
    store.set_rollout(profile, candidate=v3, percentage=20, actor="bob", reason="step 20%")
    # the judge's restore, and the rollback step (percentage is forced to 0 with no candidate)
    aborted = store.set_rollout(profile, candidate=None, percentage=30, actor="judge", reason="rolled back")
    assert aborted == Rollout(profile, v1, None, 0.0, 3)
    assert side.store().rollout(profile) == aborted
    assert [v.version for v in side.store().versions(profile)] == [v1, v3]  # versions are kept
    assert _events(side, profile)[-2:] == [
        ("rollout", v3, 20.0, "bob", "step 20%"),
        ("abort", None, 0.0, "judge", "rolled back"),
    ]
    assert previous_stable(store, profile) is None  # an abort promotes nothing


def test_observations_per_version_add_up(side: ConfigSide, profile: str) -> None:
    store = side.store()
    v1 = store.create_version(profile, RUNTIME_V1, author="ci").version
    v2 = store.create_version(profile, RUNTIME_V2, author="ci").version
    assert store.observations(profile) == {}
    side.report(profile, v1, Observations(requests=40, errors=1, fallbacks=3, latencies_ms=[120.0, 80.5]))
    side.report(profile, v2, Observations(requests=10, guardrails=2, feedback=4, thumbs_down=1))
    side.report(profile, v1, Observations(requests=5, errors=2, feedback=1, latencies_ms=[95.0]))

    seen = side.store().observations(profile)
    counts = {
        v: (o.requests, o.errors, o.fallbacks, o.guardrails, o.feedback, o.thumbs_down)
        for v, o in seen.items()
    }
    assert counts == {v1: (45, 3, 3, 0, 1, 0), v2: (10, 0, 0, 2, 4, 1)}
    assert cursor_of(seen)[v1]["requests"] == 45  # what the judge's windows start from
    # every latency kept (local), or none (AWS: CloudWatch keeps no raw samples), never some
    assert sorted(seen[v1].latencies_ms) in ([], [80.5, 95.0, 120.0])
    assert side.store().observations(f"{profile}x") == {}  # per profile
