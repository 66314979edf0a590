"""rate_of_change keeps a monotonic queue instead of every reading of its window (issue 15):
it must breach, refresh and resolve exactly where the plain definition does, and resume from
its saved state as before."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rules.kinds.base import Ledger
from rules.kinds.rate import RateCheck
from rules.model import RateRule
from sensors.registry import build_registry

DEVICE = next(iter(build_registry([(1, {"device": "wp-1", "park": "p", "building": "b",
                                        "floor": "1", "zone": "z", "kind": "water_pressure",
                                        "report_interval_s": 60})], source="test")))


def rule(direction: str) -> RateRule:
    return RateRule.model_validate({
        "name": "r", "type": "rate_of_change", "metric": "pressure_mpa", "direction": direction,
        "delta": 0.1, "window_s": 10, "clear_after_s": 5, "severity": "minor",
        "source": "test"})


def plain(direction: str, readings: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """(ts, change) of every breach, by the definition: over all readings in the window."""
    out = []
    for i, (ts, value) in enumerate(readings):
        window = [v for t, v in readings[:i + 1] if t >= ts - 10_000]
        change = max(window) - value if direction == "drop" else value - min(window)
        if change >= 0.1:
            out.append((ts, round(change, 6)))
    return out


def ledger() -> Ledger:
    ids = iter(range(10**6))
    return Ledger(new_id=lambda: f"a{next(ids)}", maintenance_for=lambda _s: None)  # type: ignore[arg-type, return-value]


# Steps that land exactly on the window's edge (10 s) as well as anywhere.
readings = st.lists(st.tuples(st.one_of(st.sampled_from([0, 2_500, 5_000, 10_000]),
                                        st.integers(0, 3_000)), st.floats(0, 1.0, allow_nan=False)),
                    min_size=1, max_size=80).map(
    lambda steps: [(sum(d for d, _ in steps[:i + 1]), v) for i, (_, v) in enumerate(steps)])


class Recording(RateCheck):
    __slots__ = ("seen",)

    def __init__(self, rule: RateRule) -> None:
        super().__init__(rule, DEVICE)
        self.seen: list[tuple[int, float]] = []

    def _breach(self, ts: int, value: float, change: float, book: Ledger) -> None:
        self.seen.append((ts, round(change, 6)))
        super()._breach(ts, value, change, book)


def breaches_of(check: Recording, data: list[tuple[int, float]], book: Ledger
                ) -> list[tuple[int, float]]:
    check.seen = []
    for ts, value in data:
        check.on_reading(value, ts, book)
    return check.seen


@settings(max_examples=300, deadline=None)
@given(direction=st.sampled_from(["drop", "rise"]), data=readings)
def test_breaches_match_the_definition(direction: str, data: list[tuple[int, float]]) -> None:
    book = ledger()
    book.out = []
    assert breaches_of(Recording(rule(direction)), data, book) == plain(direction, data)


@settings(max_examples=200, deadline=None)
@given(direction=st.sampled_from(["drop", "rise"]), data=readings, cut=st.integers(1, 79))
def test_a_saved_check_goes_on_as_the_running_one(direction: str,
                                                  data: list[tuple[int, float]],
                                                  cut: int) -> None:
    running, book = Recording(rule(direction)), ledger()
    book.out = []
    breaches_of(running, data[:cut], book)
    saved = running.dump()
    if saved is None:
        return   # no alarm open: nothing is saved, by design (the window refills)
    resumed = Recording(rule(direction))
    resumed.load(saved)
    assert breaches_of(resumed, data[cut:], book) == breaches_of(running, data[cut:], ledger())


def test_the_queue_holds_only_candidates() -> None:
    check, book = RateCheck(rule("drop"), DEVICE), ledger()
    book.out = []
    for i in range(1_000):
        check.on_reading(0.5 + i * 0.0001, i * 5, book)   # rising: each replaces the last
    assert len(check._window) == 1
