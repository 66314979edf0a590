"""Short, signed, expiring, single-use acknowledgement links for notifications
(docs/notifications.md, "Acknowledge links").

Every SMS / IM / email carries ``{base_url}/ack/{token}``; the page behind it
(:mod:`gateway.http.ackpage`) lets the person acknowledge the alarm with a disposition.

Token format (24 characters of base64url, no padding — short enough for an SMS)::

    token = base64url( token_id[8 random bytes] || tag[10 bytes] )
    tag   = HMAC-SHA256(secret, "parkwatch-ack-v1" || len-prefixed(token_id, alarm_id, contact,
                                                                   channel, expires_at_ms))[:10]

Stored messages never hold a link: the outbox row carries a reference ``{{ack:<token id>~~}}``
exactly as long as the URL (so an SMS is measured right), and :meth:`AckLinks.fill` re-signs the
grant's row and swaps the URL in right before the message is sent. A local reader of the
database therefore finds no working link in it.

The ids of the tokens still alive are also kept in memory (bounded by the links issued within
one TTL), so a token that was never issued, or expired, is refused without touching the database:
random guesses cannot queue behind, or slow down, the commits that share the store's worker.
On a store shared by several instances (PostgreSQL) a link minted by another instance is not in
this memory yet: an unknown id makes the instance look for tokens issued since its last look,
at most once a second, so a guess still costs the database next to nothing.

The token itself carries no alarm data: the server keeps one row per token in the alarm database
(table ``ack_tokens``, in the store's migrations: token id → alarm id, contact, channel, expiry,
use). The tag binds the row's content to the secret, so a token cannot be guessed (64 random
bits *and* an 80-bit tag), forged, or pointed at another alarm / contact / channel / expiry by
editing either the token or the row. The row makes the token expire and be used once. The secret
comes from the caller (configuration or environment) and is never logged or shown in a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.alarms.db import Db
from gateway.alarms.store import AlarmStore, prune_ack_tokens
from sensors.errors import ParkWatchError

TOKEN_ID_BYTES = 8
TAG_BYTES = 10
TOKEN_CHARS = 24                       # base64url of 18 bytes, no padding
MAX_TOKEN_CHARS = 64                   # anything longer is rejected before any work
#: What stands for a link in a stored message: the grant's token id, padded with ``~`` (never in
#: base64url) to the URL's length.
LINK_REF = re.compile(r"\{\{ack:([A-Za-z0-9_-]{11})~*\}\}")
_DOMAIN = b"parkwatch-ack-v1"
_MIN_SECRET_BYTES = 16
KEEP_EXPIRED_MS = 3600_000   # an expired link still says "expired" (410) for an hour, then 404
_SWEEP_EVERY_MS = 60_000
_REFRESH_EVERY_MS = 1_000    # shared store: look for other instances' new tokens at most this often
_REFRESH_SKEW_MS = 60_000    # ... issued since the last look, give or take their clocks



class AckProblem(enum.StrEnum):
    """Why a token was refused."""

    MALFORMED = "malformed"   # not a token at all
    UNKNOWN = "unknown"       # well-formed, but no such token was issued
    FORGED = "forged"         # the tag does not match (wrong secret, altered token or row)
    EXPIRED = "expired"
    USED = "used"

    @property
    def gone(self) -> bool:
        """A real token that no longer works (HTTP 410), as opposed to "never existed" (404)."""
        return self in (AckProblem.EXPIRED, AckProblem.USED)


class AckTokenError(ParkWatchError):
    """A token was refused; ``problem`` says why (never includes the secret or the tag)."""

    def __init__(self, problem: AckProblem) -> None:
        super().__init__(f"ack token refused: {problem.value}")
        self.problem = problem


@dataclass(frozen=True, slots=True)
class AckGrant:
    """What a valid token allows: acknowledging ``alarm_id`` as ``contact`` through ``channel``."""

    token_id: str
    alarm_id: str
    contact: str
    channel: str
    issued_at_ms: int
    expires_at_ms: int
    used_at_ms: int | None = None


# --- pure signing helpers (no database) ----------------------------------------------------------

def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: bytes, token_id: bytes, alarm_id: str, contact: str, channel: str,
         expires_at_ms: int) -> bytes:
    """The truncated HMAC tag over every field of a token's row (length-prefixed, unambiguous)."""
    mac = hmac.new(secret, _DOMAIN, hashlib.sha256)
    for part in (token_id, alarm_id.encode(), contact.encode(), channel.encode(),
                 str(int(expires_at_ms)).encode()):
        mac.update(len(part).to_bytes(4, "big"))
        mac.update(part)
    return mac.digest()[:TAG_BYTES]


