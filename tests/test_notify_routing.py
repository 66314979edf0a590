"""Routing tree, inhibition, escalation and dedup: pure functions, fake time, no I/O."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from gateway.alarms.store import AlarmStore
from gateway.config import NotifySettings
from gateway.metrics import Metrics
from gateway.notify.notifier import Notifier
from gateway.notify.plan import (
    Context,
    due_escalations,
    next_due_ms,
    notification_key,
    plan,
    should_send,
    tiers,
)
from gateway.notify.routing import (
    DEFAULT_INHIBIT,
    NotifyConfig,
    inhibited,
    is_fire_class,
    load_notify_config,
    matching_leaves,
    route,
    with_tenant_register,
)
from rules.alarm import Alarm, AlarmState, Maintenance, Severity, Subject, Transition
from sensors.errors import ConfigError
from sensors.tenants import TenantRegister, build_tenants, load_tenants

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "notify.example.yaml"
TENANTS_EXAMPLE = ROOT / "config" / "sample-park" / "tenants.yaml"
T0 = 1_795_000_000_000
MIN = 60_000


def config(**overrides: Any) -> NotifyConfig:
    base: dict[str, Any] = {
        "channels": {"sms": {"type": "sms_aliyun"}, "chat": {"type": "dingtalk"},
                     "mail": {"type": "email"}, "hook": {"type": "webhook"}},
        "contacts": {
            "duty": {"phone": "+8613800000001", "channels": ["sms", "chat"]},
            "boss": {"phone": "+8613800000002", "email": "b@x.cn", "channels": ["sms", "mail"]},
            "ten-a": {"phone": "+8613800000011", "channels": ["sms"], "lang": "en"},
            "ten-b": {"phone": "+8613800000012", "email": "t@x.cn", "channels": ["sms", "mail"]},
            "crew": {"channels": ["chat"]},
            "bms": {"channels": ["hook"]},
        },
        "tenants": {"hs-elec": ["ten-a", "ten-b"]},
        "duty_officer": "duty",
        "park_manager": "boss",
        "route": {"receivers": ["crew"], "group_wait_s": 30, "routes": [
            {"name": "fire", "match": {"rule": ["fire_alarm", "fire_confirmed"]},
             "receivers": ["tenant"]},
            {"name": "gas", "match": {"kind": "gas", "min_severity": "major"},
             "receivers": ["tenant"], "group_wait_s": 5, "routes": [
                 {"name": "b2", "match": {"building": "b2"}, "channels": ["mail"]}]},
        ]},
        "escalation": {"tiers": [{"after_s": 0, "receivers": ["tenant"]},
                                 {"after_s": 300, "receivers": ["duty_officer"]},
                                 {"after_s": 600, "receivers": ["park_manager"]}],
                       "repeat_s": 300},
    }
    base.update(overrides)
    return NotifyConfig.model_validate(base)


def alarm(rule: str = "fire_confirmed", severity: str = "critical", *, kind: str = "zone",
          tenant: str | None = "hs-elec", building: str = "b1", zone: str = "east",
          state: AlarmState = AlarmState.FIRING, alarm_id: str = "a1", **kw: Any) -> Alarm:
    return Alarm(alarm_id=alarm_id, fingerprint=f"{rule}|x", rule=rule,
                 severity=Severity(severity), state=state,
                 subject=Subject(park="xz01", building=building, floor="2", zone=zone,
                                 device="" if kind == "zone" else "dv-1", tenant=tenant,
                                 kind=kind, location="2F east SMT line"),
                 message="msg", started_at_ms=T0, updated_at_ms=T0, fired_at_ms=T0, **kw)


def pairs(cfg: NotifyConfig, a: Alarm) -> set[tuple[str, str]]:
    return {(d.contact, d.channel) for d in route(cfg, a)}


# ---- config ---------------------------------------------------------------------------------


def test_example_config_loads() -> None:
    cfg = load_notify_config(EXAMPLE)
    assert set(cfg.tenants) == {"hs-elec", "jx-textile", "lt-print"}
    assert cfg.duty_officer in cfg.contacts
    assert [t.after_s for t in cfg.escalation.tiers] == [0, 300, 600]


def test_example_routes_a_confirmed_fire_to_tenant_and_duty_officer() -> None:
    cfg = load_notify_config(EXAMPLE)
    got = pairs(cfg, alarm())
    assert {("li-hs", "sms"), ("wang-duty", "sms"), ("bms", "bms_webhook")} <= got


def test_loader_names_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "n.yaml"
    path.write_text("notify:\n  duty_officer: nobody\n  route:\n    recievers: [x]\n",
                    encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_notify_config(path)
    assert f"{path}:4: notify.route.recievers: unknown key" in err.value.problems


def test_loader_reports_dangling_names_with_lines(tmp_path: Path) -> None:
    path = tmp_path / "n.yaml"
    path.write_text(
        "notify:\n"
        "  channels: {sms: {type: sms_aliyun}}\n"
        "  contacts:\n"
        "    a: {channels: [sms, fax]}\n"
        "  duty_officer: nobody\n"
        "  route:\n"
        "    receivers: [a, ghost]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_notify_config(path)
    text = "\n".join(err.value.problems)
    assert f"{path}:4: notify.contacts.a.channels.0: channel 'sms' is SMS" in text
    assert f"{path}:4: notify.contacts.a.channels.1: unknown channel 'fax'" in text
    assert f"{path}:5: notify.duty_officer: unknown contact 'nobody'" in text
    assert f"{path}:7: notify.route.receivers.1: unknown contact 'ghost'" in text


def test_secrets_are_refused_in_settings() -> None:
    with pytest.raises(ValueError, match="secret_env"):
        config(channels={"sms": {"type": "sms_aliyun",
                                 "settings": {"access_key_secret": "xyz"}}})


def test_escalation_tiers_must_start_at_zero_and_increase() -> None:
    with pytest.raises(ValueError, match="increasing"):
        config(escalation={"tiers": [{"after_s": 0, "receivers": ["duty_officer"]},
                                     {"after_s": 0, "receivers": ["park_manager"]}]})


# ---- routing --------------------------------------------------------------------------------


def test_options_inherit_down_the_tree() -> None:
    cfg = config()
    [leaf] = matching_leaves(cfg, alarm("gas_lel_high", "major", kind="gas", building="b2"))
    assert leaf.path == "root/gas/b2"
    assert leaf.receivers == ("tenant",)          # from gas
    assert leaf.channels == ("mail",)              # its own
    assert leaf.group_wait_s == 5                  # from gas
    assert leaf.group_interval_s == 300            # the default, through root


def test_no_matching_child_leaves_the_parent() -> None:
    cfg = config()
    [leaf] = matching_leaves(cfg, alarm("gas_lel_high", "minor", kind="gas"))
    assert leaf.path == "root"


def test_first_match_wins_unless_continue() -> None:
    routes = [{"name": "all", "receivers": ["bms"], "continue": True},
              {"name": "fire", "match": {"rule": "fire_confirmed"}, "receivers": ["crew"]},
              {"name": "never", "receivers": ["boss"]}]
    cfg = config(route={"receivers": [], "routes": routes})
    assert [o.path for o in matching_leaves(cfg, alarm())] == ["root/all", "root/fire"]
    assert ("boss", "sms") not in pairs(cfg, alarm())


def test_tenant_receivers_are_the_alarms_tenant_contacts() -> None:
    got = pairs(config(), alarm("gas_lel_high", "major", kind="gas"))
    assert got == {("ten-a", "sms"), ("ten-b", "sms"), ("ten-b", "mail")}


def test_route_channels_narrow_the_contacts_channels() -> None:
    got = pairs(config(), alarm("gas_lel_high", "major", kind="gas", building="b2"))
    assert got == {("ten-b", "mail")}


def test_duty_officer_always_on_critical() -> None:
    got = pairs(config(), alarm("gas_lel_high", "critical", kind="gas"))
    assert {("duty", "sms"), ("duty", "chat")} <= got
    reasons = {d.reason for d in route(config(), alarm("gas_lel_high", "critical", kind="gas"))}
    assert "duty officer on critical" in reasons


def test_alarm_without_tenant_falls_back_to_duty_officer() -> None:
    got = pairs(config(), alarm("gas_lel_high", "major", kind="gas", tenant=None))
    assert got == {("duty", "sms"), ("duty", "chat")}


def test_each_park_may_have_its_own_duty_officer_and_manager() -> None:
    cfg = config(parks={"xz02": {"duty_officer": "crew", "park_manager": "duty"}})
    assert {("duty", "sms"), ("duty", "chat")} <= pairs(cfg, alarm())      # xz01: the default
    other = dataclasses.replace(alarm(), subject=dataclasses.replace(alarm().subject,
                                                                      park="xz02"))
    got = pairs(cfg, other)
    assert ("crew", "chat") in got
    assert ("duty", "sms") not in got
    steps = {(s.delivery.contact, s.tier) for s in tiers(cfg, other)}
    # Its duty officer is copied at once (critical); its manager is the last tier.
    assert ("crew", 0) in steps
    assert ("duty", 2) in steps


def test_unknown_park_contacts_are_reported_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "notify.yaml"
    path.write_text("notify:\n  contacts: {a: {channels: []}}\n  parks:\n"
                    "    xz02: {duty_officer: nobody}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_notify_config(path)
    assert "notify.yaml:4: notify.parks.xz02.duty_officer: unknown contact 'nobody'" in str(
        info.value)


def test_sms_http_fields_and_headers_come_from_the_routing_file(tmp_path: Path) -> None:
    from gateway.notify.channels.registry import build_channels
    from gateway.notify.channels.sms_http import HttpSms

    path = tmp_path / "notify.yaml"
    path.write_text("""notify:
  channels:
    local_sms:
      type: sms_http
      settings:
        url: https://sms.example.cn/api/send
        body_format: form
        fields: {mobile: $phone, content: $text, msgid: $key}
        headers: {X-Api-Key: $api_key}
        success_path: code
        success_value: 0
        retry_values: [1001, "busy"]
      secret_env: {api_key: T_SMS_KEY}
