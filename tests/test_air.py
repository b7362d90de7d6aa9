"""The virtual air on its own: per-link models, airtime on one channel, sleepy devices, determinism."""

from __future__ import annotations

import asyncio
import itertools

import pytest
import zigpy.types as t

from emulator.radio.air import BROADCAST_ALL, BROADCAST_RX_ON_WHEN_IDLE, Air, LinkModel

pytestmark = pytest.mark.virtual_time


class Node:
    def __init__(self, nwk: int, *, sleepy: bool = False) -> None:
        self.nwk = nwk
        self.ieee = t.EUI64(nwk.to_bytes(2, "little") + bytes(6))
        self.rx_on_when_idle = not sleepy
        self.got: list[tuple[float, bytes]] = []

    def receive(self, packet: t.ZigbeePacket) -> None:
        self.got.append((asyncio.get_running_loop().time(), packet.data.serialize()))


def packet(src: int, dst: int, data: bytes = b"\x01\x02\x03", *, broadcast: bool = False) -> t.ZigbeePacket:
    mode = t.AddrMode.Broadcast if broadcast else t.AddrMode.NWK
    return t.ZigbeePacket(
        src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=src),
        src_ep=1,
        dst=t.AddrModeAddress(addr_mode=mode, address=dst),
        dst_ep=1,
        tsn=1,
        profile_id=0x0109,
        cluster_id=0x0019,
        data=t.SerializableBytes(data),
    )


async def test_link_model_applies_per_link_and_both_ways():
    air = Air(seed=1)
    a, b, c = Node(1), Node(2), Node(3)
    for node in (a, b, c):
        air.attach(node)
    air.set_link(1, 2, LinkModel(loss=1.0))
    assert air.send(packet(1, 2)) is False and air.send(packet(2, 1)) is False
    assert air.send(packet(1, 3)) is True
    await asyncio.sleep(1)
    assert not a.got and not b.got and len(c.got) == 1
    assert air.stats["lost"] == 2


async def test_airtime_serialises_frames_on_one_channel():
    air = Air(link=LinkModel(latency=0.0))
    sender, receiver = Node(1), Node(2)
    air.attach(sender)
    air.attach(receiver)
    payload = bytes(100)
    for _ in range(10):
        air.send(packet(1, 2, payload))
    await asyncio.sleep(1)
    times = [when for when, _ in receiver.got]
    airtime = (100 + 33) * 8 / 250_000
    assert len(times) == 10
    assert all(later - earlier == pytest.approx(airtime) for earlier, later in itertools.pairwise(times))


async def test_a_frame_that_would_wait_too_long_for_the_channel_is_lost():
    air = Air(link=LinkModel(latency=0.0), channel_wait=0.05)
    sender, receiver = Node(1), Node(2)
    air.attach(sender)
    air.attach(receiver)
    airtime = (100 + 33) * 8 / 250_000  # 4.256 ms a frame: the 13th would wait 51 ms for the 12 before it
    sent = [air.send(packet(1, 2, bytes([index]) * 100)) for index in range(20)]
    assert sent == [True] * 12 + [False] * 8 and air.stats["channel_busy"] == 8
    await asyncio.sleep(1)
    assert [data[0] for _, data in receiver.got] == list(range(12))
    assert air.send(packet(1, 2, bytes(100)))  # the channel is free again
    await asyncio.sleep(1)
    assert receiver.got[-1][0] - receiver.got[-2][0] > 1 - 12 * airtime


async def test_sleepy_node_gets_held_frames_only_when_it_polls_and_they_expire():
    air = Air(indirect_timeout=7.68)
    coordinator, sleepy = Node(0), Node(5, sleepy=True)
    air.attach(coordinator)
    air.attach(sleepy)
    air.send(packet(0, 5, b"first"))
    await asyncio.sleep(1)
    assert not sleepy.got and air.held_for(5) == 1
    assert air.poll(5) == 1
    await asyncio.sleep(0.1)
    assert [data for _, data in sleepy.got] == [b"first"]
    air.send(packet(0, 5, b"stale"))
    await asyncio.sleep(10)
    assert air.poll(5) == 0 and air.stats["expired"] == 1


