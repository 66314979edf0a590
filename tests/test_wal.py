"""The write-ahead log: durability, recovery after crashes, segments, backpressure."""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.errors import WalError
from gateway.metrics import Metrics
from gateway.storage.wal import HEADER_SIZE, MAGIC, Wal, WalBatch
from gateway.storage.walstreams import WalStreams, is_priority


async def wait_until(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.005)


def segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.wal"))


def lines(prefix: str, n: int) -> list[str]:
    return [f"m,d={prefix} v={i}.0 {i}" for i in range(n)]


def as_text(batch: WalBatch | None) -> list[str]:
    assert batch is not None
    return [line.decode() for line in batch.lines]


def crash(wal: Wal) -> None:
    """Abandon a WAL as a killed process would: no close, no flush of anything in memory."""
    if wal._fd is not None:
        os.close(wal._fd)
        wal._fd = None


async def test_append_read_commit_reopen(tmp_path: Path) -> None:
    async with Wal(tmp_path) as wal:
        await wal.append(lines("a", 3))
        await wal.append(lines("b", 2))
        batch = await wal.read_batch(100)
        assert as_text(batch) == lines("a", 3) + lines("b", 2)
        # Reading does not consume: the same lines come back until committed.
        assert as_text(await wal.read_batch(100)) == as_text(batch)
        assert batch is not None
        await wal.mark_delivered(batch)
        assert await wal.read_batch(100) is None
        assert wal.pending_bytes == 0
    async with Wal(tmp_path) as wal:
        assert await wal.read_batch(100) is None
        await wal.append(lines("c", 1))
        assert as_text(await wal.read_batch(100)) == lines("c", 1)


async def test_read_batch_takes_whole_records_up_to_max_lines(tmp_path: Path) -> None:
    async with Wal(tmp_path) as wal:
        for name in "abc":
            await wal.append(lines(name, 3))
        assert as_text(await wal.read_batch(7)) == lines("a", 3) + lines("b", 3)
        assert as_text(await wal.read_batch(2)) == lines("a", 3)  # one record at least
        first = await wal.read_batch(3)
        assert first is not None
        await wal.mark_delivered(first)
        assert as_text(await wal.read_batch(100)) == lines("b", 3) + lines("c", 3)


async def test_unicode_and_empty_append(tmp_path: Path) -> None:
    async with Wal(tmp_path) as wal:
        await wal.append([])
        assert await wal.read_batch(10) is None
        text = ['m,zone=Halle\\ 3 note="Brandschutztür \\"B\\"" 1']
        await wal.append(text)
        assert as_text(await wal.read_batch(10)) == text


async def test_a_raw_newline_is_refused(tmp_path: Path) -> None:
    async with Wal(tmp_path) as wal:
        with pytest.raises(ValueError, match="raw newline"):
            await wal.append(["m v=1 1\nm v=2 2"])


async def test_crash_without_close_replays_exactly_the_uncommitted_records(
        tmp_path: Path) -> None:
    wal = Wal(tmp_path)
    await wal.open()
    await wal.append(lines("a", 2))
    batch = await wal.read_batch(100)
    assert batch is not None
    await wal.mark_delivered(batch)
    await wal.append(lines("b", 2))
    await wal.append(lines("c", 1))
    crash(wal)
    async with Wal(tmp_path) as again:
        assert as_text(await again.read_batch(100)) == lines("b", 2) + lines("c", 1)


@pytest.mark.parametrize("tail", [
    b"PW",                                                # half a header
    MAGIC + struct.pack(">II", 100, 0) + b"only part",    # payload cut short
    MAGIC + struct.pack(">II", 5, 12345) + b"abcde",     # complete but wrong CRC
    b"\0" * 4096,                                         # zero-filled pages after power loss
])
async def test_torn_tail_is_cut_and_logged(tmp_path: Path, tail: bytes,
                                           caplog: pytest.LogCaptureFixture) -> None:
    async with Wal(tmp_path) as wal:
        await wal.append(lines("a", 2))
        await wal.append(lines("b", 2))
    seg = tmp_path / segments(tmp_path)[-1]
    good_size = seg.stat().st_size
    with seg.open("ab") as f:
        f.write(tail)
    with caplog.at_level(logging.WARNING, logger="gateway.storage.wal"):
        async with Wal(tmp_path) as wal:
            assert seg.stat().st_size == good_size
            assert as_text(await wal.read_batch(100)) == lines("a", 2) + lines("b", 2)
            await wal.append(lines("c", 1))  # appending after the cut yields a clean log
            assert as_text(await wal.read_batch(100))[-1] == lines("c", 1)[0]
    assert f"torn tail of {len(tail)} bytes" in caplog.text


