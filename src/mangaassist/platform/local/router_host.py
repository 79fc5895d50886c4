"""The routers' own process: every service's ``Router`` of one local environment, fed by the
control plane.

The control plane starts it (``python -m mangaassist.platform.local.router_host``) unless one
already serves the environment with the same router settings. It serves each service's router on
that service's loopback port (``router_port``) and, on a Unix socket only its owner may use
(``platform/routers.sock``, mode 0600), an admin API through which the control plane publishes
routing tables and reads the routers' records (JSON):

* ``GET /v1/status``: pid, and per service its URL, table version and requests in flight by
  revision;
* ``PUT /v1/services/{s}/table``: a routing table (``version``, ``targets`` {revision: [worker
  ports]}, ``weights``, ``shadow``, ``shadow_share``, ``fault``). A table whose version is not
  newer than the router's is ignored (the answer says so), so a late retry never undoes a newer
  one;
* ``GET /v1/services/{s}/stats?cursor=N``: ``Router.snapshot``;
* ``POST /v1/shutdown``.

Why a process of its own: a control plane that dies (``kill -9``, the out-of-memory killer, a bug)
must not take the services down with it. The routers keep serving with their last table and keep
their records (the judge's cursor, sticky conversations, in-flight counts, connection pools); a
restarted control plane adopts this process and the running workers (``controlplane``) and goes on
numbering tables from the routers' version. What the routers cannot do alone: notice a worker
that dies or hangs while no control plane runs (its requests fail over to another worker of the
revision where one is ready, as always; the next control plane replaces the worker).

Files under ``$MANGAASSIST_HOME/platform/``: ``routers.json`` (pid, socket, router URLs and the
router settings they run with, written once everything listens), ``routers.sock``,
``routers.log`` (its output). SIGTERM (or the shutdown call) stops it after in-flight requests,
within uvicorn's graceful timeout.
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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from mangaassist.core.errors import ConfigError, MangaAssistError, NotFoundError
from mangaassist.platform import daemons
from mangaassist.platform.local.router import Fault, Router, RouteTarget, RoutingTable
from mangaassist.platform.local.serving import (
    EmbeddedServer,
    JsonApi,
    json_body,
    listen,
    listen_unix,
    query_int,
    run_process,
    serve,
    until_signalled,
)
from mangaassist.platform.local.supervisor import AdoptedProcess
from mangaassist.platform.local.upstream import UpstreamPool
from mangaassist.platform.settings import PlatformSettings, ServiceSettings, load_settings

log = logging.getLogger("mangaassist.platform")

ROUTERS_FILE = "routers.json"
SOCKET_FILE = "routers.sock"
LOG_FILE = "routers.log"
MODULE = "mangaassist.platform.local.router_host"


def router_settings(service: ServiceSettings) -> dict[str, Any]:
    """What a running router was built with: a router host whose settings differ is not adopted."""
    return {
        "router_port": service.router_port,
        "shadow_timeout_s": service.shadow_timeout_s,
        "connect_timeout_s": service.connect_timeout_s,
        "response_timeout_s": service.response_timeout_s,
        "idle_read_timeout_s": service.idle_read_timeout_s,
        "max_body_bytes": service.max_body_bytes,
        "client_body_timeout_s": service.client_body_timeout_s,
    }


def fingerprint(settings: PlatformSettings) -> dict[str, Any]:
    return {name: router_settings(s) for name, s in sorted(settings.services.items())}


def table_spec(
    version: int,
    targets: Mapping[str, list[int]],
    weights: Mapping[str, float],
    shadow: str | None,
    shadow_share: float,
    fault: Fault | None,
) -> dict[str, Any]:
    """A routing table as the control plane sends it (module docstring)."""
    return {
        "version": version,
        "targets": {name: list(ports) for name, ports in targets.items()},
        "weights": dict(weights),
        "shadow": shadow,
        "shadow_share": shadow_share,
        "fault": fault.as_dict() if fault else None,
    }


def _spec_fields(
    spec: Mapping[str, Any],
) -> tuple[int, dict[str, list[int]], dict[str, float], str | None, float, Fault | None]:
    """``spec`` checked; ConfigError naming the field that is wrong."""
    try:
        version = int(spec["version"])
        raw_targets = spec.get("targets") or {}
        if not isinstance(raw_targets, dict):
            raise ConfigError(f"table.targets: expected {{revision: [ports]}}, got {raw_targets!r}")
        targets = {str(n): [int(p) for p in ports] for n, ports in raw_targets.items()}
        raw_weights = spec.get("weights") or {}
        if not isinstance(raw_weights, dict):
            raise ConfigError(f"table.weights: expected {{revision: percent}}, got {raw_weights!r}")
        weights = {str(n): float(w) for n, w in raw_weights.items()}
        shadow = spec.get("shadow")
        share = float(spec.get("shadow_share") or 0.0)
        raw_fault = spec.get("fault")
        fault = (
            Fault(int(raw_fault["status"]), float(raw_fault["share"]), tuple(raw_fault["paths"]))
            if raw_fault
            else None
        )
    except ConfigError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"malformed routing table: {type(exc).__name__}: {exc}") from None
    if any(not 0 < p < 65536 for ports in targets.values() for p in ports):
        raise ConfigError(f"table.targets: a port is out of range in {targets}")
    return version, targets, weights, None if shadow is None else str(shadow), share, fault


class RouterHost:
    """The routers of one environment and their pools (module docstring)."""

    def __init__(self, settings: PlatformSettings, ports: Mapping[str, int] | None = None) -> None:
        self.settings = settings
        self.ports = {name: (ports or {}).get(name, s.router_port) for name, s in settings.services.items()}
        """Where each router listens: ``router_port``, unless given (a replacement host keeps the
        ports of the one it replaces, which the workers' links name, even where they were picked)."""
        self.routers = {
            name: Router(
                name,
                shadow_timeout_s=s.shadow_timeout_s,
                connect_timeout_s=s.connect_timeout_s,
                response_timeout_s=s.response_timeout_s,
                idle_read_timeout_s=s.idle_read_timeout_s,
                max_body_bytes=s.max_body_bytes,
                client_body_timeout_s=s.client_body_timeout_s,
            )
            for name, s in settings.services.items()
        }
        self.pools: dict[str, dict[int, UpstreamPool]] = {name: {} for name in self.routers}
        self.urls: dict[str, str] = {}
        self.stopping = asyncio.Event()
        self.servers: list[tuple[EmbeddedServer, asyncio.Task[None]]] = []

    def router(self, service: str) -> Router:
        router = self.routers.get(service)
        if router is None:
            raise NotFoundError(f"no service {service!r} (have: {', '.join(sorted(self.routers))})")
        return router

    def apply(self, service: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Publish ``spec`` to the service's router unless it is not newer than the router's table."""
        router = self.router(service)
        version, targets, weights, shadow, share, fault = _spec_fields(spec)
        current = router.table.version
        if version <= current:
            return {"version": current, "applied": False}
        pools = self.pools[service]
        live: set[int] = set()
        route: dict[str, RouteTarget] = {}
        for name, ports in targets.items():
            chosen = []
            for port in ports:
                pool = pools.get(port)
                if pool is None:
                    pool = pools[port] = UpstreamPool("127.0.0.1", port)
                chosen.append(pool)
                live.add(port)
            route[name] = RouteTarget(name, tuple(chosen))
        router.publish(RoutingTable.build(version, route, weights, shadow, share, fault))
        for port in [p for p in pools if p not in live]:
            pools.pop(port).close()  # idle connections only; in-flight ones finish
        return {"version": version, "applied": True}

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "services": {
                name: {
                    "url": self.urls.get(name, ""),
                    "version": router.table.version,
                    "in_flight": {rev: c.in_flight for rev, c in router.stats.revisions.items()},
                }
                for name, router in self.routers.items()
            },
        }

    async def start(self) -> None:
        s = self.settings
        run_dir = s.run_dir
        socks: dict[str, Any] = {}
        try:
            for name in s.services:
                socks[name] = listen(s.host, self.ports[name])
        except ConfigError:
            for sock in socks.values():
                sock.close()
            raise
        admin_path = run_dir / SOCKET_FILE
        admin = listen_unix(admin_path)
        for name, sock in socks.items():
            self.urls[name] = f"http://{s.host}:{sock.getsockname()[1]}"
            self.servers.append(serve(self.routers[name], sock))
        self.servers.append(serve(RouterAdmin(self), admin))
        for server, _ in self.servers:
            while not server.started:
                await asyncio.sleep(0.01)
        state = {
            "pid": os.getpid(),
            "socket": str(admin_path),
            "services": dict(self.urls),
            "settings": fingerprint(s),
            "started": time.time(),
        }
        path = run_dir / ROUTERS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, path)
        log.warning(
            "router host %s serving %s", os.getpid(), ", ".join(f"{k} {v}" for k, v in self.urls.items())
        )

    async def shutdown(self) -> None:
        for server, _ in self.servers:
            server.should_exit = True
        await asyncio.gather(*(task for _, task in self.servers), return_exceptions=True)
        for router in self.routers.values():
            await router.aclose()
        run_dir = self.settings.run_dir
        with contextlib.suppress(OSError, ValueError):
            if json.loads((run_dir / ROUTERS_FILE).read_text()).get("pid") == os.getpid():
                (run_dir / ROUTERS_FILE).unlink()
                (run_dir / SOCKET_FILE).unlink(missing_ok=True)

    async def run(self) -> None:
        await until_signalled(self.stopping, self.start, self.shutdown)


class RouterAdmin(JsonApi):
    """The router host's admin API on its Unix socket (module docstring)."""

    name = "router admin API"

    def __init__(self, host: RouterHost) -> None:
        self.host = host

    async def handle(self, method: str, path: str, query: bytes, raw: bytes) -> Any:
        parts = [p for p in path.split("/") if p]
        if method == "GET" and parts in (["v1", "status"], ["healthz"]):
            return self.host.status()
        if method == "POST" and parts == ["v1", "shutdown"]:
            return {"stopping": True, "pid": os.getpid()}
        if len(parts) == 4 and parts[:2] == ["v1", "services"]:
            if method == "PUT" and parts[3] == "table":
                return self.host.apply(parts[2], json_body(raw))
            if method == "GET" and parts[3] == "stats":
                return self.host.router(parts[2]).snapshot(query_int(query, "cursor", 0))
        raise NotFoundError(f"no router admin endpoint {method} {path}")

    def answered(self, path: str, status: int) -> None:
        if path == "/v1/shutdown" and status == 200:
            self.host.stopping.set()


def _ports(given: list[str], settings: PlatformSettings) -> dict[str, int]:
    ports = {}
    for item in given:
        name, _, port = item.partition("=")
        if name not in settings.services:
            raise ConfigError(
                f"--port {item}: no service {name!r} (have: {', '.join(sorted(settings.services))})"
            )
        if not port.isdigit() or not 0 <= int(port) < 65536:
            raise ConfigError(f"--port {item}: expected SERVICE=PORT with a port 0-65535")
        ports[name] = int(port)
    return ports


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="The MangaAssist local routers (started by the control plane; see its docs)."
    )
    parser.add_argument("--env", default=None, help="environment in mangaassist.toml (default dev)")
    parser.add_argument("--config", type=Path, default=None, help="path of mangaassist.toml")
    parser.add_argument("--home", type=Path, default=None, help="state directory")
    parser.add_argument(
        "--port",
        action="append",
        default=[],
        metavar="SERVICE=PORT",
        help="listen for SERVICE on PORT instead of its router_port (repeatable)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(args.env, args.config, args.home)
        ports = _ports(args.port, settings)
    except MangaAssistError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    os.environ["MANGAASSIST_ENV"] = settings.environment  # the routers' trace spans name it
    run_process(RouterHost(settings, ports).run())


def _router_hosts_of(home: Path) -> list[int]:
    """Every process that runs this module for the state directory ``home``."""
    pids = []
    for entry in Path("/proc").iterdir():
        pid = int(entry.name) if entry.name.isdigit() else 0
        if pid and pid != os.getpid() and daemons.runs_module(pid, MODULE, str(home)):
            pids.append(pid)
    return pids


class RouterLink:
    """The control plane's side of the router host: starts or adopts it, restarts it if it dies,
    and publishes each service's tables to it in order (the newest wins; ``synced`` waits for it)."""

    def __init__(self, settings: PlatformSettings, config_path: Path | None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.run_dir = settings.run_dir
        self.socket = self.run_dir / SOCKET_FILE
        self.http = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(self.socket)),
            base_url="http://router-host",
            timeout=10.0,
        )
        self.pid = 0
        self.urls: dict[str, str] = {}
        self.adopted = False
        self.versions: dict[str, int] = {}
        """The newest table version issued per service (continued from an adopted host's)."""
        self._latest: dict[str, dict[str, Any]] = {}
        self._acked: dict[str, int] = {}
        self._acked_event: dict[str, asyncio.Event] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}
        self._proc: asyncio.subprocess.Process | AdoptedProcess | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.stopping = False
        self.on_restart: Callable[[], None] = lambda: None
        """Called after a router host that died was replaced (the control plane publishes again)."""

    async def _answer(self) -> dict[str, Any] | None:
        try:
            r = await self.http.get("/v1/status", timeout=2.0)
            r.raise_for_status()
            data: dict[str, Any] = r.json()
        except (httpx.HTTPError, ValueError):
            return None
        return data

    async def start(self) -> None:
        """Adopt the running router host of this environment if it runs with these settings, else
        start one (stopping a mismatched one first). MangaAssistError if it cannot serve."""
        announced = self._announced()
        if announced is not None:
            pid = int(announced.get("pid") or 0)
            ours = daemons.runs_module(pid, MODULE, str(self.settings.home))
            status = await self._answer() if ours else None
            if status is not None and int(status.get("pid", 0)) == pid:
                if announced.get("settings") == fingerprint(self.settings):
                    with contextlib.suppress(OSError):
                        self._proc = AdoptedProcess(pid)
                        self._took(pid, status)
                        self.adopted = True
                        log.warning("adopted the router host %d with its tables %s", pid, self.versions)
                if not self.adopted:
                    log.warning("the router host %d runs with other settings: replacing it", pid)
        if not self.adopted:
            # any router host of this state directory still running (one with other settings, or
            # one whose control plane died before it was announced) would hold the ports
            for other in _router_hosts_of(self.settings.home):
                log.warning("stopping the router host %d, which is not adopted", other)
                await asyncio.to_thread(daemons.terminate, other, MODULE, str(self.settings.home))
            await self._spawn()
        self._watcher = asyncio.create_task(self._watch())

    def _announced(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.run_dir / ROUTERS_FILE).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _took(self, pid: int, status: Mapping[str, Any]) -> None:
        self.pid = pid
        services = dict(status.get("services") or {})
        urls = {name: str(services[name]["url"]) for name in services}
        for name, url in urls.items():  # a replacement on other ports: the workers' links are stale
            if self.urls.get(name) not in (None, url):
                log.error("service %s: its router now listens on %s (was %s)", name, url, self.urls[name])
        self.urls = urls
        # numbering goes on from the highest version either side knows (a replacement host starts
        # at 0 and takes any newer table; a waiter for an older number is satisfied by a newer one)
        served = {name: int(services[name]["version"]) for name in services}
        self.versions = {name: max(self.versions.get(name, 0), v) for name, v in served.items()}
        self._acked = served

    async def _spawn(self, keep_ports: bool = False) -> None:
        """Start a router host and wait until it serves; with ``keep_ports``, on the ports of the
        one it replaces (the workers' links name them)."""
        s = self.settings
        (self.run_dir / ROUTERS_FILE).unlink(missing_ok=True)
        argv = [sys.executable, "-m", MODULE, "--env", s.environment, "--home", str(s.home)]
        if self.config_path is not None:
            argv += ["--config", str(self.config_path)]
        if keep_ports:
            for name, url in self.urls.items():
                argv += ["--port", f"{name}={url.rsplit(':', 1)[1]}"]
        log_path = self.run_dir / LOG_FILE
        with log_path.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                cwd=str(s.root),
            )  # fmt: skip
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                break
            announced = self._announced()
            if announced is not None and int(announced.get("pid") or 0) == proc.pid:
                status = await self._answer()
                if status is not None:
                    self._proc = proc
                    self._took(proc.pid, status)
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.05)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise MangaAssistError(f"the router host did not start: {daemons.tail(log_path)}")

    async def _watch(self) -> None:
        """Replace a router host that dies while the control plane runs, then publish again."""
        while not self.stopping:
            proc = self._proc
            assert proc is not None
            await proc.wait()
            if self.stopping:
                return
            log.error(
                "the router host %d exited: starting another and publishing every table again", proc.pid
            )
            try:
                await self._spawn(keep_ports=True)
            except MangaAssistError:
                log.exception("cannot restart the router host; retrying in 1s")
                await asyncio.sleep(1.0)
                continue
            self.on_restart()

    def publish(self, service: str, spec: Mapping[str, Any]) -> int:
        """Send ``spec`` (without a version: this numbers it) to the service's router, in the
        background; the version it gets (``synced`` waits for it)."""
        version = self.versions[service] = self.versions.get(service, 0) + 1
        self._latest[service] = {**spec, "version": version}
        sender = self._senders.get(service)
        if sender is None or sender.done():
            self._senders[service] = asyncio.create_task(self._send(service))
        return version

    async def _send(self, service: str) -> None:
        while True:
            spec = self._latest[service]
            try:
                r = await self.http.put(f"/v1/services/{service}/table", json=spec)
                if r.status_code >= 400:
                    log.error("the router host refused table %s of %s: %s", spec["version"], service, r.text)
                else:
                    self._acked[service] = max(self._acked.get(service, 0), int(spec["version"]))
                    self._event(service).set()
            except httpx.HTTPError as exc:  # it is being restarted: the newest table goes once it serves
                if self.stopping:
                    return
                log.warning("cannot publish table %s of %s yet: %s", spec["version"], service, exc)
                await asyncio.sleep(0.1)
                continue
            if self._latest[service] is spec:
                return

    def _event(self, service: str) -> asyncio.Event:
        event = self._acked_event.get(service)
        if event is None:
            event = self._acked_event[service] = asyncio.Event()
        return event

    async def synced(self, service: str, timeout_s: float = 10.0) -> None:
        """Until the router serves the newest table issued for ``service`` (MangaAssistError after
        ``timeout_s``: the routers did not take it)."""
        want = self.versions.get(service, 0)
        deadline = time.monotonic() + timeout_s
        while self._acked.get(service, 0) < want:
            event = self._event(service)
            event.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise MangaAssistError(
                    f"the router of {service} did not take routing table {want} within {timeout_s:g}s "
                    f"(see {self.run_dir / LOG_FILE})"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    async def status(self) -> dict[str, Any]:
        """The host's status; {} while it does not answer."""
        return await self._answer() or {}

    async def stats(self, service: str, cursor: int) -> dict[str, Any]:
        try:
            r = await self.http.get(f"/v1/services/{service}/stats", params={"cursor": cursor})
        except httpx.HTTPError as exc:
            raise MangaAssistError(f"the router host does not answer: {exc}") from None
        data: dict[str, Any] = r.json()
        if r.status_code >= 400:
            raise MangaAssistError(str(data.get("error", r.text)))
        return data

    async def stop(self) -> None:
        """Stop the router host (after its in-flight requests) and wait for it."""
        self.stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
        for sender in self._senders.values():
            sender.cancel()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        await self.http.aclose()


if __name__ == "__main__":
    main()
