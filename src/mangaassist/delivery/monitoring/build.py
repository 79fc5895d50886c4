"""``build``: validate the SLO specs, then write every monitoring artefact at once (CD-08).

Why all at once, and only after everything validated: the rules, their tests, the dashboards and the
alarms describe the same SLOs, so a half-written tree (new rules, old dashboards) would show one
thing and alert on another. Every spec is parsed and every artefact generated in memory first; any
problem raises a ``ConfigError`` before anything is written. The files are then written to a
temporary directory beside ``out`` and renamed into place; an existing ``out`` is replaced only if it
holds the marker a previous build left (``.monitoring-build``), so ``--out .`` cannot wipe a
checkout.

Layout of ``out``::

    prometheus/rules/SERVICE.yml     the SLO rule groups of each service (Sloth's layout)
    prometheus/tests/SLO_ID.yml      promtool unit tests per SLO (see promtests.py)
    grafana/slo-overview.json        the SLO overview dashboard
    grafana/service-SERVICE.json     one dashboard per service
    cloudwatch/alarms.json           CloudWatch alarm definitions (see cloudwatch.py)
    .monitoring-build                what was built from what (JSON)

Objectives and the window set come from the specs and, with an ``environment``, from the
environments file (``monitoring/environments.yaml``, beside the specs' directory by default). OpenSLO
time windows are checked against the default period (google-30d's 30 days): the specs describe
production, an environment's window set overrides the period on purpose.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mangaassist.core.errors import ConfigError
from mangaassist.delivery.monitoring import cloudwatch, dashboards, promtests, rules
from mangaassist.delivery.monitoring.slo import (
    DEFAULT_WINDOW_SET,
    SLO,
    Environment,
    WindowSet,
    apply_environment,
    load_environments,
    load_slos,
    spec_files,
)

MARKER = ".monitoring-build"
ENVIRONMENTS_FILE = "environments.yaml"


@dataclass(frozen=True)
class BuildReport:
    """What ``build`` wrote: paths (under ``out``) and counts, and the SLOs it could not test."""

    out: Path
    environment: str | None
    window_set: str
    period: str
    spec_files: tuple[Path, ...]
    slos: tuple[str, ...]
    rule_files: tuple[Path, ...]
    test_files: tuple[Path, ...]
    dashboards: tuple[Path, ...]
    alarms_file: Path
    recording_rules: int
    alert_rules: int
    test_cases: int
    metric_alarms: int
    composite_alarms: int
    untested: Mapping[str, str]
    """SLO id -> why it has no promtool tests (e.g. a raw SLI query): reported, never skipped silently."""
    no_alarms: Mapping[str, str]
    """SLO id -> why it has no CloudWatch alarms (its SLI has no CloudWatch equivalent)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "environment": self.environment,
            "window_set": self.window_set,
            "period": self.period,
            "spec_files": [str(p) for p in self.spec_files],
            "slos": list(self.slos),
            "rule_files": [str(p) for p in self.rule_files],
            "test_files": [str(p) for p in self.test_files],
            "dashboards": [str(p) for p in self.dashboards],
            "alarms_file": str(self.alarms_file),
            "counts": {
                "slos": len(self.slos),
                "recording_rules": self.recording_rules,
                "alert_rules": self.alert_rules,
                "test_cases": self.test_cases,
                "metric_alarms": self.metric_alarms,
                "composite_alarms": self.composite_alarms,
            },
            "untested": dict(self.untested),
            "no_alarms": dict(self.no_alarms),
        }


def default_environments_file(slo_paths: Sequence[Path]) -> Path | None:
    """``environments.yaml`` beside the first spec directory (``monitoring/slos`` ->
    ``monitoring/environments.yaml``), or beside a spec file's directory; None if there is none."""
    if not slo_paths:
        return None
    first = slo_paths[0]
    candidate = (first if first.is_dir() else first.parent).parent / ENVIRONMENTS_FILE
    return candidate if candidate.is_file() else None


def resolve(
    slo_paths: Sequence[Path], environment: str | None, environments_file: Path | None = None
) -> tuple[tuple[SLO, ...], WindowSet, Environment | None]:
    """The SLOs (with the environment's objectives) and the window set, all validated."""
    env: Environment | None = None
    ws = DEFAULT_WINDOW_SET
    file = environments_file or (default_environments_file(slo_paths) if environment else None)
    if environments_file is not None and not environments_file.is_file():
        raise ConfigError(f"{environments_file}: no such environments file")
    if environment is not None:
        if file is None:
            raise ConfigError(
                f"environment {environment!r}: no {ENVIRONMENTS_FILE} beside the SLO specs (give one)"
            )
        env = load_environments(file).get(environment)
        ws = env.window_set
    elif file is not None:
        load_environments(file)  # validated even when unused, so a broken file is found early
    slos = load_slos(slo_paths, period_s=DEFAULT_WINDOW_SET.period_s)
    if env is not None:
        slos = apply_environment(slos, env)
    return slos, ws, env


