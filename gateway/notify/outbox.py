"""The durable outbox: a notification is in the alarm store before anyone tries to send it.

Rows are written in the same transaction as the alarm change that caused them
(``AlarmStore.apply(..., outbox=...)``), keyed by the notification's idempotency key, so a
crash, a replay or a retry can never produce a second message. Each row is retried on its
own schedule: one failing channel never delays or marks another (ElastAlert2 marks an alert
sent when *any* channel succeeded — the counter-example).

Exactly once across instances: when several gateways share one PostgreSQL store, each row is
*claimed* before it is sent. :meth:`Outbox.due` and :meth:`Outbox.pending_in_groups` set
``claimed_by``/``claimed_until_ms`` on the rows they return, in one statement that skips rows
another sender has locked (``FOR UPDATE SKIP LOCKED``) or holds an unexpired claim on. A claim
ends when the attempt is recorded (:meth:`Outbox.record`) or the row is deferred; a claimer that
died leaves its claim to expire after ``claim_s``, and then another instance retries the row.
``claim_s`` must outlast the longest send (channel timeouts are 10 s; the default is 120 s),
else a slow sender and the next claimer could both deliver. SQLite runs the same statements (one
process: the claims never contend, and sqlite.py drops stale ones when the file is opened).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from dataclasses import dataclass

from gateway.alarms.db import Db, Row
from gateway.alarms.store import AlarmStore, OutboxRow, insert_outbox, prune_ack_tokens
from gateway.notify.base import Notification, SendOutcome, SendResult

log = logging.getLogger(__name__)

#: How long a claim keeps other senders off a row (far longer than any channel's timeout).
CLAIM_S = 120.0
_PENDING_COLUMNS = ("notification, attempts, created_at_ms, deadline_ms, fire_class, group_key,"
                    " group_interval_ms, next_at_ms")


def _returning(conn: Db) -> str:
    # The insertion order breaks ties, so a digest names its group's first alarm first.
    return f" RETURNING {_PENDING_COLUMNS}, {conn.outbox_order}"


@dataclass(frozen=True, slots=True)
class Pending:
    """A row due for sending."""

    notification: Notification
    attempts: int
    created_at_ms: int
    deadline_ms: int
    fire_class: bool
    group_key: str = ""            # '' never merges with anything
    group_interval_ms: int = 0     # a group sends at most once per this interval


def outbox_row(n: Notification, *, now_ms: int, due_ms: int, deadline_ms: int,
               fire_class: bool, group_key: str = "",
               group_interval_ms: int = 0) -> OutboxRow:
    """The row ``AlarmStore.apply(outbox=...)`` inserts for ``n``."""
    doc = json.dumps(dataclasses.asdict(n), ensure_ascii=False, default=dict)
    # Fire-class messages are never merged: each one goes out on its own, at once.
    key = "" if fire_class else group_key
    return OutboxRow(key=n.key, channel=n.channel, recipient=n.recipient, notification_json=doc,
                     fire_class=fire_class, created_at_ms=now_ms, due_ms=due_ms,
                     deadline_ms=deadline_ms, group_key=key,
                     group_interval_ms=group_interval_ms if key else 0)


def _notification(doc: str) -> Notification:
    data = json.loads(doc)
    return Notification(**data)


def _pending(r: Row) -> Pending:
    return Pending(_notification(r[0]), int(r[1]), int(r[2]), int(r[3]), bool(r[4]), str(r[5]),
                   int(r[6]))


class Outbox:
    """Reads and updates outbox rows in the alarm store's database.

    ``claimer`` names this sender in its claims (a fresh id per Outbox unless given)."""

    def __init__(self, store: AlarmStore, *, claimer: str | None = None,
                 claim_s: float = CLAIM_S) -> None:
        self._store = store
        self.claimer = claimer or uuid.uuid4().hex
        self._claim_ms = int(claim_s * 1000)

    async def due(self, now_ms: int, limit: int = 200) -> list[Pending]:
        """Pending rows whose time has come, fire-class first, oldest first — claimed for this
        sender (rows another sender holds are left out)."""
        renew_before = now_ms + self._claim_ms // 2

        def claim(conn: Db) -> list[Pending]:
            order = f"ORDER BY fire_class DESC, next_at_ms, {conn.outbox_order}"
            with conn.write():
                # Ours and fresh: read, not rewritten (the dispatcher polls often while it
                # sends, and each rewrite would be a commit).
                rows = conn.execute(
                    f"SELECT {_PENDING_COLUMNS}, {conn.outbox_order} FROM outbox"
                    " WHERE state = 'pending' AND next_at_ms <= ? AND claimed_by = ?"
                    f" AND claimed_until_ms >= ? {order} LIMIT ?",
                    (now_ms, self.claimer, renew_before, limit)).fetchall()
                if len(rows) < limit:
                    # Free, expired, or ours and half used up: (re)claim them.
                    rows += conn.execute(
                        "UPDATE outbox SET claimed_by = ?, claimed_until_ms = ?"
                        " WHERE key IN (SELECT key FROM outbox"
                        "  WHERE state = 'pending' AND next_at_ms <= ?"
                        "  AND (claimed_by IS NULL OR claimed_until_ms < ?"
                        "       OR (claimed_by = ? AND claimed_until_ms < ?))"
                        f"  {order} LIMIT ?{conn.for_update()})" + _returning(conn),
                        (self.claimer, now_ms + self._claim_ms, now_ms, now_ms, self.claimer,
                         renew_before, limit - len(rows))).fetchall()
            # RETURNING keeps no order: fire-class first, then oldest first.
            rows.sort(key=lambda r: (-int(r[4]), int(r[7]), int(r[8])))
            return [_pending(r) for r in rows]
        return await self._store.execute(claim)

    async def pending_in_groups(self, group_keys: list[str], now_ms: int) -> list[Pending]:
        """Every first-attempt pending row of these groups, due or not, claimed like
        :meth:`due`: when a group leaves, it takes everything that has piled up in it
        (Alertmanager's group flush)."""
        def claim(conn: Db) -> list[Pending]:
            marks = ",".join("?" for _ in group_keys)
            with conn.write():
                rows = conn.execute(
                    "UPDATE outbox SET claimed_by = ?, claimed_until_ms = ?"
                    " WHERE key IN (SELECT key FROM outbox"
                    f"  WHERE state = 'pending' AND attempts = 0 AND group_key IN ({marks})"
                    "  AND (claimed_by IS NULL OR claimed_by = ? OR claimed_until_ms < ?)"
                    f"{conn.for_update()})" + _returning(conn),
                    (self.claimer, now_ms + self._claim_ms, *group_keys, self.claimer,
                     now_ms)).fetchall()
            rows.sort(key=lambda r: (int(r[7]), int(r[8])))
            return [_pending(r) for r in rows]
        return await self._store.execute(claim)

    async def next_due_ms(self) -> int | None:
        """When the next row may be sent by this sender (a row another sender holds: when its
        claim runs out)."""
        def read(conn: Db) -> int | None:
            row = conn.execute(
                "SELECT min(CASE WHEN claimed_by IS NULL OR claimed_by = ?"
                " OR claimed_until_ms IS NULL THEN next_at_ms ELSE claimed_until_ms END)"
                " FROM outbox WHERE state = 'pending'", (self.claimer,))
            value = row.fetchone()[0]
            return None if value is None else int(value)
        return await self._store.execute(read)

    async def record(self, key: str, result: SendResult, *, now_ms: int,
                     next_at_ms: int | None = None, dead: bool = False) -> None:
        """Store the outcome of one attempt: sent, failed for good, retry at ``next_at_ms``,
        or dead (gave up at the deadline). Ends this sender's claim on the row."""
        if result.outcome is SendOutcome.SENT:
            state = "sent"
        elif dead:
            state = "dead"
        elif result.outcome is SendOutcome.FAILED:
            state = "failed"
        else:
            state = "pending"

        def write(conn: Db) -> int:
            with conn.write():
                return conn.execute(
                    "UPDATE outbox SET state = ?, attempts = attempts + 1, last_error = ?,"
                    " provider_id = coalesce(?, provider_id),"
                    " next_at_ms = coalesce(?, next_at_ms),"
                    " sent_at_ms = CASE WHEN ? = 'sent' THEN ? ELSE sent_at_ms END,"
                    " claimed_by = NULL, claimed_until_ms = NULL"
                    # Only a pending row we hold (or nobody does): a late outcome from a
                    # sender whose claim ran out never overwrites the one who took over.
                    " WHERE key = ? AND state = 'pending'"
                    " AND (claimed_by IS NULL OR claimed_by = ?)",
                    (state, result.detail[:500], result.provider_id, next_at_ms, state, now_ms,
                     key, self.claimer)).rowcount
        if not await self._store.execute(write):
            # Our claim ran out and another sender took the row: its outcome is the one kept.
            log.warning("outbox row %s: claim lost before the outcome was recorded", key)

    async def defer(self, keys: list[str], until_ms: int) -> None:
        """Hold pending rows until ``until_ms`` (a group interval or a full rate window) without
        counting an attempt: the dispatcher then sleeps until that time instead of polling.
        Releases this sender's claim, so any instance may send them then."""
        def write(conn: Db) -> None:
            with conn.write():
                conn.executemany(
                    "UPDATE outbox SET claimed_by = NULL, claimed_until_ms = NULL,"
                    " next_at_ms = CASE WHEN next_at_ms < ? THEN ? ELSE next_at_ms END"
                    " WHERE key = ? AND state = 'pending'"
                    " AND (claimed_by IS NULL OR claimed_by = ?)",
                    [(until_ms, until_ms, k, self.claimer) for k in keys])
        await self._store.execute(write)

    async def group_holds(self, since_ms: int) -> dict[str, int]:
        """When each group last sent (after a restart, group_interval keeps counting)."""
        def read(conn: Db) -> dict[str, int]:
            rows = conn.execute(
                "SELECT group_key, max(sent_at_ms + group_interval_ms) FROM outbox"
                " WHERE group_key != '' AND state = 'sent' AND sent_at_ms >= ?"
                " GROUP BY group_key", (since_ms,))
            return {str(r[0]): int(r[1]) for r in rows}
        return await self._store.execute(read)

    async def prune(self, before_ms: int) -> int:
        """Forget finished rows (sent, failed, dead) created before ``before_ms``, and ack links
        that expired before it; the `notifications` measurement keeps the history."""
        def write(conn: Db) -> int:
            with conn.write():
                n = conn.execute("DELETE FROM outbox WHERE state != 'pending'"
                                 " AND created_at_ms < ?", (before_ms,)).rowcount
                n += prune_ack_tokens(conn, before_ms)
            return int(n)
        return await self._store.execute(write)

    async def counts(self) -> dict[str, int]:
        def read(conn: Db) -> dict[str, int]:
            rows = conn.execute("SELECT state, count(*) FROM outbox GROUP BY state")
            return {str(r[0]): int(r[1]) for r in rows}
        return await self._store.execute(read)

    async def sent_keys(self, prefix: str) -> set[str]:
        def read(conn: Db) -> set[str]:
            rows = conn.execute("SELECT key FROM outbox WHERE key LIKE ?", (prefix + "%",))
            return {str(r[0]) for r in rows}
        return await self._store.execute(read)

    async def enqueue(self, rows: list[OutboxRow]) -> int:
        """Insert rows made by :func:`outbox_row` outside an alarm transaction (fallbacks);
        a key already present is ignored. Returns how many rows were new."""
        def write(conn: Db) -> int:
            with conn.write():
                return insert_outbox(conn, rows)
        return await self._store.execute(write)
