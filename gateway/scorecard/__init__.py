"""The park safety scorecard (issue 12, point 4): the figures a park hands in for its
performance evaluation and star rating.

``model`` (the plain data the figures are made of), ``kpis`` (pure functions: data in, exact
numbers out), ``alarmsource`` (reads the alarm store's SQLite file), ``influxsource`` (reads
``device_status`` and writes the daily ``scorecard`` points), ``report`` (one scorecard for a
park or tenant and a period), ``daily`` (the ``scorecard`` measurement), ``render`` (table, CSV,
JSON and the printable HTML page). Formulas: docs/scorecard.md.
"""
