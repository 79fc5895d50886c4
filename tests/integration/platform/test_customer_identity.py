"""Customer identity through the router: a canary of the real chatbot and a shadow revision.

Three revisions of the chatbot behind one router (r1 stable at 70%, r2 the canary at 30%, r3
mirrored every request): the signed token in ``Authorization`` reaches whichever revision answers
and the shadow too, and no revision ever answers one customer with another customer's orders. The
revisions run the hashing embedder (fast to start; the order intent is recognised by its order id).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mangaassist.chatbot.identity import issue_dev_token
from mangaassist.core.artifact import Artifact
from mangaassist.platform.artifacts import pack_source
from mangaassist.platform.compute import Revision
from mangaassist.platform.local.client import LocalCompute, start_control_plane, stop_control_plane
from mangaassist.platform.settings import PlatformSettings, load_settings

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[3]
APP = "mangaassist.chatbot.app:create_app"
ORDERS = [json.loads(line) for line in (ROOT / "data" / "orders.jsonl").open()]
CUSTOMERS = ("cust-0001", "cust-0002", "cust-0005")
ORDERS_OF = {c: {o["order_id"]: o for o in ORDERS if o["customer_id"] == c} for c in CUSTOMERS}


@dataclass
class ChatPlane:
    settings: PlatformSettings
    compute: LocalCompute
    artifact: Artifact
    url: str

    def token(self, customer: str) -> str:
        """A development token signed with the key the revisions read (the plane's state home)."""
        return issue_dev_token(customer, self.settings.home).token


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatPlane]:
    directory = tmp_path_factory.mktemp("identity-platform")
    config = directory / "mangaassist.toml"
    config.write_text(
        "[environments.test]\nprovider = 'local'\nhome = 'home'\ncontrol_port = 0\n"
        "[environments.test.services.chatbot]\n"
        f"app = '{APP}'\nrouter_port = 0\nready_timeout_s = 180\nshadow_timeout_s = 10\n"
        "[environments.test.services.chatbot.env]\n"
        "MANGAASSIST_EMBEDDER = 'hashing'\nMANGAASSIST_FAULT = ''\nMANGAASSIST_DEV_SIGNIN = '0'\n"
    )
    settings = load_settings("test", config)
    start_control_plane(settings, config, wait_s=30)
    compute = LocalCompute(settings.run_dir)
    try:
        artifact = pack_source(ROOT / "src", settings.home / "artifacts")
        for name in ("r1", "r2", "r3"):
            revision = Revision(name, artifact, APP, {"MANGAASSIST_ROOT": str(ROOT)}, 1)
            status = compute.deploy("chatbot", revision, timeout_s=180)
            assert status.health.value == "healthy", status.reason
        compute.set_weights("chatbot", {"r1": 70, "r2": 30})
        compute.set_shadow("chatbot", "r3", 1.0)
        yield ChatPlane(settings, compute, artifact, compute.url("chatbot"))
    finally:
        compute.close()
        report = stop_control_plane(settings)
        assert report.left == [], f"processes left after stop: {report.left}"


def _shadow_statuses(plane: ChatPlane, wanted: str, at_least: int) -> dict[str, int]:
    deadline = time.monotonic() + 15  # mirrors are answered after the primary
    while True:
        statuses: dict[str, int] = plane.compute.stats("chatbot")["shadow"].get("r3", {}).get("statuses", {})
        if statuses.get(wanted, 0) >= at_least or time.monotonic() > deadline:
            return statuses
        time.sleep(0.2)


def test_through_a_canary_no_customer_reads_another_customers_orders(plane: ChatPlane) -> None:
    tokens = {c: plane.token(c) for c in CUSTOMERS}
    mirrored = _shadow_statuses(plane, "200", 0).get("200", 0)
    revisions: set[str] = set()
    with httpx.Client(base_url=plane.url, timeout=30) as client:
        for i in range(36):
            me = CUSTOMERS[i % len(CUSTOMERS)]
            other = CUSTOMERS[(i + 1) % len(CUSTOMERS)]
            own_id, own = sorted(ORDERS_OF[me].items())[i % len(ORDERS_OF[me])]
            their_id = sorted(ORDERS_OF[other])[i % len(ORDERS_OF[other])]
            session = f"canary-{i}-{uuid.uuid4().hex[:6]}"  # new conversations: split by weight
            headers = {"Authorization": f"Bearer {tokens[me]}", "X-Session-Id": session}
            for order_id in (own_id, their_id):
                r = client.post(
                    "/v1/chat",
                    json={"session_id": session, "message": f"where is my order {order_id}?"},
                    headers=headers,
                )
                assert r.status_code == 200, r.text
                revisions.add(r.headers["x-mangaassist-revision"])
                answer = r.json()["answer"]
                named = {o for c in CUSTOMERS for o in ORDERS_OF[c] if o in answer}
                assert named <= set(ORDERS_OF[me]) | {their_id}, (me, answer)
                if order_id == own_id:
                    assert own_id in answer and own["status"] in answer, (me, answer)
                else:
                    assert "couldn't find" in answer, (me, answer)
    assert revisions == {"r1", "r2"}  # both the stable revision and the canary answered
    stats = plane.compute.stats("chatbot")["revisions"]
    assert all(not status.startswith("5") for r in ("r1", "r2") for status in stats[r]["statuses"])
    # the shadow got the same Authorization header: it answered the signed-in questions (200) ...
    assert _shadow_statuses(plane, "200", mirrored + 72).get("200", 0) >= mirrored + 72


def test_an_invalid_token_is_refused_by_every_revision_and_the_shadow(plane: ChatPlane) -> None:
    forged = plane.token("cust-0001")[:-4] + "AAAA"
    before = _shadow_statuses(plane, "401", 0).get("401", 0)
    seen: set[str] = set()
    with httpx.Client(base_url=plane.url, timeout=30) as client:
        for i in range(30):
            r = client.post(
                "/v1/chat",
                json={"session_id": f"forged-{i}-{uuid.uuid4().hex[:6]}", "message": "where is MA-100001?"},
                headers={"Authorization": f"Bearer {forged}"},
            )
            assert r.status_code == 401 and r.json()["reason"] == "bad_signature"
            assert "MA-100001" not in r.text
            seen.add(r.headers["x-mangaassist-revision"])
    assert seen == {"r1", "r2"}
    # ... and refused the forged one (401): without the header it would have answered anonymously (200)
    assert _shadow_statuses(plane, "401", before + 30).get("401", 0) >= before + 30
