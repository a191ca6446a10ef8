"""Flow control for the engine: adaptive in-flight limit (AIMD), request spacing (RPM), token budget (TPM).

Separate from the engine so each policy is small enough to read and test on its own.
"""
from __future__ import annotations

import asyncio
import time


class AdaptiveLimit:
    """At most ``limit`` holders at once. A 429 halves the limit (floor 1) and pauses new sends for
    Retry-After; every success regrows it by 1/limit, i.e. +1 per window of successes (AIMD, as TCP)."""

    def __init__(self, maximum: int, cooldown_s: float = 1.0):
        self.maximum = max(int(maximum), 1)
        self.limit = float(self.maximum)
        self.lowest = self.limit  # the deepest cut so far, for progress notes and tests
        self.in_flight = 0
        self.peak = 0
        self.paused_until = 0.0
        self.cooldown_s = cooldown_s
        self._last_cut = -1e9
        self._cond: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def __aenter__(self) -> "AdaptiveLimit":
        cond = self._condition()
        while (pause := self.paused_until - time.monotonic()) > 0:
            await asyncio.sleep(pause)
        async with cond:
            await cond.wait_for(lambda: self.in_flight < int(self.limit))
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        return self

    async def __aexit__(self, *exc: object) -> None:
        cond = self._condition()
        async with cond:
            self.in_flight -= 1
            cond.notify(max(int(self.limit) - self.in_flight, 1))

    def start_small(self, first: int) -> None:
        """Send at most ``first`` until ``open_up``: an endpoint never seen answering may refuse every request,
        and it should see a few, not ``maximum``, before the run finds out."""
        self.limit = float(max(min(first, self.maximum), 1))
        self._small = True

    def open_up(self) -> None:
        """The endpoint answers: full width at once (unless a 429 has cut it meanwhile)."""
        if getattr(self, "_small", False):
            self._small = False
            if self._last_cut < 0:
                self.limit = float(self.maximum)
                if self._cond is not None:
                    self._wake()

    def _wake(self) -> None:
        cond = self._cond
        assert cond is not None

        async def notify() -> None:
            async with cond:
                cond.notify_all()

        asyncio.ensure_future(notify())

    def on_success(self) -> None:
        if self.limit < self.maximum:
            self.limit = min(self.maximum, self.limit + 1.0 / self.limit)

    def on_rate_limited(self, retry_after: float | None) -> None:
        now = time.monotonic()
        if retry_after:
            self.paused_until = max(self.paused_until, now + retry_after)
        if now - self._last_cut >= self.cooldown_s:  # one cut per burst of 429s, not one per request
            self._last_cut = now
            self.limit = max(1.0, self.limit / 2)
            self.lowest = min(self.lowest, self.limit)


class RateLimiter:
    """Requests per minute, evenly spaced (no bursts): request n starts no sooner than n * 60/rpm."""

    def __init__(self, rpm: int):
        self.interval = 60.0 / rpm
        self._next = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


class TokenBucket:
    """Tokens per minute: a bucket of ``tpm`` tokens refilled continuously at tpm/60 per second."""

    def __init__(self, tpm: int):
        self.capacity = float(tpm)
        self.tokens = float(tpm)
        self.rate = tpm / 60.0
        self._stamp = time.monotonic()

    async def take(self, amount: int) -> None:
        amount = min(float(amount), self.capacity)
        while True:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self.tokens >= amount:
                self.tokens -= amount
                return
            await asyncio.sleep((amount - self.tokens) / self.rate)
