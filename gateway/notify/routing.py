"""Who hears about an alarm: the routing tree, contacts, channels and inhibition (pure, no I/O).

In the spirit of Alertmanager's route tree: the root node matches every alarm; children are tried
in order and the first that matches wins unless it says ``continue: true``; the deepest matching
nodes are the leaves whose receivers get the alarm. Options (receivers, channels, grouping
times) inherit down the tree, so a child only states what differs.

Evaluation (``rules/``) decides *that* something is wrong; this module decides *who* is told and
on which channels. Escalation over time lives in :mod:`gateway.notify.plan`, wording in
:mod:`gateway.notify.templates`.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from rules.alarm import Alarm, AlarmState, Maintenance, Severity
from sensors.errors import ConfigError
from sensors.tenants import TenantRegister
from sensors.yamlsource import LineMap, line_for, load_config_file

# Names end up inside notification keys ("alarm:state:tier:n:contact:channel"), so no colons.
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]+$")]
Lang = Literal["zh-CN", "en"]

#: Receiver names with a meaning of their own (resolved per alarm, not listed under contacts).
TENANT, DUTY_OFFICER, PARK_MANAGER = "tenant", "duty_officer", "park_manager"
#: The alarm's tenant's 消防安全管理人 / 消防安全责任人, from the tenant register.
TENANT_MANAGER, TENANT_RESPONSIBLE = "tenant_manager", "tenant_responsible"
SPECIAL_RECEIVERS = frozenset({TENANT, DUTY_OFFICER, PARK_MANAGER, TENANT_MANAGER,
                               TENANT_RESPONSIBLE})
_REGISTER_ROLES = {TENANT_MANAGER: "fire-manager", TENANT_RESPONSIBLE: "fire-responsible"}

#: Rules that mean "there may be a fire": never held back by group_wait, repeated until acked.
FIRE_RULES = frozenset({"fire_alarm", "fire_confirmed"})
FIRE_KINDS = frozenset({"manual_call_point"})


def _as_tuple(value: Any) -> Any:
    """Let YAML say ``tenant: hs-elec`` as well as ``tenant: [hs-elec, lt-print]``."""
    return (value,) if isinstance(value, str) else value


Names = Annotated[tuple[Name, ...], BeforeValidator(_as_tuple)]
Severities = Annotated[tuple[Severity, ...], BeforeValidator(_as_tuple)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ChannelKind(enum.StrEnum):
    """What a message looks like on a channel (templates are per kind, not per provider)."""

    SMS = "sms"
    IM = "im"
    EMAIL = "email"
    WEBHOOK = "webhook"


class ChannelType(enum.StrEnum):
    SMS_ALIYUN = "sms_aliyun"
    SMS_TENCENT = "sms_tencent"
    SMS_HTTP = "sms_http"
    DINGTALK = "dingtalk"
    WECOM = "wecom"
    FEISHU = "feishu"
    EMAIL = "email"
    WEBHOOK = "webhook"

    @property
    def kind(self) -> ChannelKind:
        if self.value.startswith("sms_"):
            return ChannelKind.SMS
        if self in (ChannelType.DINGTALK, ChannelType.WECOM, ChannelType.FEISHU):
            return ChannelKind.IM
        return ChannelKind(self.value)


# A setting whose name looks like one of these belongs in the environment, not in the file.
_SECRET_WORDS = ("secret", "password", "token", "access_key", "api_key", "webhook_url")


Scalar = str | int | float | bool
SettingValue = Scalar | dict[str, str] | list[Scalar]


class ChannelConfig(_Model):
    """One configured channel: its provider type and non-secret settings.

    Secrets (access keys, robot tokens, SMTP passwords) are never in this file: ``secret_env``
    maps a secret's name to the environment variable (or ``file:/path``) that holds it.
    """

    type: ChannelType
    # Scalars for most providers; sms_http also takes its `fields` / `headers` templates
    # (mappings) and `retry_values` (a list) here.
    settings: dict[str, SettingValue] = Field(default_factory=dict)
    secret_env: dict[str, str] = Field(default_factory=dict)
    fallback: Name | None = None            # channel to use when this one keeps failing
    rate_limit_per_min: int | None = Field(default=None, gt=0)   # never holds back fire alarms

    @model_validator(mode="after")
    def _no_secrets_inline(self) -> ChannelConfig:
        leaked = [k for k in self.settings if any(w in k.lower() for w in _SECRET_WORDS)]
        if leaked:
            raise ValueError(f"settings {leaked} look secret: name the environment variable "
                             "under secret_env instead")
        return self

    @property
    def kind(self) -> ChannelKind:
        return self.type.kind


class Contact(_Model):
    """A person (or a group chat: no phone/email, only IM channels)."""

    name: str = ""                          # shown in the audit, optional
    phone: str | None = None
    email: str | None = None
    lang: Lang = "zh-CN"
    channels: Names = ()                    # the channels this contact relies on


class RouteMatch(_Model):
    """All given conditions must hold; an empty match matches everything."""

    min_severity: Severity | None = None
    severity: Severities | None = None
    park: Names | None = None
    building: Names | None = None
    tenant: Names | None = None
    kind: Names | None = None
    rule: Names | None = None

    def matches(self, alarm: Alarm) -> bool:
        s = alarm.subject
        checks: tuple[tuple[Sequence[str] | None, str | None], ...] = (
            (self.park, s.park), (self.building, s.building), (self.tenant, s.tenant),
            (self.kind, s.kind), (self.rule, alarm.rule),
            (self.severity, alarm.severity))
        if self.min_severity is not None and alarm.severity.rank < self.min_severity.rank:
            return False
        return all(allowed is None or value in allowed for allowed, value in checks)


class RouteNode(_Model):
    """A node of the routing tree. ``None`` means "inherit from the parent"."""

    name: str = ""
    match: RouteMatch = RouteMatch()
    receivers: Names | None = None
    channels: Names | None = None           # restricts each receiver's channels to these
    group_by: Names | None = None
    group_wait_s: float | None = Field(default=None, ge=0)
    group_interval_s: float | None = Field(default=None, ge=0)
    repeat_interval_s: float | None = Field(default=None, gt=0)
    continue_: bool = Field(default=False, alias="continue")
    routes: tuple[RouteNode, ...] = ()


class EscalationTier(_Model):
    after_s: float = Field(ge=0)
    receivers: Names


class Escalation(_Model):
    """Tier 0 goes out with the routing tree's receivers; later tiers if nobody acknowledged.

    Fire-class alarms repeat every ``repeat_s`` to everyone paged so far until acknowledged or
    resolved (``max_repeats`` bounds the SMS bill: Aliyun allows 50 notices/number/day).
    """

    min_severity: Severity = Severity.MAJOR
    tiers: tuple[EscalationTier, ...] = ()
    repeat_s: float | None = Field(default=None, gt=0)
    max_repeats: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Escalation:
        times = [t.after_s for t in self.tiers]
        if times and times[0] != 0:
            raise ValueError("the first tier must have after_s: 0 (it goes out with the route)")
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise ValueError("tiers must have strictly increasing after_s")
        return self


class InhibitRule(_Model):
    """While a ``source`` alarm is active, alarms of ``targets`` with equal labels are not paged."""

    source: Name
    targets: Names
    equal: tuple[Literal["park", "building", "floor", "zone", "device", "tenant"], ...]


DEFAULT_INHIBIT = (
    # A whole building silent is one network/power problem, not fifty offline devices.
    InhibitRule(source="building_silent", targets=("device_offline",),
                equal=("park", "building")),
    # fire_confirmed already names the signals it confirmed; paging each again is noise.
    InhibitRule(source="fire_confirmed",
                targets=("zone_pre_alarm", "fire_alarm", "heat_high", "smoke_obscuration_high"),
                equal=("park", "building", "floor", "zone")),
    # One detector's (or call point's) fire alarm pages 火警 once: the zone pre-alarm it raised
    # is the same signal, recorded in the alarm store but not sent as a second message.
    InhibitRule(source="fire_alarm", targets=("zone_pre_alarm",),
                equal=("park", "building", "floor", "zone")),
)


class TenantRegisterContacts(_Model):
    """How the tenant register's people are paged (the register knows only names and phones).

    With this set, the receiver ``tenant`` also means the alarm's tenant's 消防安全管理人, and its
    消防安全责任人 for alarms of at least ``responsible_min_severity``; ``tenant_manager`` and
    ``tenant_responsible`` name one of them alone (e.g. in an escalation tier).
    """

    channels: Names = Field(min_length=1)
    lang: Lang = "zh-CN"
    responsible_min_severity: Severity = Severity.CRITICAL


class ParkContacts(_Model):
    """Per park: who is on duty and who manages it (overrides the top-level defaults)."""

    duty_officer: Name | None = None
    park_manager: Name | None = None


class NotifyConfig(_Model):
    """The ``notify:`` section: contacts, channels, the routing tree and escalation."""

    contacts: dict[Name, Contact] = Field(default_factory=dict)
    tenants: dict[Name, Names] = Field(default_factory=dict)
    tenant_register: TenantRegisterContacts | None = None
    duty_officer: Name | None = None
    park_manager: Name | None = None
    parks: dict[Name, ParkContacts] = Field(default_factory=dict)
    channels: dict[Name, ChannelConfig] = Field(default_factory=dict)
    route: RouteNode = RouteNode()
    escalation: Escalation = Escalation()
    inhibit: tuple[InhibitRule, ...] = DEFAULT_INHIBIT

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> NotifyConfig:
        # The file loader checks references itself to report each with its line.
        if info.context and info.context.get("defer_references"):
            return self
        problems = reference_problems(self)
        if problems:
            raise ValueError("; ".join(f"{'.'.join(map(str, loc))}: {m}" for loc, m in problems))
        return self


Loc = tuple[str | int, ...]


def reference_problems(cfg: NotifyConfig) -> list[tuple[Loc, str]]:
    """Every dangling name: unknown contacts, channels, and contacts lacking an address."""
    out: list[tuple[Loc, str]] = []
    for name, ch in cfg.channels.items():
        if ch.fallback is not None and ch.fallback not in cfg.channels:
            out.append((("channels", name, "fallback"), f"unknown channel {ch.fallback!r}"))
    for name, c in cfg.contacts.items():
        for i, chan in enumerate(c.channels):
            loc: Loc = ("contacts", name, "channels", i)
            out.extend((loc, m) for m in _contact_channel(cfg, c, chan))
    for tenant, names in cfg.tenants.items():
        out.extend((("tenants", tenant, i), f"unknown contact {n!r}")
                   for i, n in enumerate(names) if n not in cfg.contacts)
    out.extend(_register_problems(cfg))
    for key in ("duty_officer", "park_manager"):
        name = getattr(cfg, key)
        if name is not None and name not in cfg.contacts:
            out.append(((key,), f"unknown contact {name!r}"))
        for park, pc in cfg.parks.items():
            name = getattr(pc, key)
            if name is not None and name not in cfg.contacts:
                out.append((("parks", park, key), f"unknown contact {name!r}"))
    out.extend(_node_problems(cfg, cfg.route, ("route",)))
    for t, tier in enumerate(cfg.escalation.tiers):
        out.extend(_receiver_problems(cfg, tier.receivers, ("escalation", "tiers", t, "receivers")))
    return out


def _register_problems(cfg: NotifyConfig) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    for i, chan in enumerate(cfg.tenant_register.channels if cfg.tenant_register else ()):
        ch = cfg.channels.get(chan)
        if ch is None:
            out.append((("tenant_register", "channels", i), f"unknown channel {chan!r}"))
        elif ch.kind is ChannelKind.EMAIL:
            out.append((("tenant_register", "channels", i),
                        f"channel {chan!r} is email but the register has phones only"))
    return out


def _contact_channel(cfg: NotifyConfig, contact: Contact, chan: str) -> list[str]:
    ch = cfg.channels.get(chan)
    if ch is None:
        return [f"unknown channel {chan!r}"]
    if ch.kind is ChannelKind.SMS and not contact.phone:
        return [f"channel {chan!r} is SMS but the contact has no phone"]
    if ch.kind is ChannelKind.EMAIL and not contact.email:
        return [f"channel {chan!r} is email but the contact has no email"]
    return []


def _receiver_problems(cfg: NotifyConfig, names: Iterable[str], loc: Loc) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    for i, name in enumerate(names):
        if name in _REGISTER_ROLES:
            if cfg.tenant_register is None:
                out.append(((*loc, i), f"{name!r} needs tenant_register (the register's people)"))
        elif name in SPECIAL_RECEIVERS:
            if name != TENANT and getattr(cfg, name) is None and not any(
                    getattr(pc, name) for pc in cfg.parks.values()):
                out.append(((*loc, i), f"{name!r} is used but not configured"))
        elif name not in cfg.contacts:
            out.append(((*loc, i), f"unknown contact {name!r}"))
    return out


def _node_problems(cfg: NotifyConfig, node: RouteNode, loc: Loc) -> list[tuple[Loc, str]]:
    out = _receiver_problems(cfg, node.receivers or (), (*loc, "receivers"))
    out.extend(((*loc, "channels", i), f"unknown channel {c!r}")
               for i, c in enumerate(node.channels or ()) if c not in cfg.channels)
    for i, child in enumerate(node.routes):
        out.extend(_node_problems(cfg, child, (*loc, "routes", i)))
    return out


def load_notify_config(path: str | Path) -> NotifyConfig:
    """Load the ``notify:`` section of a YAML file; every problem is reported as file:line: key."""
    path = Path(path)
    source = str(path)
    doc, lines = load_config_file(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("notify"), dict):
        raise ConfigError(source, [f"{path}:1: expected a top-level 'notify:' mapping"])
    try:
        cfg = NotifyConfig.model_validate(doc["notify"], context={"defer_references": True})
    except ValidationError as exc:
        raise ConfigError(source, [
            _where(source, lines, tuple(e["loc"]),
                   "unknown key" if e["type"] == "extra_forbidden"
                   else str(e["msg"]).removeprefix("Value error, "))
            for e in exc.errors()]) from None
    problems = reference_problems(cfg)
    if problems:
        raise ConfigError(source, [_where(source, lines, loc, msg) for loc, msg in problems])
    return cfg


def _where(source: str, lines: LineMap, loc: Loc, msg: str) -> str:
    # pydantic reports the alias-less field name; YAML says "continue".
    full = ("notify", *("continue" if p == "continue_" else p for p in loc))
    line = line_for(lines, full)
    return f"{source}:{line}: {'.'.join(map(str, full))}: {msg}"


# ---- routing ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    """The inherited options in force at a node."""

    receivers: tuple[str, ...] = ()
    channels: tuple[str, ...] | None = None
    group_by: tuple[str, ...] = ("park", "building", "rule")
    group_wait_s: float = 30.0
    group_interval_s: float = 300.0
    repeat_interval_s: float | None = None      # None: non-fire alarms are not repeated
    path: str = "root"

    def under(self, node: RouteNode, path: str) -> Options:
        def pick(mine: Any, inherited: Any) -> Any:
            return inherited if mine is None else mine
        return Options(
            receivers=pick(node.receivers, self.receivers),
            channels=pick(node.channels, self.channels),
            group_by=pick(node.group_by, self.group_by),
            group_wait_s=pick(node.group_wait_s, self.group_wait_s),
            group_interval_s=pick(node.group_interval_s, self.group_interval_s),
            repeat_interval_s=pick(node.repeat_interval_s, self.repeat_interval_s),
            path=path)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One contact on one channel, with the options of the route that chose them."""

    contact: str
    channel: str
    options: Options
    reason: str                                  # why this contact: the route path, or a rule


