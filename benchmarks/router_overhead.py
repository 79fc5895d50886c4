"""Benchmark: what the local router adds, next to nginx doing the same two-way weighted split.

Starts a real control plane (a background process) with one service of two revisions of the test
workload (``platform.local.testing_app``, one worker each) split 90/10, and nginx (Debian package,
installed here with apt-get when missing, one worker process, keep-alive upstreams) configured for
the same 90/10 split over the same two workers, and the floor of a Python proxy
(``benchmarks/python_floor_proxy.py``: uvloop + httptools and nothing else) over the same split. Then,
for each path - direct to a worker, through the router, through nginx, through the floor:

* latency at a fixed 300 requests/s (open loop, 10 s, keep-alive connections): p50, p99, max;
  the router's and nginx's *added* latency is their percentile minus the direct one;
* maximum throughput with ``wrk`` (installed like nginx): 1 thread, 32 connections, 10 s.

Targets on a 2-core machine (issue 13): router added p99 <= 1 ms at 300 req/s; router throughput at
least 0.6x nginx's. The floor's ratio to nginx is reported beside the router's, from the same run: it
is the most any router written in Python on this event loop and parser reaches here.

    python benchmarks/router_overhead.py [--rate 300] [--seconds 10] [--json]

Results are written to benchmarks/results/router_overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mangaassist.platform.artifacts import pack_source  # noqa: E402
from mangaassist.platform.compute import Revision  # noqa: E402
from mangaassist.platform.local.client import (  # noqa: E402
    LocalCompute,
    start_control_plane,
    stop_control_plane,
)
from mangaassist.platform.local.supervisor import free_port  # noqa: E402
from mangaassist.platform.local.upstream import UpstreamPool  # noqa: E402
from mangaassist.platform.settings import load_settings  # noqa: E402
from openloop import latency_summary, open_loop  # noqa: E402

APP = "mangaassist.platform.local.testing_app:create_app"
ADDED_P99_MS_MAX = 1.0
THROUGHPUT_RATIO_MIN = 0.6
PATH = b"/echo"


def ensure_tools() -> None:
    missing = [pkg for pkg, binary in (("nginx", "nginx"), ("wrk", "wrk")) if not shutil.which(binary)]
    if not missing:
        return
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    print(f"installing {' '.join(missing)} from Debian's packages ...", file=sys.stderr)
    subprocess.run([*prefix, "apt-get", "update", "-qq"], check=True)
    subprocess.run(
        [*prefix, "apt-get", "install", "-y", "-qq", *missing],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def start_nginx(workdir: Path, port: int, upstreams: list[tuple[int, int]]) -> subprocess.Popen[bytes]:
    servers = "\n".join(f"        server 127.0.0.1:{p} weight={w};" for p, w in upstreams)
    conf = f"""
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    upstream revisions {{
{servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://revisions;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""
    (workdir / "nginx.conf").write_text(conf)
    proc = subprocess.Popen([nginx_binary(), "-c", str(workdir / "nginx.conf"), "-p", str(workdir)])
    time.sleep(0.5)
    if proc.poll() is not None:
        raise RuntimeError(f"nginx failed: {(workdir / 'error.log').read_text()}")
    return proc


def start_floor(port: int, upstreams: list[tuple[int, int]]) -> subprocess.Popen[bytes]:
    script = Path(__file__).with_name("python_floor_proxy.py")
    proc = subprocess.Popen([sys.executable, str(script), str(port), *(f"{p}:{w}" for p, w in upstreams)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the floor proxy exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    raise RuntimeError(f"the floor proxy did not listen on port {port} within 10 s")


async def fixed_rate(port: int, rate: float, seconds: float) -> dict[str, Any]:
    """Open loop: one request every 1/rate s on keep-alive connections; latency per request."""
    pool = UpstreamPool("127.0.0.1", port, max_idle=256)
    latencies: list[float] = []
    errors = 0

    async def one(_: int = 0) -> None:
        nonlocal errors
        t0 = time.perf_counter()
        try:
            response = await pool.request("GET", PATH, [], b"", 10.0)
            await response.read()
            if response.status != 200:
                errors += 1
        except Exception:
            errors += 1
            return
        latencies.append((time.perf_counter() - t0) * 1000)

    # warm-up: open connections, let the JITs of the world settle
    await asyncio.gather(*(one() for _ in range(50)))
    latencies.clear()
    n, _ = await open_loop(one, rate, seconds)
    pool.close()
    return latency_summary(n, errors, latencies)


def wrk(port: int, seconds: int) -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}{PATH.decode()}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": round(rps, 1),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": sock.group(1) if sock else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="router-bench-"))
    config = work / "mangaassist.toml"
    config.write_text(
        '[environments.bench]\nprovider = "local"\nhome = "home"\ncontrol_port = 0\n'
        f'[environments.bench.services.web]\napp = "{APP}"\nrouter_port = 0\nready_timeout_s = 30\n'
    )
    settings = load_settings("bench", config)
    os.environ.setdefault("MANGAASSIST_ROOT", str(ROOT))
    nginx: subprocess.Popen[bytes] | None = None
    floor: subprocess.Popen[bytes] | None = None
    results: dict[str, Any] = {}
    try:
        start_control_plane(settings, config, wait_s=30)
        compute = LocalCompute(settings.run_dir)
        artifact = pack_source(ROOT / "src", settings.home / "artifacts")
        ports = []
        for name in ("r1", "r2"):
            status = compute.deploy("web", Revision(name, artifact, APP, {}, 1))
            ports.append(status.workers[0].port)
        compute.set_weights("web", {"r1": 90, "r2": 10})
        router_port = int(compute.url("web").rsplit(":", 1)[1])
        nginx_port = free_port()
        nginx = start_nginx(work, nginx_port, [(ports[0], 9), (ports[1], 1)])
        floor_port = free_port()
        floor = start_floor(floor_port, [(ports[0], 9), (ports[1], 1)])
        paths = {"direct": ports[0], "router": router_port, "nginx": nginx_port, "floor": floor_port}

        latency = {
            name: asyncio.run(fixed_rate(port, args.rate, args.seconds)) for name, port in paths.items()
        }
        throughput = {name: wrk(port, int(args.seconds)) for name, port in paths.items()}
        stats = compute.stats("web")["revisions"]
        split = {k: v["requests"] for k, v in stats.items()}
        compute.close()
        added = {
            name: {
                "p50_ms": round(latency[name]["p50_ms"] - latency["direct"]["p50_ms"], 3),
                "p99_ms": round(latency[name]["p99_ms"] - latency["direct"]["p99_ms"], 3),
            }
            for name in ("router", "nginx", "floor")
        }
        ratio = throughput["router"]["rps"] / throughput["nginx"]["rps"]
        floor_ratio = throughput["floor"]["rps"] / throughput["nginx"]["rps"]
        results = {
            "benchmark": "router_overhead",
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "nginx": subprocess.run([nginx_binary(), "-v"], capture_output=True, text=True).stderr.strip(),
            "setup": {
                "split": "90/10 over two testing_app workers (1 each)",
                "nginx_worker_processes": 1,
                "floor": "benchmarks/python_floor_proxy.py (uvloop + httptools, no router features)",
                "rate_rps": args.rate,
                "seconds": args.seconds,
                "wrk": "-t1 -c32",
                "path": PATH.decode(),
            },
            "latency_at_rate": latency,
            "added_latency": added,
            "throughput": throughput,
            "router_vs_nginx_throughput": round(ratio, 3),
            "floor_vs_nginx_throughput": round(floor_ratio, 3),
            "router_vs_floor_throughput": round(throughput["router"]["rps"] / throughput["floor"]["rps"], 3),
            "router_requests_by_revision": split,
            "targets": {
                "added_p99_ms_max": ADDED_P99_MS_MAX,
                "throughput_ratio_min": THROUGHPUT_RATIO_MIN,
                "added_p99_ok": added["router"]["p99_ms"] <= ADDED_P99_MS_MAX,
                "throughput_ok": ratio >= THROUGHPUT_RATIO_MIN,
            },
        }
    finally:
        if floor is not None:
            floor.terminate()
            floor.wait(10)
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        stop_control_plane(settings)
        shutil.rmtree(work, ignore_errors=True)
    out = ROOT / "benchmarks" / "results" / "router_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name in ("direct", "router", "nginx", "floor"):
            lat, thr = latency[name], throughput[name]
            print(
                f"{name:>6}: p50 {lat['p50_ms']:.3f} ms  p99 {lat['p99_ms']:.3f} ms"
                f"  max {lat['max_ms']:.3f} ms  | {thr['rps']:.0f} req/s"
            )
        print(
            f"router adds p50 {added['router']['p50_ms']:.3f} ms, p99 {added['router']['p99_ms']:.3f} ms "
            f"(target <= {ADDED_P99_MS_MAX:g} ms); nginx adds p99 {added['nginx']['p99_ms']:.3f} ms; "
            f"router/nginx throughput {ratio:.2f} (target >= {THROUGHPUT_RATIO_MIN:g}; "
            f"a Python proxy with no features: {floor_ratio:.2f})"
        )
    ok = results["targets"]["added_p99_ok"] and results["targets"]["throughput_ok"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
