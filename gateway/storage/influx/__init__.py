"""Delivery to InfluxDB: the adapters (1.x, 2.x/3.x), the response classifier and the writer.

::

    Wal ─▶ InfluxWriter ─▶ Sink (InfluxV1Sink | InfluxV2Sink) ─▶ InfluxDB
                 ▲                         │
                 └──── classify(answer) ◀──┘

Import the pieces from their modules (``gateway.storage.influx.writer`` etc.); this package module
only re-exports the small vocabulary they share.
"""

from gateway.storage.influx.classify import Verdict, WriteOutcome, classify
from gateway.storage.influx.sink import Sink, SinkResponse, SinkUnreachable

__all__ = ["Sink", "SinkResponse", "SinkUnreachable", "Verdict", "WriteOutcome", "classify"]
