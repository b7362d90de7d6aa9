"""The virtual dongle: a TCP listener, a pty or an in-process link, with the ASH link, EZSP layer and emulated
stack behind it.

    async with VirtualNcp(air=air, ezsp_version=13, state_path="ncp.json") as ncp:
        ...  # hand ncp.url to bellows, zigpy-cli or Home Assistant; put devices on `air`

Where it listens: `tcp://HOST:PORT` for a host in another process, `pty` for a serial-port path, or
`inprocess` (`emulator.ncp.inprocess`) for bellows in this process. By default an NCP started on the virtual
clock listens in process — no byte of the link then waits on the wall clock, and bellows, the NCP and the
devices all run on virtual time — and one started on real time listens on a free local TCP port.

One host at a time, as on a serial port: a new TCP connection replaces the current one (a host that crashed or
reconnects must not be locked out by its own stale socket). A closed or half-closed connection resets the ASH
link and the listener keeps serving. The stack itself only reboots when the host sends RST, or when a fault
setting makes the NCP reset on its own.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import pty
import random
import tty
import urllib.parse
from pathlib import Path

from emulator import clock
from emulator.errors import InputError
from emulator.ncp import ash, inprocess
from emulator.ncp.ash_protocol import AshNcpLink, AshTiming
from emulator.ncp.counters import NcpCounters
from emulator.ncp.ezsp import EzspCodec
from emulator.ncp.faults import Faults, ResetKind
from emulator.ncp.host import HostConnection
from emulator.ncp.stack import EmberStack
from emulator.ncp.state import FRAME_COUNTER_TOKEN_STEP, NetworkState, load_state
from emulator.radio.air import Air

LOGGER = logging.getLogger(__name__)

PTY = "pty"
INPROCESS = "inprocess"
DEFAULT_TCP = "tcp://127.0.0.1:0"


class ListenError(InputError):
    """A listen address that is neither tcp://HOST:PORT nor a pty."""


def parse_listen(text: str) -> tuple[str, int] | str:
    """(host, port) for `tcp://HOST:PORT`; "pty", "inprocess" and an in-process URL as they are."""
    if text in (PTY, INPROCESS) or text.startswith(inprocess.SCHEME):
        return text
    parsed = urllib.parse.urlparse(text)
    try:
        port = parsed.port
    except ValueError:
        port = None
    if parsed.scheme != "tcp" or not parsed.hostname or port is None or parsed.path not in ("", "/"):
        raise ListenError(
            f"listen address {text!r}: expected tcp://HOST:PORT (PORT 0 picks a free port), {PTY} or {INPROCESS}"
        )
    return parsed.hostname, port


class _PtyTransport(asyncio.Transport):
    """The master side of a pty, as a transport the ASH link can write to."""

    def __init__(self, loop: asyncio.AbstractEventLoop, master: int, slave: int) -> None:
        super().__init__()
        self._loop = loop
        self._master = master
        self._slave = slave  # held open so the master never reads EIO while no host has the pty open
        self._pending = bytearray()
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        if self._pending:
            self._pending += data
            return
        try:
            written = os.write(self._master, data)
        except BlockingIOError:
            written = 0
        if written < len(data):
            self._pending += data[written:]
            self._loop.add_writer(self._master, self._drain)

    def _drain(self) -> None:
        try:
            written = os.write(self._master, self._pending)
        except BlockingIOError:
            return
        del self._pending[:written]
        if not self._pending:
            self._loop.remove_writer(self._master)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._master)
        self._loop.remove_writer(self._master)
        os.close(self._master)
        os.close(self._slave)


