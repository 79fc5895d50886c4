"""What is deployed where, as JSON-able dicts: the dashboard's "Services" and "Versions" pages and the
``--json`` of the CLI commands that list the same things.

Every section function takes the environment's ``Platform`` (``platform.factory``: ``platform_for(env,
home=...)`` or ``opened(...)``, as the CLI commands make it; open one per page render, its resources
follow the processes that run now) and **fails soft**: when what it reads does not run or cannot be
read (no control plane, no config server, no Prometheus, a broken store), the section comes back as
``{"available": False, "error": REASON}`` instead of raising, so a page renders every other section.
A section that could be read has ``"available": True``. Versions and releases are listed oldest
first, as the stores give them, services by name; times are the stores' own (ISO strings, or Unix
seconds where the store keeps those). Nothing here starts a server or changes what is deployed.

- ``services(platform)``: each service's revisions (weight, health, reason, ready workers) with what
  its router counted per revision (``Metrics.snapshot``: requests, failed, error rate, p50/p99,
  pinned requests...) and over the last ``window_s`` seconds (request rate, errors, latency, from the
  router's observations); its shadow and the shadow's counters;
- ``config_profiles(platform)``: CD-06's profiles: versions, the live (stable) one, a rollout's
  candidate and share;
- ``knowledge_bases(platform)``: CD-04's index versions and where ``kb-live`` points;
- ``models(platform)``: CD-03's registered versions and the version each alias names;
- ``frontend(platform)``: CD-05's widget releases, the environment's live one, the previews;
- ``monitoring(platform)``: CD-08's SLOs (the rule set installed on the platform, else the specs
  compiled for the environment) and the alerts Prometheus has firing or pending;
- ``versions(platform)``: every section above but ``services``, in one dict.

Shared with the CLI, one function each: ``kb_listing`` (``kb list --json``), ``model_listing``
(``model list --json``), ``preview_rows`` (``previews list --json``).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from mangaassist.core.configspec import PROFILES
from mangaassist.core.errors import MangaAssistError
from mangaassist.platform import daemons
from mangaassist.platform.compute import ServiceStatus, WorkerState
from mangaassist.platform.config_store import ConfigVersion, Rollout
from mangaassist.platform.factory import Platform
from mangaassist.platform.metrics import Metrics, RequestOutcome
from mangaassist.platform.model_registry import ALIASES, ModelRegistry
from mangaassist.platform.static_site import StaticSite, check_channel, preview_channel
from mangaassist.platform.vector import LIVE_ALIAS, VectorIndex

RECENT_WINDOW_S = 60.0
"""The window ``services`` reports request rates, errors and latency over (the last minute)."""
RECENT_OBSERVATIONS = 5000
"""At most this many of a router's newest observations are read for that window; when the window
holds more, it is shortened to the span they cover (``truncated``)."""
CONFIG_SERVER = "config-server"
"""The local config server's name under its home (``HOME/config-server.json``, ``platform.daemons``)."""


# -- failing soft ----------------------------------------------------------------------------------