async def test_segments_rotate_and_are_deleted_once_committed(tmp_path: Path) -> None:
    metrics = Metrics()
    async with Wal(tmp_path, segment_bytes=150, metrics=metrics) as wal:
        for i in range(10):
            await wal.append(lines(f"s{i}", 4))
        assert len(segments(tmp_path)) > 3
        assert metrics.wal_bytes._value.get() == wal.total_bytes
        seen: list[str] = []
        while (batch := await wal.read_batch(8)) is not None:
            seen += as_text(batch)
            await wal.mark_delivered(batch)
        assert seen == [line for i in range(10) for line in lines(f"s{i}", 4)]
        assert len(segments(tmp_path)) == 1
        assert metrics.wal_pending_bytes._value.get() == 0
        await wal.append(lines("after", 1))
    async with Wal(tmp_path) as wal:
        assert as_text(await wal.read_batch(100)) == lines("after", 1)


async def test_one_append_of_1000_lines_costs_one_fsync(tmp_path: Path) -> None:
    async with Wal(tmp_path) as wal:
        await wal.append(lines("big", 1000))
        assert wal.fsync_count == 1


async def test_concurrent_appends_share_fsyncs(tmp_path: Path) -> None:
    async with Wal(tmp_path) as wal:
        await asyncio.gather(*(wal.append(lines(f"c{i}", 10)) for i in range(50)))
        assert wal.fsync_count < 50
        batch = await wal.read_batch(10_000)
        assert batch is not None
        assert len(batch.lines) == 500


async def test_backpressure_blocks_append_until_commit(tmp_path: Path) -> None:
    async with Wal(tmp_path, max_bytes=1000) as wal:
        while wal.pending_bytes < 1000:
            await wal.append(lines("x", 5))
        blocked = asyncio.create_task(wal.append(lines("late", 1)))
        await wait_until(lambda: wal.full)
        assert not blocked.done()
        batch = await wal.read_batch(10_000)
        assert batch is not None
        await wal.mark_delivered(batch)
        await asyncio.wait_for(blocked, 5)
        assert not wal.full
        assert as_text(await wal.read_batch(100)) == lines("late", 1)


async def test_close_releases_appends_waiting_for_space(tmp_path: Path) -> None:
    wal = Wal(tmp_path, max_bytes=10)
    await wal.open()
    await wal.append(lines("x", 1))
    blocked = asyncio.create_task(wal.append(lines("y", 1)))
    await wait_until(lambda: wal.full)
    await wal.close()
    with pytest.raises(WalError, match="not open"):
        await blocked


