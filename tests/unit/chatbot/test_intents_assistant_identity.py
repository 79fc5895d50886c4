"""Questions about the assistant itself get a straight answer from the chitchat handler: it is an AI,
not a person, and a person is available on request."""

from __future__ import annotations

import pytest

from mangaassist.chatbot.handlers import _CHITCHAT, _INTRO

IDENTITY = _CHITCHAT[-1][1]


def reply(message: str) -> str:
    return next((answer for pattern, answer in _CHITCHAT if pattern.search(message)), _INTRO)


@pytest.mark.parametrize(
    "message",
    [
        "are you a bot?",
        "what AI model powers you?",
        "am I talking to a real person",
        "is a human typing these replies?",
        "who built you",
        "is this automated?",
        "what tech is behind this chatbot",
        "r u an actual person",
    ],
)
def test_identity_questions(message: str) -> None:
    assert reply(message) == IDENTITY
    assert "AI" in IDENTITY and "not a person" in IDENTITY


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("thanks!", "You're welcome"),
        ("much appreciated", "You're welcome"),
        ("bye", "Goodbye"),
        ("hi", "Hi!"),
    ],
)
def test_other_small_talk_is_unchanged(message: str, expected: str) -> None:
    assert reply(message).startswith(expected)