def _header(what: str, sources: Sequence[Path], version: str) -> str:
    names = ", ".join(str(p) for p in sources)
    return (
        f"{what}\nGenerated by mangaassist monitor build ({version}) from {names}.\n"
        "DO NOT EDIT: change the SLO specs and build again."
    )


def render(
    slos: Sequence[SLO],
    ws: WindowSet,
    environment: str | None,
    sources: Sequence[Path],
    version: str = rules.GENERATOR_VERSION,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Every file's text by path relative to ``out``, and the report's counts (nothing written)."""
    options = rules.RuleOptions(version=version)
    files: dict[str, str] = {}
    services = list(dict.fromkeys(slo.service for slo in slos))
    recording = alerting = cases = 0
    untested: dict[str, str] = {}
    for service in services:
        mine = [s for s in slos if s.service == service]
        groups = rules.generate(mine, ws, options)
        recording += sum(1 for g in groups for r in g.rules if r.kind == "record")
        alerting += sum(1 for g in groups for r in g.rules if r.kind == "alert")
        files[f"prometheus/rules/{service}.yml"] = rules.dump_yaml(
            rules.rule_file(groups),
            _header(f"SLO rules of {service} (Sloth-compatible), window set {ws.name}.", sources, version),
        )
        for slo in mine:
            try:
                doc = promtests.slo_test_file(slo, ws, f"../rules/{service}.yml", options)
            except promtests.Untestable as exc:
                untested[slo.id] = str(exc)
                continue
            cases += len(doc["tests"])
            files[f"prometheus/tests/{slo.id}.yml"] = rules.dump_yaml(
                doc, _header(f"promtool tests of SLO {slo.id}: promtool test rules FILE.", sources, version)
            )
    for name, board in dashboards.dashboards(slos, ws).items():
        files[f"grafana/{name}"] = json.dumps(board, indent=2) + "\n"
    alarms = cloudwatch.alarms_document(slos, ws, environment)
    files["cloudwatch/alarms.json"] = json.dumps(alarms, indent=2) + "\n"
    counts = {
        "recording_rules": recording,
        "alert_rules": alerting,
        "test_cases": cases,
        "metric_alarms": len(alarms["alarms"]),
        "composite_alarms": len(alarms["composite_alarms"]),
        "untested": untested,
        "no_alarms": alarms["unmapped"],
    }
    return files, counts


def build(
    slo_paths: list[Path],
    out: Path,
    environment: str | None,
    *,
    environments_file: Path | None = None,
    version: str = rules.GENERATOR_VERSION,
) -> BuildReport:
    """Validate ``slo_paths`` (files or directories of specs) for ``environment`` (None: the specs as
    written, google-30d), then replace ``out`` with the rules, tests, dashboards and alarms."""
    slos, ws, _env = resolve(slo_paths, environment, environments_file)
    if not slos:
        raise ConfigError(f"no SLO in {', '.join(str(p) for p in slo_paths)}: nothing to build")
    sources = spec_files(slo_paths)
    files, counts = render(slos, ws, environment, sources, version)
    report = BuildReport(
        out=out,
        environment=environment,
        window_set=ws.name,
        period=ws.period,
        spec_files=tuple(sources),
        slos=tuple(s.id for s in slos),
        rule_files=tuple(out / p for p in files if p.startswith("prometheus/rules/")),
        test_files=tuple(out / p for p in files if p.startswith("prometheus/tests/")),
        dashboards=tuple(out / p for p in files if p.startswith("grafana/")),
        alarms_file=out / "cloudwatch/alarms.json",
        recording_rules=counts["recording_rules"],
        alert_rules=counts["alert_rules"],
        test_cases=counts["test_cases"],
        metric_alarms=counts["metric_alarms"],
        composite_alarms=counts["composite_alarms"],
        untested=counts["untested"],
        no_alarms=counts["no_alarms"],
    )
    marker = {k: v for k, v in report.as_dict().items() if k != "out"}
    files[MARKER] = json.dumps(marker, indent=2) + "\n"
    write_tree(out, files)
    return report


def write_tree(out: Path, files: Mapping[str, str]) -> None:
    """Write ``files`` (relative path -> text) as the directory ``out``, all or nothing."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ConfigError(f"refusing to replace {out}: it is not a monitoring build (no {MARKER} in it)")
    parent = out.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    try:
        for rel, text in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        if out.exists():
            old = tmp.with_suffix(".old")
            os.rename(out, old)
            try:
                os.rename(tmp, out)
            except OSError:
                os.rename(old, out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
