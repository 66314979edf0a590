"""Who may call the HTTP API: the bearer token, the Host/Origin guard and the JSON-only rule.

A token always exists. The operator configures one (``http.token`` or ``http.token_file``;
required off loopback and with ``notify.public_url``), or the gateway generates one at first
start into ``state_dir/http.token`` (mode 0600, reused later) and the command-line clients read it
from there (:func:`client_headers`).

- Configured token: every route needs it except ``/healthz`` and ``/active`` (probes) and
  ``/ack/{token}`` (the link in an SMS or chat message is itself the credential;
  :mod:`gateway.alarms.acklinks`).
- Generated token (loopback only): reads (GET/HEAD) stay open to local tools as before, but every
  other method needs the token, except the ack form. A web page in a browser on this machine can
  send a POST without a preflight; it cannot read the token file.

Whatever the token, state-changing routes accept only ``Content-Type: application/json`` (a
cross-origin page cannot send that without a preflight, which we never answer), and every request
must name this gateway in ``Host`` (and ``Origin``, when present): a loopback name or address, the
bound ``http.host``, ``notify.public_url``'s host or one of ``http.allowed_hosts``. That refuses
DNS rebinding, where a hostile name resolves to 127.0.0.1 and the browser calls it same-origin.

Decisions are made on the matched route, not on the raw path, so ``/ack/../alarms`` or
percent-encoding cannot reach a protected handler through an open prefix.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import SecretStr

from gateway.config import HttpSettings, Settings, is_loopback, load_settings
from gateway.logs import RateLimited
from sensors.errors import ConfigError

log = logging.getLogger(__name__)

#: ``/active`` says only whether this instance is its partition's active: what a load balancer
#: in front of ack links probes (docs/scale.md), like ``/healthz``.
OPEN_ROUTES = frozenset({"/healthz", "/active", "/ack/{token}"})
ACK_ROUTE = "/ack/{token}"
SAFE_METHODS = frozenset({"GET", "HEAD"})
TOKEN_ENV = "PARKWATCH_HTTP__TOKEN"
TOKEN_FILE_ENV = "PARKWATCH_HTTP__TOKEN_FILE"
STATE_DIR_ENV = "PARKWATCH_STATE_DIR"
DEFAULT_STATE_DIR = Path("var/parkwatch")
GENERATED_TOKEN_FILE = "http.token"
MIN_TOKEN_CHARS = 16
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ApiToken:
    """The token the API checks; ``generated`` when it came from ``state_dir/http.token``."""

    secret: SecretStr
    generated: bool

    def __repr__(self) -> str:  # never show the secret
        return f"ApiToken(generated={self.generated})"


def load_token(settings: HttpSettings) -> SecretStr | None:
    """The configured token, reading ``token_file`` now (ConfigError if unusable)."""
    if settings.token is not None:
        return settings.token
    if settings.token_file is None:
        return None
    return SecretStr(_read_token_file(settings.token_file, "http.token_file"))


def _read_token_file(path: Path, key: str) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(key, [f"{key}: cannot read {path}: {exc.strerror or exc}"]) from None
    if len(text) < MIN_TOKEN_CHARS:
        raise ConfigError(key, [f"{key}: {path} must hold a token of at least "
                                f"{MIN_TOKEN_CHARS} characters"])
    return text


def generated_token_path(state_dir: Path) -> Path:
    return state_dir / GENERATED_TOKEN_FILE


def ensure_generated_token(state_dir: Path) -> SecretStr:
    """``state_dir/http.token``, created at first start (0600, never half-written) and reused."""
    path = generated_token_path(state_dir)
    if not path.exists():
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkstemp creates 0600; link() publishes the complete file only if none exists yet, so
        # two starting processes agree on one token and a crash never leaves an empty one.
        fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=".http.token.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(secrets.token_urlsafe(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        except OSError as exc:
            raise ConfigError("state_dir", [f"state_dir: cannot create the API token {path}: "
                                            f"{exc.strerror or exc}"]) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        log.info("generated the API token %s (the command-line tools read it; keep it 0600)",
                 path)
    return SecretStr(_read_token_file(path, "state_dir"))


def api_token(settings: Settings) -> ApiToken:
    """The configured token, else the generated one (created now if needed); ConfigError if a
    file cannot be read or written."""
    configured = load_token(settings.http)
    if configured is not None:
        return ApiToken(configured, generated=False)
    return ApiToken(ensure_generated_token(settings.state_dir), generated=True)


def _digest(value: bytes) -> bytes:
    # Comparing fixed-length digests keeps compare_digest constant-time even in the token length.
    return hashlib.sha256(value).digest()


def _canonical(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    return None if resource is None else resource.canonical


def _needs_token(request: web.Request, generated: bool) -> bool:
    route = _canonical(request)
    if route in OPEN_ROUTES:
        return False
    # A generated token guards only writes: local read-only tools keep working without it.
    return not (generated and request.method in SAFE_METHODS)


def bearer_middleware(token: ApiToken | SecretStr) -> Middleware:
    if isinstance(token, SecretStr):
        token = ApiToken(token, generated=False)
    expected = _digest(token.secret.get_secret_value().encode())
    generated = token.generated
    refusals = RateLimited(log, interval_s=60.0)   # a scanner must not flood the log

    @web.middleware
    async def require_token(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if not _needs_token(request, generated):
            return await handler(request)
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
                _digest(presented.strip().encode()), expected):
            return await handler(request)
        # Who knocked, never what they presented: a mistyped token is nearly the real one.
        refusals.warning(f"http-401-{request.remote}",
                          "http request without a valid token refused: %s %s from %s",
                          request.method, request.rel_url.path, request.remote)
        where = "the gateway's state_dir/http.token" if generated else "http.token"
        return web.json_response(
            {"error": f"this endpoint needs 'Authorization: Bearer <token>' ({where}); "
                      "command-line clients read PARKWATCH_HTTP__TOKEN, or the token file of "
                      "--config / PARKWATCH_STATE_DIR"},
            status=401, headers={"WWW-Authenticate": 'Bearer realm="parkwatch"'})

    return require_token


@web.middleware
async def json_only(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """State-changing API routes take JSON only: a browser sends a cross-origin ``text/plain``
    or form POST without asking first, but never ``application/json``."""
    if request.method in SAFE_METHODS or _canonical(request) in (None, ACK_ROUTE):
        return await handler(request)
    if request.content_type != "application/json":
        return web.json_response(
            {"error": "send the body as JSON with 'Content-Type: application/json' "
                      f"(got {request.content_type!r})"}, status=415)
    return await handler(request)


def allowed_hosts(settings: Settings) -> frozenset[str]:
    """Host names (lower case, no port) a request may name besides loopback ones."""
    hosts = set(settings.http.allowed_hosts)
    if settings.notify.public_url is not None:
        hosts.add((urlsplit(settings.notify.public_url).hostname or "").lower())
    bound = settings.http.host.strip("[]").lower()
    if bound not in ("", "0.0.0.0", "::"):   # a wildcard is no name anyone uses
        hosts.add(bound)
    hosts.discard("")
    return frozenset(hosts)


def _host_of(authority: str) -> str | None:
    """``host`` from ``host[:port]`` or ``[v6][:port]``, lower case; None if unparseable."""
    try:
        parts = urlsplit("//" + authority)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return None
    return (parts.hostname or "").lower() or None


def host_guard(hosts: Iterable[str]) -> Middleware:
    """Refuse a ``Host`` (421) or ``Origin`` (403) that is not this gateway's."""
    known = frozenset(hosts)

    def ok(host: str | None) -> bool:
        return host is not None and (host in known or is_loopback(host))

    @web.middleware
    async def check_host(request: web.Request, handler: _Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        # No Host at all is an HTTP/1.0 tool, never a browser: nothing to rebind.
        if host is not None and not ok(_host_of(host)):
            return web.json_response(
                {"error": "unknown Host: add it to http.allowed_hosts if this gateway is "
                          "really reached by that name"}, status=421)
        origin = request.headers.get("Origin")
        if origin is not None:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not ok(_host_of(parts.netloc)):
                return web.json_response({"error": "cross-origin request refused"},
                                         status=403)
        return await handler(request)

    return check_host


def api_middlewares(settings: Settings, token: ApiToken) -> list[Middleware]:
    """Outermost first: who the request is for, then who sends it, then what it carries."""
    return [host_guard(allowed_hosts(settings)), bearer_middleware(token), json_only]


def client_headers(env: Mapping[str, str] | None = None, *,
                   config: Path | None = None) -> dict[str, str]:
    """The Authorization header for ``parkwatch alarms|maintenance|top``.

    In order: ``PARKWATCH_HTTP__TOKEN``, ``PARKWATCH_HTTP__TOKEN_FILE``, the token that
    ``config`` sets, then the generated ``http.token`` in the state directory (``config``'s
    ``state_dir``, else ``PARKWATCH_STATE_DIR``, else ``var/parkwatch``). ConfigError if
    ``config`` is invalid.
    """
    env = os.environ if env is None else env
    token = env.get(TOKEN_ENV, "").strip()
    if not token and env.get(TOKEN_FILE_ENV):
        token = _quiet_read(Path(env[TOKEN_FILE_ENV]), TOKEN_FILE_ENV)
    if not token:
        token = _token_from_state(env, config)
    return {"Authorization": f"Bearer {token}"} if token else {}


def _token_from_state(env: Mapping[str, str], config: Path | None) -> str:
    if config is not None:
        settings = load_settings(config)
        configured = load_token(settings.http)
        if configured is not None:
            return configured.get_secret_value()
        state_dir = settings.state_dir
    else:
        state_dir = Path(env.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)
    path = generated_token_path(state_dir)
    return _quiet_read(path, str(path)) if path.exists() else ""


def _quiet_read(path: Path, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError as exc:
        log.warning("cannot read %s (%s): %s; calling the API without a token",
                    what, path, exc.strerror or exc)
        return ""