""", encoding="utf-8")
    cfg = load_notify_config(path)
    channel = build_channels(cfg, env={"T_SMS_KEY": "k-123"}, source=str(path))["local_sms"]
    assert isinstance(channel, HttpSms)
    http = channel._settings
    assert dict(http.fields) == {"mobile": "$phone", "content": "$text", "msgid": "$key"}
    assert dict(http.headers) == {"X-Api-Key": "$api_key"}
    assert list(http.retry_values) == [1001, "busy"]


def test_identical_receivers_are_deduplicated() -> None:
    routes = [{"name": "one", "receivers": ["duty", "duty_officer"], "continue": True},
              {"name": "two", "receivers": ["duty"]}]
    cfg = config(route={"routes": routes})
    deliveries = route(cfg, alarm())
    assert sorted((d.contact, d.channel) for d in deliveries) == [
        ("duty", "chat"), ("duty", "sms")]
    assert all(d.options.path == "root/one" for d in deliveries)    # first route keeps it


def test_match_on_severity_set_park_and_tenant() -> None:
    routes = [{"name": "x", "match": {"severity": ["warning", "minor"], "park": "xz01",
                                      "tenant": "hs-elec"}, "receivers": ["boss"]}]
    cfg = config(route={"receivers": ["crew"], "routes": routes})
    assert ("boss", "sms") in pairs(cfg, alarm("low_battery", "warning", kind="smoke"))
    assert ("boss", "sms") not in pairs(cfg, alarm("low_battery", "warning", kind="smoke",
                                                   tenant="other"))


@pytest.mark.parametrize(("rule", "severity", "kind", "fire"), [
    ("fire_alarm", "critical", "smoke", True), ("fire_confirmed", "critical", "zone", True),
    ("pre_alarm", "major", "manual_call_point", True), ("gas_lel_high", "critical", "gas", True),
    ("zone_pre_alarm", "major", "zone", False), ("water_pressure_low", "major", "x", False)])
def test_fire_class(rule: str, severity: str, kind: str, fire: bool) -> None:
    assert is_fire_class(alarm(rule, severity, kind=kind)) is fire


# ---- inhibition -----------------------------------------------------------------------------


def test_engine_inhibition_is_respected() -> None:
    a = alarm("device_offline", "minor", kind="smoke", inhibited_by="building_silent|building:b1")
    assert inhibited(a, []) == "inhibited by building_silent|building:b1 (rule engine)"


def test_silent_building_inhibits_its_offline_devices_only() -> None:
    silent = alarm("building_silent", "major", kind="building", alarm_id="s1")
    mine = alarm("device_offline", "minor", kind="smoke", alarm_id="d1")
    other = alarm("device_offline", "minor", kind="smoke", building="b2", alarm_id="d2")
    reason = inhibited(mine, [silent])
    assert reason is not None
    assert reason.startswith("absorbed by building_silent s1")
    assert inhibited(other, [silent]) is None
    assert inhibited(mine, [silent.evolve(state=AlarmState.RESOLVED)]) is None


def test_fire_confirmed_absorbs_pre_alarm_and_signals_of_its_zone() -> None:
    confirmed = alarm(alarm_id="fc")
    pre = alarm("zone_pre_alarm", "major", alarm_id="p1")
    signal = alarm("fire_alarm", "critical", kind="smoke", alarm_id="s1")
    elsewhere = alarm("zone_pre_alarm", "major", zone="west", alarm_id="p2")
    assert inhibited(pre, [confirmed]) is not None
    assert inhibited(signal, [confirmed]) is not None
    assert inhibited(elsewhere, [confirmed]) is None
    assert inhibited(confirmed, [confirmed]) is None


def test_maintenance_is_a_reason() -> None:
    assert inhibited(alarm(maintenance=Maintenance.TEST), []) == \
        "device under maintenance (test)"


def test_superseded_pre_alarm_sends_no_resolved_message() -> None:
    cfg = config()
    pre = alarm("zone_pre_alarm", "major", alarm_id="p1")
    sent = {notification_key("p1", "firing", 0, 0, "crew", "chat")}
    done = pre.evolve(state=AlarmState.RESOLVED, resolved_at_ms=T0 + MIN)
    assert plan(cfg, Transition(pre, done), T0 + MIN, already_sent=sent,
                active=[alarm(alarm_id="fc")]) == []
    assert plan(cfg, Transition(pre, done), T0 + MIN, already_sent=sent) != []


# ---- plan and escalation --------------------------------------------------------------------


def keys(planned: list[Any]) -> list[str]:
    return sorted(p.notification.key for p in planned)


def test_fire_first_tier_at_once_with_deterministic_keys() -> None:
    cfg = config()
    out = plan(cfg, Transition(None, alarm()), T0, already_sent=set())
    assert keys(out) == ["a1:firing:0:0:duty:chat", "a1:firing:0:0:duty:sms",
                         "a1:firing:0:0:ten-a:sms", "a1:firing:0:0:ten-b:mail",
                         "a1:firing:0:0:ten-b:sms"]
    assert all(p.due_ms == T0 and p.fire_class for p in out)     # no group_wait for fire
    again = plan(cfg, Transition(None, alarm()), T0 + 5, already_sent=set())
    assert keys(again) == keys(out)                                # same keys on a replay
    sms = next(p.notification for p in out if p.notification.key.endswith("ten-a:sms"))
    assert sms.recipient == "+8613800000011"


def test_replay_with_keys_in_outbox_sends_nothing() -> None:
    cfg = config()
    first = plan(cfg, Transition(None, alarm()), T0, already_sent=set())
    sent = set(keys(first))
    assert plan(cfg, Transition(None, alarm()), T0 + 1, already_sent=sent) == []
    assert should_send(keys(first)[0], sent)[0] is False
    assert "already in the outbox" in should_send(keys(first)[0], sent)[1]
    assert should_send("a1:firing:0:0:x:y", sent) == (True, "new key")


def test_non_fire_first_tier_waits_group_wait() -> None:
    out = plan(config(), Transition(None, alarm("gas_lel_high", "major", kind="gas")), T0,
               already_sent=set())
    assert {p.due_ms for p in out} == {T0 + 5_000}
    assert not any(p.fire_class for p in out)


def test_pending_and_inhibited_transitions_plan_nothing() -> None:
    pending = alarm(state=AlarmState.PENDING)
    assert plan(config(), Transition(None, pending), T0, already_sent=set()) == []
    muted = alarm(inhibited_by="x")
    assert plan(config(), Transition(None, muted), T0, already_sent=set()) == []


def run_ticker(cfg: NotifyConfig, a: Alarm, until_ms: int, sent: set[str],
               step_ms: int = 10_000) -> dict[int, list[str]]:
    """Tick every step_ms like the gateway's ticker does; returns what was due when."""
    seen: dict[int, list[str]] = {}
    for now in range(T0, until_ms + 1, step_ms):
        out = due_escalations(cfg, a, now, sent)
        if out:
            seen[now] = keys(out)
            sent |= set(seen[now])
    return seen


