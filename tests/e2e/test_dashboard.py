"""The delivery dashboard in real headless Chromium: a real dashboard process, real engine runs
started by the real CLI, a real SQLite state store. Live updates arrive by server-sent events (no
reload), a waiting prod run is approved from the page, a rollback shows its verdict, no console
errors, pages usable at 375 px."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mangaassist.delivery.frontend.browser import PageWatch, launch, sync_playwright
from tests.integration.app_pipeline.test_dashboard_canary import screenshot

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
POLICY = """\
version: 1
timezone: UTC
environments:
  dev: {approvals: 0, self_approval: true, rollback: automatic}
  prod: {approvals: 1, approvers: [], self_approval: false, approval_timeout: 1h, rollback: automatic}
"""


@dataclass
class Dash:
    home: Path
    url: str
    env: dict[str, str]
    policy: Path

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mangaassist.cli.main", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def token(self, actor: str) -> str:
        """A signed identity token for ``actor`` (prod refuses typed names)."""
        done = self.cli("identity", "token", "--as", actor, "--home", str(self.home), "--json")
        assert done.returncode == 0, done.stderr
        token: str = json.loads(done.stdout)["token"]
        return token

    def start_run(self, *args: str) -> subprocess.Popen[str]:
        """``runs start demo ...`` in the background (it drives the run to its end), as the person
        ``--as`` names with their identity token."""
        env = self.env
        if "--as" in args:
            env = env | {"MANGAASSIST_IDENTITY_TOKEN": self.token(args[args.index("--as") + 1])}
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mangaassist.cli.main",
                "runs",
                "start",
                "demo",
                "--policy",
                str(self.policy),
                *args,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def runs(self) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = httpx.get(f"{self.url}/api/runs", timeout=10).json()
        return answer

    def wait_for_run(self, predicate: Any, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for run in self.runs():
                if predicate(run):
                    return run
            time.sleep(0.2)
        raise AssertionError(f"no run matched within {timeout} s: {self.runs()}")

    def link(self, actor: str) -> str:
        done = self.cli("dashboard", "link", "--as", actor, "--home", str(self.home), "--json")
        assert done.returncode == 0, done.stderr
        url: str = json.loads(done.stdout)["url"]
        return url


@pytest.fixture
def dash(tmp_path: Path) -> Iterator[Dash]:
    home = tmp_path / "home"
    home.mkdir()
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MANGAASSIST_")}
    env |= {"MANGAASSIST_HOME": str(home), "MANGAASSIST_POLL_SECONDS": "0.2", "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mangaassist.dashboard", "--home", str(home), "--port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        state = home / "dashboard.json"
        while not state.exists():
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "the dashboard did not announce itself"
            time.sleep(0.1)
        yield Dash(home, json.loads(state.read_text())["url"], env, policy)
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


def _page(browser: Any, width: int = 1100) -> tuple[Any, PageWatch]:
    page = browser.new_page(viewport={"width": width, "height": 800})
    return page, PageWatch().attach(page)


def _problems(watch: PageWatch) -> list[str]:
    # a live page's event stream is cut when the page navigates: that is not a failure
    return [p for p in watch.problems() if "/events/" not in p]


def test_a_waiting_prod_run_is_approved_from_the_page_and_finishes_live(dash: Dash, browser: Any) -> None:
    runner = dash.start_run("--env", "prod", "--as", "alice", "--param", "approval=true")
    try:
        run = dash.wait_for_run(lambda r: r["awaiting_approval"] == "approval")
        page, watch = _page(browser)
        page.goto(f"{dash.url}/runs/{run['id']}")
        assert page.locator("#run-state").inner_text() == "waiting"
        assert page.get_by_role("button", name="approve as alice").count() == 0  # not signed in: no form
        assert "mangaassist dashboard link" in page.locator("#approval").inner_text()

        # the requester may not approve her own prod run: the engine's policy says so on the page
        page.goto(dash.link("alice"))
        page.goto(f"{dash.url}/runs/{run['id']}")
        page.get_by_role("button", name="approve as alice").click()
        page.wait_for_load_state()
        assert "may not approve" in page.get_by_role("status").inner_text()
        assert page.locator("#run-state").inner_text() == "waiting"

        # bob approves; the page then follows the run to its end without a reload
        page.goto(dash.link("bob"))
        page.goto(f"{dash.url}/runs/{run['id']}")
        page.fill("textarea[name=comment]", "looks good <b>to me</b>")
        screenshot(page, "approval")
        page.get_by_role("button", name="approve as bob").click()
        page.wait_for_load_state()
        assert "approved by bob" in page.get_by_role("status").inner_text()
        page.evaluate("window.__stayed = true")
        page.locator("#run-state", has_text="succeeded").wait_for(timeout=30_000)
        assert page.evaluate("window.__stayed === true")  # updated in place, not reloaded
        decisions = page.locator("li", has_text="approved by bob").inner_text()
        assert "looks good <b>to me</b>" in decisions  # shown as text, never as markup
        assert _problems(watch) == []
    finally:
        runner.wait(60)
    assert runner.returncode == 0, runner.stdout.read() if runner.stdout else ""
    shown = dash.cli("runs", "show", run["id"], "--json")
    assert [a["actor"] for a in json.loads(shown.stdout)["approvals"]] == ["bob"]
    audit = httpx.get(f"{dash.url}/api/audit", params={"run": run["id"]}, timeout=10).json()
    assert audit["verify"]["intact"] is True
    assert any(e["kind"] == "approval.approved" and e["actor"] == "bob" for e in audit["entries"])


def test_the_run_list_shows_a_new_run_live_and_a_rollback_with_its_verdict(dash: Dash, browser: Any) -> None:
    page, watch = _page(browser)
    page.goto(f"{dash.url}/runs")
    assert "no runs match" in page.locator("tbody").inner_text()
    page.evaluate("window.__stayed = true")
    runner = dash.start_run("--env", "dev", "--param", "fail_at=verify", "--param", "work_seconds=1")
    try:
        page.locator("tbody td.state", has_text="rolled_back").wait_for(timeout=30_000)
        assert page.evaluate("window.__stayed === true")
        run_id = page.locator("tbody a.mono").first.inner_text()
    finally:
        runner.wait(60)
    page.goto(f"{dash.url}/runs/{run_id}")
    verify = page.locator("tr[data-step=verify]").inner_text()
    assert "fail" in verify and "error_rate=0.31" in verify and "error rate above the limit" in verify
    assert page.locator("#run-state").inner_text() == "rolled_back"
    prepare = page.locator("tr[data-step=prepare]")
    prepare.locator("summary", has_text="output").click()  # a step's output, on demand
    assert '"staged"' in prepare.locator("pre").inner_text()
    # the filters narrow the list, and the JSON behind it says the same
    page.goto(f"{dash.url}/runs?state=succeeded")
    assert "no runs match" in page.locator("tbody").inner_text()
    assert [r["id"] for r in dash.runs()] == [run_id]
    # delivery performance: the bad release counts as a change failure, stopped at its gate
    page.goto(f"{dash.url}/delivery?since=1d")
    row = page.locator("#delivery tbody tr", has_text="demo").inner_text()
    assert "100%" in row and "(1/1)" in row and "verify ×1" in row, row
    page.goto(f"{dash.url}/runs")
    screenshot(page, "runs")
    assert _problems(watch) == []


def test_pages_fit_a_phone_screen(dash: Dash, browser: Any) -> None:
    runner = dash.start_run("--env", "dev", "--param", "fail_at=verify")
    runner.wait(60)
    run = dash.runs()[0]
    page, watch = _page(browser, width=375)
    for path in ("/runs", f"/runs/{run['id']}", "/approvals", "/delivery", "/audit"):
        page.goto(f"{dash.url}{path}")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        if path == "/runs":
            screenshot(page, "phone")
        assert overflow <= 0, f"{path} is {overflow} px wider than a 375 px screen"
    assert _problems(watch) == []


def test_decisions_need_a_session_the_page_token_and_the_same_origin(dash: Dash) -> None:
    runner = dash.start_run("--env", "prod", "--as", "alice", "--param", "approval=true")
    try:
        run = dash.wait_for_run(lambda r: r["awaiting_approval"] == "approval")
        post = f"{dash.url}/runs/{run['id']}/decision"
        anonymous = httpx.post(post, data={"decision": "approved"}, timeout=10)
        assert anonymous.status_code == 401
        with httpx.Client(timeout=10) as client:
            client.get(dash.link("bob"))  # the session cookie
            assert client.cookies.get("ma_dashboard")
            no_token = client.post(post, data={"decision": "approved"})
            assert no_token.status_code == 403 and "csrf" in no_token.json()["error"]
            page = client.get(f"{dash.url}/runs/{run['id']}").text
            csrf = page.split('name="csrf" value="')[1].split('"')[0]
            foreign = client.post(
                post, data={"decision": "approved", "csrf": csrf}, headers={"Origin": "http://evil.example"}
            )
            assert foreign.status_code == 403
            assert dash.runs()[0]["awaiting_approval"] == "approval"  # nothing changed
            ok = client.post(post, data={"decision": "rejected", "comment": "not today", "csrf": csrf})
            assert ok.status_code == 303 and "rejected+by+bob" in ok.headers["location"]
    finally:
        runner.wait(60)
    final = dash.wait_for_run(lambda r: r["id"] == run["id"] and r["state"] != "waiting")
    assert final["state"] == "aborted" and "rejected by bob: not today" in final["reason"]


def test_a_forged_or_expired_sign_in_is_refused(dash: Dash) -> None:
    url = dash.link("bob")
    forged = url[:-4] + ("AAAA" if not url.endswith("AAAA") else "BBBB")
    answer = httpx.get(forged, timeout=10)
    assert answer.status_code == 401 and "not valid" in answer.json()["error"]
    assert "ma_dashboard" not in answer.cookies
