"""``PrometheusMetrics``'s expansion of counter increases into observations (pure parts)."""

from __future__ import annotations

from collections import Counter

from mangaassist.platform.local.metrics_prometheus import (
    _ANSWERS,
    _FEEDBACK,
    _LATENCY,
    _REQUESTS,
    _TRANSPORT,
    _delta,
    _latencies,
    expand,
)
from mangaassist.platform.metrics import OutcomeKind


def test_a_counter_that_went_down_counts_from_zero() -> None:
    then = {("r1", "200"): 10.0, ("r1", "500"): 3.0}
    now = {("r1", "200"): 4.0, ("r1", "500"): 5.0, ("r2", "200"): 2.0}
    assert _delta(now, then) == {("r1", "200"): 4.0, ("r1", "500"): 2.0, ("r2", "200"): 2.0}


def test_latencies_take_each_bucket_upper_bound_and_inf_twice_the_largest() -> None:
    cumulative = {"0.05": 2, "0.1": 5, "0.5": 5, "+Inf": 6}
    assert _latencies(cumulative) == [50.0, 50.0, 100.0, 100.0, 100.0, 1000.0]
    assert _latencies({}) == []


def test_expand_gives_exact_statuses_flags_transport_errors_and_feedback() -> None:
    deltas = {
        _REQUESTS: {("r1", "200"): 8.0, ("r1", "500"): 1.0, ("r1", "504"): 1.0, ("r2", "200"): 5.0},
        _ANSWERS: {("r1", "true"): 3.0, ("r1", "false"): 5.0, ("r2", "false"): 5.0},
        _TRANSPORT: {("r1", "timeout"): 1.0},
        _FEEDBACK: {("r2", "up"): 2.0, ("r2", "down"): 1.0},
        _LATENCY: {("r1", "0.1"): 9.0, ("r1", "+Inf"): 10.0, ("r2", "0.2"): 5.0, ("r2", "+Inf"): 5.0},
    }
    out = expand("chatbot", deltas, start=1_000_000, end=2_000_000)
    seqs = [o.seq for o in out]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert seqs[0] > 1_000_000 and seqs[-1] == 2_000_000
    requests = [o for o in out if o.kind is OutcomeKind.REQUEST]
    by_rev = Counter((o.revision, o.status, o.error) for o in requests)
    assert by_rev == {
        ("r1", 200, None): 8,
        ("r1", 500, None): 1,
        ("r1", 0, "timeout"): 1,  # the 504 the router answered for a timeout gets its kind back
        ("r2", 200, None): 5,
    }
    assert sum(o.fallback for o in requests if o.revision == "r1") == 3
    assert not any(o.fallback for o in requests if o.status != 200)
    assert sorted(o.latency_ms for o in requests if o.revision == "r2") == [200.0] * 5
    assert sorted(o.latency_ms for o in requests if o.revision == "r1") == [100.0] * 9 + [200.0]
    ratings = Counter((o.revision, o.rating) for o in out if o.kind is OutcomeKind.FEEDBACK)
    assert ratings == {("r2", "up"): 2, ("r2", "down"): 1}
    # the failures are not all at the front: the order is shuffled, the same for the same window
    assert [o.seq for o in out if o.failed] != seqs[:2]
    assert expand("chatbot", deltas, start=1_000_000, end=2_000_000) == out


def test_an_empty_window_has_no_observations() -> None:
    assert expand("chatbot", {_REQUESTS: {}}, start=5, end=10) == ()


def test_increases_are_taken_per_exporter_so_one_that_stops_changes_nothing_else() -> None:
    """Two tasks of r1 export their own counters; one stops (scale-in), a third starts. Summed
    before the difference, the total would fall from 17 to 15 and count as a restart (15 requests);
    per series it is what happened: 3 more on task a, 2 on the new task c."""
    from mangaassist.platform.prometheus import _summed

    key = ("r1", "200")
    a, b, c = ((("instance", "a"),), (("instance", "b"),), (("instance", "c"),))
    then = {(key, a): 10.0, (key, b): 7.0}
    now = {(key, a): 13.0, (key, c): 2.0}
    assert _summed(_delta(now, then)) == {key: 5.0}
