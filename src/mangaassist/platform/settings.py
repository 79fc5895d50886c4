"""Settings of the platform, read from ``mangaassist.toml`` at the repository root.

One table per environment (``[environments.dev]`` is the local one): the provider, the state
directory, the control port, and one table per service (its router port, replicas, the ASGI app
and the source tree its first revision is built from). Read by ``platform.factory`` and by the
local control plane at start-up.

A service may depend on another through ``[...services.NAME.links]``: ``VARIABLE = "other-service"``
gives every worker of NAME the variable set to the other service's router URL (how the chatbot
finds the intent model endpoint: the router port may be picked at start, ``router_port = 0``).

Environment variables: ``MANGAASSIST_PLATFORM_CONFIG`` (path of the file; default: the first
``mangaassist.toml`` in the current directory or its parents), ``MANGAASSIST_ENV`` (default
``dev``) and ``MANGAASSIST_HOME`` (overrides the environment's ``home``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mangaassist.core.errors import ConfigError

CONFIG_NAME = "mangaassist.toml"
DATA_MARKERS = ("data/catalog.jsonl", "knowledge", "ml/intents/train.jsonl")
"""What the project root holds: the catalog, the knowledge base's sources, the intent data."""


def find_root(explicit: str | Path | None = None, *, needs: tuple[str, ...] = DATA_MARKERS) -> Path:
    """The project root: ``explicit``, else ``MANGAASSIST_ROOT``, else the first of the current
    directory and its parents (then this package's) that holds every path in ``needs``.

    The one way every layer finds it (the chatbot, the pipelines, the CLI, the demo)."""
    given = explicit or os.environ.get("MANGAASSIST_ROOT")
    if given:
        root = Path(given).resolve()
        missing = [m for m in needs if not (root / m).exists()]
        if missing:
            where = f"MANGAASSIST_ROOT={given}" if not explicit else str(root)
            raise ConfigError(f"{where} lacks {', '.join(missing)}")
        return root
    for origin in (Path.cwd(), Path(__file__).resolve()):
        for path in (origin, *origin.parents):
            if all((path / m).exists() for m in needs):
                return path
    raise ConfigError(
        f"cannot find the MangaAssist data ({', '.join(needs)}): "
        "run from the repository or set MANGAASSIST_ROOT"
    )


def state_home(root: Path, explicit: str | Path | None = None) -> Path:
    """The state directory: ``explicit``, else ``MANGAASSIST_HOME``, else ``ROOT/.mangaassist``."""
    return Path(explicit or os.environ.get("MANGAASSIST_HOME") or root / ".mangaassist").resolve()


@dataclass(frozen=True)
class ServiceSettings:
    """One service of an environment.

    ``router_port``: the router's fixed loopback port (0 picks a free one, for tests).
    ``source``: the tree ``up`` packs into the first revision (None: deploy revisions by hand).
    ``shadow_timeout_s``: how long a mirrored request may take before it counts as timed out.
    The router's limits (docs/platform.md, "The router"): ``connect_timeout_s`` (a connection to a
    worker), ``response_timeout_s`` (from the request sent to the response headers; also bounds
    the supervisor's ``/healthz`` probe, at least 1 s and at most 5 s), ``idle_read_timeout_s``
    (silence between two chunks of a response body once its headers went out) and
    ``max_body_bytes`` (a request body; more is answered 413 without contacting a worker) and
    ``client_body_timeout_s`` (how long a client may take to send each part of its body; 408).
    ``links``: environment variable -> name of another service of the environment; its workers get
    the variable set to that service's router URL (a revision's own env may override it).
    """

    name: str
    app: str
    router_port: int
    replicas: int = 1
    source: Path | None = None
    first_revision: str = "r1"
    env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 180.0
    shadow_timeout_s: float = 10.0
    connect_timeout_s: float = 2.0
    response_timeout_s: float = 60.0
    idle_read_timeout_s: float = 30.0
    max_body_bytes: int = 10 * 1024 * 1024
    client_body_timeout_s: float = 30.0
    links: Mapping[str, str] = field(default_factory=dict)
    pass_env: tuple[str, ...] = ()
    """Variables of the control plane's own environment its workers also get, by name (a
    generator's credentials: ``OPENAI_API_KEY``, ``AWS_PROFILE``...). Workers inherit nothing
    else but a fixed allow-list; values are read at start and never stored with a revision."""
    compute: str | None = None
    """Which compute runs the service where the provider has several kinds (aws: ``sagemaker``
    for a model endpoint); None on the local provider, where every service is worker processes."""


