"""Benchmark: the router's own HTTP/1.1 client against httpcore and aiohttp, side by side.

The local router forwards every request to a worker through ``platform.local.upstream.UpstreamPool``
(hand-written: httptools parsing straight off the socket, keep-alive pools, streamed bodies, the
connect/response/idle timeouts). Issue 13 asks whether a maintained library would do as well:
``httpcore`` (httpx's transport) and ``aiohttp``'s client, each with a keep-alive pool, on the same
event loop (uvloop, as the router runs), against the same worker (the platform's test workload,
``GET /echo``, one uvicorn process on a loopback port).

Per client, in alternating rounds (A B C A B C ...), in one process:

* **CPU per request** (µs): the client process' CPU time over a closed loop of 32 concurrent
  requests for ``--seconds``, divided by the requests done: what the router pays per proxied
  request for its upstream side (the worker's CPU is not counted);
* **throughput** of that closed loop (requests/s; bounded by the worker on 2 cores, so CPU per
  request is the figure that tells the clients apart);
* **latency at a fixed rate** (300 requests/s, open loop): p50, p99, max (ms).

    python benchmarks/upstream_clients.py [--seconds 5] [--rounds 3] [--rate 300] [--json]

Results: benchmarks/results/upstream_clients.json (the medians over rounds, and every round).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import aiohttp  # noqa: E402
import httpcore  # noqa: E402
import httptools  # noqa: E402
import uvloop  # noqa: E402

from mangaassist.platform.local.supervisor import free_port  # noqa: E402
from mangaassist.platform.local.upstream import UpstreamPool  # noqa: E402
from openloop import latency_summary, open_loop  # noqa: E402

APP = "mangaassist.platform.local.testing_app:create_app"
PATH = "/echo"
CONCURRENCY = 32

Request = Callable[[], Awaitable[int]]


class Client:
    """One client under test: ``open`` makes its pool, ``get`` does one request (status),
    ``close`` ends it."""

    name = ""

    def __init__(self, port: int) -> None:
        self.port = port

    async def open(self) -> None: ...

    async def get(self) -> int:
        raise NotImplementedError

    async def close(self) -> None: ...


class Own(Client):
    name = "router (UpstreamPool)"

    async def open(self) -> None:
        self.pool = UpstreamPool("127.0.0.1", self.port, max_idle=256)

    async def get(self) -> int:
        response = await self.pool.request("GET", PATH.encode(), [], b"", 10.0, connect_timeout_s=2.0)
        async for _ in response.chunks():
            pass
        return response.status

    async def close(self) -> None:
        self.pool.close()


class Httpcore(Client):
    name = f"httpcore {httpcore.__version__}"

    async def open(self) -> None:
        self.pool = httpcore.AsyncConnectionPool(max_connections=256, max_keepalive_connections=256)
        self.url = f"http://127.0.0.1:{self.port}{PATH}"

    async def get(self) -> int:
        async with self.pool.stream("GET", self.url) as response:
            async for _ in response.aiter_stream():
                pass
            return int(response.status)

    async def close(self) -> None:
        await self.pool.aclose()


class Aiohttp(Client):
    name = f"aiohttp {aiohttp.__version__}"

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=256, limit_per_host=256, keepalive_timeout=30)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        self.url = f"http://127.0.0.1:{self.port}{PATH}"

    async def get(self) -> int:
        async with self.session.get(self.url) as response:
            async for _ in response.content.iter_any():
                pass
            return response.status

    async def close(self) -> None:
        await self.session.close()


CLIENTS: tuple[type[Client], ...] = (Own, Httpcore, Aiohttp)


async def closed_loop(client: Client, seconds: float) -> dict[str, Any]:
    done = errors = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done, errors
        while time.perf_counter() < stop:
            try:
                status = await client.get()
            except Exception:
                errors += 1
                continue
            done += 1
            errors += status != 200

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    return {
        "requests": done,
        "errors": errors,
        "rps": round(done / wall, 1),
        "cpu_us_per_request": round(cpu / max(done, 1) * 1e6, 1),
    }


async def fixed_rate(client: Client, rate: float, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0

    async def one(_: int) -> None:
        nonlocal errors
        t0 = time.perf_counter()
        try:
            if await client.get() != 200:
                errors += 1
        except Exception:
            errors += 1
            return
        latencies.append((time.perf_counter() - t0) * 1000)

    n, _ = await open_loop(one, rate, seconds)
    return latency_summary(n, errors, latencies)


async def measure(port: int, seconds: float, rounds: int, rate: float) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in CLIENTS}
    for r in range(rounds):
        for kind in CLIENTS:
            client = kind(port)
            await client.open()
            for _ in range(200):  # warm-up: connections made, code paths hot
                await client.get()
            loop_figures = await closed_loop(client, seconds)
            rate_figures = await fixed_rate(client, rate, seconds)
            await client.close()
            runs[kind.name].append({"round": r + 1, "closed_loop": loop_figures, "fixed_rate": rate_figures})
            print(
                f"round {r + 1} {kind.name:24} {loop_figures['rps']:>8} req/s "
                f"{loop_figures['cpu_us_per_request']:>7} us CPU/req  p99 {rate_figures['p99_ms']} ms",
                file=sys.stderr,
            )
    return runs


def start_worker(port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MANGAASSIST_REVISION": "bench"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            APP,
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env=env,
    )
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{PATH}", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the test workload did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--rate", type=float, default=300.0, help="fixed rate, requests/s (default 300)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "upstream_clients.json")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if args.seconds <= 0 or args.rounds < 1 or args.rate <= 0:
        parser.error("--seconds and --rate must be positive, --rounds at least 1")

    port = free_port()
    worker = start_worker(port)
    try:
        runs = uvloop.run(measure(port, args.seconds, args.rounds, args.rate))
    finally:
        worker.terminate()
        worker.wait(10)

    def median(name: str, part: str, key: str) -> float:
        return round(statistics.median(r[part][key] for r in runs[name]), 3)

    summary = {
        name: {
            "cpu_us_per_request": median(name, "closed_loop", "cpu_us_per_request"),
            "rps": median(name, "closed_loop", "rps"),
            "p50_ms": median(name, "fixed_rate", "p50_ms"),
            "p99_ms": median(name, "fixed_rate", "p99_ms"),
            "errors": sum(r["closed_loop"]["errors"] + r["fixed_rate"]["errors"] for r in runs[name]),
        }
        for name in runs
    }
    own = summary[Own.name]
    ratios = {
        name: round(s["cpu_us_per_request"] / own["cpu_us_per_request"], 2) for name, s in summary.items()
    }
    result: dict[str, Any] = {
        "benchmark": "upstream_clients",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "setup": {
            "worker": f"{APP} (uvicorn, uvloop, httptools), GET {PATH}",
            "concurrency": CONCURRENCY,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "rate_rps": args.rate,
            "httptools": httptools.__version__,
            "loop": f"uvloop {uvloop.__version__}",
        },
        "summary": summary,
        "cpu_ratio_vs_router_client": ratios,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, s in summary.items():
            print(
                f"{name:24} CPU {s['cpu_us_per_request']:>7} us/req ({ratios[name]}x)"
                f"  {s['rps']:>8} req/s  p50 {s['p50_ms']} ms  p99 {s['p99_ms']} ms  errors {s['errors']}"
            )
        print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
