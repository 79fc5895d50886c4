"""The chatbot in the foreground under uvicorn (``python -m mangaassist.chatbot.serve``).

One implementation: the CLI's ``serve`` command calls ``load_app`` and ``serve``, and
``chatbot.launcher.ChatbotProcess`` starts this module in a child process (the chatbot layer never
goes through the CLI). Settings come from the environment (``chatbot.settings.Settings.from_env``).
A settings or start-up error (``MangaAssistError``) raised before uvicorn starts prints one line on
stderr and exits with status 2.

``--fd N`` serves a listening socket the parent bound and passed down (``platform.ports``): no port
is picked, freed and bound again, so no other process can take it in between. ``--app
MODULE:FACTORY`` serves another app of this layer (the model endpoint) the same way.
"""

from __future__ import annotations

import argparse
import importlib
import socket
import sys

from fastapi import FastAPI

from mangaassist.core.errors import MangaAssistError

DEFAULT_PORT = 8000
DEFAULT_HOST = "127.0.0.1"
DEFAULT_LOG_LEVEL = "info"


def load_app() -> FastAPI:
    """The chatbot's ASGI app for the settings of the environment (raises ``MangaAssistError``)."""
    from mangaassist.chatbot.app import create_app
    from mangaassist.chatbot.settings import Settings

    return create_app(Settings.from_env())


def serve(
    application: FastAPI,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    log_level: str = DEFAULT_LOG_LEVEL,
    fd: int | None = None,
) -> None:
    """Run ``application`` under uvicorn until it is stopped (Ctrl-C, SIGTERM); on the inherited
    listening socket ``fd`` when given, else bound to ``host:port``."""
    import uvicorn

    if fd is None:
        uvicorn.run(application, host=host, port=port, log_level=log_level)
        return
    sock = socket.socket(fileno=fd)
    config = uvicorn.Config(application, log_level=log_level, access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def _factory(path: str) -> FastAPI:
    """``module:callable`` of this layer, called with no argument (an app factory)."""
    module, _, name = path.partition(":")
    if not module.startswith("mangaassist.chatbot.") or not name:
        raise MangaAssistError(f"--app {path!r}: expected mangaassist.chatbot.MODULE:FACTORY")
    made = getattr(importlib.import_module(module), name)()
    if not isinstance(made, FastAPI):
        raise MangaAssistError(f"--app {path!r} did not make an ASGI app")
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mangaassist.chatbot.serve", description="Run the chatbot in the foreground."
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="Port to listen on.")
    parser.add_argument("--host", default=DEFAULT_HOST, help="Address to bind; loopback by default.")
    parser.add_argument("--log-level", default=DEFAULT_LOG_LEVEL, help="uvicorn log level.")
    parser.add_argument("--fd", type=int, default=None, help="Serve this inherited listening socket.")
    parser.add_argument("--app", default=None, help="Another app factory (mangaassist.chatbot.M:F).")
    args = parser.parse_args(argv)
    try:
        application = _factory(args.app) if args.app else load_app()
    except MangaAssistError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve(application, host=args.host, port=args.port, log_level=args.log_level, fd=args.fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
