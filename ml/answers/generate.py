"""Writes ml/answers/golden.jsonl and conversations.jsonl: the hand-written items of
handwritten.jsonl and handwritten_conversations.jsonl, then items generated from data/catalog.jsonl
and data/orders.jsonl (expected values read from the data, never from the chatbot).

    .venv/bin/python ml/answers/generate.py      # deterministic (seeded): re-running gives the same files

See README.md for the fields and the writing guidelines.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
RATING = {"A": "All Ages", "T": "Teen", "OT": "Older Teen", "M": "Mature"}
SEED = 20261207


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def typo(word: str, rng: random.Random) -> str:
    """One realistic slip: a dropped, doubled or swapped letter (words of 5+ letters only)."""
    spots = [i for i, ch in enumerate(word) if ch.isalpha()]
    if len(word) < 5 or len(spots) < 5:
        return word
    i = rng.choice(spots[1:-1])
    kind = rng.choice(("drop", "double", "swap"))
    if kind == "drop":
        return word[:i] + word[i + 1 :]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    j = i + 1 if i + 1 < len(word) and word[i + 1].isalpha() else i - 1
    a, b = sorted((i, j))
    return word[:a] + word[b] + word[a] + word[b + 1 :]


def name_forms(s: dict[str, Any], rng: random.Random) -> list[str]:
    """How customers name a series: exact, lower case, the part before a colon, an alias, a typo."""
    title = s["title"]
    forms = [title, title.lower()]
    head = title.split(":")[0].strip()
    if head != title and len(head) > 4:
        forms.append(head.lower())
    forms.extend(a for a in s.get("aliases", []) if len(a) > 2)
    words = title.lower().split()
    longest = max(range(len(words)), key=lambda i: len(words[i]))
    if len(words[longest]) >= 6:
        w = list(words)
        w[longest] = typo(words[longest], rng)
        forms.append(" ".join(w))
    return forms


NOT_FOUND = r"re:(couldn't|could not|can't|cannot|didn't|did not|don't|do not) (find|see)|not find|no order"
STATUS_DONE = r"re:\b(complete|completed|finished|ended)\b"
STATUS_ONGOING = r"re:\b(ongoing|still (running|going|coming out)|not (yet )?(finished|complete))\b"

QUESTIONS = {
    "author": [
        "who wrote {n}?",
        "who's the author of {n}",
        "{n} author?",
        "who is the mangaka behind {n}",
        "who made {n}",
    ],
    "volumes": [
        "how many volumes does {n} have?",
        "how many books are in {n}",
        "{n} how many vols",
        "how long is {n}, like how many volumes",
        "number of volumes in {n}?",
    ],
    "status": [
        "is {n} finished?",
        "is {n} completed or still ongoing",
        "has {n} ended yet",
        "is {n} done or still coming out?",
        "{n} complete?",
    ],
    "price": [
        "how much is {n}?",
        "what does a volume of {n} cost",
        "price of {n} per volume?",
        "{n} price",
        "how much are the {n} books",
    ],
    "formats": [
        "what formats does {n} come in?",
        "which editions of {n} do you have",
        "is {n} available in omnibus or just paperback?",
        "what versions of {n} can i buy",
    ],
    "rating": [
        "what's the age rating on {n}?",
        "is {n} ok for a 12 year old? what's it rated",
        "{n} age rating",
        "what rating is {n}",
    ],
    "publisher": [
        "who publishes {n}?",
        "which publisher puts out {n} in english",
        "{n} publisher?",
    ],
    "year": [
        "when did {n} first come out?",
        "what year did {n} start",
        "how old is {n}, when was it first published",
    ],
    "genres": [
        "what genre is {n}?",
        "what kind of manga is {n}",
        "{n} genres?",
    ],
}


def facts_for(kind: str, s: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(facts, must_not) a right answer about ``kind`` of series ``s`` has, from the data."""
    if kind == "author":  # co-authors each by name ("A & B" may read "A and B")
        return [a.strip() for a in s["author"].split("&")], []
    if kind == "volumes":
        return [rf"re:\b{s['volumes']}\s+(volumes|vols|books)\b"], []
    if kind == "status":
        if s["status"] == "completed":
            return [STATUS_DONE], [r"re:\bongoing\b"]
        return [STATUS_ONGOING], [r"re:\b(is|it's) complete(d)?\b"]
    if kind == "price":
        return [f"${s['price_usd']:.2f}"], []
    if kind == "formats":
        return [f.replace("_", " ") for f in s["formats"]], []
    if kind == "rating":
        return [RATING[s["age_rating"]]], []
    if kind == "publisher":
        return [s["publisher"]], []
    if kind == "year":
        return [str(s["year"])], []
    if kind == "genres":
        return ["re:" + g.replace("-", "[ -]") for g in s["genres"][:2]], []
    raise ValueError(kind)


