"""A simulated park: realistic device traffic and failure scenarios, published over MQTT.

* :mod:`.traffic` - per-kind telemetry, events and status for registered devices;
* :mod:`.scenarios` - overlays that make things go wrong (fire, pipe burst, garbage, ...);
* :mod:`.runner` - the schedule (``iter_messages``), publishing (``run_simulation``) and the
  ``parkwatch simulate`` options;
* :mod:`.publisher` - a small raw-socket MQTT 3.1.1 publisher fast enough for the benchmark;
* :mod:`.uitd` - ``simulate --uitd``: the point map's fire-panel UITDs over GB/T 26875.3, their
  heartbeats and scenarios; :mod:`.uitdclient` one UITD (send/confirm, resends, 查岗 answers,
  clock sync); :mod:`.uitdadu` the upload ADUs they send.
"""
