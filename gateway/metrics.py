"""ParkWatch's own counters and gauges.

One :class:`Metrics` object per gateway (no global registry), exposed at ``/metrics`` in the
Prometheus text format and written periodically to the ``gateway`` measurement.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sensors.base import RejectReason


class Metrics:
    """Every number the gateway reports about itself. Names follow Prometheus conventions."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter("parkwatch_messages_received", "MQTT messages received",
                                ["type"], registry=r)
        self.accepted = Counter("parkwatch_messages_accepted",
                                "Messages validated and made durable", ["type"], registry=r)
        self.rejected = Counter("parkwatch_messages_rejected",
                                "Messages refused, by reason", ["reason"], registry=r)
        for reason in RejectReason:
            self.rejected.labels(reason=reason.value)
        self.readings = Counter("parkwatch_readings_accepted",
                                "Telemetry samples accepted (a batch message has many)",
                                registry=r)
        self.untrusted_clock = Counter("parkwatch_untrusted_timestamps",
                                       "Samples whose device time was not trusted",
                                       registry=r)
        self.seq_gaps = Counter("parkwatch_seq_gaps",
                                "Messages missing by device seq (seq jumped forward)", registry=r)
        self.seq_repeats = Counter("parkwatch_seq_repeats",
                                   "Messages whose seq was not above the device's last one "
                                   "(redelivery, reordering or a device restart)", registry=r)
        self.deadletter_published = Counter("parkwatch_deadletter_published",
                                            "Rejected messages published to the dead-letter topic",
                                            registry=r)
        self.acks = Counter("parkwatch_mqtt_acks", "PUBACKs sent after durability", registry=r)
        self.stale_acks = Counter("parkwatch_mqtt_stale_acks",
                                  "Acks skipped because the connection that delivered the message "
                                  "is gone (the broker redelivers it)", registry=r)
        self.reconnects = Counter("parkwatch_mqtt_reconnects", "MQTT reconnect attempts",
                                  registry=r)
        self.points_written = Counter("parkwatch_points_written",
                                      "Points InfluxDB accepted", registry=r)
        self.points_rejected = Counter("parkwatch_points_rejected",
                                       "Points InfluxDB refused (400/422), counted not retried",
                                       registry=r)
        self.write_retries = Counter("parkwatch_write_retries",
                                     "InfluxDB writes retried (5xx, 429, network, auth)",
                                     ["cause"], registry=r)
        self.write_batches = Counter("parkwatch_write_batches", "InfluxDB write requests sent",
                                     registry=r)
        self.write_latency = Histogram("parkwatch_write_seconds", "InfluxDB write request time",
                                       registry=r,
                                       buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.notifications = Counter("parkwatch_notifications",
                                     "Notification attempts by channel and outcome "
                                     "(sent, retry, failed, dead)", ["channel", "outcome"],
                                     registry=r)
        self.queue_depth = Gauge("parkwatch_queue_depth", "Items waiting in a pipeline queue",
                                 ["queue"], registry=r)
        self.inflight = Gauge("parkwatch_unacked_in_flight",
                              "QoS 1 messages received and not yet acknowledged", registry=r)
        self.wal_bytes = Gauge("parkwatch_wal_bytes", "Bytes in the local write-ahead log",
                               registry=r)
        self.wal_pending_bytes = Gauge("parkwatch_wal_pending_bytes",
                                       "WAL bytes not yet written to InfluxDB", registry=r)
        # Long outages (docs/reliability.md): per stream (priority, bulk) and what the
        # wal.full_policy did about a full log.
        self.wal_stream_pending_bytes = Gauge("parkwatch_wal_stream_pending_bytes",
                                              "WAL bytes not yet in InfluxDB, by stream",
                                              ["stream"], registry=r)
        self.wal_full = Gauge("parkwatch_wal_full",
                              "1 while appends to this WAL stream wait for space", ["stream"],
                              registry=r)
        self.wal_full_events = Counter("parkwatch_wal_full_events",
                                       "Times a WAL stream filled up and appends had to wait "
                                       "(acknowledgements stop)", ["stream"], registry=r)
        self.wal_evicted_lines = Counter("parkwatch_wal_evicted_lines",
                                         "Lines deleted unsent by wal.full_policy "
                                         "drop_oldest_telemetry", ["stream"], registry=r)
        self.wal_evicted_bytes = Counter("parkwatch_wal_evicted_bytes",
                                         "WAL bytes deleted unsent by wal.full_policy "
                                         "drop_oldest_telemetry", ["stream"], registry=r)
        self.duplicate_events = Counter("parkwatch_duplicate_events",
                                        "Device events seen before (same device, seq and "
                                        "payload): acknowledged, not evaluated or stored again",
                                        registry=r)
        # Engine counters, read when scraped (rules/kinds/flood.py): what a flooding device lost.
        self.event_points_refused = Gauge("parkwatch_event_points_refused",
                                          "Device events for a point beyond the device's "
                                          "max_points, counted into too_many_points (since start)",
                                          registry=r)
        self.events_rate_limited = Gauge("parkwatch_events_rate_limited",
                                         "Non-fire device events over their device's rate, "
                                         "stored but not evaluated (since start)", registry=r)
        self.uitd_frames = Counter("parkwatch_uitd_frames",
                                   "GB/T 26875.3 frames received, by command",
                                   ["command"], registry=r)
        self.uitd_rejected = Counter("parkwatch_uitd_rejected",
                                     "UITD frames, ADUs and connections refused, by reason",
                                     ["reason"], registry=r)
        self.uitd_connections = Gauge("parkwatch_uitd_connections", "UITD connections open",
                                      registry=r)
        self.unmapped_points = Counter("parkwatch_unmapped_points",
                                       "Panel points not in the point map (paged on the panel)",
                                       registry=r)
        self.broker_connected = Gauge("parkwatch_broker_connected", "1 when connected to MQTT",
                                      registry=r)
        self.influx_reachable = Gauge("parkwatch_influx_reachable",
                                      "1 when the last InfluxDB request got an HTTP answer",
                                      registry=r)
        self.influx_auth_ok = Gauge("parkwatch_influx_auth_ok",
                                    "0 when InfluxDB refuses our credentials (401/403)",
                                    registry=r)
        self.influx_auth_ok.set(1)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float:
        """Current value of one sample (0 when it has never been set)."""
        return self.registry.get_sample_value(name, labels or None) or 0.0

    def flat(self) -> Iterator[tuple[str, float]]:
        """(field name, value) pairs for the ``gateway`` measurement: one field per series."""
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.endswith(("_created", "_bucket")):
                    continue
                name = sample.name.removeprefix("parkwatch_")
                if sample.labels:
                    name += "_" + "_".join(v for _, v in sorted(sample.labels.items()))
                yield name, float(sample.value)
