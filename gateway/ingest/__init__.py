"""Ingest: from the broker to validated messages.

The MQTT session with manual PUBACKs (``mqtt``), validation of topic, registry, spoofing guard
and payload (``validate``: where a reading is validated), per-device rate limits
(``ratelimit``), dead letters for rejections (``deadletter``) and the watchdog of the broker
path (``watchdog``).

May import: ``gateway.storage`` (line protocol), the base modules (config, errors, logs,
metrics), ``rules`` (observations) and ``sensors``.
"""
