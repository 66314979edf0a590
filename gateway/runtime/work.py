"""The unit that travels through the durability stages (gateway/runtime/durability.py)."""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field

from gateway.alarms.acklinks import AckGrant
from gateway.alarms.store import OutboxRow
from gateway.ingest.mqtt import Inbound
from rules.alarm import Transition


@dataclass
class Work:
    """One unit of durability: lines for the WAL, alarm changes and outbox rows for the alarm
    store, and the messages to PUBACK once all of it is durable."""

    lines: list[str] = field(default_factory=list)
    messages: list[Inbound] = field(default_factory=list)
    accepted_by_type: collections.Counter[str] = field(default_factory=collections.Counter)
    samples: int = 0
    transitions: list[Transition] = field(default_factory=list)
    outbox: list[OutboxRow] = field(default_factory=list)
    grants: list[AckGrant] = field(default_factory=list)
    save_state: bool = False
    #: Resolved once everything above is durable (an API acknowledgement waits on it).
    done: asyncio.Future[None] | None = None
    #: Where its messages get their PUBACKs: the puback stage of the session they came from.
    pubacks: asyncio.Queue[Work] | None = None
    #: Taken by the validate stage, given back once the messages got their PUBACKs.
    slot: asyncio.Semaphore | None = None
    #: Room in the commit queue (see CommitQueue), given back once the commit stage is done.
    commit_slot: asyncio.Semaphore | None = None

    def release(self) -> None:
        if self.slot is not None:
            self.slot.release()
            self.slot = None

    def release_commit_slot(self) -> None:
        if self.commit_slot is not None:
            self.commit_slot.release()
            self.commit_slot = None
