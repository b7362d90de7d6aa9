"""One host on the serial link: the EZSP layer between the ASH link and the stack.

It negotiates the protocol version (legacy `version` first, extended frames after), answers each command, and
numbers callbacks. A callback reuses the sequence number of the last command answered (ZIGPY_BELLOWS.md §3.3):
bellows takes any frame whose sequence number it is waiting for as that command's response, so a callback must
never carry the number of the command in flight — and with one command in flight at a time, the last answered
number is always safe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import bellows.types as bt

from emulator.ncp.ash_protocol import AshNcpLink
from emulator.ncp.counters import NcpCounters
from emulator.ncp.ezsp import EzspCodec, EzspFrameError
from emulator.ncp.stack import EmberStack

LOGGER = logging.getLogger(__name__)


class HostConnection:
    """Implements `LinkHandler` for one connection; `link` is set once the transport exists."""

    def __init__(
        self,
        stack: EmberStack,
        codec: EzspCodec,
        counters: NcpCounters,
        *,
        on_answered: Callable[[], None],
        on_closed: Callable[[HostConnection], None],
    ) -> None:
        self.stack = stack
        self.codec = codec
        self.counters = counters
        self.link: AshNcpLink | None = None
        self.negotiated = False
        self._last_answered = 0
        self._on_answered = on_answered
        self._on_closed = on_closed

    # -- LinkHandler ----------------------------------------------------------------------------------------------

    def host_reset(self) -> None:
        self.negotiated = False
        self.stack.reboot()

    def link_closed(self) -> None:
        self._on_closed(self)

    def ezsp_received(self, frame: bytes) -> None:
        try:
            self._command(frame)
        except EzspFrameError as exc:
            LOGGER.debug("invalid EZSP command: %s", exc)
            self._invalid(exc.seq, exc.reason, legacy=exc.legacy)
        except Exception:
            # A command the emulation mishandles must not take the serial link down with it: the host gets an
            # answer, and the traceback goes to the log.
            LOGGER.exception("EZSP frame %s could not be handled", frame.hex())
            self._invalid(frame[0], bt.EzspStatus.ERROR_INVALID_CALL, legacy=False)
        self._on_answered()

    def _invalid(self, seq: int, reason: bt.EzspStatus, *, legacy: bool) -> None:
        self.counters.commands["invalidCommand"] += 1
        self._send_response(seq, self.codec.invalid_command(seq, reason, legacy=legacy))

    # -- stack sink -----------------------------------------------------------------------------------------------

    def callback(self, name: str, values: dict[str, Any]) -> None:
        if self.link is None or not self.negotiated:
            self.counters.air["callbacks_before_version"] += 1
            return
        self.counters.callbacks[name] += 1
        self.link.send_ezsp(self.codec.encode(self._last_answered, name, values, callback=True), callback=True)

    # -- commands -------------------------------------------------------------------------------------------------

    def _command(self, frame: bytes) -> None:
        command = self.codec.parse(frame)
        seq, legacy = command.seq, command.legacy
        if command.name == "version":
            (desired,) = self.codec.decode_params(command).values()
            # An NCP answers any `version` with its own protocol version; commands are accepted only once the host
            # has asked for exactly that version.
            self.negotiated = desired == self.codec.version
            self._answer(seq, "version", "version", self.stack.version_info(), legacy=legacy)
            return
        status = bt.EzspStatus
        if not self.negotiated:
            raise EzspFrameError(
                f"EZSP frame 0x{command.frame_id:04X} before version: expected `version` first",
                seq=seq,
                reason=status.ERROR_VERSION_NOT_SET,
                legacy=legacy,
            )
        if legacy or command.name is None:
            raise EzspFrameError(
                f"EZSP frame ID 0x{command.frame_id:04X}: not a command of EZSP v{self.codec.version}",
                seq=seq,
                reason=status.ERROR_INVALID_FRAME_ID,
                legacy=legacy,
            )
        args = self.codec.decode_params(command)
        result = self.stack.handle(command.name, args)
        if result is None:
            raise EzspFrameError(
                f"EZSP {command.name}: not implemented by this NCP",
                seq=seq,
                reason=status.ERROR_INVALID_FRAME_ID,
                legacy=False,
            )
        response_name, values = result
        self._answer(seq, command.name, response_name, values)

    def _answer(self, seq: int, command: str, response: str, values: dict[str, Any], *, legacy: bool = False) -> None:
        self.counters.commands[command] += 1
        self._send_response(seq, self.codec.encode(seq, response, values, legacy=legacy))

    def _send_response(self, seq: int, frame: bytes) -> None:
        self._last_answered = seq
        if self.link is not None:
            self.link.send_ezsp(frame)
