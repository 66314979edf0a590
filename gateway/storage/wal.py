"""The local write-ahead log: ingest's durability point and the only queue to InfluxDB.

::

    ingest ──append(lines)──▶ 000000000001.wal 000000000002.wal … ──read_batch()──▶ InfluxWriter
            (returns after fsync;                  checkpoint ◀──mark_delivered(batch)──┘
             blocks while full)

A record is a 12-byte header (magic ``PWL1``, u32 payload length, u32 CRC-32 of the payload,
big-endian) followed by the payload: the UTF-8 lines of one :meth:`Wal.append`, joined by
``\\n``. Line protocol never contains a raw newline (see :mod:`gateway.storage.lineprotocol`), so a
payload splits back into its lines exactly.

Durability and recovery:

* :meth:`Wal.append` returns only once its record is on disk (``fdatasync``); callers that
  arrive while a write is in progress are written together by the next
  one (one fsync for the group).
* The reader's position is a checkpoint file, replaced atomically and not fsynced: losing the
  newest checkpoint only replays data, and replays are harmless (same series and timestamp).
* A crash mid-write leaves a torn tail in the newest segment; :meth:`Wal.open` truncates the
  newest segment at its first invalid record and logs what it cut. Those records were never
  acknowledged to the broker, which redelivers them.
* A bad record anywhere else is corruption of acknowledged data: :meth:`Wal.read_batch` raises
  :class:`WalError` naming the file and offset instead of silently skipping it, so an operator
  decides (move the segment aside to give up its data, or restore it).

Backpressure: once ``max_bytes`` are waiting for InfluxDB, :meth:`Wal.append` waits until the
writer marks data delivered (ingest then stops acknowledging and the broker holds the
messages). The state is visible as :attr:`Wal.full` and in the ``wal_pending_bytes`` gauge,
and logged on each change.
Disk use is bounded by ``max_bytes`` plus one segment (the consumed part of the oldest segment,
deleted when the reader leaves it) plus one group of records.

Eviction (``full_policy="drop_oldest_telemetry"``, used for bulk telemetry only, see
:mod:`gateway.storage.walstreams`): instead of waiting, an append that finds the log full deletes
the oldest *sealed* segments, counting their lines and bytes. The segment holding the checkpoint and
every segment the writer's in-flight batch touches are never evicted, so what the writer is
sending stays exactly accounted for: a line is either delivered or counted as evicted, never both.
The reader skips the gap because it only ever walks the segment files that exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal

from gateway.errors import WalError
from gateway.metrics import Metrics
from gateway.storage.private import FILE_MODE, private_dir, tighten, write_private

log = logging.getLogger(__name__)

MAGIC = b"PWL1"
_HEADER = struct.Struct(">4sII")  # magic, payload length, crc32(payload)
HEADER_SIZE = _HEADER.size
_SEGMENT_NAME = re.compile(r"^(\d{12})\.wal$")
_CHECKPOINT = "checkpoint"
_READ_BUFFER = 1 << 20

FullPolicy = Literal["block", "drop_oldest_telemetry"]


@dataclass(frozen=True, order=True, slots=True)
class WalPosition:
    """A record boundary: segment number and byte offset in it. Ordered like the log."""

    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class Eviction:
    """What one eviction removed: whole segments' worth of lines and record bytes."""

    segments: int
    lines: int
    bytes: int


@dataclass(frozen=True, slots=True)
class WalBatch:
    """Lines read from the checkpoint forward; give it to :meth:`Wal.mark_delivered` once stored."""

    lines: tuple[bytes, ...]
    start: WalPosition
    end: WalPosition


def _segment_path(directory: Path, segment: int) -> Path:
    return directory / f"{segment:012d}.wal"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _valid_end(path: Path) -> int:
    """Offset just past the last intact record of the segment at ``path``."""
    good = 0
    with path.open("rb", buffering=_READ_BUFFER) as f:
        while True:
            header = f.read(HEADER_SIZE)
            if len(header) < HEADER_SIZE:
                return good
            magic, length, crc = _HEADER.unpack(header)
            if magic != MAGIC:
                return good
            payload = f.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return good
            good += HEADER_SIZE + length


