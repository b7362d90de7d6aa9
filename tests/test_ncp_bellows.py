"""bellows' own ControllerApplication against the virtual NCP: forming, resuming, joining, interviews, unicasts
on the air, a lossy serial link, NCP resets and delivery failures. Nothing in bellows is patched. bellows opens
the NCP's in-process port and everything runs on virtual time, bellows' ASH timers too; a pty and a TCP port on
real time show the same app on the transports a separate NCP process offers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bellows.zigbee.application
import pytest
import zigpy.exceptions
import zigpy.types as zt
import zigpy.zdo.types as zdo_t
from zigpy.zcl import foundation

from emulator.ncp.faults import Faults
from emulator.ncp.server import ListenError, VirtualNcp
from emulator.ncp.state import NetworkState
from emulator.radio.air import Air

CHANNEL = 15
STARTUP_TIMEOUT = 30
NODE_IEEE = "00:0d:6f:ff:fe:00:12:34"


class LightNode:
    """A mains-powered ZHA on/off light on the air, answering the interview for real: ZDO descriptors and
    Basic attribute reads. It records every frame it receives."""

    def __init__(self, air: Air, nwk: int = 0x1234, ieee: str = NODE_IEEE) -> None:
        self.air = air
        self.nwk = nwk
        self.ieee = zt.EUI64.convert(ieee)
        self.rx_on_when_idle = True
        self.router = True
        self.received: list[zt.ZigbeePacket] = []
        self._arrived = asyncio.Event()

    async def until(self, probe: Callable[[], Any], within: float = 5.0) -> Any:
        """The first truthy value of `probe`, checked after each frame this node receives (the air takes a few
        milliseconds per frame)."""
        async with asyncio.timeout(within):
            while not (value := probe()):
                self._arrived.clear()
                await self._arrived.wait()
        return value

    def toggles(self) -> list[bytes]:
        """The on/off cluster frames received, in order."""
        return [packet.data.serialize() for packet in self.received if packet.cluster_id == 0x0006]

    def receive(self, packet: zt.ZigbeePacket) -> None:
        self.received.append(packet)
        self._arrived.set()
        data = packet.data.serialize()
        if packet.profile_id == 0:
            self._zdo(packet, data)
        elif packet.cluster_id == 0x0000:
            self._basic(packet, data)

    def _reply(self, request: zt.ZigbeePacket, profile: int, cluster: int, data: bytes) -> None:
        packet = zt.ZigbeePacket(
            src=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=self.nwk),
            src_ep=request.dst_ep,
            dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=request.src.address),
            dst_ep=request.src_ep,
            tsn=request.tsn,
            profile_id=profile,
            cluster_id=cluster,
            data=zt.SerializableBytes(data),
            lqi=200,
            rssi=-50,
        )
        asyncio.get_running_loop().call_soon(self.air.send, packet)

    def _zdo(self, request: zt.ZigbeePacket, data: bytes) -> None:
        tsn, cmd, status = data[0], zdo_t.ZDOCmd(request.cluster_id), zdo_t.Status.SUCCESS
        if cmd == zdo_t.ZDOCmd.Node_Desc_req:
            desc = zdo_t.NodeDescriptor(1, 0, 0, 0, 0, 8, 0x8E, 0x1234, 82, 82, 0x2C00, 82, 0)
            values = [status, self.nwk, desc]
        elif cmd == zdo_t.ZDOCmd.Active_EP_req:
            values = [status, self.nwk, [1]]
        elif cmd == zdo_t.ZDOCmd.Simple_Desc_req:
            desc = zdo_t.SizePrefixedSimpleDescriptor(1, 0x0104, 0x0100, 0, [0x0000, 0x0006], [])
            values = [status, self.nwk, desc]
        else:
            return
        rsp = zdo_t.ZDOCmd(request.cluster_id | 0x8000)
        self._reply(request, 0, rsp, bytes([tsn]) + zt.serialize(values, zdo_t.CLUSTERS[rsp][1]))

    def _basic(self, request: zt.ZigbeePacket, data: bytes) -> None:
        hdr, rest = foundation.ZCLHeader.deserialize(data)
        if hdr.frame_control.is_cluster or hdr.command_id != foundation.GeneralCommand.Read_Attributes:
            return
        attributes = {
            0x0000: foundation.TypeValue(foundation.DataTypeId.uint8, zt.uint8_t(3)),
            0x0004: foundation.TypeValue(foundation.DataTypeId.string, zt.CharacterString("ota-emu")),
            0x0005: foundation.TypeValue(foundation.DataTypeId.string, zt.CharacterString("test-light")),
        }
        (attr_ids,), _ = zt.deserialize(rest, [zt.List[zt.uint16_t]])
        records = [
            foundation.ReadAttributeRecord(a, foundation.Status.SUCCESS, attributes[a])
            if a in attributes
            else foundation.ReadAttributeRecord(a, foundation.Status.UNSUPPORTED_ATTRIBUTE)
            for a in attr_ids
        ]
        rsp = foundation.ZCLHeader.general(
            hdr.tsn, foundation.GeneralCommand.Read_Attributes_rsp, direction=foundation.Direction.Server_to_Client
        )
        self._reply(
            request,
            request.profile_id,
            0x0000,
            rsp.serialize() + zt.List[foundation.ReadAttributeRecord](records).serialize(),
        )


class Events:
    """What bellows' app reports through zigpy's listener API."""

    def __init__(self) -> None:
        self.joined: asyncio.Queue[zt.EUI64] = asyncio.Queue()
        self.initialized: asyncio.Queue[zigpy.device.Device] = asyncio.Queue()
        self.lost: asyncio.Queue[Exception] = asyncio.Queue()

    def device_joined(self, device: zigpy.device.Device) -> None:
        self.joined.put_nowait(device.ieee)

    def device_initialized(self, device: zigpy.device.Device) -> None:
        self.initialized.put_nowait(device)

    def connection_lost(self, exc: Exception) -> None:
        self.lost.put_nowait(exc)


def app_config(url: str) -> dict:
    return {
        "device": {"path": url},
        "use_thread": False,
        "database_path": None,
        "backup_enabled": False,
        "topology_scan_enabled": False,
        "ota": {"providers": [], "broadcast_enabled": False},
        "network": {"channel": CHANNEL},
    }


async def start_app(url: str) -> bellows.zigbee.application.ControllerApplication:
    app = bellows.zigbee.application.ControllerApplication(app_config(url))
    async with asyncio.timeout(STARTUP_TIMEOUT):
        await app.startup(auto_form=True)
    return app


def formed_state(path: Path, *, seed: int = 11) -> Path:
    state = NetworkState.new(seed)
    state.formed, state.channel, state.pan_id = True, CHANNEL, 0x6A6B
    state.extended_pan_id = "dd00112233445566"
    state.network_key = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    state.channel_mask = 1 << CHANNEL
    state.security_bitmask = 0x1F0C | 0x0084  # bellows' zha_security() bits, hashed trust centre link key
    state.save(path)
    return path


def on_off_packet(dst: int, index: int) -> zt.ZigbeePacket:
    """An on/off Toggle whose TSN and trailing bytes make every frame of a burst unique."""
    return zt.ZigbeePacket(
        src=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=0x0000),
        src_ep=1,
        dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=dst),
        dst_ep=1,
        tsn=index & 0xFF,
        profile_id=0x0104,
        cluster_id=0x0006,
        data=zt.SerializableBytes(bytes([0x11, index & 0xFF, 0x02]) + index.to_bytes(2, "little")),
    )


@pytest.mark.parametrize("version", [8, 13, 14])
@pytest.mark.virtual_time
async def test_bellows_forms_a_network_then_resumes_it(tmp_path: Path, version: int) -> None:
    path = tmp_path / "ncp.json"
    async with VirtualNcp(ezsp_version=version, state_path=path, seed=version) as ncp:
        app = await start_app(ncp.url)
        formed = app.state.network_info
        node = app.state.node_info
        assert node.ieee == ncp.stack.ieee
        assert formed.channel == CHANNEL
        assert app.get_device(ieee=node.ieee).node_desc.is_coordinator  # the self-interview got the NCP's answer
        assert ncp.counters.commands["formNetwork"] == 1
        await app.shutdown()

    saved = json.loads(path.read_text())
    assert saved["formed"] is True
    assert saved["pan_id"] == formed.pan_id
    assert saved["network_key"] == bytes(formed.network_key.key).hex()

    async with VirtualNcp(ezsp_version=version, state_path=path, seed=99) as ncp:
        app = await start_app(ncp.url)
        resumed = app.state.network_info
        assert ncp.counters.commands["formNetwork"] == 0
        assert app.state.node_info.ieee == node.ieee  # from the state file, not from the new seed
        assert (resumed.pan_id, resumed.extended_pan_id, resumed.channel) == (
            formed.pan_id,
            formed.extended_pan_id,
            formed.channel,
        )
        assert resumed.network_key.key == formed.network_key.key
        assert resumed.tc_link_key.key == formed.tc_link_key.key
        assert resumed.stack_specific == formed.stack_specific  # the hashed trust centre link key
        await app.shutdown()


@pytest.mark.virtual_time
async def test_without_a_configured_channel_zigpy_scans_the_energy_then_forms() -> None:
    async with VirtualNcp() as ncp:
        config = app_config(ncp.url)
        del config["network"]
        app = bellows.zigbee.application.ControllerApplication(config)
        async with asyncio.timeout(STARTUP_TIMEOUT):
            await app.startup(auto_form=True)
        assert 11 <= app.state.network_info.channel <= 26
        assert app.state.network_info.channel == ncp.state.channel
        assert ncp.counters.callbacks["energyScanResultHandler"] == 16  # one per 2.4 GHz channel
        assert ncp.counters.callbacks["scanCompleteHandler"] == 1
        await app.shutdown()


@pytest.mark.parametrize("version", [8, 13, 14])
@pytest.mark.virtual_time
async def test_join_interview_and_a_zcl_round_trip_on_the_air(tmp_path: Path, version: int) -> None:
    air = Air(seed=version)
    seen: list[bytes] = []
    air.add_tap(lambda packet, _when: seen.append(packet.data.serialize()))
    async with VirtualNcp(air, ezsp_version=version, state_path=formed_state(tmp_path / "ncp.json")) as ncp:
        app = await start_app(ncp.url)
        events = Events()
        app.add_listener(events)
        await ncp.wait_for_network()
        node = LightNode(air)
        air.join(node)
        async with asyncio.timeout(15):
            assert await events.joined.get() == node.ieee
            device = await events.initialized.get()
        assert (device.nwk, device.manufacturer, device.model) == (node.nwk, "ota-emu", "test-light")

        seen.clear()
        async with asyncio.timeout(10):
            result, _ = await device.endpoints[1].basic.read_attributes(["zcl_version"])
        assert result == {"zcl_version": 3}
        request, reply = seen
        tsn = request[1]
        assert request == bytes([0x00, tsn, 0x00, 0x00, 0x00])  # Read Attributes (0x0000), client to server
        assert reply == bytes([0x18, tsn, 0x01, 0x00, 0x00, 0x00, 0x20, 0x03])  # Read Attributes Response
        assert ncp.counters.callbacks["trustCenterJoinHandler"] == 1
        await app.shutdown()


@pytest.mark.virtual_time
async def test_a_lossy_serial_link_still_delivers_every_unicast_once_in_order(tmp_path: Path) -> None:
    faults = Faults(drop_to_host=0.05, drop_from_host=0.05, corrupt_to_host=0.01, corrupt_from_host=0.01)
    air = Air(seed=5)
    node = LightNode(air)
    air.attach(node)
    async with VirtualNcp(air, state_path=formed_state(tmp_path / "ncp.json"), faults=faults, seed=5) as ncp:
        app = await start_app(ncp.url)
        count = 200
        async with asyncio.timeout(120):
            for index in range(count):
                await app.send_packet(on_off_packet(node.nwk, index))
        expected = [on_off_packet(node.nwk, index).data.serialize() for index in range(count)]
        await node.until(lambda: len(node.toggles()) >= count)
        assert node.toggles() == expected
        link = ncp.counters
        assert link.ash_tx["dropped"] > 0 and link.ash_rx["dropped"] > 0
        assert link.ash_tx["corrupted"] + link.ash_rx["corrupted"] > 0
        assert link.ash_tx["retransmitted"] > 0 or link.ash_rx["duplicate"] > 0
        await app.shutdown()


@pytest.mark.parametrize("kind", ["rstack", "error"])
@pytest.mark.virtual_time
async def test_bellows_reconnects_after_an_unsolicited_ncp_reset(tmp_path: Path, kind: str) -> None:
    air = Air(seed=3)
    node = LightNode(air)
    air.attach(node)
    async with VirtualNcp(air, state_path=formed_state(tmp_path / "ncp.json")) as ncp:
        app = await start_app(ncp.url)
        events = Events()
        app.add_listener(events)
        # zigpy's startup permit(0) is a ZDO broadcast to all routers: the NCP fans it out on the air
        permit = await node.until(lambda: [p for p in node.received if p.profile_id == 0 and p.cluster_id == 0x0036])
        assert permit[0].dst == zt.AddrModeAddress(addr_mode=zt.AddrMode.Broadcast, address=0xFFFC)
        await app.send_packet(on_off_packet(node.nwk, 1))

        ncp.inject_reset(kind)  # type: ignore[arg-type]
        async with asyncio.timeout(10):
            lost = await events.lost.get()
        assert "NcpFailure" in repr(lost)
        assert not ncp.stack.network_up or kind == "error"

        # zigpy 2.4 has no reconnect loop of its own; this is what Home Assistant's ZHA does on connection_lost
        await app.shutdown()
        async with asyncio.timeout(STARTUP_TIMEOUT):
            await app.startup()
        assert app.is_controller_running and ncp.stack.network_up
        await app.send_packet(on_off_packet(node.nwk, 2))
        await node.until(lambda: len(node.toggles()) == 2)
        assert [frame[3:] for frame in node.toggles()] == [b"\x01\x00", b"\x02\x00"]
        await app.shutdown()


@pytest.mark.virtual_time
async def test_delivery_failure_raises_and_a_zigpy_retry_succeeds(tmp_path: Path) -> None:
    air = Air(seed=4)
    async with VirtualNcp(air, state_path=formed_state(tmp_path / "ncp.json")) as ncp:
        app = await start_app(ncp.url)
        events = Events()
        app.add_listener(events)
        node = LightNode(air)
        air.join(node)
        async with asyncio.timeout(15):
            device = await events.initialized.get()

        ncp.fail_next_sends(1)
        with pytest.raises(zigpy.exceptions.DeliveryError):
            await app.send_packet(on_off_packet(node.nwk, 7))
        assert ncp.counters.callbacks["messageSentHandler"] > 0

        node.received.clear()
        ncp.fail_next_sends(1)
        async with asyncio.timeout(15):
            result, _ = await device.endpoints[1].basic.read_attributes(["model"])
        assert result == {"model": "test-light"}
        reads = [p for p in node.received if p.cluster_id == 0x0000]
        assert len(reads) == 1  # the failed attempt never reached the air; the retry did
        assert ncp.counters.air["delivery_failures_injected"] == 2
        await app.shutdown()


@pytest.mark.realtime
@pytest.mark.parametrize("listen", ["pty", "tcp://127.0.0.1:0"])
async def test_bellows_starts_over_a_pty_and_over_tcp(tmp_path: Path, listen: str) -> None:
    async with VirtualNcp(state_path=formed_state(tmp_path / "ncp.json"), listen=listen) as ncp:
        assert ncp.url is not None and ncp.url.startswith("/dev/" if listen == "pty" else "tcp://127.0.0.1:")
        app = await start_app(ncp.url)
        assert app.state.network_info.pan_id == 0x6A6B
        await app.shutdown()


@pytest.mark.virtual_time
async def test_on_virtual_time_the_ncp_listens_in_process_and_a_restart_takes_its_port_back(tmp_path: Path) -> None:
    path = formed_state(tmp_path / "ncp.json")
    async with VirtualNcp(state_path=path) as ncp:
        assert ncp.url is not None and ncp.url.startswith("virtual-ncp://")
        with pytest.raises(ListenError, match="already served"):
            await VirtualNcp(listen=ncp.url).start()
        app = await start_app(ncp.url)
        await app.shutdown()
    with pytest.raises(zigpy.exceptions.TransientConnectionError):
        await start_app(ncp.url)  # nothing serves that port now
    async with VirtualNcp(state_path=path, listen=ncp.url) as again:
        assert again.url == ncp.url
        app = await start_app(ncp.url)
        assert app.state.network_info.pan_id == 0x6A6B
        await app.shutdown()
