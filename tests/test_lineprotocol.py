"""Line-protocol encoding, with the official client library as the oracle and a real influxd as
the judge of what is stored."""

from __future__ import annotations

import enum
import urllib.request
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from influxdb_client.client.write.point import Point as _Point
from influxdb_client.domain.write_precision import WritePrecision

from gateway.storage.lineprotocol import (
    encode_line,
    escape_field_key,
    escape_measurement,
    escape_tag,
    format_string_field,
    tag_set,
)
from gateway.tools.devservices import Influxd

text = st.text(max_size=20)
name = st.text(min_size=1, max_size=12).filter(lambda s: not s.endswith("\\"))
no_newline = st.text(max_size=20).filter(lambda s: "\n" not in s)
finite_fraction = st.floats(allow_nan=False, allow_infinity=False).filter(
    lambda x: not x.is_integer())
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
timestamp = st.integers(min_value=0, max_value=2**41)


Point: Any = _Point  # the library is untyped


def oracle(measurement: str, tags: dict[str, str], fields: dict[str, Any], ts_ms: int) -> str:
    point = Point(measurement)
    for key, value in tags.items():
        point.tag(key, value)
    for key, value in fields.items():
        point.field(key, value)
    return str(point.time(ts_ms, WritePrecision.MS).to_line_protocol())


def ours(measurement: str, tags: dict[str, str], fields: dict[str, Any], ts_ms: int) -> str:
    return encode_line(escape_measurement(measurement), tag_set(tags), fields, ts_ms)


# A measurement starting with '#' would be a comment line; ours refuses it (tested below).
measurement_name = name.filter(lambda s: not s.startswith("#"))


@given(measurement=measurement_name, tags=st.dictionaries(name, text, max_size=5),
       keys=st.lists(name, min_size=4, max_size=4, unique=True),
       s=no_newline, f=finite_fraction, i=int64, b=st.booleans(), ts=timestamp)
def test_matches_the_client_library(measurement: str, tags: dict[str, str], keys: list[str],
                                    s: str, f: float, i: int, b: bool, ts: int) -> None:
    # The library sorts fields by key; we keep the caller's order, so hand them over sorted.
    fields: dict[str, Any] = dict(sorted(zip(keys, [s, f, i, b], strict=True)))
    assert ours(measurement, tags, fields, ts) == oracle(measurement, tags, fields, ts)


@given(measurement=st.text(min_size=1).filter(lambda s: not s.startswith("#")),
       tags=st.dictionaries(st.text(min_size=1), text), key=st.text(min_size=1), value=text,
       ts=timestamp)
def test_a_point_is_always_exactly_one_line(measurement: str, tags: dict[str, str], key: str,
                                            value: str, ts: int) -> None:
    line = ours(measurement, tags, {key: value, "v": 1.5}, ts)
    assert "\n" not in line
    assert line.endswith(f" {ts}")


@pytest.mark.parametrize(("raw", "expected"), [
    ("plain", "plain"),
    ("a,b", "a\\,b"),
    ("a b", "a\\ b"),
    ("a=b", "a\\=b"),
    ("line\nbreak", "line\\nbreak"),
    ("cr\rtab\t", "cr\\rtab\\t"),
    ("back\\slash", "back\\slash"),
    ("ends\\", "ends\\ "),          # a trailing backslash would escape the delimiter
    ('qu"ote', 'qu"ote'),
    ("Brandschutztür 3/Süd", "Brandschutztür\\ 3/Süd"),
    ("", ""),
])
def test_escape_tag(raw: str, expected: str) -> None:
    assert escape_tag(raw) == expected


def test_escape_measurement_and_field_key() -> None:
    assert escape_measurement("m,x y=z") == "m\\,x\\ y=z"  # '=' is fine in a measurement
    assert escape_field_key("k,x y=z") == "k\\,x\\ y\\=z"
    with pytest.raises(ValueError, match="empty"):
        escape_measurement("")
    with pytest.raises(ValueError, match="empty"):
        escape_field_key("")


@pytest.mark.parametrize(("raw", "expected"), [
    ("", '""'),
    ("plain", '"plain"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("C:\\path\\", '"C:\\\\path\\\\"'),
    ("two\nlines", '"two\\nlines"'),   # deliberate: the library writes the newline raw
    ("tab\tcr\r", '"tab\tcr\r"'),
    ("a, b = c", '"a, b = c"'),
])
def test_format_string_field(raw: str, expected: str) -> None:
    assert format_string_field(raw) == expected


def test_tag_set_sorts_and_skips_empty_values() -> None:
    assert tag_set({"zone": "Z 1", "building": "B1", "tenant": ""}) == ",building=B1,zone=Z\\ 1"
    assert tag_set({}) == ""
    with pytest.raises(ValueError, match="empty tag key"):
        tag_set({"": "x"})


class Level(enum.IntEnum):
    HIGH = 3


def test_field_types_never_change() -> None:
    line = encode_line("m", "", {"f": 1.0, "g": 1e20, "seq": 7, "ok": True, "off": False,
                                 "lvl": Level.HIGH, "s": "x"}, 5)
    assert line == 'm f=1.0,g=1e+20,seq=7i,ok=true,off=false,lvl=3i,s="x" 5'


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="cannot store"):
        encode_line("m", "", {"v": bad}, 1)


def test_other_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="int64"):
        encode_line("m", "", {"v": 2**63}, 1)
    with pytest.raises(ValueError, match="at least one field"):
        encode_line("m", "", {}, 1)
    with pytest.raises(TypeError, match="ts_ms"):
        encode_line("m", "", {"v": 1.0}, 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unsupported"):
        encode_line("m", "", {"v": None}, 1)  # type: ignore[dict-item]


NASTY = ["a,b", "a b", "a=b", "back\\slash", "a\\,b", "ends\\", "line\nbreak", 'q"uote',
         "Ünïcødé ✓ 🔥", " lead", "x\\ y"]


@pytest.mark.integration
def test_real_influxd_stores_what_we_mean(influxd: Influxd) -> None:
    db = "lp_roundtrip"
    influxd.query(f'CREATE DATABASE "{db}"')
    body = "\n".join(
        encode_line(escape_measurement("nasty m"), tag_set({"t": value}),
                    {"s": value, "i": n}, 1000 + n)
        for n, value in enumerate(NASTY))
    req = urllib.request.Request(f"{influxd.url}/write?db={db}&precision=ms",
                                 data=body.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 204
    result: Any = influxd.query('SELECT "i", "s", "t" FROM "nasty m" ORDER BY time', db)
    rows = result["results"][0]["series"][0]["values"]
    stored = {row[1]: (row[2], row[3]) for row in rows}
    for n, value in enumerate(NASTY):
        # The documented lossy cases; everything else round-trips exactly.
        want_tag = value.replace("\n", "\\n").removesuffix("\\") + (
            " " if value.endswith("\\") else "")
        want_string = value.replace("\n", "\\n")
        assert stored[n] == (want_string, want_tag), value


def test_a_measurement_that_would_be_a_comment_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot start with '#'"):
        escape_measurement("#alarms")
