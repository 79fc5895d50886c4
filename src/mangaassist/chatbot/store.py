"""Sessions, orders, feedback and hand-off tickets, kept behind the ``Tables`` protocol.

Orders are keyed by customer: (pk=customer id, sk=order id). A lookup always goes through the
asking customer's partition, so another customer's order is indistinguishable from a missing one.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mangaassist.core.errors import ConfigError
from mangaassist.core.migrations import Rules
from mangaassist.platform.tables import Condition, ConditionFailed, Item, Tables

SESSIONS = "sessions"
ORDERS = "orders"
TICKETS = "tickets"
META = "meta"
ORDERS_BY_STATUS = "by-customer-status"
"""The orders index by customer and status (``infra/resources.toml``), filled by migration 0002."""


@dataclass(frozen=True)
class SessionState:
    session_id: str
    customer_id: str | None
    last_series: str | None
    created: bool
    """True when this request opened the session."""


class ChatStore:
    """``rules``: the live migration rules (CD-07), which say when a read may use a new shape; the
    writes follow them through ``tables`` (a ``platform.tables.ShapedTables``)."""

    def __init__(self, tables: Tables, rules: Callable[[], Rules] = Rules) -> None:
        self.tables = tables
        self.rules = rules

    # sessions -----------------------------------------------------------------
    def open_session(self, session_id: str, customer_id: str | None) -> SessionState:
        meta = self.tables.get(SESSIONS, session_id, META)
        if meta is None:
            meta = {
                "pk": session_id,
                "sk": META,
                "created_at": time.time(),
                "customer_id": customer_id,
                "last_series": None,
            }
            try:
                self.tables.put(SESSIONS, meta, condition=Condition.not_exists())
                created = True
            except ConditionFailed:  # a concurrent request opened it first
                meta = self.tables.get(SESSIONS, session_id, META) or meta
                created = False
        else:
            created = False
        return SessionState(
            session_id=session_id,
            customer_id=meta.get("customer_id"),
            last_series=meta.get("last_series"),
            created=created,
        )

    def record_turn(
        self,
        state: SessionState,
        customer_id: str | None,
        message: str,
        intent: str,
        answer: str,
        last_series: str | None,
    ) -> None:
        """Store a turn (``message`` must already be masked); update the session only if it changed.

        Turns are keyed by time (``turn#<ns>-<rand>``), so concurrent turns of one session never
        overwrite each other and no counter has to be read and written on every request.
        """
        now = time.time_ns()
        self.tables.put(
            SESSIONS,
            {
                "pk": state.session_id,
                "sk": f"turn#{now:020d}-{secrets.token_hex(2)}",
                "at": now / 1e9,
                "message": message,
                "intent": intent,
                "answer": answer,
            },
        )
        new_customer = customer_id is not None and state.customer_id is None
        if (last_series and last_series != state.last_series) or new_customer:
            meta = self.tables.get(SESSIONS, state.session_id, META) or {"pk": state.session_id, "sk": META}
            meta["customer_id"] = meta.get("customer_id") or customer_id
            if last_series:
                meta["last_series"] = last_series
            self.tables.put(SESSIONS, meta)

    def turns(self, session_id: str) -> list[Item]:
        return self.tables.query(SESSIONS, session_id, sk_prefix="turn#")

    def peek_session(self, session_id: str) -> SessionState:
        """The session as stored, without creating it (for requests that must write nothing)."""
        meta = self.tables.get(SESSIONS, session_id, META) or {}
        return SessionState(session_id, meta.get("customer_id"), meta.get("last_series"), created=False)

    def session_exists(self, session_id: str) -> bool:
        return self.tables.get(SESSIONS, session_id, META) is not None

    def record_feedback(self, session_id: str, rating: str) -> None:
        now = time.time()
        self.tables.put(
            SESSIONS,
            {
                "pk": session_id,
                "sk": f"feedback#{now:.6f}#{secrets.token_hex(2)}",
                "at": now,
                "rating": rating,
            },
        )

    # orders -------------------------------------------------------------------
    def customer_exists(self, customer_id: str) -> bool:
        """A customer the store knows: one with an order (the development sign-in asks)."""
        return bool(self.tables.query(ORDERS, customer_id, sk_prefix="MA-", limit=1))

    def order(self, customer_id: str, order_id: str) -> Item | None:
        return self.tables.get(ORDERS, customer_id, order_id)

    def orders_of(self, customer_id: str, limit: int = 5) -> list[Item]:
        return self.tables.query(ORDERS, customer_id, sk_prefix="MA-", limit=limit, descending=True)

    def orders_with_status(self, customer_id: str, status: str, limit: int = 5) -> tuple[list[Item], str]:
        """The customer's orders in ``status``, newest status change first, and how they were read:
        through the index by customer and status once its migration is cut over (``index``), else
        by reading the customer's partition and filtering (``partition``)."""
        if self.rules().index_readable(ORDERS, ORDERS_BY_STATUS):
            found = self.tables.query_index(
                ORDERS, ORDERS_BY_STATUS, f"{customer_id}#{status}", limit=limit, descending=True
            )
            return [o for o in found if o.get("pk") == customer_id], "index"
        mine = [
            o for o in self.tables.query(ORDERS, customer_id, sk_prefix="MA-") if o.get("status") == status
        ]
        mine.sort(key=lambda o: str(o.get("placed_at", "")), reverse=True)
        return mine[:limit], "partition"

    def seed_orders(self, path: Path) -> int:
        """Load ``data/orders.jsonl`` (idempotent: existing orders are left as they are)."""
        if not path.exists():
            raise ConfigError(f"{path}: no such file")
        count = 0
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row: dict[str, Any] = json.loads(line)
                item = {**row, "pk": row["customer_id"], "sk": row["order_id"]}
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ConfigError(f"{path}:{lineno}: not an order with customer_id and order_id") from exc
            try:
                self.tables.put(ORDERS, item, condition=Condition.not_exists())
                count += 1
            except ConditionFailed:
                pass
        return count

    # hand-off -----------------------------------------------------------------
    def open_ticket(self, session_id: str, customer_id: str | None, message: str) -> str:
        while True:
            ticket_id = f"HT-{secrets.token_hex(4).upper()}"
            try:
                self.tables.put(
                    TICKETS,
                    {
                        "pk": ticket_id,
                        "sk": META,
                        "session_id": session_id,
                        "customer_id": customer_id,
                        "message": message,
                        "opened_at": time.time(),
                        "status": "open",
                    },
                    condition=Condition.not_exists(),
                )
                return ticket_id
            except ConditionFailed:
                continue
