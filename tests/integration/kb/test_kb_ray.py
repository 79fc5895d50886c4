"""The Ray executor of the embed stage (``kb build --executor ray``), on a real local Ray: the same
vectors, version and gates as in-process (hashing and the real MiniLM), servers on loopback only,
nothing left running after, a killed worker fails the build clearly and keeps what was done, and bad
settings (executor, address, a missing ``ray``) are refused before anything is written."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mangaassist.core.errors import ConfigError
from mangaassist.delivery.pipelines import kb
from mangaassist.platform.embeddings import HashingEmbedder
from mangaassist.platform.ray_embedding import EmbedderSpec, RayEmbedExecutor, RayExecutorError
from tests.integration.kb.conftest import HASHING_FLOORS, KB, copy_sources

RAY_PROCESSES = ("gcs_server", "raylet", "ray::")
NO_FLOORS = {"recall_at_5": 0.0, "mrr": 0.0, "ndcg_at_10": 0.0, "tolerance": 1.0, "p95_ms": 1000.0}


def small_sources(dest: Path, documents: int = 3, series: int = 8) -> Path:
    """A few dozen chunks: the first ``documents`` knowledge pages and ``series`` catalog rows."""
    root = copy_sources(dest)
    for n, page in enumerate(sorted((root / "knowledge").glob("*.md"))):
        if n >= documents:
            page.unlink()
    catalog = root / "data" / "catalog.jsonl"
    catalog.write_text(
        "".join(catalog.read_text(encoding="utf-8").splitlines(True)[:series]), encoding="utf-8"
    )
    return root


def descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid``: its command line."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        commands[int(entry.name)] = cmdline.strip() or stat.split("(", 1)[1].split(")", 1)[0]
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found[child] = commands[child]
                frontier.append(child)
    return found


def ray_processes() -> dict[int, str]:
    return {p: c for p, c in descendants(os.getpid()).items() if any(r in c for r in RAY_PROCESSES)}


def wait_until_gone(seconds: float = 60.0) -> dict[int, str]:
    deadline = time.monotonic() + seconds
    left = ray_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = ray_processes()
    return left


def listening(pids: set[int]) -> list[tuple[int, ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """(pid, address, port) of every TCP socket the processes listen on (from /proc)."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    out = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            hexaddr, hexport = fields[1].split(":")
            raw = bytes.fromhex(hexaddr)
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            address = ipaddress.IPv6Address(words) if v6 else ipaddress.IPv4Address(words)
            out.append((inodes[fields[9]], address, int(hexport, 16)))
    return out


def is_loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def digest(ws: kb.Workspace, version: str) -> str:
    """sha256 of a version's rows: chunk id, content hash and the vector's bytes, by chunk id."""
    h = hashlib.sha256()
    for r in sorted(ws.index.records(version), key=lambda r: r.chunk_id):
        h.update(f"{r.chunk_id}\0{r.content_hash}\0".encode())
        h.update(np.asarray(r.vector, dtype=np.float32).tobytes())
    return h.hexdigest()


def build_both(tmp_path: Path, root: Path, **params: Any) -> dict[str, Any]:
    """The same sources built in-process and on a local Ray, each into its own state directory."""
    out: dict[str, Any] = {}
    for executor in ("inprocess", "ray"):
        base = KB(root, tmp_path / f"home-{executor}")
        base.home.mkdir(parents=True, exist_ok=True)
        run = base.build(executor=executor, **params)
        assert run.state.value == "succeeded", run.reason
        embed = base.step(run, "embed").output
        plan = base.step(run, "plan").output
        ws = kb.Workspace(base.params(**params))
        out[executor] = {"plan": plan, "embed": embed, "digest": digest(ws, plan["target"]), "ws": ws}
    return out


def test_hashing_build_on_ray_equals_in_process(tmp_path: Path) -> None:
    root = copy_sources(tmp_path / "repo")
    both = build_both(tmp_path, root, embedder="hashing", batch_size=16, thresholds=HASHING_FLOORS)
    local, ray = both["inprocess"], both["ray"]
    assert ray["plan"]["target"] == local["plan"]["target"]
    assert ray["embed"]["embedded"] == local["embed"]["embedded"] == local["plan"]["chunks"] > 400
    assert ray["digest"] == local["digest"]  # every row, vector bytes included
    assert ray["embed"]["executor"] == "ray" and local["embed"]["executor"] == "inprocess"
    summary = ray["embed"]["ray"]
    assert summary["address"] == "local" and summary["workers"] == summary["cluster_cpus"] == os.cpu_count()
    assert ray["embed"]["stages"]["ray_start_s"] > 0
    assert wait_until_gone() == {}


