"""Benchmark: the intent model endpoint's latency at a fixed 100 requests/s.

Starts a real local control plane (a background process) with one service, ``intent-model``, running
``chatbot.model_server`` as revision r1 (one worker, one torch thread, the MiniLM embedder and the
default model, as ``mangaassist up`` runs it). Then, open loop (one request every 1/rate s on
keep-alive connections, so a slow answer does not slow the sender down):

* ``router_with_embedding``: through the service's router, each request carrying the MiniLM
  embedding of its text and a session id: what the chatbot sends (``HttpIntentClient``);
* ``direct_with_embedding``: the same, straight to the worker (what the router adds is the difference);
* ``router_text_only``: through the router, text only (the endpoint embeds it itself; shorter run).

Reports p50/p95/p99/max and errors per mode, and the worker's own latency histogram. Messages are the
chat benchmark's generator (every intent, many titles). On this shared 2-core machine keep runs
short: the default is 60 s for the main mode and 15 s for the others.

    python benchmarks/model_endpoint.py [--rate 100] [--seconds 60] [--json]

Results are written to benchmarks/results/model_endpoint.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from chat_latency import message  # noqa: E402
from mangaassist.platform.artifacts import pack_source  # noqa: E402
from mangaassist.platform.compute import Revision  # noqa: E402
from mangaassist.platform.local.client import (  # noqa: E402
    LocalCompute,
    start_control_plane,
    stop_control_plane,
)
from mangaassist.platform.local.upstream import UpstreamPool  # noqa: E402
from mangaassist.platform.settings import load_settings  # noqa: E402
from openloop import open_loop  # noqa: E402

APP = "mangaassist.chatbot.model_server:create_app"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def bodies(n: int, with_embedding: bool, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    texts = [message(rng)[0] for _ in range(n)]
    if not with_embedding:
        return [json.dumps({"text": t}).encode() for t in texts]
    from mangaassist.platform.embeddings import make_embedder

    embedder = make_embedder("minilm")
    vectors = embedder.embed(texts)
    return [
        json.dumps(
            {"text": t, "embedding": [round(float(x), 6) for x in v], "embedder": embedder.name}
        ).encode()
        for t, v in zip(texts, vectors, strict=True)
    ]


async def fixed_rate(port: int, payloads: list[bytes], rate: float, seconds: float) -> dict[str, Any]:
    """Open loop: one request every 1/rate s; latency of each, errors by status or exception."""
    pool = UpstreamPool("127.0.0.1", port, max_idle=256)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    rng = random.Random(3)

    async def one(i: int) -> None:
        body = payloads[i % len(payloads)]
        headers = [
            (b"content-type", b"application/json"),
            (b"x-session-id", f"bench-{rng.randint(0, 500)}".encode()),
        ]
        t0 = time.perf_counter()
        try:
            response = await pool.request("POST", b"/v1/intent", headers, body, 10.0)
            await response.read()
        except Exception as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            return
        latencies.append((time.perf_counter() - t0) * 1000)
        if response.status != 200:
            errors[str(response.status)] = errors.get(str(response.status), 0) + 1

    await asyncio.gather(*(one(i) for i in range(50)))  # warm-up: connections, first calls
    latencies.clear()
    errors.clear()
    n, elapsed = await open_loop(one, rate, seconds)
    pool.close()
    return {
        "requests": n,
        "seconds": round(elapsed, 1),
        "achieved_rps": round(n / elapsed, 1),
        "errors": errors,
        "latency_ms": {
            "p50": round(pct(latencies, 50), 2),
            "p95": round(pct(latencies, 95), 2),
            "p99": round(pct(latencies, 99), 2),
            "max": round(max(latencies), 2),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second (default 100)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the main run (default 60)")
    parser.add_argument("--short-seconds", type=float, default=15.0, help="length of the other runs")
    parser.add_argument("--json", action="store_true", help="print the result as JSON only")
    args = parser.parse_args()
    if args.rate <= 0 or args.seconds <= 0 or args.short_seconds <= 0:
        parser.error("--rate, --seconds and --short-seconds must be positive")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    home = Path(os.environ.get("MANGAASSIST_HOME", ROOT / ".mangaassist")).resolve()
    directory = Path(tempfile.mkdtemp(prefix="bench-model-"))
    config = directory / "mangaassist.toml"
    config.write_text(
        "[environments.bench]\nprovider = 'local'\ncontrol_port = 0\n"
        f"[environments.bench.services.intent-model]\napp = '{APP}'\nrouter_port = 0\nready_timeout_s = 300\n"
        "[environments.bench.services.intent-model.env]\nMANGAASSIST_TORCH_THREADS = '1'\n"
    )
    # the shared state directory holds the cached default model; the platform files go elsewhere
    settings = load_settings("bench", config, home=directory / "home")
    with_vec = bodies(400, True, seed=1)
    text_only = bodies(400, False, seed=2)
    start_control_plane(settings, config, wait_s=60)
    compute = LocalCompute(settings.run_dir)
    try:
        artifact = pack_source(ROOT / "src", settings.home / "artifacts")
        env = {"MANGAASSIST_ROOT": str(ROOT), "MANGAASSIST_HOME": str(home), "MANGAASSIST_FAULT": ""}
        status = compute.deploy("intent-model", Revision("r1", artifact, APP, env, 1), timeout_s=300)
        if status.health.value != "healthy":
            raise SystemExit(f"the model endpoint is {status.health.value}: {status.reason}")
        router_port = int(compute.url("intent-model").rsplit(":", 1)[1])
        worker_port = int(status.workers[0].port or 0)
        modes = {
            "router_with_embedding": asyncio.run(fixed_rate(router_port, with_vec, args.rate, args.seconds)),
            "direct_with_embedding": asyncio.run(
                fixed_rate(worker_port, with_vec, args.rate, args.short_seconds)
            ),
            "router_text_only": asyncio.run(
                fixed_rate(router_port, text_only, args.rate, args.short_seconds)
            ),
        }
        ready = json.loads(asyncio.run(_get(worker_port, b"/readyz")).decode())
    finally:
        compute.close()
        stop_control_plane(settings)
    main_mode = modes["router_with_embedding"]["latency_ms"]
    report = {
        "benchmark": "model_endpoint",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],  # a shared machine: say how busy
        "rate_rps": args.rate,
        "model_version": ready.get("model_version"),
        "embedder": ready.get("embedder"),
        "p50_ms": main_mode["p50"],
        "p99_ms": main_mode["p99"],
        "modes": modes,
        "router_added_p50_ms": round(
            main_mode["p50"] - modes["direct_with_embedding"]["latency_ms"]["p50"], 2
        ),
    }
    out = ROOT / "benchmarks" / "results" / "model_endpoint.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"model endpoint {report['model_version']} ({report['embedder']}) at {args.rate:g} req/s:")
        for name, m in modes.items():
            lat = m["latency_ms"]
            print(
                f"  {name:<22} {m['requests']} requests in {m['seconds']}s, errors {m['errors'] or 0}: "
                f"p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms, max {lat['max']} ms"
            )
        print(f"written to {out.relative_to(ROOT)}")
    return 0


async def _get(port: int, path: bytes) -> bytes:
    pool = UpstreamPool("127.0.0.1", port)
    response = await pool.request("GET", path, [], b"", 10.0)
    body = await response.read()
    pool.close()
    return body


if __name__ == "__main__":
    raise SystemExit(main())