def is_fire_class(alarm: Alarm) -> bool:
    """Fire-class alarms skip group_wait and repeat until someone acknowledges them."""
    return (alarm.rule in FIRE_RULES or alarm.subject.kind in FIRE_KINDS
            or alarm.severity is Severity.CRITICAL)


def matching_leaves(cfg: NotifyConfig, alarm: Alarm) -> list[Options]:
    """The options of every leaf the alarm ends at (the root if no child matches)."""
    return _walk(cfg.route, alarm, Options().under(cfg.route, cfg.route.name or "root"))


def _walk(node: RouteNode, alarm: Alarm, opts: Options) -> list[Options]:
    found: list[Options] = []
    for i, child in enumerate(node.routes):
        if child.match.matches(alarm):
            found += _walk(child, alarm, opts.under(child, f"{opts.path}/{child.name or i}"))
            if not child.continue_:
                break
    return found or [opts]


def special_contact(cfg: NotifyConfig, role: str, park: str) -> str | None:
    """The park's own duty officer / park manager, else the configuration's default."""
    own = cfg.parks.get(park)
    who: str | None = getattr(own, role) if own is not None else None
    return who or getattr(cfg, role)


def register_contact_name(tenant: str, role: str) -> str:
    """The contact name a register person gets: ``hs-elec.fire-manager`` for ``tenant_manager``
    (kept in notification keys and the audit, so it must stay stable)."""
    return f"{tenant}.{_REGISTER_ROLES[role]}"