class Wal:
    """Segmented, checksummed, fsynced log of line-protocol records with one reader."""

    def __init__(self, directory: Path, *, segment_bytes: int = 64 << 20,
                 max_bytes: int = 1 << 30, fsync: bool = True,
                 metrics: Metrics | None = None, name: str = "wal",
                 full_policy: FullPolicy = "block",
                 others_bytes: Callable[[], int] | None = None,
                 on_change: Callable[[], None] | None = None) -> None:
        """``others_bytes`` counts bytes of sibling logs against this one's ``max_bytes`` (a
        shared disk cap); ``on_change`` is called after every durable append, delivery and
        eviction, and takes over the whole-log gauges (the owner of several logs sums them)."""
        if segment_bytes <= 0 or max_bytes <= 0:
            raise ValueError("segment_bytes and max_bytes must be positive")
        self.directory = directory
        self.name = name
        self._segment_bytes = segment_bytes
        self._max_bytes = max_bytes
        self._fsync = fsync
        self._metrics = metrics
        self._policy = full_policy
        self._others_bytes = others_bytes
        self._on_change = on_change
        # End of the batch the reader holds (read, not yet delivered): never evicted.
        self._inflight: WalPosition | None = None
        self.evicted_lines = 0
        self.evicted_bytes = 0
        # Durable size of every segment, oldest first; only the event loop touches it.
        self._sizes: dict[int, int] = {}
        self._checkpoint = WalPosition(1, 0)
        # Write side, owned by the one group-fsync task while it runs.
        self._fd: int | None = None
        self._wseg = 0
        self._wsize = 0
        self._queue: list[tuple[bytes, asyncio.Future[None]]] = []
        self._queued_bytes = 0
        self._flusher: asyncio.Task[None] | None = None
        self._broken: str | None = None
        self._open = False
        self._full = False
        self._data = asyncio.Event()      # set after each durable append
        self._delivered = asyncio.Event()  # set after each mark_delivered (space freed)
        self._read_lock = asyncio.Lock()
        self.fsync_count = 0

    # ---- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Scan the segments, cut a torn tail, load the checkpoint, open the newest segment."""
        if self._open:
            return
        await asyncio.to_thread(self._open_sync)
        self._open = True
        self._update_metrics()
        pending = self.pending_bytes
        if pending:
            log.info("WAL %s: %d bytes from a previous run wait for InfluxDB",
                     self.directory, pending)

    def _open_sync(self) -> None:
        private_dir(self.directory)
        found = sorted(int(m.group(1)) for p in self.directory.iterdir()
                       if (m := _SEGMENT_NAME.match(p.name)))
        for seg in found:
            self._sizes[seg] = _segment_path(self.directory, seg).stat().st_size
            tighten(_segment_path(self.directory, seg), FILE_MODE)
        if found:
            self._truncate_torn_tail(found[-1])
        self._checkpoint = self._load_checkpoint()
        if not self._sizes or self._checkpoint.segment > max(self._sizes):
            # Nothing to read (or all of it is behind the checkpoint): start a fresh segment.
            self._checkpoint = WalPosition(self._checkpoint.segment, 0)
            self._create_segment(self._checkpoint.segment)
        self._checkpoint = self._normalize(self._checkpoint)
        self._delete_before(self._checkpoint.segment)
        self._sizes = {s: n for s, n in self._sizes.items() if s >= self._checkpoint.segment}
        self._wseg = max(self._sizes)
        self._wsize = self._sizes[self._wseg]
        self._fd = os.open(_segment_path(self.directory, self._wseg),
                           os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)

    def _truncate_torn_tail(self, seg: int) -> None:
        path = _segment_path(self.directory, seg)
        size = self._sizes[seg]
        good = _valid_end(path)
        if good < size:
            log.warning("WAL %s: cut a torn tail of %d bytes at offset %d (a write interrupted "
                        "by a crash; those records were never acknowledged)",
                        path, size - good, good)
            with path.open("r+b") as f:
                f.truncate(good)
                os.fsync(f.fileno())
            self._sizes[seg] = good

    def _load_checkpoint(self) -> WalPosition:
        first = min(self._sizes, default=1)
        path = self.directory / _CHECKPOINT
        try:
            tag, seg, off = path.read_text().split()
            if tag != "v1":
                raise ValueError(tag)
            pos = WalPosition(int(seg), int(off))
        except FileNotFoundError:
            return WalPosition(first, 0)
        except (OSError, ValueError) as exc:
            # Replaying from the start is always safe; losing data is not.
            log.warning("WAL %s: unreadable checkpoint (%s); replaying every segment", path, exc)
            return WalPosition(first, 0)
        if pos.segment < first:
            return WalPosition(first, 0)
        size = self._sizes.get(pos.segment)
        if size is not None and pos.offset > size:
            log.warning("WAL %s: checkpoint %s is past the end of its segment (%d bytes); "
                        "continuing from there", path, pos, size)
            return WalPosition(pos.segment, size)
        return pos

    def _create_segment(self, seg: int) -> None:
        path = _segment_path(self.directory, seg)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        os.close(fd)
        if self._fsync:
            _fsync_dir(self.directory)
        self._sizes[seg] = 0

    async def close(self) -> None:
        """Finish pending appends and close the segment file. Undelivered data stays on disk."""
        if not self._open:
            return
        self._open = False
        self._delivered.set()  # appends waiting for space wake up and see the WAL closed
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def __aenter__(self) -> Wal:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # ---- state -------------------------------------------------------------------------------

    @property
    def full(self) -> bool:
        """True while appends wait for the writer to free space (backpressure engaged)."""
        return self._full

    @property
    def checkpoint(self) -> WalPosition:
        return self._checkpoint

    @property
    def end(self) -> WalPosition:
        """Just past the last durable record."""
        seg = max(self._sizes)
        return WalPosition(seg, self._sizes[seg])

    @property
    def total_bytes(self) -> int:
        return sum(self._sizes.values())

    @property
    def pending_bytes(self) -> int:
        """Durable bytes not yet delivered by the reader."""
        cp = self._checkpoint
        return sum(size for seg, size in self._sizes.items() if seg >= cp.segment) - cp.offset

    @property
    def queued_bytes(self) -> int:
        """Bytes handed to :meth:`append` and not yet durable."""
        return self._queued_bytes

    @property
    def streams(self) -> tuple[Wal, ...]:
        """The logs a reader drains, in order: just this one (see ``storage/walstreams.py``)."""
        return (self,)

    def _update_metrics(self) -> None:
        if self._metrics is not None:
            self._metrics.wal_stream_pending_bytes.labels(stream=self.name).set(
                self.pending_bytes)
            self._metrics.wal_full.labels(stream=self.name).set(1 if self._full else 0)
            if self._on_change is None:
                self._metrics.wal_bytes.set(self.total_bytes)
                self._metrics.wal_pending_bytes.set(self.pending_bytes)
        if self._on_change is not None:
            self._on_change()

    # ---- append side -------------------------------------------------------------------------

    async def append(self, lines: Sequence[str]) -> None:
        """Make ``lines`` durable as one record; returns after fsync (waits while full)."""
        if not lines:
            return
        payload = "\n".join(lines).encode("utf-8")
        if payload.count(b"\n") != len(lines) - 1:
            raise ValueError("a line-protocol line contains a raw newline")
        if len(payload) >= 1 << 32:
            raise ValueError(f"record of {len(payload)} bytes is too large")
        record = _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload
        self._check_usable()
        await self._wait_for_space()
        self._check_usable()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((record, fut))
        self._queued_bytes += len(record)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._group_fsync(), name="wal-group-fsync")
        try:
            # Shielded: a cancelled caller must not interrupt a write other callers share.
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise

    def _check_usable(self) -> None:
        if not self._open:
            raise WalError(f"WAL {self.directory} is not open")
        if self._broken is not None:
            raise WalError(self._broken)

    def _used(self) -> int:
        others = self._others_bytes() if self._others_bytes is not None else 0
        return self.pending_bytes + self._queued_bytes + others

    async def _wait_for_space(self) -> None:
        while self._used() >= self._max_bytes:
            if self._policy == "drop_oldest_telemetry":
                evicted = await self.evict_oldest(self._used() - self._max_bytes + 1)
                if evicted.segments:
                    continue
            if not self._full:
                self._full = True
                if self._metrics is not None:
                    self._metrics.wal_full_events.labels(stream=self.name).inc()
                self._update_metrics()
                log.warning("WAL %s is full (%d bytes wait for InfluxDB): appends wait "
                            "until the writer catches up", self.directory, self.pending_bytes)
            self._delivered.clear()
            await self._delivered.wait()
            self._check_usable()

    async def _group_fsync(self) -> None:
        """Write everything queued with one write and one fsync, until the queue is empty."""
        while self._queue:
            group, self._queue = self._queue, []
            data = b"".join(record for record, _ in group)
            try:
                seg, size = await asyncio.to_thread(self._write_sync, data)
            except BaseException as exc:
                self._queued_bytes -= len(data)
                for _, fut in group:
                    if not fut.done():
                        fut.set_exception(exc)
                if not isinstance(exc, WalError):
                    raise
                continue
            self._queued_bytes -= len(data)
            self._sizes[seg] = size
            for _, fut in group:
                if not fut.done():
                    fut.set_result(None)
            self._data.set()
            self._update_metrics()

    def _write_sync(self, data: bytes) -> tuple[int, int]:
        """Runs in a worker thread; only one at a time (the group-fsync task awaits it)."""
        if self._broken is not None:
            raise WalError(self._broken)
        try:
            if self._wsize >= self._segment_bytes:
                self._rotate_sync()
            assert self._fd is not None
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if self._fsync:
                os.fdatasync(self._fd)
                self.fsync_count += 1
        except OSError as exc:
            self._undo_partial_write_sync()
            raise WalError(f"WAL {self.directory}: write failed: {exc}") from exc
        self._wsize += len(data)
        return self._wseg, self._wsize

    def _rotate_sync(self) -> None:
        new = self._wseg + 1
        fd = os.open(_segment_path(self.directory, new),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, FILE_MODE)
        if self._fsync:
            _fsync_dir(self.directory)
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._wseg, self._wsize = fd, new, 0

    def _undo_partial_write_sync(self) -> None:
        # A half-written record followed by later good ones would read as corruption:
        # cut the file back to its last durable size, or refuse further writes.
        try:
            if self._fd is not None:
                os.ftruncate(self._fd, self._wsize)
        except OSError as exc:
            self._broken = (f"WAL {self.directory}: segment {self._wseg} could not be repaired "
                            f"after a failed write ({exc}); restart the gateway")

    # ---- read side (one reader: the InfluxDB writer) ------------------------------------------

    async def wait_for_data(self, timeout_s: float | None, *, min_bytes: int = 1) -> bool:
        """Wait until ``min_bytes`` undelivered bytes are durable; False if the timeout passed."""
        try:
            async with asyncio.timeout(timeout_s):
                while self.pending_bytes < min_bytes:
                    self._data.clear()
                    await self._data.wait()
        except TimeoutError:
            return False
        return True

    async def wait_delivered(self, position: WalPosition, timeout_s: float | None) -> bool:
        """Wait until the checkpoint reaches ``position``; False if the timeout passed."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._checkpoint < position:
                    self._delivered.clear()
                    await self._delivered.wait()
        except TimeoutError:
            return False
        return True

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    async def read_batch(self, max_lines: int, max_bytes: int | None = None) -> WalBatch | None:
        """Whole records from the checkpoint on, up to ``max_lines`` lines and ``max_bytes``
        record bytes (at least one record).

        Does not move the checkpoint; None when nothing is pending.
        """
        if max_lines < 1:
            raise ValueError("max_lines must be at least 1")
        self._check_usable()
        async with self._read_lock:
            start = self._checkpoint
            plan = [(seg, start.offset if seg == start.segment else 0, size)
                    for seg, size in sorted(self._sizes.items()) if seg >= start.segment]
            if not any(off < size for _, off, size in plan):
                return None
            lines, end = await asyncio.to_thread(self._read_sync, plan, max_lines,
                                                 max_bytes if max_bytes is not None else 1 << 62)
            self._inflight = end
            return WalBatch(lines=tuple(lines), start=start, end=end)

    def _read_sync(self, plan: list[tuple[int, int, int]], max_lines: int,
                   max_bytes: int) -> tuple[list[bytes], WalPosition]:
        lines: list[bytes] = []
        taken = 0
        end = WalPosition(plan[0][0], plan[0][1])
        for seg, offset, size in plan:
            if offset >= size:
                continue
            path = _segment_path(self.directory, seg)
            with path.open("rb", buffering=_READ_BUFFER) as f:
                f.seek(offset)
                while offset < size:
                    payload = self._read_record(f, path, offset, size)
                    record_lines = payload.split(b"\n")
                    if lines and (len(lines) + len(record_lines) > max_lines
                                  or taken + HEADER_SIZE + len(payload) > max_bytes):
                        return lines, end
                    lines.extend(record_lines)
                    taken += HEADER_SIZE + len(payload)
                    offset += HEADER_SIZE + len(payload)
                    end = WalPosition(seg, offset)
            if len(lines) >= max_lines or taken >= max_bytes:
                break
        return lines, end

    @staticmethod
    def _read_record(f: BinaryIO, path: Path, offset: int, size: int) -> bytes:
        header = f.read(HEADER_SIZE)
        problem = None
        payload = b""
        if len(header) < HEADER_SIZE:
            problem = "truncated header"
        else:
            magic, length, crc = _HEADER.unpack(header)
            if magic != MAGIC:
                problem = f"bad magic {magic!r}"
            elif offset + HEADER_SIZE + length > size:
                problem = f"length {length} runs past the end of the durable data"
            else:
                payload = f.read(length)
                if len(payload) < length or zlib.crc32(payload) != crc:
                    problem = "CRC mismatch"
        if problem is not None:
            raise WalError(f"WAL corrupt: {path} at offset {offset}: {problem}. The records "
                           "from here on cannot be read; move the segment aside to skip its "
                           "data (it will be lost) or restore it from a backup, then restart")
        return payload

    async def mark_delivered(self, batch: WalBatch) -> None:
        """Advance the checkpoint past ``batch`` and delete the segments left behind."""
        self._check_usable()
        async with self._read_lock:
            if self._inflight is not None and batch.end >= self._inflight:
                self._inflight = None
            if batch.end <= self._checkpoint:
                return
            new = self._normalize(batch.end)
            await asyncio.to_thread(self._persist_checkpoint_sync, new)
            self._checkpoint = new
            for seg in [s for s in self._sizes if s < new.segment]:
                del self._sizes[seg]
            self._space_freed()

    def _space_freed(self) -> None:
        if self._full and self._used() < self._max_bytes:
            self._full = False
            log.info("WAL %s has room again: appends resume", self.directory)
        self._update_metrics()
        self._delivered.set()

    def wake(self) -> None:
        """Re-check for space now (a sibling log sharing the cap freed some)."""
        self._delivered.set()

    # ---- eviction (bulk telemetry under full_policy="drop_oldest_telemetry") -------------------

    def _evictable(self) -> list[int]:
        """Sealed segments, oldest first, that neither the checkpoint nor the reader touch."""
        protected = self._checkpoint.segment
        if self._inflight is not None:
            protected = max(protected, self._inflight.segment)
        return sorted(s for s in self._sizes if protected < s < self._wseg)

    async def evict_oldest(self, min_bytes: int) -> Eviction:
        """Delete the oldest evictable segments until ``min_bytes`` are freed (or none is left).

        Counts exactly what was deleted in ``evicted_lines``/``evicted_bytes`` and the
        ``wal_evicted_*`` metrics, and logs it: this is data the operator chose to lose.
        """
        self._check_usable()
        async with self._read_lock:
            chosen: list[int] = []
            freed = 0
            for seg in self._evictable():
                if freed >= min_bytes:
                    break
                chosen.append(seg)
                freed += self._sizes[seg]
            if not chosen:
                return Eviction(0, 0, 0)
            lines = await asyncio.to_thread(self._evict_sync, chosen)
            for seg in chosen:
                del self._sizes[seg]
            self.evicted_lines += lines
            self.evicted_bytes += freed
            if self._metrics is not None:
                self._metrics.wal_evicted_lines.labels(stream=self.name).inc(lines)
                self._metrics.wal_evicted_bytes.labels(stream=self.name).inc(freed)
            log.warning("WAL %s is full: evicted the %d oldest segment(s), %d lines (%d bytes) "
                        "that will never reach InfluxDB (wal.full_policy drops old telemetry)",
                        self.directory, len(chosen), lines, freed)
            self._space_freed()
            return Eviction(len(chosen), lines, freed)

    def _evict_sync(self, segments: list[int]) -> int:
        lines = 0
        for seg in segments:
            path = _segment_path(self.directory, seg)
            size = self._sizes[seg]
            with path.open("rb", buffering=_READ_BUFFER) as f:
                offset = 0
                while offset < size:
                    payload = self._read_record(f, path, offset, size)
                    lines += payload.count(b"\n") + 1
                    offset += HEADER_SIZE + len(payload)
            path.unlink()
        if self._fsync:
            _fsync_dir(self.directory)
        return lines

    def _normalize(self, pos: WalPosition) -> WalPosition:
        """Move a position at the very end of a segment to the start of the next one."""
        later = sorted(s for s in self._sizes if s > pos.segment)
        while later and pos.offset >= self._sizes.get(pos.segment, 0):
            pos = WalPosition(later.pop(0), 0)
        return pos

    def _persist_checkpoint_sync(self, pos: WalPosition) -> None:
        path = self.directory / _CHECKPOINT
        tmp = path.with_suffix(".tmp")
        write_private(tmp, f"v1 {pos.segment} {pos.offset}\n")
        os.replace(tmp, path)
        self._delete_before(pos.segment)

    def _delete_before(self, segment: int) -> None:
        """Remove segment files older than ``segment`` (already in InfluxDB)."""
        for seg in [s for s in self._sizes if s < segment]:
            with contextlib.suppress(FileNotFoundError):
                _segment_path(self.directory, seg).unlink()