class _Refused(asyncio.Protocol):
    """A connection the NCP closes at once (another host has it)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class VirtualNcp:
    """A virtual Silicon Labs EZSP coordinator. `air` is the network it forms; pass your own to share it with
    emulated devices: once `await wait_for_network()` returns, `air.join(device)` reaches the host as
    trustCenterJoinHandler and zigpy interviews the device over the air."""

    def __init__(
        self,
        air: Air | None = None,
        *,
        ezsp_version: int = 13,
        state_path: str | os.PathLike[str] | None = None,
        faults: Faults | None = None,
        seed: int = 0,
        listen: str | None = None,
        timing: AshTiming | None = None,
        cbke_library: bool = True,
    ) -> None:
        self.codec = EzspCodec(ezsp_version)
        self._listen = parse_listen(listen) if listen is not None else None
        self.state_path = Path(state_path) if state_path is not None else None
        state = load_state(self.state_path, seed=seed) if self.state_path is not None else NetworkState.new(seed)
        if self.state_path is not None and self.state_path.exists():
            # Booting from "flash": jump the frame counters past anything sent before, and keep the jump.
            state.boot_frame_counters(FRAME_COUNTER_TOKEN_STEP)
            state.save(self.state_path)
        self.air = air if air is not None else Air(seed=seed)
        self.faults = faults if faults is not None else Faults()
        self.counters = NcpCounters()
        self.timing = timing
        self.stack = EmberStack(
            version=ezsp_version,
            air=self.air,
            state=state,
            faults=self.faults,
            rng=random.Random(f"ncp-stack-{seed}"),
            counters=self.counters,
            persist=self._persist,
        )
        if not cbke_library:  # a firmware built without the Smart Energy CBKE library (`cbke`)
            self.stack.remove_cbke_library()
        self._link_rng = random.Random(f"ncp-link-{seed}")
        self._host: HostConnection | None = None
        self._server: asyncio.Server | None = None
        self._pty: _PtyTransport | None = None
        self._inprocess_url: str | None = None
        self._reset_timer: asyncio.TimerHandle | None = None
        self._frames_answered = 0
        self._reset_fired = False
        self.url: str | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        listen = self._listen
        if listen is None:
            listen = INPROCESS if clock.is_virtual(loop) else parse_listen(DEFAULT_TCP)
        self.stack.attach()
        if listen == PTY:
            self.url = self._open_pty(loop)
        elif isinstance(listen, str):  # in process: a new port, or the one a stopped NCP served
            try:
                url = inprocess.listen(self._new_link, None if listen == INPROCESS else listen)
            except OSError as exc:
                self.stack.detach()
                raise ListenError(f"listen address {listen}: cannot listen ({exc.strerror})") from None
            self.url = self._inprocess_url = url
        else:
            assert isinstance(listen, tuple)
            host, port = listen
            try:
                self._server = await loop.create_server(self._new_link, host, port)
            except OSError as exc:
                self.stack.detach()
                raise ListenError(f"listen address tcp://{host}:{port}: cannot listen ({exc.strerror})") from None
            bound = self._server.sockets[0].getsockname()
            self.url = f"tcp://{host}:{bound[1]}"

    async def stop(self) -> None:
        if self._reset_timer is not None:
            self._reset_timer.cancel()
        if self._host is not None and self._host.link is not None:
            self._host.link.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._pty is not None:
            self._pty.close()
            self._pty = None
        if self._inprocess_url is not None:
            inprocess.unlisten(self._inprocess_url)
            self._inprocess_url = None
        self._host = None
        self.stack.sink = None
        self.stack.detach()
        self.stack.flush()

    async def __aenter__(self) -> VirtualNcp:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- properties and knobs ---------------------------------------------------------------------------------

    @property
    def ezsp_version(self) -> int:
        return self.codec.version

    @property
    def state(self) -> NetworkState:
        return self.stack.state

    @property
    def connected(self) -> bool:
        return self._host is not None and self._host.link is not None and self._host.link.connected

    async def wait_for_network(self) -> None:
        """Until the host has formed or resumed the network: devices that join earlier are turned away, as a
        coordinator without a network cannot admit them."""
        await self.stack.network_ready.wait()

    async def wait_for_joining(self) -> None:
        """Until the network is up and the host has opened joining (permitJoining), which is when a real device
        can join. Earlier, bellows may still be starting up (or about to reset the NCP) and would miss the join."""
        loop = asyncio.get_running_loop()
        stack = self.stack
        while True:
            await stack.joining_permitted.wait()
            if stack.network_up and stack.permit_until > loop.time():
                return
            stack.joining_permitted.clear()  # that window has closed: wait for the next one

    def fail_next_sends(self, count: int = 1) -> None:
        """The next `count` unicasts are reported DELIVERY_FAILED by messageSentHandler (and not sent)."""
        self.faults.fail_next_sends += count

    def inject_reset(self, kind: ResetKind = "rstack", code: int | None = None) -> None:
        """Reset on the NCP's own initiative: "rstack" reboots the chip and announces it (default code: watchdog);
        "error" puts ASH in the FAILED state (default code: too many ACK timeouts) until the host sends RST."""
        host = self._host
        if host is not None:
            host.negotiated = False
        if kind == "rstack":
            self.stack.reboot()
            if host is not None and host.link is not None:
                host.link.reset(ash.RESET_WATCHDOG if code is None else code)
        elif host is not None and host.link is not None:
            host.link.fail(ash.ERROR_EXCEEDED_MAXIMUM_ACK_TIMEOUT_COUNT if code is None else code)

    # -- internals ----------------------------------------------------------------------------------------------

    def _persist(self) -> None:
        if self.state_path is not None:
            self.stack.state.save(self.state_path)

    def _scheduled_reset(self) -> None:
        self._reset_timer = None
        if not self._reset_fired:
            self._reset_fired = True
            self.inject_reset(self.faults.reset_kind)

    def _frame_answered(self) -> None:
        self._frames_answered += 1
        limit = self.faults.reset_after_frames
        if limit is not None and not self._reset_fired and self._frames_answered >= limit:
            self._reset_fired = True
            self.inject_reset(self.faults.reset_kind)

    def _connection_closed(self, host: HostConnection) -> None:
        if self._host is host:
            self._host = None
            self.stack.sink = None

    def _new_connection(self) -> HostConnection:
        if self._host is not None and self._host.link is not None:
            LOGGER.info("a new host connection replaces the current one")
            old = self._host
            self._host = None
            old.link.close()  # type: ignore[union-attr]
        host = HostConnection(
            self.stack,
            self.codec,
            self.counters,
            on_answered=self._frame_answered,
            on_closed=self._connection_closed,
        )
        host.link = AshNcpLink(host, faults=self.faults, rng=self._link_rng, counters=self.counters, timing=self.timing)
        self._host = host
        self.stack.sink = host.callback
        if self.faults.reset_at is not None and not self._reset_fired and self._reset_timer is None:
            loop = asyncio.get_running_loop()
            self._reset_timer = loop.call_later(self.faults.reset_at, self._scheduled_reset)
        return host

    def _new_link(self) -> asyncio.Protocol:
        """A TCP connection: the host's ASH link, or — while another host is connected — a refusal, as a serial
        port already open elsewhere is busy (two hosts would fight over one NCP's resets and sequence numbers)."""
        if self.connected:
            LOGGER.warning("refused a second host connection: a host is already connected")
            return _Refused()
        link = self._new_connection().link
        assert link is not None
        return link

    def _open_pty(self, loop: asyncio.AbstractEventLoop) -> str:
        master, slave = pty.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._pty = _PtyTransport(loop, master, slave)
        link = self._new_link()
        link.connection_made(self._pty)
        loop.add_reader(master, self._pty_readable, master, link)
        return os.ttyname(slave)

    def _pty_readable(self, master: int, link: asyncio.Protocol) -> None:
        try:
            data = os.read(master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            return
        link.data_received(data)
