"""The answer-quality golden set, its scoring, the fabrication check and the gate (no chatbot)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mangaassist.chatbot.answer_quality import (
    Baseline,
    Case,
    GoldenError,
    Grounding,
    Reply,
    Report,
    Turn,
    claims_of,
    full_dict,
    load_golden,
    matches,
    report_from_dict,
    run,
    sample,
)
from mangaassist.core.intents import INTENTS
from mangaassist.delivery.pipelines.answers import GateSettings, answer_gate, paired

ROOT = Path(__file__).parents[3]
GOLDEN = ROOT / "ml" / "answers"


@pytest.fixture(scope="module")
def grounding() -> Grounding:
    return Grounding.load(ROOT)


def _catalog() -> dict[str, dict[str, object]]:
    rows = [json.loads(x) for x in (ROOT / "data" / "catalog.jsonl").read_text().splitlines() if x.strip()]
    return {str(r["id"]): r for r in rows}


# -- the set itself --------------------------------------------------------------------------------


def test_the_golden_set_is_large_varied_and_names_only_real_sources() -> None:
    cases = load_golden(GOLDEN)
    questions = [c for c in cases if not c.conversation]
    talks = [c for c in cases if c.conversation]
    assert len(questions) >= 300 and len(talks) >= 30
    per_intent = Counter(t.intent for c in cases for t in c.turns)
    assert set(per_intent) == set(INTENTS) and min(per_intent.values()) >= 15, per_intent
    series = set(_catalog())
    orders = {
        json.loads(x)["order_id"]
        for x in (ROOT / "data" / "orders.jsonl").read_text().splitlines()
        if x.strip()
    }
    pages = {p.stem for p in (ROOT / "knowledge").glob("*.md")}
    unknown = {s for c in cases for t in c.turns for s in t.sources} - series - orders - pages
    assert unknown == set()
    # order questions are asked by a signed-in customer, who owns the order they cite
    owner = {
        json.loads(x)["order_id"]: json.loads(x)["customer_id"]
        for x in (ROOT / "data" / "orders.jsonl").read_text().splitlines()
        if x.strip()
    }
    for c in cases:
        for t in c.turns:
            for s in t.sources:
                if s in owner:
                    assert c.customer == owner[s], (c.id, s)
    # follow-ups without a title ride on the conversation
    follow = [t for c in talks for t in c.turns if "follow-up" in t.tags]
    assert len(follow) >= 30
    kinds = Counter(k for c in cases for t in c.turns for k in t.tags)
    for kind in ("author", "volumes", "status", "price", "formats", "rating", "publisher", "year", "genres"):
        assert kinds[kind] >= 10, (kind, kinds[kind])
    messages = [t.message.lower() for c in questions for t in c.turns]
    assert len(set(messages)) >= 0.95 * len(messages)


def test_generated_catalog_facts_come_from_the_catalog() -> None:
    catalog = _catalog()
    checked = 0
    for case in load_golden(GOLDEN):
        for t in case.turns:
            if "price" in t.tags and t.sources:
                row = catalog[t.sources[0]]
                assert t.facts == (f"${float(str(row['price_usd'])):.2f}",), case.id
                checked += 1
            if "volumes" in t.tags and t.sources:
                assert str(catalog[t.sources[0]]["volumes"]) in t.facts[0], case.id
                checked += 1
    assert checked >= 40


def test_the_generator_reproduces_the_committed_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util
    import shutil

    for name in ("generate.py", "handwritten.jsonl", "handwritten_conversations.jsonl"):
        shutil.copy(GOLDEN / name, tmp_path / name)
    spec = importlib.util.spec_from_file_location("golden_generate", tmp_path / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "HERE", tmp_path)
    monkeypatch.setattr(module, "ROOT", ROOT)
    module.main()
    for name in ("golden.jsonl", "conversations.jsonl"):
        assert (tmp_path / name).read_text() == (GOLDEN / name).read_text(), name


# -- loading errors: file, line, field; nothing run --------------------------------------------------


def _write(tmp_path: Path, *lines: str, conversations: tuple[str, ...] = ()) -> Path:
    (tmp_path / "golden.jsonl").write_text("\n".join(lines) + "\n")
    if conversations:
        (tmp_path / "conversations.jsonl").write_text("\n".join(conversations) + "\n")
    return tmp_path


GOOD = '{"id": "a", "message": "hi", "intent": "chitchat"}'


@pytest.mark.parametrize(
    ("line", "field", "problem"),
    [
        ('{"id": "b", "message": "hi", "intent": "greeting"}', "intent", "not one of"),
        ('{"id": "b", "message": "  ", "intent": "chitchat"}', "message", "missing or empty"),
        (
            '{"id": "b", "message": "x", "intent": "chitchat", "facts": "re:("}',
            "facts",
            "bad regular expression",
        ),
        ('{"id": "b", "message": "x", "intent": "chitchat", "colour": 1}', "colour", "unknown field"),
        ('{"id": "b", "message": "x", "intent": "chitchat", "customer": 7}', "customer", "customer id"),
        ('{"id": "a", "message": "x", "intent": "chitchat"}', "id", "already used"),
        ('{"id": "b", "message": "x", "intent": "chitchat", "facts": [""]}', "facts", "non-empty strings"),
    ],
)
def test_a_bad_line_names_file_line_and_field(tmp_path: Path, line: str, field: str, problem: str) -> None:
    with pytest.raises(GoldenError) as caught:
        load_golden(_write(tmp_path, GOOD, line))
    err = caught.value
    assert err.path == tmp_path / "golden.jsonl" and err.line == 2 and err.field == field
    assert problem in str(err) and f"golden.jsonl:2: field '{field}'" in str(err)


def test_bad_json_and_bad_conversations_are_located(tmp_path: Path) -> None:
    with pytest.raises(GoldenError, match=r"golden.jsonl:1: not valid JSON"):
        load_golden(_write(tmp_path, '{"id": "a",'))
    bad_turn = (
        '{"id": "c", "turns": [{"message": "hi", "intent": "chitchat"}, {"message": "x", "intent": "nope"}]}'
    )
    with pytest.raises(GoldenError) as caught:
        load_golden(_write(tmp_path, GOOD, conversations=(bad_turn,)))
    assert caught.value.field == "turns[1].intent" and caught.value.path.name == "conversations.jsonl"
    one_turn = '{"id": "c", "turns": [{"message": "hi", "intent": "chitchat"}]}'
    with pytest.raises(GoldenError, match="at least two turns"):
        load_golden(_write(tmp_path, GOOD, conversations=(one_turn,)))
    with pytest.raises(GoldenError, match="not a directory"):
        load_golden(tmp_path / "nowhere")


# -- matching and fabrications -----------------------------------------------------------------------


def test_facts_match_text_or_regex_case_insensitively() -> None:
    assert matches("Kanehito Yamada", "by kanehito  yamada and Tsukasa Abe")
    assert matches(r"re:\b14\s+volumes\b", "complete with 14 Volumes")
    assert not matches(r"re:\b4\s+volumes\b", "with 14 volumes")
    assert not matches("$9.99", "costs $19.99")  # the dollar sign anchors a price fact


def test_claims_are_extracted() -> None:
    c = claims_of(
        "Each volume costs $12.99. Stock - paperback: 35 in stock; box set: out of stock. "
        "It shipped on 2026-06-01 and arrives June 6, 2026; first published in 1999."
    )
    assert c.prices == (12.99,)
    assert ("paperback", 35) in c.stock and ("box_set", 0) in c.stock
    assert (2026, 6, 1) in c.dates and (2026, 6, 6) in c.dates
    assert c.years == (1999,)
    # not claims: a volume number before "in stock", month-like words, a series' volume count
    none = claims_of("Volume 2 in stock? These are separate 3 books; the octopus 4 arc; 14 volumes.")
    assert none == claims_of("")


def test_a_claim_is_fabricated_unless_a_cited_source_backs_it(grounding: Grounding) -> None:
    row = _catalog()["20th-century-boys"]  # $22.99, paperback 35, deluxe 95, 1999
    assert row["price_usd"] == 22.99
    honest = "Each volume costs $22.99. Stock - paperback: 35 in stock; deluxe: 95 in stock. Since 1999."
    assert grounding.fabrications(honest, ["20th-century-boys"]) == []
    made_up = "Each volume costs $21.99. Stock - paperback: 36 in stock; deluxe: out of stock. Since 2001."
    assert grounding.fabrications(made_up, ["20th-century-boys"]) == [
        "price $21.99",
        "stock paperback: 36",
        "stock deluxe: out of stock",
        "year 2001",
    ]
    # a true price of another series is still unsupported when that series is not cited
    assert grounding.fabrications("Each volume costs $22.99.", ["one-piece"]) == ["price $22.99"]
    assert grounding.fabrications("It costs $22.99.", []) == ["price $22.99"]


def test_order_and_page_facts_are_checked_against_the_order_and_the_page(grounding: Grounding) -> None:
    order = "Order MA-100001 was placed on 2026-06-01, delivered on 2026-06-06. The total is $29.97."
    assert grounding.fabrications(order, ["MA-100001"]) == []
    assert grounding.fabrications(order.replace("06-06", "06-09"), ["MA-100001"]) == ["date 2026-06-09"]
    # the signed-in customer's own orders may be listed without being cited one by one
    assert grounding.fabrications(order, [], customer="cust-0001") == []
    assert grounding.fabrications(order, [], customer="cust-0002") != []
    page = "Standard shipping costs $4.99, free on orders of $50.00 or more; expedited is $12.99."
    assert grounding.fabrications(page, ["shipping-domestic"]) == []
    assert grounding.fabrications("Expedited shipping is $9.99.", ["shipping-domestic"]) == ["price $9.99"]


# -- running and scoring ---------------------------------------------------------------------------


class _Scripted:
    """A target answering from a table: message -> (answer, intent, sources)."""

    name = "scripted"

    def __init__(self, table: dict[str, tuple[str, str, tuple[str, ...]]]) -> None:
        self.table = table
        self.asked: list[tuple[str, str, str | None]] = []

    def ask(self, session: str, message: str, customer: str | None) -> Reply:
        self.asked.append((session, message, customer))
        answer, intent, sources = self.table[message]
        return Reply(answer, intent, sources)


def _cases() -> list[Case]:
    return [
        Case(
            "q1",
            (
                Turn(
                    "who wrote frieren",
                    "product_search",
                    ("Kanehito Yamada",),
                    ("frieren-beyond-journeys-end",),
                ),
            ),
        ),
        Case(
            "c1",
            (
                Turn("do you have berserk", "product_search", ("Berserk",), ("berserk",)),
                Turn(
                    "is it finished?",
                    "product_search",
                    (r"re:\bongoing\b",),
                    ("berserk",),
                    (r"re:\bcomplete\b",),
                ),
            ),
            customer="cust-0001",
            tags=("conversation",),
        ),
    ]


def test_run_scores_intent_facts_sources_forbidden_and_fabrications(grounding: Grounding) -> None:
    target = _Scripted(
        {
            "who wrote frieren": (
                "Frieren is by Kanehito Yamada and Tsukasa Abe.",
                "product_search",
                ("frieren-beyond-journeys-end",),
            ),
            "do you have berserk": ("Berserk costs $1.00 a volume.", "product_search", ("berserk",)),
            "is it finished?": ("Yes, it is complete.", "policy_question", ()),
        }
    )
    report = run(_cases(), target, grounding, run_id="t")
    assert [r.correct for r in report.results] == [True, True, False]
    assert [r.intent_ok for r in report.results] == [True, True, False]
    last = report.results[2]
    assert last.missing_facts == (r"re:\bongoing\b",) and not last.source_ok and last.forbidden
    assert report.fabrications == 1 and report.results[1].fabrications == ("price $1.00",)
    assert report.intent_accuracy == pytest.approx(2 / 3) and report.correctness == pytest.approx(2 / 3)
    # a conversation's turns share one session, as its customer; a question gets a session of its own
    sessions = [s for s, _, _ in target.asked]
    assert sessions[1] == sessions[2] != sessions[0]
    assert [c for _, _, c in target.asked] == [None, "cust-0001", "cust-0001"]
    assert report.per_intent()["product_search"]["turns"] == 3
    assert [(f.case, f.turn) for f in report.failures()] == [("c1", 0), ("c1", 1)]
    again = report_from_dict(json.loads(json.dumps(full_dict(report))))
    assert again.results == report.results


def test_sample_spreads_over_intents_and_is_deterministic() -> None:
    cases = load_golden(GOLDEN)
    picked = sample(cases, 21, seed=3)
    assert picked == sample(cases, 21, seed=3) and picked != sample(cases, 21, seed=4)
    questions = [c for c in picked if not c.conversation]
    assert len(questions) == 21 and Counter(c.intent for c in questions) == {i: 3 for i in INTENTS}
    assert len([c for c in picked if c.conversation]) == 2
    assert sample(cases, None) == cases


# -- the baseline and the gate -----------------------------------------------------------------------


def _report(intent_ok: list[bool], correct: list[bool], fabrications: int = 0) -> Report:
    from mangaassist.chatbot.answer_quality import TurnResult

    results = [
        TurnResult(
            f"c{i}",
            0,
            "m",
            "chitchat",
            "chitchat" if ok else "out_of_scope",
            "a",
            (),
            () if good else ("x",),
            True,
            (),
            ("price $1.00",) * (fabrications if i == 0 else 0),
        )
        for i, (ok, good) in enumerate(zip(intent_ok, correct, strict=True))
    ]
    return Report("t", results, len(results))


def test_the_gate_blocks_a_real_drop_against_live_not_noise() -> None:
    live = _report([True] * 40, [True] * 36 + [False] * 4)
    assert answer_gate(_report([True] * 40, [True] * 36 + [False] * 4), live).passed
    # 3 turns worse, none better: 7.5 points below, but p = 0.125: noise for a 40-turn sample
    noisy = answer_gate(_report([True] * 40, [True] * 33 + [False] * 7), live)
    assert noisy.passed
    flagged = next(c for c in noisy.checks if c.name == "answers: correctness")
    assert not flagged.passed and not flagged.blocking and "p = 0.125" in flagged.reason
    # 8 worse, none better: p = 0.004, blocks
    worse = answer_gate(_report([True] * 40, [True] * 28 + [False] * 12), live)
    assert not worse.passed and any("worse on 8 turns, better on 0" in r for r in worse.reasons)
    # the same drop within the tolerance passes whatever the test says
    assert answer_gate(_report([True] * 40, [True] * 28 + [False] * 12), live, tolerance=0.25).passed
    # fabrications: none allowed beyond live's
    fabricating = answer_gate(_report([True] * 40, [True] * 36 + [False] * 4, fabrications=1), live)
    assert not fabricating.passed and any("fabrications" in r for r in fabricating.reasons)
    alone = answer_gate(_report([False] * 10, [False] * 10))
    assert alone.passed  # no reference: rates recorded, not judged; fabrications still must be 0
    assert not answer_gate(_report([True], [True], fabrications=2)).passed


def test_paired_counts_losses_and_wins_on_the_same_turns() -> None:
    live = _report([True, True, False, False], [True, False, True, False])
    cand = _report([True, False, True, False], [False, True, True, False])
    assert paired(cand, live, "intent_ok") == (1, 1)
    assert paired(cand, live, "correct") == (1, 1)


def test_the_baseline_of_a_sample_is_exact(tmp_path: Path) -> None:
    report = _report([True, False, True, True], [True, False, False, True])
    recorded = Baseline.of(report, "minilm")
    recorded.write(tmp_path / "baseline.json")
    loaded = Baseline.load(tmp_path / "baseline.json")
    assert loaded is not None and loaded.cases == recorded.cases
    on = loaded.on(["c0", "c1"])
    assert on == {"intent_accuracy": 0.5, "correctness": 0.5, "fabrications": 0.0}
    assert loaded.on(["c0", "unknown"]) is None
    # against the baseline alone: the tolerance plus one turn of slack
    assert not answer_gate(_report([True] * 10, [True] * 3 + [False] * 7), None, on, tolerance=0.0).passed
    assert answer_gate(_report([True] * 10, [True] * 4 + [False] * 6), None, on, tolerance=0.0).passed
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(Exception, match="not a baseline file"):
        Baseline.load(tmp_path / "bad.json")


def test_gate_settings_come_from_run_params_and_bad_ones_are_refused() -> None:
    s = GateSettings.from_params({"answers_sample": "12", "answers_tolerance": 0.05})
    assert (s.sample, s.tolerance, s.seed, s.baseline) == (12, 0.05, 0, False)
    assert GateSettings.from_params({}).sample == 30
    for bad in (
        {"answers_sample": -1},
        {"answers_tolerance": 2},
        {"answers_sample": "many"},
        {"answers_alpha": 0},
    ):
        with pytest.raises(Exception, match="answers_"):
            GateSettings.from_params(bad)


def test_the_committed_baseline_matches_the_golden_set() -> None:
    from mangaassist.chatbot.answer_quality import golden_digest

    recorded = Baseline.load(GOLDEN / "baseline.json")
    assert recorded is not None
    assert recorded.golden == golden_digest(GOLDEN), (
        "golden set changed: re-record (mangaassist quality baseline)"
    )
    assert set(recorded.cases) == {c.id for c in load_golden(GOLDEN)}
    assert recorded.summary["fabrications"] == 0
