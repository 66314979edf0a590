"""Bearer-token authentication for the HTTP API (``Authorization: Bearer <token>``).

With a token configured (``http.token`` or ``http.token_file``; required when ``http.host`` is
not loopback) every route needs it except two, which carry no secret of their own and must work
for callers that cannot hold one:

- ``/healthz``: load balancers, systemd and container probes; it says ok/degraded and little else.
- ``/ack/{token}``: the link in an SMS or chat message is itself the credential (signed,
  expiring, single use; :mod:`gateway.alarms.acklinks`).

Everything else (``/status``, ``/metrics``, ``/alarms``, ``/maintenance``, any unknown path)
answers 401 without the token. The decision is made on the matched route, not on the raw path, so
``/ack/../alarms`` or percent-encoding cannot reach a protected handler through an open prefix.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import SecretStr

from gateway.config import HttpSettings
from gateway.logs import RateLimited
from sensors.errors import ConfigError

log = logging.getLogger(__name__)

OPEN_ROUTES = frozenset({"/healthz", "/ack/{token}"})
TOKEN_ENV = "PARKWATCH_HTTP__TOKEN"
TOKEN_FILE_ENV = "PARKWATCH_HTTP__TOKEN_FILE"
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def load_token(settings: HttpSettings) -> SecretStr | None:
    """The configured token, reading ``token_file`` now (ConfigError if unusable)."""
    if settings.token is not None:
        return settings.token
    if settings.token_file is None:
        return None
    path = settings.token_file
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError("http.token_file", [f"http.token_file: cannot read {path}: "
                                              f"{exc.strerror or exc}"]) from None
    if len(text) < 16:
        raise ConfigError("http.token_file", [f"http.token_file: {path} must hold a token of at "
                                              "least 16 characters"])
    return SecretStr(text)


def _digest(value: bytes) -> bytes:
    # Comparing fixed-length digests keeps compare_digest constant-time even in the token length.
    return hashlib.sha256(value).digest()


def bearer_middleware(token: SecretStr) -> Middleware:
    expected = _digest(token.get_secret_value().encode())
    refusals = RateLimited(log, interval_s=60.0)   # a scanner must not flood the log

    @web.middleware
    async def require_token(request: web.Request, handler: _Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if resource is not None and resource.canonical in OPEN_ROUTES:
            return await handler(request)
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
                _digest(presented.strip().encode()), expected):
            return await handler(request)
        # Who knocked, never what they presented: a mistyped token is nearly the real one.
        refusals.warning(f"http-401-{request.remote}",
                          "http request without a valid token refused: %s %s from %s",
                          request.method, request.rel_url.path, request.remote)
        return web.json_response(
            {"error": "this endpoint needs 'Authorization: Bearer <token>' (http.token); "
                      "command-line clients read PARKWATCH_HTTP__TOKEN"},
            status=401, headers={"WWW-Authenticate": 'Bearer realm="parkwatch"'})

    return require_token


def client_headers(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Authorization header for ``parkwatch alarms|maintenance|top``, from the same variables
    that configure the gateway (``PARKWATCH_HTTP__TOKEN`` or ``PARKWATCH_HTTP__TOKEN_FILE``)."""
    env = os.environ if env is None else env
    token = env.get(TOKEN_ENV, "").strip()
    if not token and env.get(TOKEN_FILE_ENV):
        try:
            with open(env[TOKEN_FILE_ENV], encoding="utf-8") as fh:
                token = fh.read().strip()
        except OSError as exc:
            log.warning("cannot read %s (%s): %s; calling the API without a token",
                        TOKEN_FILE_ENV, env[TOKEN_FILE_ENV], exc.strerror or exc)
    return {"Authorization": f"Bearer {token}"} if token else {}
