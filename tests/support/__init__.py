"""What tests share and are not tests: helpers, fake servers and the chaos driver.

Test modules import from here, never from one another or from ``tests.conftest`` (which holds
fixtures only); tests/test_layout.py enforces that. One concern per module:

- ``paths``: the repository root and the sample registry.
- ``ids``: unique names, so tests sharing a broker or database do not see each other.
- ``waiting``: ``wait_for``, polling with a deadline instead of fixed sleeps.
- ``influx``: reading rows back from a test InfluxDB.
- ``gateway``: settings for one test, and a gateway run in this event loop or as a subprocess.
- ``readings``: a known load of telemetry, publishing it and checking that all of it landed.
- ``mqtt``: a test-side MQTT subscriber, and reading a retained message.
- ``acl``: the reference mosquitto ACL that docs/security.md shows.
- ``alarms``: alarms with chosen fields, for the alarm store tests and their subprocesses.
- ``notify``: a routing file and the channel secrets it names, for notification end to end.
- ``faultproxy``, ``notify_servers``, ``sms_servers``, ``grafana_server``: local fakes of the
  network and of third-party APIs.
- ``gb26875_vectors``: the GB/T 26875.3 test frames of the domain brief, as bytes.
- ``chaos``: the chaos driver used by tests/test_chaos.py and bench/soak.py.
"""