def test_escalation_timing_and_fire_repeats() -> None:
    cfg = config()
    a = alarm()
    sent = set(keys(plan(cfg, Transition(None, a), T0, already_sent=set())))
    seen = run_ticker(cfg, a, T0 + 16 * MIN, sent)
    assert sorted(seen) == [T0 + 5 * MIN, T0 + 10 * MIN, T0 + 15 * MIN]
    # At 5 min the duty officer is already paged (critical): only the repeat goes out.
    assert seen[T0 + 5 * MIN] == sorted(f"a1:firing:0:1:{c}" for c in (
        "duty:chat", "duty:sms", "ten-a:sms", "ten-b:mail", "ten-b:sms"))
    # At 10 min the park manager is paged (tier 2) and the others get repeat 2, not him.
    assert "a1:firing:2:0:boss:sms" in seen[T0 + 10 * MIN]
    assert "a1:firing:2:2:boss:sms" not in seen[T0 + 10 * MIN]
    assert "a1:firing:2:3:boss:mail" in seen[T0 + 15 * MIN]


def test_non_fire_escalates_through_tiers_without_repeats() -> None:
    cfg = config()
    a = alarm("gas_lel_high", "major", kind="gas")
    sent = set(keys(plan(cfg, Transition(None, a), T0, already_sent=set())))
    seen = run_ticker(cfg, a, T0 + 30 * MIN, sent)
    assert seen == {T0 + 5 * MIN: ["a1:firing:1:0:duty:chat", "a1:firing:1:0:duty:sms"],
                    T0 + 10 * MIN: ["a1:firing:2:0:boss:mail", "a1:firing:2:0:boss:sms"]}


