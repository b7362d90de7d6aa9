"""One clock for every timer in the emulator: the asyncio event loop's.

Devices, the CHF server and the air schedule everything with asyncio (`sleep`, `call_later`, `wait_for`), so
they all read `loop.time()`. For in-process runs the loop can run on *virtual time*: when nothing is ready to
run and no I/O is pending, the loop jumps straight to its next timer instead of sleeping. A day of protocol
time (query intervals, WAIT_FOR_DATA, scheduled activation) then passes in the CPU time its events cost — and
zigpy's own timeouts move on the same clock. bellows runs on it too when its serial link is the virtual NCP's
in-process one (`emulator.ncp.inprocess`); runs that talk to a real port or a socket use real time.

Work handed to a thread (`run_in_executor`: serialx looks up a port's URL handler there, asyncio resolves host
names there) is instantaneous in virtual time: while any is outstanding the loop waits for it for real instead of
jumping to its next timer, so a connect timeout cannot expire while the lookup it guards is still running. A
thread of a library's own (aiosqlite's, behind zigpy's device database) is invisible to the loop: virtual-time
runs keep zigpy's database off.

Virtual time is kept in whole microsecond ticks, and every timer's deadline is rounded up to a tick: a
deadline later than "now", however slightly, is at least one tick ahead, so a callback that re-arms itself
for "the rest of the interval" always moves time forward. (With float deadlines a remainder of 1e-13 s
could add nothing to the clock, and the loop ran the same timer forever at the same instant.) Should a run
still stop moving time while callbacks keep coming, the loop raises `Stalled` with the culprit, instead of
spinning.

Timers due more than `FAR_TIMER_SECONDS` ahead wait in a queue of their own and join asyncio's timer heap only
when time comes within that distance of them. asyncio compares its timers with a Python method, and every frame on
the virtual air is a timer: with a thousand devices' timeouts, waits and query intervals in the same heap, each
frame paid for the depth of a heap of thousands. The far queue is ordered by (deadline, sequence) tuples, which
compare in C.

ZCL UTCTime (seconds since 2000-01-01 00:00 UTC) is derived from the same loop clock, anchored at the moment
the clock was created, so protocol time and the times written into frames agree.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import math
import selectors
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from emulator.errors import RunFailure

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

ZCL_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

T = TypeVar("T")

TICKS_PER_SECOND = 1_000_000
# A deadline within this fraction of a tick above a tick is that tick (absorbs float error of now + delay).
TICK_TOLERANCE = 0.01
# Loop iterations at one virtual instant with nothing but timers and callbacks to run before the run is
# declared stalled. A HAN's deepest legitimate chain of same-instant callbacks is a few dozen.
STALL_ITERATIONS = 200_000
# While a thread works for the loop, how long one real wait for I/O lasts before the loop looks again (the thread's
# result wakes it at once; this only bounds a wait whose future was cancelled while its thread still runs).
THREAD_POLL = 0.05
# Timers due further ahead than this (s) wait in the loop's far queue until time comes this close to them.
FAR_TIMER_SECONDS = 1.0


class Stalled(RunFailure, RuntimeError):
    """The virtual clock stopped: callbacks keep running at one instant and time never moves on."""


class _FarTimer(asyncio.TimerHandle):
    """A timer made while due further ahead than FAR_TIMER_SECONDS; `waiting` while it is in the far queue."""

    __slots__ = ("waiting",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.waiting = True


class _VirtualSelector(selectors.BaseSelector):
    """Polls real I/O without blocking; when there is none, advances the loop's virtual time instead."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop
        self._real = selectors.DefaultSelector()

    def register(self, fileobj: FileDescriptorLike, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: FileDescriptorLike, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready:
            self._loop.progressed()
            return ready
        if timeout == 0:
            self._loop.same_instant()
            return ready
        far = self._loop.until_far_timer()
        if far is not None and (timeout is None or far < timeout):
            timeout = far
        if timeout is None or self._loop.threads_working:
            # No timer is due, or a thread is working for the loop: only I/O or that thread can move the run on,
            # so wait for it for real (a thread's result arrives through the loop's self-pipe).
            self._loop.progressed()
            return self._real.select(None if timeout is None else THREAD_POLL)
        self._loop.advance(timeout)
        return []

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Mapping[FileDescriptorLike, selectors.SelectorKey]:
        return self._real.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose `time()` is virtual and jumps to the next timer whenever the loop would sleep.

    Time is an integer count of ticks; `time()` and every timer deadline are ticks / TICKS_PER_SECOND, so
    comparing a deadline with the clock is exact.
    """

    def __init__(self, stall_iterations: int = STALL_ITERATIONS) -> None:
        self._ticks = 0
        self._idle_iterations = 0
        self._threads_working = 0
        self._stall_iterations = stall_iterations
        self._far: list[tuple[float, int, _FarTimer]] = []
        self._far_order = itertools.count()
        self._far_cancelled = 0
        super().__init__(selector=_VirtualSelector(self))
        # asyncio runs a timer when it is due before now + resolution. Half a tick: a timer on the current
        # tick runs, one on the next tick waits for the clock to get there.
        self._clock_resolution = 0.5 / TICKS_PER_SECOND

    def time(self) -> float:
        return self._ticks / TICKS_PER_SECOND

    def call_later(  # type: ignore[override]
        self, delay: float, callback: Callable[..., object], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.TimerHandle:
        # now + a delay below the float resolution of now is now: a positive delay must still move time.
        when = self.time() + delay
        if delay > 0:
            when = max(when, (self._ticks + 1) / TICKS_PER_SECOND)
        return self.call_at(when, callback, *args, context=context)

    def call_at(  # type: ignore[override]
        self, when: float, callback: Callable[..., object], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.TimerHandle:
        ticks = self._ticks
        now = ticks / TICKS_PER_SECOND
        # `when` rounded up to a tick; a deadline after now is at least one tick after now. One already passed is
        # kept as it is (it runs at once, in deadline order), as is an infinite one. Inline: this runs per frame.
        if not now < when < math.inf:
            return super().call_at(when, callback, *args, context=context)
        when = max(math.ceil(when * TICKS_PER_SECOND - TICK_TOLERANCE), ticks + 1) / TICKS_PER_SECOND
        if when - now <= FAR_TIMER_SECONDS:
            return super().call_at(when, callback, *args, context=context)
        if self.is_closed():
            raise RuntimeError("Event loop is closed")
        handle = _FarTimer(when, callback, args, self, context)
        heapq.heappush(self._far, (when, next(self._far_order), handle))
        return handle

    def until_far_timer(self) -> float | None:
        """Seconds until the first timer of the far queue is due, or None when it is empty."""
        return self._far[0][0] - self.time() if self._far else None

    def _bring_near(self) -> None:
        """Move the far timers now within FAR_TIMER_SECONDS into asyncio's heap (cancelled ones are dropped)."""
        horizon = self.time() + FAR_TIMER_SECONDS
        far = self._far
        scheduled = self._asyncio_timers()
        while far and far[0][0] <= horizon:
            handle = heapq.heappop(far)[2]
            handle.waiting = False
            if handle.cancelled():
                self._far_cancelled -= 1
                continue
            heapq.heappush(scheduled, handle)
            handle._scheduled = True  # type: ignore[attr-defined]  # as asyncio's call_at marks it

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        """asyncio counts cancelled timers in its heap to purge them; those still in the far queue are counted
        here, and purged once they are half of it."""
        if not (isinstance(handle, _FarTimer) and handle.waiting):
            super()._timer_handle_cancelled(handle)  # type: ignore[misc]
            return
        self._far_cancelled += 1
        if self._far_cancelled > len(self._far) // 2 and len(self._far) > 100:
            for _, _, dropped in self._far:
                dropped.waiting = not dropped.cancelled() and dropped is not handle  # `handle` is being cancelled
            self._far = [entry for entry in self._far if entry[2].waiting]
            heapq.heapify(self._far)
            self._far_cancelled = 0

    def _asyncio_timers(self) -> list[asyncio.TimerHandle]:
        timers: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]  # asyncio's own heap
        return timers

    def close(self) -> None:
        self._far.clear()
        super().close()

    def run_in_executor(  # type: ignore[override]  # the same call, without typeshed's TypeVarTuple
        self, executor: Any, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        self._threads_working += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, _future: asyncio.Future[Any]) -> None:
        self._threads_working -= 1

    @property
    def threads_working(self) -> bool:
        """Work handed to a thread is outstanding: virtual time waits for it."""
        return self._threads_working > 0

    def advance(self, seconds: float) -> None:
        step = round(max(0.0, seconds) * TICKS_PER_SECOND)
        if step:
            self._ticks += step
            self._idle_iterations = 0
            if self._far:
                self._bring_near()
        else:
            self.same_instant()

    def progressed(self) -> None:
        """I/O arrived or the loop waits for it: that is progress even though virtual time stands still."""
        self._idle_iterations = 0

    def same_instant(self) -> None:
        """One more loop iteration without time moving on; past STALL_ITERATIONS the run has stalled."""
        self._idle_iterations += 1
        if self._idle_iterations > self._stall_iterations:
            self._idle_iterations = 0
            raise Stalled(self._stall_message())

    def _stall_message(self) -> str:
        # asyncio's own queues: the timer heap and the callbacks ready to run.
        scheduled: list[asyncio.TimerHandle] = getattr(self, "_scheduled", [])
        ready: Any = getattr(self, "_ready", ())
        pending = [h for h in scheduled if not h.cancelled()] + [h for _, _, h in self._far if not h.cancelled()]
        culprit = min(pending, key=lambda h: h.when(), default=None) or (ready[0] if ready else None)
        return (
            f"virtual time stopped at {self.time():.6f} s: {self._stall_iterations} loop iterations ran without it "
            f"moving on (next callback: {culprit!r})"
        )


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
