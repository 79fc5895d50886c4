"""Answer quality: the chatbot's answers to a golden set of realistic questions and conversations.

The golden set (``ml/answers/``, writing guidelines in its README) has two files:

* ``golden.jsonl``: one question per line,
  ``{"id", "message", "intent", "facts", "sources", "must_not", "customer", "tags"}``;
* ``conversations.jsonl``: one conversation per line, ``{"id", "customer", "turns": [turn, ...]}``,
  a turn having the fields of a question but ``id`` and ``customer``.

A turn is answered in the conversation's session (a question in a session of its own), as the
customer named (signed in with a token: orders are only readable that way) or anonymously.
Scoring, per turn:

* **intent**: the answer's ``intent`` equals the expected one;
* **correct**: every entry of ``facts`` is in the answer (case-insensitive; ``re:`` starts a regular
  expression), at least one of ``sources`` (knowledge page ids, catalog series ids, order ids) is
  among the answer's sources (none listed: none required), and nothing of ``must_not`` is in it;
* **fabrications**: every price (``$NN.NN``), stock count ("35 in stock", "paperback: out of
  stock") and date (``2026-06-06``, "June 6, 2026", a year) the answer states must be in one of the
  sources it cites: the series' row of ``data/catalog.jsonl``, the order's row of
  ``data/orders.jsonl``, the knowledge page's text. Anything else is fabricated (target: 0).

``run`` sends the set (or a stratified ``sample``) to a ``Target``: ``HttpTarget`` (a running
chatbot over HTTP, customer tokens signed with the state home's development key) or
``InProcessTarget`` (``ChatService`` in this process, for speed). ``baseline.json`` records
per-item results, so the baseline of any sample is exact. CI runs the whole set; CD-01, CD-03 and
CD-06 run a sample as a gate step (``delivery/pipelines/answers.py``: ``answer_gate`` compares a
candidate's ``Report`` with the live one's on the same items). ``mangaassist quality`` is the CLI
(``cli/quality_cmds.py``); ``python -m mangaassist.chatbot.answer_quality compare REQUEST.json`` is
the child process CD-03 and CD-06 start (the deploy never loads the chatbot itself).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mangaassist.core.errors import ConfigError
from mangaassist.core.intents import INTENTS
from mangaassist.core.kb import parse_document

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("mangaassist.answer_quality")

GOLDEN_FILE = "golden.jsonl"
CONVERSATIONS_FILE = "conversations.jsonl"
BASELINE_FILE = "baseline.json"
DEFAULT_TOLERANCE = 0.02
"""How far below the live version / baseline a candidate's rates may fall (sampling noise)."""

_TURN_FIELDS = {"message", "intent", "facts", "sources", "must_not", "tags", "note"}
_QUESTION_FIELDS = _TURN_FIELDS | {"id", "customer"}
_CONVERSATION_FIELDS = {"id", "customer", "turns", "tags", "note"}
_CUSTOMER = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")


class GoldenError(ConfigError):
    """A golden file that cannot be used: where (file, line, field) and why. Nothing was run."""

    def __init__(self, path: Path, line: int, field_name: str | None, problem: str) -> None:
        self.path, self.line, self.field, self.problem = path, line, field_name, problem
        where = f"{path}:{line}" + (f": field '{field_name}'" if field_name else "")
        super().__init__(f"{where}: {problem}")


# -- the golden set ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    message: str
    intent: str
    facts: tuple[str, ...] = ()
    """Must all be in the answer: case-insensitive text, or ``re:`` and a regular expression."""
    sources: tuple[str, ...] = ()
    """At least one must be cited (knowledge page id, series id, order id); empty: none required."""
    must_not: tuple[str, ...] = ()
    """None may be in the answer (same syntax as ``facts``)."""
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Case:
    """A question (one turn) or a conversation, answered in one session."""

    id: str
    turns: tuple[Turn, ...]
    customer: str | None = None
    where: str = ""
    tags: tuple[str, ...] = ()

    @property
    def conversation(self) -> bool:
        return len(self.turns) > 1 or "conversation" in self.tags

    @property
    def intent(self) -> str:
        return self.turns[0].intent


