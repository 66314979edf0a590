"""Waiting for a condition with a deadline, instead of a fixed sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def wait_for(condition: Callable[[], bool | Awaitable[bool]], *, timeout_s: float,
                   what: str, interval: float = 0.05,
                   task: asyncio.Task[Any] | None = None) -> None:
    """Poll ``condition`` until true or fail with ``what``; never a fixed sleep in a test."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if task is not None and task.done():
            task.result()
            raise AssertionError(f"task ended before: {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for: {what}")
        await asyncio.sleep(interval)
