"""What every InfluxDB adapter offers the writer: send a body, say what came back.

Adapters are dumb: they build the request, send it, and return the status, headers and text
unchanged. Deciding what the answer means is :mod:`gateway.storage.influx.classify`'s job alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gateway.errors import InfluxError


@dataclass(frozen=True, slots=True)
class SinkResponse:
    """An HTTP answer from InfluxDB. Header names are lower-case."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    text: str = ""


class SinkUnreachable(InfluxError):
    """No HTTP answer: connection refused or reset, DNS failure, timeout."""


class Sink(Protocol):
    """An InfluxDB write endpoint taking a line-protocol body (millisecond timestamps)."""

    async def write(self, body: bytes) -> SinkResponse:
        """POST ``body``; raise :class:`SinkUnreachable` when no answer arrives."""
        ...

    async def ping(self) -> bool:
        """True when the server answers its health endpoint."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers with lower-case names, so lookups do not depend on the adapter's casing."""
    return {name.lower(): value for name, value in headers.items()}
