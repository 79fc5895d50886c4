from pathlib import Path

import pytest

from mangaassist.core import INTENTS, Artifact, Intent, Verdict, sha256_bytes


def test_worst_verdict_wins() -> None:
    assert Verdict.worst([Verdict.PASS, Verdict.INCONCLUSIVE]) is Verdict.INCONCLUSIVE
    assert Verdict.worst([Verdict.INCONCLUSIVE, Verdict.FAIL, Verdict.PASS]) is Verdict.FAIL
    assert Verdict.worst([]) is Verdict.PASS


def test_intent_labels_are_the_contract() -> None:
    assert INTENTS == (
        "product_search",
        "recommendation",
        "order_status",
        "policy_question",
        "chitchat",
        "human_handoff",
        "out_of_scope",
    )
    assert Intent("chitchat") is Intent.CHITCHAT


def test_artifact_digest_is_sha256_of_content(tmp_path: Path) -> None:
    path = tmp_path / "a.whl"
    path.write_bytes(b"wheel bytes")
    art = Artifact.of(path)
    assert art.digest == sha256_bytes(b"wheel bytes")
    assert art.short == art.digest[:12]
    path.write_bytes(b"other")
    assert Artifact.of(path).digest != art.digest


@pytest.mark.parametrize("bad", ["", "x" * 0])
def test_sha256_of_empty(bad: str) -> None:
    assert sha256_bytes(bad.encode()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
