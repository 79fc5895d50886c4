"""A model revision's name covers its environment: the platform reuses a live revision by name."""

from __future__ import annotations

from mangaassist.delivery.pipelines.model import _candidate_name


def test_the_environment_makes_another_revision() -> None:
    plain = _candidate_name("2", "abcdef0123456789", {})
    assert plain == "m2-abcdef01"
    fault = _candidate_name("2", "abcdef0123456789", {"MANGAASSIST_FAULT": "error_rate=0.4"})
    other = _candidate_name("2", "abcdef0123456789", {"MANGAASSIST_FAULT": "error_rate=1"})
    assert len({plain, fault, other}) == 3 and fault.startswith("m2-abcdef01-")
    assert fault == _candidate_name("2", "abcdef0123456789", {"MANGAASSIST_FAULT": "error_rate=0.4"})
