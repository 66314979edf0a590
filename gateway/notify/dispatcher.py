"""The one retry stage: takes due rows from the outbox and hands them to their channels.

- Each notification is sent at most once at a time and retried on its own schedule (capped
  exponential backoff with jitter, or the provider's Retry-After) until its deadline; then it is
  dead: counted, logged, and kept for the audit.
- Channels run independently: a slow or failing SMS provider never delays a DingTalk message.
- Rate limits per channel (robots allow ~20/min, SMS costs money) hold back ordinary messages
  but never a fire-class one.
- A notification that fails for good (or goes dead at its deadline) on a channel with a
  ``fallback`` is enqueued once more on the fallback channel, key suffixed ``:fallback``.
- Every attempt becomes a point in the ``notifications`` measurement (channel, recipient hash,
  outcome, latency) through the gateway's write-ahead log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass

from gateway.logs import RateLimited
from gateway.metrics import Metrics
from gateway.notify.base import Channel, Notification, SendOutcome, SendResult
from gateway.notify.outbox import Outbox, Pending, outbox_row
from gateway.storage.lineprotocol import encode_line, escape_measurement, tag_set

log = logging.getLogger(__name__)
_MEASUREMENT = escape_measurement("notifications")
#: Retry interval cap for fire-class notifications while a provider is failing.
FIRE_MAX_BACKOFF_S = 5.0
FALLBACK_SUFFIX = ":fallback"
FALLBACK_DEADLINE_MS = 3600 * 1000


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``count`` non-fire messages per ``per_s`` seconds on one channel."""

    count: int
    per_s: float


class _Window:
    def __init__(self, limit: RateLimit) -> None:
        self._limit = limit
        self._sent: list[float] = []

    def room(self, now: float) -> int:
        """How many more messages fit in the window now."""
        horizon = now - self._limit.per_s
        self._sent = [t for t in self._sent if t > horizon]
        return max(0, self._limit.count - len(self._sent))

    def next_free(self, now: float) -> float:
        """When the next message fits (now, if there is room)."""
        if self.room(now) > 0:
            return now
        return self._sent[len(self._sent) - self._limit.count] + self._limit.per_s

    def note(self, now: float) -> None:
        self._sent.append(now)


#: How far back a restart looks for groups that are still inside their group_interval.
GROUP_MEMORY_MS = 24 * 3600 * 1000

#: Finished outbox rows and expired ack links are kept this long, checked hourly.
RETENTION_MS = 30 * 86_400_000
PRUNE_EVERY_MS = 3_600_000

#: How many alarms a digest lists before "+N more".
DIGEST_ITEMS = 10


def digest(batch: list[Pending]) -> Notification:
    """One message for several pending ones to the same recipient on the same channel.

    The first message keeps its key (the provider's dedup id), alarm document and SMS template
    parameters (an SMS template names one alarm; the count is in the text); the text lists up
    to DIGEST_ITEMS messages, each with its own acknowledge link."""
    first = batch[0].notification
    if len(batch) == 1:
        return first
    shown = [p.notification for p in batch[:DIGEST_ITEMS]]
    more = len(batch) - len(shown)
    text = "\n\n".join(n.text for n in shown)
    if more:
        text += f"\n\n(+{more}: 另有{more}条 / {more} more)"
    return dataclasses.replace(first, title=f"[{len(batch)}] {first.title}", text=text)


def _merge_per_recipient(batches: list[list[Pending]]) -> list[list[Pending]]:
    """One batch per recipient, in order."""
    merged: dict[str, list[Pending]] = {}
    out: list[list[Pending]] = []
    for batch in batches:
        recipient = batch[0].notification.recipient
        if recipient in merged:
            merged[recipient].extend(batch)
        else:
            merged[recipient] = list(batch)
            out.append(merged[recipient])
    return out


def recipient_hash(recipient: str) -> str:
    """Phone numbers and addresses do not belong in a time-series database; a hash still lets
    Grafana count per recipient."""
    return hashlib.sha256(recipient.encode()).hexdigest()[:12] if recipient else "-"


