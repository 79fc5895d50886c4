"""Domain types shared by every layer. No IO happens here."""

from mangaassist.core.artifact import Artifact, sha256_bytes, sha256_file
from mangaassist.core.errors import ConfigError, MangaAssistError, NotFoundError
from mangaassist.core.intents import INTENTS, Intent
from mangaassist.core.verdict import Verdict

__all__ = [
    "INTENTS",
    "Artifact",
    "ConfigError",
    "Intent",
    "MangaAssistError",
    "NotFoundError",
    "Verdict",
    "sha256_bytes",
    "sha256_file",
]