async def test_corrupt_record_in_a_sealed_segment_is_an_error(tmp_path: Path) -> None:
    async with Wal(tmp_path, segment_bytes=100) as wal:
        for i in range(4):
            await wal.append(lines(f"r{i}", 2))
    first = tmp_path / segments(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[HEADER_SIZE + 3] ^= 0xFF  # flip a payload byte of the first record
    first.write_bytes(bytes(data))
    async with Wal(tmp_path) as wal:
        with pytest.raises(WalError, match=rf"{first.name} at offset 0: CRC mismatch"):
            await wal.read_batch(100)


async def test_unreadable_checkpoint_replays_everything(tmp_path: Path) -> None:
    async with Wal(tmp_path) as wal:
        await wal.append(lines("a", 2))
        batch = await wal.read_batch(100)
        assert batch is not None
        await wal.mark_delivered(batch)
        await wal.append(lines("b", 1))
    (tmp_path / "checkpoint").write_text("garbage")
    async with Wal(tmp_path) as wal:
        assert as_text(await wal.read_batch(100)) == lines("a", 2) + lines("b", 1)


async def test_wait_for_data_and_wait_delivered(tmp_path: Path) -> None:
    async with Wal(tmp_path) as wal:
        assert not await wal.wait_for_data(0.01)
        waiter = asyncio.create_task(wal.wait_for_data(5))
        await wal.append(lines("a", 1))
        assert await waiter
        end = wal.end
        assert not await wal.wait_delivered(end, 0.01)
        batch = await wal.read_batch(10)
        assert batch is not None
        committed = asyncio.create_task(wal.wait_delivered(end, 5))
        await wal.mark_delivered(batch)
        assert await committed


async def test_append_before_open_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(WalError, match="not open"):
        await Wal(tmp_path).append(["m v=1 1"])


# ---- eviction (wal.full_policy drop_oldest_telemetry) -----------------------------------------

async def test_drop_oldest_evicts_whole_sealed_segments_and_counts_them_exactly(
        tmp_path: Path) -> None:
    metrics = Metrics()
    async with Wal(tmp_path, segment_bytes=300, max_bytes=1500, full_policy="drop_oldest_telemetry",
                   metrics=metrics, name="bulk") as wal:
        appended = 0
        for i in range(40):   # far more than fits: appends never wait, old segments go
            await asyncio.wait_for(wal.append(lines(f"e{i}", 3)), 5)
            appended += 3
        assert wal.pending_bytes <= 1500
        assert wal.evicted_lines > 0
        delivered: list[str] = []
        while (batch := await wal.read_batch(1000)) is not None:
            delivered += as_text(batch)
            await wal.mark_delivered(batch)
        # Every line is either delivered or counted as evicted, never both, never neither.
        assert len(delivered) + wal.evicted_lines == appended
        assert len(set(delivered)) == len(delivered)
        assert metrics.value("parkwatch_wal_evicted_lines_total", stream="bulk") \
            == wal.evicted_lines
        assert metrics.value("parkwatch_wal_evicted_bytes_total", stream="bulk") \
            == wal.evicted_bytes
        # What survives is the newest data, in order (the checkpoint's segment aside).
        assert delivered[-3:] == lines("e39", 3)


async def test_eviction_never_touches_the_batch_being_sent(tmp_path: Path) -> None:
    async with Wal(tmp_path, segment_bytes=200, max_bytes=100_000,
                   full_policy="drop_oldest_telemetry") as wal:
        for i in range(12):
            await wal.append(lines(f"r{i}", 3))
        inflight = await wal.read_batch(9)   # spans the first segments
        assert inflight is not None
        evicted = await wal.evict_oldest(10_000_000)   # as much as it may
        assert evicted.segments > 0
        await wal.mark_delivered(inflight)            # the writer's batch was delivered in full
        rest: list[str] = []
        while (batch := await wal.read_batch(1000)) is not None:
            rest += as_text(batch)
            await wal.mark_delivered(batch)
        assert len(inflight.lines) + len(rest) + evicted.lines == 36
        assert not set(as_text(inflight)) & set(rest)


async def test_a_gap_left_by_eviction_survives_a_restart(tmp_path: Path) -> None:
    async with Wal(tmp_path, segment_bytes=200, full_policy="drop_oldest_telemetry") as wal:
        for i in range(10):
            await wal.append(lines(f"g{i}", 3))
        evicted = await wal.evict_oldest(400)
        assert evicted.segments >= 1
        crash(wal)
    async with Wal(tmp_path) as wal:
        seen: list[str] = []
        while (batch := await wal.read_batch(1000)) is not None:
            seen += as_text(batch)
            await wal.mark_delivered(batch)
        assert len(seen) + evicted.lines == 30
        assert seen[-1] == lines("g9", 3)[-1]


async def test_block_policy_never_evicts(tmp_path: Path) -> None:
    async with Wal(tmp_path, segment_bytes=200, max_bytes=600) as wal:
        while wal.pending_bytes < 600:
            await wal.append(lines("x", 3))
        blocked = asyncio.create_task(wal.append(lines("late", 1)))
        await wait_until(lambda: wal.full)
        assert wal.evicted_lines == 0
        blocked.cancel()


async def test_sibling_bytes_count_against_the_cap(tmp_path: Path) -> None:
    other = 0
    async with Wal(tmp_path, max_bytes=1000, others_bytes=lambda: other) as wal:
        await wal.append(lines("a", 1))
        other = 1000
        blocked = asyncio.create_task(wal.append(lines("b", 1)))
        await wait_until(lambda: wal.full)
        other = 0
        wal.wake()
        await asyncio.wait_for(blocked, 5)


# ---- priority and bulk streams ------------------------------------------------------------------

def telemetry(n: int, prefix: str = "t") -> list[str]:
    return [f"water_pressure,device={prefix}{i} pressure_mpa=0.3 {i}" for i in range(n)]


ALARM = 'alarms,device=wp-1,rule=low alarm_id="a1",state="firing" 1'
EVENT = 'events,device=mcp-1,type=fire_alarm detail="",point="" 2'


def test_priority_lines_are_told_by_measurement() -> None:
    assert is_priority(ALARM)
    assert is_priority(EVENT)
    assert is_priority("device_status,device=x online=true 1")
    assert is_priority("gateway,instance=a acks=1 1")
    assert is_priority('notifications,channel=sms outcome="sent" 1')
    assert not is_priority("water_pressure,device=x v=1 1")
    assert not is_priority("alarmsx,device=x v=1 1")   # a prefix is not the name
    assert not is_priority("events_archive v=1 1")


async def test_streams_split_lines_and_drain_priority_with_its_own_checkpoint(
        tmp_path: Path) -> None:
    async with WalStreams(tmp_path, max_bytes=1 << 20) as wal:
        await wal.append([*telemetry(3), ALARM, EVENT])
        assert [w.name for w in wal.streams] == ["priority", "bulk"]
        assert as_text(await wal.priority.read_batch(100)) == [ALARM, EVENT]
        assert as_text(await wal.bulk.read_batch(100)) == telemetry(3)
        batch = await wal.priority.read_batch(100)
        assert batch is not None
        await wal.priority.mark_delivered(batch)
        crash(wal.priority)
        crash(wal.bulk)
    async with WalStreams(tmp_path, max_bytes=1 << 20) as wal:
        assert await wal.priority.read_batch(100) is None
        assert as_text(await wal.bulk.read_batch(100)) == telemetry(3)


async def test_block_policy_stops_telemetry_but_alarms_still_get_the_reserve(
        tmp_path: Path) -> None:
    async with WalStreams(tmp_path, max_bytes=1 << 20, priority_share=0.1) as wal:
        while True:
            pending = asyncio.create_task(wal.append(telemetry(200)))
            await wait_until(lambda p=pending: p.done() or wal.bulk.full)  # type: ignore[misc]
            if wal.bulk.full:
                break
        assert not pending.done()                         # telemetry waits: acks stop
        await asyncio.wait_for(wal.append([ALARM, EVENT]), 5)   # the reserve takes alarms
        assert as_text(await wal.priority.read_batch(100)) == [ALARM, EVENT]
        batch = await wal.bulk.read_batch(1_000_000)
        assert batch is not None
        await wal.bulk.mark_delivered(batch)
        await asyncio.wait_for(pending, 5)
        assert wal.bulk.evicted_lines == 0


async def test_drop_oldest_telemetry_evicts_only_bulk(tmp_path: Path) -> None:
    metrics = Metrics()
    async with WalStreams(tmp_path, max_bytes=1 << 20, full_policy="drop_oldest_telemetry",
                          metrics=metrics) as wal:
        for i in range(600):
            await asyncio.wait_for(wal.append([*telemetry(50, f"b{i}-"), ALARM]), 5)
        assert wal.evicted_lines > 0
        assert not wal.full
        priority = await wal.priority.read_batch(1_000_000)
        assert as_text(priority) == [ALARM] * 600
        bulk: list[str] = []
        while (batch := await wal.bulk.read_batch(100_000)) is not None:
            bulk += as_text(batch)
            await wal.bulk.mark_delivered(batch)
        assert len(bulk) + wal.evicted_lines == 600 * 50
        assert metrics.value("parkwatch_wal_evicted_lines_total", stream="bulk") \
            == wal.evicted_lines
        assert metrics.value("parkwatch_wal_evicted_lines_total", stream="priority") == 0


async def test_a_log_from_an_older_version_is_replayed_first_then_removed(
        tmp_path: Path) -> None:
    async with Wal(tmp_path) as old:
        await old.append(lines("old", 2))
    async with WalStreams(tmp_path) as wal:
        await wal.append([*telemetry(1), ALARM])
        assert [w.name for w in wal.streams] == ["legacy", "priority", "bulk"]
        legacy = wal.streams[0]
        batch = await legacy.read_batch(100)
        assert as_text(batch) == lines("old", 2)
        assert batch is not None
        await legacy.mark_delivered(batch)
    assert not segments(tmp_path)
    async with WalStreams(tmp_path) as wal:
        assert [w.name for w in wal.streams] == ["priority", "bulk"]
        assert as_text(await wal.bulk.read_batch(100)) == telemetry(1)


async def test_read_batch_can_be_bounded_in_bytes(tmp_path: Path) -> None:
    async with Wal(tmp_path) as wal:
        for name in "abc":
            await wal.append(lines(name, 3))
        record = HEADER_SIZE + len("\n".join(lines("a", 3)).encode())
        assert as_text(await wal.read_batch(100, max_bytes=record)) == lines("a", 3)
        assert as_text(await wal.read_batch(100, max_bytes=1)) == lines("a", 3)  # one at least
        assert len(as_text(await wal.read_batch(100, max_bytes=2 * record + 2))) == 6