def _register_people(cfg: NotifyConfig, alarm: Alarm, roles: Iterable[str]) -> list[str]:
    tenant = alarm.subject.tenant
    if cfg.tenant_register is None or tenant is None:
        return []
    # Absent when no register is loaded (pure routing of a bare file): nobody, not an error.
    names = [register_contact_name(tenant, role) for role in roles]
    return [n for n in names if n in cfg.contacts]


def _tenant_batch(cfg: NotifyConfig, alarm: Alarm) -> list[str]:
    batch = list(cfg.tenants.get(alarm.subject.tenant or "", ()))
    roles = [TENANT_MANAGER]
    reg = cfg.tenant_register
    if reg is not None and alarm.severity.rank >= reg.responsible_min_severity.rank:
        roles.append(TENANT_RESPONSIBLE)
    return batch + _register_people(cfg, alarm, roles)


def resolve_receivers(cfg: NotifyConfig, alarm: Alarm, names: Iterable[str]) -> list[str]:
    """Receiver names → contact names, in order, without repeats.

    A register person whose phone is already among the routing file's contacts for this alarm
    is left out: the routing file's contact says which channels and language that person wants,
    and one person is paged once.
    """
    out: list[str] = []
    for name in names:
        if name == TENANT:
            batch: Sequence[str] = _tenant_batch(cfg, alarm)
        elif name in _REGISTER_ROLES:
            batch = _register_people(cfg, alarm, (name,))
        elif name in (DUTY_OFFICER, PARK_MANAGER):
            who = special_contact(cfg, name, alarm.subject.park)
            batch = (who,) if who else ()
        else:
            batch = (name,)
        out.extend(c for c in batch if c not in out)
    return _one_per_phone(cfg, out, alarm.subject.tenant)


