"""The NCP's side of an ASH link (UG101 §3), as an asyncio protocol over any byte transport.

Reliability rules implemented here, from the NCP's point of view:
* host DATA in sequence is ACKed at once and handed up; a retransmitted duplicate is re-ACKed and dropped; a frame
  out of sequence or damaged gets one NAK and puts the link in the reject condition until a good frame arrives;
* NCP DATA goes out in a window of up to `window` unacknowledged frames; an ACK (or a piggybacked ackNum) frees
  them, a NAK or an ACK timeout resends all of them with reTx set (go-back-N); the timeout adapts to the
  measured round trip within [t_rx_ack_min, t_rx_ack_max] and doubles on each miss; `ack_timeouts` misses in a
  row send ERROR and enter the FAILED state, which only an RST leaves;
* not-ready: the host's nRdy flag holds callbacks (never responses) back for `remote_not_ready` seconds or until
  an ACK with nRdy clear; the NCP sets nRdy itself while more than `not_ready_backlog` frames wait to go out;
* RST resets the link and the NCP behind it, answered by RSTACK. Fault settings drop, corrupt and delay frames.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from emulator.ncp import ash
from emulator.ncp.counters import NcpCounters
from emulator.ncp.faults import Faults

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class AshTiming:
    """UG101 Table 3 values; `window` is the NCP's transmit window (TX_K)."""

    t_rx_ack_init: float = 1.6
    t_rx_ack_min: float = 0.4
    t_rx_ack_max: float = 3.2
    ack_timeouts: int = 4
    window: int = 3
    remote_not_ready: float = 1.0
    not_ready_backlog: int = 16


class LinkHandler(Protocol):
    """What sits above the link: the EZSP layer and, behind it, the stack."""

    def host_reset(self) -> None:
        """The host sent RST: the NCP reboots before the RSTACK goes out."""

    def ezsp_received(self, frame: bytes) -> None:
        """An EZSP frame arrived in sequence."""

    def link_closed(self) -> None:
        """The byte transport went away."""


@dataclass
class _Sent:
    frm_num: int
    payload: bytes
    sent_at: float
    retransmitted: bool = False


@dataclass
class _Queued:
    payload: bytes
    callback: bool


_KINDS: dict[type, str] = {
    ash.Data: "DATA",
    ash.Ack: "ACK",
    ash.Nak: "NAK",
    ash.Rst: "RST",
    ash.RstAck: "RSTACK",
    ash.Error: "ERROR",
}
_FLAG = bytes([ash.FLAG])


def _kind(frame: ash.Frame) -> str:
    return _KINDS[type(frame)]


