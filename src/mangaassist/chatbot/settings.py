"""Settings of one chatbot process, read from the environment once at start-up.

Every variable is optional; defaults suit ``mangaassist serve`` from a checkout.

==========================  ===================================================================
``MANGAASSIST_ROOT``        repository root holding ``data/``, ``knowledge/``, ``ml/``, ``config/``
``MANGAASSIST_HOME``        state directory (tables, caches, models); default ``ROOT/.mangaassist``
``MANGAASSIST_REVISION``    the revision name this process reports; default ``dev``
``MANGAASSIST_CONFIG``      chatbot config file; default ``ROOT/config/chatbot.yaml``
``MANGAASSIST_EMBEDDER``    ``minilm`` (default) or ``hashing`` (fast, for unit tests only)
``MANGAASSIST_FAULT``       fault injection for drills, e.g. ``error_rate=0.3,latency_ms=400``
``MANGAASSIST_TABLES``      SQLite file of the tables; default ``HOME/tables.sqlite3``
``MANGAASSIST_INTENT_URL``  the intent model endpoint (``chatbot.model_server``, usually its
                            router); unset or empty: the model runs in process
==========================  ===================================================================

``MANGAASSIST_INTENT_TIMEOUT_MS`` is the deadline of one call to that endpoint (default 300), after
which the chatbot answers with its in-process model. ``MANGAASSIST_MODEL_PACKAGE`` names the model
package (``intent.save_package``) to load as that in-process model (default: the model trained from
``ml/intents`` and cached under ``HOME/models``); the model endpoint reads the same settings and serves
that package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mangaassist.core.errors import ConfigError
from mangaassist.platform.settings import find_root, state_home

__all__ = ["Settings", "find_root"]


@dataclass(frozen=True)
class Settings:
    root: Path
    home: Path
    revision: str
    config_path: Path
    embedder: str
    fault: str
    tables_path: Path
    intent_url: str | None = None
    """The model endpoint to ask (``MANGAASSIST_INTENT_URL``); None: classify in process."""
    intent_timeout_s: float = 0.3

    @property
    def catalog_path(self) -> Path:
        return self.root / "data" / "catalog.jsonl"

    @property
    def orders_path(self) -> Path:
        return self.root / "data" / "orders.jsonl"

    @property
    def knowledge_dir(self) -> Path:
        return self.root / "knowledge"

    @property
    def intents_dir(self) -> Path:
        return self.root / "ml" / "intents"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @classmethod
    def from_env(cls, root: Path | None = None) -> Settings:
        root = root or find_root()
        home = state_home(root)
        embedder = os.environ.get("MANGAASSIST_EMBEDDER", "minilm")
        if embedder not in ("minilm", "hashing"):
            raise ConfigError(f"MANGAASSIST_EMBEDDER={embedder!r}: expected 'minilm' or 'hashing'")
        return cls(
            root=root,
            home=home,
            revision=os.environ.get("MANGAASSIST_REVISION", "dev"),
            config_path=Path(os.environ.get("MANGAASSIST_CONFIG") or root / "config" / "chatbot.yaml"),
            embedder=embedder,
            fault=os.environ.get("MANGAASSIST_FAULT", ""),
            tables_path=Path(os.environ.get("MANGAASSIST_TABLES") or home / "tables.sqlite3"),
            intent_url=os.environ.get("MANGAASSIST_INTENT_URL") or None,
            intent_timeout_s=_intent_timeout(os.environ.get("MANGAASSIST_INTENT_TIMEOUT_MS")),
        )


def _intent_timeout(raw: str | None) -> float:
    """``MANGAASSIST_INTENT_TIMEOUT_MS`` in seconds (default 300 ms); a clear error when malformed."""
    if not raw:
        return 0.3
    try:
        ms = float(raw)
    except ValueError:
        raise ConfigError(f"MANGAASSIST_INTENT_TIMEOUT_MS={raw!r}: expected milliseconds, e.g. 300") from None
    if not 1 <= ms <= 60_000:
        raise ConfigError(f"MANGAASSIST_INTENT_TIMEOUT_MS={raw!r}: expected 1..60000 milliseconds")
    return ms / 1000
