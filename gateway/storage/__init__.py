"""Storage: the local write-ahead log and delivery to InfluxDB.

``wal`` (one log; where the WAL fsyncs), ``walstreams`` (priority and bulk logs under one disk
cap), ``lineprotocol`` (the InfluxDB line format every stored line uses) and ``influx/`` (the
1.x and 2.x/3.x adapters, the response classifier, the writer).

May import: the base modules (config, errors, logs, metrics) only.
"""