def _one_per_phone(cfg: NotifyConfig, names: list[str], tenant: str | None) -> list[str]:
    if cfg.tenant_register is None or tenant is None:
        return names
    prefix = f"{tenant}."
    register = {n for n in names if n.startswith(prefix) and n.removeprefix(prefix)
                in _REGISTER_ROLES.values()}
    if not register:
        return names
    seen = {_phone_key(cfg.contacts[n].phone) for n in names
            if n not in register and n in cfg.contacts} - {None}
    out = []
    for n in names:
        if n in register:
            phone = _phone_key(cfg.contacts[n].phone)
            if phone in seen:
                continue
            seen.add(phone)
        out.append(n)
    return out


def _phone_key(phone: str | None) -> str | None:
    """A phone as digits only, so "+86 138-0000-0011" and "+8613800000011" are one person."""
    if not phone:
        return None
    digits = "".join(c for c in phone if c.isdigit())
    return digits.removeprefix("86") if len(digits) == 13 else digits


def with_tenant_register(cfg: NotifyConfig, register: TenantRegister,
                         source: str = "notify") -> NotifyConfig:
    """``cfg`` with each register person added as a contact (``hs-elec.fire-manager``…) on the
    ``tenant_register`` channels; unchanged when the routing file does not ask for them.

    ConfigError if a routing-file contact already has one of those names.
    """
    reg = cfg.tenant_register
    if reg is None:
        return cfg
    added: dict[str, Contact] = {}
    for tenant in register:
        for role, person in ((TENANT_MANAGER, tenant.fire_safety_manager),
                             (TENANT_RESPONSIBLE, tenant.fire_safety_responsible)):
            added[register_contact_name(tenant.id, role)] = Contact(
                name=person.name, phone=person.phone, lang=reg.lang, channels=reg.channels)
    clash = sorted(set(added) & set(cfg.contacts))
    if clash:
        raise ConfigError(source, [f"{source}: notify.contacts: {', '.join(clash)}: the names "
                                   "are taken by tenant register contacts; rename them"])
    return cfg.model_copy(update={"contacts": {**cfg.contacts, **added}})


