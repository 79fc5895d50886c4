"""CD-05, the frontend: the chat widget (``frontend/``) built, gated, checked in a real browser and
published to a channel of the environment's ``StaticSite`` (``platform/static_site.py``).

The runbook (``build``), one engine step each:

1. ``build``: the source is copied into the run's directory (``HOME/frontend/runs/RUN/src``) without
   ``node_modules`` and ``dist``; ``npm ci`` runs only when no ``node_modules`` is cached for the hash
   of ``package-lock.json`` (``HOME/frontend/node_modules/KEY``, linked in); ``npm run build``. The
   step records every file of ``dist/`` with its sha256 and size, the release id the site will give
   it and the build's time. The same source gives the same files. A build without ``index.html`` or
   ``loader.js`` fails here, naming what is missing; nothing is published.
2. ``gates``: ``npm run typecheck``, ``npm test`` (vitest) and the size budget
   (``loader.js`` <= 10 kB gzip, all JS and CSS <= 150 kB gzip): one gate result, every reason at once,
   the sizes in the step's numbers.
3. ``browser-check``: the candidate served from memory on a free loopback port at the channel's path,
   ``/v1`` proxied to the environment's chatbot router (when none answers: a stub chat API; the param
   ``api`` names another, or ``stub``); headless Chromium opens the host page, opens the widget, sends
   a message and waits for an answer with sources; any console error, uncaught error or failed
   request fails it. A screenshot goes to the run's directory (``candidate.png``). A bundle that
   breaks in a browser stops here, before anything is uploaded.
4. ``upload``: the channel's URL must answer (else nothing is uploaded: ``verify`` could not see the
   release; locally, the edge ``up`` starts); ``gc`` first (the site keeps the last 20 releases of
   each channel and the 20 newest uploads, so a tab opened on any of the 20 releases before this one
   still loads its chunks), then the release's files: only assets not stored yet are written (the
   step says how many were uploaded and skipped). Both are recorded effects: a resumed run does not
   do them again.
5. ``publish``: the channel's pointer moved to the release (``point``, the run's id as the reason),
   then one invalidation of ``/index.html`` and ``/loader.js``, never more: hashed assets are new
   names, nothing cached needs forgetting. Both recorded.
6. ``verify``: through the real edge (or CDN) at the channel's URL, ``/index.html`` carries the new
   release in ``X-MangaAssist-Release``, and the same Chromium check passes (``verify.png``). When it
   fails the run's rollback points the channel back where it was.

Channels: the environment's (``/``), or ``preview/<branch>`` with the param ``preview``
(``/previews/<branch>/``); a branch with path characters is refused before the run starts.

``CD-05-rollback`` points a channel back: to the release before the live one (the pointer's history),
or to ``to``; invalidates the same two paths; verifies through the edge that the release is served
(and how soon). ``CD-05-preview-delete`` removes a branch's preview channel.

Params: ``environment``; ``preview`` (a branch); ``source`` (default ``ROOT/frontend``); ``root``;
``api`` (a chat API URL, or ``stub``); ``question`` (what the browser check asks); rollback: ``to``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from mangaassist.core.errors import ConfigError, MangaAssistError, NotFoundError
from mangaassist.core.verdict import Verdict
from mangaassist.delivery.engine.runs import Outcome, Pipeline, Step, StepContext
from mangaassist.delivery.frontend.browser import DEFAULT_QUESTION, BrowserReport, check_widget
from mangaassist.delivery.frontend.budget import (
    CommandCheck,
    frontend_gate,
    measure,
    typecheck_errors,
    vitest_counts,
)
from mangaassist.delivery.frontend.build import (
    BuildError,
    build_frontend,
    check_source,
    load_release,
    prune_runs,
    run_npm,
)
from mangaassist.delivery.frontend.serve import CandidateServer, StubChatbot
from mangaassist.delivery.pipelines.gating import gate_outcome
from mangaassist.delivery.pipelines.scope import RunScope
from mangaassist.platform.settings import find_root
from mangaassist.platform.static_site import (
    PREVIEW_PREFIX,
    RELEASE_HEADER,
    PointerChange,
    StaticSite,
    check_branch,
    check_channel,
    is_asset,
    preview_channel,
)

NAME = "CD-05"
ROLLBACK = "CD-05-rollback"
PREVIEW_DELETE = "CD-05-preview-delete"
ENTRY_PATHS = ("/index.html", "/loader.js")
"""What a deploy or a rollback invalidates: the two entry files a browser asks for by a fixed name."""
VERIFY_TIMEOUT_S = 30.0
"""How long ``verify`` waits for the channel's URL to serve the new release (a CDN may lag)."""
UNREACHABLE_S = 5.0
"""How long ``verify`` keeps asking a URL that gives no answer at all before it fails."""


