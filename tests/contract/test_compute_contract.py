"""The ``Compute`` contract: what CD-01's steps and rollout phases rely on, the same assertions on
the local platform (a real control plane), on ECS behind an ALB and on Lambda versions behind a
weighted alias (both on moto's server; conftest.py).

Relied on: a first revision takes all traffic, a new one none until weights move it; weights are
percentages adding up to 100, read back as set; a pin (``Compute.pin``: a URL and headers) reaches a
revision at 0% (locally by a real request to it; on Lambda it is the function URL of the revision's
own alias, which moto stores but does not serve over HTTP); a revision that never gets ready is
UNHEALTHY with a reason and no traffic; a weighted revision cannot be retired, a retired one is gone
from routing and a pin taken before reaches nothing of it.
"""

from __future__ import annotations

import pytest

from mangaassist.core.errors import ConfigError, MangaAssistError, NotFoundError
from mangaassist.platform.compute import PIN_HEADER, RevisionHealth
from tests.contract.conftest import Side, side_named

pytestmark = pytest.mark.slow  # the local side starts a control plane and workers


@pytest.fixture(params=["local", "aws", "lambda"])
def side(request: pytest.FixtureRequest) -> Side:
    return side_named(request, request.param)


def _live(side: Side, service: str) -> dict[str, RevisionHealth]:
    return {
        r.name: r.health
        for r in side.compute.status(service).revisions
        if r.health is not RevisionHealth.RETIRED
    }


def test_a_first_revision_takes_all_traffic_and_a_new_one_none(side: Side) -> None:
    c = side.compute
    first = c.deploy("first", side.revision("r1"), timeout_s=60)
    assert first.health is RevisionHealth.HEALTHY, first.reason
    assert first.weight == pytest.approx(100.0)
    assert first.digest == side.revision("r1").artifact.digest
    second = c.deploy("first", side.revision("r2"), timeout_s=60)
    assert second.health is RevisionHealth.HEALTHY, second.reason
    assert second.weight == 0.0
    status = c.status("first")
    assert dict(status.weights) == pytest.approx({"r1": 100.0})
    assert _live(side, "first") == {"r1": RevisionHealth.HEALTHY, "r2": RevisionHealth.HEALTHY}
    assert all(r.replicas == 1 for r in status.revisions)
    assert status.shadow is None
    assert "first" in c.services()
    assert c.url("first").startswith("http")
    assert side.routed_to("first", {}) == "r1"
    # deploying the same revision again is that revision (a resumed step repeats its deploy)
    again = c.deploy("first", side.revision("r2"), timeout_s=60)
    assert again.name == "r2" and again.health is RevisionHealth.HEALTHY
    with pytest.raises(MangaAssistError):  # the same name with other contents is refused
        c.deploy("first", side.revision("r2", OTHER="1"), timeout_s=60)


def test_weights_adding_up_to_100_are_read_back(side: Side) -> None:
    c = side.compute
    c.deploy("weights", side.revision("r1"), timeout_s=60)
    c.deploy("weights", side.revision("r2"), timeout_s=60)
    applied = c.set_weights("weights", {"r1": 90.0, "r2": 10.0})
    assert dict(applied) == pytest.approx({"r1": 90.0, "r2": 10.0})
    assert dict(c.status("weights").weights) == pytest.approx({"r1": 90.0, "r2": 10.0})
    assert {r.name: r.weight for r in c.status("weights").revisions} == pytest.approx(
        {"r1": 90.0, "r2": 10.0}
    )
    c.set_weights("weights", {"r1": 2.5, "r2": 97.5})
    assert dict(c.status("weights").weights) == pytest.approx({"r1": 2.5, "r2": 97.5})
    c.set_weights("weights", {"r2": 100.0})  # left out: 0
    assert dict(c.status("weights").weights) == pytest.approx({"r2": 100.0})
    assert side.routed_to("weights", {}) == "r2"
    with pytest.raises(NotFoundError):
        c.set_weights("weights", {"r1": 50.0, "nope": 50.0})
    with pytest.raises(MangaAssistError):
        c.set_weights("weights", {"r1": -1.0, "r2": 101.0})
    assert dict(c.status("weights").weights) == pytest.approx({"r2": 100.0})  # refused: unchanged