def test_minilm_on_ray_gives_the_in_process_vectors(tmp_path: Path) -> None:
    """The real model (torch) on a few dozen chunks: bit-equal vectors, the same version and digest."""
    root = small_sources(tmp_path / "repo")
    both = build_both(tmp_path, root, runtime="torch", thresholds=NO_FLOORS)
    local, ray = both["inprocess"], both["ray"]
    assert 20 <= local["plan"]["chunks"] <= 80
    assert ray["plan"]["target"] == local["plan"]["target"]
    assert ray["plan"]["model"] == local["plan"]["model"]
    assert ray["embed"]["embedded"] == local["embed"]["embedded"] == local["plan"]["chunks"]
    assert ray["digest"] == local["digest"]
    hashes = [c.content_hash for c in local["ws"].chunks()]
    mine = local["ws"].cache.get_many(local["ws"].model, hashes)
    theirs = ray["ws"].cache.get_many(ray["ws"].model, hashes)
    assert all(np.array_equal(mine[h], theirs[h]) for h in hashes)
    stages = ray["embed"]["stages"]
    assert stages["forward_s"] > 0 and stages["tokens"] > 0  # the workers' figures came back
    assert ray["embed"]["runtime"] == "torch"
    assert wait_until_gone() == {}


def test_local_ray_listens_on_loopback_only_and_stops(tmp_path: Path) -> None:
    import ray  # imported before the executor sets up loopback: it must still get loopback only

    assert not ray.is_initialized()
    executor = RayEmbedExecutor(EmbedderSpec("hashing"), "hashing-v1@256")
    handler = signal.getsignal(signal.SIGTERM)
    with executor:
        processes = ray_processes()
        assert any("gcs_server" in c for c in processes.values())
        assert any("raylet" in c for c in processes.values())
        worker_pids = {w["pid"] for w in executor.workers}
        assert worker_pids <= set(processes)  # the workers run on this machine, under this Ray
        sockets = listening(set(processes))
        assert sockets, "Ray listens on something"
        exposed = [(pid, processes[pid][:60], str(a), port) for pid, a, port in sockets if not is_loopback(a)]
        assert exposed == []
        texts = ["one", "two words", "three words here"]
        got = dict((tuple(rows), m) for rows, m in executor.embed(texts, [[0, 1], [2]]))
        assert np.array_equal(got[(0, 1)], HashingEmbedder().embed(texts[:2]))
        assert np.array_equal(got[(2,)], HashingEmbedder().embed(texts[2:]))
    assert wait_until_gone() == {}
    assert signal.getsignal(signal.SIGTERM) is handler  # ray.init replaced it; put back


class Steps:
    """What the embed loop calls on a step context; SIGKILLs a Ray worker when the first batch is back."""

    def __init__(self) -> None:
        self.killed: int | None = None
        self.messages: list[str] = []

    def progress(self, message: str, fraction: float | None = None) -> None:
        self.messages.append(message)
        if self.killed is None and message.startswith("embedded "):
            runner_pids = [p for p, c in ray_processes().items() if "ray::EmbedWorker" in c]
            assert runner_pids, "the workers are running"
            self.killed = runner_pids[0]
            os.kill(self.killed, signal.SIGKILL)

    def checkpoint(self, name: str) -> None:
        pass


def test_a_dying_worker_fails_the_build_and_keeps_what_was_done(tmp_path: Path) -> None:
    params = {"root": str(copy_sources(tmp_path / "repo")), "home": str(tmp_path / "home")}
    ws = kb.Workspace(
        {**params, "embedder": "hashing", "executor": "ray", "batch_size": 4, "flush_every": 10_000}
    )
    chunks = ws.chunks()
    steps = Steps()
    with pytest.raises(RayExecutorError, match=r"Ray embedding worker \d \(pid \d+ on .*\) failed") as caught:
        ws.embed_with_stages(chunks, steps)  # type: ignore[arg-type]
    assert steps.killed is not None and "cached" in str(caught.value)
    kept = ws.cache.count(ws.model)
    assert 0 < kept < len({c.content_hash for c in chunks})  # flushed on failure, not every 10,000
    assert wait_until_gone() == {}
    again = kb.Workspace({**params, "embedder": "hashing"})
    embedded, hits = again.embed_missing(chunks)
    assert hits == len(chunks) - embedded and embedded == len({c.content_hash for c in chunks}) - kept


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_cluster_fails_the_run_and_writes_nothing(tmp_path: Path) -> None:
    base = KB(copy_sources(tmp_path / "repo"), tmp_path / "home")
    base.home.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{closed_port()}"
    run = base.build(embedder="hashing", executor="ray", ray_address=address, thresholds=HASHING_FLOORS)
    assert run.state.value in ("failed", "rolled_back")  # the embed step failed; nothing to undo
    assert f"Ray address {address}: nothing answers" in (run.reason or "")
    assert base.index.versions() == []
    assert kb.Workspace(base.params(embedder="hashing")).cache.count() == 0