# -- params ----------------------------------------------------------------------------------------


def channel_for(environment: str, preview: str | None = None) -> str:
    """The channel a deploy goes to: ``preview/<branch>`` with a preview, else the environment's."""
    if preview:
        return preview_channel(check_branch(preview))
    return check_channel(environment)


def path_prefix(channel: str) -> str:
    """Where a channel is served on the edge: ``/`` or ``/previews/<branch>/``."""
    if channel.startswith(PREVIEW_PREFIX):
        return f"/previews/{channel[len(PREVIEW_PREFIX) :]}/"
    return "/"


def source_of(params: Mapping[str, Any]) -> Path:
    """The widget's source: the param ``source``, else ``ROOT/frontend``."""
    if params.get("source"):
        return check_source(Path(str(params["source"])))
    return check_source(find_root(params.get("root"), needs=("frontend/package.json",)) / "frontend")


def _channel(params: Mapping[str, Any]) -> str:
    environment = params.get("environment")
    if not environment:
        raise ConfigError("CD-05 needs the param environment=NAME")
    return channel_for(str(environment), params.get("preview") or None)


def build(params: dict[str, Any]) -> Pipeline:
    channel = _channel(params)  # a bad branch is refused before the run starts
    source_of(params)
    scope = RunScope(str(params["environment"]))
    steps = (
        Step(
            "build",
            scope.bind(_build),
            "copy the source, npm ci (cached by package-lock), npm run build",
            changes=False,
        ),
        Step(
            "gates",
            scope.bind(_gates),
            "npm run typecheck, npm test (vitest), the size budget",
            changes=False,
        ),
        Step(
            "browser-check",
            scope.bind(_browser_check),
            "the candidate in headless Chromium: the widget answers with sources, no error",
            changes=False,
        ),
        # new files under their content hashes: nothing points at them until publish
        Step(
            "upload",
            scope.bind(_upload),
            "gc (keep the last 20 releases), then only new files",
            changes=False,
        ),
        Step("publish", scope.bind(_publish), "point the channel at the release, invalidate 2 entry paths"),
        Step(
            "verify",
            scope.bind(_verify),
            "the release header and the Chromium check through the edge",
            observes=True,
        ),
    )
    return Pipeline(
        NAME,
        steps,
        rollback=scope.bind(_rollback),
        description=f"the widget to {channel}",
        params=params,
        close=scope.close,
    )


def build_rollback(params: dict[str, Any]) -> Pipeline:
    channel = _channel(params)
    scope = RunScope(str(params["environment"]))
    return Pipeline(
        ROLLBACK,
        (
            Step("restore", scope.bind(_restore), "point the channel at the previous release, invalidate"),
            Step(
                "verify",
                scope.bind(_verify_restored),
                "the edge serves the release pointed back to",
                observes=True,
            ),
        ),
        description=f"the widget on {channel} back to the previous release",
        params=params,
        close=scope.close,
        restores=True,
    )


def build_preview_delete(params: dict[str, Any]) -> Pipeline:
    if not params.get("environment"):
        raise ConfigError(f"{PREVIEW_DELETE} needs the param environment=NAME")
    if not params.get("preview"):
        raise ConfigError(f"{PREVIEW_DELETE} needs the param preview=BRANCH")
    channel = channel_for(str(params["environment"]), str(params["preview"]))
    scope = RunScope(str(params["environment"]))
    return Pipeline(
        PREVIEW_DELETE,
        # a preview is never what customers get
        (Step("delete", scope.bind(_delete_preview), f"remove the channel {channel}", changes=False),),
        description=f"delete the preview {channel}",
        params=params,
        close=scope.close,
    )