def test_minor_alarms_do_not_escalate() -> None:
    cfg = config()
    a = alarm("low_battery", "warning", kind="smoke")
    sent = set(keys(plan(cfg, Transition(None, a), T0, already_sent=set())))
    assert sent == {"a1:firing:0:0:crew:chat"}
    assert run_ticker(cfg, a, T0 + 30 * MIN, sent) == {}
    assert next_due_ms(cfg, a, T0) is None


def test_acknowledge_stops_escalation_and_repeats() -> None:
    cfg = config()
    a = alarm()
    sent = set(keys(plan(cfg, Transition(None, a), T0, already_sent=set())))
    acked = a.evolve(state=AlarmState.ACKNOWLEDGED, acknowledged_by="duty",
                     acknowledged_at_ms=T0 + MIN)
    assert plan(cfg, Transition(a, acked), T0 + MIN, already_sent=sent) == []
    assert run_ticker(cfg, acked, T0 + 30 * MIN, sent) == {}
    assert next_due_ms(cfg, acked, T0 + MIN) is None


def test_acknowledgement_reaches_webhooks_only() -> None:
    cfg = config(route={"receivers": ["bms", "crew"]})
    a = alarm("gas_lel_high", "major", kind="gas")
    sent = set(keys(plan(cfg, Transition(None, a), T0, already_sent=set())))
    acked = a.evolve(state=AlarmState.ACKNOWLEDGED, acknowledged_by="crew")
    assert keys(plan(cfg, Transition(a, acked), T0 + MIN, already_sent=sent)) == [
        "a1:acknowledged:0:0:bms:hook"]


