"""What a provider module hands the registry: its settings model, a factory and its secrets.

Each provider module (``webhook``, ``dingtalk`` ... ``email``) defines, beside its channel class,
a frozen settings model and a ``PROVIDER`` record; :mod:`gateway.notify.channels.registry` maps
``ChannelType`` to those modules. A module knows its own settings; the registry knows none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from gateway.config import is_loopback
from gateway.notify.base import Channel

log = logging.getLogger(__name__)


def _as_text(value: Any) -> Any:
    # YAML reads `sdk_app_id: 1400000000` or `template_id: 1001` as numbers; the provider
    # wants the text, as the settings were always read (str() of the scalar).
    return str(value) if isinstance(value, int | float) else value


#: A text setting; a number written without quotes is taken as its text.
Text = Annotated[str, BeforeValidator(_as_text)]
#: A text setting that must be given and not be empty.
# (The constraint first, so an empty value reports string_too_short, which reads "required".)
RequiredText = Annotated[str, StringConstraints(min_length=1), BeforeValidator(_as_text)]


class ChannelSettings(BaseModel):
    """Base of the providers' settings: frozen, and a misspelt key is an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _blank_means_default(cls, value: Any, info: ValidationInfo) -> Any:
        # `region: ""` has always meant the default region (endpoint, protocol likewise).
        if value == "" and info.field_name is not None:
            default = cls.model_fields[info.field_name].default
            if isinstance(default, str) and default:
                return default
        return value


S = TypeVar("S", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Provider(Generic[S]):
    """One provider: how to read its settings and build its channel.

    ``build(name, settings, secrets)`` does no I/O; it raises ValueError for a value it cannot
    use (a robot URL without its token), which the registry reports as a config error.
    ``secrets`` are the ``secret_env`` names the provider cannot work without.
    """

    settings: type[S]
    build: Callable[[str, S, Mapping[str, str]], Channel]
    secrets: tuple[str, ...] = ()


def signing_secret(secrets: Mapping[str, str]) -> str | None:
    """The optional signing secret of a webhook or robot: ``signing``, or the older ``secret``."""
    return secrets.get("signing") or secrets.get("secret")


def off_machine(host: str | None) -> bool:
    """True unless ``host`` is this machine (a loopback test server is exempt from TLS rules)."""
    return not is_loopback(host or "")


def host_of(endpoint: str) -> str | None:
    """The host of ``host[:port]`` or of a URL; None if unparseable."""
    try:
        return urlsplit(endpoint if "//" in endpoint else "//" + endpoint).hostname
    except ValueError:
        return None


def refuse_plaintext(what: str) -> str:
    """The error text for a clear-text transport that was not explicitly allowed."""
    return (f"{what} would travel in clear text: use TLS, or set allow_plaintext: true in this "
            "channel's settings to accept that (docs/security.md)")


def warn_plaintext(name: str, what: str) -> None:
    log.warning("notify channel %r: allow_plaintext is set, so %s travel(s) in clear text",
                name, what)