def kb_cli(
    root: Path, home: Path, *args: str, prelude: str = "", environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {**(environ or os.environ), "MANGAASSIST_HOME": str(home), "MANGAASSIST_ROOT": str(root)}
    code = f"{prelude}\nfrom mangaassist.cli.main import main\nmain()"
    return subprocess.run(
        [sys.executable, "-c", code, "kb", *args],
        env=environ,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_kb_build_executor_ray_json(tmp_path: Path) -> None:
    root, home = copy_sources(tmp_path / "repo"), tmp_path / "home"
    result = kb_cli(root, home, "build", "--embedder", "hashing", "--executor", "ray", "--json")
    out = json.loads(result.stdout)  # nothing of Ray's on stdout
    assert out["embed"]["executor"] == "ray" and out["embed"]["ray"]["workers"] == os.cpu_count()
    assert out["embed"]["embedded"] == out["plan"]["chunks"]
    assert out["stages"]["embed"]["ray_start_s"] > 0
    progress = [line for line in result.stderr.splitlines() if " embed: embedded " in line]
    assert progress and progress[-1].split(" embed: embedded ")[1].startswith(
        f"{out['plan']['chunks']}/{out['plan']['chunks']}"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--executor", "gpu"), "--executor 'gpu': expected one of inprocess, ray"),
        (("--address", "auto"), "--address 'auto' needs --executor ray"),
        (
            ("--executor", "ray", "--address", "head node"),
            "Ray address 'head node': expected auto, HOST:PORT",
        ),
        (("--executor", "ray", "--address", "127.0.0.1:CLOSED"), "nothing answers at 127.0.0.1:CLOSED"),
    ],
)
def test_bad_executor_settings_exit_2_and_write_nothing(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    root, home = copy_sources(tmp_path / "repo"), tmp_path / "home"
    port = str(closed_port())
    result = kb_cli(root, home, "build", "--embedder", "hashing", *(a.replace("CLOSED", port) for a in args))
    assert result.returncode == 2, result.stderr
    assert message.replace("CLOSED", port) in result.stderr
    assert not (home / "kb").exists()


def test_without_ray_installed_the_error_names_the_package(tmp_path: Path) -> None:
    root, home = copy_sources(tmp_path / "repo"), tmp_path / "home"
    hide = "import sys; sys.modules['ray'] = None  # as if ray were not installed"
    result = kb_cli(root, home, "build", "--embedder", "hashing", "--executor", "ray", prelude=hide)
    assert result.returncode == 2
    assert "needs the Python package ray (ray==2.60.0), which is not installed" in result.stderr
    assert not (home / "kb").exists()
    with pytest.raises(ConfigError, match=r"executor='dask': expected one of inprocess, ray"):
        kb.build({"executor": "dask"})


RAY_FIXED_PORTS = ((10002, 19999), (23000, 24000))
"""Ports a Ray head takes by default: its workers' (``--min/max-worker-port``) and the Ray Client's
specific servers (one per connected client, from 23000)."""


def free_port() -> int:
    """A free port for one of the test head's servers, outside every range from which something
    else may take it before the head binds it: the kernel's ephemeral range (any server bound to
    port 0, and the head's own processes bind many, or any outgoing connection's local port: a
    port picked there was once taken by another process within 3 s, and the Ray Client server
    exited with "Address already in use") and Ray's own ranges above."""
    low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    candidates = [
        p
        for p in range(1024, 65536)
        if not low <= p <= high and not any(a <= p <= b for a, b in RAY_FIXED_PORTS)
    ]
    for port in secrets.SystemRandom().sample(candidates, 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port outside {low}-{high} and Ray's ranges {RAY_FIXED_PORTS}")


def test_kb_build_joins_a_running_cluster_and_leaves_it_running(tmp_path: Path) -> None:
    """What a team does with a real cluster, on one machine: ``ray start --head`` (here on loopback,
    two CPUs, its own token, gRPC's fork support off as CD-04 says), then ``kb build --executor
    ray`` with ``--address HOST:PORT`` (the GCS) and with ``--address ray://HOST:PORT`` (the Ray
    Client server). Each gives the in-process version, rows and vector bytes; the build's workers
    run on the cluster and are gone after; the cluster is not stopped by the build."""
    port, client_port = free_port(), free_port()
    environ = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # the cluster on loopback, and the driver with it
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",  # Ray's token authentication, with this test's own token
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    # The head's Ray Client server (the proxier) forks a server per client from a process whose gRPC
    # threads are busy; with gRPC's fork support on (its default) the child restarts gRPC's epoll
    # poller, then closes the poller's descriptor before exec and aborts ("epoll_wait error: Bad
    # file descriptor"): 2 of 10 first connections on this loaded machine, 17 of 300 forks in a
    # plain gRPC process. Off, the child only execs: 0 of 300, and 0 of 24 connections (ADR 0014).
    head_environ = {**environ, "GRPC_ENABLE_FORK_SUPPORT": "0"}
    ray_cli = str(Path(sys.executable).with_name("ray"))
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # Ray's socket paths must stay short
    log = (tmp_path / "head.log").open("w")
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", f"--port={port}", f"--ray-client-server-port={client_port}",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
        env=head_environ, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    cluster: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", client_port), timeout=1).close()
                break
            except OSError:
                assert head.poll() is None, (tmp_path / "head.log").read_text()
                time.sleep(0.5)
        assert any("gcs_server" in c for c in descendants(head.pid).values())
        root = copy_sources(tmp_path / "repo")
        local = KB(root, tmp_path / "home-inprocess")
        local.home.mkdir(parents=True, exist_ok=True)
        run = local.build(embedder="hashing", thresholds=HASHING_FLOORS)
        assert run.state.value == "succeeded", run.reason
        target = local.step(run, "plan").output["target"]
        expected = digest(kb.Workspace(local.params(embedder="hashing")), target)
        floors = [f"--threshold={k}={v}" for k, v in HASHING_FLOORS.items()]
        for n, address in enumerate((f"127.0.0.1:{port}", f"ray://127.0.0.1:{client_port}")):
            args = ("--embedder", "hashing", "--executor", "ray", "--address", address, "--json", *floors)
            home = tmp_path / f"home-{n}"
            result = kb_cli(root, home, "build", *args, environ=environ)
            assert result.stdout, result.stderr[-3000:]
            out = json.loads(result.stdout)
            assert out["state"] == "succeeded", out["reason"]
            assert out["embed"]["ray"]["address"] == address and out["embed"]["ray"]["workers"] == 2
            assert out["embed"]["embedded"] == out["plan"]["chunks"]
            assert out["plan"]["target"] == target  # the in-process version
            ws = kb.Workspace({"root": str(root), "home": str(home), "embedder": "hashing"})
            assert digest(ws, target) == expected  # every row, vector bytes included
            assert head.poll() is None  # the cluster is still up
            cluster.update(descendants(head.pid))
            deadline = time.monotonic() + 60  # ray.kill is asynchronous; a loaded machine is slow
            while (workers := [c for c in descendants(head.pid).values() if "ray::EmbedWorker" in c]) and (
                time.monotonic() < deadline
            ):
                time.sleep(0.5)
            assert workers == []  # the build's actors were killed when it finished
    finally:
        cluster.update(descendants(head.pid))
        head.terminate()
        head.wait(timeout=60)
        log.close()
    deadline = time.monotonic() + 60
    while (left := [p for p in cluster if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == []  # stopping the head stopped every process it started
    shutil.rmtree(temp, ignore_errors=True)


def test_a_client_server_that_did_not_start_names_the_head_setting() -> None:
    """What ``ray.init("ray://...")`` raises (Ray 2.60's text, the proxier's traceback inside) when the
    head's Ray Client server could not start the client's own server: the error names the head's
    log and the setting that stops it (CD-04); other connection failures keep the token hint."""
    from mangaassist.platform import ray_embedding

    failed = ConnectionAbortedError(
        "Initialization failure from server:\nTraceback (most recent call last):\n"
        '  File ".../ray/util/client/server/proxier.py", line 772, in Datapath\n'
        "RuntimeError: Starting Ray client server failed. "
        "See ray_client_server_23000.err for detailed logs.\n"
    )
    hint = ray_embedding._connect_hint("ray://head:10001", failed)
    assert "See ray_client_server_23000.err" in hint and "GRPC_ENABLE_FORK_SUPPORT=0" in hint
    assert "RAY_AUTH_MODE=token" in ray_embedding._connect_hint("head:6379", ConnectionError("timed out"))
    assert "GRPC" not in ray_embedding._connect_hint("ray://head:10001", ConnectionError("timed out"))
    assert ray_embedding._connect_hint(None, failed) == ""


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
