"""The virtual NCP at the byte level, driven by a raw client that speaks ASH itself: resets, the version
handshake, sequence numbers, retransmission, NAKs, not-ready, ERROR, bad input, and connection handling.

The client reaches the NCP over its in-process serial link on virtual time, so the ASH timers and the waits for
what does not come (QUIET) cost no wall clock; what only a socket has (a half-close, a second connection) is
tested over TCP on real time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import bellows.types as bt
import bellows.zigbee.application
import pytest
import serialx
import zigpy.types as zt

from emulator.ncp import ash, inprocess
from emulator.ncp.ash_protocol import AshTiming
from emulator.ncp.faults import Faults
from emulator.ncp.server import VirtualNcp
from emulator.ncp.state import NetworkState
from emulator.radio.air import Air

H = bytes.fromhex
RECV_TIMEOUT = 5.0
QUIET = 0.3  # long enough for a frame the NCP has already decided to send to arrive (over loopback, on real time)
FAST = AshTiming(t_rx_ack_init=0.05, t_rx_ack_min=0.05, t_rx_ack_max=0.2)


class RawHost:
    """A host that writes and reads ASH frames itself, one byte-exact frame at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.deframer = ash.Deframer()
        self.pending: list[bytes] = []
        self.tx = 0  # next host frame number
        self.rx = 0  # next NCP frame number expected
        self.not_ready = False  # the nRdy flag of the ACKs this host sends

    @classmethod
    async def connect(cls, url: str) -> RawHost:
        """Over TCP (`tcp://HOST:PORT`) or the in-process link (`virtual-ncp://NAME`)."""
        if not url.startswith(inprocess.SCHEME):
            host, port = url.removeprefix("tcp://").split(":")
            return cls(*await asyncio.open_connection(host, int(port)))
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await serialx.create_serial_connection(loop, lambda: protocol, url, baudrate=115200)
        return cls(reader, asyncio.StreamWriter(transport, protocol, reader, loop))

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, frame: ash.Frame) -> None:
        await self.write(ash.encode(frame))

    async def recv_raw(self, within: float = RECV_TIMEOUT) -> bytes:
        async with asyncio.timeout(within):
            while not self.pending:
                data = await self.reader.read(4096)
                if not data:
                    raise EOFError("NCP closed the connection")
                self.pending += [item for item in self.deframer.feed(data) if isinstance(item, bytes)]
        return self.pending.pop(0)

    async def recv(self, within: float = RECV_TIMEOUT) -> ash.Frame:
        return ash.decode(await self.recv_raw(within))

    async def quiet(self) -> bool:
        """True if nothing arrives for a while."""
        try:
            await self.recv_raw(QUIET)
        except TimeoutError:
            return True
        return False

    async def reset(self) -> ash.RstAck:
        await self.write(b"\x1a" * 32 + ash.encode(ash.Rst()))
        frame = await self.recv()
        assert isinstance(frame, ash.RstAck)
        self.tx = self.rx = 0
        return frame

    async def data(self, ezsp: bytes) -> None:
        await self.send(ash.Data(frm_num=self.tx, ack_num=self.rx, payload=ezsp))
        self.tx = (self.tx + 1) & 7

    async def expect_ack(self) -> None:
        assert await self.recv() == ash.Ack(ack_num=self.tx)

    async def expect_data(self) -> ash.Data:
        """The next NCP DATA frame, acknowledged."""
        frame = await self.recv()
        assert isinstance(frame, ash.Data), frame
        assert frame.frm_num == self.rx and not frame.re_tx
        self.rx = (self.rx + 1) & 7
        await self.send(ash.Ack(ack_num=self.rx, not_ready=self.not_ready))
        return frame

    async def command(self, ezsp: bytes) -> bytes:
        await self.data(ezsp)
        await self.expect_ack()
        return (await self.expect_data()).payload

    async def handshake(self, version: int = 13) -> None:
        assert (await self.command(H("00 00 00 04")))[:4] == bytes([0x00, 0x80, 0x00, version])
        assert (await self.command(H("01 00 01 00 00") + bytes([version])))[:6] == bytes(
            [0x01, 0x80, 0x01, 0, 0, version]
        )

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


