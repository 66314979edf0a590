"""What tests share and are not tests: helpers, fake servers and the chaos driver.

Test modules import from here, never from one another. One concern per module:

- ``paths``: the repository root and the sample registry.
- ``faultproxy``, ``notify_servers``, ``sms_servers``, ``grafana_server``: local fakes of the
  network and of third-party APIs.
- ``chaos``: the chaos driver used by tests/test_chaos.py and bench/soak.py.
"""
