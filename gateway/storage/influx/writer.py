"""The delivery stage: WAL → InfluxDB, as a transactional buffer.

::

    Wal ──read_batch──▶ chunk (≤ batch_lines) ──write──▶ Sink ──answer──▶ classify
     ▲                                                                      │
     └──────────── mark_delivered (all chunks accepted or rejected) ◀──────────┘
                      split on 413, back off and repeat on retry/auth

A batch is flushed when ``batch_lines`` worth of data is waiting or ``flush_interval_s`` after
data first appeared, whichever comes first. The checkpoint moves only once every line of the
batch was accepted or refused as bad (400/422, counted in ``points_rejected``): anything else
keeps the batch and retries, forever, with capped backoff. A crash replays from the checkpoint,
which is harmless because a point with the same series and timestamp overwrites itself.

Several streams (:class:`gateway.storage.walstreams.WalStreams`): before every batch the writer
looks at the streams in order, so priority lines (alarms, events, status) never wait behind
more than one telemetry batch. After an outage the backlog is read in batches ``backlog_factor``
times larger (fewer, bigger requests: replay runs several times faster than the live rate) while new
data is appended behind it, so each stream still reaches InfluxDB in the order it was accepted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from gateway.logs import RateLimited
from gateway.metrics import Metrics
from gateway.storage.influx.classify import Verdict, WriteOutcome, classify, rejected_points
from gateway.storage.influx.sink import Sink, SinkResponse, SinkUnreachable
from gateway.storage.wal import Wal

log = logging.getLogger(__name__)


class WalSource(Protocol):
    """A :class:`Wal` or a :class:`gateway.storage.walstreams.WalStreams`: logs drained in order."""

    @property
    def streams(self) -> tuple[Wal, ...]: ...

    async def wait_for_data(self, timeout_s: float | None, *, min_bytes: int = 1) -> bool: ...


class InfluxWriter:
    """Moves lines from the WAL into InfluxDB and advances the WAL checkpoint."""

    def __init__(self, *, wal: WalSource, sink: Sink, metrics: Metrics, batch_lines: int = 5000,
                 flush_interval_s: float = 0.05, max_backoff_s: float = 30.0,
                 on_delivered: Callable[[Sequence[bytes]], None] | None = None,
                 backlog_factor: int = 4) -> None:
        if batch_lines < 1 or backlog_factor < 1:
            raise ValueError("batch_lines and backlog_factor must be at least 1")
        self._wal = wal
        self._backlog_factor = backlog_factor
        self._sink = sink
        self._metrics = metrics
        self._batch_lines = batch_lines
        self._flush_interval_s = flush_interval_s
        self._max_backoff_s = max_backoff_s
        # Observers of what reached InfluxDB (the benchmark measures latency with it).
        self._on_delivered = on_delivered
        self._bytes_per_line = 200.0  # running estimate, to tell when a batch is "full"
        self._reject_log = RateLimited(log, 10.0)
        self._retry_log = RateLimited(log, 30.0)

    async def run(self) -> None:
        """Deliver forever; cancel to stop (an undelivered batch stays in the WAL)."""
        while True:
            await self._wal.wait_for_data(None)
            # Linger so a trickle of appends becomes one request, unless a batch is ready.
            await self._wal.wait_for_data(
                self._flush_interval_s,
                min_bytes=int(self._batch_lines * self._bytes_per_line))
            for stream in self._wal.streams:
                # One batch, then look at the higher-priority streams again.
                if stream.pending_bytes and await self._deliver_one(stream):
                    break

    async def _deliver_one(self, stream: Wal) -> bool:
        """Send one batch of ``stream`` and mark it delivered; False if it had nothing."""
        backlog = stream.pending_bytes > 2 * self._batch_lines * self._bytes_per_line
        limit = self._batch_lines * (self._backlog_factor if backlog else 1)
        # A batch claims its segments against eviction until delivered: keep that claim a
        # small part of the stream's cap, or a retried backlog batch could pin all of it.
        batch = await stream.read_batch(limit, max_bytes=max(1, stream.max_bytes // 8))
        if batch is None:
            return False
        lines = list(batch.lines)
        # A backlog batch goes out in bigger requests (a 413 splits them again).
        for start in range(0, len(lines), limit):
            await self._send(lines[start:start + limit])
        await stream.mark_delivered(batch)
        if self._on_delivered is not None:
            self._on_delivered(lines)
        size = sum(map(len, lines)) + len(lines)
        self._bytes_per_line = 0.8 * self._bytes_per_line + 0.2 * size / len(lines)
        return True

    async def flush(self, timeout_s: float) -> bool:
        """Wait until everything appended so far is in InfluxDB; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for stream in self._wal.streams:
            if not await stream.wait_delivered(stream.end, max(0.0, deadline - loop.time())):
                return False
        return True

    async def _send(self, lines: list[bytes]) -> None:
        """Deliver ``lines``, halving on 413, until every part is accepted or rejected."""
        todo = [lines]
        while todo:
            part = todo.pop()
            verdict, response = await self._post(part)
            if verdict.outcome is not WriteOutcome.SPLIT:
                continue
            if len(part) == 1:
                # Nothing left to split: the point alone exceeds the server's limit.
                self._reject(part, response, "a single point is larger than the server accepts")
                continue
            middle = len(part) // 2
            todo += [part[middle:], part[:middle]]  # the first half goes out first

    async def _post(self, part: Sequence[bytes]) -> tuple[Verdict, SinkResponse | None]:
        """Send ``part`` until the answer is final: accepted, rejected or "split it"."""
        body = b"\n".join(part)
        attempt = 0
        while True:
            response, problem = await self._attempt(body)
            verdict = classify(response, attempt=attempt, max_backoff_s=self._max_backoff_s,
                               now=datetime.now(UTC))
            if verdict.outcome is WriteOutcome.ACCEPT:
                self._metrics.points_written.inc(len(part))
                if attempt:
                    log.info("InfluxDB accepted a batch after %d retries", attempt)
                return verdict, response
            if verdict.outcome is WriteOutcome.REJECT:
                self._reject(part, response, "refused by InfluxDB")
                return verdict, response
            if verdict.outcome is WriteOutcome.SPLIT:
                return verdict, response
            self._metrics.write_retries.labels(cause=verdict.cause).inc()
            if verdict.outcome is WriteOutcome.AUTH:
                self._metrics.influx_auth_ok.set(0)
            self._retry_log.warning("retry", "InfluxDB write failed (%s: %s); keeping %d points, "
                                    "retry %d in %.1fs", verdict.cause, problem, len(part),
                                    attempt + 1, verdict.delay_s)
            await asyncio.sleep(verdict.delay_s)
            attempt += 1

    async def _attempt(self, body: bytes) -> tuple[SinkResponse | None, str]:
        """One request; the answer (None if none came) and a short description for logs."""
        self._metrics.write_batches.inc()
        started = time.perf_counter()
        try:
            response = await self._sink.write(body)
        except SinkUnreachable as exc:
            self._metrics.influx_reachable.set(0)
            return None, str(exc)
        finally:
            self._metrics.write_latency.observe(time.perf_counter() - started)
        self._metrics.influx_reachable.set(1)
        if response.status not in (401, 403):
            self._metrics.influx_auth_ok.set(1)
        return response, f"HTTP {response.status} {response.text.strip()[:300]}"

    def _reject(self, part: Sequence[bytes], response: SinkResponse | None, why: str) -> None:
        refused = len(part) if response is None or response.status == 413 \
            else rejected_points(response, len(part))
        self._metrics.points_rejected.inc(refused)
        self._metrics.points_written.inc(len(part) - refused)
        answer = f"HTTP {response.status}: {response.text.strip()[:500]}" if response \
            else "no answer"
        self._reject_log.warning("reject", "%d of %d points %s (%s); first line: %.200s", refused,
                                 len(part), why, answer, part[0].decode("utf-8", "replace"))
