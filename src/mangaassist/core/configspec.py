"""The contract between the config profiles (CD-06) and the chatbot that reads them. No IO.

Both sides import this module: the chatbot renders templates and reads flags by these names; the
config pipeline's validation gate checks the profiles against the same lists, and its evaluation
gate scores answers with ``check_passes``.

- ``PROFILES``: the profiles under ``config/`` (``NAME.yaml``, schema ``schemas/NAME.schema.json``).
- ``PROVIDED_VARIABLES``: what a prompt template may use; ``REQUIRED_VARIABLES`` every template must.
- ``FLAGS_READ``: the flags the chatbot's code reads; the ``flags`` profile must define each.
- ``estimate_tokens``: the budget check's tokenizer (4 characters a token, as OpenAI's rule of thumb;
  the local composer has no tokenizer and the budget guards hosted models).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PROFILES: tuple[str, ...] = ("runtime", "prompts", "guardrails", "flags")

PROVIDED_VARIABLES: dict[str, str] = {
    "answer": "the grounded answer the generator wrote",
    "sources": "titles of the documents or series the answer comes from, comma-separated",
    "lead": "the handler's one-line lead",
    "facts": "the retrieved facts, one per line",
    "message": "the customer's message (PII masked)",
    "intent": "the recognised intent",
    "store": "the store's name",
}
REQUIRED_VARIABLES: frozenset[str] = frozenset({"answer"})
STORE_NAME = "MangaAssist"

FLAGS_READ: tuple[str, ...] = ("handoff-offer",)
"""``handoff-offer``: a fallback answer also offers a person (context: userId = customer,
sessionId = session)."""

SAMPLE_VALUES: dict[str, str] = {
    "answer": "x" * 600,
    "sources": "Returns policy, Shipping policy, Payment methods",
    "lead": "x" * 120,
    "facts": "x" * 600,
    "message": "x" * 400,
    "intent": "policy_question",
    "store": STORE_NAME,
}
"""Worst-case-ish sizes used to check the token budget of a rendered prompt."""


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def template_fields(text: str) -> list[str]:
    """The ``{names}`` a template uses, in order; raises ValueError on malformed braces."""
    names = []
    for _, field, spec, conv in string.Formatter().parse(text):
        if field is None:
            continue
        if not field.isidentifier() or spec or conv:
            raise ValueError(f"{{{field}}} is not a plain variable")
        names.append(field)
    return names


def render_template(text: str, values: Mapping[str, str]) -> str:
    return text.format_map(dict(values))


# -- evaluation checks ------------------------------------------------------------------------------

CHECK_TYPES: tuple[str, ...] = (
    "contains",
    "not_contains",
    "regex",
    "intent_equals",
    "cites_source",
    "max_length",
    "valid_json",
)


@dataclass(frozen=True)
class Reply:
    """What the evaluation gate sees of one answer."""

    answer: str
    intent: str
    sources: list[str]
    fallback: bool


_CITATION = re.compile(r"^\s*Sources?:\s*(.+)$", re.MULTILINE | re.IGNORECASE)


def cites(answer: str, sources: list[str]) -> bool:
    """Whether the answer's citation line (``Sources: ...``) names one of its sources."""
    cited = " ".join(m.group(1).lower() for m in _CITATION.finditer(answer))
    return any(s and s.lower() in cited for s in sources)


def check_passes(check: Mapping[str, Any], reply: Reply) -> bool:
    kind = check["type"]
    value = check.get("value")
    if kind == "contains":
        return str(value).lower() in reply.answer.lower()
    if kind == "not_contains":
        return str(value).lower() not in reply.answer.lower()
    if kind == "regex":
        return re.search(str(value), reply.answer) is not None
    if kind == "intent_equals":
        return reply.intent == str(value)
    if kind == "cites_source":
        return cites(reply.answer, reply.sources)
    if kind == "max_length":
        return len(reply.answer) <= int(str(value))
    if kind == "valid_json":
        try:
            json.loads(reply.answer)
        except ValueError:
            return False
        return True
    raise ValueError(f"unknown check type {kind!r}")


# -- versions ---------------------------------------------------------------------------------------


def canonical(content: Any) -> bytes:
    """The bytes a version is the digest of: sorted keys, no spaces, UTF-8."""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def version_of(profile: str, content: Any) -> str:
    """``PROFILE-<12 hex of sha256>``: the same content is the same version wherever computed."""
    return f"{profile}-{hashlib.sha256(canonical(content)).hexdigest()[:12]}"
