"""Clocks, injected everywhere time is read: the real one, and a fake one for tests."""

from __future__ import annotations

import time


class Clock:
    """Wall-clock time in integer nanoseconds since the epoch."""

    def now_ns(self) -> int:
        return time.time_ns()

    def sleep_until(self, t_ns: int) -> None:
        delay_ns = t_ns - self.now_ns()
        if delay_ns > 0:
            time.sleep(delay_ns / 1e9)


class FakeClock(Clock):
    """Virtual time that moves only when told to (or when something sleeps on it)."""

    def __init__(self, start_ns: int = 0):
        self.t_ns = start_ns

    def now_ns(self) -> int:
        return self.t_ns

    def advance(self, delta_ns: int) -> None:
        self.t_ns += delta_ns

    def sleep_until(self, t_ns: int) -> None:
        self.t_ns = max(self.t_ns, t_ns)


def ms(x: float) -> int:
    """Milliseconds → integer nanoseconds (for tests and literals)."""
    return int(round(x * 1_000_000))


def s(x: float) -> int:
    """Seconds → integer nanoseconds."""
    return int(round(x * 1_000_000_000))