def test_resolution_notifies_everyone_told_once() -> None:
    cfg = config()
    a = alarm()
    sent = set(keys(plan(cfg, Transition(None, a), T0, already_sent=set())))
    run_ticker(cfg, a, T0 + 11 * MIN, sent)         # repeats + park manager
    done = a.evolve(state=AlarmState.RESOLVED, resolved_at_ms=T0 + 12 * MIN)
    out = plan(cfg, Transition(a, done), T0 + 12 * MIN, already_sent=sent)
    assert keys(out) == sorted(f"a1:resolved:0:0:{c}" for c in (
        "boss:mail", "boss:sms", "duty:chat", "duty:sms", "ten-a:sms", "ten-b:mail",
        "ten-b:sms"))
    assert all(p.notification.ack_url is None for p in out)
    sent |= set(keys(out))
    assert plan(cfg, Transition(a, done), T0 + 13 * MIN, already_sent=sent) == []
    assert run_ticker(cfg, done, T0 + 30 * MIN, sent) == {}


def test_severity_upgrade_tells_those_already_paged_and_adds_duty() -> None:
    cfg = config()
    a = alarm("gas_lel_high", "major", kind="gas")
    sent = set(keys(plan(cfg, Transition(None, a), T0, already_sent=set())))
    worse = a.evolve(severity=Severity.CRITICAL, updated_at_ms=T0 + MIN)
    out = keys(plan(cfg, Transition(a, worse), T0 + MIN, already_sent=sent))
    assert "a1:firing:0:0:duty:sms" in out                        # newly routed
    assert "a1:firing+critical:0:0:ten-a:sms" in out               # told again, once
    sent |= set(out)
    assert plan(cfg, Transition(a, worse), T0 + MIN, already_sent=sent) == []


