"""What to send, to whom and when, for one alarm change or one tick (pure: time is passed in).

    transition ──plan()──────────► tier 0 now (+ group_wait unless fire-class)
    ticker ──due_escalations()───► later tiers and fire-class repeats whose time has come
    resolution ─────────────────► one "resolved" message to everyone told of the firing

Every message has a deterministic key ``{alarm_id}:{state}:{tier}:{repeat_n}:{contact}:{channel}``
and the outbox refuses a second row with the same key, so a replayed transition, a retried tick
or a restart can never send a second message. Later tiers are *not* put in the outbox ahead of
time: the ticker asks for them when they fall due and an acknowledgement simply stops them, with
nothing to cancel. Time is measured from ``fired_at`` so escalation survives restarts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from gateway.notify.base import Notification
from gateway.notify.routing import (
    ChannelKind,
    Delivery,
    NotifyConfig,
    Options,
    contact_channels,
    inhibited,
    is_fire_class,
    resolve_receivers,
    route,
)
from gateway.notify.templates import NO_NAMES, PlaceNames, escalation_note, render
from rules.alarm import Alarm, AlarmState, Transition

AckLink = Callable[[Alarm, str, str], str | None]    # (alarm, contact, channel) -> signed URL


@dataclass(frozen=True, slots=True)
class Context:
    """What rendering needs from outside: the park's time zone and name, the ack link signer,
    the registry's display names of buildings, floors and zones."""

    tz: dt.tzinfo = dt.UTC
    park_name: str = ""
    ack_link: AckLink | None = None
    places: PlaceNames = NO_NAMES


@dataclass(frozen=True, slots=True)
class Planned:
    """A notification to put in the outbox, not to be sent before ``due_ms``."""

    due_ms: int
    notification: Notification
    reason: str
    fire_class: bool
    group_key: str = ""            # messages with equal keys may be merged by the dispatcher
    group_interval_ms: int = 0


@dataclass(frozen=True, slots=True)
class Step:
    """One (contact, channel) of one escalation step."""

    delivery: Delivery
    tier: int
    at_ms: int
    repeat_n: int = 0
    token: str = "firing"
    reason: str = ""


def notification_key(alarm_id: str, state: str, tier: int, repeat_n: int, contact: str,
                     channel: str) -> str:
    return f"{alarm_id}:{state}:{tier}:{repeat_n}:{contact}:{channel}"


def should_send(key: str, sent_keys: Collection[str]) -> tuple[bool, str]:
    """Dedup as a pure decision with its reason (for the audit log)."""
    if key in sent_keys:
        return False, f"duplicate: {key} is already in the outbox"
    return True, "new key"


def notified(alarm_id: str, sent_keys: Iterable[str]) -> list[tuple[str, str]]:
    """(contact, channel) pairs that were sent any firing message for this alarm, in key order."""
    prefix = f"{alarm_id}:firing:"
    out: list[tuple[str, str]] = []
    for key in sorted(sent_keys):
        if not key.startswith(prefix):
            continue
        parts = key[len(alarm_id) + 1:].split(":")
        if len(parts) == 5 and (parts[3], parts[4]) not in out:
            out.append((parts[3], parts[4]))
    return out


# ---- escalation schedule ------------------------------------------------------------------


def _t0(alarm: Alarm) -> int:
    return alarm.fired_at_ms if alarm.fired_at_ms is not None else alarm.updated_at_ms


def _escalates(cfg: NotifyConfig, alarm: Alarm) -> bool:
    return is_fire_class(alarm) or alarm.severity.rank >= cfg.escalation.min_severity.rank


def tiers(cfg: NotifyConfig, alarm: Alarm) -> list[Step]:
    """Every (contact, channel) per tier; a pair is paged in the earliest tier naming it."""
    t0 = _t0(alarm)
    first = route(cfg, alarm)
    steps = [Step(d, 0, t0, reason=d.reason) for d in first]
    seen = {(d.contact, d.channel) for d in first}
    chain = cfg.escalation.tiers if _escalates(cfg, alarm) else ()
    opts = first[0].options if first else Options()
    for n, tier in enumerate(chain):
        at = t0 + int(tier.after_s * 1000)
        for contact in resolve_receivers(cfg, alarm, tier.receivers):
            for channel in contact_channels(cfg, contact, None):
                if (contact, channel) in seen:
                    continue
                seen.add((contact, channel))
                why = f"escalation tier {n} after {tier.after_s:g} s without acknowledgement"
                steps.append(Step(Delivery(contact, channel, opts, why), n, at, reason=why))
    return steps


def _repeat_interval_ms(cfg: NotifyConfig, alarm: Alarm, step: Step) -> int | None:
    # Fire-class: the escalation's repeat_s to everyone; otherwise the route's repeat_interval.
    # Webhooks feed systems, which want state changes, not reminders.
    if cfg.channels[step.delivery.channel].kind is ChannelKind.WEBHOOK:
        return None
    every = cfg.escalation.repeat_s if is_fire_class(alarm) else \
        step.delivery.options.repeat_interval_s
    return int(every * 1000) if every else None


