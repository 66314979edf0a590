"""The GB/T 26875.3-2011 server: user information transmission devices (UITD) of fire-alarm
panels over TCP. ``translate`` (pure: parsed ADUs → events, lines, observations), ``session``
(per-UITD state: last frame, clock, duty checks), ``server`` (connections, framing, ACK/NAK after
durability, hostile input bounds). See docs/uitd.md."""
