"""The config pipeline's evaluation run: the chatbot answers the regression suites twice.

``python -m mangaassist.chatbot.evaluation REQUEST.json`` (started by ``delivery/pipelines/config.py``
in a process of its own, so the deploy never loads the model and the embedder) loads the chatbot
runtime once (the embedder of
``MANGAASSIST_EMBEDDER``), then answers every case of every suite ``runs`` times, each in a new
session, once with the ``live`` profiles and once with the ``candidate`` ones, and prints on stdout
``{"live": {"CASE#CHECK": pass rate}, "candidate": {...}}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import uuid
from pathlib import Path
from typing import Any

from mangaassist.chatbot.config import ChatbotConfig
from mangaassist.chatbot.config_client import ActiveConfig
from mangaassist.chatbot.service import ChatService, Runtime
from mangaassist.chatbot.settings import Settings
from mangaassist.core.configspec import Reply, check_passes, version_of


def active_config(contents: dict[str, Any]) -> ActiveConfig:
    versions = {name: version_of(name, content) for name, content in contents.items()}
    return ActiveConfig(
        ChatbotConfig.model_validate(contents.get("runtime") or {}),
        versions,
        contents.get("prompts"),
        contents.get("guardrails"),
        contents.get("flags"),
    )


async def evaluate(
    service: ChatService, active: ActiveConfig, suites: list[dict[str, Any]]
) -> dict[str, float]:
    rates: dict[str, float] = {}
    for suite in suites:
        for case in suite["cases"]:
            runs = int(case.get("runs", 1))
            passed = [0] * len(case["checks"])
            for _ in range(runs):
                session = f"eval-{uuid.uuid4().hex[:12]}"
                for earlier in case.get("history") or []:
                    await service.chat(session, earlier, None, active=active)
                result = await service.chat(session, case["message"], None, active=active)
                reply = Reply(
                    result.answer, result.intent, [s.title for s in result.sources], result.fallback
                )
                for i, check in enumerate(case["checks"]):
                    passed[i] += check_passes(check, reply)
            for i in range(len(case["checks"])):
                rates[f"{case['id']}#{i}"] = passed[i] / runs
    return rates


async def _main(request: dict[str, Any]) -> dict[str, Any]:
    service = ChatService(Runtime.load(Settings.from_env()))
    try:
        return {
            "live": await evaluate(service, active_config(request["live"]), request["suites"]),
            "candidate": await evaluate(service, active_config(request["candidate"]), request["suites"]),
        }
    finally:
        await service.aclose()


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    request = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    print(json.dumps(asyncio.run(_main(request))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