@dataclass(frozen=True)
class MonitoringSettings:
    """The local Prometheus and Alertmanager of an environment (``[environments.NAME.monitoring]``).

    Ports 0 pick free ones (tests). ``scrape_interval_s`` is also the rule evaluation interval."""

    prometheus_port: int = 9090
    alertmanager_port: int = 9093
    scrape_interval_s: float = 5.0
    prometheus: str = "prometheus"
    """The Prometheus binary (Debian's package: ``/usr/bin/prometheus``)."""
    alertmanager: str = "prometheus-alertmanager"
    """The Alertmanager binary (Debian's package names it ``prometheus-alertmanager``)."""
    judge_source: str = "router"
    """What the canary judges read (``Platform.metrics``): ``router``, the routers' per-request
    records (exact), or ``prometheus``, the per-revision series Prometheus scraped from them
    (aggregates, latency at histogram-bucket resolution, as judges read them in production)."""


@dataclass(frozen=True)
class PlatformSettings:
    """One environment: which provider runs it and where its state lives."""

    environment: str
    provider: str
    root: Path
    home: Path
    control_port: int
    services: Mapping[str, ServiceSettings]
    host: str = "127.0.0.1"
    config_server: bool = False
    """``up`` starts the environment's config server (CD-06) and gives every worker its URL
    (``MANGAASSIST_CONFIG_URL``); ``down`` stops it."""
    edge_port: int | None = None
    """``edge_port``: ``up`` starts the edge (CD-05: the widget's releases and ``/v1`` proxied to
    the chatbot's router) on this loopback port (0 picks a free one); ``down`` stops it. None: no
    edge."""
    dashboard_port: int | None = None
    """``dashboard_port``: ``up`` starts the delivery dashboard (``/metrics``: the engine's metrics,
    scraped by the environment's Prometheus) on this loopback port (0 picks a free one); ``down``
    stops it. None: no dashboard."""
    monitoring: MonitoringSettings | None = None
    """``[environments.NAME.monitoring]``: the control plane runs Prometheus and Alertmanager for the
    environment (CD-08); None: it does not."""
    aws: Mapping[str, Any] = field(default_factory=dict)
    """The aws provider's settings (``[environments.NAME.aws]``: region, role, buckets...), read by
    ``platform.factory``."""
    providers: Mapping[str, str] = field(default_factory=dict)
    """``[environments.NAME.providers]``: a provider for one resource kind other than the
    environment's (``tables = "aws"``: a local environment on DynamoDB tables, as CD-07's drill
    runs against moto's server). Kinds: ``KINDS``."""

    def provider_of(self, kind: str) -> str:
        return self.providers.get(kind, self.provider)

    @property
    def run_dir(self) -> Path:
        """PID file, control-plane address file, logs."""
        return self.home / "platform"


def _bool(table: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key}: expected true or false, got {value!r}")
    return value


def _names(table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.isidentifier() for v in value):
        raise ConfigError(f"{where}.{key}: expected a list of variable names, got {value!r}")
    return tuple(value)


def _table(table: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = table.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}.{key}: expected a table, got {value!r}")
    return value


def find_config(start: Path | None = None, *, beside_package: bool = True) -> Path:
    """``mangaassist.toml``: ``MANGAASSIST_PLATFORM_CONFIG``, else the first in ``start`` (the
    current directory) or its parents, else (``beside_package``) the one above this package."""
    env = os.environ.get("MANGAASSIST_PLATFORM_CONFIG")
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"MANGAASSIST_PLATFORM_CONFIG={env}: no such file")
        return path.resolve()
    origin = (start or Path.cwd()).resolve()
    for directory in (origin, *origin.parents):
        if (directory / CONFIG_NAME).is_file():
            return directory / CONFIG_NAME
    here = Path(__file__).resolve()
    for directory in here.parents if beside_package else ():
        if (directory / CONFIG_NAME).is_file():
            return directory / CONFIG_NAME
    raise ConfigError(f"no {CONFIG_NAME} found in {origin} or its parents (set MANGAASSIST_PLATFORM_CONFIG)")