class Dispatcher:
    def __init__(self, *, outbox: Outbox, channels: Mapping[str, Channel], metrics: Metrics,
                 audit: Callable[[list[str]], Awaitable[None]],
                 rate_limits: Mapping[str, RateLimit] | None = None,
                 fallbacks: Mapping[str, str] | None = None,
                 max_backoff_s: float = 300.0, clock: Callable[[], float] = time.time,
                 on_dead: Callable[[Pending, str], None] | None = None,
                 on_outcome: Callable[[str, bool], None] | None = None,
                 unmergeable: Collection[str] = (),
                 prepare: Callable[[Notification], Awaitable[Notification]] | None = None
                 ) -> None:
        self._outbox = outbox
        self._channels = channels
        self._metrics = metrics
        self._audit = audit
        self._windows = {name: _Window(limit) for name, limit in (rate_limits or {}).items()}
        self._fallbacks = dict(fallbacks or {})
        self._max_backoff_s = max_backoff_s
        self._clock = clock
        # on_dead(row, why): a message no channel will carry any more (deadline, or refused for
        # good without a fallback). on_outcome(channel, sent): after every attempt.
        self._on_dead = on_dead
        self._on_outcome = on_outcome
        # Webhook channels: each request carries one alarm document for a machine, never merged.
        self._unmergeable = frozenset(unmergeable)
        # prepare(n): the message as it leaves, from the row as stored (ack links filled in).
        self._prepare = prepare
        self._wake = asyncio.Event()
        self._inflight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._warn = RateLimited(log, 30.0)
        # group key -> epoch ms before which the group must not send again (group_interval).
        self._holds: dict[str, int] = {}
        self._last_audit_ms = 0
        self._pruned_at_ms = 0

    def wake(self) -> None:
        """New rows were committed: look now instead of at the next poll."""
        self._wake.set()

    async def open(self, now_ms: int) -> None:
        """Resume group intervals after a restart (a group that just sent keeps waiting)."""
        self._holds = {k: v for k, v in (await self._outbox.group_holds(
            now_ms - GROUP_MEMORY_MS)).items() if v > now_ms}

    async def run(self) -> None:
        try:
            while True:
                now_ms = int(self._clock() * 1000)
                due = [p for p in await self._outbox.due(now_ms)
                       if p.notification.key not in self._inflight]
                if now_ms - self._pruned_at_ms >= PRUNE_EVERY_MS:
                    self._pruned_at_ms = now_ms
                    gone = await self._outbox.prune(now_ms - RETENTION_MS)
                    if gone:
                        log.info("outbox: forgot %d finished row(s) older than %d days", gone,
                                 RETENTION_MS // 86_400_000)
                start, hold = self._schedule(due, now_ms)
                await self._add_group_members(start, now_ms)
                for keys, until_ms in hold:
                    await self._outbox.defer(keys, until_ms)
                for batch in start:
                    self._start(batch, now_ms)
                self._wake.clear()
                # Await the sleep time first: a coroutine made for wait_for and then abandoned
                # by a cancellation would be "never awaited".
                sleep_s = await self._sleep_s()
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that
                # arrives as the wake-up does, and the dispatcher then never stops.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(sleep_s):
                        await self._wake.wait()
        finally:
            for task in self._tasks:
                task.cancel()

    def _schedule(self, due: list[Pending], now_ms: int
                  ) -> tuple[list[list[Pending]], list[tuple[list[str], int]]]:
        """Which due rows leave now, merged into which messages, and which wait until when.

        Fire-class rows leave one by one, at once, whatever the limits. Other rows with the same
        group key (route, group_by labels, contact, channel) leave as one digest, at most once
        per group_interval. When a channel's rate window has less room than there are messages
        for it, each recipient's messages on that channel merge into one digest; what still does
        not fit waits for the window instead of being polled.
        """
        now_s = now_ms / 1000
        self._holds = {k: v for k, v in self._holds.items() if v > now_ms}
        start: list[list[Pending]] = []
        hold: list[tuple[list[str], int]] = []
        groups: dict[str, list[Pending]] = {}
        for p in due:
            if p.fire_class:
                start.append([p])
            elif p.group_key and self._holds.get(p.group_key, 0) > now_ms:
                hold.append(([p.notification.key], self._holds[p.group_key]))
            else:
                groups.setdefault(p.group_key or f"\0{p.notification.key}", []).append(p)
        per_channel: dict[str, list[list[Pending]]] = {}
        for batch in groups.values():
            per_channel.setdefault(batch[0].notification.channel, []).append(batch)
        for channel, batches in per_channel.items():
            window = self._windows.get(channel)
            if window is None:
                start.extend(batches)
                continue
            room = window.room(now_s)
            if len(batches) > room and channel not in self._unmergeable:
                batches = _merge_per_recipient(batches)
            start.extend(batches[:room])
            until_ms = int(window.next_free(now_s) * 1000) + 1
            hold.extend(([p.notification.key for p in b], until_ms) for b in batches[room:])
        for batch in start:
            for p in batch:
                if p.group_key and p.group_interval_ms:
                    self._holds[p.group_key] = now_ms + p.group_interval_ms
        return start, hold

    async def _add_group_members(self, start: list[list[Pending]], now_ms: int) -> None:
        """A group leaving takes its rows that are not due yet too (their group_wait would
        only make them a second message a group_interval later)."""
        by_group: dict[str, list[Pending]] = {}
        for batch in start:
            for p in batch:
                if p.group_key:
                    by_group.setdefault(p.group_key, batch)
        if not by_group:
            return
        present = {p.notification.key for batch in start for p in batch} | self._inflight
        for p in await self._outbox.pending_in_groups(list(by_group), now_ms):
            if p.notification.key not in present:
                by_group[p.group_key].append(p)
                present.add(p.notification.key)

    async def drain(self, timeout_s: float) -> None:
        """Let sends under way finish (graceful shutdown)."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout_s)

    async def _sleep_s(self) -> float:
        nxt = await self._outbox.next_due_ms()
        if nxt is None:
            return 5.0
        return min(5.0, max(0.05, nxt / 1000 - self._clock()))

    def _start(self, batch: list[Pending], now_ms: int) -> None:
        n = batch[0].notification
        channel = self._channels.get(n.channel)
        if channel is None:
            self._warn.warning(n.channel, "notification %s: no channel %r configured", n.key,
                               n.channel)
            return
        window = self._windows.get(n.channel)
        if window is not None:
            window.note(now_ms / 1000)     # fire-class messages use the provider's quota too
        self._inflight.update(p.notification.key for p in batch)
        task = asyncio.create_task(self._send(channel, batch), name=f"notify-{n.channel}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, channel: Channel, batch: list[Pending]) -> None:
        message = digest(batch)
        started = self._clock()
        try:
            try:
                if self._prepare is not None:
                    # Rows hold link references, never links: the URLs go in only now.
                    message = digest([dataclasses.replace(p, notification=await self._prepare(
                        p.notification)) for p in batch])
                result = await channel.send(message)
            except Exception as exc:  # noqa: BLE001 - a channel bug must not lose the message
                result = SendResult.retry(f"channel error: {exc!r}")
            now_ms = int(self._clock() * 1000)
            if result.outcome is not SendOutcome.SENT:
                # A failed digest is retried at once when due, not after the group interval.
                for p in batch:
                    self._holds.pop(p.group_key, None)
            # One delay for the whole digest, so its rows stay together when retried.
            delay_s = result.retry_after_s or self._backoff(
                max(p.attempts for p in batch), any(p.fire_class for p in batch))
            lines = []
            for pending in batch:   # every row the message carried gets the same outcome
                outcome = await self._record(pending, result, now_ms, delay_s)
                n = pending.notification
                lines.append(self._line(n.channel, n.recipient, n.alarm, outcome,
                                        self._audit_ms(now_ms),
                                        (self._clock() - started) * 1000, pending.attempts + 1))
            if result.outcome is not SendOutcome.SENT:
                self._warn.warning(f"{message.channel}:{result.outcome.value}",
                                   "notification via %s %s: %s", message.channel,
                                   result.outcome.value, result.detail)
            await self._audit(lines)
            if self._on_outcome is not None:
                self._on_outcome(message.channel, result.outcome is SendOutcome.SENT)
        finally:
            self._inflight.difference_update(p.notification.key for p in batch)
            self._wake.set()

    async def _record(self, pending: Pending, result: SendResult, now_ms: int,
                      delay_s: float) -> str:
        n = pending.notification
        dead = result.outcome is SendOutcome.RETRY and now_ms >= pending.deadline_ms
        next_at = None
        if result.outcome is SendOutcome.RETRY and not dead:
            next_at = now_ms + int(delay_s * 1000)
        await self._outbox.record(n.key, result, now_ms=now_ms, next_at_ms=next_at, dead=dead)
        outcome = "dead" if dead else result.outcome.value
        gave_up = dead or result.outcome is SendOutcome.FAILED
        if gave_up and not await self._fall_back(pending, now_ms) and self._on_dead is not None:
            # Nobody else will carry this message: the gateway raises an alarm about it.
            self._on_dead(pending, f"{outcome}: {result.detail}")
        self._metrics.notifications.labels(channel=n.channel, outcome=outcome).inc()
        return outcome

    async def _fall_back(self, pending: Pending, now_ms: int) -> bool:
        """The same message once more on the channel's fallback (one level: no loops).
        False when there is no fallback to try."""
        n = pending.notification
        target = self._fallbacks.get(n.channel)
        if target is None or n.key.endswith(FALLBACK_SUFFIX):
            return False
        copy = dataclasses.replace(n, key=n.key + FALLBACK_SUFFIX, channel=target)
        row = outbox_row(copy, now_ms=now_ms, due_ms=now_ms,
                         deadline_ms=max(pending.deadline_ms, now_ms + FALLBACK_DEADLINE_MS),
                         fire_class=pending.fire_class)
        if await self._outbox.enqueue([row]):
            log.warning("notification %s failed on %s: falling back to %s", n.key, n.channel,
                        target)
        return True

    def _audit_ms(self, now_ms: int) -> int:
        """A distinct millisecond per audit point: InfluxDB keeps one point per series and
        timestamp, so the rows of one digest (same tags, same instant) would overwrite each
        other. They are spread 1 ms apart instead."""
        self._last_audit_ms = max(now_ms, self._last_audit_ms + 1)
        return self._last_audit_ms

    def _backoff(self, attempts: int, fire_class: bool = False) -> float:
        # A fire alarm must go out within seconds of the provider coming back, not minutes.
        cap = min(self._max_backoff_s, FIRE_MAX_BACKOFF_S) if fire_class else self._max_backoff_s
        base = min(cap, 2.0 ** min(attempts, 16))
        return base * random.uniform(0.5, 1.0)  # jitter, not cryptography

    @staticmethod
    def _line(channel: str, recipient: str, alarm: Mapping[str, object], outcome: str,
              now_ms: int, latency_ms: float, attempt: int) -> str:
        tags = tag_set({"channel": channel, "outcome": outcome,
                        "rule": str(alarm.get("rule") or ""),
                        "severity": str(alarm.get("severity") or ""),
                        "park": str(alarm.get("park") or ""),
                        "building": str(alarm.get("building") or "")})
        fields: dict[str, float | int | bool | str] = {
            "recipient_hash": recipient_hash(recipient), "latency_ms": float(latency_ms),
            "attempt": attempt, "alarm_id": str(alarm.get("alarm_id") or "")}
        return encode_line(_MEASUREMENT, tags, fields, now_ms)