def catalog_items(catalog: list[dict[str, Any]], rng: random.Random, count: int) -> list[dict[str, Any]]:
    kinds = list(QUESTIONS)
    # series a customer could name: skip titles that are common English words (they need capitals)
    pool = [s for s in catalog if s.get("year")]
    rng.shuffle(pool)
    out = []
    for n in range(count):
        s = pool[n % len(pool)]
        kind = kinds[n % len(kinds)]
        forms = name_forms(s, rng)
        name = rng.choice(forms)
        text = rng.choice(QUESTIONS[kind]).format(n=name)
        if rng.random() < 0.5:
            text = text.lower()
        if rng.random() < 0.3:
            text = text.rstrip("?")
        facts, must_not = facts_for(kind, s)
        tags = ["generated", "catalog", kind]
        if name == s["title"].lower() or name == s["title"]:
            tags.append("full-title")
        elif name in s.get("aliases", []):
            tags.append("alias")
        elif re.sub(r"[^a-z ]", "", name) and name not in (s["title"], s["title"].lower()):
            tags.append("partial-or-typo")
        out.append(
            {
                "id": f"cat-{n + 1:03d}",
                "message": text,
                "intent": "product_search",
                "facts": facts,
                "sources": [s["id"]],
                "must_not": must_not,
                "customer": None,
                "tags": tags,
            }
        )
    return out


ORDER_QUESTIONS = [
    ("where is my order {o}?", "full"),
    ("whats the status of {o}", "full"),
    ("has {o} shipped yet", "full"),
    ("when will order {n} arrive", "number"),
    ("any update on #{n}?", "hash"),
    ("can you check {lo} for me", "lower"),
    ("what did i buy in order {n}", "items"),
]
STATUS_FACT = {
    "delivered": r"re:\bdelivered\b",
    "shipped": r"re:\bshipped\b",
    "processing": r"re:\bprocessing|not shipped\b",
    "preorder": r"re:\bpre-?order\b",
    "returned": r"re:\breturned\b",
    "cancelled": r"re:\bcancell?ed\b",
}