class Joiner:
    """The smallest thing that can join the air."""

    def __init__(self, nwk: int, ieee: str) -> None:
        self.nwk = nwk
        self.ieee = zt.EUI64.convert(ieee)
        self.rx_on_when_idle = True

    def receive(self, packet: zt.ZigbeePacket) -> None:
        pass


def formed_state(path: Path) -> Path:
    state = NetworkState.new(seed=7)
    state.formed, state.channel, state.pan_id = True, 20, 0x1A2B
    state.extended_pan_id = "0011223344556677"
    state.network_key = "00112233445566778899aabbccddeeff"
    state.channel_mask = 1 << 20
    state.security_bitmask = 0x1F0C | 0x0084  # zha_security() bits incl. hashed TCLK
    state.save(path)
    return path


@pytest.mark.virtual_time
async def test_reset_then_version_handshake_bytes() -> None:
    async with VirtualNcp() as ncp:
        host = await RawHost.connect(ncp.url)
        await host.write(b"\x1a" * 32 + H("c0 38 bc 7e"))
        assert await host.recv_raw() == H("c1 02 0b 0a 52")  # RSTACK: version 2, software reset
        await host.write(H("00 42 21 a8 50 ed 2c 7e"))  # DATA 0: legacy version(4)
        assert await host.recv() == ash.Ack(ack_num=1)
        data = await host.recv()
        assert ash.encode(data) == H("01 42 a1 a8 59 28 45 c6 a5 bb 7e")  # version rsp: v13, stack 7.4.5.0
        await host.write(H("81 60 59 7e"))
        host.tx, host.rx = 1, 1
        rsp = await host.command(H("01 00 01 00 00 0d"))
        assert rsp == H("01 80 01 00 00 0d 02 50 74")
        assert ncp.counters.commands["version"] == 2
        await host.close()


@pytest.mark.virtual_time
async def test_commands_before_version_and_unknown_frames_get_invalid_command() -> None:
    async with VirtualNcp(ezsp_version=13) as ncp:
        host = await RawHost.connect(ncp.url)
        await host.reset()
        assert await host.command(H("05 00 01 18 00")) == H("05 80 01 58 00 30")  # VERSION_NOT_SET
        await host.handshake()
        assert await host.command(H("06 00 01 77 77")) == H("06 80 01 58 00 31")  # INVALID_FRAME_ID
        assert await host.command(H("07 00 01 34 00 00")) == H("07 80 01 58 00 33")  # truncated sendUnicast
        assert await host.command(H("08 00 01 18 00")) == H("08 80 01 18 00 00")  # networkState: NO_NETWORK
        await host.close()
        await assert_bellows_starts(ncp)


@pytest.mark.virtual_time
async def test_bad_crc_gets_one_nak_and_the_link_recovers(tmp_path: Path) -> None:
    state = formed_state(tmp_path / "ncp.json")
    async with VirtualNcp(state_path=state) as ncp:
        host = await RawHost.connect(ncp.url)
        await host.reset()
        await host.handshake()
        good = ash.to_raw(ash.Data(frm_num=host.tx, ack_num=host.rx, payload=H("02 00 01 18 00")))
        bad = good[:-1] + bytes([good[-1] ^ 0x55])
        await host.write(ash.stuff(bad) + b"\x7e")
        assert await host.recv_raw() == ash.to_raw(ash.Nak(ack_num=2))  # NAK names the frame expected
        await host.write(ash.stuff(bad) + b"\x7e")  # still in the reject condition: no second NAK
        assert await host.quiet()
        assert await host.command(H("02 00 01 18 00")) == H("02 80 01 18 00 00")
        assert ncp.counters.ash_rx["bad_crc"] == 2
        assert ncp.counters.ash_tx["NAK"] == 1
        await host.close()
        await assert_bellows_starts(ncp)


