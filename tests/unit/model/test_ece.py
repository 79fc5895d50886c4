"""Expected calibration error (15 equal-width bins) and the training-data switches."""

from __future__ import annotations

import pytest

from mangaassist.chatbot.intent import Example
from mangaassist.chatbot.intent_training import expected_calibration_error, select_examples, shuffled_labels
from mangaassist.core.intents import INTENTS


def test_perfect_calibration_is_zero() -> None:
    # 10 predictions at 0.8 confidence, 8 right: accuracy equals confidence in that bin
    assert expected_calibration_error([0.8] * 10, [True] * 8 + [False] * 2) == pytest.approx(0.0)


def test_overconfidence_is_the_gap_weighted_by_bin_share() -> None:
    # bin of 0.95 (4 predictions, 2 right): gap 0.45; bin of 0.55 (4, 2 right): gap 0.05
    ece = expected_calibration_error([0.95] * 4 + [0.55] * 4, [True, True, False, False] * 2)
    assert ece == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)


def test_bins_are_equal_width_and_right_closed() -> None:
    # 1/15 and 2/15 fall in different bins: (0, 1/15] and (1/15, 2/15]; one bin would average them
    low, high = 1 / 15, 2 / 15
    separate = expected_calibration_error([low, high], [False, True])
    assert separate == pytest.approx(0.5 * low + 0.5 * (1 - high))
    # confidence 0 joins the first bin, 1.0 the last
    assert expected_calibration_error([0.0, 1.0], [False, True]) == pytest.approx(0.0)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="confidences"):
        expected_calibration_error([0.5, 0.6], [True])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([1.2], [True])
    assert expected_calibration_error([], []) == 0.0


def _examples(per_intent: int) -> list[Example]:
    return [Example(f"{intent} {i}", intent) for i in range(per_intent) for intent in INTENTS]


def test_subset_is_stratified_seeded_and_in_file_order() -> None:
    examples = _examples(10)
    subset = select_examples(examples, 0.7, seed=7)
    assert len(subset) == 7 * len(INTENTS)
    assert {intent: sum(e.intent == intent for e in subset) for intent in INTENTS} == dict.fromkeys(
        INTENTS, 7
    )
    assert subset == select_examples(examples, 0.7, seed=7)
    assert subset != select_examples(examples, 0.7, seed=8)
    positions = [examples.index(e) for e in subset]
    assert positions == sorted(positions)
    assert select_examples(examples, 1.0, seed=7) == examples


def test_shuffled_labels_keep_texts_and_label_counts_but_not_pairs() -> None:
    examples = _examples(20)
    shuffled = shuffled_labels(examples, seed=7)
    assert [e.text for e in shuffled] == [e.text for e in examples]
    assert sorted(e.intent for e in shuffled) == sorted(e.intent for e in examples)
    kept = sum(a.intent == b.intent for a, b in zip(examples, shuffled, strict=True))
    assert kept < len(examples) / 3  # about 1/7 by chance
