"""CD-08, monitoring: the SLO specs (``monitoring/slos``) compiled and installed where they alert.

The runbook (``build``), one engine step each:

1. ``build``: validate the specs and compile them for the run's environment
   (``delivery.monitoring.build``: Prometheus rules, promtool tests, Grafana dashboards, CloudWatch
   alarms) into ``HOME/monitoring/builds/RUN``; bad input stops here, nothing else is touched;
2. ``check``: ``promtool check rules`` on every rule file and ``promtool test rules`` on every
   generated test (a sustained burn pages, a blip does not, a slow burn only tickets, a silent
   service is quiet);
3. ``diff``: the new rule groups against the ones installed (added, removed, changed rules);
4. ``apply`` (local): the previous rule set is kept (``rules.previous/``), the new files replace the
   ones CD-08 installed (a manifest says which: other rule files are left alone) and Prometheus
   reloads (``POST /-/reload``);
5. ``verify`` (local): Prometheus's ``/api/v1/rules`` lists every installed group, healthy, with no
   evaluation error (when Prometheus is not running the rules load when ``mangaassist up`` starts it,
   and the step says so);
6. ``publish``: the dashboards go to ``HOME/monitoring/dashboards/`` and, when ``GRAFANA_URL`` is
   set, to Grafana's HTTP API (``GRAFANA_TOKEN`` as the bearer token; never logged).

On an aws environment steps 4 to 6 are one ``ship`` step that says where the alarms go: CD-02's
``monitoring`` stack, applied by ``mangaassist deploy infra``. ``CD-08-rollback`` puts the previous
rule set back and reloads (``mangaassist rollback monitoring``).

Params: ``environment``, ``root``, ``slos`` (a file or directory of specs; default
``monitoring/slos``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from mangaassist.core.errors import ConfigError
from mangaassist.delivery.engine.runs import Outcome, Pipeline, Step, StepContext
from mangaassist.delivery.monitoring.build import build as build_monitoring
from mangaassist.delivery.monitoring.build import resolve
from mangaassist.delivery.monitoring.promtests import run_promtool
from mangaassist.delivery.pipelines.scope import RunScope
from mangaassist.platform.factory import settings_for
from mangaassist.platform.monitoring import RuleHost
from mangaassist.platform.settings import find_root, state_home

NAME = "CD-08"
ROLLBACK = "CD-08-rollback"
MANIFEST = ".cd08-installed.json"
VERIFY_TIMEOUT_S = 30.0


def root_of(params: dict[str, Any]) -> Path:
    return find_root(params.get("root"), needs=("monitoring/slos",))


def slo_paths(params: dict[str, Any]) -> list[Path]:
    return [Path(params["slos"]) if params.get("slos") else root_of(params) / "monitoring" / "slos"]


def build(params: dict[str, Any]) -> Pipeline:
    environment = params.get("environment")
    if not environment:
        raise ConfigError("CD-08 needs the param environment=NAME")
    resolve(slo_paths(params), str(environment))  # bad specs fail before the run starts
    provider = settings_for(str(environment)).provider
    scope = RunScope(str(environment))
    steps: tuple[Step, ...] = (
        Step("build", scope.bind(_build), "validate the SLO specs and compile them", changes=False),
        Step("check", scope.bind(_check), "promtool check rules and the generated rule tests", changes=False),
        Step("diff", scope.bind(_diff), "the new rule groups against the installed ones", changes=False),
    )
    if provider == "local":
        steps += (
            Step("apply", scope.bind(_apply), "install the rules (keep the previous set), reload Prometheus"),
            Step("verify", scope.bind(_verify), "every group loaded, healthy, no evaluation error"),
            Step("publish", scope.bind(_publish), "the dashboards to the state directory (and Grafana)"),
        )
    else:
        steps += (  # it says where the alarms go; CD-02 applies them
            Step("ship", scope.bind(_ship), "the alarms ship with CD-02's monitoring stack", changes=False),
        )
    return Pipeline(NAME, steps, description=f"monitoring of {environment}", params=params, close=scope.close)


def build_rollback(params: dict[str, Any]) -> Pipeline:
    if not params.get("environment"):
        raise ConfigError("CD-08-rollback needs the param environment=NAME")
    scope = RunScope(str(params["environment"]))
    return Pipeline(
        ROLLBACK,
        (
            Step("restore", scope.bind(_restore), "the previous rule set back, Prometheus reloaded"),
            Step("verify", scope.bind(_verify), "every group loaded, healthy, no evaluation error"),
        ),
        description="put the previous monitoring rules back",
        params=params,
        close=scope.close,
        restores=True,
    )


# -- steps -----------------------------------------------------------------------------------------


def _build(scope: RunScope, ctx: StepContext) -> Outcome:
    out = state_home(root_of(ctx.params)) / "monitoring" / "builds" / ctx.run.id
    report = build_monitoring(slo_paths(ctx.params), out, ctx.run.environment)
    doc = report.as_dict()
    counts = doc["counts"]
    return Outcome.done(
        doc, numbers={k: float(v) for k, v in counts.items()}, detail={"untested": doc["untested"]}
    )


def _check(scope: RunScope, ctx: StepContext) -> Outcome:
    built = ctx.outputs["build"]
    # the same runs as `mangaassist monitor test`: check rules, then (if it passed) the rule tests
    for run in run_promtool(Path(built["out"])):
        if not run.ok:
            return Outcome.failed(f"promtool {run.command[1]} rules failed: {run.output[-3000:]}")
    rules, tests = built["rule_files"], built["test_files"]
    return Outcome.done(
        {"rule_files": len(rules), "test_files": len(tests)},
        numbers={"rule_files": float(len(rules)), "test_files": float(len(tests))},
    )


def _rule_names(files: list[Path]) -> dict[str, str]:
    """``group/rule`` -> the rule's canonical YAML, over ``files``."""
    out = {}
    for path in files:
        doc = yaml.safe_load(path.read_text()) or {}
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                name = rule.get("record") or rule.get("alert")
                key = f"{group.get('name')}/{name}"
                # several recording rules share a name (one per window label): keep them apart
                while key in out:
                    key += "'"
                out[key] = json.dumps(rule, sort_keys=True)
    return out


