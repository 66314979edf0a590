"""The daily scorecard stage: yesterday's ``scorecard`` points, written by the running gateway.

Each day, once the park's local time passes ``observe.scorecard_at`` (default 00:10), the
previous calendar day's scorecard of the park and of each of its tenants is computed with the
same functions as ``parkwatch scorecard --write`` (gateway/scorecard/) and appended to the
gateway's WAL, so the points reach InfluxDB with everything else and survive an outage.

Once per park and day, restart-safe: the last day written per park is kept in
``state_dir/scorecard_daily.json`` (0600), saved after the points are durable in the WAL. A
crash between the two only writes the same points again (same series and time: an overwrite).
After a gateway was down over midnight the missed days are caught up, at most
:data:`MAX_CATCH_UP_DAYS` (a day it was down is a day the park was unmonitored, and says so).
A park seen for the first time starts with today: days before the gateway ran here would read
as all offline, so they are for ``parkwatch scorecard --write`` (docs/scorecard.md).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.config import Settings
from gateway.scorecard.collect import collect
from gateway.scorecard.daily import daily_lines, day_period
from gateway.storage.private import write_private
from sensors.errors import ParkWatchError
from sensors.registry import Registry

log = logging.getLogger(__name__)

STATE_FILE = "scorecard_daily.json"
#: Days caught up after an outage; older gaps are for ``parkwatch scorecard --write``.
MAX_CATCH_UP_DAYS = 7
#: How often the stage looks whether a day is due (and retries one that failed).
CHECK_S = 60.0
#: A day still unwritten this long after it fell due raises ``scorecard_overdue`` (minor): a
#: short InfluxDB outage is caught up silently, a morning without the record is not.
OVERDUE_AFTER_S = 6 * 3600.0

Append = Callable[[list[str]], Awaitable[None]]
#: (park, overdue, why): raise or clear the park's ``scorecard_overdue`` alarm.
Overdue = Callable[[str, bool, str], None]


class ScorecardDaily:
    """Writes each park's (and its tenants') scorecard of the day before, once a day."""

    def __init__(self, *, settings: Settings, registry: Registry, append: Append,
                 ready: Callable[[], bool] = lambda: True,
                 clock: Callable[[], float] = time.time, check_s: float = CHECK_S,
                 overdue: Overdue | None = None) -> None:
        self._settings = settings
        self._registry = registry
        self._append = append
        # False while the day's data may not all be in InfluxDB yet (it is down, the WAL full):
        # a scorecard computed then would count undelivered minutes as offline.
        self._ready = ready
        self._clock = clock
        self._check_s = check_s
        self._at = settings.observe.scorecard_time()
        self._path: Path = settings.state_dir / STATE_FILE
        #: park -> the last day whose points are durable in the WAL.
        self.done: dict[str, dt.date] = {}
        self._overdue = overdue
        #: Parks whose ``scorecard_overdue`` alarm is raised.
        self.overdue_parks: set[str] = set()

    def load(self) -> None:
        """The last days written, from the state file (none yet: start afresh)."""
        try:
            raw = json.loads(self._path.read_text(encoding="utf-8"))
            self.done = {park: dt.date.fromisoformat(day) for park, day in raw.items()}
        except FileNotFoundError:
            self.done = {}
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            # Unreadable: the worst case is one day written twice, which overwrites itself.
            log.warning("scorecard: %s unreadable (%s); starting afresh", self._path, exc)
            self.done = {}

    def _save(self) -> None:
        text = json.dumps({p: d.isoformat() for p, d in sorted(self.done.items())})
        tmp = self._path.with_suffix(".tmp")
        write_private(tmp, text + "\n")
        tmp.replace(self._path)      # atomic: a crash leaves the old or the new file

    def latest(self, park: str, now_s: float) -> dt.date:
        """The newest day of ``park`` whose scorecard is due at ``now_s``."""
        local = dt.datetime.fromtimestamp(now_s, self._settings.timezone_for(park))
        return local.date() - dt.timedelta(days=1 if local.time() >= self._at else 2)

    def start(self, now_s: float) -> bool:
        """Parks without a record start now: their newest due day counts as done (not
        written). True when a park was added (the record needs saving)."""
        new = {p: self.latest(p, now_s) for p in self._registry.parks() if p not in self.done}
        self.done.update(new)
        return bool(new)

    def due(self, now_s: float) -> list[tuple[str, dt.date]]:
        """(park, day) still to write at ``now_s``, oldest first per park (parks with a
        record only: see :meth:`start`)."""
        out: list[tuple[str, dt.date]] = []
        for park in sorted(p for p in self._registry.parks() if p in self.done):
            latest = self.latest(park, now_s)
            first = max(self.done[park] + dt.timedelta(days=1),
                        latest - dt.timedelta(days=MAX_CATCH_UP_DAYS - 1))
            day = first
            while day <= latest:
                out.append((park, day))
                day += dt.timedelta(days=1)
        return out

    async def run_once(self, park: str, day: dt.date) -> int:
        """Compute ``day`` of ``park`` (and its tenants), append it to the WAL, remember it;
        returns the number of points. Raises ParkWatchError when a store cannot be read."""
        tz = self._settings.timezone_for(park)
        period = day_period(day, tz)
        as_of = int(self._clock() * 1000)
        # collect reads SQLite in a thread and InfluxDB over aiohttp: the loop never blocks.
        inputs = await collect(self._settings, self._registry, park=park, period=period,
                               as_of_ms=as_of)
        lines = daily_lines(inputs, park=park, period=period, tz=tz, as_of_ms=as_of)
        await self._append(lines)
        self.done[park] = max(day, self.done.get(park, day))
        await asyncio.to_thread(self._save)
        log.info("scorecard: park %s day %s: %d point(s) written", park, day, len(lines))
        return len(lines)

    async def step(self) -> int:
        """Write every day that is due; a failure leaves it due for the next check."""
        written = 0
        now = self._clock()
        if self.start(now):
            await asyncio.to_thread(self._save)
        why = ""
        for park, day in self.due(now):
            if not self._ready():
                why = "InfluxDB is unreachable or the write-ahead log is behind"
                log.info("scorecard: park %s day %s waits for InfluxDB and the WAL", park, day)
                break
            try:
                written += await self.run_once(park, day)
            except ParkWatchError as exc:
                why = str(exc)
                log.warning("scorecard: park %s day %s not written yet (retry in %.0f s): %s",
                            park, day, self._check_s, exc)
                break
        self._judge_overdue(self._clock(), why)
        return written

    def due_since(self, park: str, day: dt.date) -> float:
        """When ``day`` of ``park`` fell due: the next local day at ``observe.scorecard_at``."""
        tz = self._settings.timezone_for(park)
        return dt.datetime.combine(day + dt.timedelta(days=1), self._at, tz).timestamp()

    def _judge_overdue(self, now_s: float, why: str) -> None:
        if self._overdue is None:
            return
        late: dict[str, dt.date] = {}
        for park, day in self.due(now_s):
            if park not in late and now_s - self.due_since(park, day) >= OVERDUE_AFTER_S:
                late[park] = day
        for park, day in sorted(late.items()):
            if park not in self.overdue_parks:
                self.overdue_parks.add(park)
                self._overdue(park, True, f"Scorecard of park {park} for {day} not written "
                              f"{OVERDUE_AFTER_S / 3600:.0f} h after it was due"
                              + (f": {why}" if why else ""))
        for park in sorted(self.overdue_parks - set(late)):
            self.overdue_parks.discard(park)
            self._overdue(park, False, f"Scorecard of park {park} written again")

    async def run(self) -> None:
        await asyncio.to_thread(self.load)
        while True:
            await self.step()
            await asyncio.sleep(self._check_s)
