"""Device text made inert: what a device writes (an event's ``point`` and ``detail``) reaches
logs, terminals, IM and email, so it must not carry control characters.

C0 controls, DEL and C1 controls are terminal escape sequences waiting to happen (``ESC [2J``
clears a screen, ``0x9B`` is an 8-bit CSI); Unicode bidi overrides and marks reorder what a
reader sees (a URL can be made to read backwards). Whitespace controls become one space, so
"loop 2\\naddr 34" still reads as two words; the others are dropped.
"""

from __future__ import annotations

import re

#: DEL, C1 controls and the bidi marks and overrides: what ``json.dumps(ensure_ascii=False)``
#: leaves raw.
_BEYOND_C0 = "\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
#: Every character :func:`strip_controls` removes or replaces, for callers that show them
#: instead (the CLI escapes them visibly).
CONTROL_RE = re.compile(f"[\x00-\x1f{_BEYOND_C0}]")
#: The same without C0, for JSON text (where C0 is escaped already and newlines are layout).
BEYOND_C0_RE = re.compile(f"[{_BEYOND_C0}]")

_WHITESPACE = "\t\n\v\f\r\x1c\x1d\x1e\x1f\x85"
_TABLE = {cp: (" " if chr(cp) in _WHITESPACE else None)
          for cp in (*range(0x00, 0x20), *range(0x7F, 0xA0), 0x061C, 0x200E, 0x200F,
                     *range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def strip_controls(text: str) -> str:
    """``text`` without control characters and bidi overrides (whitespace ones become spaces)."""
    return text.translate(_TABLE)
