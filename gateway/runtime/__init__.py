"""The running gateway: lifecycle and stages joined by bounded queues.

``gateway`` (the lifecycle; the pipeline diagram is in its docstring), ``validation`` (the
validate stage), ``durability`` (the commit and puback stages; where a PUBACK is sent),
``ticker`` (alarm timers, the stats point), ``lane`` (the priority lane's duplicate filter),
``liveview`` (what /status shows), ``work`` (the unit of durability), ``heartbeat``.

May import: ``gateway.notify``, ``gateway.alarms``, ``gateway.ingest``, ``gateway.storage``,
the base modules, ``rules`` and ``sensors``; never ``gateway.http`` or ``gateway.tools``.
"""