def _strings(value: Any, path: Path, line: int, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise GoldenError(path, line, name, "expected a list of non-empty strings")
    for v in value:
        if v.startswith("re:"):
            try:
                re.compile(v[3:])
            except re.error as exc:
                raise GoldenError(path, line, name, f"bad regular expression {v[3:]!r}: {exc}") from None
    return tuple(value)


def _turn(raw: Mapping[str, Any], path: Path, line: int, prefix: str, allowed: set[str]) -> Turn:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise GoldenError(
            path, line, prefix + unknown[0], f"unknown field (allowed: {', '.join(sorted(allowed))})"
        )
    message = raw.get("message")
    if not isinstance(message, str) or not message.strip():
        raise GoldenError(path, line, prefix + "message", "missing or empty")
    if len(message) > 4000:
        raise GoldenError(path, line, prefix + "message", "longer than the chatbot's 4,000 characters")
    intent = raw.get("intent")
    if intent not in INTENTS:
        raise GoldenError(path, line, prefix + "intent", f"{intent!r} is not one of {', '.join(INTENTS)}")
    return Turn(
        message=message,
        intent=str(intent),
        facts=_strings(raw.get("facts"), path, line, prefix + "facts"),
        sources=_strings(raw.get("sources"), path, line, prefix + "sources"),
        must_not=_strings(raw.get("must_not"), path, line, prefix + "must_not"),
        tags=_strings(raw.get("tags"), path, line, prefix + "tags"),
    )


def _customer(raw: Mapping[str, Any], path: Path, line: int) -> str | None:
    customer = raw.get("customer")
    if customer is not None and (not isinstance(customer, str) or not _CUSTOMER.match(customer)):
        raise GoldenError(
            path, line, "customer", f"{customer!r}: expected a customer id such as cust-0001 or null"
        )
    return customer


def _lines(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GoldenError(path, 0, None, f"cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise GoldenError(path, 0, None, "is not UTF-8 text") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GoldenError(path, number, None, f"not valid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(raw, dict):
            raise GoldenError(path, number, None, "expected a JSON object")
        yield number, raw


def load_golden(directory: Path) -> list[Case]:
    """The questions and conversations of ``directory``, validated (``GoldenError`` on the first
    problem: file, line, field). Ids are unique across both files."""
    if not directory.is_dir():
        raise GoldenError(
            directory, 0, None, "not a directory (expected golden.jsonl and conversations.jsonl)"
        )
    cases: list[Case] = []
    seen: dict[str, str] = {}

    def add(case: Case, path: Path, line: int) -> None:
        if case.id in seen:
            raise GoldenError(path, line, "id", f"{case.id!r} is already used at {seen[case.id]}")
        seen[case.id] = case.where
        cases.append(case)

    questions = directory / GOLDEN_FILE
    if not questions.is_file():
        raise GoldenError(questions, 0, None, "missing")
    for line, raw in _lines(questions):
        if not isinstance(raw.get("id"), str) or not raw["id"].strip():
            raise GoldenError(questions, line, "id", "missing or empty")
        turn = _turn(raw, questions, line, "", _QUESTION_FIELDS)
        add(
            Case(raw["id"], (turn,), _customer(raw, questions, line), f"{questions.name}:{line}"),
            questions,
            line,
        )
    talks = directory / CONVERSATIONS_FILE
    if talks.is_file():
        for line, raw in _lines(talks):
            unknown = sorted(set(raw) - _CONVERSATION_FIELDS)
            if unknown:
                raise GoldenError(
                    talks, line, unknown[0], "unknown field (allowed: customer, id, note, tags, turns)"
                )
            if not isinstance(raw.get("id"), str) or not raw["id"].strip():
                raise GoldenError(talks, line, "id", "missing or empty")
            turns = raw.get("turns")
            if not isinstance(turns, list) or len(turns) < 2:
                raise GoldenError(talks, line, "turns", "expected a list of at least two turns")
            parsed = []
            for i, t in enumerate(turns):
                if not isinstance(t, dict):
                    raise GoldenError(talks, line, f"turns[{i}]", "expected an object")
                parsed.append(_turn(t, talks, line, f"turns[{i}].", _TURN_FIELDS))
            tags = (*_strings(raw.get("tags"), talks, line, "tags"), "conversation")
            add(
                Case(raw["id"], tuple(parsed), _customer(raw, talks, line), f"{talks.name}:{line}", tags),
                talks,
                line,
            )
    if not cases:
        raise GoldenError(questions, 0, None, "no questions")
    return cases


def golden_digest(directory: Path) -> str:
    h = hashlib.sha256()
    for name in (GOLDEN_FILE, CONVERSATIONS_FILE):
        path = directory / name
        h.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b""))
    return h.hexdigest()[:16]


def sample(
    cases: Sequence[Case], n: int | None, seed: int = 0, conversations: int | None = None
) -> list[Case]:
    """``n`` questions spread evenly over the intents (round robin over a seeded shuffle) plus
    ``conversations`` conversations (default: a tenth of ``n``, at least 2). ``n`` None: all."""
    if n is None or n <= 0:
        return list(cases)
    rng = random.Random(seed)
    questions = [c for c in cases if not c.conversation]
    talks = [c for c in cases if c.conversation]
    by_intent: dict[str, list[Case]] = {}
    for c in questions:
        by_intent.setdefault(c.intent, []).append(c)
    for group in by_intent.values():
        rng.shuffle(group)
    picked: list[Case] = []
    queues = [by_intent[i] for i in sorted(by_intent)]
    while len(picked) < n and any(queues):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop())
    rng.shuffle(talks)
    extra = max(2, n // 10) if conversations is None else conversations
    chosen = {c.id for c in picked + talks[:extra]}
    return [c for c in cases if c.id in chosen]  # file order


# -- matching and fabrications --------------------------------------------------------------------


def matches(pattern: str, text: str) -> bool:
    """Case-insensitive: a regular expression after ``re:``, else the text (spaces collapsed)."""
    if pattern.startswith("re:"):
        return re.search(pattern[3:], text, re.IGNORECASE) is not None
    squash = " ".join(text.lower().split())
    return " ".join(pattern.lower().split()) in squash


_PRICE = re.compile(r"\$\s?(\d{1,5}(?:,\d{3})*(?:\.\d{1,2})?)")
_FORMAT = r"(paperback|omnibus|hardcover|box[ _]set|deluxe)"
_STOCK_OF_FORMAT = re.compile(_FORMAT + r"\s*[:-]?\s*(\d+)\s+(?:in stock|left|available|copies)", re.I)
_OUT_OF_FORMAT = re.compile(_FORMAT + r"\s*[:-]?\s*(?:is\s+|are\s+)?(?:out of stock|sold out)", re.I)
_STOCK = re.compile(r"\b(\d+)\s+(?:copies\s+)?(?:in stock|left in stock|copies left|copies available)", re.I)
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        "january february march april may june july august september october november december".split()
    )
}
_MONTH_NAME = (
    r"\b(january|february|march|april|may|june|july|august|september|october|november|december"
    r"|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)\b\.?"
)
_NAMED_DATE = re.compile(_MONTH_NAME + r"\s+(\d{1,2})(?:st|nd|rd|th)?(?:,?\s+(\d{4}))?", re.I)
_DAY_FIRST = re.compile(
    r"\b(\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?" + _MONTH_NAME + r"(?:,?\s+(\d{4}))?", re.I
)
_YEAR = re.compile(r"(?<![\w$.,-])(19[5-9]\d|20[0-3]\d)(?![\w-])")


