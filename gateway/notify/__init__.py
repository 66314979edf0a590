"""Notifications: who hears about an alarm change, when, and through which channel.

``routing`` (the routing tree from the routing file; where a notification is routed), ``plan``
(tiers, escalation and repeats as pure functions), ``templates`` (message text),
``notifier`` (alarm transitions → outbox rows, in the alarm store's transaction), ``outbox``
(the durable queue), ``dispatcher`` (sends due rows, retries, rate limits, digests),
``channels/`` (one dumb adapter per provider), ``testsend`` (``parkwatch notify test``).

May import: ``gateway.alarms``, ``gateway.storage``, the base modules and ``rules``.
"""
