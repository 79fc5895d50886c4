"""The dashboard's live regions keep what a person typed when a slot is replaced (``live.js``).

A real Chromium loads a page with a live slot holding a form, served with the dashboard's own
``static/live.js`` by a small loopback server whose event stream waits until the test has typed,
then replaces the slot (as the dashboard's first event, or another approver's decision, does). The
typed comment must survive in the new form; the new content must be shown.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mangaassist.delivery.frontend.browser import launch, sync_playwright
from tests.standin import StandIn, serving

LIVE_JS = Path(__file__).parents[2] / "src" / "mangaassist" / "dashboard" / "static" / "live.js"
FORM = '<p id="count">{n} of 2 approvals</p><form><textarea name="comment"></textarea></form>'
PAGE = f"""<!doctype html><html><head><script src="/static/live.js" defer></script></head>
<body><span data-live-status></span><main data-live="/events">
<div data-slot="approval">{FORM.format(n=0)}</div></main></body></html>"""


@pytest.fixture
def server() -> Iterator[tuple[str, threading.Event]]:
    typed = threading.Event()

    class Handler(StandIn):
        def do_GET(self) -> None:
            if self.path == "/events":
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                typed.wait(30)
                data = '{"approval": "' + FORM.format(n=1).replace('"', '\\"') + '"}'
                self.wfile.write(f"event: swap\ndata: {data}\n\nevent: done\ndata: {{}}\n\n".encode())
                self.wfile.flush()
                return
            if self.path == "/static/live.js":
                self.reply(200, LIVE_JS.read_bytes(), "text/javascript")
            else:
                self.reply(200, PAGE.encode(), "text/html")

    with serving(Handler, before_stop=typed.set) as url:
        yield url, typed


def test_a_comment_being_typed_survives_the_slot_being_replaced(server: tuple[str, threading.Event]) -> None:
    url, typed = server
    with sync_playwright() as playwright:
        browser: Any = launch(playwright)
        try:
            page = browser.new_page()
            page.goto(f"{url}/page")
            page.fill("textarea[name=comment]", "looks good <b>to me</b>")
            typed.set()  # now the stream replaces the slot
            page.locator("#count", has_text="1 of 2 approvals").wait_for(timeout=15_000)
            assert page.input_value("textarea[name=comment]") == "looks good <b>to me</b>"
            assert page.evaluate("document.activeElement.name") == "comment"  # still where the person was
            assert page.locator("[data-live-status]").inner_text() == "final"
        finally:
            browser.close()
