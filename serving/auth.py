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
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from serving.errors import ApiError

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

    def allows(self, scope: str) -> bool:
        return self.admin or any(scope == g or scope.startswith(g + ":") for g in self.scopes)


@dataclass(frozen=True)
class _Token:
    secret: bytes
    principal: Principal


class TokensFileError(ValueError):
    pass


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
        out.append(_Token(token.encode("utf-8"), Principal(str(name), frozenset(scopes))))
    return out


class TokenStore:
    def __init__(self, admin_token: str, tokens_file: Path | None):
        self._admin = _Token(admin_token.encode("utf-8"), Principal("admin", frozenset(), admin=True))
        self._file = tokens_file
        self._lock = threading.Lock()
        self._sig: tuple | None = None
        self._scoped: list[_Token] = []
        if tokens_file is not None:
            self._scoped = load_tokens_file(tokens_file)  # a broken file at start-up is fatal
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
    """The request's principal if it holds one of ``scopes``; else ApiError(403)."""
    store: TokenStore = request.app.state.tokens
    token = token_from_request(request)
    if token is None:
        raise ApiError(403, f"Missing token: {TOKEN_HOWTO}.")
    principal = store.lookup(token)
    if principal is None:
        raise ApiError(403, f"Invalid token: this token is unknown; {TOKEN_HOWTO} with a valid token.")
    if not any(principal.allows(s) for s in scopes):
        raise ApiError(403, f"Forbidden: the token `{principal.name}` lacks the scope {' or '.join(scopes)}.")
    return principal


def pipe_scopes(pipe: str) -> tuple[str, ...]:
    """Scopes that allow reading a pipe."""
    return (pipe_scope(pipe), PIPES_READ)
