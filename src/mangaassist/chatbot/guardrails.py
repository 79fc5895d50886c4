"""Input and output guardrails.

Input: e-mail addresses, phone numbers and payment card numbers are masked before a message is
logged, stored or sent to a generator; prompt-injection attempts are flagged.
Output: an answer may not claim a price or a stock count that its grounding facts do not hold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
# 13-19 digits, optionally grouped by spaces or dashes; confirmed with the Luhn check
_CARD = re.compile(r"(?<![\w-])(?:\d[ -]?){12,18}\d(?![\w-])")
# international or North American numbers with at least 10 digits
_PHONE = re.compile(
    r"(?<![\w-])(?<!\d )(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]?\d{3,4}"
    r"(?![\w-])(?! \d)"
)
_PHONE_PLAIN = re.compile(r"(?<![\w-])\+?\d{10,12}(?![\w-])")

_INJECTION = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(ignore|disregard|forget|override)\b.{0,40}\b(previous|prior|above|earlier|all|your|the)\b.{0,20}"
        r"\b(instructions?|rules?|prompts?|guidelines?|directions?)",
        r"\b(reveal|show|print|repeat|tell me|output|leak)\b.{0,30}\b(system|hidden|initial|original)\s+"
        r"(prompt|instructions?|message)",
        r"\byou are now\b|\bact as (?:an? )?(?:unfiltered|unrestricted|dan|jailbroken)",
        r"\b(developer|god|dan|jailbreak)\s+mode\b",
        r"\bjailbreak\b",
        r"\bnew instructions?:",
        r"\bpretend (?:that )?you (?:have no|are not bound by|don'?t have) (?:rules|restrictions|guidelines)",
        r"</?\s*(system|assistant)\s*>|\[/?(?:system|inst)\]",
    )
]

_PRICE_CLAIM = re.compile(
    r"(?:\$|USD\s?)\s?(\d{1,5}(?:[.,]\d{1,2})?)|(\d{1,5}(?:\.\d{1,2})?)\s?(?:dollars|usd)\b", re.IGNORECASE
)
_STOCK_CLAIM = re.compile(
    r"\b(\d{1,6})\s+(?:copies|copy|units?|items?|left|in stock|available|remaining)\b", re.IGNORECASE
)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


@dataclass(frozen=True)
class InputCheck:
    masked: str
    """The message with personal data replaced by ``[EMAIL]``, ``[PHONE]``, ``[CARD]``."""
    masked_kinds: tuple[str, ...]
    injection: bool

    @property
    def reasons(self) -> list[str]:
        out = [f"pii_{k}" for k in self.masked_kinds]
        if self.injection:
            out.append("prompt_injection")
        return out


def mask_pii(text: str) -> tuple[str, tuple[str, ...]]:
    kinds: list[str] = []

    def card(m: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", m.group(0))
        if 13 <= len(digits) <= 19 and _luhn_ok(digits):
            kinds.append("card")
            return "[CARD]"
        return m.group(0)

    text, n = _EMAIL.subn("[EMAIL]", text)
    if n:
        kinds.append("email")
    text = _CARD.sub(card, text)
    text, n1 = _PHONE.subn("[PHONE]", text)
    text, n2 = _PHONE_PLAIN.subn("[PHONE]", text)
    if n1 or n2:
        kinds.append("phone")
    return text, tuple(dict.fromkeys(kinds))


def detect_injection(text: str) -> bool:
    return any(p.search(text) for p in _INJECTION)


def check_input(text: str) -> InputCheck:
    masked, kinds = mask_pii(text)
    return InputCheck(masked=masked, masked_kinds=kinds, injection=detect_injection(text))


def _amounts(pattern: re.Pattern[str], text: str) -> set[float]:
    out = set()
    for m in pattern.finditer(text):
        raw = next(g for g in m.groups() if g)
        out.add(round(float(raw.replace(",", ".")), 2))
    return out


@dataclass(frozen=True)
class OutputCheck:
    unsupported_prices: tuple[float, ...] = ()
    unsupported_stock: tuple[int, ...] = ()
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unsupported_prices and not self.unsupported_stock


def check_output(answer: str, facts: Iterable[str]) -> OutputCheck:
    """Every price and stock count in ``answer`` must appear among the ``facts`` it was given."""
    grounded = " ".join(facts)
    known_prices = _amounts(_PRICE_CLAIM, grounded)
    known_numbers = {int(n) for n in re.findall(r"\b\d{1,6}\b", grounded)}
    prices = sorted(p for p in _amounts(_PRICE_CLAIM, answer) if p not in known_prices)
    stock = sorted(int(n) for n in _STOCK_CLAIM.findall(answer) if int(n) not in known_numbers)
    return OutputCheck(unsupported_prices=tuple(prices), unsupported_stock=tuple(stock))
