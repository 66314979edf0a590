"""Structured logging on the standard library: ``logfmt`` or JSON lines, one event per line.

Nothing is logged per message at INFO; repeated problems go through :class:`RateLimited`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import OrderedDict
from typing import Any

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class _Formatter(logging.Formatter):
    def __init__(self, fmt: str) -> None:
        super().__init__()
        self._json = fmt == "json"

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        if self._json:
            return json.dumps(fields, default=str, ensure_ascii=False)
        return " ".join(f"{k}={_logfmt(v)}" for k, v in fields.items())


def _logfmt(value: Any) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\n\t'):
        return text
    return json.dumps(text, ensure_ascii=False)


def setup_logging(level: str = "INFO", fmt: str = "logfmt") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log is per request; keep it for DEBUG only.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class RateLimited:
    """Log the first occurrence of a key, then at most once per ``interval_s`` with a count.

    Keys often come from outside (a client address), so only the ``max_keys`` most recently
    logged are remembered: a forgotten key is simply logged again, memory stays bounded.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0,
                 max_keys: int = 1024) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, not {max_keys!r}")
        self._log = logger
        self._interval = interval_s
        self._max_keys = max_keys
        # key -> (last logged, suppressed since); oldest-logged first.
        self._keys: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def warning(self, key: str, msg: str, *args: object, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        entry = self._keys.get(key)
        if entry is not None and now - entry[0] < self._interval:
            self._keys[key] = (entry[0], entry[1] + 1)
            return
        suppressed = entry[1] if entry is not None else 0
        self._keys[key] = (now, 0)
        self._keys.move_to_end(key)
        while len(self._keys) > self._max_keys:
            self._keys.popitem(last=False)
        suffix = f" (+{suppressed} similar in the last {self._interval:.0f}s)" if suppressed else ""
        self._log.warning(msg + suffix, *args)
