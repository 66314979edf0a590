"""Grafana: dashboards generated from code (``dashboards``), written to disk (``export``) and
upserted into a running Grafana (``push``)."""
