"""The host side of a stick in its joining role (`StickRadio`), on a virtual NCP, through bellows' EZSP layer:
join or resume, frames both ways, a sleepy node's polls, a stick reset, and the one-line port errors. The NCPs
listen in process and everything runs on virtual time, except the real ports that cannot be used."""

from __future__ import annotations

import asyncio

import pytest
import zigpy.types as zt
from test_ncp_joining import form, named, unicast, until

from emulator.chf.node import RadioError, waited
from emulator.ncp.server import VirtualNcp
from emulator.radio.air import Air
from emulator.radio.stick import Endpoint, JoinPlan, Role, StickRadio

ENDPOINT = Endpoint(
    endpoint=1,
    profile_id=0x0109,
    device_id=0x0507,
    in_clusters=(0x0000,),
    out_clusters=(0x0019,),
    manufacturer_code=0x1234,
)


class Recorder:
    """The smallest node a radio can carry: it records what reaches it."""

    def __init__(self, nwk: int, ieee: zt.EUI64, *, sleepy: bool = False) -> None:
        self.nwk, self.ieee, self.rx_on_when_idle = nwk, ieee, not sleepy
        self.received: list[zt.ZigbeePacket] = []

    def receive(self, packet: zt.ZigbeePacket) -> None:
        self.received.append(packet)


def ota_frame(nwk: int, payload: bytes) -> zt.ZigbeePacket:
    return zt.ZigbeePacket(
        src=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=nwk),
        src_ep=1,
        dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=0x0000),
        dst_ep=1,
        tsn=payload[1],
        profile_id=0x0109,
        cluster_id=0x0019,
        data=zt.SerializableBytes(payload),
        tx_options=zt.TransmitOptions.ACK,
    )


@pytest.mark.virtual_time
async def test_a_sleepy_stick_joins_carries_frames_polls_and_comes_back_after_a_reset() -> None:
    air = Air(seed=11)
    async with VirtualNcp(air, seed=1) as coordinator, VirtualNcp(air, seed=2, ezsp_version=14) as stick:
        tc_seen = form(coordinator.stack)
        radio = StickRadio(stick.url or "", JoinPlan(Role.SLEEPY, join_timeout=10))
        heard: list[str] = []
        radio.add_listener(heard.append)
        joined = await radio.open(ENDPOINT)
        try:
            assert not joined.resumed and joined.ieee == stick.stack.ieee and air.node(joined.nwk) is stick.stack
            assert stick.stack.endpoints[1].output_clusters == [0x0019]
            node = Recorder(joined.nwk, joined.ieee, sleepy=True)
            radio.join(node)
            radio.send(ota_frame(joined.nwk, b"\x01\x22\x01"))
            got = await until(
                lambda: [v for n, v in tc_seen if n == "incomingMessageHandler" and v["apsFrame"].clusterId == 0x19]
            )
            assert (got[0]["sender"], got[0]["messageContents"]) == (joined.nwk, b"\x01\x22\x01")
            unicast(coordinator.stack, joined.nwk, b"\x19\x23\x02")
            await asyncio.sleep(0.1)
            assert node.received == []  # held by the parent until the sleepy node polls
            radio.poll(joined.nwk)
            await until(lambda: node.received)
            assert node.received[0].data.serialize() == b"\x19\x23\x02" and node.received[0].src.address == 0

            # The stick reboots on its own: the radio reconnects and resumes from the stick's tokens.
            stick.inject_reset("rstack")
            await until(lambda: any("back" in line for line in heard), within=15)
            assert radio.joined is not None and radio.joined.nwk == joined.nwk and radio.joined.resumed
            radio.send(ota_frame(joined.nwk, b"\x01\x24\x01"))
            await until(
                lambda: [
                    v for n, v in tc_seen if n == "incomingMessageHandler" and v["messageContents"] == b"\x01\x24\x01"
                ]
            )
            assert len(named(tc_seen, "trustCenterJoinHandler")) == 1  # resumed, not joined again
        finally:
            await radio.close()


@pytest.mark.virtual_time
async def test_no_network_open_for_joining_is_one_line_after_the_join_timeout() -> None:
    air = Air(seed=12)
    async with VirtualNcp(air, seed=1) as coordinator, VirtualNcp(air, seed=2) as stick:
        form(coordinator.stack, permit=0)
        radio = StickRadio(stick.url or "", JoinPlan(Role.END_DEVICE, join_timeout=1.5))
        with pytest.raises(RadioError, match=r"no network let the stick join within 1.5 s \(last answer: NO_BEACONS"):
            await radio.open(ENDPOINT)
        await radio.close()


@pytest.mark.virtual_time
async def test_a_stick_that_is_a_coordinator_is_refused() -> None:
    air = Air(seed=13)
    async with VirtualNcp(air, seed=1) as coordinator:
        form(coordinator.stack)
        radio = StickRadio(coordinator.url or "", JoinPlan(Role.END_DEVICE, join_timeout=1))
        with pytest.raises(RadioError, match="is the coordinator of its own network"):
            await radio.open(ENDPOINT)
        await radio.close()


@pytest.mark.parametrize(
    ("port", "fragment"),
    [("/dev/no-such-stick", "no such serial port"), ("tcp://127.0.0.1:1", "connection refused")],
)
@pytest.mark.realtime
async def test_ports_that_cannot_be_used(port: str, fragment: str) -> None:
    radio = StickRadio(port, JoinPlan(Role.END_DEVICE))
    with pytest.raises(RadioError, match=fragment):
        await radio.open(ENDPOINT)


@pytest.mark.virtual_time
async def test_a_port_bellows_gives_up_on_first_is_reported_with_the_time_it_was_tried() -> None:
    """bellows stops after its own ASH resets (three of 2.5 s), before our 10 s: the one-line error then says how
    long the port was really tried, not our bound; when our bound fires, it says the bound."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(10.0) as ours:
            async with asyncio.timeout(7.5):  # bellows' RESET_ATTEMPTS x RESET_TIMEOUT
                await asyncio.sleep(60)
    assert waited(ours, 10.0, started) == 7.5
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5) as ours:
            await asyncio.sleep(60)
    assert waited(ours, 0.5, started) == 0.5