# -- helpers ---------------------------------------------------------------------------------------


def run_dir(scope: RunScope, ctx: StepContext) -> Path:
    """The run's directory: the source copy, ``dist/``, the screenshots, vitest's report."""
    return scope.settings.home / "frontend" / "runs" / ctx.run.id


def _site(scope: RunScope) -> StaticSite:
    return scope.platform.static_site()


def _files(ctx: StepContext) -> dict[str, bytes]:
    built = ctx.outputs["build"]
    return load_release(Path(built["dist"]), built["files"])


def chatbot_url(scope: RunScope) -> str | None:
    """The environment's chatbot router when it answers (local platform only), else None."""
    settings = scope.settings
    if settings.provider != "local" or "chatbot" not in settings.services:
        return None
    try:
        if not scope.platform.running():
            return None
        url = scope.platform.compute().url("chatbot").rstrip("/")
        answer = httpx.get(url + "/healthz", timeout=3.0)
    except (MangaAssistError, httpx.HTTPError, OSError, KeyError, ValueError):
        return None
    return url if answer.status_code < 500 else None


@contextlib.contextmanager
def chat_api(scope: RunScope, params: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """The chat API a check proxies ``/v1`` to, and what it is: the param ``api`` (``stub``: the
    stub), else the environment's chatbot router when it answers, else the stub."""
    given = str(params.get("api") or "")
    if given and given != "stub":
        yield given.rstrip("/"), f"the chat API {given}"
        return
    url = None if given == "stub" else chatbot_url(scope)
    if url is not None:
        yield url, f"the chatbot router of {scope.settings.environment} at {url}"
        return
    with StubChatbot() as stub:
        yield stub.url, "a stub chat API (no chatbot answers in this environment)"


def _browser_numbers(report: BrowserReport) -> dict[str, float]:
    return {
        "check_s": round(report.seconds, 3),
        "answer_s": round(report.answer_s, 3),
        "requests": float(report.requests),
        "assets": float(len(report.assets)),
        "problems": float(len(report.problems)),
    }


def previous_release(history: list[PointerChange]) -> str | None:
    """The release a rollback returns to: the one the live pointer replaced (None: never moved)."""
    return history[-1].previous if history else None


# -- steps -----------------------------------------------------------------------------------------


def _build(scope: RunScope, ctx: StepContext) -> Outcome:
    home = scope.settings.home / "frontend"
    prune_runs(home / "runs", spare=ctx.run.id)
    try:
        built = build_frontend(
            source_of(ctx.params), run_dir(scope, ctx), home / "node_modules", ctx.progress
        )
    except BuildError as exc:
        return Outcome.failed(str(exc))
    size = sum(int(meta["size"]) for meta in built.files.values())
    ctx.progress(
        f"built {len(built.files)} files ({size:,} bytes) as release {built.release_id} "
        f"in {built.build_s:.1f}s (node_modules {built.node_modules})"
    )
    return Outcome.done(
        built.as_dict(),
        numbers={
            "files": float(len(built.files)),
            "bytes": float(size),
            "build_s": round(built.build_s, 3),
            "npm_ci_s": round(built.npm_ci_s, 3),
        },
        detail={"release_id": built.release_id, "node_modules": built.node_modules},
    )


def _command(args: list[str], cwd: Path) -> tuple[bool, str, float]:
    started = time.monotonic()
    try:
        output, ok = run_npm(args, cwd), True
    except BuildError as exc:
        output, ok = str(exc), False
    return ok, output, time.monotonic() - started


def _gates(scope: RunScope, ctx: StepContext) -> Outcome:
    built = ctx.outputs["build"]
    src = Path(built["source"])
    budget = measure(_files(ctx))
    ctx.progress(
        f"sizes: loader.js {budget.loader or 0:,} B gzip (budget {budget.loader_budget:,}), "
        f"all JS+CSS {budget.total:,} B gzip (budget {budget.total_budget:,})"
    )
    report = run_dir(scope, ctx) / "vitest.json"
    report.unlink(missing_ok=True)
    ctx.progress("npm run typecheck")
    type_ok, type_out, type_s = _command(["run", "typecheck"], src)
    ctx.progress(f"typecheck {'passed' if type_ok else 'FAILED'} in {type_s:.1f}s; npm test (vitest)")
    test_ok, test_out, test_s = _command(
        ["test", "--", "--reporter=default", "--reporter=json", f"--outputFile={report}"], src
    )
    counts = vitest_counts(report)
    failed_names = counts.pop("failed_names", [])
    if failed_names:
        test_out = f"failed: {'; '.join(failed_names[:5])} | {test_out}"
    typecheck = CommandCheck("typecheck", type_ok, type_s, type_out, {"errors": typecheck_errors(type_out)})
    tests = CommandCheck("test", test_ok, test_s, test_out, {k: int(v) for k, v in counts.items()})
    ctx.progress(f"vitest: {counts.get('passed', 0)}/{counts.get('tests', 0)} passed in {test_s:.1f}s")
    result = frontend_gate(budget, typecheck, tests)
    return gate_outcome(
        result,
        failure="the widget's gates failed: " + "; ".join(result.reasons),
        output={"budget": budget.as_dict()},
    )


def _browser_check(scope: RunScope, ctx: StepContext) -> Outcome:
    built = ctx.outputs["build"]
    channel = _channel(ctx.params)
    shot = run_dir(scope, ctx) / "candidate.png"
    question = str(ctx.params.get("question") or DEFAULT_QUESTION)
    with (
        chat_api(scope, ctx.params) as (api, what),
        CandidateServer(_files(ctx), api=api, prefix=path_prefix(channel)) as server,
    ):
        ctx.progress(f"headless Chromium on the candidate at {server.page_url}; /v1 goes to {what}")
        report = check_widget(server.page_url, screenshot=shot, question=question)
    detail = {**report.as_dict(), "chat_api": what}
    if report.release != built["release_id"]:
        report = dataclasses.replace(
            report, problems=[*report.problems, f"the page served release {report.release}"]
        )
    if not report.ok:
        return Outcome.failed(
            "the browser check failed before anything was published: " + "; ".join(report.problems[:3]),
            detail=detail,
            verdict=Verdict.FAIL,
            numbers=_browser_numbers(report),
        )
    ctx.progress(
        f"answered in {report.answer_s:.2f}s with {len(report.sources)} source(s); screenshot {shot}"
    )
    return Outcome.done(
        {"screenshot": report.screenshot, "answer": report.answer, "sources": report.sources},
        detail=detail,
        verdict=Verdict.PASS,
        numbers=_browser_numbers(report),
    )


def unreachable(url: str, timeout_s: float = 5.0) -> str | None:
    """Why ``url`` gives no HTTP answer at all (None: it answered, whatever the status)."""
    try:
        httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return repr(exc)
    return None


def _upload(scope: RunScope, ctx: StepContext) -> Outcome:
    built = ctx.outputs["build"]
    files = _files(ctx)
    site = _site(scope)
    url = site.url(_channel(ctx.params))
    problem = None if scope.platform.dry_run else unreachable(url)
    if problem is not None:  # verify could not see the release: publish nothing
        return Outcome.failed(
            f"{url} does not answer ({problem}): nothing was uploaded or published "
            "(on the local platform `mangaassist up` starts the edge)"
        )

    def collect(_key: str) -> dict[str, Any]:
        collected = site.gc()
        return {"releases": list(collected.releases), "files": collected.files}

    def upload(_key: str) -> dict[str, Any]:
        done = site.upload(files)
        return {"release_id": done.release_id, "uploaded": list(done.uploaded), "skipped": list(done.skipped)}

    collected = ctx.effect("gc", collect)
    done = ctx.effect("upload", upload)
    if done["release_id"] != built["release_id"]:
        return Outcome.failed(
            f"the site stored release {done['release_id']}, the build was {built['release_id']}"
        )
    new_assets = [p for p in done["uploaded"] if is_asset(p)]
    kept_assets = [p for p in done["skipped"] if is_asset(p)]
    ctx.progress(
        f"release {done['release_id']}: uploaded {len(done['uploaded'])} file(s) ({len(new_assets)} new "
        f"asset(s)), skipped {len(done['skipped'])} already stored ({len(kept_assets)} asset(s))"
    )
    return Outcome.done(
        {**done, "collected": collected},
        numbers={
            "uploaded": float(len(done["uploaded"])),
            "uploaded_assets": float(len(new_assets)),
            "skipped": float(len(done["skipped"])),
            "skipped_assets": float(len(kept_assets)),
            "collected_releases": float(len(collected["releases"])),
        },
    )


def _publish(scope: RunScope, ctx: StepContext) -> Outcome:
    release = str(ctx.outputs["build"]["release_id"])
    channel = _channel(ctx.params)
    site = _site(scope)
    move = ctx.effect(
        "point", lambda _key: dataclasses.asdict(site.point(channel, release, reason=ctx.run.id))
    )
    invalidation = ctx.effect(
        "invalidate", lambda _key: dataclasses.asdict(site.invalidate(channel, list(ENTRY_PATHS)))
    )
    ctx.progress(
        f"{channel}: {move['previous'] or 'nothing'} -> {release}; invalidated {', '.join(ENTRY_PATHS)}"
    )
    return Outcome.done(
        {
            "channel": channel,
            "release_id": release,
            "previous": move["previous"],
            "seq": move["seq"],
            "invalidation": invalidation,
            "url": site.url(channel),
        },
        numbers={"invalidation_paths": float(len(invalidation["paths"]))},
        detail={"url": site.url(channel)},
    )


def served_release(url: str, timeout_s: float = 5.0) -> str | None:
    """``X-MangaAssist-Release`` of ``URL/index.html`` (None when the header is missing)."""
    answer = httpx.get(
        url.rstrip("/") + "/index.html", timeout=timeout_s, headers={"Cache-Control": "no-cache"}
    )
    answer.raise_for_status()
    served: str | None = answer.headers.get(RELEASE_HEADER)
    return served


def wait_served(
    url: str, release: str, timeout_s: float, sleep: Any = time.sleep
) -> tuple[str | None, float]:
    """Poll until ``url`` serves ``release``: (the release last seen, seconds waited)."""
    started = time.monotonic()
    seen: str | None = None
    unreachable_since: float | None = None
    while True:
        try:
            seen = served_release(url)
            unreachable_since = None
        except httpx.HTTPError as exc:
            seen = f"unreachable ({exc!r})"
            unreachable_since = unreachable_since or time.monotonic()
        now = time.monotonic()
        waited = now - started
        gone = unreachable_since is not None and now - unreachable_since > UNREACHABLE_S
        if seen == release or waited > timeout_s or gone:
            return seen, waited
        sleep(0.02)


def _verify(scope: RunScope, ctx: StepContext) -> Outcome:
    release = str(ctx.outputs["build"]["release_id"])
    channel = _channel(ctx.params)
    url = _site(scope).url(channel)
    seen, waited = wait_served(url, release, VERIFY_TIMEOUT_S, ctx.sleep)
    if seen != release:
        return Outcome.failed(f"{url}index.html serves {seen}, not {release}, after {waited:.1f}s")
    ctx.progress(f"{url} serves {release}; headless Chromium through it")
    question = str(ctx.params.get("question") or DEFAULT_QUESTION)
    report = check_widget(url, screenshot=run_dir(scope, ctx) / "verify.png", question=question)
    if report.release != release:
        report = dataclasses.replace(
            report, problems=[*report.problems, f"the page came from release {report.release}"]
        )
    numbers = {**_browser_numbers(report), "served_after_s": round(waited, 3)}
    if not report.ok:
        return Outcome.failed(
            f"the widget on {url} failed the browser check: " + "; ".join(report.problems[:3]),
            detail=report.as_dict(),
            verdict=Verdict.FAIL,
            numbers=numbers,
        )
    return Outcome.done(
        {"url": url, "screenshot": report.screenshot, "answer": report.answer, "sources": report.sources},
        detail=report.as_dict(),
        verdict=Verdict.PASS,
        numbers=numbers,
    )


def undo_publish(site: StaticSite, channel: str, run_id: str) -> dict[str, Any]:
    """Undo what run ``run_id`` published on ``channel``: if the channel still points where that run
    moved it, point it back (and invalidate the entry paths); a preview the run created is deleted.
    What was done, as JSON."""
    moved = [m for m in site.history(channel) if m.reason == run_id]
    if not moved:
        return {"done": "nothing: the run did not move the pointer"}
    move = moved[-1]
    if site.current(channel) != move.release_id:
        return {"done": f"nothing: {channel} was moved again since (now {site.current(channel)})"}
    if move.previous is None:
        if channel.startswith(PREVIEW_PREFIX):
            site.delete_preview(channel[len(PREVIEW_PREFIX) :])
            return {"done": f"deleted the preview {channel} the run created"}
        return {"done": f"nothing: {channel} had no release before {move.release_id}"}
    back = site.point(channel, move.previous, reason=f"{run_id} rolled back")
    invalidation = site.invalidate(channel, list(ENTRY_PATHS))
    return {
        "done": f"{channel} pointed back to {move.previous}",
        "release_id": back.release_id,
        "invalidation": dataclasses.asdict(invalidation),
    }


def _rollback(scope: RunScope, ctx: StepContext) -> Outcome:
    channel = _channel(ctx.params)
    site = _site(scope)
    done = ctx.effect("point-back", lambda _key: undo_publish(site, channel, ctx.run.id))
    return Outcome.done(detail=done)


def _restore(scope: RunScope, ctx: StepContext) -> Outcome:
    channel = _channel(ctx.params)
    site = _site(scope)
    live = site.current(channel)
    if live is None:
        return Outcome.failed(f"{channel} has no live release to roll back")
    target = str(ctx.params.get("to") or "") or previous_release(site.history(channel))
    if target is None:
        return Outcome.failed(f"{channel} has no previous release to go back to (only {live} was ever live)")
    try:
        site.release(target)
    except NotFoundError:
        return Outcome.failed(f"release {target} is not stored (kept: the last 20 of each channel)")

    def point(_key: str) -> dict[str, Any]:
        move = site.point(channel, target, reason=ctx.run.id)
        return {**dataclasses.asdict(move), "moved_at": time.time()}

    move = ctx.effect("point", point)
    invalidation = ctx.effect(
        "invalidate", lambda _key: dataclasses.asdict(site.invalidate(channel, list(ENTRY_PATHS)))
    )
    ctx.progress(f"{channel}: {live} -> {target}; invalidated {', '.join(ENTRY_PATHS)}")
    return Outcome.done(
        {
            "channel": channel,
            "from": live,
            "to": target,
            "moved_at": move["moved_at"],
            "invalidation": invalidation,
        },
        numbers={"invalidation_paths": float(len(invalidation["paths"]))},
    )


def _verify_restored(scope: RunScope, ctx: StepContext) -> Outcome:
    restored = ctx.outputs["restore"]
    url = _site(scope).url(str(restored["channel"]))
    seen, _ = wait_served(url, str(restored["to"]), VERIFY_TIMEOUT_S, ctx.sleep)
    visible_s = time.time() - float(restored["moved_at"])
    if seen != restored["to"]:
        return Outcome.failed(
            f"{url}index.html serves {seen}, not {restored['to']}, {visible_s:.1f}s after the move"
        )
    ctx.progress(f"{url} serves {restored['to']} {visible_s * 1000:.0f} ms after the pointer moved")
    return Outcome.done(
        {"url": url, "release_id": restored["to"], "visible_s": round(visible_s, 4)},
        numbers={"visible_s": round(visible_s, 4)},
        detail={"url": url},
    )


def _delete_preview(scope: RunScope, ctx: StepContext) -> Outcome:
    branch = check_branch(str(ctx.params["preview"]))
    site = _site(scope)
    existed = ctx.effect("delete", lambda _key: site.delete_preview(branch))
    if not existed:
        return Outcome.failed(f"there is no preview of branch {branch} (mangaassist previews list)")
    return Outcome.done({"deleted": branch}, detail={"deleted": f"{PREVIEW_PREFIX}{branch}"})
