"""The alias swaps while a real chatbot process answers 50 requests/s: nothing fails, answers move
from the old version to the new one once and for all, and cite the version that produced them."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from mangaassist.chatbot.launcher import ChatbotProcess
from mangaassist.delivery.engine.model import RunState
from mangaassist.platform.vector import LIVE_ALIAS
from tests.conftest import server_env
from tests.integration.kb.conftest import KB, REPO
from tests.integration.kb.test_kb_pipeline import edit_returns

RATE = 50
SECONDS = 8.0


async def drive(url: str, results: list[tuple[float, int, str, str]]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:

        async def one(n: int) -> None:
            try:
                r = await client.post(
                    "/v1/chat",
                    json={"session_id": f"load-{n}", "message": "What is the return window?"},
                )
                body = r.json() if r.status_code == 200 else {}
                results.append(
                    (
                        time.monotonic(),
                        r.status_code,
                        body.get("versions", {}).get("index", ""),
                        body.get("answer", ""),
                    )
                )
            except httpx.HTTPError as exc:
                results.append((time.monotonic(), 0, "", repr(exc)))

        tasks = []
        start = time.monotonic()
        for n in range(int(RATE * SECONDS)):
            await asyncio.sleep(max(0.0, start + n / RATE - time.monotonic()))
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)


def test_alias_swap_under_load_drops_nothing(make_kb: Callable[[], KB], state_home: Path) -> None:
    env = make_kb()
    assert env.build().state is RunState.SUCCEEDED
    old = env.index.resolve(LIVE_ALIAS)
    for cached in ("models", "cache"):  # the intent model and catalog vectors of the session, if any
        if (state_home / cached).exists():
            shutil.copytree(state_home / cached, env.home / cached, dirs_exist_ok=True)
    server_environment = server_env(env.home, MANGAASSIST_KB_REFRESH_SECONDS="0.5")
    server_environment["MANGAASSIST_ROOT"] = str(REPO)
    with ChatbotProcess(env=server_environment, log_path=env.home / "chatbot.log") as bot:
        assert bot.readiness["versions"]["index"] == old
        edit_returns(env)
        outcome: list[RunState] = []

        def swap() -> None:
            time.sleep(2.0)
            outcome.append(env.build().state)

        builder = threading.Thread(target=swap)
        builder.start()
        results: list[tuple[float, int, str, str]] = []
        asyncio.run(drive(bot.url, results))
        builder.join()

    new = env.index.resolve(LIVE_ALIAS)
    assert outcome == [RunState.SUCCEEDED] and new != old
    assert len(results) == int(RATE * SECONDS)
    failed = [r for r in results if r[1] != 200]
    assert failed == []
    versions = [v for _, _, v, _ in sorted(results)]
    assert versions[0] == old and versions[-1] == new
    first_new = versions.index(new)
    assert set(versions[first_new:]) == {new}  # switched once, never back
    for _, _, version, answer in results:
        assert ("90 days" in answer) == (version == new), (version, answer)
