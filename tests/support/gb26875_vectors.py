"""The GB/T 26875.3-2011 test vectors of fire-safety-brief.md §2.7, as bytes.

UITD address ``79 03 00 00 00 00``, centre ``38 5B 01 00 00 00``; every header time label but
vector 14's is 2012-09-26 09:58:32 (``20 3A 09 1A 09 0C``).
"""

from __future__ import annotations


def _hex(text: str) -> bytes:
    return bytes.fromhex(text)


UITD = _hex("79 03 00 00 00 00")
CENTRE = _hex("38 5B 01 00 00 00")
#: The send time of the centre's ACK and NAK in vectors 2 and 3 (2012-09-26 09:58:35).
ACK_LABEL = _hex("23 3A 09 1A 09 0C")

_HEAD_UP = "40 40 01 00 01 01 20 3A 09 1A 09 0C 79 03 00 00 00 00 38 5B 01 00 00 00"
_HEAD_DOWN = "40 40 01 00 01 01 20 3A 09 1A 09 0C 38 5B 01 00 00 00 79 03 00 00 00 00"

VECTORS: dict[int, bytes] = {
    1: _hex(f"{_HEAD_UP} 30 00 02 02 01 01 01 28 0A 00 02 00 02 00" + " 20" * 30
            + " 00 02 3A 09 1A 09 0C 46 23 23"),
    2: _hex("40 40 01 00 01 01 23 3A 09 1A 09 0C 38 5B 01 00 00 00 79 03 00 00 00 00"
            " 00 00 03 AB 23 23"),
    3: _hex("40 40 01 00 01 01 23 3A 09 1A 09 0C 38 5B 01 00 00 00 79 03 00 00 00 00"
            " 00 00 06 AE 23 23"),
    4: _hex(f"{_HEAD_UP} 09 00 02 15 01 08 02 3A 09 1A 09 0C 42 23 23"),
    5: _hex(f"{_HEAD_UP} 0A 00 02 18 01 20 01 02 3A 09 1A 09 0C 5F 23 23"),
    6: _hex(f"{_HEAD_UP} 04 00 02 19 01 01 01 C7 23 23"),
    7: _hex(f"{_HEAD_UP} 08 00 02 1C 01 02 3A 09 1A 09 0C 40 23 23"),
    8: _hex(f"{_HEAD_DOWN} 03 00 04 51 01 00 FE 23 23"),
    9: _hex(f"{_HEAD_UP} 09 00 05 15 01 08 02 3A 09 1A 09 0C 45 23 23"),
    10: _hex(f"{_HEAD_DOWN} 03 00 04 55 01 00 02 23 23"),
    11: _hex(f"{_HEAD_DOWN} 03 00 01 59 01 00 03 23 23"),
    12: _hex(f"{_HEAD_DOWN} 08 00 01 5A 01 02 3A 09 1A 09 0C 7D 23 23"),
    13: _hex(f"{_HEAD_DOWN} 03 00 01 5B 01 0A 0F 23 23"),
    14: _hex("40 40 01 00 02 03 35 12 0F 0F 06 15 15 27 08 20 20 FE 00 00 00 00 00 01"
             " 30 00 02 02 01 81 03 11 15 27 08 20 02 00 B0 A1 A9 96" + " 00" * 27
             + " 35 12 0F 0F 06 15 49 23 23"),
}

#: ADU-only vectors: type 1 with two objects, and a type 3 temperature.
ADU_SYSTEM_STATUS = _hex("01 02 01 02 04 02 04 00 09 02 07 15 0D 03 05 01 05 00 09 02 07 15")
ADU_ANALOG = _hex("03 01 01 02 28 01 02 03 04 03 20 03 04 00 09 02 07 15")