async def test_broadcasts_reach_rx_on_nodes_and_are_held_for_sleepy_ones():
    air = Air()
    sender, awake, sleepy = Node(1), Node(2), Node(3, sleepy=True)
    for node in (sender, awake, sleepy):
        air.attach(node)
    air.send(packet(1, BROADCAST_RX_ON_WHEN_IDLE, broadcast=True))
    air.send(packet(1, BROADCAST_ALL, broadcast=True))
    await asyncio.sleep(1)
    assert len(awake.got) == 2 and not sender.got
    assert air.held_for(3) == 1  # only the 0xFFFF broadcast is buffered by the parent


def announcement(src: int) -> t.ZigbeePacket:
    """A Device_annce broadcast (ZDO profile, cluster 0x0013, endpoint 0)."""
    return t.ZigbeePacket(
        src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=src),
        src_ep=0,
        dst=t.AddrModeAddress(addr_mode=t.AddrMode.Broadcast, address=BROADCAST_RX_ON_WHEN_IDLE),
        dst_ep=0,
        tsn=1,
        profile_id=0,
        cluster_id=0x0013,
        data=t.SerializableBytes(b"\x01announce"),
    )


async def test_announcements_reach_only_nodes_that_hear_them_and_other_broadcasts_reach_all():
    air = Air()
    coordinator, device, joiner = Node(0), Node(2), Node(3)
    device.hears_announcements = False  # type: ignore[attr-defined]
    for node in (coordinator, device, joiner):
        air.attach(node)
    air.send(announcement(3))
    await asyncio.sleep(1)
    assert [data for _, data in coordinator.got] == [b"\x01announce"] and not device.got and not joiner.got
    air.send(packet(0, BROADCAST_RX_ON_WHEN_IDLE, b"notify", broadcast=True))
    await asyncio.sleep(1)
    assert [data for _, data in device.got] == [b"notify"] and [data for _, data in joiner.got] == [b"notify"]


async def test_a_broadcast_on_a_lossy_air_meets_each_receiver_with_its_own_fate():
    air = Air(seed=3, link=LinkModel(loss=0.5))
    nodes = [Node(nwk) for nwk in range(1, 41)]
    for node in nodes:
        air.attach(node)
    air.send(packet(1, BROADCAST_ALL, broadcast=True))
    await asyncio.sleep(1)
    reached = [node for node in nodes[1:] if node.got]
    assert 0 < len(reached) < 39 and air.stats["lost"] == 39 - len(reached)
    assert {when for node in reached for when, _ in node.got} == {reached[0].got[0][0]}


async def run_lossy(seed: int) -> list[tuple[float, bytes]]:
    air = Air(seed=seed, link=LinkModel(loss=0.3, duplicate=0.2, reorder=0.2))
    sender, receiver = Node(1), Node(2)
    air.attach(sender)
    air.attach(receiver)
    for index in range(200):
        air.send(packet(1, 2, index.to_bytes(2, "little")))
    await asyncio.sleep(5)
    return receiver.got


async def test_same_seed_same_fate_other_seed_other_fate():
    first, again, other = await run_lossy(7), await run_lossy(7), await run_lossy(8)
    assert [d for _, d in first] == [d for _, d in again]
    assert [d for _, d in first] != [d for _, d in other]
    order = [int.from_bytes(d, "little") for _, d in first]
    assert order != sorted(order)  # reordering happened
    assert len(order) != len(set(order))  # and duplication


def test_link_model_rejects_impossible_values():
    with pytest.raises(ValueError, match="loss must be a probability"):
        LinkModel(loss=1.5)
    with pytest.raises(ValueError, match="latency must be >= 0"):
        LinkModel(latency=-1)
