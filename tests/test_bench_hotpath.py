"""bench/hotpath.py runs, and its load is what the gateway accepts (or the numbers mean nothing)."""

from __future__ import annotations

import time
from zoneinfo import ZoneInfo

import pytest

from bench import hotpath
from gateway.ingest.validate import Validator


def test_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert hotpath.main(["--devices", "10", "--messages", "300", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "Validator.validate" in out
    assert "Engine.observe" in out


def test_every_message_of_the_load_is_accepted_with_a_trusted_clock() -> None:
    validator = Validator(registry=hotpath.registry(10), root="bench", timezones={},
                          default_timezone=ZoneInfo("Asia/Shanghai"), max_payload_bytes=65536,
                          max_age_s=7 * 86400, max_future_s=300)
    for topic, payload, rx in hotpath.load(10, 50, time.time() - 600):
        validated = validator.validate(topic, payload, rx)
        assert validated.untrusted == 0
        assert validated.lines