@pytest.mark.virtual_time
async def test_garbage_on_the_line_is_ignored_or_rejected_then_commands_work() -> None:
    async with VirtualNcp() as ncp:
        host = await RawHost.connect(ncp.url)
        await host.write(bytes(range(0x20, 0x7E)) + b"\x7e")  # printable noise, then a Flag: a bad "DATA" frame
        assert await host.recv() == ash.Nak(ack_num=0)
        await host.write(b"\xff\xfe\xfd" * 200)  # no Flag at all: nothing to answer
        await host.reset()
        await host.handshake()
        assert ncp.counters.ash_rx["bad_crc"] + ncp.counters.ash_rx["framing_error"] >= 1
        await host.close()
        await assert_bellows_starts(ncp)


@pytest.mark.virtual_time
async def test_delayed_frames_keep_their_order(tmp_path: Path) -> None:
    state = formed_state(tmp_path / "ncp.json")
    async with VirtualNcp(state_path=state, faults=Faults(delay_to_host=0.005)) as ncp:
        host = await RawHost.connect(ncp.url)
        await host.reset()
        await host.data(H("00 00 00 04"))
        assert await host.recv() == ash.Ack(ack_num=1)  # ACK first, then the response, however late
        assert (await host.expect_data()).payload[:4] == H("00 80 00 0d")
        await host.close()
        await assert_bellows_starts(ncp)


@pytest.mark.virtual_time
async def test_out_of_sequence_is_rejected_and_a_retransmission_is_acked_not_executed() -> None:
    async with VirtualNcp() as ncp:
        host = await RawHost.connect(ncp.url)
        await host.reset()
        await host.handshake()
        await host.send(ash.Data(frm_num=5, ack_num=host.rx, payload=H("02 00 01 18 00")))
        assert await host.recv() == ash.Nak(ack_num=2)
        await host.command(H("02 00 01 18 00"))
        answered = ncp.counters.commands["networkState"]
        await host.send(ash.Data(frm_num=2, ack_num=host.rx, payload=H("02 00 01 18 00"), re_tx=True))
        assert await host.recv() == ash.Ack(ack_num=3)  # duplicate: ACKed again
        assert await host.quiet()  # ... and not answered twice
        assert ncp.counters.commands["networkState"] == answered
        await host.close()


@pytest.mark.virtual_time
async def test_ncp_retransmits_unacknowledged_data_then_fails_with_error() -> None:
    async with VirtualNcp(timing=FAST) as ncp:
        host = await RawHost.connect(ncp.url)
        await host.reset()
        await host.data(H("00 00 00 04"))
        await host.expect_ack()
        first = await host.recv()
        assert isinstance(first, ash.Data) and not first.re_tx
        for _ in range(FAST.ack_timeouts - 1):  # never acknowledged: resent with reTx, same frame number
            again = await host.recv()
            assert again == ash.Data(frm_num=first.frm_num, ack_num=first.ack_num, payload=first.payload, re_tx=True)
        assert await host.recv_raw() == ash.to_raw(ash.Error(code=0x51))
        await host.data(H("01 00 00 04"))  # FAILED: DATA is ignored until RST
        assert await host.quiet()
        assert (await host.reset()).reset_code == ash.RESET_SOFTWARE
        await host.handshake()
        await host.close()


@pytest.mark.virtual_time
async def test_nak_from_the_host_gets_an_immediate_retransmission() -> None:
    async with VirtualNcp() as ncp:
        host = await RawHost.connect(ncp.url)
        await host.reset()
        await host.data(H("00 00 00 04"))
        await host.expect_ack()
        first = await host.recv()
        await host.send(ash.Nak(ack_num=0))
        assert await host.recv() == ash.Data(frm_num=0, ack_num=1, payload=first.payload, re_tx=True)
        await host.close()
        assert ncp.counters.ash_tx["retransmitted"] == 1


