"""A heartbeat for long loops: a line every few seconds saying how far the loop is, how long it
has run and how long it has left.

The estimate leaves out start-up: it counts from the first item done, not from the loop's
start, because the first item carries one-off costs (imports, the first ONNX export, warm
caches, a data loader's workers starting) that a rate over all items would spread over the
rest. Before the second item it gives no estimate rather than a wrong one.
"""

from __future__ import annotations

import math
import time
from typing import Callable


class Heartbeat:
    """Say ``label: done/total ...`` through ``say`` (None: say nothing) at most every ``every_s``
    seconds (and at the end) as ``tick`` reports progress; the clock is injected for tests."""

    def __init__(self, say: Callable[[str], None] | None, label: str, total: int, every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, start: float | None = None):
        self.say, self.label, self.total, self.every_s, self.clock = say, label, total, every_s, clock
        self.start = self.shown = clock() if start is None else start  # ``start``: when the loop began
        self.first: tuple[int, float] | None = None  # (items, time) when the first item was done

    def eta_s(self, done: int, now: float) -> float:
        """Seconds left at the rate since the first item, or NaN before a second one."""
        if self.first is None or done <= self.first[0]:
            return math.nan
        items, since = self.first
        return (now - since) / (done - items) * (self.total - done)

    def line(self, done: int, now: float, item: str = "") -> str:
        eta = self.eta_s(done, now)
        left = "ETA -" if math.isnan(eta) else f"ETA {eta:.0f} s"
        return f"{self.label}: {done}/{self.total}{' ' + item if item else ''} ({now - self.start:.0f} s elapsed, {left})"

    def tick(self, done: int, item: str = "", always: bool = False) -> None:
        """``done`` items of ``total``; a line when ``every_s`` has passed, at the end, or ``always``."""
        if self.say is None:  # nobody listens: a loop needs no other test
            return
        now = self.clock()
        if self.first is None and done > 0:
            self.first = (done, now)
        if always or done >= self.total or now - self.shown >= self.every_s:
            self.shown = now
            self.say(self.line(done, now, item))
