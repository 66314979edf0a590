"""The durable outbox: a notification is in SQLite before anyone tries to send it.

Rows are written in the same transaction as the alarm change that caused them
(``AlarmStore.apply(..., outbox=...)``), keyed by the notification's idempotency key, so a
crash, a replay or a retry can never produce a second message. Each row is retried on its
own schedule: one failing channel never delays or marks another (ElastAlert2 marks an alert
sent when *any* channel succeeded — the counter-example).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from dataclasses import dataclass

from gateway.alarms.store import AlarmStore, OutboxRow, insert_outbox, prune_ack_tokens
from gateway.notify.base import Notification, SendOutcome, SendResult


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
    # Shallow on purpose: dataclasses.asdict deep-copies the alarm document before encoding,
    # a tenth of the loop's time in a fire storm; json.dumps walks it anyway.
    doc = json.dumps({f.name: getattr(n, f.name) for f in dataclasses.fields(n)},
                     ensure_ascii=False, default=dict)
    # Fire-class messages are never merged: each one goes out on its own, at once.
    key = "" if fire_class else group_key
    return OutboxRow(key=n.key, channel=n.channel, recipient=n.recipient, notification_json=doc,
                     fire_class=fire_class, created_at_ms=now_ms, due_ms=due_ms,
                     deadline_ms=deadline_ms, group_key=key,
                     group_interval_ms=group_interval_ms if key else 0)


def _notification(doc: str) -> Notification:
    data = json.loads(doc)
    return Notification(**data)


class Outbox:
    """Reads and updates outbox rows in the alarm store's database."""

    def __init__(self, store: AlarmStore) -> None:
        self._store = store

    async def due(self, now_ms: int, limit: int = 200) -> list[Pending]:
        """Pending rows whose time has come, fire-class first, oldest first."""
        def read(conn: sqlite3.Connection) -> list[Pending]:
            rows = conn.execute(
                "SELECT notification, attempts, created_at_ms, deadline_ms, fire_class,"
                " group_key, group_interval_ms"
                " FROM outbox WHERE state = 'pending' AND next_at_ms <= ?"
                " ORDER BY fire_class DESC, next_at_ms LIMIT ?", (now_ms, limit))
            return [Pending(_notification(r[0]), r[1], r[2], r[3], bool(r[4]), r[5], r[6])
                    for r in rows]
        return await self._store.execute(read)

    async def pending_in_groups(self, group_keys: list[str]) -> list[Pending]:
        """Every first-attempt pending row of these groups, due or not: when a group leaves,
        it takes everything that has piled up in it (Alertmanager's group flush)."""
        def read(conn: sqlite3.Connection) -> list[Pending]:
            marks = ",".join("?" for _ in group_keys)
            rows = conn.execute(
                "SELECT notification, attempts, created_at_ms, deadline_ms, fire_class,"
                " group_key, group_interval_ms FROM outbox"
                f" WHERE state = 'pending' AND attempts = 0 AND group_key IN ({marks})"
                " ORDER BY next_at_ms", group_keys)
            return [Pending(_notification(r[0]), r[1], r[2], r[3], bool(r[4]), r[5], r[6])
                    for r in rows]
        return await self._store.execute(read)

    async def next_due_ms(self) -> int | None:
        def read(conn: sqlite3.Connection) -> int | None:
            row = conn.execute("SELECT min(next_at_ms) FROM outbox WHERE state = 'pending'")
            value = row.fetchone()[0]
            return None if value is None else int(value)
        return await self._store.execute(read)

    async def record(self, key: str, result: SendResult, *, now_ms: int,
                     next_at_ms: int | None = None, dead: bool = False) -> None:
        """Store the outcome of one attempt: sent, failed for good, retry at ``next_at_ms``,
        or dead (gave up at the deadline)."""
        if result.outcome is SendOutcome.SENT:
            state = "sent"
        elif dead:
            state = "dead"
        elif result.outcome is SendOutcome.FAILED:
            state = "failed"
        else:
            state = "pending"

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox SET state = ?, attempts = attempts + 1, last_error = ?,"
                " provider_id = coalesce(?, provider_id), next_at_ms = coalesce(?, next_at_ms),"
                " sent_at_ms = CASE WHEN ? = 'sent' THEN ? ELSE sent_at_ms END WHERE key = ?",
                (state, result.detail[:500], result.provider_id, next_at_ms, state, now_ms, key))
            conn.commit()
        await self._store.execute(write)

    async def defer(self, keys: list[str], until_ms: int) -> None:
        """Hold pending rows until ``until_ms`` (a group interval or a full rate window) without
        counting an attempt: the dispatcher then sleeps until that time instead of polling."""
        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE outbox SET next_at_ms = max(next_at_ms, ?)"
                " WHERE key = ? AND state = 'pending'", [(until_ms, k) for k in keys])
            conn.commit()
        await self._store.execute(write)

    async def group_holds(self, since_ms: int) -> dict[str, int]:
        """When each group last sent (after a restart, group_interval keeps counting)."""
        def read(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                "SELECT group_key, max(sent_at_ms + group_interval_ms) FROM outbox"
                " WHERE group_key != '' AND state = 'sent' AND sent_at_ms >= ?"
                " GROUP BY group_key", (since_ms,))
            return {str(r[0]): int(r[1]) for r in rows}
        return await self._store.execute(read)

    async def prune(self, before_ms: int) -> int:
        """Forget finished rows (sent, failed, dead) created before ``before_ms``, and ack links
        that expired before it; the `notifications` measurement keeps the history."""
        def write(conn: sqlite3.Connection) -> int:
            n = conn.execute("DELETE FROM outbox WHERE state != 'pending' AND created_at_ms < ?",
                             (before_ms,)).rowcount
            n += prune_ack_tokens(conn, before_ms)
            conn.commit()
            return int(n)
        return await self._store.execute(write)

    async def counts(self) -> dict[str, int]:
        def read(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute("SELECT state, count(*) FROM outbox GROUP BY state")
            return {str(r[0]): int(r[1]) for r in rows}
        return await self._store.execute(read)

    async def sent_keys(self, prefix: str) -> set[str]:
        def read(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute("SELECT key FROM outbox WHERE key LIKE ? || '%'", (prefix,))
            return {str(r[0]) for r in rows}
        return await self._store.execute(read)

    async def enqueue(self, rows: list[OutboxRow]) -> int:
        """Insert rows made by :func:`outbox_row` outside an alarm transaction (fallbacks);
        a key already present is ignored. Returns how many rows were new."""
        def write(conn: sqlite3.Connection) -> int:
            return insert_outbox(conn, rows)
        return await self._store.execute(write)
