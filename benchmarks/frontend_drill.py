"""CD-05 drill: a tab that outlives 20 deploys, how much each deploy invalidates, how fast a rollback
is seen, what the widget weighs and how long it takes to build.

Everything the operator would run is the real CLI (``mangaassist deploy frontend``, ``rollback
frontend``, ``--json``) in child processes: the real npm build, typecheck, vitest, the Chromium
checks, the local ``StaticSite`` and the edge (``platform/local/edge.py``, its own process on a free
loopback port, started by the drill). The chat API behind the edge and the checks is a stub
(``delivery.frontend.serve.StubChatbot``): the drill measures delivery, not the chatbot.

Set-up (nothing in the checkout changes): a temporary ``mangaassist.toml`` with environment ``dev``
(local provider) and a temporary ``MANGAASSIST_HOME`` (the site, the engine's state, the cached
``node_modules``). Every deploy builds a copy of ``frontend/`` whose widget entry exports one more
constant naming the deploy (``delivery.frontend.sources.changed_source``): a new widget chunk and a
new ``loader.js`` each time, React's chunk and the stylesheet unchanged.

1. **Skew.** Release 1 is deployed. Headless Chromium opens the edge's ``/``: it gets release 1's
   ``index.html`` and ``loader.js``, and the loader asks for release 1's stylesheet and widget chunk;
   the drill holds every ``/assets/`` request of the page (Playwright's request routing) while
   ``--deploys`` more releases are deployed (each one runs ``gc``, which keeps the last 20 releases
   of each channel). Then the held requests go on to the edge, the widget chunk imports React's, the
   widget opens and answers. Target: 0 asset requests answered 404.
2. **Invalidation.** Every deploy's recorded invalidation (the ``publish`` step, and the site's own
   records): paths per deploy, target <= 2 (``/index.html``, ``/loader.js``; never ``/*``).
3. **Rollback.** ``--rollbacks`` times ``mangaassist rollback frontend`` (each one goes back to the
   release the live pointer replaced). Visible: from the pointer's move (the ``restore`` step records
   it) to the first ``/index.html`` from the edge with the target release's header (the ``verify``
   step polls every 20 ms). Target: p95 <= 1 s. The command's whole wall time (a Python process
   starting, the engine, the run) is reported beside it.
4. **Bundle and build.** The gzip sizes of the first deploy's build, ``npm run build``'s time, the
   first ``npm ci`` against the cached ``node_modules`` of later deploys, each deploy's wall time.

Writes ``benchmarks/results/frontend_drill.json`` (or ``--out``); exit status 1 when a target is
missed. Takes about 10 minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mangaassist.delivery.frontend.browser import (  # noqa: E402
    DEFAULT_QUESTION,
    PageWatch,
    ask,
    chromium_path,
    launch,
    sync_playwright,
    wait_for_widget,
)
from mangaassist.delivery.frontend.serve import StubChatbot  # noqa: E402
from mangaassist.delivery.frontend.sources import changed_source  # noqa: E402
from mangaassist.platform.local.edge import ensure_edge, stop_edge  # noqa: E402
from mangaassist.platform.local.static_site import LocalStaticSite  # noqa: E402

MANGAASSIST = Path(sys.executable).with_name("mangaassist")
ENV = "dev"


def pct(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "n": len(values),
        "p50": round(pct(values, 0.5), 4),
        "p95": round(pct(values, 0.95), 4),
        "max": round(max(values), 4),
        "min": round(min(values), 4),
    }


def cli(env: dict[str, str], *args: str, timeout: float = 900) -> tuple[dict[str, Any], float]:
    """Run ``mangaassist ARGS --json``: its JSON document and its wall time."""
    started = time.monotonic()
    done = subprocess.run(
        [str(MANGAASSIST), *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    wall = time.monotonic() - started
    try:
        doc: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        command = " ".join(args)
        raise SystemExit(
            f"mangaassist {command}: no JSON (exit {done.returncode}): {done.stderr[-2000:]}"
        ) from None
    return doc, wall


def numbers(doc: dict[str, Any], step: str) -> dict[str, float]:
    return dict(doc["steps"].get(step, {}).get("detail", {}).get("numbers") or {})


def output(doc: dict[str, Any], step: str) -> dict[str, Any]:
    return dict(doc["steps"].get(step, {}).get("output") or {})


def deploy(env: dict[str, str], base: Path, n: int, api: str) -> dict[str, Any]:
    source = changed_source(ROOT / "frontend", base / "sources" / f"deploy-{n:02d}", f"drill deploy {n}")
    doc, wall = cli(env, "deploy", "frontend", "--env", ENV, "--source", str(source), "--api", api)
    shutil.rmtree(source, ignore_errors=True)
    if doc.get("state") != "succeeded":
        raise SystemExit(f"deploy {n} did not succeed: {doc.get('reason') or doc.get('error')}")
    upload = output(doc, "upload")
    record = {
        "n": n,
        "run": doc["run"],
        "release": output(doc, "build")["release_id"],
        "wall_s": round(wall, 3),
        "build_s": numbers(doc, "build")["build_s"],
        "npm_ci_s": numbers(doc, "build")["npm_ci_s"],
        "node_modules": output(doc, "build")["node_modules"],
        "typecheck_s": numbers(doc, "gates")["typecheck_s"],
        "tests_s": numbers(doc, "gates")["tests_s"],
        "uploaded_assets": [p for p in upload["uploaded"] if p.startswith("assets/")],
        "skipped_assets": [p for p in upload["skipped"] if p.startswith("assets/")],
        "collected_releases": upload["collected"]["releases"],
        "invalidation_paths": output(doc, "publish")["invalidation"]["paths"],
        "budget": output(doc, "gates")["budget"],
    }
    print(
        f"deploy {n:2d}: {record['release']} in {wall:5.1f}s (build {record['build_s']:.2f}s, "
        f"node_modules {record['node_modules']}), {len(record['uploaded_assets'])} new asset(s), "
        f"invalidated {record['invalidation_paths']}",
        flush=True,
    )
    return record


def drill(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    config = base / "mangaassist.toml"
    config.write_text(f"[environments.{ENV}]\nprovider = 'local'\nhome = 'home'\ncontrol_port = 0\n")
    home = base / "home"
    env = {
        **os.environ,
        "MANGAASSIST_PLATFORM_CONFIG": str(config),
        "MANGAASSIST_HOME": str(home),
        "MANGAASSIST_ROOT": str(ROOT),
        "MANGAASSIST_STATE_URL": "",
        "MANGAASSIST_POLL_SECONDS": "0.1",
        "COLUMNS": "200",
    }
    env.pop("MANGAASSIST_POLICY", None)  # the built-in default: dev is free
    site_root = home / "sites" / "widget"
    report: dict[str, Any] = {}
    with StubChatbot() as stub:
        edge = ensure_edge(home, site_root=site_root, environment=ENV, api=stub.url, port=0)
        try:
            report = run(args, base, env, edge, stub.url, site_root)
        finally:
            stop_edge(home)
    return report


def run(
    args: argparse.Namespace, base: Path, env: dict[str, str], edge: str, api: str, site_root: Path
) -> dict[str, Any]:
    deploys = [deploy(env, base, 1, api)]
    held: list[Any] = []
    releasing = False

    def hold(route: Any) -> None:
        if releasing:
            route.continue_()
        else:
            held.append(route)

    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page()
            watch = PageWatch().attach(page)
            page.route("**/assets/**", hold)
            opened = page.goto(edge + "/", wait_until="domcontentloaded")
            page_release = opened.headers.get("x-mangaassist-release") if opened else None
            deadline = time.monotonic() + 30
            while not any("/assets/widget-" in r.request.url and r.request.url.endswith(".js") for r in held):
                if time.monotonic() > deadline:
                    raise SystemExit(f"the page never asked for its widget chunk (held: {len(held)})")
                page.wait_for_timeout(50)
            held_urls = sorted(r.request.url.removeprefix(edge) for r in held)
            print(f"page open on {page_release}; holding {held_urls}", flush=True)
            for n in range(2, args.deploys + 2):
                deploys.append(deploy(env, base, n, api))
            releasing = True
            for route in held:
                route.continue_()
            problem = wait_for_widget(page, watch, 30)
            answered = ask(page, DEFAULT_QUESTION, 30) if problem is None else None
            page.wait_for_timeout(200)
            skew = {
                "page_release": page_release,
                "page_release_is_first_deploy": page_release == deploys[0]["release"],
                "deploys_while_open": args.deploys,
                "live_release_when_chunks_fetched": deploys[-1]["release"],
                "held_requests": held_urls,
                "asset_responses": dict(sorted(watch.assets.items())),
                "asset_404s": watch.asset_404s,
                "widget_loaded": problem is None,
                "answered": bool(answered and answered.answer),
                "sources": answered.sources if answered else [],
                "problems": watch.problems()
                + ([problem] if problem else [])
                + (answered.problems if answered else []),
                "target": "0 asset 404s, the widget loads and answers",
            }
            skew["passed"] = skew["asset_404s"] == 0 and skew["widget_loaded"] and skew["answered"]
            print(f"skew: {skew['asset_404s']} asset 404s, widget loaded {skew['widget_loaded']}", flush=True)
        finally:
            browser.close()

    site = LocalStaticSite(site_root, environment=ENV)
    recorded = [len(i.paths) for i in site.invalidations(ENV)]
    per_deploy = [len(d["invalidation_paths"]) for d in deploys]
    invalidation = {
        "paths_per_deploy_max": max(per_deploy),
        "paths_per_deploy": sorted(set(per_deploy)),
        "paths": deploys[-1]["invalidation_paths"],
        "site_records": len(recorded),
        "site_records_paths_max": max(recorded),
        "target_max": 2,
    }
    invalidation["passed"] = (
        invalidation["paths_per_deploy_max"] <= 2 and invalidation["site_records_paths_max"] <= 2
    )

    visible: list[float] = []
    walls: list[float] = []
    for n in range(1, args.rollbacks + 1):
        doc, wall = cli(env, "rollback", "frontend", "--env", ENV)
        if doc.get("state") != "succeeded":
            raise SystemExit(f"rollback {n} did not succeed: {doc.get('reason') or doc.get('error')}")
        restored = output(doc, "restore")
        seen = site.current(ENV)
        if seen != restored["to"]:
            raise SystemExit(f"rollback {n}: the site points at {seen}, not {restored['to']}")
        visible.append(float(output(doc, "verify")["visible_s"]))
        walls.append(wall)
        print(
            f"rollback {n:2d}: {restored['from']} -> {restored['to']} "
            f"visible after {visible[-1] * 1000:.0f} ms",
            flush=True,
        )
    site.close()
    rollback = {
        "count": args.rollbacks,
        "visible_s": summary(visible),
        "command_wall_s": summary(walls),
        "target_p95_s": 1.0,
        "how": "from the pointer's move (restore step) to the first /index.html the edge answers "
        "with the target's release (verify step)",
    }
    rollback["passed"] = bool(visible) and pct(visible, 0.95) <= 1.0

    first = deploys[0]
    bundle = {
        "loader_gzip_bytes": first["budget"]["loader_gzip_bytes"],
        "loader_budget_bytes": first["budget"]["loader_budget_bytes"],
        "total_gzip_bytes": first["budget"]["total_gzip_bytes"],
        "total_budget_bytes": first["budget"]["total_budget_bytes"],
        "files_gzip_bytes": first["budget"]["files"],
    }
    bundle["passed"] = bool(first["budget"]["ok"])
    later = deploys[1:]
    build = {
        "npm_run_build_s": summary([d["build_s"] for d in deploys]),
        "first_npm_ci_s": first["npm_ci_s"],
        "first_node_modules": first["node_modules"],
        "later_node_modules_cached": sum(1 for d in later if d["node_modules"] == "cached"),
        "typecheck_s": summary([d["typecheck_s"] for d in deploys]),
        "vitest_s": summary([d["tests_s"] for d in deploys]),
        "deploy_wall_s": summary([d["wall_s"] for d in deploys]),
        "new_assets_per_later_deploy": sorted({len(d["uploaded_assets"]) for d in later}),
        "collected_releases_total": sum(len(d["collected_releases"]) for d in deploys),
    }
    return {
        "skew": skew,
        "invalidation": invalidation,
        "rollback": rollback,
        "bundle": bundle,
        "build": build,
        "deploys": [{k: v for k, v in d.items() if k != "budget"} for d in deploys],
    }


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deploys", type=int, default=20, help="deploys while the page is open (default 20)")
    parser.add_argument("--rollbacks", type=int, default=20, help="rollbacks timed (default 20)")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "frontend_drill.json",
        help="report path",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if args.deploys < 1 or args.rollbacks < 1:
        parser.error("--deploys and --rollbacks must be at least 1")
    return args


def versions() -> dict[str, str]:
    def first_line(*argv: str) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except OSError:
            return "missing"
        return (done.stdout or done.stderr).strip().splitlines()[-1] if (done.stdout or done.stderr) else ""

    return {
        "python": platform.python_version(),
        "node": first_line("node", "--version"),
        "npm": first_line("npm", "--version"),
        "chromium": first_line(chromium_path(), "--version"),
        "cpus": str(os.cpu_count()),
        "machine": platform.machine(),
    }


def main() -> int:
    args = parse()
    base = Path(tempfile.mkdtemp(prefix="mangaassist-frontend-drill-"))
    started = time.monotonic()
    try:
        results = drill(args, base)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    targets = {name: results[name]["passed"] for name in ("skew", "invalidation", "rollback", "bundle")}
    report = {
        "drill": "CD-05 frontend: skew protection, invalidations, rollback visibility, bundle, build",
        "command": "python benchmarks/frontend_drill.py "
        + f"--deploys {args.deploys} --rollbacks {args.rollbacks}",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": versions(),
        "seconds": round(time.monotonic() - started, 1),
        "targets": targets,
        "passed": all(targets.values()),
        **results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("targets", "passed", "seconds")}, indent=2))
    print(
        f"skew: {results['skew']['asset_404s']} asset 404s after {args.deploys} deploys; "
        f"invalidation: max {results['invalidation']['paths_per_deploy_max']} paths per deploy; "
        f"rollback visible p95 {results['rollback']['visible_s']['p95'] * 1000:.0f} ms; "
        f"loader {results['bundle']['loader_gzip_bytes']} B, "
        f"all {results['bundle']['total_gzip_bytes']} B gzip; "
        f"npm run build p50 {results['build']['npm_run_build_s']['p50']:.2f}s -> {args.out}"
    )
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