def _month(name: str) -> int:
    name = name.lower().rstrip(".")
    return next(i for m, i in _MONTHS.items() if m.startswith(name[:3]))


@dataclass(frozen=True)
class Claims:
    """What an answer states that the data must back: prices, stock counts, dates, years."""

    prices: tuple[float, ...] = ()
    stock: tuple[tuple[str | None, int], ...] = ()
    """(format or None, count); 0 for "out of stock"."""
    dates: tuple[tuple[int | None, int, int], ...] = ()
    """(year or None, month, day)."""
    years: tuple[int, ...] = ()


def claims_of(text: str) -> Claims:
    prices = tuple(float(m.group(1).replace(",", "")) for m in _PRICE.finditer(text))
    stock: list[tuple[str | None, int]] = []
    spans: list[tuple[int, int]] = []
    for m in _STOCK_OF_FORMAT.finditer(text):
        stock.append((m.group(1).lower().replace(" ", "_"), int(m.group(2))))
        spans.append(m.span())
    for m in _OUT_OF_FORMAT.finditer(text):
        stock.append((m.group(1).lower().replace(" ", "_"), 0))
    for m in _STOCK.finditer(text):
        volume = re.search(r"\bvol(ume)?s?\.?\s*$", text[max(0, m.start() - 8) : m.start()], re.I)
        if volume is None and not any(a <= m.start() < b for a, b in spans):  # "volume 2 in stock"
            stock.append((None, int(m.group(1))))
    dates: list[tuple[int | None, int, int]] = []
    used: list[tuple[int, int]] = []
    for m in _ISO_DATE.finditer(text):
        dates.append((int(m.group(1)), int(m.group(2)), int(m.group(3))))
        used.append(m.span())
    for m in _NAMED_DATE.finditer(text):
        if 1 <= int(m.group(2)) <= 31:
            dates.append((int(m.group(3)) if m.group(3) else None, _month(m.group(1)), int(m.group(2))))
            used.append(m.span())
    for m in _DAY_FIRST.finditer(text):
        if 1 <= int(m.group(1)) <= 31 and not any(a <= m.start() < b for a, b in used):
            dates.append((int(m.group(3)) if m.group(3) else None, _month(m.group(2)), int(m.group(1))))
            used.append(m.span())
    years = tuple(
        int(m.group(1)) for m in _YEAR.finditer(text) if not any(a <= m.start() < b for a, b in used)
    )
    return Claims(prices, tuple(stock), tuple(dates), years)


