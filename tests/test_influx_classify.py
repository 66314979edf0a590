"""The response classifier: one table of answers and what the writer must do with each."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.storage.influx.classify import (
    RETRY_AFTER_CAP_S,
    WriteOutcome,
    backoff_s,
    classify,
    rejected_points,
    retry_after_s,
)
from gateway.storage.influx.sink import SinkResponse

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def half(*_: object) -> float:
    return 0.5


@pytest.mark.parametrize(("status", "headers", "outcome", "cause", "delay"), [
    (204, {}, WriteOutcome.ACCEPT, "", 0.0),
    (200, {}, WriteOutcome.ACCEPT, "", 0.0),
    (400, {}, WriteOutcome.REJECT, "", 0.0),
    (422, {}, WriteOutcome.REJECT, "", 0.0),
    (413, {}, WriteOutcome.SPLIT, "", 0.0),
    (401, {}, WriteOutcome.AUTH, "auth", 0.075),
    (403, {"retry-after": "2"}, WriteOutcome.AUTH, "auth", 2.0),
    (429, {}, WriteOutcome.RETRY, "throttled", 0.075),
    (429, {"retry-after": "7"}, WriteOutcome.RETRY, "throttled", 7.0),
    (429, {"retry-after": "Fri, 01 May 2026 12:00:30 GMT"}, WriteOutcome.RETRY, "throttled", 30.0),
    (429, {"retry-after": "Fri, 01 May 2026 11:00:00 GMT"}, WriteOutcome.RETRY, "throttled", 0.0),
    (429, {"retry-after": "soon"}, WriteOutcome.RETRY, "throttled", 0.075),
    (429, {"retry-after": "999999"}, WriteOutcome.RETRY, "throttled", RETRY_AFTER_CAP_S),
    (404, {}, WriteOutcome.RETRY, "not_found", 0.075),
    (500, {}, WriteOutcome.RETRY, "server", 0.075),
    (503, {"retry-after": "1.5"}, WriteOutcome.RETRY, "server", 1.5),
    (302, {}, WriteOutcome.RETRY, "unexpected", 0.075),
    (405, {}, WriteOutcome.RETRY, "unexpected", 0.075),
])
def test_table(status: int, headers: dict[str, str], outcome: WriteOutcome, cause: str,
               delay: float) -> None:
    verdict = classify(SinkResponse(status, headers, ""), attempt=0, max_backoff_s=30,
                       now=NOW, rand=half)
    assert (verdict.outcome, verdict.cause) == (outcome, cause)
    assert verdict.delay_s == pytest.approx(delay)


def test_no_answer_is_a_network_retry() -> None:
    verdict = classify(None, attempt=3, max_backoff_s=30, now=NOW, rand=half)
    assert (verdict.outcome, verdict.cause) == (WriteOutcome.RETRY, "network")
    assert verdict.delay_s == pytest.approx(0.8 * 0.75)


@pytest.mark.parametrize(("attempt", "low", "high"), [
    (0, 0.05, 0.1), (1, 0.1, 0.2), (4, 0.8, 1.6), (10, 15, 30), (1000, 15, 30)])
def test_backoff_is_capped_exponential_with_jitter(attempt: int, low: float,
                                                   high: float) -> None:
    assert backoff_s(attempt, 30, lambda: 0.0) == pytest.approx(low)
    assert backoff_s(attempt, 30, lambda: 1.0) == pytest.approx(high)


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("", None), ("  3 ", 3.0), ("-5", 0.0), ("nan", None), ("garbage", None),
    ("Fri, 01 May 2026 12:01:00 GMT", 60.0)])
def test_retry_after(value: str | None, expected: float | None) -> None:
    assert retry_after_s(value, NOW) == expected


@pytest.mark.parametrize(("text", "lines", "expected"), [
    # Real InfluxDB 1.6.7 answers:
    ('{"error":"field type conflict"}', 3, 3),
    ('{"error":"partial write: field type conflict: input field \\"f\\" on measurement '
     '\\"m\\" is type integer, already exists as type float dropped=1"}', 3, 1),
    ('{"error":"partial write: unable to parse \'m f= 7\': missing field value\\n'
     'unable to parse \'bad line\': invalid field format dropped=0"}', 4, 2),
    ('{"error":"partial write: points beyond retention policy dropped=2"}', 5, 2),
    ('{"error":"partial write: dropped=9"}', 5, 5),
    ("", 4, 4),
])
def test_rejected_points(text: str, lines: int, expected: int) -> None:
    assert rejected_points(SinkResponse(400, {}, text), lines) == expected
