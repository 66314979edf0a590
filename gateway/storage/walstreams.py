"""Two write-ahead logs under one disk cap: priority lines are never evicted before telemetry.

::

    append(lines) ─┬─ alarms, events, device_status, gateway, notifications ─▶ wal/priority/
                   └─ everything else (telemetry, the bulk) ─────────────────▶ wal/bulk/
                                                                                   │
    InfluxWriter drains priority first, then bulk, each from its own checkpoint ◀──┘

Why two logs rather than one log with priority-aware eviction: each stream stays a plain
append-only log with one checkpoint, so order within a stream, crash recovery and "delivered or
counted, never both" all come from :class:`gateway.storage.wal.Wal` unchanged; evicting telemetry is
deleting whole old bulk segments, which cannot touch an alarm. The price is one extra fsync per
append that carries both kinds of line (the two run in parallel).

The cap (``wal.max_bytes``) is shared. Bulk may fill it up to ``max_bytes − reserve`` (the
reserve is ``wal.priority_share`` of the cap); priority lines may use whatever the bulk leaves,
so the reserve is always there for them. When the bulk share is full, ``wal.full_policy``
decides: ``block`` (appends carrying telemetry wait: ingest stops acknowledging and the broker
holds the messages) or ``drop_oldest_telemetry`` (the oldest bulk segments are deleted, counted
and logged). The priority log only ever blocks, and only when the whole cap is used.

A log written by an older ParkWatch (segments directly in ``wal/``) is drained first, as its
own stream, and removed once empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from gateway.metrics import Metrics
from gateway.storage.wal import FullPolicy, Wal

log = logging.getLogger(__name__)

#: Measurements that are never evicted and are delivered before telemetry
#: (docs/device-protocol.md, "What lands in InfluxDB"). ``scorecard``: a few points a day
#: that outlive the raw data, so a full telemetry log must not evict them.
PRIORITY_MEASUREMENTS = frozenset({"alarms", "events", "device_status", "gateway",
                                   "notifications", "scorecard"})
#: Bulk segments are at most this fraction of the bulk share, so eviction frees space in
#: reasonable steps instead of one huge segment at a time.
_BULK_SEGMENTS_PER_CAP = 16
_MIN_SEGMENT = 64 << 10


def is_priority(line: str) -> bool:
    """True for a line of a priority measurement. None of their names needs escaping, so the
    measurement is exactly the text before the first comma or space. (Called for every line:
    one slice and one set lookup, most lines having tags, i.e. a comma before any space.)"""
    end = line.find(",")
    space = line.find(" ")
    if end < 0 or (0 <= space < end):
        end = space
    return line[:end] in PRIORITY_MEASUREMENTS if end >= 0 else False


def split_lines(lines: Sequence[str]) -> tuple[list[str], list[str]]:
    """(priority lines, bulk lines), each in the given order."""
    priority: list[str] = []
    bulk: list[str] = []
    for line in lines:
        (priority if is_priority(line) else bulk).append(line)
    return priority, bulk


class WalStreams:
    """The gateway's write-ahead log: a priority and a bulk :class:`Wal` sharing one cap."""

    def __init__(self, directory: Path, *, max_bytes: int = 1 << 30,
                 segment_bytes: int = 64 << 20, fsync: bool = True,
                 full_policy: FullPolicy = "block", priority_share: float = 0.1,
                 metrics: Metrics | None = None) -> None:
        if not 0 < priority_share < 1:
            raise ValueError("priority_share must be between 0 and 1")
        self.directory = directory
        self.full_policy = full_policy
        self._metrics = metrics
        self.reserve_bytes = max(1, int(max_bytes * priority_share))
        bulk_cap = max(1, max_bytes - self.reserve_bytes)
        bulk_segment = max(_MIN_SEGMENT, min(segment_bytes, bulk_cap // _BULK_SEGMENTS_PER_CAP))
        self._changed = asyncio.Event()
        self.bulk = Wal(directory / "bulk", segment_bytes=bulk_segment, max_bytes=bulk_cap,
                        fsync=fsync, metrics=metrics, name="bulk",
                        full_policy=full_policy,
                        on_change=self._on_bulk_change)
        self.priority = Wal(directory / "priority", segment_bytes=segment_bytes,
                            max_bytes=max_bytes, fsync=fsync, metrics=metrics, name="priority",
                            others_bytes=self._bulk_share_used,
                            on_change=self._on_change)
        self._legacy: Wal | None = None
        self._fsync = fsync
        self._segment_bytes = segment_bytes

    # ---- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        await self._open_legacy()
        await self.priority.open()
        await self.bulk.open()
        self._on_change()

    async def _open_legacy(self) -> None:
        if not self.directory.is_dir() or not any(self.directory.glob("*.wal")):
            return
        legacy = Wal(self.directory, segment_bytes=self._segment_bytes, max_bytes=1 << 62,
                     fsync=self._fsync, metrics=self._metrics, name="legacy",
                     on_change=self._on_change)
        await legacy.open()
        if legacy.pending_bytes:
            log.info("WAL %s: %d bytes from an older ParkWatch are replayed first",
                     self.directory, legacy.pending_bytes)
            self._legacy = legacy
            return
        await legacy.close()
        self._remove_legacy_files()

    def _remove_legacy_files(self) -> None:
        for path in [*self.directory.glob("*.wal"), self.directory / "checkpoint"]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def close(self) -> None:
        for wal in self.streams:
            await wal.close()
        if self._legacy is not None and self._legacy.pending_bytes == 0:
            self._remove_legacy_files()

    async def __aenter__(self) -> WalStreams:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # ---- state -------------------------------------------------------------------------------

    @property
    def streams(self) -> tuple[Wal, ...]:
        """The logs in the order the writer drains them."""
        first = (self._legacy,) if self._legacy is not None else ()
        return (*first, self.priority, self.bulk)

    @property
    def full(self) -> bool:
        """True while some appends wait for space (under ``block``, acks have stopped)."""
        return any(w.full for w in self.streams)

    @property
    def pending_bytes(self) -> int:
        return sum(w.pending_bytes for w in self.streams)

    @property
    def total_bytes(self) -> int:
        return sum(w.total_bytes for w in self.streams)

    @property
    def fsync_count(self) -> int:
        return sum(w.fsync_count for w in self.streams)

    @property
    def evicted_lines(self) -> int:
        return self.bulk.evicted_lines

    def _bulk_share_used(self) -> int:
        # Capped at the bulk share: one group fsync may take the bulk a little past its cap,
        # and that must not eat into the reserve (the priority log would stall on telemetry).
        return min(self.bulk.pending_bytes + self.bulk.queued_bytes, self.bulk.max_bytes)

    def _on_bulk_change(self) -> None:
        # Bulk deliveries and evictions free room under the shared cap for priority lines too.
        self.priority.wake()
        self._on_change()

    def _on_change(self) -> None:
        if self._metrics is not None:
            self._metrics.wal_bytes.set(self.total_bytes)
            self._metrics.wal_pending_bytes.set(self.pending_bytes)
        self._changed.set()

    # ---- append and wait ---------------------------------------------------------------------

    async def append(self, lines: Sequence[str]) -> None:
        """Make ``lines`` durable, each in its stream; returns once all of them are."""
        priority, bulk = split_lines(lines)
        if priority and bulk:
            await asyncio.gather(self.priority.append(priority), self.bulk.append(bulk))
        elif priority:
            await self.priority.append(priority)
        elif bulk:
            await self.bulk.append(bulk)

    async def wait_for_data(self, timeout_s: float | None, *, min_bytes: int = 1) -> bool:
        """Wait until ``min_bytes`` undelivered bytes are durable in any stream."""
        try:
            async with asyncio.timeout(timeout_s):
                while self.pending_bytes < min_bytes:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True
