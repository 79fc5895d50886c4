"""The manga catalog: loading ``data/catalog.jsonl`` and finding series in free text.

Title matching is lexical first (exact phrase, common abbreviations, then fuzzy with rapidfuzz,
which forgives typos), author matching by full or family name; descriptive queries fall back to
embedding similarity, done by the caller with the shared query embedding.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rapidfuzz import fuzz
from rapidfuzz.distance import OSA

from mangaassist.chatbot.embeddings import Matrix, Vector
from mangaassist.core.errors import ConfigError

AGE_RATINGS = {"A": 0, "T": 13, "OT": 16, "M": 18}
DEMOGRAPHICS = ("shonen", "seinen", "shojo", "josei", "kodomo")
FORMATS = ("paperback", "omnibus", "hardcover", "box_set", "deluxe")
_FORMAT_WORDS = {
    "paperback": "paperback",
    "softcover": "paperback",
    "omnibus": "omnibus",
    "3-in-1": "omnibus",
    "3 in 1": "omnibus",
    "hardcover": "hardcover",
    "hardback": "hardcover",
    "box set": "box_set",
    "boxset": "box_set",
    "box-set": "box_set",
    "deluxe": "deluxe",
}
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "title": str,
    "author": str,
    "publisher": str,
    "genres": list,
    "demographic": str,
    "age_rating": str,
    "min_age": int,
    "volumes": int,
    "status": str,
    "price_usd": (int, float),
    "formats": dict,
    "description": str,
}
_NON_WORD = re.compile(r"[^a-z0-9]+")
_VOLUME = re.compile(r"(?:\b(?:vol(?:ume)?s?\.?|v\.?|book|no\.?)|#)\s*(\d{1,3})\b", re.IGNORECASE)
_STOP = {"the", "a", "an", "of", "to", "in", "no", "and", "wa", "ga", "x"}


def normalize(text: str) -> str:
    """Lower case, '&' as 'and', punctuation as spaces, single spaces."""
    text = text.lower().replace("&", " and ").replace("’", "'").replace("'", "")
    return _NON_WORD.sub(" ", text).strip()


@dataclass(frozen=True)
class Series:
    id: str
    title: str
    author: str
    publisher: str
    year: int | None
    genres: tuple[str, ...]
    demographic: str
    age_rating: str
    min_age: int
    volumes: int
    status: str
    price_usd: float
    formats: dict[str, int]
    description: str
    aliases: tuple[str, ...] = ()
    """Other names customers use: fandom abbreviations ("aot"), romanized Japanese titles."""

    @property
    def in_stock(self) -> bool:
        return any(n > 0 for n in self.formats.values())

    @property
    def search_text(self) -> str:
        """What the embedding index sees for this series."""
        return (
            f"{self.title} by {self.author}. {self.demographic} manga, "
            f"{', '.join(self.genres)}. {self.description}"
        )

    def stock_phrase(self, fmt: str | None = None) -> str:
        formats = {fmt: self.formats.get(fmt, 0)} if fmt else self.formats
        parts = []
        for name, count in formats.items():
            label = name.replace("_", " ")
            parts.append(f"{label}: {count} in stock" if count > 0 else f"{label}: out of stock")
        return "; ".join(parts)


def _series_from(row: dict[str, Any], where: str) -> Series:
    for key, kind in _REQUIRED.items():
        if key not in row:
            raise ConfigError(f"{where}: missing field '{key}'")
        if not isinstance(row[key], kind) or isinstance(row[key], bool):
            raise ConfigError(f"{where}: field '{key}' has the wrong type ({type(row[key]).__name__})")
    if row["age_rating"] not in AGE_RATINGS:
        raise ConfigError(f"{where}: field 'age_rating' {row['age_rating']!r} is not one of A, T, OT, M")
    bad_formats = [f for f in row["formats"] if f not in FORMATS]
    if bad_formats:
        raise ConfigError(f"{where}: field 'formats' has unknown format(s) {bad_formats}")
    return Series(
        id=row["id"],
        title=row["title"],
        author=row["author"],
        publisher=row["publisher"],
        year=row.get("year"),
        genres=tuple(row["genres"]),
        demographic=row["demographic"],
        age_rating=row["age_rating"],
        min_age=row["min_age"],
        volumes=row["volumes"],
        status=row["status"],
        price_usd=float(row["price_usd"]),
        formats={k: int(v) for k, v in row["formats"].items()},
        description=row["description"],
        aliases=tuple(str(a) for a in row.get("aliases", [])),
    )


# Titles (or title heads) that are ordinary English words match only when capitalised as a title
# ("Real", "Monster", "Black Jack") or when the words around them make them one ("who is the author
# of monster", "nana manga", "is real finished?"): "a real person" or "look back at my order" name
# no manga.
AMBIGUOUS_NAMES = frozenset(
    "aria berserk blame bleach buddha claymore monster nana pluto real vagabond mission orange phoenix "
    "shiki".split()
) | {"look back", "black jack", "ping pong", "special a", "say i love you", "kiss him not me", "grand blue"}

AMBIGUOUS_AUTHORS = frozenset({"one", "hero", "afro", "junko", "fujita", "takahiro"})
"""Pen names that are ordinary words or common names: found only as the catalog spells them."""

# Words around a lower-case ambiguous name that make it a title (all in ``normalize`` form).
_TITLE_AFTER = frozenset(
    "manga mangas series vol vols volume volumes book books deluxe omnibus hardcover hardback paperback "
    "paperbacks box boxset edition editions collection by author authors mangaka writer artist creator "
    "publisher tankobon".split()
)
"""A word right after the name: "nana manga", "monster vol 3", "real by takehiko inoue"."""
_TITLE_AFTER_VERB = frozenset(
    "wrote write writes written drew draw draws drawn created create creates made make makes "
    "illustrated publishes published publish serialized".split()
)
"""A verb right before the name: "who wrote monster", "who made real"."""
_FACT_NOUNS = frozenset(
    "author authors writer writers mangaka artist artists creator creators illustrator publisher "
    "volumes volume vols vol price cost rating genre genres status copy copies edition editions set "
    "format formats books chapters".split()
)
"""A noun before "of"/"for" and the name: "the author of monster", "volumes of nana"."""
_QUESTION_BEFORE = frozenset("is does did has was about in".split())
_QUESTION_AFTER = frozenset(
    "is has have does finished complete completed ongoing over done rated still ended about come "
    "cost costs".split()
)
"""Around the name in a question about a fact: "is nana finished?", "how many volumes does real have"."""
_PRODUCT_VERBS = frozenset("have sell carry stock got buy order find".split())
"""Before a name that ends the message (or comes before a volume number): "do you have nana?"."""


FACT_KINDS = (
    "author",
    "volumes",
    "status",
    "formats",
    "price",
    "age_rating",
    "publisher",
    "year",
    "genres",
    "description",
    "stock",
)
"""The facts about a series a customer can ask for, in the order an answer states them."""
_FACT_PATTERNS: dict[str, re.Pattern[str]] = {
    kind: re.compile(pattern)
    for kind, pattern in {
        "author": r"\b(?:authors?|writers?|mangakas?|artists?|illustrators?|creators?|written|drawn|"
        r"illustrated|made by|created by|by (?:who|whom|which)|whos it by|who (?:is|was) it by)\b|"
        r"\bwho\b(?: \w+){0,3} (?:wrote|writes|write|made|makes|drew|draws|draw|created|creates|did|"
        r"illustrated|is behind)\b|\bwho\b.* by$",
        "volumes": r"\bhow many\b(?: \w+){0,3} (?:vol\w*|books?|tomes?|parts?|chapters?|"
        r"tankobon|are there|are out|is it)\b|\b(?:number|count|total) of (?:volumes?|vols?|books?)\b|"
        r"\bvolume count\b|\bhow long\b(?: \w+){0,3} (?:is|series|run|go)\b|"
        r"\b(?:latest|last|newest|next|final|most recent) (?:volume|vol|book)\b|"
        r"\bvolumes? (?:are )?(?:there|out)\b",
        "status": r"\b(?:finished|finish|completed|concluded|ongoing|on going|ended|over|done|hiatus|"
        r"still (?:going|running|ongoing|coming out|publishing|being (?:published|released|made|written)|"
        r"releasing|out|in progress|serialized|serialised|continuing)|has it ended|did it end|"
        r"is it complete|complete yet)\b|\bcomplete(?! (?:set|series|collection|box|run))\b",
        "formats": r"\b(?:formats?|editions?|versions?|hardcovers?|hardbacks?|paperbacks?|omnibus(?:es)?|"
        r"deluxe|box ?sets?|3 in 1|kanzenban|come in|comes in|available in|what kind of (?:copies|books))\b",
        "price": r"\b(?:prices?|priced|pricing|costs?|costing|how much|expensive|cheap|cheaper|"
        r"dollars?|usd)\b",
        "age_rating": r"\b(?:age|ages|rated|rating|ratings|mature|appropriate|suitable|nsfw|explicit|adults?|"
        r"kids?|child|children|teens?|old enough|safe for|ok for|okay for|fine for|"
        r"\d{1,2} ?(?:years?|yrs?|yo))\b",
        "publisher": r"\b(?:publishers?|published by|publishes|publishing|imprint|licensed|licenses|license|"
        r"licensor|who (?:publishes|published|puts out|prints|releases))\b",
        "year": r"\b(?:what year|which year|year (?:it|did|was|of)|release year|first published|"
        r"first came out|since when|debuted?|"
        r"how old is)\b|\byear\b.*\b(?:start|started|began|begin|debuted?)\b|"
        r"\bwhen (?:did|was|were)\b.*\b(?:start|started|begin|began|come out|"
        r"came out|published|release|released|debut|debuted|serialized|serialised|first)\b",
        "genres": r"\b(?:genres?|what kind of|what type of|what sort of|category|demographic|shonen|"
        r"shounen|seinen|shojo|shoujo|josei|kodomo)\b",
        "description": r"\bwhat(?:s| is| was)\b.*\babout\b|\btell me about\b|\b(?:synopsis|plot|premise|"
        r"summary|storyline|story of)\b",
        "stock": r"\b(?:in stock|stock|available|availability|sold out|left|any copies)\b",
    }.items()
}
_FACT_WORDS: dict[str, tuple[str, ...]] = {
    "author": ("author", "writer", "mangaka", "artist", "creator", "illustrator"),
    "status": ("finished", "ongoing"),
    "publisher": ("publisher",),
    "genres": ("genre", "genres"),
    "age_rating": ("rating",),
}
"""Single keywords also recognised with a typo ("auther", "finsihed")."""
_NOT_TYPOS = frozenset("published publishes publish creature authority writes rates rather".split())
"""Real words close to a keyword above that do not ask for its fact."""


def asked_facts(text: str) -> tuple[str, ...]:
    """The series facts ``text`` asks about (``FACT_KINDS``, in that order); empty for none.

    "who wrote Monster and is it finished?" asks ``("author", "status")``. Misspelt keywords of five
    letters or more count ("auther", "how many volums").
    """
    norm = normalize(text)
    found = {kind for kind, pattern in _FACT_PATTERNS.items() if pattern.search(norm)}
    if "$" in text:
        found.add("price")
    words = [w for w in norm.split() if len(w) >= 5 and w not in _NOT_TYPOS]
    for kind, keywords in _FACT_WORDS.items():
        if kind not in found and any(
            w[0] == k[0] and fuzz.ratio(w, k) >= 82 for w in words for k in keywords
        ):
            found.add(kind)
    return tuple(k for k in FACT_KINDS if k in found)


def people(author: str) -> list[str]:
    """The persons of an ``author`` field: "Tsugumi Ohba & Takeshi Obata" -> both names."""
    return [p for p in (part.strip() for part in re.split(r"\s*(?:&|,| and )\s*", author)) if p]


def normalize_with_offsets(text: str) -> tuple[str, list[int]]:
    """``normalize(text)`` plus, for each character of the result, its index in ``text``."""
    out: list[str] = []
    offsets: list[int] = []
    pending_space = False
    for i, ch in enumerate(text):
        low = ch.lower()
        if low in "'’":
            continue
        if low == "&":
            low = " and "
        for c in low:
            if c.isascii() and c.isalnum():
                if pending_space and out:
                    out.append(" ")
                    offsets.append(i)
                pending_space = False
                out.append(c)
                offsets.append(i)
            else:
                pending_space = True
    return "".join(out), offsets


@dataclass(frozen=True)
class TitleMatch:
    series: Series
    score: float
    """Over 100 for an exact title or alias (longer names score higher), lower for fuzzy matches."""
    span: tuple[int, int] | None = None
    """Where in the original text the name stands (exact matches only)."""


class Catalog:
    """All series, with lexical lookups. Embedding lookups use ``matrix`` (set by the caller)."""

    def __init__(self, series: Sequence[Series]) -> None:
        self.series = list(series)
        self.by_id = {s.id: s for s in self.series}
        self._titles = [(normalize(s.title), s) for s in self.series]
        self._names: dict[str, Series] = {}
        for s in self.series:
            for name in self.names_of(s):
                key = normalize(name)
                if len(key) >= 3:
                    self._names.setdefault(key, s)
        alternation = "|".join(re.escape(n) for n in sorted(self._names, key=len, reverse=True))
        # group 1: the name; group 2: a possessive "s" ("Monster's author"), kept out of the span
        self._name_pattern = re.compile(rf"(?<![a-z0-9])({alternation})(s)?(?![a-z0-9])")
        self._authors: list[tuple[list[str], Series]] = []
        self.family_names: dict[str, frozenset[str]] = {}
        """Per series id, the normalised family names (or single names) of its authors."""
        for s in self.series:
            family: set[str] = set()
            for person in people(s.author):
                names = normalize(person).split()
                if names:
                    self._authors.append((names, s))
                    family.add(names[-1])
            self.family_names[s.id] = frozenset(family)
        self._works: dict[str, list[Series]] = {}
        for names, s in self._authors:
            self._works.setdefault(" ".join(names), []).append(s)
        self.matrix: Matrix | None = None

    def other_works(self, s: Series) -> dict[str, list[Series]]:
        """Per author of ``s`` (as written in the catalog), the other series of theirs we carry."""
        out: dict[str, list[Series]] = {}
        for person in people(s.author):
            others = [w for w in self._works.get(normalize(person), []) if w.id != s.id]
            if others:
                out[person] = others
        return out

    @staticmethod
    def names_of(s: Series) -> list[str]:
        """Every name ``s`` is found by: title, aliases, the title without a leading "The" ("Promised
        Neverland"), and either side of a colon ("Frieren", "Kimetsu no Yaiba")."""
        names = [s.title, *s.aliases]
        if s.title.lower().startswith("the "):
            names.append(s.title[4:])
        if ":" in s.title:
            head, tail = (part.strip() for part in s.title.split(":", 1))
            names.append(head)  # "Frieren", "Demon Slayer"
            if len(tail.split()) >= 2 or len(tail) >= 8:
                names.append(tail)  # "Beyond Journey's End", "Yozakura Family"
                if tail.lower().startswith("the "):
                    names.append(tail[4:])
        return names

    def title_spans(self, text: str) -> list[TitleMatch]:
        """Exact mentions of titles and aliases in ``text``, with their spans, longest names first.

        A name that is an ordinary English word (``AMBIGUOUS_NAMES``) counts when it is capitalised
        or when the words around it make it a title (``_titled_by_context``).
        """
        norm, offsets = normalize_with_offsets(text)
        found: list[TitleMatch] = []
        for m in self._name_pattern.finditer(norm):
            name = m.group(1)
            start, end = offsets[m.start(1)], offsets[m.end(1) - 1] + 1
            if m.group(2) and text[offsets[m.start(2)] - 1] not in "'’":
                continue  # "monsters": a plural, not "Monster's"
            if name in AMBIGUOUS_NAMES and not text[start].isupper():
                series = self._names[name]
                if not self._titled_by_context(norm, m.start(1), m.end(), series):
                    continue
            found.append(TitleMatch(self._names[name], 100.0 + len(name) / 100, (start, end)))
        return found

    def _titled_by_context(self, norm: str, start: int, end: int, series: Series) -> bool:
        """Whether the lower-case name at ``norm[start:end]`` is used as a title: "the author of
        monster", "nana manga", "who wrote real", "is nana finished?", "do you have monster",
        "monster by urasawa" (its author named); not "what a monster" or "a real person"."""
        before, after = norm[:start].split(), norm[end:].split()
        prev, prev2 = (before[-1] if before else ""), (before[-2] if len(before) > 1 else "")
        following = after[0] if after else ""
        if not before and not after:
            return True  # the whole message is the name
        if following in _TITLE_AFTER or prev in _TITLE_AFTER_VERB:
            return True
        if prev in ("of", "for") and (prev2 in _FACT_NOUNS or prev2.isdigit() or asked_facts(prev2)):
            return True
        if self.family_names[series.id] & set(before + after):
            return True
        if prev in _PRODUCT_VERBS and (not after or following.isdigit()):
            return True
        rest = f"{norm[:start]} {norm[end:]}"
        return (prev in _QUESTION_BEFORE or following in _QUESTION_AFTER) and bool(asked_facts(rest))

    @classmethod
    def load(cls, path: Path) -> Catalog:
        if not path.exists():
            raise ConfigError(f"{path}: no such file")
        series = []
        seen: set[str] = set()
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{where}: not JSON ({exc.msg})") from exc
            s = _series_from(row, where)
            if s.id in seen:
                raise ConfigError(f"{where}: duplicate id {s.id!r}")
            seen.add(s.id)
            series.append(s)
        return cls(series)

    def find_titles(self, text: str, limit: int = 3) -> list[TitleMatch]:
        """Series named in ``text``: exact titles and aliases first, else fuzzy matches (typos)."""
        found: dict[str, TitleMatch] = {}
        for match in self.title_spans(text):
            best = found.get(match.series.id)
            if best is None or match.score > best.score:
                found[match.series.id] = match
        if not found:
            query = normalize(text)
            tokens = query.split()
            for title, s in self._titles:
                if len(title) < 5:
                    continue
                if title in AMBIGUOUS_NAMES:
                    # a misspelt "besrerk" is the title; "monsters" or "berserker" is a word
                    if title not in query and (typo := _typo_score(title, tokens)):
                        found[s.id] = TitleMatch(s, typo)
                    continue
                score = fuzz.partial_ratio(title, query)
                words = [w for w in title.split() if w not in _STOP]
                # a fuzzy hit must share at least one distinctive word-ish stretch with the query
                if score >= 88 and any(fuzz.partial_ratio(w, query) >= 85 for w in words if len(w) > 3):
                    found[s.id] = TitleMatch(s, float(score))
                elif typo := _typo_score(title, tokens):
                    found[s.id] = TitleMatch(s, typo)
        return sorted(found.values(), key=lambda m: -m.score)[:limit]

    def find_authors(self, text: str) -> list[Series]:
        """Series whose author ``text`` names, by full or family name. A pen name that is an ordinary
        word ("ONE", "HERO", "Afro") counts only written as the catalog writes it: "the one by Junji
        Ito" names Junji Ito, not ONE."""
        query = f" {normalize(text)} "
        hits: list[Series] = []
        for names, s in self._authors:
            full = " ".join(names)
            family = names[-1] if len(names) > 1 else ""
            named = f" {full} " in query or (len(family) >= 3 and f" {family} " in query)
            if named and full in AMBIGUOUS_AUTHORS:
                named = any(
                    re.search(rf"(?<![A-Za-z]){re.escape(p)}(?![A-Za-z])", text)
                    for p in people(s.author)
                    if normalize(p) == full
                )
            if named and s not in hits:
                hits.append(s)
        return hits

    def nearest(
        self, vector: Vector, k: int = 5, candidates: Sequence[Series] | None = None
    ) -> list[tuple[Series, float]]:
        """Series most similar to ``vector`` (cosine), optionally among ``candidates`` only."""
        if self.matrix is None:
            raise RuntimeError("catalog embeddings are not loaded")
        scores = self.matrix @ vector
        index = {s.id: i for i, s in enumerate(self.series)}
        pool = candidates if candidates is not None else self.series
        ranked = sorted(((s, float(scores[index[s.id]])) for s in pool), key=lambda p: -p[1])
        return ranked[:k]

    def vector_of(self, series: Series) -> Vector:
        if self.matrix is None:
            raise RuntimeError("catalog embeddings are not loaded")
        return np.asarray(self.matrix[self.series.index(series)], dtype=np.float32)


def _typo_score(title: str, tokens: list[str]) -> float:
    """A fuzzy score (88) when some run of ``tokens`` as long as ``title`` (in words) is ``title``
    with one typo (a letter added, dropped, changed, or two swapped: "inuyaha", "besrerk"), two for
    titles of 11 letters or more; 0 otherwise. Titles under 7 letters need the partial match: one
    letter off "haikyu" is "haiku"."""
    if len(title) < 7:
        return 0.0
    n, allowed = len(title.split()), 1 if len(title) < 11 else 2
    for i in range(len(tokens) - n + 1):
        if OSA.distance(" ".join(tokens[i : i + n]), title, score_cutoff=allowed) <= allowed:
            return 88.0
    return 0.0


def find_volume(text: str) -> int | None:
    m = _VOLUME.search(text)
    return int(m.group(1)) if m else None


def find_formats(text: str) -> list[str]:
    """Every format ``text`` names, in ``FORMATS`` order: "omnibus or just paperback?" names two."""
    lowered = text.lower()
    named = {fmt for word, fmt in _FORMAT_WORDS.items() if word in lowered}
    return [f for f in FORMATS if f in named]


def find_format(text: str) -> str | None:
    lowered = text.lower()
    for word, fmt in _FORMAT_WORDS.items():
        if word in lowered:
            return fmt
    return None
