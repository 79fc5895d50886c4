"""The real-browser check of a widget release: headless Chromium through Playwright.

``check_widget(url)`` opens the host page at ``url`` (a candidate server's, or a channel of the
edge or the CDN), waits for the widget's button, opens the widget, sends one message, waits for an
answer with sources, and takes a screenshot. It passes when all of that happened and the page
logged no console error, threw no uncaught error, and no request failed (an answer >= 400 or a
network failure), ``/favicon.ico`` aside (the host page has none; Chromium asks anyway).

Chromium is Debian's (``/usr/bin/chromium``, or ``MANGAASSIST_CHROMIUM``), started with
``--no-sandbox`` (containers and CI have no user namespaces for its sandbox); Playwright drives it
and never downloads a browser of its own. ``PageWatch`` and ``ask`` are the pieces, for callers
that drive a page themselves (the drill holds a page open across deploys).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mangaassist.core.errors import ConfigError
from mangaassist.platform.static_site import RELEASE_HEADER

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Request, Response

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ("--no-sandbox",)
DEFAULT_QUESTION = "How long do I have to return a manga I bought?"
IGNORED_PATHS = frozenset({"/favicon.ico"})
TOGGLE_NAME = "Chat with MangaAssist"
INPUT_LABEL = "Message MangaAssist"
VIEWPORT = {"width": 1100, "height": 780}
LOAD_GRACE_S = 0.5
"""After the first error while the widget loads, how long its button still has to appear."""


def chromium_path() -> str:
    """Debian's Chromium (``MANGAASSIST_CHROMIUM`` overrides); ``ConfigError`` saying how to get it."""
    path = os.environ.get("MANGAASSIST_CHROMIUM") or CHROMIUM
    if not Path(path).is_file():
        raise ConfigError(
            f"Chromium is not installed at {path}: the browser check needs it "
            "(as root: scripts/install-browser.sh, or apt-get install -y chromium; "
            "MANGAASSIST_CHROMIUM names another binary)"
        )
    return path


def launch(playwright: Playwright) -> Browser:
    """Headless Chromium (Debian's), for one check or a drill."""
    return playwright.chromium.launch(executable_path=chromium_path(), args=list(CHROMIUM_ARGS))


def sync_playwright() -> Any:
    """``playwright.sync_api.sync_playwright()`` (``ConfigError`` when Playwright is not installed)."""
    try:
        from playwright.sync_api import sync_playwright as start
    except ImportError:
        raise ConfigError(
            "Playwright is not installed: pip install -e '.[dev]' (the browser check drives Chromium with it)"
        ) from None
    return start()


def _ignored(url: str) -> bool:
    return urlsplit(url).path in IGNORED_PATHS


@dataclass
class PageWatch:
    """What a page did: console errors, uncaught errors, failed requests, the assets it fetched."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    assets: dict[str, int] = field(default_factory=dict)
    """``/…/assets/x.js`` -> the HTTP status it was answered with (last answer)."""
    requests: int = 0

    def attach(self, page: Page) -> PageWatch:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.page_errors.append(str(error).strip().split("\n")[0]))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)
        page.on("request", self._request)
        return self

    def _request(self, _request: Request) -> None:
        self.requests += 1

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not _ignored(str(message.location.get("url") or "")):
            lines = message.text.strip().splitlines() or [""]
            self.console_errors.append(lines[0] + (f" ({lines[1].strip()})" if len(lines) > 1 else ""))

    def _failed(self, request: Request) -> None:
        if not _ignored(request.url):
            self.failed_requests.append(f"{request.failure or 'failed'} {request.url}")

    def _response(self, response: Response) -> None:
        path = urlsplit(response.url).path
        if "/assets/" in path:
            self.assets[path] = response.status
        if response.status >= 400 and not _ignored(response.url):
            self.failed_requests.append(f"HTTP {response.status} {response.url}")

    @property
    def asset_404s(self) -> int:
        return sum(1 for status in self.assets.values() if status == 404)

    def problems(self) -> list[str]:
        out = [f"console error: {text}" for text in self.console_errors]
        out += [f"uncaught error: {text}" for text in self.page_errors]
        out += [f"failed request: {text}" for text in self.failed_requests]
        return out


@dataclass(frozen=True)
class Answered:
    """What the widget showed for one message."""

    answer: str | None
    sources: list[str]
    problems: list[str]
    seconds: float


def wait_for_widget(page: Page, watch: PageWatch, timeout_s: float) -> str | None:
    """Wait for the widget's button; the problem when it does not appear (None when it did)."""
    toggle = page.get_by_role("button", name=TOGGLE_NAME)
    deadline = time.monotonic() + timeout_s
    first_error: float | None = None
    while True:
        if toggle.count() > 0 and toggle.first.is_visible():
            return None
        now = time.monotonic()
        if first_error is None and watch.problems():
            first_error = now
        if first_error is not None and now - first_error > LOAD_GRACE_S:
            return "the widget did not load (its button never appeared after the page's errors)"
        if now > deadline:
            return f"the widget did not load within {timeout_s:.0f}s (its button never appeared)"
        page.wait_for_timeout(50)


