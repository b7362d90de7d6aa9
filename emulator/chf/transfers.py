"""The downloads a CHF is serving: when each one has failed for silence, how many are in progress, and how long
a client that cannot be admitted yet is told to wait.

The OTA protocol is stateless (every Image Block Request names the image and the offset); a CHF keeps per client
only what GB reporting and rate limiting need (SPEC.md §8.6, S-10, S-18). None of it may cost more per block as
the HAN grows, because a block round trip is the unit of everything the emulator does:

* **Timeouts.** A transfer fails when its client has not asked for `transfer_timeout` seconds. One timer watches
  them all: transfers sit in the order of their last request (a request moves its transfer to the end), so the
  oldest is the next to time out. A client told to wait is *parked* until the time it was told to come back,
  plus the timeout: it is not late before then (a heap of those due times, one entry per wait).
* **Admission.** With `max_concurrent_downloads`, a client not yet served a block waits while that many
  downloads are in progress: the set of downloading transfers is counted, not every transfer scanned.
* **How long to wait.** A fixed retry time (Silicon Labs' LONG_DELAY, 60 s) makes every waiting client ask
  once a minute however long the queue, so the requests a download costs grow with the number of devices: a
  thousand devices made thirty thousand WAIT_FOR_DATA round trips. A client is told instead to come back
  when its turn is likely, from its place in the queue (clients told to wait before it and not yet served) and
  how long a download has been taking: `max(60 s, typical download x place / limit)`, at most an hour. The
  first clients to wait, and any before a download has completed, get the 60 s as before.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import zigpy.types as t

from emulator.chf.store import HeldImage
from emulator.clock import Clock

# WAIT_FOR_DATA given to clients beyond the concurrent-download limit (Silicon Labs LONG_DELAY): the least wait.
BUSY_WAIT_SECONDS = 60
# The longest wait given: an hour, the longest a client honours (SPEC.md §10).
LONGEST_BUSY_WAIT_SECONDS = 3600
# Weight of the latest download in the typical download time (an exponential moving average).
TYPICAL_WEIGHT = 0.2

Key = tuple[t.EUI64, tuple[int, int, int]]


@dataclass(eq=False)
class Transfer:
    """One client's download of one image, as far as the server sees it (one object per download: compared and
    hashed by identity)."""

    ieee: t.EUI64
    held: HeldImage
    last_request: float
    blocks: int = 0
    told_to_wait: bool = False
    done: bool = False
    #: When the first block went out (the download's start, for the typical download time).
    first_block_at: float | None = None
    #: While parked (told to wait): the time it has failed if it has not asked again by then.
    parked_until: float | None = None
    #: Its place in the queue of clients told to wait for a download slot (None until it is told to).
    ticket: int | None = None

    @property
    def key(self) -> Key:
        return (self.ieee, self.held.key)


class TransferTable:
    """The transfers of one OTA server. `timeout()` and `limit()` read the server's current profile (a bench
    may change it between checks); `timed_out(transfer, silent_for)` is called for each transfer that fails,
    with the seconds since its client last asked."""

    def __init__(
        self,
        clock: Clock,
        timeout: Callable[[], float],
        limit: Callable[[], int],
        timed_out: Callable[[Transfer, float], None],
    ) -> None:
        self.clock = clock
        self._timeout = timeout
        self._limit = limit
        self._timed_out = timed_out
        self.by_key: dict[Key, Transfer] = {}
        self._downloading: set[Transfer] = set()
        self._by_last_request: OrderedDict[Transfer, None] = OrderedDict()
        self._parked: list[tuple[float, int, Transfer]] = []
        self._sequence = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = math.inf
        self._tickets = itertools.count()
        self._tickets_served = 0
        self.typical_download: float | None = None

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- a request -----------------------------------------------------------------------------------------

    def track(self, ieee: t.EUI64, held: HeldImage) -> tuple[Transfer, bool]:
        """The client's transfer of `held` (a new one after a finished one), and whether it is new."""
        transfer = self.by_key.get((ieee, held.key))
        if transfer is not None and not transfer.done:
            self.touch(transfer)
            return transfer, False
        transfer = Transfer(ieee, held, self.clock.now())
        self.by_key[transfer.key] = transfer
        self._by_last_request[transfer] = None
        if self._timer is None:
            self._arm()
        return transfer, True

    def touch(self, transfer: Transfer) -> None:
        """The client asked (or a page block went out) now: its timeout starts again."""
        transfer.last_request = self.clock.now()
        if transfer.done:
            return
        if transfer.parked_until is not None:
            transfer.parked_until = None  # back from waiting: its stale heap entry is skipped
            self._by_last_request[transfer] = None
        else:
            self._by_last_request.move_to_end(transfer)

    def served(self, transfer: Transfer) -> None:
        """A block went out: the transfer is a download in progress."""
        transfer.blocks += 1
        if transfer.done:
            return
        if transfer.first_block_at is None:
            transfer.first_block_at = self.clock.now()
            self._leave_queue(transfer)
        self._downloading.add(transfer)

    def end(self, transfer: Transfer, *, completed: bool = False) -> None:
        """The transfer is over; `completed` (the client ended it with SUCCESS) makes its time count towards
        the typical download."""
        if completed and transfer.first_block_at is not None and not transfer.done:
            took = self.clock.now() - transfer.first_block_at
            typical = self.typical_download
            self.typical_download = took if typical is None else typical + TYPICAL_WEIGHT * (took - typical)
        transfer.done = True
        self._downloading.discard(transfer)
        self._by_last_request.pop(transfer, None)
        transfer.parked_until = None
        self._leave_queue(transfer)

    # -- admission -----------------------------------------------------------------------------------------

    def busy(self) -> int:
        """Downloads in progress: served a block, not done, asked within the transfer timeout. Counted over the
        downloading set (about `limit` entries), which forgets transfers no longer current (a bench clears
        `by_key` between checks)."""
        now = self.clock.now()
        timeout = self._timeout()
        stale = [
            other
            for other in self._downloading
            if other.done or now - other.last_request >= timeout or self.by_key.get(other.key) is not other
        ]
        self._downloading.difference_update(stale)
        return len(self._downloading)

    def busy_wait(self, transfer: Transfer) -> int:
        """Seconds a client that cannot be admitted is told to wait, from its place in the queue."""
        if transfer.ticket is None:
            transfer.ticket = next(self._tickets)
        place = max(1, transfer.ticket - self._tickets_served + 1)
        limit = max(1, self._limit())
        typical = self.typical_download or 0.0
        return int(min(LONGEST_BUSY_WAIT_SECONDS, max(BUSY_WAIT_SECONDS, math.ceil(typical * place / limit))))

    def park(self, transfer: Transfer, seconds: float) -> None:
        """The client was told to come back in `seconds`: it has not failed before then plus the timeout."""
        if transfer.done:
            return
        until = self.clock.now() + seconds + self._timeout()
        transfer.parked_until = until
        self._by_last_request.pop(transfer, None)
        heapq.heappush(self._parked, (until, next(self._sequence), transfer))
        if until < self._timer_due:
            self._arm()

    def _leave_queue(self, transfer: Transfer) -> None:
        if transfer.ticket is not None:
            transfer.ticket = None
            self._tickets_served += 1

    # -- timeouts ------------------------------------------------------------------------------------------

    def _next_due(self) -> float | None:
        oldest = next(iter(self._by_last_request), None)
        due = None if oldest is None else oldest.last_request + self._timeout()
        while self._parked and self._parked[0][2].parked_until != self._parked[0][0]:
            heapq.heappop(self._parked)  # back from waiting since, or over
        if self._parked and (due is None or self._parked[0][0] < due):
            due = self._parked[0][0]
        return due

    def _arm(self) -> None:
        """One timer, due when the next transfer times out."""
        if self._timer is not None:
            self._timer.cancel()
        due = self._next_due()
        self._timer_due = math.inf if due is None else due
        if due is None:
            self._timer = None
            return
        self._timer = asyncio.get_running_loop().call_later(max(due - self.clock.now(), 0.0), self._check)

    def _check(self) -> None:
        # Due when `due - now <= 0`, computed as `_arm` computes the delay: with `now - last < timeout` the two
        # could disagree by a rounding error, and a timer re-armed for "0 s left" at the same instant would run
        # forever.
        self._timer, self._timer_due = None, math.inf
        timeout = self._timeout()
        while (oldest := next(iter(self._by_last_request), None)) is not None:
            if oldest.last_request + timeout - self.clock.now() > 0:
                break
            self.end(oldest)
            self._timed_out(oldest, timeout)
        while self._parked and self._parked[0][0] - self.clock.now() <= 0:
            until, _, parked = heapq.heappop(self._parked)
            if parked.parked_until == until:
                self.end(parked)
                self._timed_out(parked, self.clock.now() - parked.last_request)
        self._arm()
