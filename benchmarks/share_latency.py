"""Diagnosis: is a revision slower because it is fresh, or because it gets a small share of the traffic?

Two revisions of the *same* code on the real platform (the real chatbot), 50 requests/s of new
conversations through the router, the split moved 95/5 -> 50/50 -> 5/95 -> 95/5; client-side
median and p90 per revision over 30 s each. Run by hand (about 4 minutes):

    python benchmarks/share_latency.py

Writes ``benchmarks/results/share_latency.json``. The finding (docs/pipelines/cd-01-app.md): the
revision with the small share is about 30% slower at the median, whichever it is; this is why a
CD-01 canary is judged against a baseline revision with the candidate's share.
"""

import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mangaassist.delivery.rollout.load import CONVERSATIONS
from rollout_e2e import CONFIG, ROOT, cli

MESSAGES = sorted({m for s in CONVERSATIONS for m in s})


async def load(url, rps, seconds):
    out = []
    async with httpx.AsyncClient(timeout=30) as client:
        tasks = []
        start = time.perf_counter()

        async def one(msg):
            sid = uuid.uuid4().hex
            t = time.perf_counter()
            r = await client.post(
                f"{url}/v1/chat", json={"session_id": sid, "message": msg}, headers={"X-Session-Id": sid}
            )
            out.append(
                (r.headers.get("X-MangaAssist-Revision"), (time.perf_counter() - t) * 1000, r.status_code)
            )

        for i in range(int(rps * seconds)):
            d = start + i / rps - time.perf_counter()
            if d > 0:
                await asyncio.sleep(d)
            tasks.append(asyncio.create_task(one(random.choice(MESSAGES))))
        await asyncio.gather(*tasks)
    return out


def summary(rows):
    by = {}
    for rev, ms, _st in rows:
        by.setdefault(rev, []).append(ms)
    return {
        rev: {
            "n": len(v),
            "p50": round(statistics.median(v), 1),
            "p90": round(sorted(v)[int(0.9 * len(v))], 1),
        }
        for rev, v in by.items()
    }


def main():
    tmp = Path(tempfile.mkdtemp(prefix="diag-"))
    (tmp / "mangaassist.toml").write_text(CONFIG.format(src=ROOT / "src", budget=1500, load_rps=10, load_s=3))
    (tmp / "policy.yaml").write_text("environments:\n  dev: {}\n")
    for name in ("pyproject.toml", "src", "data", "knowledge", "ml", "config"):
        (tmp / name).symlink_to(ROOT / name)
    home = tmp / "home"
    home.mkdir()
    for cached in ("models", "cache"):
        if (ROOT / ".mangaassist" / cached).is_dir():
            shutil.copytree(ROOT / ".mangaassist" / cached, home / cached)
    env = {
        **os.environ,
        "MANGAASSIST_PLATFORM_CONFIG": str(tmp / "mangaassist.toml"),
        "MANGAASSIST_HOME": str(home),
        "MANGAASSIST_ROOT": str(tmp),
        "MANGAASSIST_POLICY": str(tmp / "policy.yaml"),
        "MANGAASSIST_STATE_URL": "",
        "MANGAASSIST_FAULT": "",
        "HF_HUB_OFFLINE": "1",
    }
    assert cli(env, "up", timeout=400).returncode == 0
    try:
        url = json.loads(cli(env, "status", "--json").stdout)["services"]["chatbot"]["url"]
        d = cli(env, "revisions", "deploy", "r2", "--json")
        assert d.returncode == 0, d.stderr
        asyncio.run(load(url, 20, 5))  # warm both a little (r1 only: weight 0 for r2)
        results = []
        for split in (("r1=95", "r2=5"), ("r1=50", "r2=50"), ("r1=5", "r2=95"), ("r1=95", "r2=5")):
            assert cli(env, "revisions", "weights", *split).returncode == 0
            rows = asyncio.run(load(url, 50, 30))
            results.append({"split": " ".join(split), "by_revision": summary(rows)})
            print(split, json.dumps(summary(rows)), flush=True)
        out = ROOT / "benchmarks" / "results" / "share_latency.json"
        out.write_text(json.dumps({"rps": 50, "seconds_per_split": 30, "splits": results}, indent=2) + "\n")
        print(f"wrote {out}")
    finally:
        cli(env, "down")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
