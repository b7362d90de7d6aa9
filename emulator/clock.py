"""One clock for every timer in the emulator: the asyncio event loop's.

Devices, the CHF server and the air schedule everything with asyncio (`sleep`, `call_later`, `wait_for`), so
they all read `loop.time()`. For in-process runs the loop can run on *virtual time*: when nothing is ready to
run and no I/O is pending, the loop jumps straight to its next timer instead of sleeping. A day of protocol
time (query intervals, WAIT_FOR_DATA, scheduled activation) then passes in the CPU time its events cost — and
zigpy's own timeouts move on the same clock. Runs that talk to a socket (bellows, the virtual NCP) use real time.

ZCL UTCTime (seconds since 2000-01-01 00:00 UTC) is derived from the same loop clock, anchored at the moment
the clock was created, so protocol time and the times written into frames agree.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

ZCL_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

T = TypeVar("T")


class _VirtualSelector(selectors.BaseSelector):
    """Polls real I/O without blocking; when there is none, advances the loop's virtual time instead."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop
        self._real = selectors.DefaultSelector()

    def register(self, fileobj, events, data=None):  # type: ignore[override]
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj):  # type: ignore[override]
        return self._real.unregister(fileobj)

    def modify(self, fileobj, events, data=None):  # type: ignore[override]
        return self._real.modify(fileobj, events, data)

    def select(self, timeout=None):  # type: ignore[override]
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            # No timer is due: only I/O (or another thread) can wake the loop, so wait for it for real.
            return self._real.select(None)
        self._loop.advance(timeout)
        return []

    def close(self) -> None:
        self._real.close()

    def get_map(self):  # type: ignore[override]
        return self._real.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose `time()` is virtual and jumps to the next timer whenever the loop would sleep."""

    def __init__(self) -> None:
        self._virtual_now = 0.0
        super().__init__(selector=_VirtualSelector(self))
        # asyncio runs a timer when it is due before now + resolution; at 1e-9 s that sum stops changing once
        # virtual time passes 2**24 s (194 days) and a timer due "now" would never run.
        self._clock_resolution = 1e-6

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        self._virtual_now += max(0.0, seconds)


def is_virtual(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    return isinstance(loop or asyncio.get_running_loop(), VirtualTimeLoop)


def run(main: Callable[[], Awaitable[T]], *, virtual: bool) -> T:
    """Run `main()` to completion on a fresh loop, virtual or real."""
    factory = VirtualTimeLoop if virtual else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())  # type: ignore[arg-type]


class Clock:
    """Maps the running loop's time onto UTC and ZCL UTCTime, and keeps the wall time a run took.

    Create it inside the running loop. `start_utc` pins the UTC at loop time "now" (tests use a fixed date so
    frames are reproducible); by default it is the wall-clock UTC.
    """

    def __init__(self, start_utc: datetime | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._origin = self._loop.time()
        self._start_utc = start_utc or datetime.now(UTC)
        self._wall_start = time.monotonic()

    @property
    def virtual(self) -> bool:
        return is_virtual(self._loop)

    def now(self) -> float:
        """Protocol seconds since the clock was created."""
        return self._loop.time() - self._origin

    def since_start(self, loop_time: float) -> float:
        """Protocol seconds for a loop timestamp (taps on the air report loop time)."""
        return loop_time - self._origin

    def utc(self) -> datetime:
        return self._start_utc + timedelta(seconds=self.now())

    def zcl_utc(self) -> int:
        """ZCL UTCTime: whole seconds since 2000-01-01 00:00:00 UTC."""
        return int((self.utc() - ZCL_EPOCH).total_seconds())

    def utc_from_zcl(self, zcl_time: int) -> datetime:
        return ZCL_EPOCH + timedelta(seconds=zcl_time)

    def loop_time_at(self, when: datetime) -> float:
        """The loop time at which UTC `when` falls (for scheduling activation at an absolute time)."""
        return self._origin + (when - self._start_utc).total_seconds()

    def wall_elapsed(self) -> float:
        return time.monotonic() - self._wall_start