def _repeat_n(cfg: NotifyConfig, alarm: Alarm, step: Step, now_ms: int) -> int:
    """The latest repeat due now (missed ones are not sent in a burst after a restart)."""
    every = _repeat_interval_ms(cfg, alarm, step)
    if every is None:
        return 0
    n = (now_ms - _t0(alarm)) // every
    cap = cfg.escalation.max_repeats
    n = min(n, cap) if cap is not None else n
    # A repeat only reminds people who were paged strictly before it.
    return n if n > 0 and _t0(alarm) + n * every > step.at_ms else 0


def due_steps(cfg: NotifyConfig, alarm: Alarm, now_ms: int) -> list[Step]:
    """Every step whose time has come; tier 0 always (its group_wait is the outbox's due time)."""
    if alarm.state is not AlarmState.FIRING:
        return []           # acknowledged or resolved: escalation and repeats stop
    out: list[Step] = []
    for step in tiers(cfg, alarm):
        if step.tier and step.at_ms > now_ms:
            continue
        out.append(step)
        n = _repeat_n(cfg, alarm, step, now_ms)
        if n:
            every = _repeat_interval_ms(cfg, alarm, step) or 0
            out.append(Step(step.delivery, step.tier, _t0(alarm) + n * every, repeat_n=n,
                             reason=f"repeat {n}: not acknowledged"))
    return out


def next_due_ms(cfg: NotifyConfig, alarm: Alarm, now_ms: int) -> int | None:
    """When the ticker should look at this alarm again (None: nothing more will fall due)."""
    if alarm.state is not AlarmState.FIRING:
        return None
    t0, cap = _t0(alarm), cfg.escalation.max_repeats
    times: list[int] = []
    for step in tiers(cfg, alarm):
        if step.at_ms > now_ms:
            times.append(step.at_ms)
        every = _repeat_interval_ms(cfg, alarm, step)
        if every:
            n = max(now_ms - t0, step.at_ms - t0) // every + 1
            if cap is None or n <= cap:
                times.append(t0 + n * every)
    return min(times, default=None)


# ---- building notifications ---------------------------------------------------------------


def _recipient(cfg: NotifyConfig, contact: str, channel: str) -> str:
    c, kind = cfg.contacts[contact], cfg.channels[channel].kind
    if kind is ChannelKind.SMS:
        return c.phone or ""
    if kind is ChannelKind.EMAIL:
        return c.email or ""
    return ""                      # robots and webhooks address a group or a system


def _group_key(cfg: NotifyConfig, alarm: Alarm, step: Step) -> str:
    """Equal keys may leave as one digest: same route, same group_by labels, same contact and
    channel. Webhooks get '' (never merged): each request carries one alarm document."""
    if cfg.channels[step.delivery.channel].kind is ChannelKind.WEBHOOK:
        return ""
    labels = {"park": alarm.subject.park, "building": alarm.subject.building,
              "floor": alarm.subject.floor, "zone": alarm.subject.zone,
              "tenant": alarm.subject.tenant or "", "kind": alarm.subject.kind,
              "device": alarm.subject.device, "rule": alarm.rule,
              "severity": alarm.severity.value}
    by = ",".join(f"{k}={labels.get(k, '')}" for k in step.delivery.options.group_by)
    return f"{step.delivery.options.path}|{by}|{step.delivery.contact}|{step.delivery.channel}"


def _build(cfg: NotifyConfig, alarm: Alarm, step: Step, ctx: Context, *, due_ms: int,
           with_ack: bool = True) -> Planned:
    d = step.delivery
    contact = cfg.contacts[d.contact]
    kind = cfg.channels[d.channel].kind
    ack_url = ctx.ack_link(alarm, d.contact, d.channel) if ctx.ack_link and with_ack else None
    doc = alarm.document(ack_url)
    note = escalation_note(contact.lang, tier=step.tier, repeat_n=step.repeat_n,
                           unacked_s=(step.at_ms - _t0(alarm)) / 1000)
    if step.token != "firing" or alarm.state is not AlarmState.FIRING:
        note = ""
    text = render(kind, contact.lang, doc, ack_url=ack_url, tz=ctx.tz,
                  park_name=ctx.park_name, note=note, places=ctx.places)
    key = notification_key(alarm.alarm_id, step.token, step.tier, step.repeat_n, d.contact,
                           d.channel)
    n = Notification(key=key, channel=d.channel, recipient=_recipient(cfg, d.contact, d.channel),
                     title=text.title, text=text.text, alarm=doc, ack_url=ack_url,
                     template_params=text.template_params)
    fire = is_fire_class(alarm) and alarm.state is AlarmState.FIRING
    return Planned(due_ms=due_ms, notification=n, reason=step.reason, fire_class=fire,
                   group_key=_group_key(cfg, alarm, step),
                   group_interval_ms=int(d.options.group_interval_s * 1000))