def encode_token(token_id: bytes, tag: bytes) -> str:
    if len(token_id) != TOKEN_ID_BYTES or len(tag) != TAG_BYTES:
        raise ValueError("token id and tag have fixed lengths")
    return _b64(token_id + tag)


def decode_token(token: str) -> tuple[bytes, bytes]:
    """``(token_id, tag)``; :class:`AckTokenError` (MALFORMED) for anything else."""
    if len(token) != TOKEN_CHARS or not token.isascii():
        raise AckTokenError(AckProblem.MALFORMED)
    try:
        raw = _unb64(token)
    except (binascii.Error, ValueError):
        raise AckTokenError(AckProblem.MALFORMED) from None
    # Reject non-canonical encodings, so exactly one spelling of each token exists.
    if len(raw) != TOKEN_ID_BYTES + TAG_BYTES or _b64(raw) != token:
        raise AckTokenError(AckProblem.MALFORMED)
    return raw[:TOKEN_ID_BYTES], raw[TOKEN_ID_BYTES:]


def verify_tag(secret: bytes, token_id: bytes, tag: bytes, alarm_id: str, contact: str,
               channel: str, expires_at_ms: int) -> bool:
    expected = sign(secret, token_id, alarm_id, contact, channel, expires_at_ms)
    return hmac.compare_digest(expected, tag)


# --- database work (runs in the store's worker) --------------------------------------------------

def _insert(conn: Db, grant: AckGrant) -> bool:
    with conn.write():
        cur = conn.execute(
            "INSERT INTO ack_tokens (token_id, alarm_id, contact, channel, issued_at_ms,"
            " expires_at_ms) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (token_id) DO NOTHING",
            (grant.token_id, grant.alarm_id, grant.contact, grant.channel, grant.issued_at_ms,
             grant.expires_at_ms))
        return cur.rowcount == 1


def insert_grants(conn: Db, grants: Sequence[AckGrant]) -> None:
    """Write minted grants inside the caller's open transaction (no commit here)."""
    conn.executemany(
        "INSERT INTO ack_tokens (token_id, alarm_id, contact, channel, issued_at_ms,"
        " expires_at_ms) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (token_id) DO NOTHING",
        [(g.token_id, g.alarm_id, g.contact, g.channel, g.issued_at_ms, g.expires_at_ms)
         for g in grants])


def link_ref(token_id: str, url_chars: int) -> str:
    """The stand-in for a link in a stored message: ``url_chars`` long when the URL is at least
    as long as the bare reference (always, for a real base URL)."""
    core = f"{{{{ack:{token_id}"
    return core + "~" * max(0, url_chars - len(core) - 2) + "}}"


def _grant_row(conn: Db, token_id: str) -> tuple[str, str, str, int] | None:
    row = conn.execute("SELECT alarm_id, contact, channel, expires_at_ms FROM ack_tokens"
                       " WHERE token_id = ?", (token_id,)).fetchone()
    return None if row is None else (str(row[0]), str(row[1]), str(row[2]), int(row[3]))


def _live_token_ids(conn: Db, expired_after_ms: int,
                    issued_since_ms: int = 0) -> dict[str, int]:
    rows = conn.execute("SELECT token_id, expires_at_ms FROM ack_tokens"
                        " WHERE expires_at_ms > ? AND issued_at_ms >= ?",
                        (expired_after_ms, issued_since_ms)).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def _check(conn: Db, secret: bytes, token: str, now_ms: int,
           consume: bool) -> AckGrant:
    token_id, tag = decode_token(token)
    key = _b64(token_id)
    row = conn.execute(
        "SELECT alarm_id, contact, channel, issued_at_ms, expires_at_ms, used_at_ms"
        " FROM ack_tokens WHERE token_id = ?", (key,)).fetchone()
    if row is None:
        raise AckTokenError(AckProblem.UNKNOWN)
    alarm_id, contact, channel, issued, expires, used = tuple(row)
    if not verify_tag(secret, token_id, tag, alarm_id, contact, channel, expires):
        raise AckTokenError(AckProblem.FORGED)
    if used is not None:
        raise AckTokenError(AckProblem.USED)
    if now_ms >= expires:
        raise AckTokenError(AckProblem.EXPIRED)
    if consume:
        # One conditional UPDATE: of two concurrent consumers (two instances sharing the
        # store, too) exactly one changes the row; the other's finds used_at_ms set.
        with conn.write():
            changed = conn.execute("UPDATE ack_tokens SET used_at_ms = ? WHERE token_id = ?"
                                   " AND used_at_ms IS NULL", (now_ms, key)).rowcount
        if changed != 1:
            raise AckTokenError(AckProblem.USED)
        used = now_ms
    return AckGrant(token_id=key, alarm_id=alarm_id, contact=contact, channel=channel,
                    issued_at_ms=issued, expires_at_ms=expires, used_at_ms=used)


