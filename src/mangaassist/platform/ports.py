"""Loopback listening sockets handed to the process that serves them.

A port picked by binding port 0, closed, then bound again by a child process can be taken by
another process in between (the worker then serves nothing, or another test's worker answers for
it). Instead the parent binds and listens, passes the descriptor to the child (``pass_fds``), and
closes its own copy: the port is the child's alone from the start. Used by the local platform's
supervisor (every worker) and by ``chatbot.launcher`` (a chatbot or model endpoint on its own).
"""

from __future__ import annotations

import socket


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    """A listening socket on ``host`` and a port the kernel picks, held until closed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's own sockets
        sock.bind((host, 0))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock
