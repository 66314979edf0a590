"""The one place that decides what an InfluxDB answer means for the batch that caused it.

==========================  ========  ===================================================
answer                      outcome   what the writer does
==========================  ========  ===================================================
2xx                         ACCEPT    commit the batch
400, 422                    REJECT    the points are bad: count them, log, commit anyway
                                      (1.x "partial write": the good points were stored)
413                         SPLIT     halve the batch and send each half
401, 403                    AUTH      keep the batch, back off, flag the credentials
429, 5xx, 404, no answer    RETRY     keep the batch, back off (``Retry-After`` if given)
anything else               RETRY     keep it: an unexpected answer must not lose data
==========================  ========  ===================================================

404 is retried because InfluxDB 1.x answers "database not found" with it: the database may be
created by an operator (or by the v1 adapter itself when ``create_database`` is on).

Everything here is pure: time and randomness are parameters.
"""

from __future__ import annotations

import enum
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from gateway.storage.influx.sink import SinkResponse

BASE_BACKOFF_S = 0.1
# A server may ask for a long pause, but a bogus header must not stall delivery for hours.
RETRY_AFTER_CAP_S = 300.0

_DROPPED = re.compile(r"dropped=(\d+)")
_UNPARSABLE = "unable to parse"


class WriteOutcome(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    SPLIT = "split"
    RETRY = "retry"
    AUTH = "auth"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with the batch; ``cause`` labels the retry metric, ``delay_s`` the pause."""

    outcome: WriteOutcome
    cause: str = ""
    delay_s: float = 0.0


def backoff_s(attempt: int, max_backoff_s: float,
              rand: Callable[[], float] = random.random) -> float:
    """Capped exponential backoff with "equal jitter": between half and all of the step."""
    step = min(max_backoff_s, BASE_BACKOFF_S * 2.0 ** min(attempt, 30))
    return step / 2 + rand() * step / 2


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), if usable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


def classify(response: SinkResponse | None, *, attempt: int, max_backoff_s: float,
             now: datetime, rand: Callable[[], float] = random.random) -> Verdict:
    """Map an answer (None: no answer at all) to an outcome; ``attempt`` counts from 0."""
    def later() -> float:
        hinted = retry_after_s(response.headers.get("retry-after"), now) if response else None
        return hinted if hinted is not None else backoff_s(attempt, max_backoff_s, rand)

    if response is None:
        return Verdict(WriteOutcome.RETRY, "network", later())
    status = response.status
    if 200 <= status < 300:
        return Verdict(WriteOutcome.ACCEPT)
    if status in (400, 422):
        return Verdict(WriteOutcome.REJECT)
    if status == 413:
        return Verdict(WriteOutcome.SPLIT)
    if status in (401, 403):
        return Verdict(WriteOutcome.AUTH, "auth", later())
    if status == 429:
        cause = "throttled"
    elif status == 404:
        cause = "not_found"
    elif status >= 500:
        cause = "server"
    else:
        cause = "unexpected"
    return Verdict(WriteOutcome.RETRY, cause, later())


def rejected_points(response: SinkResponse, lines: int) -> int:
    """How many of ``lines`` points a 400/422 answer refused.

    InfluxDB 1.x stores the good points and says ``partial write: ... dropped=N`` for points it
    refused after parsing, plus one ``unable to parse`` per malformed line; any other error
    (e.g. a bare ``field type conflict``) means nothing in the request was stored.
    """
    text = response.text
    if "partial write" not in text:
        return lines
    counted = sum(int(n) for n in _DROPPED.findall(text)) + text.count(_UNPARSABLE)
    return min(counted, lines)