@pytest.mark.virtual_time
async def test_callbacks_carry_the_last_answered_sequence_and_wait_while_the_host_is_not_ready(tmp_path: Path) -> None:
    air = Air(seed=1)
    async with VirtualNcp(air, state_path=formed_state(tmp_path / "ncp.json")) as ncp:
        host = await RawHost.connect(ncp.url)
        await host.reset()
        await host.handshake()
        assert await host.command(H("2c 00 01 17 00 00 00")) == H("2c 80 01 17 00 00")  # networkInit: OK
        assert (await host.expect_data()).payload == H("2c 90 01 19 00 90")  # stackStatusHandler(NETWORK_UP)

        host.not_ready = True
        await host.send(ash.Ack(ack_num=host.rx, not_ready=True))
        assert await host.command(H("2d 00 01 18 00")) == H("2d 80 01 18 00 02")  # responses still flow
        air.join(Joiner(0x4321, "00:0d:6f:00:00:00:00:01"))
        assert await host.quiet()  # the join callback is held
        host.not_ready = False
        await host.send(ash.Ack(ack_num=host.rx, not_ready=False))
        callback = (await host.expect_data()).payload
        assert callback == H("2d 90 01 24 00  2143 0100000000 6f0d00  01 00 0000")
        await host.close()


@pytest.mark.realtime
async def test_half_closed_connection_resets_the_link_and_the_next_host_is_served() -> None:
    async with VirtualNcp(listen="tcp://127.0.0.1:0") as ncp:
        first = await RawHost.connect(ncp.url)
        await first.reset()
        await first.handshake()
        first.writer.write_eof()
        with pytest.raises(EOFError):
            await first.recv_raw()
        second = await RawHost.connect(ncp.url)
        await second.data(H("00 00 00 04"))  # fresh link: frame 0 is in sequence without a reset
        await second.expect_ack()
        assert (await second.expect_data()).payload[:4] == H("00 80 00 0d")
        await second.close()
        await first.close()
        await assert_bellows_starts(ncp)


@pytest.mark.realtime
async def test_a_second_host_is_refused_while_one_is_connected() -> None:
    """Like a serial port open in another program: the second host's connection is closed at once and the first
    keeps its link."""
    async with VirtualNcp(listen="tcp://127.0.0.1:0") as ncp:
        first = await RawHost.connect(ncp.url)
        await first.reset()
        await first.handshake()
        second = await RawHost.connect(ncp.url)
        with pytest.raises(EOFError):
            await second.recv_raw()
        assert ncp.connected
        assert await first.command(H("02 00 01 18 00")) == H("02 80 01 18 00 00")
        await second.close()
        await first.close()


@pytest.mark.virtual_time
@pytest.mark.parametrize(("kind", "frame"), [("rstack", ash.RstAck(reset_code=0x03)), ("error", ash.Error(code=0x51))])
async def test_unsolicited_reset_after_n_frames(kind: str, frame: ash.Frame) -> None:
    async with VirtualNcp(faults=Faults(reset_after_frames=3, reset_kind=kind)) as ncp:  # type: ignore[arg-type]
        host = await RawHost.connect(ncp.url)
        await host.reset()
        await host.handshake()  # frames 1 and 2
        assert await host.command(H("02 00 01 18 00")) == H("02 80 01 18 00 00")  # frame 3, answered ...
        assert await host.recv() == frame  # ... then the NCP resets on its own
        await host.close()


@pytest.mark.virtual_time
async def test_unsolicited_reset_at_a_time_after_the_host_connects() -> None:
    async with VirtualNcp(faults=Faults(reset_at=0.05)) as ncp:
        host = await RawHost.connect(ncp.url)
        await host.reset()
        await host.handshake()
        assert await host.recv() == ash.RstAck(reset_code=ash.RESET_WATCHDOG)
        await host.close()


async def assert_bellows_starts(ncp: VirtualNcp) -> None:
    config = {
        "device": {"path": ncp.url},
        "use_thread": False,
        "database_path": None,
        "backup_enabled": False,
        "topology_scan_enabled": False,
        "ota": {"providers": [], "broadcast_enabled": False},
        "network": {"channel": 20},
    }
    app = bellows.zigbee.application.ControllerApplication(config)
    async with asyncio.timeout(20):
        await app.startup(auto_form=True)
    try:
        assert app.state.network_info.channel == ncp.state.channel
        assert app.state.node_info.ieee == ncp.stack.ieee
        status, security = await app._ezsp.getCurrentSecurityState()
        assert bt.sl_Status.from_ember_status(status) == bt.sl_Status.OK
        assert security.trustCenterLongAddress == ncp.stack.ieee
    finally:
        await app.shutdown()
