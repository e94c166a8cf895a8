"""Reconnect delays: exponential, capped, with jitter.

Jitter matters in a museum: after a broker restart every kiosk and gateway in the building reconnects at once;
spreading them out keeps the broker from being stampeded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base_s: float = 0.5
    cap_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next_delay(self) -> float:
        """The delay before the next attempt, after one more failure: half fixed, half random ("equal jitter")."""
        ceiling = min(self.cap_s, self.base_s * (2 ** min(self.failures, 30)))
        self.failures += 1
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0
