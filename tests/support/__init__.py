"""What tests share and are not tests: helpers, fake servers and the chaos driver.

Test modules import from here, never from one another or from ``tests.conftest`` (which holds
fixtures only). One concern per module:

- ``paths``: the repository root and the sample registry.
- ``ids``: unique names, so tests sharing a broker or database do not see each other.
- ``waiting``: ``wait_for``, polling with a deadline instead of fixed sleeps.
- ``influx``: reading rows back from a test InfluxDB.
- ``gateway``: settings for one test, and a gateway run in this event loop.
- ``faultproxy``, ``notify_servers``, ``sms_servers``, ``grafana_server``: local fakes of the
  network and of third-party APIs.
- ``chaos``: the chaos driver used by tests/test_chaos.py and bench/soak.py.
"""