def _int(table: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{where}.{key}: expected a non-negative integer, got {value!r}")
    return value


def _port(table: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise ConfigError(
            f"{where}.{key}: expected a TCP port from 0 to 65535 (0 picks a free one), got {value!r}"
        )
    return value


def _distinct_ports(settings: PlatformSettings, where: str) -> None:
    """Two listeners of one environment on one fixed port: refused, naming both."""
    ports: list[tuple[str, int | None]] = [
        ("control_port", settings.control_port),
        ("edge_port", settings.edge_port),
        ("dashboard_port", settings.dashboard_port),
        *((f"services.{s.name}.router_port", s.router_port) for s in settings.services.values()),
    ]
    if settings.monitoring is not None:
        ports += [
            ("monitoring.prometheus_port", settings.monitoring.prometheus_port),
            ("monitoring.alertmanager_port", settings.monitoring.alertmanager_port),
        ]
    seen: dict[int, str] = {}
    for field_name, port in ports:
        if not port:  # None (not run) or 0 (a free one, picked at start)
            continue
        if port in seen:
            raise ConfigError(f"{where}: {seen[port]} and {field_name} are both port {port}")
        seen[port] = field_name


MAX_TIMEOUT_S = 3600.0
MAX_BODY_LIMIT = 1 << 30
"""The largest ``max_body_bytes`` accepted: the router holds a request body in memory."""


def _seconds(table: Mapping[str, Any], key: str, where: str, default: float) -> float:
    value = table.get(key, default)
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not 0 < value <= MAX_TIMEOUT_S  # also refuses nan
    ):
        raise ConfigError(
            f"{where}.{key}: expected seconds, more than 0 and at most {MAX_TIMEOUT_S:g}, got {value!r}"
        )
    return float(value)


def _body_limit(table: Mapping[str, Any], key: str, where: str, default: int) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_BODY_LIMIT:
        raise ConfigError(
            f"{where}.{key}: expected a number of bytes from 1 to {MAX_BODY_LIMIT} "
            f"(the router holds a request body in memory), got {value!r}"
        )
    return value


def load_settings(
    environment: str | None = None, path: Path | None = None, home: Path | None = None
) -> PlatformSettings:
    """The settings of ``environment`` (default ``MANGAASSIST_ENV`` or ``dev``)."""
    path = path or find_config()
    environment = environment or os.environ.get("MANGAASSIST_ENV") or "dev"
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    envs = _table(data, "environments", path.name)
    if environment not in envs:
        raise ConfigError(f"{path}: no [environments.{environment}] (have: {', '.join(sorted(envs))})")
    table = envs[environment]
    if not isinstance(table, Mapping):
        raise ConfigError(f"{path.name}: environments.{environment}: expected a table, got {table!r}")
    where = f"{path.name}: environments.{environment}"
    root = path.parent
    env_home = os.environ.get("MANGAASSIST_HOME")
    resolved_home = home or (Path(env_home) if env_home else root / str(table.get("home", ".mangaassist")))
    services: dict[str, ServiceSettings] = {}
    for name, svc in _table(table, "services", where).items():
        w = f"{where}.services.{name}"
        if not isinstance(svc, dict):
            raise ConfigError(f"{w}: expected a table, got {svc!r}")
        if "app" not in svc and "compute" not in svc:
            raise ConfigError(f"{w}: 'app' (module:factory) is required")
        replicas = _int(svc, "replicas", w, 1)
        if replicas < 1:
            raise ConfigError(f"{w}.replicas: at least 1")
        source = svc.get("source")
        services[name] = ServiceSettings(
            name=name,
            app=str(svc.get("app", "")),
            router_port=_port(svc, "router_port", w, 0 if "compute" in svc else None),
            replicas=replicas,
            source=(root / source).resolve() if source else None,
            first_revision=str(svc.get("first_revision", "r1")),
            env={str(k): str(v) for k, v in _table(svc, "env", w).items()},
            ready_timeout_s=_seconds(svc, "ready_timeout_s", w, ServiceSettings.ready_timeout_s),
            shadow_timeout_s=_seconds(svc, "shadow_timeout_s", w, ServiceSettings.shadow_timeout_s),
            connect_timeout_s=_seconds(svc, "connect_timeout_s", w, ServiceSettings.connect_timeout_s),
            response_timeout_s=_seconds(svc, "response_timeout_s", w, ServiceSettings.response_timeout_s),
            idle_read_timeout_s=_seconds(svc, "idle_read_timeout_s", w, ServiceSettings.idle_read_timeout_s),
            max_body_bytes=_body_limit(svc, "max_body_bytes", w, ServiceSettings.max_body_bytes),
            client_body_timeout_s=_seconds(
                svc, "client_body_timeout_s", w, ServiceSettings.client_body_timeout_s
            ),
            links={str(k): str(v) for k, v in _table(svc, "links", w).items()},
            compute=str(svc["compute"]) if "compute" in svc else None,
            pass_env=_names(svc, "pass_env", w),
        )
    for name, svc_settings in services.items():
        for variable, target in svc_settings.links.items():
            if target not in services or target == name:
                others = ", ".join(sorted(n for n in services if n != name)) or "none"
                raise ConfigError(
                    f"{where}.services.{name}.links.{variable}: {target!r} is not another service of "
                    f"this environment (have: {others})"
                )
    settings = PlatformSettings(
        environment=environment,
        provider=str(table.get("provider", "local")),
        root=root,
        home=resolved_home.resolve(),
        control_port=_port(table, "control_port", where, 0),
        services=services,
        config_server=_bool(table, "config_server", where, False),
        edge_port=_port(table, "edge_port", where) if "edge_port" in table else None,
        dashboard_port=_port(table, "dashboard_port", where) if "dashboard_port" in table else None,
        monitoring=_monitoring(table, where),
        aws=dict(_table(table, "aws", where)),
        providers=_providers(table, where),
    )
    _distinct_ports(settings, where)
    return settings


PROVIDERS = ("local", "aws")
KINDS = ("tables",)
"""The resource kinds whose provider an environment may choose apart from its own."""
JUDGE_SOURCES = ("router", "prometheus")


def _providers(table: Mapping[str, Any], where: str) -> dict[str, str]:
    chosen = _table(table, "providers", where)
    out: dict[str, str] = {}
    for kind, provider in chosen.items():
        if kind not in KINDS:
            raise ConfigError(
                f"{where}.providers.{kind}: not a kind with a provider of its own (kinds: {', '.join(KINDS)})"
            )
        if provider not in PROVIDERS:
            raise ConfigError(
                f"{where}.providers.{kind}: provider {provider!r} is unknown (known: {', '.join(PROVIDERS)})"
            )
        out[str(kind)] = str(provider)
    return out


def _monitoring(table: Mapping[str, Any], where: str) -> MonitoringSettings | None:
    if "monitoring" not in table:
        return None
    m = _table(table, "monitoring", where)
    w = f"{where}.monitoring"
    known = {
        "prometheus_port",
        "alertmanager_port",
        "scrape_interval_s",
        "prometheus",
        "alertmanager",
        "judge_source",
    }
    unknown = sorted(set(m) - known)
    if unknown:
        raise ConfigError(f"{w}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    interval = m.get("scrape_interval_s", 5.0)
    if not isinstance(interval, int | float) or isinstance(interval, bool) or not 0.5 <= interval <= 300:
        raise ConfigError(f"{w}.scrape_interval_s: expected seconds within [0.5, 300], got {interval!r}")
    source = m.get("judge_source", "router")
    if source not in JUDGE_SOURCES:
        raise ConfigError(f"{w}.judge_source: expected one of {', '.join(JUDGE_SOURCES)}, got {source!r}")
    defaults = MonitoringSettings()
    return MonitoringSettings(
        judge_source=str(source),
        prometheus_port=_port(m, "prometheus_port", w, defaults.prometheus_port),
        alertmanager_port=_port(m, "alertmanager_port", w, defaults.alertmanager_port),
        scrape_interval_s=float(interval),
        prometheus=str(m.get("prometheus", defaults.prometheus)),
        alertmanager=str(m.get("alertmanager", defaults.alertmanager)),
    )
