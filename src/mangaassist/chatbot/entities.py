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

from mangaassist.chatbot.catalog import Catalog, asked_facts, find_format, find_volume

_ORDER_ID = re.compile(
    r"\bMA[-\s]?(\d{6})\b|#\s?(\d{6})\b|\border\s*(?:number|no\.?|id|num)?\s*[:#]?\s*(\d{6})\b|\b(100\d{3})\b",
    re.IGNORECASE,
)


_FOLLOW_UP = re.compile(
    r"\b(it|its|it'?s|that one|this one|that series|this series|the series|that manga|this manga|"
    r"the manga|them|those)\b",
    re.I,
)
"""Words that refer back to what the conversation was about."""
OTHER_NEEDS = re.compile(
    r"\b(?:ship(?:ping|ped|s)?|deliver(?:y|ed)?|returns?|refunds?|exchange|orders?|ordered|payments?|pay|"
    r"paypal|gift ?cards?|points|discounts?|coupons?|recommend\w*|suggest\w*|similar|like|should i|worth|"
    r"good|better|best|favou?rite|human|agent|person|someone|representative|reading order|"
    r"read (?:next|first)|start with|anime|episodes?|season|stream\w*|watch\w*|movie|film|voices?|cosplay|"
    r"verif\w*|preorder\w*|pre-order\w*|accounts?|password|membership|cancel\w*)\b",
    re.IGNORECASE,
)
"""Needs that are not a catalog fact about a series: store policy (age verification, preorders,
accounts), orders, recommendations, a person, anime. "how much is shipping?" after a talk about One
Piece is not a question about One Piece."""
_ORDER_FOLLOW_UP = re.compile(
    r"\b(?:arrive|arriving|arrival|get here|ship|shipped|shipping|dispatch\w*|deliver\w*|track\w*|eta|"
    r"carrier|status|where is|wheres|cancel\w*|add|remove|change|modify|update|swap|refund\w*|return\w*|"
    r"total|items?|contain\w*|in it|what was in)\b",
    re.I,
)
"""A follow-up about an order the conversation was about: "when will it arrive?", "can I add vol 3 to
it?"; with no word that refers back only the order's own facts count ("and the tracking number?"),
so "how much is shipping?" stays a policy question."""
_ORDER_OWN = re.compile(r"\b(?:arriv\w*|get here|dispatch\w*|track\w*|eta|carrier|status)\b", re.I)


def resolve_follow_up(
    text: str, current_series: str | None, catalog: Catalog, last_order: str | None = None
) -> str:
    """``text`` made self-contained using what the conversation is about, when it is a follow-up.

    ``last_order``: the order id the previous turn was about (None when it was about something
    else). "when will it arrive?" then becomes "Order MA-100001: when will it arrive?". Otherwise,
    with the conversation's series ``current_series``, a follow-up that names no title becomes
    "One Piece: is volume 2 in stock?"; a follow-up is one with a volume, a format, a word that
    refers back ("it", "that one") or a question about a catalog fact ("who's the author?", "how
    many volumes?"). A message that names its own title or order, or none of these, is unchanged.
    """
    if find_order_id(text) is not None:
        return text
    refers_back = _FOLLOW_UP.search(text) is not None
    if last_order and (
        (refers_back and _ORDER_FOLLOW_UP.search(text))
        or (_ORDER_OWN.search(text) and not catalog.title_spans(text))
    ):
        return f"Order {last_order}: {text}"
    series = catalog.by_id.get(current_series or "")
    if series is None or catalog.title_spans(text):
        return text
    fact = bool(asked_facts(text)) and not OTHER_NEEDS.search(text)
    if find_volume(text) is None and find_format(text) is None and not refers_back and not fact:
        return text
    return f"{series.title}: {text}"


def may_follow_up_on_order(text: str) -> bool:
    """Whether ``text`` could be a follow-up about an order (cheap: decides whether the service
    reads the previous turn at all)."""
    return find_order_id(text) is None and bool(
        (_FOLLOW_UP.search(text) and _ORDER_FOLLOW_UP.search(text)) or _ORDER_OWN.search(text)
    )


def find_order_ids(text: str) -> list[str]:
    """Every order id in ``text``, canonical (``MA-100001``), in order of appearance."""
    return ["MA-" + next(g for g in m.groups() if g) for m in _ORDER_ID.finditer(text)]


def find_order_id(text: str) -> str | None:
    """The order id in ``text`` in canonical form (``MA-100001``), or None."""
    m = _ORDER_ID.search(text)
    if not m:
        return None
    return "MA-" + next(g for g in m.groups() if g)


class EntitySignals:
    """Indicator features for the intent model: [title named, author named, order id present]."""

    VERSION = "entities-v2"
    """v2: lower-case titles that are ordinary words count where the context makes them a title."""

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
