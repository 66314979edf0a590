"""Partitions by park and the partition lease: several instances, each owning some parks, each
partition with one active and standbys (issue 16, docs/scale.md).

``partitions`` (which parks an instance owns, its topic filters, its UITD panels), ``lease``
(the partition's lease row in PostgreSQL: acquire, renew, release, and the :class:`Fence` the
shared alarm store checks in every write), ``standby`` (waiting for the lease, and keeping it
while the gateway runs).

May import: ``gateway.alarms.fence``, ``gateway.storage``, the base modules and ``sensors``;
``gateway.runtime`` and ``gateway.tools`` import it, never the other way round.
"""