def test_restart_does_not_burst_missed_repeats() -> None:
    cfg = config()
    a = alarm()
    sent = set(keys(plan(cfg, Transition(None, a), T0, already_sent=set())))
    late = due_escalations(cfg, a, T0 + 21 * MIN, sent)            # down for 21 minutes
    repeats = {k.split(":")[3] for k in keys(late)}
    assert repeats == {"0", "4"}         # tier 2 (first message) and only the latest repeat


def test_ack_link_and_time_zone_come_from_context() -> None:
    import zoneinfo

    ctx = Context(tz=zoneinfo.ZoneInfo("Asia/Shanghai"), park_name="信州园区",
                  ack_link=lambda al, contact, ch: f"https://pw.example.cn/a/{contact}.{ch}")
    out = plan(config(), Transition(None, alarm()), T0, already_sent=set(), ctx=ctx)
    sms = next(p.notification for p in out if p.notification.key.endswith("ten-b:sms"))
    assert sms.ack_url == "https://pw.example.cn/a/ten-b.sms"
    assert sms.text.endswith("响应：https://pw.example.cn/a/ten-b.sms")
    assert sms.alarm["ack_url"] == sms.ack_url
    assert sms.template_params["ack"] == sms.ack_url


# ---- tenant register contacts (issue 12, point 3) -------------------------------------------


def _register(*, manager_phone: str = "+8613800000091") -> TenantRegister:
    return build_tenants([(2, {
        "id": "hs-elec", "name": "华盛电子", "floor_area_m2": 100, "fire_hazard_class": "丙",
        "three_in_one": False,
        "fire_safety_responsible": {"name": "李建国", "phone": "+8613800000092"},
        "fire_safety_manager": {"name": "李安全", "phone": manager_phone}})], source="t.yaml")


def _with_register(register: TenantRegister | None = None, **overrides: Any) -> NotifyConfig:
    cfg = config(tenant_register={"channels": ["sms"]}, **overrides)
    return with_tenant_register(cfg, register or _register())


