"""The canonical shape's shortcut in sensors/decode.py (issue 15) accepts exactly what each
kind's values model accepts, with the same values; everything else goes to the model, which
words the rejection."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sensors.catalogue import KINDS
from sensors.decode import _fast_values, _plan_for

VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-10**30,
                                                                max_value=10**30),
    st.booleans(), st.none(), st.text(max_size=5), st.floats(min_value=-200, max_value=2000))

TELEMETRY_KINDS = [k for k in KINDS if k.values_model is not None]


@pytest.mark.parametrize("kind", TELEMETRY_KINDS, ids=lambda k: k.name)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_the_shortcut_agrees_with_the_model(kind: object, data: st.DataObject) -> None:
    plan = _plan_for(kind)  # type: ignore[arg-type]
    assert plan.model is not None
    names = [*plan.metrics, "not_a_metric"]
    raw = data.draw(st.dictionaries(st.sampled_from(names), VALUES, max_size=6))
    if plan.fast is None or not plan.required <= raw.keys():
        return
    quick = _fast_values(raw, plan.fast)
    if quick is None:
        return                      # the model decides; nothing to compare
    try:
        model = plan.model.model_validate(raw)
    except ValidationError as exc:
        raise AssertionError(f"the shortcut accepted what the model refuses: {raw}") from exc
    expected = {n: getattr(model, n) if n in plan.booleans else float(getattr(model, n))
                for n in raw if getattr(model, n) is not None}
    assert quick == expected
    assert [type(v) for v in quick.values()] == [type(v) for v in expected.values()]


def test_every_telemetry_kind_takes_the_shortcut() -> None:
    for kind in TELEMETRY_KINDS:
        plan = _plan_for(kind)
        assert plan.fast, f"{kind.name}: no metric can use the shortcut"
