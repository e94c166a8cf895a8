"""The station's scan loop: runs `hardware.ble.scan` under `hardware.scan_supervisor.ScanSupervisor` until told to
stop, whatever the radio does. It runs on the station's main asyncio loop (bleak's D-Bus connection belongs to the
loop it was made on; no asyncio in a side thread)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable

from hardware import ble
from hardware.advert import Advert
from hardware.scan_supervisor import (
    Decision,
    PowerCycle,
    RetryPolicy,
    ScanStatus,
    ScanSupervisor,
    StartScan,
    StopScan,
    Wait,
)

__all__ = ["ScanLoop", "ScanLoopStats"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ScanLoopStats:
    adverts: int = 0
    callback_errors: int = 0
    """Exceptions raised by on_advert (counted, logged rate-limited; scanning goes on)."""
    starts: int = 0
    faults: int = 0
    power_cycles: int = 0
    power_cycle_failures: int = 0


class ScanLoop:
    """Scan `adapter` in `mode` ("passive" | "active") for ever, until `run`'s stop event is set.

    `on_advert(advert)` gets every advertisement and should only enqueue. `on_status(state, reason, attempts)` is
    called when the scanner's state ("scanning" | "recovering" | "failing") or reason changes. `backend`: a bleak
    backend class (None: BlueZ; `hardware.ble.fake_backend(radio)` without an adapter). `power_cycle(adapter)`:
    defaults to `hardware.ble.power_cycle`. `clock`: monotonic seconds for the supervisor; `wall_clock`: the
    adverts' `at`. `silence_s` overrides `policy.silence_s`."""

    def __init__(
        self,
        adapter: str,
        mode: str,
        on_advert: Callable[[Advert], None],
        on_status: Callable[[str, str, int], None],
        *,
        backend: type | None = None,
        power_cycle: Callable[[str], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        policy: RetryPolicy | None = None,
        silence_s: float | None = None,
        tick_s: float = 1.0,
        stop_grace_s: float = 5.0,
    ) -> None:
        if mode not in ble.SCAN_MODES:
            raise ValueError(f"scan mode must be one of {ble.SCAN_MODES}, not {mode!r}")
        if not tick_s > 0:
            raise ValueError(f"tick_s must be positive, not {tick_s!r}")
        policy = policy or RetryPolicy()
        if silence_s is not None:
            policy = dataclasses.replace(policy, silence_s=silence_s)
        self.adapter = adapter
        self.mode = mode
        self.stats = ScanLoopStats()
        self._on_advert = on_advert
        self._on_status = on_status
        self._backend = backend
        self._power_cycle = power_cycle or ble.power_cycle
        self._clock = clock
        self._wall_clock = wall_clock
        self._tick_s = tick_s
        self._stop_grace_s = stop_grace_s
        self._supervisor = ScanSupervisor(policy, rng=rng)
        self._errors = ble.RateLimitedLog(f"on_advert on {adapter}")
        self._task: asyncio.Task[None] | None = None
        self._attempt_stop: asyncio.Event | None = None
        self._started: str | None = None
        self._wake: asyncio.Event | None = None
        self._pause_s = tick_s
        self._status: ScanStatus | None = None

    @property
    def status(self) -> ScanStatus | None:
        """The last status reported through on_status."""
        return self._status

    async def run(self, stop: asyncio.Event) -> None:
        """Returns when `stop` is set (or an advert source with an end, such as a replay, has ended); never on a
        fault."""
        wake = self._wake = asyncio.Event()

        async def wake_on_stop() -> None:
            await stop.wait()
            wake.set()

        stop_watch = asyncio.create_task(wake_on_stop())
        try:
            while not stop.is_set():
                if await self._step():
                    log.info("the advert source on %s has ended", self.adapter)
                    return
                await self._pause(wake)
        finally:
            stop_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop_watch
            await self._stop_scan()

    async def _pause(self, wake: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._pause_s):
                await wake.wait()
        wake.clear()

    async def _step(self) -> bool:
        """One round: what happened since the last, then the supervisor's tick. True when the source ended."""
        self._pause_s = self._tick_s
        supervisor = self._supervisor
        self._take_started()
        task = self._task
        if task is not None and task.done():
            self._task = None
            fault = _outcome(task, self.adapter)
            if fault is None:
                return True
            self.stats.faults += 1
            # Staff hear of it through on_status when the state or reason changes; each retry is only debug.
            log.debug("scanner on %s: %s: %s", self.adapter, fault.kind, fault.reason)
            await self._apply(supervisor.fault(fault.kind, fault.reason, self._clock()))
        await self._apply(supervisor.tick(self._clock()))
        return False

    async def _apply(self, decision: Decision) -> None:
        if decision.status is not None:
            self._report(decision.status)
        for action in decision.actions:
            if isinstance(action, StartScan):
                self._start_scan()
            elif isinstance(action, StopScan):
                log.warning("stopping the scanner on %s: %s", self.adapter, action.reason)
                await self._stop_scan()
            elif isinstance(action, PowerCycle):
                await self._cycle()
            elif isinstance(action, Wait):
                self._pause_s = max(0.0, min(self._pause_s, action.seconds))

    def _report(self, status: ScanStatus) -> None:
        self._status = status
        try:
            self._on_status(status.state, status.reason, status.attempts)
        except Exception:
            log.exception("on_status failed (ignored)")

    def _start_scan(self) -> None:
        assert self._task is None, "a scanner is already running"
        self.stats.starts += 1
        self._attempt_stop = asyncio.Event()
        self._started = None
        task = asyncio.create_task(ble.scan(
            self.adapter, self.mode, self._advert, self._attempt_stop, backend=self._backend,
            on_started=self._on_started, wall_clock=self._wall_clock))
        task.add_done_callback(self._wake_up)
        self._task = task

    def _wake_up(self, _task: object = None) -> None:
        if self._wake is not None:
            self._wake.set()

    def _on_started(self, detail: str) -> None:
        self._started = detail
        self._wake_up()

    def _take_started(self) -> None:
        # Also called from the first advert, which may come before the loop's next round: the supervisor must know
        # the scanner runs before it hears of adverts.
        if self._started is None:
            return
        detail, self._started = self._started, None
        decision = self._supervisor.started(self._clock(), detail)
        assert not decision.actions, "a start never asks for actions"
        if decision.status is not None:
            self._report(decision.status)

    def _advert(self, advert: Advert) -> None:
        self._take_started()
        self.stats.adverts += 1
        self._supervisor.advert(self._clock())
        try:
            self._on_advert(advert)
        except Exception as exc:
            self.stats.callback_errors += 1
            self._errors(exc)

    async def _stop_scan(self) -> None:
        task, self._task = self._task, None
        self._started = None
        if task is None:
            return
        if self._attempt_stop is not None:
            self._attempt_stop.set()
        done, _ = await asyncio.wait({task}, timeout=self._stop_grace_s)
        if not done:
            # A start hung in a D-Bus call never looks at the stop event.
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            log.debug("the stopped scanner on %s ended with: %s", self.adapter, task.exception())

    async def _cycle(self) -> None:
        log.warning("power-cycling Bluetooth adapter %s after %d failures in a row", self.adapter,
                    self._supervisor.failures)
        self.stats.power_cycles += 1
        try:
            await self._power_cycle(self.adapter)
        except Exception as exc:
            self.stats.power_cycle_failures += 1
            log.warning("%s", ble.classify(exc, self.adapter).reason)


def _outcome(task: asyncio.Task[None], adapter: str) -> ble.ScanFault | None:
    """The fault a finished scan task ended with; None when it ended because its source did."""
    if task.cancelled():
        return ble.ScanFault("other", "the scanner task was cancelled")
    exc = task.exception()
    if exc is None:
        return None
    return ble.classify(exc, adapter)