def _due_ms(alarm: Alarm, step: Step, now_ms: int) -> int:
    if step.tier == 0 and step.repeat_n == 0 and not is_fire_class(alarm):
        # Non-fire first messages wait group_wait so a burst can be merged.
        return max(now_ms, step.at_ms + int(step.delivery.options.group_wait_s * 1000))
    return max(now_ms, step.at_ms)


def due_escalations(cfg: NotifyConfig, alarm: Alarm, now_ms: int, sent_keys: Collection[str],
                    *, active: Iterable[Alarm] = (), ctx: Context = Context()) -> list[Planned]:
    """For the ticker: tiers and repeats due by ``now_ms`` that are not in the outbox yet."""
    if inhibited(alarm, active, cfg.inhibit) is not None:
        return []
    out: list[Planned] = []
    for step in due_steps(cfg, alarm, now_ms):
        key = notification_key(alarm.alarm_id, step.token, step.tier, step.repeat_n,
                               step.delivery.contact, step.delivery.channel)
        if should_send(key, sent_keys)[0]:
            out.append(_build(cfg, alarm, step, ctx, due_ms=_due_ms(alarm, step, now_ms)))
    return out


def _after_firing(cfg: NotifyConfig, alarm: Alarm, now_ms: int, sent_keys: Collection[str],
                  ctx: Context, *, webhooks_only: bool) -> list[Planned]:
    """One message per (contact, channel) told of the firing: resolution or acknowledgement."""
    out: list[Planned] = []
    routed = route(cfg, alarm)
    opts = routed[0].options if routed else Options()
    for contact, channel in notified(alarm.alarm_id, sent_keys):
        if contact not in cfg.contacts or channel not in cfg.channels:
            continue            # the config changed since; nobody left to address
        if webhooks_only and cfg.channels[channel].kind is not ChannelKind.WEBHOOK:
            continue
        step = Step(Delivery(contact, channel, opts, "was told of the firing"),
                     0, now_ms, token=alarm.state.value, reason=f"{alarm.state.value} notice")
        key = notification_key(alarm.alarm_id, step.token, 0, 0, contact, channel)
        if should_send(key, sent_keys)[0]:
            out.append(_build(cfg, alarm, step, ctx, due_ms=now_ms, with_ack=False))
    return out


def _upgrades(cfg: NotifyConfig, before: Alarm, after: Alarm, now_ms: int,
              sent_keys: Collection[str], ctx: Context) -> list[Planned]:
    """A firing alarm got worse (gas 25 → 50 %LEL): those already told hear it once more."""
    if after.severity.rank <= before.severity.rank:
        return []
    # Those told at the old severity (not those just added by the new one, even on a replay).
    told = set(notified(after.alarm_id, sent_keys)) & {
        (s.delivery.contact, s.delivery.channel) for s in tiers(cfg, before)
        if s.at_ms <= before.updated_at_ms}
    token = f"firing+{after.severity.value}"      # not "firing": resolution parsing skips it
    out: list[Planned] = []
    for step in tiers(cfg, after):
        pair = (step.delivery.contact, step.delivery.channel)
        if step.tier == 0 and pair in told:
            up = Step(step.delivery, 0, now_ms, token=token,
                       reason=f"severity raised to {after.severity.value}")
            key = notification_key(after.alarm_id, token, 0, 0, *pair)
            if should_send(key, sent_keys)[0]:
                out.append(_build(cfg, after, up, ctx, due_ms=now_ms))
    return out


def plan(cfg: NotifyConfig, transition: Transition, now_ms: int, *, already_sent: Collection[str],
         active: Iterable[Alarm] = (), ctx: Context = Context()) -> list[Planned]:
    """The notifications one alarm transition causes now.

    ``already_sent`` is every outbox key of this alarm (``Outbox.sent_keys(alarm_id + ":")``);
    ``active`` the active alarms *after* the batch this transition came from, so that a
    pre-alarm superseded by fire_confirmed in the same batch is seen as absorbed.
    """
    after, before = transition.after, transition.before
    if not transition.published:
        return []
    active = list(active)
    if inhibited(after, active, cfg.inhibit) is not None:
        return []
    if after.state is AlarmState.RESOLVED:
        return _after_firing(cfg, after, now_ms, already_sent, ctx, webhooks_only=False)
    if after.state is AlarmState.ACKNOWLEDGED:
        # People see the ack on the page they used; machines want every state change.
        return _after_firing(cfg, after, now_ms, already_sent, ctx, webhooks_only=True)
    out = due_escalations(cfg, after, now_ms, already_sent, active=active, ctx=ctx)
    if before is not None and before.state is AlarmState.FIRING:
        out += _upgrades(cfg, before, after, now_ms, already_sent, ctx)
    return out
