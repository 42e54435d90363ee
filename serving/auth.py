"""Tokens (CONTRACT.md section 3).

* The admin token (``settings.resolved_admin_token()``) may do everything.
* Scoped tokens come from the TOML file ``settings.tokens_file``::

      [[tokens]]
      name = "dashboard"
      token = "a-long-random-string"
      scopes = ["PIPES:READ:session_metrics"]   # "PIPES:READ" = every pipe

  Scopes: ``PIPES:READ`` (every pipe), ``PIPES:READ:<pipe>``, ``DATASOURCES:APPEND:user_events``.
  A granted scope covers itself and every scope below it (``PIPES:READ`` covers
  ``PIPES:READ:session_metrics``). The file is re-read when it changes (a broken edit keeps the
  previous tokens and is logged).
* A token travels as ``Authorization: Bearer <token>`` or ``?token=<token>``; it is compared in
  constant time against EVERY known token and never logged.
* A token entry may carry its own rate limit (``rate_limit_per_second``, ``rate_limit_burst``;
  0 = none) instead of ``ENGAGE_RATE_LIMIT_PER_SECOND`` / ``_BURST`` (serving/limits.py).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import stat
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from serving.errors import ApiError
from serving.limits import Rate

log = logging.getLogger("engage.serving.auth")

PIPES_READ = "PIPES:READ"
APPEND_USER_EVENTS = "DATASOURCES:APPEND:user_events"
KNOWN_SCOPE_PREFIXES = ("PIPES:READ", "DATASOURCES:APPEND")
TOKEN_HOWTO = "send it as `Authorization: Bearer <token>` or as `?token=<token>`"


def pipe_scope(pipe: str) -> str:
    return f"{PIPES_READ}:{pipe}"


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[str]
    admin: bool = False
    token_id: str = ""  # a short hash of the token: the rate limiter's key (never the token itself)
    own_rate: bool = False  # True: ``rate`` (None = unlimited) replaces the default rate limit
    rate: Rate | None = None

    def allows(self, scope: str) -> bool:
        return self.admin or any(scope == g or scope.startswith(g + ":") for g in self.scopes)


@dataclass(frozen=True)
class _Token:
    secret: bytes
    principal: Principal


class TokensFileError(ValueError):
    pass


def token_id(token: bytes) -> str:
    return hashlib.sha256(token).hexdigest()[:12]


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _own_rate(entry: dict, where: str) -> tuple[bool, Rate | None]:
    """The entry's ``rate_limit_per_second`` / ``rate_limit_burst``, if it sets them."""
    per_second, burst = entry.get("rate_limit_per_second"), entry.get("rate_limit_burst")
    if per_second is None and burst is None:
        return False, None
    if not _number(per_second) or per_second != per_second or per_second == float("inf"):
        raise TokensFileError(f"{where}: `rate_limit_per_second` must be a number >= 0 (0 = no limit)")
    if burst is not None and (not isinstance(burst, int) or isinstance(burst, bool) or burst < 1):
        raise TokensFileError(f"{where}: `rate_limit_burst` must be an integer >= 1")
    return True, Rate.of(float(per_second), burst)


def load_tokens_file(path: Path) -> list[_Token]:
    """Parse the scoped-tokens TOML file; raises TokensFileError (never echoing a token) when invalid."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokensFileError(f"tokens file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TokensFileError(f"tokens file {path} cannot be read: {exc}") from None
    entries = data.get("tokens", [])
    if not isinstance(entries, list):
        raise TokensFileError(f"tokens file {path}: `tokens` must be an array of tables ([[tokens]])")
    out = []
    for i, entry in enumerate(entries, 1):
        where = f"tokens file {path}, token #{i}"
        if not isinstance(entry, dict):
            raise TokensFileError(f"{where}: not a table")
        name = entry.get("name", f"token-{i}")
        token = entry.get("token")
        scopes = entry.get("scopes", [])
        if not isinstance(token, str) or not token:
            raise TokensFileError(f"{where} ({name}): `token` must be a non-empty string")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise TokensFileError(f"{where} ({name}): `scopes` must be a list of strings")
        for s in scopes:
            if not any(s == p or s.startswith(p + ":") for p in KNOWN_SCOPE_PREFIXES):
                log.warning("%s (%s): unknown scope %r ignored", where, name, s)
        own_rate, rate = _own_rate(entry, f"{where} ({name})")
        secret = token.encode("utf-8")
        out.append(_Token(secret, Principal(str(name), frozenset(scopes), token_id=token_id(secret),
                                            own_rate=own_rate, rate=rate)))
    return out


def owner_only(path: Path, what: str, fix: bool) -> None:
    """Log (and with ``fix``, chmod 600) a secret file that other users may read or write."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return
    if mode & 0o077:
        if fix:
            os.chmod(path, 0o600)
            log.warning("%s %s was readable by other users (mode %o): made owner-only (600)", what, path, mode)
        else:
            log.warning("%s %s is readable by other users (mode %o): run `chmod 600 %s`", what, path, mode, path)


class TokenStore:
    def __init__(self, admin_token: str, tokens_file: Path | None):
        secret = admin_token.encode("utf-8")
        self._admin = _Token(secret, Principal("admin", frozenset(), admin=True, token_id=token_id(secret)))
        self._file = tokens_file
        self._lock = threading.Lock()
        self._sig: tuple | None = None
        self._scoped: list[_Token] = []
        if tokens_file is not None:
            self._scoped = load_tokens_file(tokens_file)  # a broken file at start-up is fatal
            owner_only(tokens_file, "tokens file", fix=False)
            self._sig = self._signature()

    def _signature(self) -> tuple | None:
        try:
            st = os.stat(self._file)  # type: ignore[arg-type]
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _tokens(self) -> list[_Token]:
        if self._file is not None:
            sig = self._signature()
            if sig != self._sig:
                with self._lock:
                    if sig != self._sig:
                        try:
                            self._scoped = load_tokens_file(self._file)
                            log.info("tokens file reloaded: %d scoped tokens", len(self._scoped))
                        except TokensFileError as exc:
                            log.error("%s; keeping the previous tokens", exc)
                        self._sig = sig
        return [self._admin, *self._scoped]

    def lookup(self, token: str) -> Principal | None:
        """The principal of ``token``: compared in constant time against every token, no early exit."""
        given = token.encode("utf-8", "surrogatepass")
        found = None
        for t in self._tokens():
            if hmac.compare_digest(given, t.secret) and found is None:
                found = t.principal
        return found


def token_from_request(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    token = request.query_params.get("token")
    return token or None


def authorize(request: Request, scopes: tuple[str, ...]) -> Principal:
    """The request's principal if it holds one of ``scopes``; else ApiError(403), or 429 over its rate."""
    store: TokenStore = request.app.state.tokens
    token = token_from_request(request)
    principal = store.lookup(token) if token is not None else None
    request.app.state.limits.check_rate(request, principal)  # 429 before 403: refused floods count too
    if token is None:
        raise ApiError(403, f"Missing token: {TOKEN_HOWTO}.")
    if principal is None:
        raise ApiError(403, f"Invalid token: this token is unknown; {TOKEN_HOWTO} with a valid token.")
    if not any(principal.allows(s) for s in scopes):
        raise ApiError(403, f"Forbidden: the token `{principal.name}` lacks the scope {' or '.join(scopes)}.")
    return principal


def pipe_scopes(pipe: str) -> tuple[str, ...]:
    """Scopes that allow reading a pipe."""
    return (pipe_scope(pipe), PIPES_READ)
