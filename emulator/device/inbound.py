"""What reaches a device's OTA client, and how the client waits for it.

The device hands the client every frame the client must judge as one of the message types below (a block the
fast decoder took, any other OTA frame, a ZDO response) or a `WAKE` that only makes it look again. The client
takes them from its `Inbox` in order, waiting up to a deadline; a sleepy device polls its parent while it waits
for an answer, since its parent holds frames for it until asked (SPEC.md §6.3).

The block loop waits once per block, so the waiting is lean: one future per wait, and one timer that is re-armed
lazily — a block answered in milliseconds leaves the timer in place for the next wait instead of cancelling it,
so the event loop's timer heap does not churn once per block.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from emulator.ota import frames


@dataclass(slots=True)
class BlockIn:
    """An Image Block Response SUCCESS as `ota.blocks.decode_block_success` unpacked it: one per block, the hot
    path, so not frozen (a frozen dataclass sets each field through `object.__setattr__`, eight times the cost)."""

    frame_control: int
    tsn: int
    manufacturer_code: int
    image_type: int
    file_version: int
    file_offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class OtaIn:
    """Any other OTA-cluster frame from the server, decoded (a response, a Default Response)."""

    frame: frames.Frame
    broadcast: bool


@dataclass(frozen=True, slots=True)
class ZdoIn:
    """A ZDO response (server discovery)."""

    cluster_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Wake:
    """Nothing to judge, but look again: a notify asked for a query, or the held image was activated."""


WAKE = Wake()

Inbound = BlockIn | OtaIn | ZdoIn | Wake


class Inbox:
    """The client's queue of `Inbound` messages, its waits on it, and a sleepy device's polling meanwhile."""

    __slots__ = (
        "_awake_until",
        "_deadline",
        "_items",
        "_loop",
        "_poll",
        "_poll_handle",
        "_poll_period",
        "_poll_until",
        "_sleepy",
        "_timer",
        "_waiter",
    )

    def __init__(self, poll: Callable[[], None], *, sleepy: bool, poll_period: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._items: deque[Inbound] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._poll = poll
        self._sleepy = sleepy
        self._poll_period = poll_period
        self._poll_handle: asyncio.TimerHandle | None = None
        self._poll_until = 0.0
        self._awake_until = 0.0

    def put(self, item: Inbound) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self, within: float, *, expect: bool = False) -> Inbound | None:
        """The next message, or None after `within` seconds. `expect` marks a wait for an answer: a sleepy
        device polls its parent meanwhile."""
        items = self._items
        if items:
            return items.popleft()
        if within <= 0:
            return None
        loop = self._loop
        waiter = loop.create_future()
        self._waiter = waiter
        self._deadline = loop.time() + within
        if within != math.inf and (self._timer is None or self._timer.when() > self._deadline):
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(self._deadline, self._on_timer)
        if expect and self._sleepy:
            self._poll_for(within)
        try:
            await waiter
        finally:
            self._waiter = None
            if expect:
                self._poll_until = max(loop.time(), self._awake_until)
        return items.popleft() if items else None

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done() or self._deadline == math.inf:
            return
        if self._loop.time() >= self._deadline:
            waiter.set_result(None)
        else:
            self._timer = self._loop.call_at(self._deadline, self._on_timer)

    async def pause(self, seconds: float) -> None:
        """Sleep, discarding whatever arrives meanwhile (it is stale by the time the pause ends)."""
        deadline = self._loop.time() + seconds
        while (left := deadline - self._loop.time()) > 0:
            await self.next(left)

    def stay_awake(self, seconds: float) -> None:
        """Poll for `seconds` whatever the client waits for (a sleepy device right after joining)."""
        self._awake_until = self._loop.time() + seconds
        if self._sleepy:
            self._poll_for(seconds)

    def _poll_for(self, seconds: float) -> None:
        self._poll_until = max(self._poll_until, self._loop.time() + seconds)
        if self._poll_handle is None:
            self._poll_handle = self._loop.call_later(self._poll_period, self._poll_tick)

    def _poll_tick(self) -> None:
        self._poll_handle = None
        if self._loop.time() > self._poll_until:
            return
        self._poll()
        self._poll_handle = self._loop.call_later(self._poll_period, self._poll_tick)

    def close(self) -> None:
        """Stop the timers (the device is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._poll_handle is not None:
            self._poll_handle.cancel()
            self._poll_handle = None
