"""The local control plane: one background process that runs every service of an environment.

``mangaassist up`` starts it (``python -m mangaassist.platform.local.controlplane``) in a new
session; it then holds, on one event loop:

* one ``RevisionSupervisor`` per deployed revision (the worker processes, its children),
* the control API on its own loopback port (``control_port``), which ``LocalCompute`` calls,
* the link to the router host (``router_host``: every service's ``Router`` on its fixed loopback
  port, ``router_port`` in ``mangaassist.toml``, in a process of its own), to which it publishes a
  routing table on every change of revisions, workers, weights, shadow or fault.

Files under ``$MANGAASSIST_HOME/platform/``: ``controlplane.pid``, ``controlplane.json`` (PID,
control URL and router URLs, written once everything listens), ``workers.json`` (PIDs of the
worker processes, the router host, Prometheus and Alertmanager, rewritten on every change, so
``down`` can verify them one by one), ``state.json`` (what it runs: every live revision of every
service with its workers' PIDs and ports, the weights, the shadow and any drill fault, rewritten on
every change), and logs (``controlplane.log``, ``workers/<service>-<revision>-w<N>.log``).

**Surviving its own crash** (docs/platform.md). A clean stop (``down``) removes ``state.json``;
after a crash it stays, and the routers and workers keep serving. The next start adopts the router
host (``RouterLink.start``) and every recorded worker that still serves as itself
(``supervisor.AdoptedProcess``), starts again the ones that do not, stops what else the crashed
process left (Prometheus, Alertmanager; checked to belong to this state directory before they are
signalled), and publishes nothing for a service until its revisions, weights, shadow and fault are
back (``ServiceRuntime.holding``): the routers keep serving their last table meanwhile.

Control API (JSON): ``GET /v1/status``; ``POST /v1/services/{s}/deploy``;
``PUT /v1/services/{s}/weights``; ``PUT|DELETE /v1/services/{s}/shadow``;
``PUT|DELETE /v1/services/{s}/fault`` (a drill's injected failure, ``router.Fault``);
``POST /v1/services/{s}/revisions/{r}/retire``; ``GET /v1/services/{s}/stats?cursor=N``;
``POST /v1/shutdown``.

A deploy of a name that is live returns that revision only when it is the same revision (same
artifact digest, app and ``env``); otherwise it is refused (409) naming what differs (variable
names, not values). Workers inherit only an allow-list of this process's environment (see
``supervisor``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mangaassist.core.artifact import Artifact
from mangaassist.core.errors import ConfigError, MangaAssistError, NotFoundError
from mangaassist.platform import daemons
from mangaassist.platform.artifacts import pack_source, unpack
from mangaassist.platform.compute import Revision, RevisionHealth, Shadow
from mangaassist.platform.local.config_server import NAME as CONFIG_SERVER
from mangaassist.platform.local.monitoring import LocalMonitoring
from mangaassist.platform.local.router import Fault
from mangaassist.platform.local.router_host import RouterLink, table_spec
from mangaassist.platform.local.serving import (
    Conflict,
    EmbeddedServer,
    JsonApi,
    Unavailable,
    json_body,
    listen,
    query_int,
    run_process,
    serve,
    until_signalled,
)
from mangaassist.platform.local.supervisor import Adoptee, RevisionSupervisor, health_timeout
from mangaassist.platform.settings import PlatformSettings, ServiceSettings, load_settings

log = logging.getLogger("mangaassist.platform")

PID_FILE = "controlplane.pid"
RUNTIME_FILE = "controlplane.json"
WORKERS_FILE = "workers.json"
STATE_FILE = "state.json"


def revision_difference(live: Revision, wanted: Revision) -> str | None:
    """How ``wanted`` differs from the live revision of the same name (None: it is that revision).

    A deploy of a live name is "already there" only for the same artifact, app and environment;
    anything else is another revision under a taken name. Variables are named, never their values
    (they may be credentials).
    """
    if live.artifact.digest != wanted.artifact.digest:
        return f"another artifact ({live.artifact.digest[:12]}, not {wanted.artifact.digest[:12]})"
    if live.app != wanted.app:
        return f"another app ({live.app}, not {wanted.app})"
    if dict(live.env) != dict(wanted.env):
        added = sorted(set(wanted.env) - set(live.env))
        removed = sorted(set(live.env) - set(wanted.env))
        changed = sorted(k for k in set(live.env) & set(wanted.env) if live.env[k] != wanted.env[k])
        parts = [
            f"{', '.join(names)} {label}"
            for names, label in (
                (changed, "differ" if len(changed) > 1 else "differs"),
                (added, "not set on the live revision"),
                (removed, "set only on the live revision"),
            )
            if names
        ]
        return f"with another environment ({'; '.join(parts)}); deploy this one under another name"
    return None


@dataclass
class RevisionRuntime:
    revision: Revision
    supervisor: RevisionSupervisor


class ServiceRuntime:
    """One service: its router, its revisions, weights and shadow."""

    def __init__(self, settings: ServiceSettings, plane: ControlPlane) -> None:
        self.settings = settings
        self.plane = plane
        self.name = settings.name
        self.revisions: dict[str, RevisionRuntime] = {}
        self.weights: dict[str, float] = {}
        self.shadow: Shadow | None = None
        self.fault: Fault | None = None
        self.in_flight: dict[str, int] = {}
        """Requests in flight by revision, as the router last said (``ControlPlane.refresh``)."""
        self.holding = False
        """While the recorded state is being restored: tables are not published (the routers keep
        serving the last one), so traffic never follows a half-restored service."""

    @property
    def url(self) -> str:
        """The service's router, as the router host serves it."""
        return self.plane.routers.urls.get(self.name, "")

    @property
    def version(self) -> int:
        """The newest routing table issued for the service (``RouterLink.publish`` numbers them)."""
        return self.plane.routers.versions.get(self.name, 0)

    def publish(self) -> None:
        """Send the routers a table built from the current revisions, workers and weights (in the
        background; ``synced`` waits until the router serves it), and record the state."""
        if self.holding:
            return
        targets: dict[str, list[int]] = {}
        for name, rt in self.revisions.items():
            health, _ = rt.supervisor.health()
            if health in (RevisionHealth.RETIRED, RevisionHealth.DRAINING, RevisionHealth.UNHEALTHY):
                continue
            targets[name] = rt.supervisor.ready_ports()
        shadow = self.shadow
        self.plane.routers.publish(
            self.name,
            table_spec(
                0,
                targets,
                self.weights,
                shadow.revision if shadow else None,
                shadow.share if shadow else 0.0,
                self.fault,
            ),
        )
        self.plane.update_targets()
        self.plane.save_state()

    async def synced(self) -> None:
        """Until the router serves the newest table (MangaAssistError if it does not take it)."""
        if not self.holding:
            await self.plane.routers.synced(self.name)

    def recorded(self) -> dict[str, Any]:
        """What ``state.json`` keeps of this service (module docstring)."""
        live = [
            {
                **rt.revision.as_dict(),
                "workers": [
                    {"pid": w.pid, "port": w.port} for w in rt.supervisor.workers if w.pid and w.port
                ],
            }
            for rt in self.revisions.values()
            if not rt.supervisor.retired
        ]
        return {
            "revisions": live,
            "weights": dict(self.weights),
            "shadow": {"revision": self.shadow.revision, "share": self.shadow.share} if self.shadow else None,
            "fault": self.fault.as_dict() if self.fault else None,
        }

    def scrape_targets(self) -> list[dict[str, Any]]:
        """Prometheus targets of this service: its router and every ready worker, by revision."""
        groups: list[dict[str, Any]] = []
        if self.url:
            groups.append(
                {
                    "targets": [self.url.removeprefix("http://")],
                    "labels": {
                        "component": "router",
                        "mangaassist_service": self.name,
                        "__metrics_path__": "/_router/metrics",
                    },
                }
            )
        for name, rt in self.revisions.items():
            ports = rt.supervisor.ready_ports()
            if ports:
                groups.append(
                    {
                        "targets": [f"127.0.0.1:{port}" for port in ports],
                        "labels": {"component": "worker", "mangaassist_service": self.name, "revision": name},
                    }
                )
        return groups

    def revision_status(self, name: str) -> dict[str, Any]:
        rt = self.revisions[name]
        health, reason = rt.supervisor.health()
        return {
            "name": name,
            "digest": rt.revision.artifact.digest,
            "app": rt.revision.app,
            "replicas": rt.revision.replicas,
            "health": health.value,
            "reason": reason,
            "weight": self.weights.get(name, 0.0),
            "in_flight": self.in_flight.get(name, 0),
            "workers": [
                {
                    "pid": w.pid,
                    "port": w.port,
                    "state": w.state.value,
                    "restarts": w.restarts,
                    "reason": w.reason,
                    "url": f"http://127.0.0.1:{w.port}" if w.port else None,
                }
                for w in rt.supervisor.workers
            ],
        }

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "weights": dict(self.weights),
            "shadow": {"revision": self.shadow.revision, "share": self.shadow.share} if self.shadow else None,
            "fault": self.fault.as_dict() if self.fault else None,
            "revisions": [self.revision_status(n) for n in self.revisions],
            "links": {var: self.plane.services[target].url for var, target in self.settings.links.items()},
            "routing_version": self.version,
        }

    def get(self, revision: str) -> RevisionRuntime:
        rt = self.revisions.get(revision)
        if rt is None or rt.supervisor.retired:
            raise NotFoundError(f"service {self.name} has no live revision {revision!r}")
        return rt

    async def deploy(
        self, revision: Revision, timeout_s: float, adopt: tuple[Adoptee, ...] = ()
    ) -> dict[str, Any]:
        """Start the revision's workers (or take over ``adopt``: its workers a crashed control plane
        left running) and wait until they are ready or failed."""
        existing = self.revisions.get(revision.name)
        if existing is not None and not existing.supervisor.retired:
            difference = revision_difference(existing.revision, revision)
            if difference is not None:
                raise Conflict(f"revision {revision.name} of {self.name} already runs {difference}")
            await existing.supervisor.wait_settled(timeout_s)  # the same revision: deploy is idempotent
            return self.revision_status(revision.name)
        home = self.plane.settings.home
        workdir = await asyncio.to_thread(unpack, revision.artifact, home / "artifacts" / "unpacked")
        env = {
            # the control plane's own values of the variables the service asks for by name
            # (generator credentials): passed at start, never written into a revision record
            **{name: os.environ[name] for name in self.settings.pass_env if name in os.environ},
            **self.settings.env,
            **{var: self.plane.services[target].url for var, target in self.settings.links.items()},
            "MANGAASSIST_ROOT": str(self.plane.settings.root),
            "MANGAASSIST_HOME": str(home),
            "MANGAASSIST_ENV": self.plane.settings.environment,
            "MANGAASSIST_PROVIDER": self.plane.settings.provider,
            **revision.env,
            "MANGAASSIST_REVISION": revision.name,
        }
        sup = RevisionSupervisor(
            name=f"{self.name}-{revision.name}",
            app=revision.app,
            workdir=workdir,
            env=env,
            replicas=revision.replicas,
            log_dir=self.plane.settings.run_dir / "workers",
            on_change=self.publish,
            on_pids=self.plane.write_pids,
            ready_timeout_s=min(timeout_s, self.settings.ready_timeout_s),
            revision=revision.name,
            health_timeout_s=health_timeout(self.settings.response_timeout_s),
            health_interval_s=health_timeout(self.settings.response_timeout_s),
            adopt=adopt,
        )
        self.revisions[revision.name] = RevisionRuntime(revision, sup)
        if not self.weights:
            self.weights = {revision.name: 100.0}
        sup.start()
        await sup.wait_settled(timeout_s)
        self.publish()
        await self.synced()
        return self.revision_status(revision.name)

    def set_weights(self, weights: Mapping[str, float]) -> dict[str, float]:
        for name, w in weights.items():
            self.get(name)
            if w < 0:
                raise ConfigError(f"weight of {name} is negative")
        if weights and sum(weights.values()) <= 0:
            raise ConfigError("weights must not all be 0")
        self.weights = {n: float(w) for n, w in weights.items() if w > 0}
        self.publish()
        return dict(self.weights)

    def set_shadow(self, revision: str | None, share: float) -> None:
        if revision is None:
            self.shadow = None
        else:
            self.get(revision)
            if not 0 <= share <= 1:
                raise ConfigError(f"shadow share {share} is not between 0 and 1")
            self.shadow = Shadow(revision, share)
        self.publish()

    def set_fault(self, body: Mapping[str, Any] | None) -> None:
        """Inject a failure into the service's router (``body``: ``status``, ``share``, ``paths``),
        or end it (None)."""
        if body is None:
            self.fault = None
        else:
            unknown = sorted(set(body) - {"status", "share", "paths"})
            if unknown:
                raise ConfigError(
                    f"fault: unknown field(s) {', '.join(unknown)} (known: paths, share, status)"
                )
            paths = body.get("paths", ["/v1/chat"])
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                raise ConfigError(f"fault.paths: expected a list of paths, got {paths!r}")
            try:
                self.fault = Fault(int(body.get("status", 503)), float(body.get("share", 1.0)), tuple(paths))
            except (TypeError, ValueError) as exc:
                raise ConfigError(str(exc)) from None
            log.warning("service %s: fault injected: %s", self.name, self.fault.as_dict())
        self.publish()

    async def retire(self, revision: str, drain_timeout_s: float, last: bool = False) -> dict[str, Any]:
        rt = self.get(revision)
        if self.weights.get(revision, 0) > 0:
            others = [n for n, r in self.revisions.items() if n != revision and not r.supervisor.retired]
            if others or not last:
                only = "" if others else " (it is the service's only revision: retire it as the last one)"
                weight = self.weights[revision]
                raise Conflict(f"revision {revision} still has weight {weight:g}%; move it to 0 first{only}")
            self.weights = {}  # the last one: the service answers 503 until the next deploy
        if self.shadow is not None and self.shadow.revision == revision:
            self.shadow = None
        rt.supervisor.draining = True
        self.publish()  # nothing new reaches it from now on
        await self.synced()
        deadline = time.monotonic() + drain_timeout_s
        await self.plane.refresh()
        while self.in_flight.get(revision, 0) > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            await self.plane.refresh()
        drained = self.in_flight.get(revision, 0) == 0
        await rt.supervisor.stop()
        rt.supervisor.retired = True
        self.publish()
        await self.synced()
        status = self.revision_status(revision)
        status["drained"] = drained
        return status