def contact_channels(cfg: NotifyConfig, contact: str, allowed: Sequence[str] | None) -> list[str]:
    """The contact's own channels, narrowed to the route's ``channels`` when it sets them."""
    mine = cfg.contacts[contact].channels
    return [c for c in mine if allowed is None or c in allowed]


def route(cfg: NotifyConfig, alarm: Alarm) -> list[Delivery]:
    """Every (contact, channel) that should hear about ``alarm``, each pair once.

    The first route to name a pair keeps it (tree order). The duty officer is always added
    for critical alarms, and is the fallback when the routes resolve to nobody (an alarm in a
    space without a tenant must not vanish silently).
    """
    out: dict[tuple[str, str], Delivery] = {}
    leaves = matching_leaves(cfg, alarm)
    for opts in leaves:
        for contact in resolve_receivers(cfg, alarm, opts.receivers):
            for channel in contact_channels(cfg, contact, opts.channels):
                out.setdefault((contact, channel),
                               Delivery(contact, channel, opts, f"route {opts.path}"))
    duty = special_contact(cfg, DUTY_OFFICER, alarm.subject.park)
    if duty is not None and (alarm.severity is Severity.CRITICAL or not out):
        why = "duty officer on critical" if out else "no other receiver"
        for channel in contact_channels(cfg, duty, None):
            out.setdefault((duty, channel), Delivery(duty, channel, leaves[0], why))
    return list(out.values())