# --- the async facade ----------------------------------------------------------------------------

class AckLinks:
    """Issues and checks ack links; the token rows live in ``store``'s database."""

    def __init__(self, *, secret: bytes, base_url: str, store: AlarmStore,
                 ttl_s: float = 24 * 3600, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < _MIN_SECRET_BYTES:
            raise ValueError(f"the ack link secret must have at least {_MIN_SECRET_BYTES} bytes")
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self._secret = secret
        self.base_url = base_url.rstrip("/")
        self._store = store
        self.ttl_s = ttl_s
        self._clock = clock
        self._live: dict[str, int] = {}      # token id -> expires_at_ms
        self._loaded = False
        self._swept_at_ms = 0
        self._refreshed_at_ms = 0

    def __repr__(self) -> str:  # never show the secret
        return f"AckLinks(base_url={self.base_url!r}, ttl_s={self.ttl_s})"

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def open(self) -> None:
        """Learn the live token ids from the store (once; :meth:`verify` does it if needed)."""
        now = self.now_ms()
        rows = await self._store.execute(_live_token_ids, now - KEEP_EXPIRED_MS)
        self._live.update(rows)
        self._loaded = True
        self._refreshed_at_ms = now

    async def _refresh(self, now: int) -> bool:
        """On a store shared with other instances, learn the tokens they issued since the last
        look: at most once per :data:`_REFRESH_EVERY_MS`, so random guesses cost one small
        query per interval, not one each. False when it is too early to look again."""
        if not self._store.shared or now - self._refreshed_at_ms < _REFRESH_EVERY_MS:
            return False
        since = self._refreshed_at_ms - _REFRESH_SKEW_MS   # other instances' clocks differ
        self._refreshed_at_ms = now
        self._live.update(await self._store.execute(
            _live_token_ids, now - KEEP_EXPIRED_MS, since))
        return True

    @property
    def live_count(self) -> int:
        return len(self._live)

    def _remember(self, grant: AckGrant) -> None:
        self._live[grant.token_id] = grant.expires_at_ms
        self._sweep(self.now_ms())

    def _sweep(self, now: int, *, expired_before: int | None = None) -> None:
        if expired_before is None:
            if now - self._swept_at_ms < _SWEEP_EVERY_MS:
                return
            self._swept_at_ms = now
            expired_before = now - KEEP_EXPIRED_MS
        for key in [k for k, exp in self._live.items() if exp < expired_before]:
            del self._live[key]

    async def _screen(self, token: str) -> None:
        """Refuse, without the database, a token that is malformed, unknown or expired."""
        if len(token) > MAX_TOKEN_CHARS:
            raise AckTokenError(AckProblem.MALFORMED)
        token_id, _ = decode_token(token)
        if not self._loaded:
            await self.open()
        now = self.now_ms()
        self._sweep(now)
        expires = self._live.get(_b64(token_id))
        if expires is None and await self._refresh(now):
            expires = self._live.get(_b64(token_id))
        if expires is None:
            raise AckTokenError(AckProblem.UNKNOWN)
        if now >= expires:
            raise AckTokenError(AckProblem.EXPIRED)

    def url(self, token: str) -> str:
        return f"{self.base_url}/ack/{token}"

    def mint(self, alarm_id: str, *, contact: str, channel: str) -> tuple[str, AckGrant]:
        """A link and its row, without touching the database: the caller writes the row with
        :func:`insert_grants` in the same transaction as the message that carries the link."""
        now = self.now_ms()
        expires = now + int(self.ttl_s * 1000)
        token_id = secrets.token_bytes(TOKEN_ID_BYTES)
        grant = AckGrant(token_id=_b64(token_id), alarm_id=alarm_id, contact=contact,
                         channel=channel, issued_at_ms=now, expires_at_ms=expires)
        tag = sign(self._secret, token_id, alarm_id, contact, channel, expires)
        self._remember(grant)
        return self.url(encode_token(token_id, tag)), grant

    @property
    def url_chars(self) -> int:
        """The length of every link: ``{base_url}/ack/`` and a fixed-length token."""
        return len(self.url("x" * TOKEN_CHARS))

    def reserve(self, alarm_id: str, *, contact: str, channel: str) -> tuple[str, AckGrant]:
        """Like :meth:`mint`, but the first item is the reference that stands for the link in
        a stored message (as long as the link); :meth:`fill` turns it into the URL."""
        _, grant = self.mint(alarm_id, contact=contact, channel=channel)
        return link_ref(grant.token_id, self.url_chars), grant

    async def url_for(self, token_id: str) -> str | None:
        """The link of the grant ``token_id`` (re-signed from its row); None without a row."""
        row = await self._store.execute(_grant_row, token_id)
        return None if row is None else self._signed_url(token_id, row)

    def _signed_url(self, token_id: str, row: tuple[str, str, str, int]) -> str:
        alarm_id, contact, channel, expires = row
        raw_id = _unb64(token_id)
        tag = sign(self._secret, raw_id, alarm_id, contact, channel, expires)
        return self.url(encode_token(raw_id, tag))

    async def fill(self, text: str, *, alarm_id: str) -> str:
        """``text`` with each link reference replaced by its URL. A reference to no grant of
        ``alarm_id`` (text a device managed to put in a message, a pruned row) becomes empty:
        a message never carries a link to another alarm."""
        refs = {m.group(1) for m in LINK_REF.finditer(text)}
        if not refs:
            return text
        urls: dict[str, str] = {}
        for token_id in refs:
            row = await self._store.execute(_grant_row, token_id)
            if row is not None and row[0] == alarm_id:
                urls[token_id] = self._signed_url(token_id, row)
        return LINK_REF.sub(lambda m: urls.get(m.group(1), ""), text)

    async def issue(self, alarm_id: str, *, contact: str, channel: str) -> str:
        """A new link for ``contact`` on ``channel``; the full URL ``{base_url}/ack/{token}``."""
        now = self.now_ms()
        expires = now + int(self.ttl_s * 1000)
        for _ in range(5):  # a 64-bit collision is astronomically unlikely; never reuse one
            token_id = secrets.token_bytes(TOKEN_ID_BYTES)
            grant = AckGrant(token_id=_b64(token_id), alarm_id=alarm_id, contact=contact,
                             channel=channel, issued_at_ms=now, expires_at_ms=expires)
            if await self._store.execute(_insert, grant):
                self._remember(grant)
                tag = sign(self._secret, token_id, alarm_id, contact, channel, expires)
                return self.url(encode_token(token_id, tag))
        raise RuntimeError("could not allocate a unique ack token id")

    async def verify(self, token: str) -> AckGrant:
        """The grant of a valid, unused, unexpired token; :class:`AckTokenError` otherwise."""
        await self._screen(token)
        return await self._store.execute(_check, self._secret, token, self.now_ms(), False)

    async def resolve(self, token: str) -> AckGrant | None:
        """Like :meth:`verify`, but None for a refused token (use ``verify`` for the reason)."""
        try:
            return await self.verify(token)
        except AckTokenError:
            return None

    async def consume(self, token: str) -> AckGrant:
        """Atomically mark the token used; :class:`AckTokenError` (USED on reuse) if refused."""
        await self._screen(token)
        return await self._store.execute(_check, self._secret, token, self.now_ms(), True)

    async def prune(self, *, older_than_s: float = 7 * 24 * 3600) -> int:
        """Delete rows that expired more than ``older_than_s`` ago; the number deleted."""
        before = self.now_ms() - int(older_than_s * 1000)
        self._sweep(self.now_ms(), expired_before=before)
        return await self._store.execute(prune_ack_tokens, before)
