"""Alarms, the gateway's side: the pure engine (``rules``) given time and a durable store.

``keeper`` (engine + store, driven from the event loop), ``store`` (SQLite: alarms, history,
engine state, outbox and ack tokens — the whole schema and its migrations; where a person's
acknowledgement is stored), ``outputs`` (retained MQTT document, ``alarms`` point),
``service`` (what the API, the ack page and the CLI call), ``acklinks`` (signed single-use
links), ``health`` (alarms about ParkWatch itself).

May import: ``gateway.storage``, the base modules, ``rules`` and ``sensors``.
"""
