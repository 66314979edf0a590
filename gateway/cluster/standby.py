"""Standby and active: wait for the partition's lease, then keep it while the gateway runs.

::

    start ─▶ standby: poll the lease every ``poll_s`` ──expired or released──▶ acquire (epoch+1)
                 │ (status: "standby for partition p1, held by X, n s left")        │
                 ▼                                                                  ▼
              stop requested: exit 0                  active: the gateway runs, client id
                                                      parkwatch-{partition} (the partition's
                                                      persistent session), and keep() renews
                                                      every renew_s
                                                                  │ renewal refused / too late
                                                                  ▼
                                           LeaseLost: the puback stage has already stopped
                                           (Lease.valid), the gateway stops, exit non-zero;
                                           the supervisor restarts it as a standby

Crash-only on purpose: an instance that lost its lease has in-memory engine state that may be
behind the store its successor writes; restarting from the store is the one path that is
always right.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from gateway.cluster.lease import Lease

log = logging.getLogger(__name__)


@dataclass
class Role:
    """What /status and /healthz say about this instance's place in the cluster."""

    partition: str
    holder: str
    role: str = "standby"                 # standby | active | stopped
    epoch: int = 0
    held_by: str | None = None
    held_for_s: float | None = None
    since: float = field(default_factory=time.time)
    parks: list[str] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {"partition": self.partition, "role": self.role, "epoch": self.epoch,
                "holder": self.holder, "held_by": self.held_by,
                "lease_left_s": None if self.held_for_s is None else round(self.held_for_s, 1),
                "since": self.since, "parks": self.parks}


async def wait_for_lease(lease: Lease, stop: asyncio.Event, role: Role,
                         poll_s: float = 0.5) -> bool:
    """Wait as a standby until the lease is ours (True) or a stop is requested (False)."""
    announced: tuple[str, int] | None = None
    while not stop.is_set():
        try:
            if await lease.try_acquire():
                role.role, role.epoch, role.held_by, role.held_for_s = \
                    "active", lease.epoch, lease.holder, None
                role.since = time.time()
                return True
            current = await lease.current()
            if current is not None:
                role.held_by, role.held_for_s = current.holder, current.remaining_s
                if announced != (current.holder, current.epoch):
                    announced = (current.holder, current.epoch)
                    log.info("standby for partition %s, held by %s (epoch %d, %.1f s left)",
                             lease.partition, current.holder, current.epoch,
                             current.remaining_s)
        except (psycopg.Error, OSError) as exc:
            log.warning("standby for partition %s: lease database unreachable (%s)",
                        lease.partition, exc)
            await lease.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll_s)
    return False


async def keep(lease: Lease, renew_s: float) -> None:
    """Renew forever; raises LeaseLost (the gateway treats it as a failed stage)."""
    while True:
        await asyncio.sleep(renew_s)
        await lease.renew()