def test_tenant_receiver_adds_the_registers_manager_and_responsible_when_critical() -> None:
    cfg = _with_register()
    major = pairs(cfg, alarm("gas_lel_high", "major", kind="gas"))
    assert major == {("ten-a", "sms"), ("ten-b", "sms"), ("ten-b", "mail"),
                     ("hs-elec.fire-manager", "sms")}
    critical = pairs(cfg, alarm("gas_lel_high", "critical", kind="gas"))
    assert {("hs-elec.fire-manager", "sms"), ("hs-elec.fire-responsible", "sms")} <= critical
    manager = cfg.contacts["hs-elec.fire-manager"]
    assert (manager.name, manager.phone, manager.lang) == ("李安全", "+8613800000091", "zh-CN")


def test_responsible_threshold_is_configurable() -> None:
    cfg = with_tenant_register(config(tenant_register={
        "channels": ["sms"], "responsible_min_severity": "major"}), _register())
    assert ("hs-elec.fire-responsible", "sms") in pairs(cfg, alarm("gas_lel_high", "major",
                                                                  kind="gas"))


def test_a_register_person_who_is_already_a_contact_is_paged_once() -> None:
    # ten-a's phone, written differently: the same person, paged as the routing file says.
    cfg = _with_register(_register(manager_phone="+86 138-0000-0011"))
    got = pairs(cfg, alarm("gas_lel_high", "major", kind="gas"))
    assert ("ten-a", "sms") in got
    assert not any(c == "hs-elec.fire-manager" for c, _ in got)


def test_register_roles_as_receivers_and_escalation_tiers() -> None:
    cfg = _with_register(escalation={"tiers": [
        {"after_s": 0, "receivers": ["tenant_manager"]},
        {"after_s": 300, "receivers": ["tenant_responsible"]}]})
    steps = {(s.delivery.contact, s.tier) for s in tiers(cfg, alarm("gas_lel_high", "major",
                                                                     kind="gas"))}
    assert ("hs-elec.fire-manager", 0) in steps
    assert ("hs-elec.fire-responsible", 1) in steps
    # Another tenant's alarm, or one without a tenant, has nobody in the register.
    other = pairs(cfg, alarm("gas_lel_high", "major", kind="gas", tenant="lt-print"))
    assert not any(c.startswith("hs-elec.") for c, _ in other)


def test_without_a_loaded_register_routing_is_unchanged() -> None:
    bare = config(tenant_register={"channels": ["sms"]})
    assert pairs(bare, alarm("gas_lel_high", "critical", kind="gas")) == pairs(
        config(), alarm("gas_lel_high", "critical", kind="gas"))
    plain = config()
    assert with_tenant_register(plain, _register()) is plain


def test_register_settings_are_checked_with_lines(tmp_path: Path) -> None:
    path = tmp_path / "n.yaml"
    path.write_text("notify:\n"
                    "  channels: {mail: {type: email}}\n"
                    "  tenant_register:\n"
                    "    channels: [mail, fax]\n"                                     # 4
                    "  route:\n"
                    "    receivers: [tenant_responsible]\n")                          # 6
    with pytest.raises(ConfigError) as info:
        load_notify_config(path)
    assert info.value.problems == [
        f"{path}:4: notify.tenant_register.channels.0: channel 'mail' is email but the "
        "register has phones only",
        f"{path}:4: notify.tenant_register.channels.1: unknown channel 'fax'"]
    path.write_text("notify:\n  route:\n    receivers: [tenant_manager]\n")
    with pytest.raises(ConfigError, match=r":3: notify.route.receivers.0: 'tenant_manager' needs"
                                          " tenant_register"):
        load_notify_config(path)


def test_register_contact_names_must_not_clash() -> None:
    cfg = config(tenant_register={"channels": ["sms"]},
                 contacts={"hs-elec.fire-manager": {"phone": "+8613800000001",
                                                    "channels": ["sms"]}},
                 tenants={}, duty_officer=None, park_manager=None,
                 route={"receivers": ["tenant"]}, escalation={})
    with pytest.raises(ConfigError, match=r"hs-elec\.fire-manager: the names are taken"):
        with_tenant_register(cfg, _register())