class AshNcpLink(asyncio.Protocol):
    # The link's state, (re)set by `_reset_link`.
    _rx_expected: int
    _tx_next: int
    _rejecting: bool
    _failed: bool
    _host_not_ready: bool
    _timeouts: int
    _t_rx_ack: float
    _deadline: float

    def __init__(
        self,
        handler: LinkHandler,
        *,
        faults: Faults,
        rng: random.Random,
        counters: NcpCounters,
        timing: AshTiming | None = None,
    ) -> None:
        self.handler = handler
        self.faults = faults
        self.timing = timing or AshTiming()
        self._rng = rng
        self._counters = counters
        self._transport: asyncio.BaseTransport | None = None
        self._deframer = ash.Deframer()
        self._queue: deque[_Queued] = deque()
        self._unacked: deque[_Sent] = deque()
        self._delayed: deque[tuple[float, bytes]] = deque()
        self._delayed_handle: asyncio.TimerHandle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._resume: asyncio.TimerHandle | None = None
        self._reset_link()

    # -- asyncio.Protocol ---------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        for item in self._deframer.feed(data):
            self._frame_received(item)

    def eof_received(self) -> bool:
        # A half-closed host is a gone host: a serial peer cannot keep listening after it stopped talking.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._cancel_timers()
        self.handler.link_closed()

    # -- used by the EZSP layer ---------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    @property
    def failed(self) -> bool:
        return self._failed

    def send_ezsp(self, frame: bytes, *, callback: bool = False) -> None:
        """Queue an EZSP frame for the host; callbacks wait while the host says it is not ready."""
        if self._failed:
            self._counters.ash_tx["discarded_while_failed"] += 1  # nothing leaves the NCP until the host's RST
            return
        self._queue.append(_Queued(frame, callback))
        self._pump()

    def reset(self, code: int = ash.RESET_WATCHDOG) -> None:
        """An unsolicited reboot: drop everything in flight and announce it with RSTACK."""
        self._reset_link()
        self._write(ash.RstAck(reset_code=code))

    def fail(self, code: int = ash.ERROR_EXCEEDED_MAXIMUM_ACK_TIMEOUT_COUNT) -> None:
        """Enter the FAILED state: send ERROR and ignore the host until it sends RST."""
        self._reset_link()
        self._failed = True
        self._write(ash.Error(code=code))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # -- receive ------------------------------------------------------------------------------------------------

    def _frame_received(self, item: bytes | ash.FramingError) -> None:
        faults = self.faults
        if isinstance(item, ash.FramingError):
            self._counters.ash_rx["framing_error"] += 1
            if item.data_like and not self._failed:
                self._reject()
            return
        exempt = faults.spare_resets and item[0] == 0xC0
        if not exempt and faults.drop_from_host and self._rng.random() < faults.drop_from_host:
            self._counters.ash_rx["dropped"] += 1
            return
        if not exempt and faults.corrupt_from_host and self._rng.random() < faults.corrupt_from_host:
            self._counters.ash_rx["corrupted"] += 1
            item = self._corrupt(item)
        try:
            frame = ash.decode(item)
        except ash.AshError as exc:
            self._counters.ash_rx["bad_crc" if isinstance(exc, ash.BadCrc) else "bad_frame"] += 1
            LOGGER.debug("rejecting frame from host: %s", exc)
            if exc.data_like and not self._failed:
                self._reject()
            return
        self._counters.ash_rx[_kind(frame)] += 1
        if isinstance(frame, ash.Rst):
            self._host_reset()
        elif self._failed:
            self._counters.ash_rx["ignored_while_failed"] += 1
        elif isinstance(frame, ash.Data):
            self._data_received(frame)
        elif isinstance(frame, ash.Ack | ash.Nak):
            self._host_ready(not frame.not_ready)
            self._acknowledged(frame.ack_num)
            if isinstance(frame, ash.Nak) and self._unacked and self._unacked[0].frm_num == frame.ack_num:
                self._retransmit_all()
        # RSTACK and ERROR only ever travel from the NCP to the host; receiving one means nothing here.

    def _host_reset(self) -> None:
        self._reset_link()
        self.handler.host_reset()
        self._write(ash.RstAck(reset_code=ash.RESET_SOFTWARE))

    def _data_received(self, frame: ash.Data) -> None:
        self._acknowledged(frame.ack_num)
        if frame.frm_num == self._rx_expected:
            self._rx_expected = (frame.frm_num + 1) & 7
            self._rejecting = False
            self._send_ack()
            self.handler.ezsp_received(frame.payload)
        elif frame.re_tx:
            self._counters.ash_rx["duplicate"] += 1
            self._send_ack()
        else:
            self._counters.ash_rx["out_of_sequence"] += 1
            self._reject()

    def _reject(self) -> None:
        """One NAK per reject condition (UG101 §3.4): further bad frames are dropped silently."""
        if not self._rejecting:
            self._rejecting = True
            self._write(ash.Nak(ack_num=self._rx_expected, not_ready=self._not_ready()))

    def _acknowledged(self, ack_num: int) -> None:
        if not self._unacked:
            return
        count = (ack_num - self._unacked[0].frm_num) & 7
        if count > len(self._unacked):
            self._counters.ash_rx["bad_ack_num"] += 1
            return
        if count == 0:
            return
        now = asyncio.get_running_loop().time()
        for _ in range(count):
            sent = self._unacked.popleft()
            if not sent.retransmitted:  # Karn: a resent frame's round trip says nothing
                self._set_t_rx_ack(7 / 8 * self._t_rx_ack + (now - sent.sent_at) / 2)
        self._timeouts = 0
        if self._unacked:
            self._arm_retransmit_timer()
        self._pump()

    def _host_ready(self, ready: bool) -> None:
        if ready and not self._host_not_ready and self._resume is None:
            return  # the usual ACK: the host was ready and still is
        loop = asyncio.get_running_loop()
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        if ready:
            self._host_not_ready = False
        else:
            self._host_not_ready = True
            self._resume = loop.call_later(self.timing.remote_not_ready, self._host_ready, True)
        self._pump()

    # -- transmit -----------------------------------------------------------------------------------------------

    def _pump(self) -> None:
        if self._failed or not self.connected:
            return
        while self._queue and len(self._unacked) < self.timing.window:
            entry = self._next_entry()
            if entry is None:
                break
            sent = _Sent(self._tx_next, entry.payload, asyncio.get_running_loop().time())
            self._tx_next = (self._tx_next + 1) & 7
            if not self._unacked:
                self._arm_retransmit_timer()
            self._unacked.append(sent)
            self._write_raw("DATA", ash.data_raw(sent.frm_num, self._rx_expected, sent.payload))

    def _next_entry(self) -> _Queued | None:
        if not self._host_not_ready:
            return self._queue.popleft()
        for index, entry in enumerate(self._queue):
            if not entry.callback:
                del self._queue[index]
                return entry
        return None

    def _retransmit_all(self) -> None:
        now = asyncio.get_running_loop().time()
        for sent in self._unacked:
            sent.retransmitted = True
            sent.sent_at = now
            self._counters.ash_tx["retransmitted"] += 1
            self._write_raw("DATA", ash.data_raw(sent.frm_num, self._rx_expected, sent.payload, re_tx=True))
        self._arm_retransmit_timer()

    def _ack_timer(self) -> None:
        """The retransmit timer rang: a timeout if the oldest unacknowledged frame's deadline has passed, else
        (an ACK moved the deadline on since the timer was set) the timer is set again for the new deadline."""
        self._timer = None
        if not self._unacked:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._deadline:
            self._timer = loop.call_at(self._deadline, self._ack_timer)
            return
        self._ack_timeout()

    def _ack_timeout(self) -> None:
        self._timeouts += 1
        if self._timeouts >= self.timing.ack_timeouts:
            LOGGER.debug("no ACK after %d attempts: entering the FAILED state", self._timeouts)
            self.fail(ash.ERROR_EXCEEDED_MAXIMUM_ACK_TIMEOUT_COUNT)
            return
        self._set_t_rx_ack(2 * self._t_rx_ack)
        self._retransmit_all()

    def _set_t_rx_ack(self, value: float) -> None:
        self._t_rx_ack = min(max(value, self.timing.t_rx_ack_min), self.timing.t_rx_ack_max)

    def _not_ready(self) -> bool:
        return len(self._queue) > self.timing.not_ready_backlog

    def _send_ack(self) -> None:
        self._write_raw("ACK", ash.ACK_RAW[self._rx_expected | (self._not_ready() << 3)])

    def _write(self, frame: ash.Frame) -> None:
        self._write_raw(_kind(frame), ash.to_raw(frame))

    def _write_raw(self, kind: str, raw: bytes) -> None:
        """Count a frame of `kind` (its unstuffed bytes `raw`) and send it, unless a fault drops, damages or
        delays it; RSTACK and ERROR are spared when the faults say so."""
        self._counters.ash_tx[kind] += 1
        if not self.connected:
            return
        faults = self.faults
        exempt = faults.spare_resets and kind in ("RSTACK", "ERROR")
        if not exempt and faults.drop_to_host and self._rng.random() < faults.drop_to_host:
            self._counters.ash_tx["dropped"] += 1
            return
        if not exempt and faults.corrupt_to_host and self._rng.random() < faults.corrupt_to_host:
            self._counters.ash_tx["corrupted"] += 1
            raw = self._corrupt(raw)
        wire = ash.stuff(raw) + _FLAG
        if faults.delay_to_host > 0:
            loop = asyncio.get_running_loop()
            self._delayed.append((loop.time() + faults.delay_to_host, wire))
            if self._delayed_handle is None:
                self._delayed_handle = loop.call_at(self._delayed[0][0], self._flush_delayed)
        else:
            self._transport.write(wire)  # type: ignore[union-attr]

    def _flush_delayed(self) -> None:
        """Delayed frames leave in the order they were written, as on a slow serial line."""
        loop = asyncio.get_running_loop()
        self._delayed_handle = None
        while self._delayed and self._delayed[0][0] <= loop.time():
            _, wire = self._delayed.popleft()
            if self.connected:
                self._transport.write(wire)  # type: ignore[union-attr]
        if self._delayed:
            self._delayed_handle = loop.call_at(self._delayed[0][0], self._flush_delayed)

    def _corrupt(self, raw: bytes) -> bytes:
        """Change one byte: CRC-CCITT catches every error confined to 16 bits, so the frame is always bad."""
        index = self._rng.randrange(len(raw))
        damaged = bytearray(raw)
        damaged[index] ^= self._rng.randrange(1, 256)
        return bytes(damaged)

    # -- state --------------------------------------------------------------------------------------------------

    def _reset_link(self) -> None:
        self._cancel_timers()
        self._queue.clear()
        self._unacked.clear()
        self._rx_expected = 0
        self._tx_next = 0
        self._rejecting = False
        self._failed = False
        self._host_not_ready = False
        self._timeouts = 0
        self._t_rx_ack = self.timing.t_rx_ack_init
        self._deadline = 0.0

    def _arm_retransmit_timer(self) -> None:
        """The oldest unacknowledged frame times out t_rx_ack from now. The timer already set stays set (it rings
        early and sets itself again): one timer per ACK timeout period, not one per frame."""
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self._t_rx_ack
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._ack_timer)

    def _cancel_retransmit_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _cancel_timers(self) -> None:
        self._cancel_retransmit_timer()
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
