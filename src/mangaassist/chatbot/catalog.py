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
# ("Real", "Monster", "Black Jack"): "a real person" or "look back at my order" name no manga.
AMBIGUOUS_NAMES = frozenset(
    "aria berserk blame bleach buddha claymore monster nana pluto real vagabond mission orange phoenix "
    "shiki".split()
) | {"look back", "black jack", "ping pong", "special a", "say i love you", "kiss him not me", "grand blue"}


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
            names = [s.title, *s.aliases]
            if ":" in s.title:
                names.append(s.title.split(":")[0])  # "Frieren", "Demon Slayer"
            for name in names:
                key = normalize(name)
                if len(key) >= 3:
                    self._names.setdefault(key, s)
        alternation = "|".join(re.escape(n) for n in sorted(self._names, key=len, reverse=True))
        self._name_pattern = re.compile(rf"(?<![a-z0-9])(?:{alternation})(?![a-z0-9])")
        self._authors: list[tuple[list[str], Series]] = []
        for s in self.series:
            for person in re.split(r"\s*(?:&|,| and )\s*", s.author):
                names = normalize(person).split()
                if names:
                    self._authors.append((names, s))
        self.matrix: Matrix | None = None

    def title_spans(self, text: str) -> list[TitleMatch]:
        """Exact mentions of titles and aliases in ``text``, with their spans, longest names first."""
        norm, offsets = normalize_with_offsets(text)
        found: list[TitleMatch] = []
        for m in self._name_pattern.finditer(norm):
            name = m.group(0)
            start, end = offsets[m.start()], offsets[m.end() - 1] + 1
            if name in AMBIGUOUS_NAMES and not text[start].isupper():
                continue
            found.append(TitleMatch(self._names[name], 100.0 + len(name) / 100, (start, end)))
        return found

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
            for title, s in self._titles:
                if len(title) < 5 or title in AMBIGUOUS_NAMES:
                    continue
                score = fuzz.partial_ratio(title, query)
                words = [w for w in title.split() if w not in _STOP]
                # a fuzzy hit must share at least one distinctive word-ish stretch with the query
                if score >= 88 and any(fuzz.partial_ratio(w, query) >= 85 for w in words if len(w) > 3):
                    found[s.id] = TitleMatch(s, float(score))
        return sorted(found.values(), key=lambda m: -m.score)[:limit]

    def find_authors(self, text: str) -> list[Series]:
        query = f" {normalize(text)} "
        hits: list[Series] = []
        for names, s in self._authors:
            full = " ".join(names)
            family = names[-1] if len(names) > 1 else ""
            named = f" {full} " in query or (len(family) >= 3 and f" {family} " in query)
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


def find_volume(text: str) -> int | None:
    m = _VOLUME.search(text)
    return int(m.group(1)) if m else None


def find_format(text: str) -> str | None:
    lowered = text.lower()
    for word, fmt in _FORMAT_WORDS.items():
        if word in lowered:
            return fmt
    return None
