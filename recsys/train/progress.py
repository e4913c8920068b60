"""Progress lines for work that runs for minutes (an epoch, a validation pass)."""
from __future__ import annotations

import logging
import time

log = logging.getLogger("recsys.train")


class Progress:
    """A log line every `every` seconds: steps done of the total, throughput, time left.

    Plain newline-ended lines, because TorchDistributor relays a worker's output line by line
    (a progress bar's carriage returns would reach the driver only when the epoch ends)."""

    def __init__(self, label: str, total_steps: int, every: float, enabled: bool = True,
                 unit: str = "users"):
        self.label, self.total, self.every, self.enabled, self.unit = label, total_steps, every, enabled, unit
        self.start = self.last = time.perf_counter()

    def update(self, steps: int, done: int) -> None:
        """`steps` of `total_steps` taken, `done` units (samples, users) processed so far."""
        now = time.perf_counter()
        if not self.enabled or now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.start
        left = max(0, self.total - steps) * elapsed / max(1, steps)
        log.info("%s: step %d of ~%d (%.0f%%), %.0f %s/s on this worker, ~%.0f s left",
                 self.label, steps, self.total, 100 * min(1.0, steps / max(1, self.total)),
                 done / max(elapsed, 1e-9), self.unit, left)
