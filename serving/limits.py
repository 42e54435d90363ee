"""Limits of the HTTP API (docs/API.md, "Limits").

* :class:`RateLimiter`: a token bucket per key (a token, or a client address for requests without a
  valid token), kept as one float per key (GCRA: the time at which the bucket is full again). One
  lock, one dict lookup and a few float operations per request.
* :class:`ConcurrencyGate`: at most ``limit`` requests of a kind at work at once. A request over
  the cap waits at most ``wait_seconds`` for a slot, then gets a 429: a burst becomes quick 429s,
  never a queue that times out. Used on the event loop only (admission happens before the
  request takes a worker thread), so its counter needs no lock.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from engage.logs import log_event
from engage.settings import Settings
from serving.errors import ApiError

if TYPE_CHECKING:
    from fastapi import Request

    from serving.auth import Principal

log = logging.getLogger("engage.serving.limits")

# Denials of one key (or gate) are logged at most this often; the access log has every 429.
LOG_EVERY_SECONDS = 10.0


@dataclass(frozen=True)
class Rate:
    per_second: float
    burst: int

    @staticmethod
    def of(per_second: float, burst: int | None) -> Rate | None:
        """The rate, or None when ``per_second`` is 0 (no limit). The burst defaults to 2 s worth."""
        if per_second <= 0:
            return None
        return Rate(per_second, burst if burst else max(1, math.ceil(2 * per_second)))

    def describe(self) -> str:
        return f"{self.per_second:g} requests/s (bursts of {self.burst})"


class Verdict(NamedTuple):
    allowed: bool
    limit: int  # the bucket's size: requests that may be sent at once
    remaining: int  # requests that may be sent right now
    reset: int  # whole seconds until the bucket is full again
    retry_after: int  # whole seconds (>= 1) to wait when refused, else 0

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"x-ratelimit-limit", b"%d" % self.limit), (b"x-ratelimit-remaining", b"%d" % self.remaining),
                (b"x-ratelimit-reset", b"%d" % self.reset)]


class RateLimiter:
    """Token buckets by key, thread-safe. Memory: at most ``max_keys`` keys; a full bucket is the
    same as no entry, so full ones are dropped first when the table is full."""

    def __init__(self, max_keys: int = 100_000):
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._full_at: dict[str, float] = {}  # key -> monotonic time at which its bucket is full again
        self._logged_at: dict[str, float] = {}

    def take(self, key: str, rate: Rate, now: float | None = None) -> Verdict:
        """Spend one request of ``key``'s bucket if it has one."""
        now = time.monotonic() if now is None else now
        interval = 1.0 / rate.per_second
        capacity = rate.burst * interval  # seconds of requests the bucket holds
        with self._lock:
            full_at = self._full_at.get(key, now)
            if full_at < now:
                full_at = now
            spent = full_at + interval - now  # the bucket's debt, in seconds, if this request is let in
            allowed = spent <= capacity + 1e-9
            if allowed:
                if len(self._full_at) >= self.max_keys and key not in self._full_at:
                    self._prune(now)
                self._full_at[key] = full_at + interval
            else:
                spent -= interval
        remaining = max(0, int((capacity - spent) / interval + 1e-9))
        retry_after = 0 if allowed else max(1, math.ceil(spent + interval - capacity - 1e-9))
        return Verdict(allowed, rate.burst, remaining, math.ceil(spent - 1e-9), retry_after)

    def _prune(self, now: float) -> None:
        full = [k for k, t in self._full_at.items() if t <= now]
        for k in full:
            del self._full_at[k]
        if len(self._full_at) >= self.max_keys:  # all busy: forget the oldest half (they start afresh)
            for k in list(self._full_at)[: len(self._full_at) // 2]:
                del self._full_at[k]
        self._logged_at.clear()

    def should_log(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            if now - self._logged_at.get(key, -math.inf) < LOG_EVERY_SECONDS:
                return False
            self._logged_at[key] = now
            return True


class ConcurrencyGate:
    """At most ``limit`` holders at once (0 = no cap); waits at most ``wait_seconds`` for a slot."""

    def __init__(self, what: str, limit: int, wait_seconds: float, setting: str):
        self.what = what  # "pipe queries", for messages
        self.limit = limit
        self.wait_seconds = wait_seconds
        self.setting = setting  # the environment variable that raises the cap
        self.in_flight = 0
        self.refused = 0
        self._waiters: deque[asyncio.Future] = deque()
        self._logged_at = -math.inf

    # ``async with gate:`` holds a slot for its body; ApiError(429, Retry-After: 1) if none frees in
    # time. A plain class rather than @asynccontextmanager: a few microseconds less per request.
    async def __aenter__(self) -> None:
        if self.limit <= 0:
            return
        if self.in_flight < self.limit and not self._waiters:  # the common case, without the waiting machinery
            self.in_flight += 1
            return
        if not await self._acquire():
            self.refused += 1
            self._log_refusal()
            raise ApiError(429, f"Too many requests: the server is already answering {self.limit} {self.what} "
                                f"at once and none finished within {self.wait_seconds * 1000:g} ms. Retry after "
                                f"the Retry-After seconds, send fewer requests at the same time, or raise "
                                f"{self.setting} if the machine has spare cores.",
                           headers={"Retry-After": "1"})

    async def __aexit__(self, *exc_info) -> None:
        if self.limit > 0:
            self._release()

    async def _acquire(self) -> bool:
        """Wait in line for a slot: a finishing request hands its slot to the first waiter (first
        come, first served: a newcomer never overtakes the line). False after ``wait_seconds``."""
        if self.wait_seconds <= 0:
            return False
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()  # result: True when handed a slot, False when out of time
        self._waiters.append(waiter)
        timer = loop.call_later(self.wait_seconds, lambda: waiter.done() or waiter.set_result(False))
        try:
            got = await waiter
        except BaseException:  # cancelled (the client went away): a slot handed over meanwhile goes on
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self._release()
            raise
        finally:
            timer.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return got

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)  # the slot passes to it: in_flight unchanged
                return
        self.in_flight -= 1

    def _log_refusal(self) -> None:
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_SECONDS:
            self._logged_at = now
            log_event(log, "concurrency_limited", logging.WARNING, what=self.what.replace(" ", "_"),
                      cap=self.limit, wait_ms=round(self.wait_seconds * 1000), refused_total=self.refused)


class ApiLimits:
    """The limits of one app, from its settings: ``app.state.limits``."""

    def __init__(self, settings: Settings):
        self.token_rate = Rate.of(settings.rate_limit_per_second, settings.rate_limit_burst)
        self.anonymous_rate = Rate.of(settings.rate_limit_anonymous_per_second, settings.rate_limit_anonymous_burst)
        self.limiter = RateLimiter()
        wait = settings.concurrency_wait_ms / 1000
        self.queries = ConcurrencyGate("pipe queries", settings.max_concurrent_queries, wait,
                                       "ENGAGE_MAX_CONCURRENT_QUERIES")
        self.event_requests = ConcurrencyGate("event requests", settings.max_concurrent_event_requests, wait,
                                              "ENGAGE_MAX_CONCURRENT_EVENT_REQUESTS")

    @property
    def worker_threads_needed(self) -> int:
        """Worker threads for every admitted request to start at once (0: no caps, nothing to size)."""
        if self.queries.limit <= 0 or self.event_requests.limit <= 0:
            return 0
        return self.queries.limit + self.event_requests.limit

    def check_rate(self, request: Request, principal: Principal | None) -> None:
        """Spend one request of the principal's bucket (of the client address's without a valid
        token); the verdict goes to ``request.state.rate_limit`` (X-RateLimit-* headers), a refusal
        is an ApiError(429) with Retry-After."""
        if principal is not None:
            rate = principal.rate if principal.own_rate else self.token_rate
            key, label = "t:" + principal.token_id, principal.name
        else:
            rate = self.anonymous_rate
            address = request.client.host if request.client else "unknown"
            key, label = "a:" + address, address
        if rate is None:
            return
        verdict = self.limiter.take(key, rate)
        request.state.rate_limit = verdict
        if verdict.allowed:
            return
        if self.limiter.should_log(key):
            log_event(log, "rate_limited", logging.WARNING, who="token" if principal else "address",
                      name=label, token_id=principal.token_id if principal else "-",
                      per_second=f"{rate.per_second:g}", burst=rate.burst, retry_after_s=verdict.retry_after)
        wait = f"retry after {verdict.retry_after} s (Retry-After)"
        if principal is not None:
            fix = ("the token's `rate_limit_per_second` / `rate_limit_burst` in the tokens file" if principal.own_rate
                   else "ENGAGE_RATE_LIMIT_PER_SECOND / ENGAGE_RATE_LIMIT_BURST")
            message = (f"Too many requests for the token `{principal.name}`: its limit is {rate.describe()}. "
                       f"Send requests more slowly and {wait}, or raise {fix}.")
        else:
            message = (f"Too many requests without a valid token from {label}: the limit is {rate.describe()} per "
                       f"client address. Send a valid token, {wait}, or raise "
                       f"ENGAGE_RATE_LIMIT_ANONYMOUS_PER_SECOND / ENGAGE_RATE_LIMIT_ANONYMOUS_BURST.")
        raise ApiError(429, message, headers={"Retry-After": str(verdict.retry_after)})
