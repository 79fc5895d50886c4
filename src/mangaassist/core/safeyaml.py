"""YAML that people and tools hand us, read without trusting it.

Every file kind the delivery system reads as YAML (config profiles, ``policy.yaml``, SLO specs,
migrations, model and knowledge-base settings) goes through ``text_of`` and ``SafeLoader`` here:

* **size**: more than ``MAX_BYTES`` (1 MiB; our largest file is a few kilobytes) is refused before
  parsing;
* **text**: bytes that are not UTF-8, or that hold a NUL or other control characters, are refused
  as "not a text file" (a binary file used to end in a traceback);
* **aliases**: YAML anchors and aliases are refused (``&x`` / ``*x``). None of our formats needs
  them, and an alias bomb (a billion laughs: nine levels of ten aliases each) expands a few hundred
  bytes into gigabytes when the document is built. Refusing them is decided while composing, at the
  first alias, in microseconds;
* **depth**: nesting deeper than ``MAX_DEPTH`` (64) is refused (a deep document exhausts the stack).

Every refusal is a ``ConfigError`` naming the file and, where there is one, the line. The loader
keeps PyYAML's safe constructors, so no Python object is ever built from a tag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mangaassist.core.errors import ConfigError

MAX_BYTES = 1 << 20
"""The largest YAML file read (1 MiB)."""
MAX_DEPTH = 64
"""The deepest nesting of mappings and sequences accepted."""
_ALLOWED_CONTROLS = frozenset("\t\n\r")


def text_of(data: bytes, where: str, *, max_bytes: int = MAX_BYTES) -> str:
    """``data`` as text, or a ``ConfigError`` naming ``where``: too large, not UTF-8, or binary."""
    if len(data) > max_bytes:
        raise ConfigError(f"{where}: {len(data):,} bytes, over the limit of {max_bytes:,} for a YAML file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{where}:{line}: not a text file (not UTF-8 at byte {exc.start})") from None
    bad = next((i for i, ch in enumerate(text) if ch < " " and ch not in _ALLOWED_CONTROLS), None)
    if bad is not None:
        line = text.count("\n", 0, bad) + 1
        raise ConfigError(f"{where}:{line}: not a text file (control character {ord(text[bad]):#04x})")
    return text


class SafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses anchors, aliases and deep nesting (module docstring)."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{event.anchor}) are not accepted", event.start_mark
            )
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if getattr(event, "anchor", None):
            raise yaml.composer.ComposerError(
                None, None, f"anchors (&{event.anchor}) are not accepted", event.start_mark
            )
        depth = getattr(self, "_depth", 0)
        if depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark
            )
        self._depth = depth + 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth = depth


def compose(text: str, where: str, loader: type[SafeLoader] = SafeLoader) -> yaml.Node | None:
    """The node tree of ``text`` (line numbers kept), or a ``ConfigError`` naming file and line."""
    try:
        return yaml.compose(text, Loader=loader)
    except yaml.YAMLError as exc:
        raise _error(exc, where) from None


def load(text: str, where: str, loader: type[SafeLoader] = SafeLoader) -> Any:
    """The data of ``text``, or a ``ConfigError`` naming file and line (``loader``: a subclass with
    more constructors, e.g. one that records line numbers)."""
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise _error(exc, where) from None


def load_bytes(data: bytes, where: str) -> Any:
    """``text_of`` then ``load``: what a reader of an untrusted file calls."""
    return load(text_of(data, where), where)


def load_file(path: Path) -> Any:
    """``load_bytes`` of the file at ``path``; one it cannot read is a ``ConfigError`` naming it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    return load_bytes(data, str(path))


def _error(exc: yaml.YAMLError, where: str) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = f":{mark.line + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return ConfigError(f"{where}{line}: not valid YAML: {problem}")
