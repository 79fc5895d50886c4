"""Regular expressions that arrive as configuration, compiled with a linear-time engine.

Guardrail patterns and blocked topics come from config profiles (CD-06) and run on every customer
message. With Python's backtracking ``re``, a pattern such as ``(a+)+$`` takes seconds to minutes on
a few dozen characters: one careless edit would hang every worker. They are compiled with RE2
(``google-re2``), whose matching time is linear in the input whatever the pattern; what RE2 cannot
run in linear time (backreferences, lookahead and lookbehind) is refused at validation with the
engine's reason, before a deploy. RE2's ``\\d``, ``\\w`` and ``\\b`` are ASCII, where Python's are
Unicode; case-insensitive matching is ``(?i)``.

The chatbot's own built-in patterns (``chatbot.guardrails``) are reviewed code, not configuration,
and stay on ``re``.
"""

from __future__ import annotations

from typing import Protocol

import re2

from mangaassist.core.errors import ConfigError

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the error goes into our message, not onto stderr
_CASELESS = re2.Options()
_CASELESS.log_errors = False
_CASELESS.case_sensitive = False


class Pattern(Protocol):
    """What callers use of a compiled pattern (the subset ``re`` and RE2 share)."""

    def search(self, text: str) -> object | None: ...

    def sub(self, repl: str, text: str) -> str: ...


def compile_linear(pattern: str, where: str = "pattern", *, case_insensitive: bool = False) -> Pattern:
    """``pattern`` compiled for linear-time matching, or a ``ConfigError`` naming ``where`` and why."""
    if not isinstance(pattern, str):
        raise ConfigError(f"{where}: expected a regular expression (text), got {type(pattern).__name__}")
    options = _CASELESS if case_insensitive else _OPTIONS
    try:
        compiled: Pattern = re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        reason = detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
        hint = (
            " (lookaround and backreferences are not accepted: they need backtracking)"
            if "perl operator" in reason or "escape sequence" in reason
            else ""
        )
        raise ConfigError(f"{where}: regular expression not accepted: {reason}{hint}") from None
    return compiled
