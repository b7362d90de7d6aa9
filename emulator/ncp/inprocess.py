"""The virtual NCP's serial link inside the host's own process: `virtual-ncp://NAME`.

bellows opens a port by URL through zigpy and serialx, as it opens `/dev/ttyUSB0` or `tcp://HOST:PORT`; this
module registers one more URL scheme with serialx (its public `register_uri_handler`), so bellows, zigpy and
serialx run unchanged while the bytes go from bellows' ASH protocol straight to the NCP's ASH link and back on
the event loop, with no socket between them. Nothing on the way waits on the wall clock, so bellows and the NCP
can run on the virtual clock (`emulator.clock`) with the devices: a transfer of hours of protocol time costs
only the CPU of its frames.

A write is delivered with `call_soon`, never inside the writer's own call (a serial line delivers bytes later,
and bellows does not expect its peer's answer while it is still writing); writes made in one loop iteration
reach the reader as one `data_received`, as a UART's receive buffer would hand them over. Closing either end
tells both protocols, as a closed socket does.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
from collections.abc import Callable
from typing import Any

import serialx
from serialx.common import BaseSerial, BaseSerialTransport, ModemPins, PortSettingsUpdate

SCHEME = "virtual-ncp://"

# The NCPs listening in this process, by name: each gives the protocol of a new connection's NCP side.
LinkFactory = Callable[[], asyncio.Protocol]
_listening: dict[str, LinkFactory] = {}
_names = itertools.count(1)


def listen(factory: LinkFactory, url: str | None = None) -> str:
    """Serve new connections with `factory()` at `url` (a restarted NCP back on its old port), or at a new
    one; returns the URL a host opens. OSError when another NCP in this process serves `url`."""
    name = url.removeprefix(SCHEME) if url is not None else str(next(_names))
    if name in _listening:
        raise OSError(errno.EADDRINUSE, f"{SCHEME}{name} is already served in this process")
    _listening[name] = factory
    return SCHEME + name


def unlisten(url: str) -> None:
    _listening.pop(url.removeprefix(SCHEME), None)


class _Pipe:
    """One direction of the link: bytes written at one end reach `receiver` on the next loop iteration."""

    def __init__(self, loop: asyncio.AbstractEventLoop, receiver: asyncio.Protocol) -> None:
        self._loop = loop
        self.receiver = receiver
        self._pending = bytearray()
        self.open = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.open:
            return  # written after the line was closed: lost, as on a closed socket
        if not self._pending:
            self._loop.call_soon(self._deliver)
        self._pending += data

    def _deliver(self) -> None:
        data = bytes(self._pending)
        self._pending.clear()
        if data:
            self.receiver.data_received(data)


class _NcpEnd(asyncio.Transport):
    """The NCP's end of the link: what `AshNcpLink` writes to."""

    def __init__(self, link: InProcessSerialTransport) -> None:
        super().__init__()
        self._link = link

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._link.to_host.write(data)

    def is_closing(self) -> bool:
        return self._link.closed

    def close(self) -> None:
        self._link.hang_up()

    def abort(self) -> None:
        self._link.hang_up()

    def get_write_buffer_size(self) -> int:
        return 0


class InProcessSerial(BaseSerial):
    """serialx wants a blocking class for every scheme; an in-process NCP exists only inside an event loop, so
    opening one this way fails, and nothing else is ever reached."""

    def _open(self) -> None:
        raise OSError(errno.ENOTSUP, f"{SCHEME} ports open only through asyncio (serialx.create_serial_connection)")

    def _unreachable(self, *args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOTSUP, f"{SCHEME} ports are not open synchronously")

    _close = _flush = _get_modem_pins = _set_modem_pins = _readinto = _write = _unreachable
    _reconfigure_port = _reset_read_buffer = _reset_write_buffer = _unreachable
    num_unread_bytes = num_unwritten_bytes = _unreachable

    @property
    def is_open(self) -> bool:
        return False


class InProcessSerialTransport(BaseSerialTransport):
    """The host's end, as serialx hands it to bellows' protocol."""

    transport_name = "virtual-ncp"

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol) -> None:
        super().__init__(loop, protocol)
        self.closed = False
        self.to_host = _Pipe(loop, protocol)
        self.to_ncp: _Pipe | None = None

    async def _connect(self, *, path: str | None, **kwargs: Any) -> None:
        factory = _listening.get((path or "").removeprefix(SCHEME))
        if factory is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"no virtual NCP at {path} in this process")
        ncp = factory()
        self.to_ncp = _Pipe(self._loop, ncp)
        ncp.connection_made(_NcpEnd(self))
        self._call_protocol_connection_made()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.to_ncp is not None:
            self.to_ncp.write(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self._mark_user_closed()
        self.hang_up()

    def abort(self) -> None:
        self.close()

    def hang_up(self) -> None:
        """Either end closed: both protocols hear connection_lost (after what was written before it)."""
        if self.closed:
            return
        self.closed = self._closing = True
        self.to_host.open = False
        if self.to_ncp is not None:
            self.to_ncp.open = False
            self._loop.call_soon(self.to_ncp.receiver.connection_lost, None)
        self._loop.call_soon(self._call_protocol_connection_lost, None)

    def get_write_buffer_size(self) -> int:
        return 0

    async def _flush(self) -> None:
        return None

    async def _get_modem_pins(self) -> ModemPins:
        return ModemPins()

    async def _set_modem_pins(self, modem_pins: ModemPins) -> None:
        return None

    async def _reconfigure_port(self, update: PortSettingsUpdate) -> None:
        return None


serialx.register_uri_handler(
    scheme=SCHEME,
    unique_scheme=SCHEME,
    sync_cls=InProcessSerial,
    async_transport_cls=InProcessSerialTransport,
)