class ControlPlane:
    """Everything ``up`` runs, on one event loop. See the module docstring."""

    def __init__(self, settings: PlatformSettings, config_path: Path | None = None) -> None:
        self.settings = settings
        self.services = {name: ServiceRuntime(s, self) for name, s in settings.services.items()}
        self.routers = RouterLink(settings, config_path)
        self.routers.on_restart = self._routers_restarted
        self.stopping = asyncio.Event()
        self.servers: list[tuple[EmbeddedServer, asyncio.Task[None]]] = []
        self.control_url = ""
        self.monitoring: LocalMonitoring | None = None
        self.bootstrap: dict[str, str] = {}
        self.recorded: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.restoring = 0
        """Services whose recorded state is being deployed again: ``state.json`` is not rewritten
        meanwhile (a crash during the restore must not lose what is still to be restored)."""
        self.state_file = settings.run_dir / STATE_FILE

    def service(self, name: str) -> ServiceRuntime:
        svc = self.services.get(name)
        if svc is None:
            raise NotFoundError(f"no service {name!r} (have: {', '.join(sorted(self.services))})")
        return svc

    def update_targets(self) -> None:
        """Rewrite Prometheus's service discovery file (when monitoring runs)."""
        if self.monitoring is None:
            return
        groups = [g for svc in self.services.values() for g in svc.scrape_targets()]
        config_server = self._config_server_address()
        if config_server:
            labels = {"component": "config-server", "mangaassist_service": "config-server"}
            groups.append({"targets": [config_server], "labels": labels})
        try:
            self.monitoring.write_targets(groups)
        except OSError:
            log.exception("cannot write the scrape targets")

    def _config_server_address(self) -> str | None:
        """host:port of the environment's config server as its state file announces it (no request:
        this runs on the event loop; Prometheus reports it down if it does not answer)."""
        if not self.settings.config_server:
            return None
        state = daemons.announced(self.settings.home, CONFIG_SERVER)
        return None if state is None else str(state["url"]).removeprefix("http://").rstrip("/")

    def save_state(self) -> None:
        """Rewrite ``state.json`` (atomically) with every service's live revisions and routing."""
        if self.restoring or self.stopping.is_set():
            return
        state = {"services": {name: svc.recorded() for name, svc in self.services.items()}}
        tmp = self.state_file.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(state, indent=1))
            os.replace(tmp, self.state_file)
        except OSError:
            log.exception("cannot write %s", self.state_file)

    def _recorded_state(self) -> dict[str, Any]:
        """``state.json`` of a control plane that did not stop cleanly; {} if there is none."""
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            log.exception("%s is unreadable: starting from first_revision", self.state_file)
            return {}
        services = data.get("services") if isinstance(data, dict) else None
        return services if isinstance(services, dict) else {}

    def write_pids(self) -> None:
        pids = {
            f"{svc.name}/{name}": rt.supervisor.pids()
            for svc in self.services.values()
            for name, rt in svc.revisions.items()
        }
        if self.routers.pid:
            pids["routers"] = [self.routers.pid]
        if self.monitoring is not None:  # Prometheus and Alertmanager: `down` verifies them too
            pids["monitoring"] = self.monitoring.pids()
        path = self.settings.run_dir / WORKERS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"control_plane": os.getpid(), "workers": pids}, indent=1))
        os.replace(tmp, path)

    def status(self) -> dict[str, Any]:
        return {
            "environment": self.settings.environment,
            "pid": os.getpid(),
            "home": str(self.settings.home),
            "control_url": self.control_url,
            "bootstrap": self.bootstrap,
            "monitoring": self.monitoring.status() if self.monitoring else None,
            "routers": {"pid": self.routers.pid, "adopted": self.routers.adopted},
            "services": {name: svc.status() for name, svc in self.services.items()},
        }

    async def refresh(self) -> None:
        """Every service's requests in flight, from the routers (one call)."""
        status = await self.routers.status()
        for name, svc in self.services.items():
            service = dict(status.get("services") or {}).get(name) or {}
            svc.in_flight = {str(k): int(v) for k, v in dict(service.get("in_flight") or {}).items()}

    async def start(self) -> None:
        s = self.settings
        self.recorded = self._recorded_state()
        if self.recorded:
            keep = {int(w["pid"]) for w in _recorded_workers(self.recorded)}
            stopped = await asyncio.to_thread(reap_orphans, s.run_dir, s.home, keep=keep)
            log.warning(
                "restoring after a crash: %s (stopped %d process(es) it left; adopting up to %d worker(s))",
                ", ".join(sorted(self.recorded)),
                len(stopped),
                len(keep),
            )
        control_sock = listen(s.host, s.control_port)
        try:
            await self.routers.start()
        except BaseException:
            control_sock.close()
            raise
        self.control_url = f"http://{s.host}:{control_sock.getsockname()[1]}"
        self.servers.append(serve(ControlApi(self), control_sock))
        for server, _ in self.servers:
            while not server.started:
                await asyncio.sleep(0.01)
        self.write_pids()
        if s.monitoring is not None:
            self.monitoring = LocalMonitoring(s.monitoring, s.home, s.run_dir, self.control_url)
            await asyncio.to_thread(self.monitoring.start)
            self.update_targets()
            self.write_pids()
        self._write_runtime()
        log.warning("control plane %s listening on %s", os.getpid(), self.control_url)
        for svc in self.services.values():
            recorded = self.recorded.get(svc.name)
            if isinstance(recorded, dict) and recorded.get("revisions"):
                self.bootstrap[svc.name] = "restoring"
                self.restoring += 1
                svc.holding = True
                self._tasks.add(asyncio.create_task(self._restore(svc, recorded)))
            elif svc.settings.source is not None:
                self.bootstrap[svc.name] = "deploying"
                self._tasks.add(asyncio.create_task(self._bootstrap(svc)))

    def _write_runtime(self) -> None:
        s = self.settings
        runtime = {
            "pid": os.getpid(),
            "environment": s.environment,
            "control_url": self.control_url,
            "services": {name: svc.url for name, svc in self.services.items()},
            "routers": {"pid": self.routers.pid, "adopted": self.routers.adopted},
            "prometheus": self.monitoring.prometheus_url if self.monitoring else None,
            "alertmanager": self.monitoring.alertmanager_url if self.monitoring else None,
            "started": time.time(),
        }
        path = s.run_dir / RUNTIME_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(runtime, indent=1))
        os.replace(tmp, path)

    def _routers_restarted(self) -> None:
        """A new router host replaced one that died: every service's table again, and its PID."""
        for svc in self.services.values():
            svc.publish()
        self.write_pids()
        self._write_runtime()

    async def _bootstrap(self, svc: ServiceRuntime) -> None:
        """Revision ``first_revision`` of the service, packed from the working tree, at 100%."""
        assert svc.settings.source is not None
        try:
            artifact = await asyncio.to_thread(
                pack_source, svc.settings.source, self.settings.home / "artifacts"
            )
            revision = Revision(
                svc.settings.first_revision, artifact, svc.settings.app, {}, svc.settings.replicas
            )
            status = await svc.deploy(revision, svc.settings.ready_timeout_s)
            self.bootstrap[svc.name] = status["health"]
        except Exception as exc:
            log.exception("bootstrap of %s failed", svc.name)
            self.bootstrap[svc.name] = f"failed: {exc}"

    async def _restore(self, svc: ServiceRuntime, recorded: Mapping[str, Any]) -> None:
        """The recorded revisions of ``svc`` back (their running workers adopted where they still
        serve, else started again), then its weights, shadow and fault; published once, at the
        end (``ServiceRuntime.holding``)."""
        restored: list[str] = []
        adopted = 0
        problems: list[str] = []
        try:
            for data in recorded.get("revisions") or []:
                try:
                    revision = revision_from_dict(data)
                    adopt = tuple(Adoptee(int(w["pid"]), int(w["port"])) for w in data.get("workers") or [])
                    await svc.deploy(revision, svc.settings.ready_timeout_s, adopt)
                    restored.append(revision.name)
                    adopted += sum(w.adopted for w in svc.revisions[revision.name].supervisor.workers)
                except Exception as exc:  # one revision that cannot come back must not stop the rest
                    log.exception("restoring a revision of %s failed", svc.name)
                    problems.append(f"{data.get('name', '?') if isinstance(data, dict) else '?'}: {exc}")
            weights = {
                str(k): float(v) for k, v in dict(recorded.get("weights") or {}).items() if k in restored
            }
            if weights and sum(weights.values()) > 0:
                svc.weights = weights
            shadow = recorded.get("shadow")
            if isinstance(shadow, dict) and shadow.get("revision") in restored:
                svc.shadow = Shadow(str(shadow["revision"]), float(shadow.get("share", 0.0)))
            fault = recorded.get("fault")
            if isinstance(fault, dict):
                svc.fault = Fault(int(fault["status"]), float(fault["share"]), tuple(fault["paths"]))
        except Exception as exc:
            log.exception("restoring %s failed", svc.name)
            problems.append(str(exc))
        finally:
            self.restoring -= 1
            svc.holding = False
            svc.publish()
        with contextlib.suppress(MangaAssistError):
            await svc.synced()
        self.bootstrap[svc.name] = (
            f"restored {', '.join(restored) or 'nothing'}"
            + (f" (adopted {adopted} running worker(s))" if adopted else "")
            + (f"; failed: {'; '.join(problems)}" if problems else "")
        )

    async def shutdown(self) -> None:
        for svc in self.services.values():
            await asyncio.gather(*(rt.supervisor.stop() for rt in svc.revisions.values()))
        await self.routers.stop()
        if self.monitoring is not None:
            await asyncio.to_thread(self.monitoring.stop)
        for server, _ in self.servers:
            server.should_exit = True
        await asyncio.gather(*(task for _, task in self.servers), return_exceptions=True)
        self.write_pids()
        self.state_file.unlink(missing_ok=True)  # a clean stop: the next start begins afresh

    async def run(self) -> None:
        await until_signalled(self.stopping, self.start, self.shutdown)


