"""When to (re)start, stop and power-cycle a station's BLE scanner: a pure state machine, no asyncio and no clock of
its own. `hardware.scanning.ScanLoop` feeds it what happened (with the time) and carries out the actions it returns.

Policy: a fault waits an exponential backoff with jitter (capped) before the next start; after every
`power_cycle_after` failures in a row the adapter is power-cycled before the next start (not when the adapter is
missing: there is nothing to cycle); after `failing_after` failures in a row the state is `failing`, and it still
retries for ever (an adapter may be plugged in, bluetoothd restarted, hours later). A scanner that delivers nothing
for `silence_s` is stuck (museum beacons advertise all the time) and is restarted. Failures in a row reset once a
scanner has run `healthy_s` and is delivering adverts, so one that restarts fine but sticks again soon still
escalates to a power cycle.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Action",
    "Decision",
    "PowerCycle",
    "RetryPolicy",
    "ScanStatus",
    "ScanSupervisor",
    "StartScan",
    "StopScan",
    "Wait",
]

State = Literal["scanning", "recovering", "failing"]


@dataclass(frozen=True, slots=True)
class StartScan:
    """Start a scanner now."""


@dataclass(frozen=True, slots=True)
class StopScan:
    """Stop the running (or hung starting) scanner: the supervisor has already counted it as a failure."""

    reason: str


@dataclass(frozen=True, slots=True)
class PowerCycle:
    """Switch the adapter off and on again, then go on with the next action (its failure does not stop them)."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to do for this long; call `tick` again after it (earlier is harmless)."""

    seconds: float


Action = StartScan | StopScan | PowerCycle | Wait


@dataclass(frozen=True, slots=True)
class ScanStatus:
    state: State
    reason: str
    """One readable line for staff: what the scanner does, or what went wrong."""
    attempts: int
    """Failures in a row when the status was decided (0 once a scanner has proved healthy)."""


@dataclass(frozen=True, slots=True)
class Decision:
    actions: tuple[Action, ...] = ()
    status: ScanStatus | None = None
    """The new status when its state or reason changed; None otherwise (so retries do not repeat it)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_s: float = 2.0
    cap_s: float = 60.0
    jitter: float = 0.2
    """Each delay is scaled by a factor drawn from [1 - jitter, 1 + jitter], then capped at `cap_s`."""
    power_cycle_after: int = 3
    failing_after: int = 8
    silence_s: float = 120.0
    start_timeout_s: float = 30.0
    """A start that neither succeeds nor fails within this (bluetoothd not answering) counts as a failure."""
    healthy_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("base_s", "cap_s", "silence_s", "start_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"RetryPolicy.{name} must be a positive number of seconds, not {value!r}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"RetryPolicy.jitter must be in [0, 1), not {self.jitter!r}")
        if not (math.isfinite(self.healthy_s) and self.healthy_s >= 0):
            raise ValueError(f"RetryPolicy.healthy_s must be ≥ 0 seconds, not {self.healthy_s!r}")
        if self.power_cycle_after < 1 or self.failing_after < 1:
            raise ValueError("RetryPolicy.power_cycle_after and failing_after must be at least 1")


Phase = Literal["idle", "starting", "running", "waiting"]


class ScanSupervisor:
    """Inputs: `tick(now)` (at least once a second, and after each Wait), `started(now, detail)`, `advert(now)`,
    `fault(kind, reason, now)`. Times are seconds on one monotonic clock chosen by the caller."""

    def __init__(self, policy: RetryPolicy | None = None, *, rng: random.Random | None = None) -> None:
        self.policy = policy or RetryPolicy()
        self._rng = rng or random.Random()
        self._phase: Phase = "idle"
        self._failures = 0
        self._since_cycle = 0
        self._cycle_pending = False
        self._deadline = 0.0
        self._start_at = 0.0
        self._last_heard = 0.0
        self._status: ScanStatus | None = None

    @property
    def status(self) -> ScanStatus | None:
        """The last reported status (None before the first start or fault)."""
        return self._status

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def failures(self) -> int:
        return self._failures

    def tick(self, now: float) -> Decision:
        policy = self.policy
        if self._phase == "idle":
            return self._start(now)
        if self._phase == "waiting":
            if now >= self._deadline:
                return self._start(now)
            return Decision((Wait(self._deadline - now),))
        if self._phase == "starting":
            if now - self._start_at >= policy.start_timeout_s:
                reason = (f"the scanner did not start within {policy.start_timeout_s:g} s "
                          "(bluetoothd not answering?); restarting it")
                return self._fail("failed", reason, now, stop=True)
            return Decision()
        # running
        if now - self._last_heard >= policy.silence_s:
            reason = f"no advert heard for {policy.silence_s:g} s: the scanner seems stuck; restarting it"
            return self._fail("silent", reason, now, stop=True)
        return Decision()

    def started(self, now: float, detail: str = "scanning") -> Decision:
        """The scanner is running; `detail` says how (e.g. "passive scan on hci0")."""
        if self._phase != "starting":
            return Decision()  # a late report from a start already given up on
        self._phase = "running"
        self._start_at = now
        self._last_heard = now
        return Decision((), self._report("scanning", detail))

    def advert(self, now: float) -> None:
        if now > self._last_heard:
            self._last_heard = now
        if self._phase == "running" and self._failures and now - self._start_at >= self.policy.healthy_s:
            self._failures = 0
            self._since_cycle = 0

    def fault(self, kind: str, reason: str, now: float) -> Decision:
        """The scanner failed to start, or stopped on its own. Stale faults (no scanner running) are ignored."""
        if self._phase not in ("starting", "running"):
            return Decision()
        return self._fail(kind, reason, now, stop=False)

    def delay_for(self, failures: int) -> float:
        """The backoff before the next start after `failures` failures in a row."""
        policy = self.policy
        exponent = min(failures - 1, 30)  # 2**30 × base is far past any cap; avoids float overflow
        delay = min(policy.cap_s, policy.base_s * 2.0**exponent)
        factor = 1.0 - policy.jitter + 2.0 * policy.jitter * self._rng.random()
        return min(policy.cap_s, delay * factor)

    def _start(self, now: float) -> Decision:
        actions: tuple[Action, ...] = (StartScan(),)
        if self._cycle_pending:
            self._cycle_pending = False
            actions = (PowerCycle(), *actions)
        self._phase = "starting"
        self._start_at = now
        return Decision(actions)

    def _fail(self, kind: str, reason: str, now: float, *, stop: bool) -> Decision:
        policy = self.policy
        self._failures += 1
        self._since_cycle += 1
        if self._since_cycle >= policy.power_cycle_after and kind != "no_adapter":
            self._cycle_pending = True
            self._since_cycle = 0
        delay = self.delay_for(self._failures)
        self._phase = "waiting"
        self._deadline = now + delay
        state: State = "failing" if self._failures >= policy.failing_after else "recovering"
        actions: tuple[Action, ...] = (Wait(delay),)
        if stop:
            actions = (StopScan(reason), *actions)
        return Decision(actions, self._report(state, reason))

    def _report(self, state: State, reason: str) -> ScanStatus | None:
        previous = self._status
        status = ScanStatus(state, reason, self._failures)
        self._status = status
        if previous is not None and (previous.state, previous.reason) == (state, reason):
            return None
        return status
