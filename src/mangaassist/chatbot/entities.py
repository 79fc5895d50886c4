"""Entities found in a message: catalog titles, authors, order ids.

Used by handlers (what to look up) and by the intent model, which appends ``EntitySignals``
indicator features to the sentence embedding. An embedding alone does not know that "Tomie" or
"Dandadan" are manga: without the title feature, one in four bare title queries ("got any tomie")
was classified as chit-chat or out of scope.
"""

from __future__ import annotations

import hashlib
import random
import re

from mangaassist.chatbot.catalog import Catalog, find_format, find_volume

_ORDER_ID = re.compile(
    r"\bMA[-\s]?(\d{6})\b|#\s?(\d{6})\b|\border\s*(?:number|no\.?|id|num)?\s*[:#]?\s*(\d{6})\b|\b(100\d{3})\b",
    re.IGNORECASE,
)


_FOLLOW_UP = re.compile(r"\b(it|its|that one|this one|that series|this series|the series|them|those)\b", re.I)


def resolve_follow_up(text: str, current_series: str | None, catalog: Catalog) -> str:
    """``text`` made self-contained using the conversation's current series, when it is a follow-up.

    "is volume 2 in stock?" after a question about One Piece becomes "One Piece: is volume 2 in
    stock?". A message that names a title of its own, or has no follow-up cue (a volume, a format,
    a pronoun), is returned unchanged.
    """
    series = catalog.by_id.get(current_series or "")
    if series is None or catalog.title_spans(text):
        return text
    if find_volume(text) is None and find_format(text) is None and not _FOLLOW_UP.search(text):
        return text
    return f"{series.title}: {text}"


def find_order_id(text: str) -> str | None:
    """The order id in ``text`` in canonical form (``MA-100001``), or None."""
    m = _ORDER_ID.search(text)
    if not m:
        return None
    return "MA-" + next(g for g in m.groups() if g)


class EntitySignals:
    """Indicator features for the intent model: [title named, author named, order id present]."""

    VERSION = "entities-v1"

    def __init__(self, catalog: Catalog, weight: float = 0.5) -> None:
        self.catalog = catalog
        self.weight = weight
        names = "\n".join(
            sorted(f"{s.id}|{s.title}|{s.author}|{'|'.join(s.aliases)}" for s in catalog.series)
        )
        self.digest = hashlib.sha256(f"{self.VERSION}\n{weight}\n{names}".encode()).hexdigest()

    def features(self, text: str) -> list[float]:
        return [
            self.weight * bool(self.catalog.title_spans(text)),
            self.weight * bool(self.catalog.find_authors(text)),
            self.weight * (find_order_id(text) is not None),
        ]

    def swap_title(self, text: str, rng: random.Random) -> str | None:
        """``text`` with its first exactly named title replaced by another random title, or None.

        Training on such copies teaches the model that which title is named does not change the
        intent.
        """
        spans = [m.span for m in self.catalog.title_spans(text) if m.span is not None]
        if not spans:
            return None
        start, end = spans[0]
        other = rng.choice(self.catalog.series).title
        return text[:start] + (other if rng.random() < 0.5 else other.lower()) + text[end:]