def reason(exc: BaseException) -> str:
    """One line saying why a section could not be read: the platform's own message for its errors
    (they name the remedy: ``run `mangaassist up```), else the exception's type and text."""
    if isinstance(exc, MangaAssistError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def unavailable(why: str | BaseException) -> dict[str, Any]:
    """A section that could not be read: ``{"available": False, "error": why}``."""
    return {"available": False, "error": why if isinstance(why, str) else reason(why)}


def _soft(read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``{"available": True, **read()}``, or ``unavailable`` with why ``read`` failed."""
    try:
        return {"available": True, **read()}
    except Exception as exc:  # the dashboard renders the other sections whatever went wrong here
        return unavailable(exc)


def _finite(value: Any) -> float | None:
    """A number JSON can carry (``inf`` and ``nan``, the routers' "beyond the last bucket", as None)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _quantile(sorted_values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile of ascending values (None without any)."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


# -- services (CD-01's and CD-03's revisions, and what their routers saw) -----------------------------


def revision_traffic(counters: Mapping[str, Any]) -> dict[str, Any]:
    """What a router counted for one revision since it started (``Metrics.snapshot``'s
    ``revisions[NAME]``), with the error rate: failed (no answer, or a 5xx) over requests."""
    requests = int(counters.get("requests") or 0)
    failed = int(counters.get("failed") or 0)
    return {
        "requests": requests,
        "failed": failed,
        "error_rate": _ratio(failed, requests),
        "p50_ms": _finite(counters.get("p50_ms")),
        "p99_ms": _finite(counters.get("p99_ms")),
        "statuses": dict(counters.get("statuses") or {}),
        "transport_errors": dict(counters.get("transport_errors") or {}),
        "pinned": int(counters.get("pinned") or 0),
        "in_flight": int(counters.get("in_flight") or 0),
        "fallback": int(counters.get("fallback") or 0),
        "guardrail": int(counters.get("guardrail") or 0),
        "sessions_started": int(counters.get("sessions_started") or 0),
        "sessions_moved_out": int(counters.get("sessions_moved_out") or 0),
        "feedback": dict(counters.get("feedback") or {}),
    }


def shadow_traffic(counters: Mapping[str, Any]) -> dict[str, Any]:
    """A shadow revision's counters (``Metrics.snapshot``'s ``shadow[NAME]``): requests mirrored to
    it, those that failed (no answer or a 5xx), latency, and how often its intent agreed."""
    requests = int(counters.get("requests") or 0)
    errors = sum(int(n) for n in (counters.get("errors") or {}).values())
    five = sum(int(n) for s, n in (counters.get("statuses") or {}).items() if str(s).startswith("5"))
    compared = int(counters.get("intent_compared") or 0)
    return {
        "requests": requests,
        "failed": errors + five,
        "error_rate": _ratio(errors + five, requests),
        "p50_ms": _finite(counters.get("p50_ms")),
        "p99_ms": _finite(counters.get("p99_ms")),
        "skipped": int(counters.get("skipped") or 0),
        "intent_compared": compared,
        "intent_agreement": _ratio(int(counters.get("intent_agreed") or 0), compared),
    }


def recent_traffic(
    observations: Iterable[Mapping[str, Any]], *, now: float, window_s: float = RECENT_WINDOW_S
) -> dict[str, Any]:
    """Per revision, the requests of the last ``window_s`` seconds before ``now``: count, rate per
    second, failed, error rate, p50/p99 latency (nearest rank), pinned.

    ``observations``: a router's raw observations (``seq``, ``time``, ``kind``, ``revision``,
    ``status``, ``latency_ms``, ``error``...), oldest first, up to the newest. When older ones
    exist (the first ``seq`` is above 1) and the first is inside the window, the window is shortened
    to start there and ``truncated`` is True: rates stay exact over the span that was read."""
    outcomes = [RequestOutcome.from_dict(o) for o in observations]
    start = now - window_s
    span, truncated = window_s, False
    if outcomes and outcomes[0].seq > 1 and outcomes[0].time > start:
        start, truncated = outcomes[0].time, True
        span = max(now - start, 1e-3)
    by_revision: dict[str, list[RequestOutcome]] = {}
    for o in outcomes:
        if o.kind.value == "request" and o.time >= start:
            by_revision.setdefault(o.revision, []).append(o)
    revisions = {}
    for name, served in sorted(by_revision.items()):
        latencies = sorted(o.latency_ms for o in served)
        failed = sum(1 for o in served if o.failed)
        revisions[name] = {
            "requests": len(served),
            "rate_per_s": len(served) / span,
            "failed": failed,
            "error_rate": _ratio(failed, len(served)),
            "p50_ms": _quantile(latencies, 0.5),
            "p99_ms": _quantile(latencies, 0.99),
            "pinned": sum(1 for o in served if o.pinned),
        }
    return {"window_s": span, "truncated": truncated, "revisions": revisions}


IDLE: dict[str, Any] = {
    "requests": 0,
    "rate_per_s": 0.0,
    "failed": 0,
    "error_rate": None,
    "p50_ms": None,
    "p99_ms": None,
    "pinned": 0,
}
"""``recent`` of a revision that served nothing in the window."""


def service_view(
    status: ServiceStatus,
    snapshot: Mapping[str, Any] | None,
    *,
    now: float,
    window_s: float = RECENT_WINDOW_S,
    stats_error: str | None = None,
) -> dict[str, Any]:
    """One service as ``services`` shows it: ``Compute.status`` merged with the router's
    ``snapshot`` (None when it could not be read: ``stats_error`` says why, and each revision's
    ``traffic`` and ``recent`` are None)."""
    counted = (snapshot or {}).get("revisions") or {}
    recent = (
        recent_traffic(snapshot.get("observations") or [], now=now, window_s=window_s)
        if snapshot is not None and "observations" in snapshot
        else None
    )
    revisions: list[dict[str, Any]] = []
    pinned: dict[str, int] = {}
    for rev in status.revisions:
        traffic = revision_traffic(counted.get(rev.name) or {}) if snapshot is not None else None
        if traffic and traffic["pinned"]:
            pinned[rev.name] = traffic["pinned"]
        revisions.append(
            {
                "name": rev.name,
                "digest": rev.digest,
                "weight": rev.weight,
                "health": rev.health.value,
                "reason": rev.reason,
                "replicas": rev.replicas,
                "workers": len(rev.workers),
                "ready_workers": sum(1 for w in rev.workers if w.state is WorkerState.READY),
                "traffic": traffic,
                "recent": (recent["revisions"].get(rev.name) or dict(IDLE)) if recent is not None else None,
            }
        )
    shadow = None
    if status.shadow is not None:
        mirrored = ((snapshot or {}).get("shadow") or {}).get(status.shadow.revision)
        shadow = {
            "revision": status.shadow.revision,
            "share": status.shadow.share,
            "traffic": shadow_traffic(mirrored or {}) if snapshot is not None else None,
        }
    if snapshot is not None:
        since = _finite(snapshot.get("since"))
        stats: dict[str, Any] = {
            "available": True,
            "since": since,
            "cursor": int(snapshot.get("cursor") or 0),
            "unrouted": dict(snapshot.get("unrouted") or {}),
            "recent_window_s": recent["window_s"] if recent is not None else None,
            "recent_truncated": recent["truncated"] if recent is not None else None,
        }
    else:
        stats = unavailable(stats_error or "the router's stats were not read")
    return {
        "name": status.name,
        "url": status.url,
        "weights": dict(status.weights),
        "shadow": shadow,
        "pinned": pinned,
        "revisions": revisions,
        "stats": stats,
    }


def services(
    platform: Platform, *, window_s: float = RECENT_WINDOW_S, now: float | None = None
) -> dict[str, Any]:
    """Every service of the platform (``Compute``) with its revisions and their traffic (``Metrics``).

    ``{"available", "environment", "services": [service_view, ...]}``; unavailable when the
    platform's compute does not answer (locally: no control plane runs, ``mangaassist up``). A
    service whose router stats cannot be read is listed with ``stats.available`` False."""

    def read() -> dict[str, Any]:
        compute = platform.compute()
        metrics: Metrics | None = None
        metrics_error = None
        try:
            metrics = platform.metrics()
        except Exception as exc:  # a platform without a Metrics provider still lists its revisions
            metrics_error = reason(exc)
        listed = []
        for name in compute.services():
            status = compute.status(name)
            snapshot, error = None, None
            if metrics is None:
                error = metrics_error
            else:
                try:
                    head = int(metrics.snapshot(name).get("cursor") or 0)
                    snapshot = metrics.snapshot(name, max(0, head - RECENT_OBSERVATIONS))
                except Exception as exc:
                    error = reason(exc)
            at = time.time() if now is None else now
            listed.append(service_view(status, snapshot, now=at, window_s=window_s, stats_error=error))
        return {"environment": platform.environment, "services": listed}

    return _soft(read)


# -- CD-06: config profiles ------------------------------------------------------------------------------


def config_profile_view(rollout: Rollout, versions: Sequence[ConfigVersion]) -> dict[str, Any]:
    """One profile: its versions (no content), the live (stable) one, and a rollout in progress
    (``{"candidate", "percentage"}``: the share of session buckets on the candidate) or None."""
    ongoing = rollout.candidate is not None and rollout.percentage > 0
    return {
        "profile": rollout.profile,
        "live": rollout.stable,
        "rollout": {"candidate": rollout.candidate, "percentage": rollout.percentage} if ongoing else None,
        "revision": rollout.revision,
        "versions": [
            {
                "version": v.version,
                "created_at": v.created_at,
                "author": v.author,
                "message": v.message,
                "live": v.version == rollout.stable,
                "candidate": ongoing and v.version == rollout.candidate,
            }
            for v in versions
        ],
    }


def config_profiles(
    platform: Platform, *, url: str | None = None, profiles: Sequence[str] = PROFILES
) -> dict[str, Any]:
    """CD-06's profiles (``ConfigStore``): ``{"available", "url", "profiles": [config_profile_view]}``.

    The store is the one ``config history`` reads: ``url`` (``--url``), else
    ``MANGAASSIST_CONFIG_URL``, else the environment's own; locally that is the config server of the
    state directory, which is read only if it runs (never started from here: unavailable when down)."""

    def read() -> dict[str, Any]:
        where = url or os.environ.get("MANGAASSIST_CONFIG_URL") or None
        if where is None and platform.provider == "local":
            state = daemons.running(platform.home, CONFIG_SERVER)
            if state is None:
                raise MangaAssistError(
                    f"the config server of {platform.home} does not run "
                    "(`mangaassist up` or `mangaassist config serve` starts it)"
                )
            where = str(state["url"])
        store = platform.config_store(where)
        listed = [config_profile_view(store.rollout(p), store.versions(p)) for p in profiles]
        return {"url": where, "profiles": listed}

    return _soft(read)


# -- CD-04: knowledge-base index versions -------------------------------------------------------------


def kb_listing(index: VectorIndex) -> dict[str, Any]:
    """What ``mangaassist kb list --json`` prints: ``{"live": VERSION|None, "versions": [...]}``,
    each version ``IndexVersion.as_dict()`` with ``live`` (whether ``kb-live`` points at it)."""
    live = index.resolve(LIVE_ALIAS)
    return {"live": live, "versions": [{**v.as_dict(), "live": v.name == live} for v in index.versions()]}


def knowledge_bases(platform: Platform) -> dict[str, Any]:
    """CD-04's index (``VectorIndex``): ``kb_listing`` plus the alias's name and its last move
    (``previous``: where ``kb rollback`` would point it, ``moved_at``)."""

    def read() -> dict[str, Any]:
        index = platform.vector_index()
        moves = index.alias_history(LIVE_ALIAS)
        last = moves[-1] if moves else None
        return {
            "alias": LIVE_ALIAS,
            **kb_listing(index),
            "previous": last.previous if last else None,
            "moved_at": last.at if last else None,
        }

    return _soft(read)


# -- CD-03: models and aliases --------------------------------------------------------------------------


def model_listing(registry: ModelRegistry, name: str) -> dict[str, Any]:
    """What ``mangaassist model list --json`` prints: ``{"model": NAME, "versions": [...]}``, each
    ``ModelVersion.as_dict()`` (oldest first, with its aliases)."""
    return {"model": name, "versions": [v.as_dict() for v in registry.versions(name)]}


def alias_map(versions: Iterable[Mapping[str, Any]]) -> dict[str, str | None]:
    """Alias -> the version it names, from ``model_listing``'s versions (``candidate``,
    ``champion`` and ``previous`` always present, None when unset)."""
    out: dict[str, str | None] = dict.fromkeys(ALIASES)
    for v in versions:
        for alias in v.get("aliases") or ():
            out[str(alias)] = str(v["version"])
    return out


def configured_models(config: Path | None = None) -> list[str]:
    """The model ``model list`` lists: the ``model`` of ``ml/intent.yaml`` (or ``config``), read and
    validated as the CLI reads it."""
    from mangaassist.chatbot.intent_training import TrainingConfig
    from mangaassist.platform.settings import find_root

    root = find_root()
    return [TrainingConfig.load(config or root / "ml" / "intent.yaml", root).model_name]


def models(
    platform: Platform, *, names: Sequence[str] | None = None, config: Path | None = None
) -> dict[str, Any]:
    """CD-03's registry (``ModelRegistry``): ``{"available", "models": [{"model", "versions",
    "aliases"}]}``; ``names`` default to ``configured_models(config)`` (``intent``)."""

    def read() -> dict[str, Any]:
        registry = platform.model_registry()
        listed = []
        for name in names if names is not None else configured_models(config):
            listing = model_listing(registry, name)
            listed.append({**listing, "aliases": alias_map(listing["versions"])})
        return {"models": listed}

    return _soft(read)


# -- CD-05: the widget's releases -------------------------------------------------------------------


def preview_rows(site: StaticSite) -> list[dict[str, Any]]:
    """What ``mangaassist previews list --json`` prints: per branch with a preview (its channel is
    ``preview/BRANCH``), its ``release``, ``url``, last move (``moved_at``) and number of ``moves``."""
    rows = []
    for branch in site.previews():
        channel = preview_channel(branch)
        history = site.history(channel)
        rows.append(
            {
                "branch": branch,
                "release": site.current(channel),
                "url": site.url(channel),
                "moved_at": history[-1].at if history else None,
                "moves": len(history),
            }
        )
    return rows


def frontend(platform: Platform) -> dict[str, Any]:
    """CD-05's site (``StaticSite``): the environment's channel (``live`` release, ``url``,
    ``previous``: what ``rollback frontend`` returns to, ``moved_at``), every stored release (files,
    bytes, which channels point at it, whether retention keeps it) and ``preview_rows``."""

    def read() -> dict[str, Any]:
        site = platform.static_site()
        channel = check_channel(platform.environment)
        history = site.history(channel)
        previews = preview_rows(site)
        pointing: dict[str, list[str]] = {}
        live = site.current(channel)
        if live:
            pointing.setdefault(live, []).append(channel)
        for row in previews:
            if row["release"]:
                pointing.setdefault(row["release"], []).append(preview_channel(row["branch"]))
        kept = site.retained()
        releases = [
            {
                "release_id": r.release_id,
                "created_at": r.created_at,
                "files": len(r.files),
                "assets": len(r.assets),
                "size_bytes": sum(f.size for f in r.files),
                "live": r.release_id == live,
                "channels": pointing.get(r.release_id, []),
                "retained": r.release_id in kept,
            }
            for r in site.releases()
        ]
        return {
            "channel": channel,
            "live": live,
            "url": site.url(channel),
            "previous": history[-1].previous if history else None,
            "moved_at": history[-1].at if history else None,
            "releases": releases,
            "previews": previews,
        }

    return _soft(read)


# -- CD-08: SLOs and alerts ---------------------------------------------------------------------------


def _vector_value(expr: str) -> float | None:
    """The number of a ``vector(N)`` expression (the meta recordings' objective and period)."""
    text = expr.strip()
    if text.startswith("vector(") and text.endswith(")"):
        try:
            return float(text[len("vector(") : -1])
        except ValueError:
            return None
    return None


def deployed_slos(rule_files: Iterable[Path]) -> list[dict[str, Any]]:
    """The SLOs of installed rule files (``monitor build``'s Sloth-compatible groups), in file order:
    ``id``, ``service``, ``name``, ``objective`` (percent), ``error_budget`` (ratio), ``period_days``,
    ``alert`` (the alert rule's name), ``page`` and ``ticket`` (whether that alert exists),
    ``description`` (None: rules do not carry it)."""
    found: dict[str, dict[str, Any]] = {}
    alerts: dict[str, list[tuple[str, str]]] = {}
    for path in rule_files:
        doc = yaml.safe_load(path.read_text()) or {}
        for group in doc.get("groups") or []:
            gname = str(group.get("name") or "")
            for rule in group.get("rules") or []:
                labels = rule.get("labels") or {}
                if rule.get("record") == "sloth_slo_info" and labels.get("sloth_id"):
                    objective = float(labels.get("sloth_objective") or "nan")
                    found.setdefault(str(labels["sloth_id"]), {}).update(
                        id=str(labels["sloth_id"]),
                        service=str(labels.get("sloth_service") or ""),
                        name=str(labels.get("sloth_slo") or ""),
                        objective=_finite(objective),
                        error_budget=_finite(round((100 - objective) / 100, 12)),
                    )
                elif rule.get("record") == "slo:time_period:days" and labels.get("sloth_id"):
                    period = _vector_value(str(rule.get("expr") or ""))
                    found.setdefault(str(labels["sloth_id"]), {})["period_days"] = period
                elif rule.get("alert") and gname.startswith("sloth-slo-alerts-"):
                    severity = str(labels.get("sloth_severity") or "")
                    alerts.setdefault(gname.removeprefix("sloth-slo-alerts-"), []).append(
                        (str(rule["alert"]), severity)
                    )
    out = []
    for slo_id, slo in found.items():
        if "service" not in slo:  # a period without its info record: not an SLO of a build
            continue
        mine = alerts.get(slo_id, [])
        out.append(
            {
                "id": slo_id,
                "service": slo["service"],
                "name": slo["name"],
                "objective": slo["objective"],
                "error_budget": slo["error_budget"],
                "period_days": slo.get("period_days"),
                "alert": mine[0][0] if mine else None,
                "page": any(sev == "page" for _, sev in mine),
                "ticket": any(sev == "ticket" for _, sev in mine),
                "description": None,
            }
        )
    return out


def spec_slos(slo_paths: Sequence[Path], environment: str | None) -> dict[str, Any]:
    """The SLOs of the specs compiled for ``environment`` (``monitoring/environments.yaml``'s
    objectives and window set, as ``monitor build --env`` and CD-08 compile them), each shaped as
    ``deployed_slos``'s, with the window set and period."""
    from mangaassist.delivery.monitoring.build import resolve
    from mangaassist.delivery.monitoring.slo import spec_files

    slos, ws, _env = resolve(slo_paths, environment)
    items = [
        {
            "id": s.id,
            "service": s.service,
            "name": s.name,
            "objective": s.objective,
            "error_budget": round(s.error_budget, 12),
            "period_days": ws.period_s / 86400,
            "alert": s.alerting.name if s.alerting.enabled else None,
            "page": s.alerting.page.enabled,
            "ticket": s.alerting.ticket.enabled,
            "description": s.description,
        }
        for s in slos
    ]
    return {
        "window_set": ws.name,
        "period": ws.period,
        "spec_files": [str(p) for p in spec_files(slo_paths)],
        "items": items,
    }


def prometheus_alerts(groups: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The active alerts of Prometheus's rule groups (``/api/v1/rules``, ``RuleHost.groups``): one
    per alerting series, firing ones first: ``name``, ``state`` (``firing`` | ``pending``),
    ``severity``, ``service``, ``slo``, ``summary``, ``since`` (``activeAt``), ``value``, ``labels``."""
    out = []
    for group in groups:
        for rule in group.get("rules") or []:
            if rule.get("type") != "alerting":
                continue
            for alert in rule.get("alerts") or []:
                labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
                annotations = alert.get("annotations") or {}
                out.append(
                    {
                        "name": labels.get("alertname") or str(rule.get("name") or "?"),
                        "state": str(alert.get("state") or ""),
                        "severity": labels.get("sloth_severity") or labels.get("severity") or "",
                        "service": labels.get("sloth_service") or labels.get("service") or "",
                        "slo": labels.get("sloth_slo") or "",
                        "summary": str(annotations.get("summary") or annotations.get("title") or ""),
                        "since": alert.get("activeAt"),
                        "value": alert.get("value"),
                        "labels": labels,
                    }
                )
    out.sort(key=lambda a: (a["state"] != "firing", a["name"], a["service"]))
    return out


def monitoring(platform: Platform, *, slos: Path | None = None) -> dict[str, Any]:
    """CD-08: ``{"available", "environment", "slos": {...}, "alerts": {...}}``, each part failing
    soft on its own (``available`` at the top: either part could be read).

    ``slos``: ``source`` ``deployed`` (the rule set CD-08 installed on the platform's ``RuleHost``:
    ``files``, ``installed_at``) or else ``spec`` (``slos``, default ``monitoring/slos``, compiled for
    the environment); ``items`` as ``deployed_slos``. ``alerts``: what the environment's Prometheus
    has ``firing`` and ``pending`` (``prometheus_alerts``), unavailable when it does not run."""

    def read_slos() -> dict[str, Any]:
        from mangaassist.delivery.pipelines import monitoring as cd08

        installed: list[Path] = []
        manifest: dict[str, Any] = {}
        try:
            host = platform.rule_host()
        except MangaAssistError:  # aws: the alarms ship with CD-02, nothing is installed here
            host = None
        if host is not None:
            try:
                manifest = json.loads((host.rules_dir / cd08.MANIFEST).read_text())
            except (OSError, ValueError):
                manifest = {}
            names = manifest.get("files") or []
            installed = [host.rules_dir / str(n) for n in names if (host.rules_dir / str(n)).is_file()]
        if installed:
            return {
                "source": "deployed",
                "files": [str(p) for p in installed],
                "installed_at": _finite(manifest.get("at")),
                "items": deployed_slos(installed),
            }
        paths = [slos] if slos is not None else cd08.slo_paths({})
        return {"source": "spec", **spec_slos(paths, platform.environment)}

    def read_alerts() -> dict[str, Any]:
        host = platform.rule_host()
        url = host.url()
        if url is None:
            raise MangaAssistError(
                f"Prometheus does not run for environment {platform.environment} (`mangaassist up` "
                f"starts it when mangaassist.toml has [environments.{platform.environment}.monitoring])"
            )
        try:
            active = prometheus_alerts(host.groups())
        except httpx.HTTPError as exc:
            raise MangaAssistError(f"Prometheus at {url} does not answer: {exc}") from None
        return {
            "prometheus": url,
            "firing": [a for a in active if a["state"] == "firing"],
            "pending": [a for a in active if a["state"] == "pending"],
        }

    slo_part, alert_part = _soft(read_slos), _soft(read_alerts)
    return {
        "available": bool(slo_part["available"] or alert_part["available"]),
        "environment": platform.environment,
        "slos": slo_part,
        "alerts": alert_part,
    }


# -- the Versions page -------------------------------------------------------------------------------


def versions(
    platform: Platform,
    *,
    config_url: str | None = None,
    model_names: Sequence[str] | None = None,
    model_config: Path | None = None,
    slos: Path | None = None,
) -> dict[str, Any]:
    """Every section of the Versions page (all but ``services``), each failing soft on its own:
    ``{"environment", "config_profiles", "knowledge_bases", "models", "frontend", "monitoring"}``."""
    return {
        "environment": platform.environment,
        "config_profiles": config_profiles(platform, url=config_url),
        "knowledge_bases": knowledge_bases(platform),
        "models": models(platform, names=model_names, config=model_config),
        "frontend": frontend(platform),
        "monitoring": monitoring(platform, slos=slos),
    }