def _dates_in(text: str) -> set[tuple[int | None, int, int]]:
    found = claims_of(text).dates
    return {d for d in found} | {(None, m, day) for _, m, day in found}


@dataclass
class Grounding:
    """The data answers may state: catalog rows, orders, knowledge pages (by the ids answers cite)."""

    series: dict[str, dict[str, Any]]
    orders: dict[str, dict[str, Any]]
    pages: dict[str, str]

    @classmethod
    def load(cls, root: Path) -> Grounding:
        series = {}
        for line in (root / "data" / "catalog.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                series[str(row["id"])] = row
        orders = {}
        for line in (root / "data" / "orders.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                orders[str(row["order_id"])] = row
        pages = {}
        for path in sorted((root / "knowledge").glob("*.md")):
            raw = path.read_text(encoding="utf-8")
            doc = parse_document(raw, str(path))
            pages[doc.id] = f"{doc.title}\n{doc.body}"
        return cls(series, orders, pages)

    def _series_of(self, source: str) -> dict[str, Any] | None:
        return self.series.get(source.removeprefix("series/"))

    def fabrications(self, answer: str, sources: Sequence[str], customer: str | None = None) -> list[str]:
        """Each price, stock count and date of ``answer`` that no cited source backs (the signed-in
        ``customer``'s own orders count as cited: an answer may list them)."""
        claims = claims_of(answer)
        if customer is not None:
            sources = [*sources, *(o for o, row in self.orders.items() if row.get("customer_id") == customer)]
        prices: set[float] = set()
        stock: set[tuple[str | None, int]] = set()
        dates: set[tuple[int | None, int, int]] = set()
        years: set[int] = set()
        for source in sources:
            row = self._series_of(source)
            if row is not None:
                prices.add(round(float(row["price_usd"]), 2))
                for fmt, count in row.get("formats", {}).items():
                    stock.update({(fmt, int(count)), (None, int(count))})
                if row.get("year"):
                    years.add(int(row["year"]))
                years.update(int(y) for y in _YEAR.findall(str(row.get("title", ""))))
            order = self.orders.get(source)
            if order is not None:
                prices.add(round(float(order["total_usd"]), 2))
                for item in order.get("items", []):
                    prices.add(round(float(item["price_usd"]), 2))
                    prices.add(round(float(item["price_usd"]) * int(item.get("qty", 1)), 2))
                for key in ("placed_at", "eta", "delivered_at", "shipped_at"):
                    value = order.get(key)
                    if isinstance(value, str) and len(value) >= 10:
                        try:
                            d = date.fromisoformat(value[:10])
                        except ValueError:
                            continue
                        dates.update({(d.year, d.month, d.day), (None, d.month, d.day)})
                        years.add(d.year)
            page = self.pages.get(source)
            if page is not None:
                prices.update(round(p, 2) for p in claims_of(page).prices)
                stock.update((None, int(n)) for n in re.findall(r"\b\d+\b", page))
                dates.update(_dates_in(page))
                years.update(int(y) for y in _YEAR.findall(page))
        bad = [f"price ${p:.2f}" for p in claims.prices if round(p, 2) not in prices]
        for fmt, count in claims.stock:
            if (fmt, count) not in stock:
                label = f"{fmt.replace('_', ' ')}: " if fmt else ""
                bad.append(f"stock {label}{'out of stock' if count == 0 else count}")
        for year, month, day in claims.dates:
            if (year, month, day) not in dates:
                bad.append(f"date {year or '????'}-{month:02d}-{day:02d}")
        bad.extend(f"year {y}" for y in claims.years if y not in years)
        return bad


# -- targets ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    answer: str
    intent: str
    sources: tuple[str, ...]
    status: int = 200
    error: str = ""


class Target(Protocol):
    """Where the golden set is sent: one message of one session, as one customer (or anonymous)."""

    name: str

    def ask(self, session: str, message: str, customer: str | None) -> Reply: ...


class HttpTarget:
    """A running chatbot: ``POST URL/v1/chat`` with ``headers`` (a revision pin) through ``auth``
    (a pin's, e.g. SigV4 for a Lambda function URL) and, for a customer, ``Authorization: Bearer``
    with a token from ``token_for`` (default: the development key of ``home``, as ``mangaassist
    token issue``; a signing ``auth`` moves it to ``X-MangaAssist-Authorization``)."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        home: Path | None = None,
        token_for: Callable[[str], str] | None = None,
        timeout_s: float = 30.0,
        name: str = "",
    ) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.name = name or self.url
        self.headers = dict(headers or {})
        self._tokens: dict[str, str] = {}
        self._token_for = token_for or (lambda c: _dev_token(c, home))
        self._client = httpx.Client(timeout=timeout_s, auth=auth)

    def token(self, customer: str) -> str:
        if customer not in self._tokens:
            self._tokens[customer] = self._token_for(customer)
        return self._tokens[customer]

    def ask(self, session: str, message: str, customer: str | None) -> Reply:
        import httpx

        headers = {**self.headers, "X-Session-Id": session}
        if customer is not None:
            headers["Authorization"] = f"Bearer {self.token(customer)}"
        try:
            r = self._client.post(
                f"{self.url}/v1/chat", json={"session_id": session, "message": message}, headers=headers
            )
        except httpx.HTTPError as exc:
            return Reply("", "", (), 0, f"{type(exc).__name__}: {exc}")
        if r.status_code != 200:
            return Reply("", "", (), r.status_code, r.text[:200])
        try:
            body = r.json()
            sources = tuple(str(s.get("id", "")) for s in body.get("sources") or [] if isinstance(s, dict))
            return Reply(str(body.get("answer", "")), str(body.get("intent", "")), sources)
        except (ValueError, AttributeError) as exc:
            return Reply("", "", (), r.status_code, f"not a chat answer: {exc}")

    def close(self) -> None:
        self._client.close()


def _dev_token(customer: str, home: Path | None) -> str:
    from mangaassist.chatbot.identity import issue_dev_token
    from mangaassist.platform.settings import find_root, state_home

    return issue_dev_token(customer, home or state_home(find_root()), ttl_s=3600).token


class InProcessTarget:
    """``ChatService`` in this process (``active``: a config to answer with, as CD-06 does)."""

    def __init__(self, service: Any, active: Any = None, name: str = "in-process") -> None:
        self.service = service
        self.active = active
        self.name = name
        self.loop = asyncio.new_event_loop()

    @classmethod
    def load(cls) -> InProcessTarget:
        """The chatbot of this environment's settings (``MANGAASSIST_*``), loaded here."""
        from mangaassist.chatbot.service import ChatService, Runtime
        from mangaassist.chatbot.settings import Settings

        return cls(ChatService(Runtime.load(Settings.from_env())))

    def ask(self, session: str, message: str, customer: str | None) -> Reply:
        try:
            result = self.loop.run_until_complete(
                self.service.chat(session, message, customer, active=self.active)
            )
        except Exception as exc:  # one broken answer is a failed item, not a failed run
            log.exception("answering %r failed", message)
            return Reply("", "", (), 500, f"{type(exc).__name__}: {exc}")
        return Reply(result.answer, str(result.intent), tuple(s.id for s in result.sources))

    def close(self) -> None:
        self.loop.run_until_complete(self.service.aclose())
        self.loop.close()


# -- scoring ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TurnResult:
    case: str
    turn: int
    message: str
    expected_intent: str
    intent: str
    answer: str
    sources: tuple[str, ...]
    missing_facts: tuple[str, ...]
    source_ok: bool
    forbidden: tuple[str, ...]
    fabrications: tuple[str, ...]
    error: str = ""

    @property
    def intent_ok(self) -> bool:
        return self.intent == self.expected_intent

    @property
    def correct(self) -> bool:
        return not self.error and not self.missing_facts and self.source_ok and not self.forbidden

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(intent_ok=self.intent_ok, correct=self.correct)
        return out


def score(case: Case, index: int, turn: Turn, reply: Reply, grounding: Grounding) -> TurnResult:
    """One turn's result: intent, facts, sources, forbidden text and fabrications of ``reply``."""
    answer = reply.answer
    return TurnResult(
        case=case.id,
        turn=index,
        message=turn.message,
        expected_intent=turn.intent,
        intent=reply.intent,
        answer=answer,
        sources=reply.sources,
        missing_facts=tuple(f for f in turn.facts if not matches(f, answer)),
        source_ok=not turn.sources or bool(set(turn.sources) & set(reply.sources)),
        forbidden=tuple(f for f in turn.must_not if matches(f, answer)),
        fabrications=tuple(grounding.fabrications(answer, reply.sources, case.customer))
        if not reply.error
        else (),
        error=reply.error or ("" if reply.status == 200 else f"status {reply.status}"),
    )


@dataclass
class Report:
    """Scores of one target on a list of cases."""

    target: str
    results: list[TurnResult]
    cases: int
    seconds: float = 0.0
    golden: str = ""
    """The golden set's digest."""

    @property
    def turns(self) -> int:
        return len(self.results)

    @property
    def intent_accuracy(self) -> float:
        return sum(r.intent_ok for r in self.results) / max(1, self.turns)

    @property
    def correctness(self) -> float:
        return sum(r.correct for r in self.results) / max(1, self.turns)

    @property
    def fabrications(self) -> int:
        return sum(len(r.fabrications) for r in self.results)

    @property
    def errors(self) -> int:
        return sum(bool(r.error) for r in self.results)

    def per_intent(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for intent in INTENTS:
            rows = [r for r in self.results if r.expected_intent == intent]
            if rows:
                out[intent] = {
                    "turns": float(len(rows)),
                    "intent_accuracy": round(sum(r.intent_ok for r in rows) / len(rows), 4),
                    "correctness": round(sum(r.correct for r in rows) / len(rows), 4),
                    "fabrications": float(sum(len(r.fabrications) for r in rows)),
                }
        return out

    def failures(self) -> list[TurnResult]:
        return [r for r in self.results if not (r.intent_ok and r.correct and not r.fabrications)]

    def summary(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "golden": self.golden,
            "cases": self.cases,
            "turns": self.turns,
            "intent_accuracy": round(self.intent_accuracy, 4),
            "correctness": round(self.correctness, 4),
            "fabrications": self.fabrications,
            "errors": self.errors,
            "seconds": round(self.seconds, 2),
        }

    def as_dict(self, failures: int | None = None) -> dict[str, Any]:
        listed = self.failures() if failures is None else self.failures()[:failures]
        return {
            **self.summary(),
            "per_intent": self.per_intent(),
            "failures": [r.as_dict() for r in listed],
            "failures_total": len(self.failures()),
        }

    def per_case(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for r in self.results:
            row = out.setdefault(r.case, {"turns": 0, "intent_ok": 0, "correct": 0, "fabrications": 0})
            row["turns"] += 1
            row["intent_ok"] += int(r.intent_ok)
            row["correct"] += int(r.correct)
            row["fabrications"] += len(r.fabrications)
        return out


def run(
    cases: Sequence[Case],
    target: Target,
    grounding: Grounding,
    *,
    workers: int = 1,
    run_id: str | None = None,
    golden: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Every case, each in a new session (its turns in order); ``workers`` cases at a time (an
    in-process target takes 1)."""
    prefix = f"aq-{run_id or uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    done = [0]

    def one(case: Case) -> list[TurnResult]:
        session = f"{prefix}-{case.id}"
        out = []
        for i, turn in enumerate(case.turns):
            out.append(score(case, i, turn, target.ask(session, turn.message, case.customer), grounding))
        done[0] += 1
        if progress is not None:
            progress(done[0], len(cases))
        return out

    if workers <= 1:
        results = [r for case in cases for r in one(case)]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = [r for rows in pool.map(one, cases) for r in rows]
    return Report(target.name, results, len(cases), time.perf_counter() - started, golden)


# -- the baseline and the gate ----------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """Recorded per-case results of one run of the whole set (``baseline.json``)."""

    embedder: str
    golden: str
    recorded_at: str
    summary: dict[str, Any]
    cases: dict[str, dict[str, int]]

    @classmethod
    def load(cls, path: Path) -> Baseline | None:
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                str(raw["embedder"]),
                str(raw["golden"]),
                str(raw["recorded_at"]),
                dict(raw["summary"]),
                {str(k): {str(a): int(b) for a, b in v.items()} for k, v in raw["cases"].items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{path}: not a baseline file ({exc})") from None

    @classmethod
    def of(cls, report: Report, embedder: str) -> Baseline:
        return cls(
            embedder,
            report.golden,
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            report.summary(),
            report.per_case(),
        )

    def write(self, path: Path) -> None:
        doc = {
            "embedder": self.embedder,
            "golden": self.golden,
            "recorded_at": self.recorded_at,
            "summary": self.summary,
            "cases": dict(sorted(self.cases.items())),
        }
        path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")

    def on(self, case_ids: Iterable[str]) -> dict[str, float] | None:
        """Its rates on these cases (None when it lacks any of them: a newer golden set)."""
        rows = []
        for cid in case_ids:
            if cid not in self.cases:
                return None
            rows.append(self.cases[cid])
        turns = sum(r["turns"] for r in rows)
        if not turns:
            return None
        return {
            "intent_accuracy": sum(r["intent_ok"] for r in rows) / turns,
            "correctness": sum(r["correct"] for r in rows) / turns,
            "fabrications": float(sum(r["fabrications"] for r in rows)),
        }


# -- retrieval: the expected page for the knowledge base's golden questions --------------------------


@dataclass(frozen=True)
class RetrievalQuestion:
    question: str
    relevant: frozenset[str]


def load_retrieval_golden(path: Path) -> list[RetrievalQuestion]:
    out = []
    for line, raw in _lines(path):
        q, rel = raw.get("question"), raw.get("relevant")
        if not isinstance(q, str) or not q.strip():
            raise GoldenError(path, line, "question", "missing or empty")
        if not isinstance(rel, list) or not rel or not all(isinstance(r, str) for r in rel):
            raise GoldenError(path, line, "relevant", "expected a non-empty list of document ids")
        out.append(RetrievalQuestion(q, frozenset(rel)))
    return out


def ranking_metrics(ranked: Sequence[Sequence[str]], golden: Sequence[RetrievalQuestion]) -> dict[str, float]:
    """recall@1 (the first hit is a relevant page), recall@5 (share of relevant pages in the top 5,
    as CD-04's gate), MRR (1 / rank of the first relevant page), nDCG@10 (binary relevance, as
    CD-04's gate)."""
    r1 = r5 = mrr = ndcg = 0.0
    for docs, g in zip(ranked, golden, strict=True):
        r1 += 1.0 if docs[:1] and docs[0] in g.relevant else 0.0
        r5 += len(set(docs[:5]) & g.relevant) / len(g.relevant)
        first = next((i for i, d in enumerate(docs) if d in g.relevant), None)
        mrr += 0.0 if first is None else 1.0 / (first + 1)
        dcg = sum(1.0 / math.log2(i + 2) for i, d in enumerate(docs[:10]) if d in g.relevant)
        ndcg += dcg / sum(1.0 / math.log2(i + 2) for i in range(min(10, len(g.relevant))))
    n = max(1, len(golden))
    return {
        "recall_at_1": round(r1 / n, 4),
        "recall_at_5": round(r5 / n, 4),
        "mrr": round(mrr / n, 4),
        "ndcg_at_10": round(ndcg / n, 4),
        "questions": float(len(golden)),
    }


def retrieval_eval(
    root: Path, golden_path: Path, embedder_kind: str = "minilm", home: Path | None = None
) -> dict[str, Any]:
    """The knowledge base built as the chatbot builds its own (sources, chunker, embedding cache),
    searched two ways: ``hybrid`` (``platform.vector.HybridScorer``: cosine plus a keyword boost,
    the ranking before BM25 fusion) and ``fused`` (``chatbot.knowledge.FusedScorer``, what the
    chatbot uses). Returns each one's metrics and the questions the fused one misses at rank 1."""
    import numpy as np

    from mangaassist.chatbot.catalog import Catalog
    from mangaassist.chatbot.config import load_config
    from mangaassist.chatbot.embeddings import make_embedder, model_id
    from mangaassist.chatbot.knowledge import FusedScorer, load_documents
    from mangaassist.core.kb import chunk_all, series_document
    from mangaassist.platform.embedding_cache import ChunkEmbeddingCache
    from mangaassist.platform.settings import state_home
    from mangaassist.platform.vector import HybridScorer, IndexRecord

    golden = load_retrieval_golden(golden_path)
    config = load_config(root / "config" / "chatbot.yaml")
    catalog = Catalog.load(root / "data" / "catalog.jsonl")
    embedder = make_embedder(embedder_kind)
    model = model_id(embedder)
    chunks = chunk_all(
        [*load_documents(root / "knowledge"), *(series_document(asdict(s)) for s in catalog.series)],
        config.retrieval.chunk_words,
        config.retrieval.chunk_overlap,
    )
    cache = ChunkEmbeddingCache((home or state_home(root)) / "kb" / "embeddings.sqlite3")
    vectors = cache.get_many(model, (c.content_hash for c in chunks))
    missing = list({c.content_hash: c for c in chunks if c.content_hash not in vectors}.values())
    if missing:
        matrix = embedder.embed([c.embed_text for c in missing])
        fresh = {c.content_hash: matrix[i] for i, c in enumerate(missing)}
        cache.put_many(model, fresh)
        vectors.update(fresh)
    matrix = np.stack([vectors[c.content_hash] for c in chunks]).astype(np.float32)
    records = [
        IndexRecord(c.id, c.doc_id, c.doc_title, c.heading, c.text, c.content_hash, c.kind, matrix[i])
        for i, c in enumerate(chunks)
    ]
    scorers: dict[str, Any] = {"hybrid": HybridScorer(records, matrix), "fused": FusedScorer(records, matrix)}
    queries = embedder.embed([g.question for g in golden])
    out: dict[str, Any] = {"embedder": model, "golden": str(golden_path)}
    for name, scorer in scorers.items():
        ranked = []
        started = time.perf_counter()
        for i, g in enumerate(golden):
            ranked.append([h.doc_id for h in scorer.search(queries[i], g.question, k=10)])
        took = (time.perf_counter() - started) * 1000 / max(1, len(golden))
        out[name] = {**ranking_metrics(ranked, golden), "ms_per_query": round(took, 3)}
        if name == "fused":
            out["misses_at_1"] = [
                {"question": g.question, "relevant": sorted(g.relevant), "got": docs[:3]}
                for g, docs in zip(golden, ranked, strict=True)
                if not docs or docs[0] not in g.relevant
            ]
    return out


# -- the child process of CD-03 and CD-06 ----------------------------------------------------------


def default_dir(root: Path | None = None) -> Path:
    from mangaassist.platform.settings import find_root

    return (root or find_root()) / "ml" / "answers"


def compare_main(request: dict[str, Any]) -> dict[str, Any]:
    """``{"golden": dir, "sample": n, "seed": s, "live": contents|null, "candidate": contents|null,
    "intent_packages": {"live": path|null, "candidate": path}|absent}`` -> ``{"candidate": report,
    "live": report|null, "cases": [ids]}``: the chatbot of this process's environment answers the
    sample once per arm, with that arm's config (``contents`` as CD-06's evaluation; null: the
    config it loaded) and, with ``intent_packages``, that arm's intent model (null: the default)."""
    from mangaassist.chatbot.evaluation import active_config
    from mangaassist.platform.settings import find_root

    directory = Path(request.get("golden") or default_dir())
    cases = sample(load_golden(directory), request.get("sample"), int(request.get("seed", 0)))
    grounding = Grounding.load(find_root())
    target = InProcessTarget.load()
    digest = golden_digest(directory)
    try:
        out: dict[str, Any] = {"cases": [c.id for c in cases], "live": None}
        packages = request.get("intent_packages")
        for arm in ("live", "candidate"):
            if packages is not None:
                target.service.rt.intents = _intent_model(target.service.rt, packages.get(arm))
            elif arm == "live" and not request.get("live"):
                continue
            contents = request.get(arm)
            target.active = active_config(contents) if contents else None
            target.name = arm
            out[arm] = full_dict(run(cases, target, grounding, golden=digest))
        return out
    finally:
        target.close()


def _intent_model(rt: Any, package: str | None) -> Any:
    """The intent model of ``package`` (``intent.save_package``), or the default one (trained from
    ``ml/intents``, cached) for None: what a chatbot with or without ``MANGAASSIST_MODEL_PACKAGE``
    classifies with."""
    from mangaassist.chatbot.intent import load_or_train, load_package

    if package:
        return load_package(Path(package), rt.embedder, rt.catalog)
    return load_or_train(
        rt.settings.intents_dir / "train.jsonl", rt.embedder, rt.settings.home / "models", rt.catalog
    )


def report_from_dict(raw: Mapping[str, Any]) -> Report:
    """A ``Report`` back from ``full_dict`` (what the child process prints)."""
    results = [
        TurnResult(
            case=str(r["case"]),
            turn=int(r["turn"]),
            message=str(r["message"]),
            expected_intent=str(r["expected_intent"]),
            intent=str(r["intent"]),
            answer=str(r["answer"]),
            sources=tuple(r["sources"]),
            missing_facts=tuple(r["missing_facts"]),
            source_ok=bool(r["source_ok"]),
            forbidden=tuple(r["forbidden"]),
            fabrications=tuple(r["fabrications"]),
            error=str(r.get("error", "")),
        )
        for r in raw.get("results", [])
    ]
    return Report(
        str(raw.get("target", "")),
        results,
        int(raw.get("cases", 0)),
        float(raw.get("seconds", 0)),
        str(raw.get("golden", "")),
    )


def full_dict(report: Report) -> dict[str, Any]:
    """Every result (for a report sent between processes)."""
    return {**report.summary(), "results": [r.as_dict() for r in report.results]}


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if len(args) != 2 or args[0] != "compare":
        print("usage: python -m mangaassist.chatbot.answer_quality compare REQUEST.json", file=sys.stderr)
        return 2
    request = json.loads(Path(args[1]).read_text(encoding="utf-8"))
    try:
        print(json.dumps(compare_main(request)))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
