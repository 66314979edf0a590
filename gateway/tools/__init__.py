"""The people's tools: the ``parkwatch`` command (``cli``), the alarm and maintenance CLI
(``alarmcli``), copying the alarm store to PostgreSQL (``storecli``), the live view (``top``),
the demo (``demo``) and the private broker and InfluxDB it and the tests start
(``devservices``), and the simulated park (``simulator/``).

May import everything in gateway/, ``rules`` and ``sensors``.
"""
