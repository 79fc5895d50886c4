"""Copies of the widget's source with one change, for drills, tests and the demo.

- ``changed_source(source, dest, label)``: the widget entry exports one more constant naming
  ``label``, so the widget's chunk (and ``loader.js``, which names it) get new hashes while React's
  chunk and the stylesheet keep theirs: a realistic release, what a deploy of a code change uploads;
- ``broken_source(source, dest)``: the widget's module throws when it is evaluated. It typechecks,
  its unit tests pass (they render the component, not the entry module), and the bundle builds: only
  a real browser sees that the widget never appears. CD-05's ``browser-check`` must stop it.
"""

from __future__ import annotations

import re
from pathlib import Path

from mangaassist.delivery.frontend.build import check_source, copy_source

WIDGET_ENTRY = Path("src/widget/index.tsx")
BROKEN_LINE = "throw new Error('MangaAssist: a broken bundle (CD-05 drill)');\n"
_LABEL = re.compile(r"^[A-Za-z0-9 ._:-]{1,80}$")


def _copy(source: Path, dest: Path) -> Path:
    copy_source(check_source(source), dest)
    if not (dest / WIDGET_ENTRY).is_file():
        raise FileNotFoundError(f"{source} has no {WIDGET_ENTRY}")
    return dest


def changed_source(source: Path, dest: Path, label: str) -> Path:
    """``source`` copied to ``dest`` with the widget's entry exporting ``BUILD_LABEL = label``."""
    if not _LABEL.match(label):
        raise ValueError(f"label {label!r}: letters, digits, space and ._:- only")
    entry = _copy(source, dest) / WIDGET_ENTRY
    entry.write_text(entry.read_text() + f"\nexport const BUILD_LABEL = '{label}';\n")
    return dest


def broken_source(source: Path, dest: Path) -> Path:
    """``source`` copied to ``dest`` with a widget module that throws when the browser loads it."""
    entry = _copy(source, dest) / WIDGET_ENTRY
    entry.write_text(entry.read_text() + "\n" + BROKEN_LINE)
    return dest
