"""Message templates: both languages, every channel kind, SMS length under any input."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.notify.base import Notification
from gateway.notify.channels.email import build_message
from gateway.notify.templates import (
    RULE_NAMES,
    SMS_MAX_UNITS,
    PlaceNames,
    defang,
    escalation_note,
    render,
    sms_units,
)
from rules.alarm import Alarm, AlarmState, Severity, Subject
from sensors.registry import Device
from sensors.tenants import build_tenants

ROOT = Path(__file__).resolve().parent.parent
SHANGHAI = ZoneInfo("Asia/Shanghai")
ACK = "https://pw.example.cn/a/7Hq2xK9mPz"
FIRED = 1_795_000_000_000          # 2026-11-18 11:06:40 UTC = 19:06 in Shanghai


def default_rules() -> list[tuple[str, str]]:
    """(rule, severity) of every rule the default pack can raise, derived alarms included."""
    out: list[tuple[str, str]] = []
    for path in sorted((ROOT / "config" / "rules").glob("*.yaml")):
        for rule in yaml.safe_load(path.read_text(encoding="utf-8"))["rules"]:
            levels = [t["severity"] for t in rule.get("tiers", [])] or [rule["severity"]]
            out += [(rule["name"], sev) for sev in levels]
            for extra in ("building", "single"):
                if extra in rule:
                    out.append((rule[extra]["rule"], rule[extra]["severity"]))
    return out


def doc(rule: str = "water_pressure_low", severity: str = "major", *,
        location: str = "2F east riser", value: float | None = 0.08, kind: str = "water_pressure",
        state: AlarmState = AlarmState.FIRING, message: str = "Hydrant pressure low",
        **subject: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"park": "xz01", "building": "b3", "floor": "2", "zone": "east",
                              "device": "wp-0017", "tenant": "hs-elec", "kind": kind,
                              "location": location}
    fields.update(subject)
    a = Alarm(alarm_id="a1b2c3", fingerprint="f", rule=rule, severity=Severity(severity),
              state=state, subject=Subject(**fields), message=message, started_at_ms=FIRED,
              updated_at_ms=FIRED + 60_000, fired_at_ms=FIRED, value=value,
              resolved_at_ms=FIRED + 600_000 if state is AlarmState.RESOLVED else None)
    return a.document(ACK)


def test_sms_units_count_surrogate_pairs_twice() -> None:
    assert sms_units("火警 fire") == 7
    assert sms_units("🔥") == 2


def test_every_default_rule_has_a_human_name() -> None:
    missing = {rule for rule, _ in default_rules()} - set(RULE_NAMES)
    assert not missing


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
@pytest.mark.parametrize(("rule", "severity"), default_rules())
def test_every_default_rule_sms_fits_two_segments(rule: str, severity: str, lang: str) -> None:
    long_location = "3F 东侧 印刷车间 northeast corner by the solvent store, column C-17 " * 4
    r = render("sms", lang, doc(rule, severity, location=long_location, value=123.456),
               ack_url=ACK, tz=SHANGHAI, park_name="信州小微企业园")
    assert sms_units(r.text) <= 140
    assert r.text.endswith(ACK)                  # the link is never cut


#: The sample park's way of naming places (config/sample-park/registry.yaml).
PLACES = PlaceNames.from_devices([Device(
    device="wp-0017", park="xz01", building="b3", floor="2", zone="east", kind="water_pressure",
    building_name="3号厂房", floor_name="2层", zone_name="东区")])


def test_sms_zh_reads_well() -> None:
    r = render("sms", "zh-CN", doc(location="2层东侧消火栓立管"), ack_url=ACK, tz=SHANGHAI,
               sms_limit=200, places=PLACES)
    # No English: the engine's "Hydrant pressure low" is not repeated, places by display name.
    assert r.text == ("[紧急]消防水压过低：xz01 3号厂房2层 东区 租户hs-elec 2层东侧消火栓立管，"
                      f"0.08 MPa，11-18 19:06。响应：{ACK}")
    assert r.title == "[紧急]消防水压过低 - 3号厂房2层"
    assert r.template_params == {
        "park": "xz01", "building": "3号厂房2层", "location": "2层东侧消火栓立管",
        "rule": "消防水压过低", "severity": "紧急", "state": "报警", "value": "0.08 MPa",
        "time": "11-18 19:06", "ack": ACK}
    # Without display names the IDs are shown, as before.
    r = render("sms", "zh-CN", doc(), ack_url=ACK, tz=SHANGHAI)
    assert r.text == ("[紧急]消防水压过低：xz01 b3栋2层 east区 租户hs-elec 2F east riser，"
                      f"0.08 MPa，11-18 19:06。响应：{ACK}")


# Golden messages per language with the officer's wording (issue 14).
_AT = "xz01 3号厂房2层 东区 租户hs-elec 2层东区回流焊炉旁，11-18 19:06。"
GOLDEN_SMS = {
    ("fire_alarm", "critical", "zh-CN"):
        "[特急]火警：xz01 3号厂房2层 东区 租户hs-elec 2层东区回流焊炉旁 「L1-D023」，"
        f"11-18 19:06。请立即到场核实。响应：{ACK}",
    ("fire_alarm", "critical", "en"):
        "[Critical] Fire alarm: xz01 bldg b3 fl 2, zone east, tenant hs-elec, 2层东区回流焊炉旁 "
        f"\u201cFIRE ALARM wp-0017 (2层东区回流焊炉旁) L1-D023\u201d, 11-18 19:06. Ack: {ACK}",
    ("fire_confirmed", "critical", "zh-CN"):
        f"[特急]复合火警：{_AT}请立即到场核实。响应：{ACK}",
    ("fire_door_held_open", "warning", "zh-CN"):
        f"[提示]常闭防火门处于开启状态：{_AT}响应：{ACK}",
    ("point_isolated", "minor", "zh-CN"):
        f"[一般]屏蔽：{_AT}响应：{ACK}",
    ("tamper", "major", "zh-CN"):
        f"[紧急]防拆报警：{_AT}响应：{ACK}",
    ("power_voltage_low", "info", "zh-CN"):
        f"[信息]欠压：{_AT}响应：{ACK}",
    ("power_voltage_high", "major", "zh-CN"):
        f"[紧急]过压：{_AT}响应：{ACK}",
}


@pytest.mark.parametrize(("rule", "severity", "lang"), sorted(GOLDEN_SMS))
def test_golden_sms(rule: str, severity: str, lang: str) -> None:
    where = "2层东区回流焊炉旁"
    message = {"fire_alarm": f"FIRE ALARM wp-0017 ({where}) L1-D023"}.get(rule, "Some English")
    r = render("sms", lang, doc(rule, severity, location=where, value=None, message=message),
               ack_url=ACK, tz=SHANGHAI, sms_limit=200, places=PLACES)
    assert r.text == GOLDEN_SMS[rule, severity, lang]
    if lang == "zh-CN":
        assert not re.search(r"[A-Za-z]{3,}", r.text.replace(ACK, "").replace("hs-elec", ""))


def test_acknowledged_reads_responded_and_has_no_call_to_action() -> None:
    r = render("sms", "zh-CN", doc("fire_alarm", "critical", state=AlarmState.ACKNOWLEDGED),
               ack_url=None, tz=SHANGHAI)
    assert "(已响应)" in r.text
    assert "请立即到场核实" not in r.text


@pytest.mark.parametrize("kind", ["im", "email"])
def test_im_and_email_zh_show_display_names_and_no_english_detail(kind: str) -> None:
    r = render(kind, "zh-CN", doc("water_pressure_drop", "major", location="消防泵房出水总管"),
               ack_url=ACK, tz=SHANGHAI, places=PLACES)
    assert "3号厂房2层 · 东区" in r.text.replace("\\", "")
    assert "压力骤降，疑似放水或管网破裂" in r.text
    assert "Hydrant" not in r.text


def test_sms_en_in_another_time_zone() -> None:
    r = render("sms", "en", doc("fire_confirmed", "critical", value=None, kind="zone"),
               ack_url=ACK, tz=dt.UTC, sms_limit=200)
    assert r.text.startswith("[Critical] Confirmed fire: xz01 bldg b3 fl 2, zone east, "
                             "tenant hs-elec, 2F east riser")
    assert "11-18 11:06" in r.text
    assert r.text.endswith(f"Ack: {ACK}")


# A panel point's location from the point map: long, bilingual, and the one thing that sends
# the responder to the right door (issue 11, point 7).
POINT_LOCATION = "2层东区贴片线3号回流焊炉旁 / 2F east SMT line, beside reflow oven 3"


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_sms_keeps_a_long_point_location_whole_and_cuts_the_rest(lang: str) -> None:
    kw: dict[str, Any] = {"ack_url": ACK, "tz": SHANGHAI, "park_name": "信州小微企业园",
                          "note": "第3次提醒，15分钟未确认"}
    d = doc("fire_alarm", "critical", location=POINT_LOCATION, value=55.5, kind="smoke",
            device="fp-0001", message=f"FIRE ALARM fp-0001 ({POINT_LOCATION}) L1-D023")
    full = render("sms", lang, d, sms_limit=400, **kw).text
    assert all(part in full for part in ("信州", "hs-elec", "east", "55.5", "L1-D023", "第3次"))
    assert ("请立即到场核实" in full) == (lang == "zh-CN")
    # The least an SMS can say: rule, building and floor, the whole location, time, link.
    bare = render("sms", lang, doc("fire_alarm", "critical", location=POINT_LOCATION,
                                   value=None, zone="", tenant=None, message=""),
                  ack_url=ACK, tz=SHANGHAI, sms_limit=400).text.replace("xz01 ", "")
    assert POINT_LOCATION in bare
    for limit in range(sms_units(full) - 1, sms_units(bare) - 1, -1):
        text = render("sms", lang, d, sms_limit=limit, **kw).text
        assert sms_units(text) <= limit, (limit, text)
        assert POINT_LOCATION in text, (limit, text)                # whole, never cut
        assert text.endswith(ACK)
        assert "L1-D023" not in text                                # the detail went first
    assert render("sms", lang, d, sms_limit=sms_units(bare), **kw).text == bare


def test_sms_sacrifices_in_order_detail_park_note_tenant_zone_value() -> None:
    d = doc("water_pressure_drop", location=POINT_LOCATION)   # its detail: 压力骤降…
    kw: dict[str, Any] = {"ack_url": ACK, "tz": SHANGHAI, "park_name": "信州小微企业园",
                          "note": "第3次提醒"}
    full = render("sms", "zh-CN", d, sms_limit=400, **kw).text
    seen: list[tuple[str, ...]] = []
    for limit in range(sms_units(full), 60, -1):
        text = render("sms", "zh-CN", d, sms_limit=limit, **kw).text
        present = tuple(part for part in ("压力骤降", "信州", "第3次提醒", "租户", "east区", "MPa")
                        if part in text)
        if not seen or seen[-1] != present:
            seen.append(present)
        assert POINT_LOCATION in text or "…" in text
    assert seen[:7] == [("压力骤降", "信州", "第3次提醒", "租户", "east区", "MPa"),
                        ("信州", "第3次提醒", "租户", "east区", "MPa"),
                        ("第3次提醒", "租户", "east区", "MPa"), ("租户", "east区", "MPa"),
                        ("east区", "MPa"), ("MPa",), ()]


def test_sms_cuts_the_location_only_when_it_alone_cannot_fit() -> None:
    r = render("sms", "zh-CN", doc(location="很长的位置描述" * 30), ack_url=ACK, tz=SHANGHAI)
    assert "很长的位置描述很" in r.text                # its head is kept,
    assert "…，11-18 19:06" in r.text               # cut, not dropped,
    assert "MPa" not in r.text                      # after every other part went
    assert "xz01" not in r.text
    assert sms_units(r.text) <= SMS_MAX_UNITS


@pytest.mark.parametrize("kind", ["im", "email"])
@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_im_and_email_name_floor_zone_tenant_and_the_point_location(kind: str,
                                                                    lang: str) -> None:
    r = render(kind, lang, doc("fire_alarm", "critical", location=POINT_LOCATION),
               ack_url=ACK, tz=SHANGHAI)
    text = r.text.replace("\\", "")
    for part in (("b3栋2层", "east区", "租户hs-elec") if lang == "zh-CN"
                 else ("bldg b3 fl 2", "zone east", "tenant hs-elec")):
        assert part in text
    assert "reflow oven 3" in text


@pytest.mark.parametrize("kind", ["sms", "im", "email"])
def test_messages_name_the_tenant_by_its_company_name_from_the_register(kind: str) -> None:
    register = build_tenants([(1, {
        "id": "hs-elec", "name": "新州华盛电子科技有限公司",
        "fire_safety_responsible": {"name": "李建国", "phone": "+8613800000013"},
        "fire_safety_manager": {"name": "李安全", "phone": "+8613800000011"},
        "floor_area_m2": 6400, "fire_hazard_class": "丙", "three_in_one": False})],
        source="tenants.yaml")
    places = PlaceNames.from_devices([], register)
    r = render(kind, "zh-CN", doc("fire_alarm", "critical", location=POINT_LOCATION),
               ack_url=ACK, tz=SHANGHAI, places=places, sms_limit=300)
    assert "新州华盛电子科技有限公司" in r.text
    assert "hs-elec" not in r.text


def test_resolved_sms_has_no_link_and_says_resolved() -> None:
    r = render("sms", "zh-CN", doc(state=AlarmState.RESOLVED), ack_url=None, tz=SHANGHAI)
    assert "(已恢复)" in r.text
    assert "19:16" in r.text                     # the time it resolved
    assert "http" not in r.text
    r = render("sms", "en", doc(state=AlarmState.RESOLVED), ack_url=None, tz=SHANGHAI)
    assert "(Resolved)" in r.text


def test_unknown_rule_and_language_fall_back() -> None:
    r = render("sms", "fr", doc("my_custom_rule"), ack_url=None, tz=SHANGHAI)
    assert "my custom rule" in r.text
    assert "[紧急]" in r.text


@pytest.mark.parametrize(("lang", "labels"), [
    ("zh-CN", ("位置", "数值", "时间", "[响应处理]")),
    ("en", ("Where", "Value", "Time", "[Acknowledge]"))])
def test_im_markdown(lang: str, labels: tuple[str, ...]) -> None:
    r = render("im", lang, doc(location="2F *east* [riser](x)"), ack_url=ACK, tz=SHANGHAI,
               note="reminder 2")
    assert r.text.startswith("### [")
    assert all(label in r.text for label in labels)
    assert f"({ACK})" in r.text
    assert "2026-11-18 19:06:40" in r.text
    assert r"\*east\* \[riser\]\(x\)" in r.text     # device text cannot inject markdown
    assert "reminder 2" in r.text
    assert r.template_params == {}


def test_email_subject_and_text() -> None:
    r = render("email", "en", doc(), ack_url=ACK, tz=SHANGHAI, park_name="Xinzhou Park")
    assert r.title == "[Major] Low water pressure - bldg b3 fl 2"
    assert ("Where: Xinzhou Park · bldg b3 fl 2 · zone east · tenant hs-elec · 2F east riser"
            in r.text)
    assert "Value: 0.08 MPa" in r.text
    assert f"Acknowledge: {ACK}" in r.text


def test_webhook_is_the_contract_document() -> None:
    d = doc()
    r = render("webhook", "zh-CN", d, ack_url=ACK, tz=SHANGHAI)
    assert json.loads(r.text) == d
    assert r.template_params == {}


def test_escalation_notes() -> None:
    assert escalation_note("zh-CN", tier=0, repeat_n=0, unacked_s=0) == ""
    assert escalation_note("zh-CN", tier=1, repeat_n=0, unacked_s=300) == "5分钟未响应，已升级"
    assert escalation_note("en", tier=2, repeat_n=3, unacked_s=900) == \
        "reminder 3, unacknowledged 15 min"


@settings(max_examples=200, deadline=None)
@given(location=st.text(max_size=300),
       value=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
       rule=st.sampled_from(sorted({r for r, _ in default_rules()})),
       lang=st.sampled_from(["zh-CN", "en"]),
       building=st.text(alphabet="ab0123456789", min_size=1, max_size=4),
       state=st.sampled_from([AlarmState.FIRING, AlarmState.RESOLVED]))
def test_sms_always_fits_and_keeps_the_link(location: str, value: float | None, rule: str,
                                            lang: str, building: str, state: AlarmState) -> None:
    ack = ACK if state is AlarmState.FIRING else None
    r = render("sms", lang, doc(rule, "critical", location=location, value=value,
                                building=building, state=state),
               ack_url=ack, tz=SHANGHAI, park_name="信州小微企业园", note="第3次提醒，15分钟未确认")
    assert sms_units(r.text) <= SMS_MAX_UNITS
    if ack:
        assert r.text.endswith(ack)
    assert all(len(v) <= 20 for k, v in r.template_params.items() if k != "ack")


HOSTILE = ("FIRE ALARM wp-0017 (2F east) L1 [确认](http://evil.example/ack) \x1b[2J\x9b31m "
           "<http://evil.example> www.evil.cn evil.com 10.0.0.7 \u202eknil")


def _links(text: str) -> list[str]:
    return re.findall(r"(?i)https?://\S+|www\.\S+|\b[\w-]+\.(?:com|cn|example)\b", text)


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
@pytest.mark.parametrize("kind", ["im", "email", "sms"])
def test_device_text_never_forms_a_link_and_reads_as_a_quotation(kind: str, lang: str) -> None:
    # A device's detail used to reach IM and email as is: a fake 确认 link above the real one.
    # An SMS has room for a short detail only (a long one is dropped first).
    message = ("FIRE ALARM wp-0017 (2F east) [确认](http://e.cn)\x1b[2J\u202eknil"
               if kind == "sms" else HOSTILE)
    r = render(kind, lang, doc("fire_alarm", "critical", message=message, value=None,
                               location="2F east"), ack_url=ACK, tz=SHANGHAI, sms_limit=200)
    assert _links(r.text) == [ACK + (")" if kind == "im" else "")], r.text
    assert not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0 or c == "\u202e"
                   for c in r.text), repr(r.text)
    assert "hxxp://" in r.text
    assert "http://e" not in r.text
    left, right = ("「", "」") if lang == "zh-CN" else ("\u201c", "\u201d")
    # zh-CN quotes only what the device wrote, after the engine's English head.
    quoted = message[:2] if lang == "en" else message.split("(2F east) ")[1][:2]
    assert f"{left}{quoted}" in r.text
    assert f"knil{right}" in r.text
    if kind == "im":   # the real ack link is the only markdown link
        assert len(re.findall(r"(?<!\\)\[[^\]]*(?<!\\)\]\(", r.text)) == 1


def test_device_text_in_the_html_email_has_no_link_but_the_ack_link() -> None:
    r = render("email", "en", doc("fire_alarm", "critical", message=HOSTILE), ack_url=ACK,
               tz=SHANGHAI)
    msg = build_message(Notification(key="k", channel="mail", recipient="duty@example.cn",
                                     title=r.title, text=r.text, ack_url=ACK),
                        sender="ParkWatch <pw@example.cn>")
    html_part = msg.get_body(("html",))
    assert html_part is not None
    body = html_part.get_content()
    assert re.findall(r'href="([^"]*)"', body) == [ACK]
    assert "http://evil" not in body
    assert "<http" not in body


@pytest.mark.parametrize(("text", "shown"), [
    ("http://evil.com/a", "hxxp://evil[.]com/a"), ("HTTPS://x.cn", "hxxpS://x[.]cn"),
    ("ftp://host", "ftp[:]//host"), ("www.evil.cn", "www[.]evil[.]cn"),
    ("问evil.com确认", "问evil[.]com确认"), ("10.0.0.7:80", "10[.]0[.]0[.]7:80"),
    ("0.08 MPa at 1-02-034 v1.2", "0.08 MPa at 1-02-034 v1.2"), ("a\x1bb", "ab")])
def test_defang(text: str, shown: str) -> None:
    assert defang(text) == shown