def order_items(orders: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for n, order in enumerate(orders):
        oid = order["order_id"]
        number = oid.split("-")[1]
        template, form = ORDER_QUESTIONS[n % len(ORDER_QUESTIONS)]
        text = template.format(o=oid, n=number, lo=oid.lower().replace("-", ""))
        if form == "items":
            facts = [i["title"] for i in order["items"]]
        else:
            facts = [STATUS_FACT[order["status"]]]
            if order["status"] == "shipped":
                facts.append(order["carrier"])
        out.append(
            {
                "id": f"ord-{n + 1:03d}",
                "message": text,
                "intent": "order_status",
                "facts": facts,
                "sources": [oid],
                "must_not": [],
                "customer": order["customer_id"],
                "tags": ["generated", "order", form],
            }
        )
    # someone else's order reads as not found, and says nothing about it
    others = rng.sample(orders, 6)
    for n, order in enumerate(others):
        asker = next(o["customer_id"] for o in orders if o["customer_id"] != order["customer_id"])
        out.append(
            {
                "id": f"ord-other-{n + 1:02d}",
                "message": f"where is order {order['order_id']}",
                "intent": "order_status",
                "facts": [NOT_FOUND],
                "sources": [],
                "must_not": [v for v in (order.get("carrier"), order.get("tracking")) if v],
                "customer": asker,
                "tags": ["generated", "order", "another-customer"],
            }
        )
    # anonymous: asked to sign in
    for n, order in enumerate(rng.sample(orders, 4)):
        out.append(
            {
                "id": f"ord-anon-{n + 1:02d}",
                "message": rng.choice(
                    ["where's my package {o}", "track {o} please", "status of {o}?"]
                ).format(o=order["order_id"]),
                "intent": "order_status",
                "facts": [r"re:sign(ed)? ?in"],
                "sources": [],
                "must_not": [v for v in (order.get("carrier"),) if v],
                "customer": None,
                "tags": ["generated", "order", "anonymous"],
            }
        )
    return out


def age_items(catalog: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Recommendations for a stated age: no series rated above it may be named."""
    asks = [
        ("manga recs for my 10 year old?", 10),
        ("what should my 8 yo niece read", 8),
        ("good manga for a 14 year old boy who likes sports", 14),
        ("suggest something for a 12 year old who loves fantasy", 12),
        ("gift ideas for a 13-year-old who just got into manga", 13),
    ]
    out = []
    for n, (text, age) in enumerate(asks):
        too_old = sorted(s["title"] for s in catalog if s["min_age"] > age and len(s["title"]) > 5)
        out.append(
            {
                "id": f"rec-age-{n + 1:02d}",
                "message": text,
                "intent": "recommendation",
                "facts": [],
                "sources": [],
                "must_not": too_old,
                "customer": None,
                "tags": ["generated", "recommendation", "age"],
            }
        )
    return out


CONVERSATION_SHAPES = [
    [
        ("do you have {n}?", "product_search", "title"),
        ("who wrote it?", "product_search", "author"),
        ("and how many volumes does it have?", "product_search", "volumes"),
    ],
    [
        ("looking for {n}", "product_search", "title"),
        ("is that one finished?", "product_search", "status"),
        ("how much is each volume", "product_search", "price"),
    ],
    [
        ("hi", "chitchat", None),
        ("how much is {n}", "product_search", "price"),
        ("what's it rated?", "product_search", "rating"),
    ],
    [
        ("tell me about {n}", "product_search", "title"),
        ("which formats does it come in", "product_search", "formats"),
        ("thanks!", "chitchat", None),
    ],
    [
        ("{n} pls", "product_search", "title"),
        ("who publishes it", "product_search", "publisher"),
        ("is it complete?", "product_search", "status"),
    ],
]


def conversations(catalog: list[dict[str, Any]], rng: random.Random, count: int) -> list[dict[str, Any]]:
    pool = [s for s in catalog if s.get("year")]
    rng.shuffle(pool)
    out = []
    for n in range(count):
        s = pool[n]
        name = rng.choice(name_forms(s, rng))
        turns = []
        for text, intent, kind in CONVERSATION_SHAPES[n % len(CONVERSATION_SHAPES)]:
            turn: dict[str, Any] = {"message": text.format(n=name), "intent": intent}
            if kind == "title":
                turn.update(facts=[s["title"]], sources=[s["id"]])
            elif kind is not None:
                facts, must_not = facts_for(kind, s)
                turn.update(facts=facts, sources=[s["id"]], must_not=must_not)
            if kind not in (None, "title"):
                turn["tags"] = ["follow-up", kind]
            turns.append(turn)
        out.append({"id": f"conv-cat-{n + 1:02d}", "customer": None, "turns": turns, "tags": ["generated"]})
    return out


def main() -> None:
    rng = random.Random(SEED)
    catalog = rows(ROOT / "data" / "catalog.jsonl")
    orders = rows(ROOT / "data" / "orders.jsonl")
    hand = rows(HERE / "handwritten.jsonl")
    items = hand + catalog_items(catalog, rng, 180) + order_items(orders, rng) + age_items(catalog)
    with (HERE / "golden.jsonl").open("w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    talks = rows(HERE / "handwritten_conversations.jsonl") + conversations(catalog, rng, 20)
    with (HERE / "conversations.jsonl").open("w", encoding="utf-8") as f:
        for talk in talks:
            f.write(json.dumps(talk, ensure_ascii=False) + "\n")
    print(f"{len(items)} questions ({len(hand)} hand-written), {len(talks)} conversations")


if __name__ == "__main__":
    main()
