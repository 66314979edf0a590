"""Rate-limited log lines (gateway/logs.py): memory stays bounded whatever the keys (issue 13,
point 7: the 401 limiter kept one entry per client address forever)."""

from __future__ import annotations

import logging

import pytest

from gateway.logs import RateLimited


def test_hundred_thousand_keys_stay_bounded(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimited(logging.getLogger("t.bounded"), interval_s=60.0, max_keys=1024)
    with caplog.at_level(logging.WARNING, logger="t.bounded"):
        for i in range(100_000):
            limiter.warning(f"http-401-2001:db8::{i:x}", "refused %s", i, now=1.0)
    assert len(limiter) == 1024
    assert len(caplog.records) == 100_000     # each new client is logged once


def test_the_recent_keys_are_still_limited(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimited(logging.getLogger("t.recent"), interval_s=60.0, max_keys=3)
    with caplog.at_level(logging.WARNING, logger="t.recent"):
        for now in (0.0, 1.0, 2.0):
            limiter.warning("a", "a", now=now)
        limiter.warning("a", "a", now=61.0)
        for key in ("b", "c", "d"):            # "a" was logged most recently but is oldest now
            limiter.warning(key, key, now=62.0)
        limiter.warning("a", "a", now=63.0)    # forgotten: logged again, no harm
    assert [r.getMessage() for r in caplog.records] == [
        "a", "a (+2 similar in the last 60s)", "b", "c", "d", "a"]
    assert len(limiter) == 3


def test_max_keys_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        RateLimited(logging.getLogger("t"), max_keys=0)