def test_a_pin_reaches_a_revision_at_zero_percent(side: Side) -> None:
    c = side.compute
    c.deploy("pin", side.revision("r1"), timeout_s=60)
    c.deploy("pin", side.revision("r2"), timeout_s=60)
    assert dict(c.status("pin").weights) == pytest.approx({"r1": 100.0})  # r2 at 0%
    pin = c.pin("pin", "r2")
    assert pin.url.startswith("http")
    assert pin.headers.get(PIN_HEADER) == "r2"  # routes on local and ECS; tells the workload on Lambda
    assert side.reached_by("pin", pin) == "r2"
    assert side.reached_by("pin", c.pin("pin", "r1")) == "r1"
    assert side.routed_to("pin", {}) == "r1"  # unpinned requests follow the weights
    with pytest.raises(NotFoundError, match=r"service pin .*'r9'"):
        c.pin("pin", "r9")


def test_a_weighted_revision_is_not_retired_and_a_retired_one_is_gone(side: Side) -> None:
    c = side.compute
    c.deploy("retire", side.revision("r1"), timeout_s=60)
    c.deploy("retire", side.revision("r2"), timeout_s=60)
    with pytest.raises(MangaAssistError):
        c.retire("retire", "r1")  # still at 100%
    c.set_weights("retire", {"r2": 100.0})
    pinned = c.pin("retire", "r1")
    assert side.reached_by("retire", pinned) == "r1"
    retired = c.retire("retire", "r1", drain_timeout_s=5)
    assert retired.health is RevisionHealth.RETIRED
    assert _live(side, "retire") == {"r2": RevisionHealth.HEALTHY}
    assert dict(c.status("retire").weights) == pytest.approx({"r2": 100.0})
    with pytest.raises(NotFoundError, match=r"service retire .*'r1'"):
        c.pin("retire", "r1")
    assert side.reached_by("retire", pinned) != "r1"  # a pin taken before retiring reaches nothing of it
    assert side.routed_to("retire", {PIN_HEADER: "r1"}) != "r1"
    assert side.routed_to("retire", {}) == "r2"


def test_a_revision_that_never_gets_ready_is_unhealthy_and_gets_no_traffic(side: Side) -> None:
    c = side.compute
    c.deploy("unready", side.revision("r1"), timeout_s=60)
    bad = c.deploy("unready", side.revision("bad", TESTAPP_NEVER_READY="no model loaded"), timeout_s=20)
    assert bad.health is RevisionHealth.UNHEALTHY
    assert bad.reason
    assert bad.weight == 0.0
    assert dict(c.status("unready").weights) == pytest.approx({"r1": 100.0})
    assert side.routed_to("unready", {}) == "r1"


def test_the_only_revision_is_retired_only_as_the_last_and_the_next_deploy_takes_the_service(
    side: Side,
) -> None:
    """``retire(..., last=True)``: a first release rolled back leaves its service with no revision,
    and the next deploy takes all of its traffic again. Lambda cannot leave an alias empty: it
    refuses, naming why, and changes nothing."""
    c = side.compute
    c.deploy("last", side.revision("r1"), timeout_s=60)
    with pytest.raises(MangaAssistError):
        c.retire("last", "r1")  # weighted, and the only one: refused without last
    if side.name == "lambda":
        with pytest.raises(ConfigError, match="alias always points at a version"):
            c.retire("last", "r1", last=True)
        assert dict(c.status("last").weights) == pytest.approx({"r1": 100.0})
        return
    retired = c.retire("last", "r1", drain_timeout_s=5, last=True)
    assert retired.health is RevisionHealth.RETIRED
    assert side.routed_to("last", {}) is None  # nothing serves the service
    c.deploy("last", side.revision("r2"), timeout_s=60)
    assert dict(c.status("last").weights) == pytest.approx({"r2": 100.0})
    assert side.routed_to("last", {}) == "r2"
