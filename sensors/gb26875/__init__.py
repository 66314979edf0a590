"""GB/T 26875.3-2011, the protocol of user information transmission devices (用户信息传输装置,
UITD) that connect fire-alarm panels to a monitoring centre. Pure code: bytes in, frozen
dataclasses or typed rejections out; no I/O, no clock (the caller passes the time).

| module | job |
|---|---|
| ``frame`` | ``Frame``, ``encode``, the stream ``Deframer``, ``ack_for``/``nak_for`` |
| ``timelabel`` | the 6-byte time label <-> naive local ``datetime`` |
| ``adu`` | ``parse_adu`` by type flag; the centre's control ADUs (clock sync, duty check, init) |
| ``bits`` | status and operation bit fields as ``IntFlag``s; ``alarm_bits``, ``is_fire`` |
| ``codes`` | system, component and analog type tables; component ``signal_class`` |

Protocol facts and test vectors: the domain brief (fire-safety-brief.md §2); the integration
contract: device-contract.md §8. ``sensors/pointmap.py`` places the points these frames report.
"""