def test_example_pages_the_registers_responsible_on_a_fire_and_li_hs_once() -> None:
    cfg = with_tenant_register(load_notify_config(EXAMPLE), load_tenants(TENANTS_EXAMPLE))
    got = pairs(cfg, alarm())
    assert {("li-hs", "sms"), ("hs-elec.fire-responsible", "sms")} <= got
    assert not any(c == "hs-elec.fire-manager" for c, _ in got)   # li-hs is that person


def test_notifier_refuses_tenant_register_without_a_register(tmp_path: Path) -> None:
    path = tmp_path / "n.yaml"
    path.write_text("notify:\n  channels: {sms: {type: sms_aliyun}}\n"
                    "  tenant_register: {channels: [sms]}\n")
    settings = NotifySettings(config=path, dry_run=True)
    store = AlarmStore(tmp_path / "alarms.sqlite3")

    async def audit(lines: list[str]) -> None:
        return None
    with pytest.raises(ConfigError, match="no tenant register is configured"):
        Notifier.from_settings(settings, store=store, metrics=Metrics(), audit=audit, env={})
    built = Notifier.from_settings(settings, store=store, metrics=Metrics(), audit=audit,
                                   env={}, tenants=_register())
    assert built is not None


# ---- issue 14: severities and who is told (config/notify.example.yaml) ---------------------


def test_example_silent_fire_panel_is_an_sms_to_the_duty_officer() -> None:
    cfg = load_notify_config(EXAMPLE)
    got = pairs(cfg, alarm("fire_panel_offline", "major", kind="fire_panel", tenant=None))
    assert ("wang-duty", "sms") in got
    assert all(contact in {"wang-duty", "bms"} for contact, _ in got)


def test_example_isolated_point_warns_the_control_room_chat_then_sms_when_major() -> None:
    cfg = load_notify_config(EXAMPLE)
    warning = alarm("point_isolated", "warning", kind="fire_panel", tenant=None)
    assert pairs(cfg, warning) == {("wang-duty", "ops_dingtalk"), ("bms", "bms_webhook")}
    major = alarm("point_isolated", "major", kind="fire_panel", tenant=None)
    assert ("wang-duty", "sms") in pairs(cfg, major)


def test_example_first_level_gas_reaches_tenant_and_duty_officer() -> None:
    cfg = load_notify_config(EXAMPLE)
    got = pairs(cfg, alarm("gas_lel_high", "major", kind="gas"))
    assert {("li-hs", "sms"), ("wang-duty", "sms")} <= got


def test_example_co_first_level_stays_with_the_tenant() -> None:
    cfg = load_notify_config(EXAMPLE)
    got = pairs(cfg, alarm("co_high", "minor", kind="co"))
    assert ("li-hs", "sms") in got
    assert not any(contact == "wang-duty" for contact, _ in got)


def test_one_detectors_fire_alarm_absorbs_its_zone_pre_alarm() -> None:
    cfg = load_notify_config(EXAMPLE)
    assert cfg.inhibit == DEFAULT_INHIBIT
    for kind in ("smoke", "manual_call_point"):
        fire = alarm("fire_alarm", "critical", kind=kind, alarm_id="f1")
        pre = alarm("zone_pre_alarm", "major", alarm_id="p1")
        elsewhere = alarm("zone_pre_alarm", "major", zone="west", alarm_id="p2")
        reason = inhibited(pre, [fire, pre], cfg.inhibit)
        assert reason is not None
        assert reason.startswith("absorbed by fire_alarm f1")
        assert inhibited(elsewhere, [fire, elsewhere], cfg.inhibit) is None
        assert inhibited(fire, [fire, pre], cfg.inhibit) is None   # 火警 itself is paged
    # A pre-alarm raised by an analogue heat or smoke value alone is still paged.
    assert inhibited(alarm("zone_pre_alarm", "major", alarm_id="p3"), []) is None