def revision_from_dict(data: Mapping[str, Any]) -> Revision:
    try:
        art = data["artifact"]
        return Revision(
            name=str(data["name"]),
            artifact=Artifact(Path(art["path"]), str(art["digest"])),
            app=str(data["app"]),
            env={str(k): str(v) for k, v in dict(data.get("env") or {}).items()},
            replicas=int(data.get("replicas", 1)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"malformed revision: {exc}") from None


class ControlApi(JsonApi):
    """The control plane's HTTP API (raw ASGI, loopback only)."""

    name = "control API"

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def answered(self, path: str, status: int) -> None:
        if path == "/v1/shutdown" and status == 200:
            self.plane.stopping.set()

    def alerts(self, method: str, query: bytes, raw: bytes) -> dict[str, Any]:
        """Alertmanager's webhook (POST) and the firing alerts, of one service with ``?service=``."""
        monitoring = self.plane.monitoring
        if method == "POST":
            if monitoring is None:
                raise ConfigError("this environment runs no monitoring: no alerts are expected")
            return {"received": monitoring.alerts.receive(json_body(raw))}
        service = None
        for item in query.decode().split("&"):
            key, _, value = item.partition("=")
            if key == "service" and value:
                service = value
        firing = monitoring.alerts.firing(service) if monitoring else []
        return {"alerts": firing, "monitoring": monitoring.status() if monitoring else None}

    async def handle(self, method: str, path: str, query: bytes, raw: bytes) -> Any:
        plane = self.plane
        parts = [p for p in path.split("/") if p]
        if method == "GET" and parts in (["v1", "status"], ["healthz"]):
            await plane.refresh()
            return plane.status()
        if method == "POST" and parts == ["v1", "shutdown"]:
            return {"stopping": True, "pid": os.getpid()}
        if parts == ["v1", "alerts"] and method in ("GET", "POST"):
            return self.alerts(method, query, raw)
        if len(parts) >= 4 and parts[:2] == ["v1", "services"]:
            svc = plane.service(parts[2])
            body = json_body(raw)
            op = parts[3:]
            if svc.holding and not (method == "GET" and op == ["stats"]):
                # a change now would be overwritten by the recorded state, a read would be half of it
                raise Unavailable(
                    f"service {svc.name} is being restored after a control-plane crash; try again shortly"
                )
            if method == "POST" and op == ["deploy"]:
                return await svc.deploy(
                    revision_from_dict(body.get("revision") or {}), float(body.get("timeout_s", 180.0))
                )
            if method == "PUT" and op == ["weights"]:
                weights = body.get("weights")
                if not isinstance(weights, dict):
                    raise ConfigError("expected {'weights': {revision: percent}}")
                result = svc.set_weights({str(k): float(v) for k, v in weights.items()})
                await svc.synced()  # answered once the router splits by the new weights
                return {"weights": result}
            if op == ["shadow"] and method in ("PUT", "DELETE"):
                if method == "DELETE":
                    svc.set_shadow(None, 0.0)
                else:
                    svc.set_shadow(str(body.get("revision")), float(body.get("share", 0.0)))
                await svc.synced()
                return {"shadow": svc.status()["shadow"]}
            if op == ["fault"] and method in ("PUT", "DELETE"):
                svc.set_fault(None if method == "DELETE" else body)
                await svc.synced()
                return {"fault": svc.status()["fault"]}
            if method == "POST" and len(op) == 3 and op[0] == "revisions" and op[2] == "retire":
                return await svc.retire(
                    op[1], float(body.get("drain_timeout_s", 30.0)), last=body.get("last") is True
                )
            if method == "GET" and op == ["stats"]:
                return await plane.routers.stats(svc.name, query_int(query, "cursor", 0))
            if method == "GET" and op == ["status"]:
                await plane.refresh()
                return svc.status()
        raise NotFoundError(f"no control endpoint {method} {path}")


def _recorded_workers(recorded: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The workers ``state.json`` names (every revision of every service), malformed ones left out."""
    workers = []
    for svc in recorded.values():
        for revision in (svc.get("revisions") or []) if isinstance(svc, dict) else []:
            for w in (revision.get("workers") or []) if isinstance(revision, dict) else []:
                if isinstance(w, dict) and isinstance(w.get("pid"), int) and isinstance(w.get("port"), int):
                    workers.append(w)
    return workers


def _belongs_to(pid: int, home: Path) -> bool:
    """Whether ``pid`` is a process of the platform whose state directory is ``home``: a worker (its
    environment names the home) or Prometheus/Alertmanager (their command line does)."""
    marker = str(home).encode()
    for part in ("cmdline", "environ"):
        try:
            if marker in Path(f"/proc/{pid}/{part}").read_bytes():
                return True
        except OSError:
            return False
    return False


def reap_orphans(
    run_dir: Path, home: Path, timeout_s: float = 10.0, keep: set[int] | frozenset[int] = frozenset()
) -> list[int]:
    """Stop the processes a crashed control plane left (``workers.json``), when they belong to this
    state directory, except ``keep`` (workers to adopt) and the router host (adopted or replaced by
    ``RouterLink``): SIGTERM, then SIGKILL after ``timeout_s``. The PIDs signalled."""
    try:
        recorded = json.loads((run_dir / WORKERS_FILE).read_text())
    except (OSError, ValueError):
        return []
    owner = int(recorded.get("control_plane") or 0)
    if owner and owner != os.getpid() and daemons.alive(owner):
        return []  # it still runs: these are its processes, not orphans
    groups = dict(recorded.get("workers") or {})
    groups.pop("routers", None)
    pids = [int(p) for group in groups.values() for p in group or []]
    mine = [p for p in pids if p != os.getpid() and p not in keep and _belongs_to(p, home)]
    for pid in mine:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_belongs_to(p, home) for p in mine):
        time.sleep(0.05)
    for pid in mine:
        if _belongs_to(pid, home):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return mine


def _claim_pid_file(run_dir: Path) -> None:
    """Write our PID, unless a live control plane holds the file (then exit 3)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / PID_FILE
    try:
        other = int(path.read_text().strip())
    except (OSError, ValueError):
        other = 0
    if other and other != os.getpid() and daemons.alive(other):  # a zombie is not running
        print(f"a control plane already runs as PID {other}", file=sys.stderr)
        raise SystemExit(3)
    path.write_text(f"{os.getpid()}\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="The MangaAssist local control plane (run by `mangaassist up`)."
    )
    parser.add_argument("--env", default=None, help="environment in mangaassist.toml (default dev)")
    parser.add_argument("--config", type=Path, default=None, help="path of mangaassist.toml")
    parser.add_argument("--home", type=Path, default=None, help="state directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(args.env, args.config, args.home)
    except MangaAssistError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if settings.provider != "local":
        print(f"error: environment {settings.environment} uses provider {settings.provider}", file=sys.stderr)
        raise SystemExit(2)
    _claim_pid_file(settings.run_dir)
    # the routers' trace spans (platform.tracing) name the environment they run in
    os.environ["MANGAASSIST_ENV"] = settings.environment
    try:
        run_process(ControlPlane(settings, args.config).run())
    finally:
        for name in (PID_FILE, RUNTIME_FILE):
            path = settings.run_dir / name
            with contextlib.suppress(OSError, ValueError):
                if name != PID_FILE or int(path.read_text().strip()) == os.getpid():
                    path.unlink()


if __name__ == "__main__":
    main()
