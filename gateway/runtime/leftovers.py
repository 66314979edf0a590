"""A standby delivers what its previous life left in its WAL.

With ``ingest.ack_after: wal`` (the default) a message is acknowledged once it is in this
host's WAL. If the active is killed, its successor gets only what was not acknowledged; what the
killed instance had acknowledged but not yet written to InfluxDB is still in its WAL. The
supervisor restarts it as the standby, and a standby never runs the gateway — so without this,
those readings would wait until this instance is active again, which may be never. Here the
standby runs just the InfluxDB writer over its own WAL until the WAL is empty, and stops it the
moment it takes over (the gateway then opens the same WAL and delivers the rest itself).

Nothing is doubled: the writer moves the WAL checkpoint as it always does, and a point
delivered twice (a crash between write and checkpoint) overwrites itself in InfluxDB. A lost
host takes this backlog with it: that is what ``ack_after: influx`` is for (docs/scale.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.config import Settings
from gateway.metrics import Metrics
from gateway.storage.influx.writer import InfluxWriter
from gateway.storage.walstreams import WalStreams

log = logging.getLogger(__name__)


async def _delivered(wal: WalStreams) -> None:
    for stream in wal.streams:
        await stream.wait_delivered(stream.end, None)


async def drain_leftovers(settings: Settings) -> None:
    """Deliver the WAL's backlog to InfluxDB, then return; cancel to stop (the rest stays)."""
    from gateway.runtime.gateway import make_sink_for

    s = settings
    wal_dir = s.state_dir / "wal"
    if not wal_dir.exists():
        return
    metrics = Metrics()
    wal = WalStreams(wal_dir, segment_bytes=s.wal.segment_bytes, max_bytes=s.wal.max_bytes,
                     fsync=s.wal.fsync, full_policy=s.wal.full_policy,
                     priority_share=s.wal.priority_share, metrics=metrics)
    await wal.open()
    try:
        if wal.pending_bytes == 0:
            return
        log.info("standby: delivering %d bytes this instance's WAL still holds",
                 wal.pending_bytes)
        sink = await make_sink_for(s)
        writer = InfluxWriter(wal=wal, sink=sink, metrics=metrics,
                              batch_lines=s.influx.batch_lines,
                              flush_interval_s=s.influx.flush_interval_s,
                              max_backoff_s=s.influx.max_backoff_s)
        task = asyncio.create_task(writer.run(), name="standby-leftovers")
        done = asyncio.create_task(_delivered(wal), name="standby-leftovers-done")
        try:
            await asyncio.wait([task, done], return_when=asyncio.FIRST_COMPLETED)
            if done.done():
                log.info("standby: the WAL's backlog is in InfluxDB")
        finally:
            for t in (task, done):
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await sink.close()
    finally:
        await wal.close()
