"""Grafana: dashboards generated from code (``dashboards``), written to disk (``export``) and
upserted into a running Grafana (``push``).

Imported only by ``gateway.tools`` (``parkwatch grafana export|push``), so the gateway itself
never loads the Grafana libraries. May import: ``gateway.ingest`` (message types), the base
modules, ``rules`` and ``sensors``.
"""
