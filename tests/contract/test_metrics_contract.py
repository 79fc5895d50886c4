"""The ``Metrics`` contract: what the rollout phases' judges rely on, the same assertions on the
local routers' records (a real control plane), on CloudWatch (moto's server) and on Amazon Managed
Prometheus's query API (``AmpMetrics``, SigV4-signed, against a real Prometheus scraping a real
control plane's routers; conftest.py).

Relied on: a cursor taken before traffic starts a window; the window's outcomes count every
request per revision exactly, with its failures and quality flags, numbered after the cursor and
in order; the batch's cursor starts the next window, which counts only what came after (nothing
twice, nothing lost).
"""

from __future__ import annotations

from collections import Counter

import pytest

from mangaassist.platform.metrics import OutcomeBatch, OutcomeKind
from tests.contract.conftest import Side, side_named

pytestmark = pytest.mark.slow  # the local side starts a control plane and workers


@pytest.fixture(params=["local", "aws", "amp"])
def side(request: pytest.FixtureRequest) -> Side:
    return side_named(request, request.param)


def _requests(batch: OutcomeBatch) -> list:  # type: ignore[type-arg]
    return [o for o in batch.outcomes if o.kind is OutcomeKind.REQUEST]


def test_outcomes_count_each_revisions_requests_over_a_window(side: Side) -> None:
    c, m = side.compute, side.metrics
    c.deploy("counts", side.revision("a"), timeout_s=60)
    c.deploy("counts", side.revision("b", TESTAPP_FAIL_EVERY="2"), timeout_s=60)
    start = m.cursor("counts")
    c.set_weights("counts", {"a": 100.0})
    side.traffic("counts", "a", 6, fallback=2)
    c.set_weights("counts", {"b": 100.0})
    side.traffic("counts", "b", 4, failed=2)  # b fails every 2nd request
    side.settle()

    batch = m.outcomes("counts", start)
    requests = _requests(batch)
    assert Counter(o.revision for o in requests) == {"a": 6, "b": 4}
    assert Counter(o.revision for o in requests if o.failed) == {"b": 2}
    assert Counter(o.revision for o in requests if o.fallback) == {"a": 2}
    assert all(o.latency_ms > 0 for o in requests if not o.failed)
    seqs = [o.seq for o in batch.outcomes]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(start < s <= batch.cursor for s in seqs)
    assert batch.lost == 0

    # the next window starts at the batch's cursor: it holds only what came after
    c.set_weights("counts", {"a": 100.0})
    side.traffic("counts", "a", 3)
    side.settle()
    later = m.outcomes("counts", batch.cursor)
    assert Counter(o.revision for o in _requests(later)) == {"a": 3}
    assert all(o.seq > batch.cursor for o in later.outcomes)
    assert _requests(m.outcomes("counts", later.cursor)) == []
    # a reader that starts over from the first cursor sees both windows, once each
    assert Counter(o.revision for o in _requests(m.outcomes("counts", start))) == {"a": 9, "b": 4}
    assert m.shadow("counts", "b").requests == 0
    assert m.snapshot("counts")  # for people: whatever the provider has, as JSON