def ask(page: Page, question: str, timeout_s: float) -> Answered:
    """Open the widget (its button), send ``question``, wait for the answer or an error message."""
    started = time.monotonic()
    page.get_by_role("button", name=TOGGLE_NAME).first.click()
    box = page.get_by_label(INPUT_LABEL)
    box.fill(question)
    box.press("Enter")
    done = page.locator("article.ma-msg-bot, .ma-msg-error").first
    try:
        done.wait_for(state="visible", timeout=timeout_s * 1000)
    except Exception as exc:  # Playwright's TimeoutError (imported lazily)
        return Answered(None, [], [f"no answer within {timeout_s:.0f}s: {exc}"], time.monotonic() - started)
    seconds = time.monotonic() - started
    error = page.locator(".ma-msg-error")
    if error.count():
        text = " ".join(error.first.inner_text().split())
        return Answered(None, [], [f"the widget showed an error: {text}"], seconds)
    article = page.locator("article.ma-msg-bot").first
    answer = " ".join(article.locator("p").first.inner_text().split()).removeprefix("MangaAssist: ")
    sources = [" ".join(s.split()) for s in article.locator(".ma-sources li").all_inner_texts()]
    problems = [] if sources else ["the answer came without sources"]
    return Answered(answer, sources, problems, seconds)


@dataclass(frozen=True)
class BrowserReport:
    """The outcome of one check (``problems`` empty: it passed)."""

    url: str
    problems: list[str]
    answer: str | None
    sources: list[str]
    release: str | None
    """``X-MangaAssist-Release`` of the host page (None when the server sent none)."""
    assets: dict[str, int]
    requests: int
    screenshot: str | None
    seconds: float
    answer_s: float

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ok": self.ok,
            "problems": self.problems,
            "answer": self.answer,
            "sources": self.sources,
            "release": self.release,
            "assets": self.assets,
            "requests": self.requests,
            "screenshot": self.screenshot,
            "seconds": round(self.seconds, 3),
            "answer_s": round(self.answer_s, 3),
        }


def check_widget(
    url: str,
    *,
    screenshot: Path | None = None,
    question: str = DEFAULT_QUESTION,
    timeout_s: float = 30.0,
) -> BrowserReport:
    """Open ``url`` in headless Chromium and chat once through the widget (see the module)."""
    started = time.monotonic()
    problems: list[str] = []
    answered = Answered(None, [], [], 0.0)
    release: str | None = None
    watch = PageWatch()
    shot: str | None = None
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
            watch.attach(page)
            response = page.goto(url, wait_until="load", timeout=timeout_s * 1000)
            if response is None or response.status != 200:
                problems.append(f"the host page answered {response.status if response else 'nothing'}")
            else:
                release = response.headers.get(RELEASE_HEADER.lower())
            missing = wait_for_widget(page, watch, timeout_s)
            if missing:
                problems.append(missing)
            else:
                answered = ask(page, question, timeout_s)
                problems += answered.problems
            page.wait_for_timeout(100)  # late requests (the answer's) report their outcome
            problems += watch.problems()
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot))
                shot = str(screenshot)
        finally:
            browser.close()
    return BrowserReport(
        url=url,
        problems=problems,
        answer=answered.answer,
        sources=answered.sources,
        release=release,
        assets=dict(watch.assets),
        requests=watch.requests,
        screenshot=shot,
        seconds=time.monotonic() - started,
        answer_s=answered.seconds,
    )
