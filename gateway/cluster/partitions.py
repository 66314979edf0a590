"""Which parks an instance owns, and what it subscribes to for them.

A park is the unit of partitioning and never splits: zone coincidence (two detectors of one
zone), per-device rate limits, event sequences and a panel's points all stay inside the park,
so every rule sees everything it needs inside one instance, and no cross-instance coordination
is needed on the hot path.

Assignment is either a list (``cluster.parks``: explicit, for moving a big park on its own) or
a stable hash (``cluster.partitions`` N, ``cluster.index`` i: the park belongs to slot
``sha256(park id) mod N``). SHA-256 rather than Python's ``hash()``: that is salted per process,
so two instances would disagree about who owns a park. Hashing needs no coordination and no
table, at the price of not choosing: adding a partition (changing N) moves about 1/N of the
parks, each with its stop → reassign → start (docs/scale.md).

Topics (docs/device-protocol.md, Topics): ``{root}/{park}/{building}/{device}/{suffix}``, so an
owned park's traffic is exactly ``{root}/{park}/#``. The priority lane gets the park's events
and status. A mistyped park is outside every partition's filters and is not seen (a single box
subscribes to ``{root}/#`` and counts it as ``bad_topic``/``unknown_device``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.config import ClusterSettings
from sensors.registry import Registry


def hash_slot(park: str, partitions: int) -> int:
    """The slot of ``park`` among ``partitions``: the same on every machine and every run."""
    digest = hashlib.sha256(park.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % partitions


@dataclass(frozen=True)
class Partition:
    """The parks one partition owns. ``name`` None: the single box, which owns every park."""

    name: str | None
    listed: frozenset[str] = frozenset()
    slots: tuple[int, int] | None = None      # (partitions, index) for hash assignment

    @classmethod
    def from_settings(cls, cluster: ClusterSettings) -> Partition:
        if cluster.partition is None:
            return cls(None)
        slots = None
        if cluster.partitions is not None and cluster.index is not None:
            slots = (cluster.partitions, cluster.index)
        return cls(cluster.partition, frozenset(cluster.parks), slots)

    @property
    def whole(self) -> bool:
        """The single box: every park, today's subscriptions."""
        return self.name is None

    def owns(self, park: str) -> bool:
        if self.name is None:
            return True
        if self.slots is not None:
            n, i = self.slots
            return hash_slot(park, n) == i
        return park in self.listed

    def parks(self, registry: Registry) -> list[str]:
        """The registry's parks this partition owns, sorted (what it subscribes to)."""
        return sorted(p for p in registry.parks() if self.owns(p))

    def unknown_parks(self, registry: Registry) -> list[str]:
        """Listed parks the registry does not have: a typo that would leave a park unwatched."""
        return sorted(self.listed - registry.parks())

    def check(self, registry: Registry, source: object) -> tuple[list[str], list[str]]:
        """(the registry's parks owned, problems): a partition that owns none, or lists a
        park the registry (read from ``source``) lacks, would leave parks unwatched."""
        owned = self.parks(registry)
        if self.whole:
            return owned, []
        problems = [f"cluster.parks: park {p!r} is not in the registry {source}"
                    for p in self.unknown_parks(registry)]
        if not owned and not problems:
            problems.append(f"cluster: partition {self.name!r} owns none of the registry's "
                            f"parks {sorted(registry.parks())}")
        return owned, problems

    def registry(self, registry: Registry) -> Registry:
        """The devices of the owned parks: what this instance's engine, liveness and
        scorecard cover. Another partition's devices are never silent here, never offline,
        and never raise an alarm here (their own partition does that)."""
        if self.whole:
            return registry
        return Registry(devices={k: d for k, d in registry.devices.items()
                                 if self.owns(d.park)},
                        source=registry.source, lines=registry.lines)

    def owns_device(self, registry: Registry) -> OwnsDevice:
        return OwnsDevice(self, registry)


@dataclass(frozen=True)
class OwnsDevice:
    """Whether a registry device (a panel, for the UITD server) is in the partition."""

    partition: Partition
    registry: Registry

    def __call__(self, device_id: str) -> bool:
        device = self.registry.get(device_id)
        return device is not None and self.partition.owns(device.park)


def topic_filters(root: str, parks: Iterable[str]) -> list[str]:
    """The main session's filters: everything of each owned park."""
    prefix = root.rstrip("/") + "/"
    return [f"{prefix}{park}/#" for park in parks]


def priority_filters(root: str, parks: Iterable[str]) -> list[str]:
    """The priority lane's filters: each owned park's events and status."""
    prefix = root.rstrip("/") + "/"
    return [f"{prefix}{park}/+/+/{suffix}" for park in parks for suffix in ("event", "status")]