def _installed(host: RuleHost) -> list[Path]:
    try:
        manifest = json.loads((host.rules_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return []
    return [host.rules_dir / name for name in manifest.get("files", []) if (host.rules_dir / name).is_file()]


def _diff(scope: RunScope, ctx: StepContext) -> Outcome:
    new = _rule_names([Path(p) for p in ctx.outputs["build"]["rule_files"]])
    try:
        old = _rule_names(_installed(scope.platform.rule_host()))
    except ConfigError:  # aws: nothing installed here
        old = {}
    added = sorted(k for k in new if k not in old)
    removed = sorted(k for k in old if k not in new)
    changed = sorted(k for k in new if k in old and new[k] != old[k])
    for label, names in (("added", added), ("removed", removed), ("changed", changed)):
        if names:
            ctx.progress(f"{label}: {len(names)} rule(s), e.g. {names[0]}")
    return Outcome.done(
        {"added": added, "removed": removed, "changed": changed},
        numbers={"added": float(len(added)), "removed": float(len(removed)), "changed": float(len(changed))},
    )


def _copy_set(files: list[Path], into: Path) -> list[str]:
    """Replace ``into`` with copies of ``files`` (written beside, then renamed)."""
    tmp = into.with_name(f".{into.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for path in files:
        shutil.copy2(path, tmp / path.name)
    shutil.rmtree(into, ignore_errors=True)
    os.replace(tmp, into)
    return [p.name for p in files]


def install(host: RuleHost, files: list[Path]) -> list[str]:
    """Make ``files`` the rule set CD-08 manages in ``host.rules_dir`` (the previous one is kept in
    ``rules.previous``), each written atomically; other rule files there are left alone."""
    host.rules_dir.mkdir(parents=True, exist_ok=True)
    current = _installed(host)
    previous = host.rules_dir.parent / "rules.previous"
    if current:
        _copy_set(current, previous)
    names = {p.name for p in files}
    for path in files:
        tmp = host.rules_dir / f".{path.name}.tmp"
        shutil.copy2(path, tmp)
        os.replace(tmp, host.rules_dir / path.name)
    for old in current:
        if old.name not in names:
            old.unlink(missing_ok=True)
    manifest = host.rules_dir / MANIFEST
    tmp = manifest.with_name(f".{manifest.name}.tmp")
    tmp.write_text(json.dumps({"files": sorted(names), "at": time.time()}, indent=1))
    os.replace(tmp, manifest)
    host.reload()
    return sorted(names)


def _apply(scope: RunScope, ctx: StepContext) -> Outcome:
    host = scope.platform.rule_host()
    files = [Path(p) for p in ctx.outputs["build"]["rule_files"]]
    installed = ctx.effect("install", lambda _k: install(host, files))
    url = host.url()  # one readiness request, not one per use
    return Outcome.done(
        {"installed": installed, "rules_dir": str(host.rules_dir), "reloaded": url is not None},
        detail={"prometheus": url or "not running: the rules load when `mangaassist up` starts it"},
    )


def loaded_problems(groups: list[dict[str, Any]], wanted: set[str]) -> list[str]:
    """What keeps the installed groups from being loaded and healthy (empty: all good)."""
    found = {g.get("name"): g for g in groups}
    problems = [f"group {name} not loaded" for name in sorted(wanted - set(found))]
    for name in sorted(wanted & set(found)):
        for rule in found[name].get("rules", []):
            if rule.get("health") == "err" or rule.get("lastError"):
                problems.append(f"{name}/{rule.get('name')}: {rule.get('lastError') or 'unhealthy'}")
    return problems


def _group_names(files: list[Path]) -> set[str]:
    names = set()
    for path in files:
        doc = yaml.safe_load(path.read_text()) or {}
        names |= {str(g.get("name")) for g in doc.get("groups", [])}
    return names


def _verify(scope: RunScope, ctx: StepContext) -> Outcome:
    host = scope.platform.rule_host()
    if host.url() is None:
        return Outcome.done(detail={"verified": False, "why": "Prometheus is not running"})
    wanted = _group_names(_installed(host))
    deadline = time.monotonic() + VERIFY_TIMEOUT_S
    problems = loaded_problems(host.groups(), wanted)
    while problems and time.monotonic() < deadline:
        ctx.sleep(1.0)
        problems = loaded_problems(host.groups(), wanted)
    if problems:
        return Outcome.failed(f"Prometheus did not load the rules cleanly: {'; '.join(problems[:5])}")
    return Outcome.done(
        {"groups": sorted(wanted)}, numbers={"groups": float(len(wanted))}, detail={"verified": True}
    )


def publish_grafana(url: str, token: str | None, dashboards: list[Path]) -> list[str]:
    """POST each dashboard to Grafana's ``/api/dashboards/db`` (overwrite); their uids."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    uids = []
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30.0) as client:
        for path in dashboards:
            dashboard = json.loads(path.read_text())
            response = client.post("/api/dashboards/db", json={"dashboard": dashboard, "overwrite": True})
            if response.status_code >= 400:
                raise ConfigError(
                    f"Grafana refused {path.name}: HTTP {response.status_code} {response.text[:200]}"
                )
            uids.append(str(response.json().get("uid") or dashboard.get("uid")))
    return uids


def _publish(scope: RunScope, ctx: StepContext) -> Outcome:
    host = scope.platform.rule_host()
    dashboards = [Path(p) for p in ctx.outputs["build"]["dashboards"]]
    written = _copy_set(dashboards, host.dashboards_dir)
    detail: dict[str, Any] = {"dashboards_dir": str(host.dashboards_dir)}
    grafana = os.environ.get("GRAFANA_URL")
    if grafana:
        uids = ctx.effect(
            "grafana", lambda _k: publish_grafana(grafana, os.environ.get("GRAFANA_TOKEN"), dashboards)
        )
        detail["grafana"] = {"url": grafana, "uids": uids}
    else:
        detail["grafana"] = "GRAFANA_URL not set: files only"
    return Outcome.done(
        {"dashboards": [str(host.dashboards_dir / n) for n in written]},
        numbers={"dashboards": float(len(written))},
        detail=detail,
    )


def _ship(scope: RunScope, ctx: StepContext) -> Outcome:
    built = ctx.outputs["build"]
    return Outcome.done(
        {"alarms_file": built["alarms_file"]},
        detail={
            "where": f"CloudWatch alarms ship with CD-02's monitoring stack: mangaassist deploy infra --env "
            f"{ctx.run.environment}",
        },
    )


def _restore(scope: RunScope, ctx: StepContext) -> Outcome:
    host = scope.platform.rule_host()
    previous = sorted((host.rules_dir.parent / "rules.previous").glob("*.y*ml"))
    if not previous:
        return Outcome.failed("no previous rule set to go back to (rules.previous is empty)")
    restored = ctx.effect("restore", lambda _k: install(host, previous))
    return Outcome.done({"restored": restored}, numbers={"files": float(len(restored))})
