"""CD-08's publish step against Grafana's dashboard API over real HTTP on loopback.

No Grafana server can be installed here, so a small HTTP server speaks the one endpoint the step
uses (``POST /api/dashboards/db``, as Grafana documents it) and records what it was sent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mangaassist.core.errors import ConfigError
from mangaassist.delivery.pipelines.monitoring import publish_grafana
from tests.standin import StandIn, serving


class _Grafana(StandIn):
    received: ClassVar[list[tuple[str, str | None, dict[str, Any]]]] = []
    refuse: ClassVar[set[str]] = set()

    def do_POST(self) -> None:
        body = json.loads(self.body())
        self.received.append((self.path, self.headers.get("Authorization"), body))
        uid = body["dashboard"].get("uid", "")
        status, reply = (
            (412, {"message": "version-mismatch"})
            if uid in self.refuse
            else (200, {"uid": uid, "status": "success", "version": 1})
        )
        self.reply(status, json.dumps(reply).encode())


@pytest.fixture
def grafana() -> Iterator[str]:
    _Grafana.received, _Grafana.refuse = [], set()
    with serving(_Grafana) as url:
        yield f"{url}/"


def dashboards(tmp_path: Path) -> list[Path]:
    out = []
    for uid in ("slo-overview", "svc-chatbot"):
        path = tmp_path / f"{uid}.json"
        path.write_text(json.dumps({"uid": uid, "title": uid, "panels": []}))
        out.append(path)
    return out


def test_every_dashboard_is_posted_with_the_token_and_overwrite(grafana: str, tmp_path: Path) -> None:
    uids = publish_grafana(grafana, "s3cret", dashboards(tmp_path))
    assert uids == ["slo-overview", "svc-chatbot"]
    assert [r[0] for r in _Grafana.received] == ["/api/dashboards/db"] * 2
    assert all(r[1] == "Bearer s3cret" for r in _Grafana.received)
    assert all(r[2]["overwrite"] is True for r in _Grafana.received)
    assert [r[2]["dashboard"]["uid"] for r in _Grafana.received] == uids


def test_a_refused_dashboard_is_an_error_naming_it(grafana: str, tmp_path: Path) -> None:
    _Grafana.refuse = {"svc-chatbot"}
    with pytest.raises(ConfigError, match=r"svc-chatbot\.json: HTTP 412"):
        publish_grafana(grafana, None, dashboards(tmp_path))
    assert _Grafana.received[0][1] is None  # no token: no Authorization header
