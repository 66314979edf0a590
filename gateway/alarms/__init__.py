"""Alarms, the gateway's side: the pure engine (``rules``) given time and a durable store.

``keeper`` (engine + store, driven from the event loop), ``store`` (alarms, history, engine
state, outbox and ack tokens; where a person's acknowledgement is stored) on one of two engines
behind ``db`` (the seam): ``sqlite`` (the single-box file, the default) or ``postgres`` (shared by
several instances, fenced by ``fence``), each with its schema and migrations; ``outputs``
(retained MQTT document, ``alarms`` point), ``service`` (what the API, the ack page and the CLI
call), ``acklinks`` (signed single-use links), ``health`` (alarms about ParkWatch itself),
``migrate`` (a single box's SQLite store copied into a shared PostgreSQL one).

May import: ``gateway.storage``, the base modules, ``rules`` and ``sensors``.
"""