# ---- inhibition ---------------------------------------------------------------------------

_LIVE = (AlarmState.FIRING, AlarmState.ACKNOWLEDGED)


def inhibited(alarm: Alarm, active_alarms: Iterable[Alarm],
              rules: Sequence[InhibitRule] = DEFAULT_INHIBIT) -> str | None:
    """Why ``alarm`` must not be paged now, or None. Pure: the caller passes what is active.

    Applies to every transition of the alarm, including its resolution: a pre-alarm resolved
    because fire_confirmed superseded it must not send "resolved" in the middle of a fire.
    """
    if alarm.inhibited_by is not None:
        return f"inhibited by {alarm.inhibited_by} (rule engine)"
    if alarm.maintenance is not Maintenance.NONE:
        return f"device under maintenance ({alarm.maintenance.value})"
    for rule in rules:
        if alarm.rule not in rule.targets:
            continue
        for src in active_alarms:
            if (src.rule == rule.source and src.state in _LIVE
                    and src.alarm_id != alarm.alarm_id
                    and all(_label(src, k) == _label(alarm, k) for k in rule.equal)):
                return f"absorbed by {src.rule} {src.alarm_id} (same {', '.join(rule.equal)})"
    return None


def _label(alarm: Alarm, key: str) -> str | None:
    value: str | None = getattr(alarm.subject, key)
    return value
