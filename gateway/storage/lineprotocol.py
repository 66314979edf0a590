"""InfluxDB line protocol, encoded fast and never broken.

This runs once per reading, so it is written for the hot path: identifiers (measurement, tag
set, field keys) are escaped once and reused (``tag_set`` per device by the caller, field keys
through a cache here); per call only the values are formatted.

Escaping rules (checked against InfluxDB 1.6.7 and the ``influxdb_client`` ``Point`` encoder,
which ``tests/test_lineprotocol.py`` uses as an oracle):

* measurement: ``,`` and space are backslash-escaped; tag keys, tag values and field keys also
  escape ``=``.
* ``\\n``, ``\\r`` and ``\\t`` in any identifier or tag value become the two characters ``\\n``,
  ``\\r``, ``\\t`` (as the client library does): a raw newline would end the line, and InfluxDB
  stores the escaped form literally.
* An identifier ending in a backslash would escape the delimiter that follows it (InfluxDB 1.x
  looks one byte back to decide whether a ``,``/``=``/space is escaped), so a space is appended
  and InfluxDB stores the value with a trailing space instead of the backslash. Rare, lossy, but
  the line stays valid. Any other backslash is kept as is and round-trips.
* string fields: ``"`` and ``\\`` are escaped. A newline becomes the two characters ``\\n``: the
  docs say line protocol does not support newlines in field values (1.x happens to accept them
  inside quotes, 3.x does not), and the WAL relies on "one point, one line". This is the one
  deliberate difference from the client library, which writes the newline raw.
* floats are written with ``repr`` (``1.0``, ``1e+20``), so a float field is always a float
  literal; the client library writes ``1`` for ``1.0``, which InfluxDB also parses as a float.
  NaN and infinities raise ``ValueError`` (the library silently drops the field).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

_CONTROL = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_MEASUREMENT_TABLE = str.maketrans({",": "\\,", " ": "\\ ", **_CONTROL})
_KEY_TABLE = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", **_CONTROL})
_STRING_TABLE = str.maketrans({'"': '\\"', "\\": "\\\\", "\n": "\\n"})

# A single regex scan is much cheaper than translate() on the common, clean value.
_MEASUREMENT_SPECIAL = re.compile(r"[, \n\r\t]|\\\Z")
_KEY_SPECIAL = re.compile(r"[,= \n\r\t]|\\\Z")
_STRING_SPECIAL = re.compile(r'["\\\n]')


def _escape(s: str, table: dict[int, str], special: re.Pattern[str]) -> str:
    if special.search(s) is None:
        return s
    out = s.translate(table)
    # Trailing backslash: see the module docstring.
    return out + " " if out.endswith("\\") else out


def escape_measurement(s: str) -> str:
    """Escape a measurement name."""
    if not s:
        raise ValueError("a measurement name cannot be empty")
    if s.startswith("#"):
        # InfluxDB reads a line starting with '#' as a comment: the point would vanish.
        raise ValueError(f"a measurement name cannot start with '#': {s!r}")
    return _escape(s, _MEASUREMENT_TABLE, _MEASUREMENT_SPECIAL)


def escape_tag(s: str) -> str:
    """Escape a tag key or tag value."""
    return _escape(s, _KEY_TABLE, _KEY_SPECIAL)


@functools.lru_cache(maxsize=4096)
def escape_field_key(s: str) -> str:
    """Escape a field key (cached: field keys come from a small fixed vocabulary)."""
    if not s:
        raise ValueError("a field key cannot be empty")
    return _escape(s, _KEY_TABLE, _KEY_SPECIAL)


def format_string_field(s: str) -> str:
    """A string field value, quoted and escaped."""
    if _STRING_SPECIAL.search(s) is None:
        return f'"{s}"'
    return f'"{s.translate(_STRING_TABLE)}"'


def tag_set(tags: Mapping[str, str]) -> str:
    """``",k=v,k2=v2"`` sorted by key (InfluxDB's preferred order), empty values skipped.

    Compute it once per device and reuse it: it is the expensive part of a line.
    """
    parts: list[str] = []
    for key in sorted(tags):
        value = tags[key]
        if not value:
            continue
        if not key:
            raise ValueError(f"empty tag key for value {value!r}")
        parts.append(f",{escape_tag(key)}={escape_tag(value)}")
    return "".join(parts)


def format_field_value(value: float | int | bool | str) -> str:
    """One field value; the Python type decides the InfluxDB type, and never changes it."""
    # Exact type checks first: they are the fast path and keep bool apart from int.
    if type(value) is float:
        return _format_float(value)
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is int:
        return _format_int(value)
    if type(value) is str:
        return format_string_field(value)
    # Subclasses (IntEnum, StrEnum, numpy scalars registered as float...) are rarer.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _format_float(float(value))
    if isinstance(value, int):
        return _format_int(int(value))
    if isinstance(value, str):
        return format_string_field(str(value))
    raise TypeError(f"unsupported field type {type(value).__name__}")


def _format_float(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"InfluxDB cannot store the float {value!r}")
    return repr(value)


def _format_int(value: int) -> str:
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"integer field {value} does not fit in int64")
    return f"{value}i"


def encode_numeric_fields(fields: Mapping[str, float | bool]) -> str:
    """The field set of readings already checked: every float finite (a values model's
    bounds), every bool a bool. What :func:`encode_line` writes for them, without its checks."""
    return ",".join([f"{escape_field_key(key)}={'true' if value else 'false'}"
                     if type(value) is bool else f"{escape_field_key(key)}={value!r}"
                     for key, value in fields.items()])


def encode_line(measurement_escaped: str, tag_set: str,
                fields: Mapping[str, float | int | bool | str], ts_ms: int) -> str:
    """One line: ``measurement[,tags] k=v[,k=v] ts_ms`` (no trailing newline).

    ``measurement_escaped`` comes from :func:`escape_measurement`, ``tag_set`` from
    :func:`tag_set`. Fields keep the caller's order. ``int`` values become integers (``5i``):
    pass an int only for fields that are always integers (``seq``).
    """
    if type(ts_ms) is not int:
        raise TypeError(f"ts_ms must be an int, not {type(ts_ms).__name__}")
    if not fields:
        raise ValueError("a point needs at least one field")
    field_set = ",".join([f"{escape_field_key(key)}={format_field_value(value)}"
                          for key, value in fields.items()])
    return f"{measurement_escaped}{tag_set} {field_set} {ts_ms}"
