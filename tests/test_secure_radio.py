"""The APS security shim between a node and the virtual air: what the Smart Energy rule makes it encrypt, what it
opens, and what it drops (with preconfigured link keys; the join and CBKE that install them are tested end to end
in test_han_security.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
import zigpy.types as t

from emulator.radio.air import Air, LinkModel
from emulator.radio.capture import FrameEncoder
from emulator.radio.secure import DroppedFrame, DropReason, SecuredApsFrame, SecureRadio
from emulator.security import aps
from emulator.security.ccm import AuxHeader, KeyId
from emulator.security.keystore import KeyOrigin, SecurityContext

pytestmark = pytest.mark.virtual_time

CHF = t.EUI64.convert("00:DB:12:34:56:78:90:A2")
DEVICE = t.EUI64.convert("00:DB:12:34:56:78:90:A4")
KEY = bytes.fromhex("C0C1C2C3C4C5C6C7C8C9CACBCCCDCECF")
OTHER_KEY = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
QUERY_NEXT_IMAGE = bytes.fromhex("01 07 01 00 1D12 8400 01000000".replace(" ", ""))


@dataclass(eq=False)
class Node:
    nwk: int
    ieee: t.EUI64
    rx_on_when_idle: bool = True
    got: list[t.ZigbeePacket] = field(default_factory=list)

    def receive(self, packet: t.ZigbeePacket) -> None:
        self.got.append(packet)


def packet(src: int, dst: int, cluster: int = 0x0019, profile: int = 0x0109, data: bytes = QUERY_NEXT_IMAGE,
           dst_ep: int = 1, broadcast: bool = False) -> t.ZigbeePacket:  # fmt: skip
    mode = t.AddrMode.Broadcast if broadcast else t.AddrMode.NWK
    return t.ZigbeePacket(
        src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(src)), src_ep=1,
        dst=t.AddrModeAddress(addr_mode=mode, address=t.NWK(dst)), dst_ep=dst_ep, tsn=data[1] if data else 0,
        profile_id=profile, cluster_id=cluster, data=t.SerializableBytes(data),
        tx_options=t.TransmitOptions.ACK, radius=0,
    )  # fmt: skip


@dataclass
class Pair:
    air: Air
    chf: Node
    device: Node
    chf_radio: SecureRadio
    device_radio: SecureRadio
    tapped: list[t.ZigbeePacket]
    drops: list[DroppedFrame]


def pair(chf_key: bytes | None = KEY, device_key: bytes | None = KEY, **link: float) -> Pair:
    air = Air(link=LinkModel(**link), airtime=False)
    drops: list[DroppedFrame] = []
    contexts = SecurityContext(CHF), SecurityContext(DEVICE)
    if chf_key is not None:
        contexts[0].set_link_key(DEVICE, chf_key, KeyOrigin.PRECONFIGURED)
    if device_key is not None:
        contexts[1].set_link_key(CHF, device_key, KeyOrigin.PRECONFIGURED)
    radios = [SecureRadio(air, context, on_drop=drops.append) for context in contexts]
    chf, device = Node(0x0000, CHF), Node(0x1001, DEVICE)
    radios[0].attach(chf)
    radios[1].join(device)
    tapped: list[t.ZigbeePacket] = []
    air.add_tap(lambda p, _: tapped.append(p))
    return Pair(air, chf, device, radios[0], radios[1], tapped, drops)


async def settle() -> None:
    await asyncio.sleep(0.1)


async def test_an_ota_unicast_goes_aps_encrypted_and_arrives_in_clear() -> None:
    p = pair()
    sent = packet(0x1001, 0x0000)
    assert p.device_radio.send(sent)
    await settle()
    [on_air] = p.tapped
    assert isinstance(on_air.data, SecuredApsFrame)
    assert on_air.tx_options & t.TransmitOptions.APS_Encryption
    # On the air: the APS header (security bit set), the auxiliary header (data key, extended nonce with the
    # sender's IEEE address, its frame counter 0), the encrypted ZCL frame and a 4-byte MIC.
    header = bytes([0x40, 0x01, 0x19, 0x00, 0x09, 0x01, 0x01, 0x00])
    expected = aps.secure(header + QUERY_NEXT_IMAGE, KEY, AuxHeader(KeyId.DATA, 0, bytes(DEVICE)))
    assert on_air.data.serialize() == expected and expected[0] == 0x40 | aps.APS_SECURITY
    assert QUERY_NEXT_IMAGE not in on_air.data.serialize()
    [received] = p.chf.got
    assert received.data.serialize() == QUERY_NEXT_IMAGE
    assert (received.cluster_id, received.profile_id, received.src_ep, received.dst_ep) == (0x19, 0x0109, 1, 1)
    assert p.drops == [] and p.chf_radio.context.incoming_frame_counter(DEVICE) == 1


async def test_without_a_link_key_or_outside_the_rule_frames_go_in_clear() -> None:
    p = pair(chf_key=None, device_key=None)
    p.device_radio.send(packet(0x1001, 0x0000))
    q = pair()
    q.device_radio.send(packet(0x1001, 0x0000, cluster=0x0800))  # Key Establishment: NWK security only
    q.device_radio.send(packet(0x1001, 0x0000, cluster=0x0000))  # Basic: not in the SE list
    q.device_radio.send(packet(0x1001, 0x0000, cluster=0x0019, profile=0x0104))  # another profile
    q.chf_radio.send(packet(0x0000, 0xFFFD, data=bytes.fromhex("090000") + b"\x00", broadcast=True))  # Image Notify
    await settle()
    assert not any(isinstance(x.data, SecuredApsFrame) for x in p.tapped + q.tapped)
    assert len(p.chf.got) == 1 and len(q.chf.got) == 3 and len(q.device.got) == 1
    assert q.drops == []


async def test_an_ota_command_in_clear_from_a_link_key_partner_is_dropped_and_reported() -> None:
    p = pair()
    assert p.air.send(packet(0x0000, 0x1001, data=bytes.fromhex("1905020000")))  # around the CHF's shim
    await settle()
    assert p.device.got == []
    [drop] = p.drops
    assert (drop.reason, drop.sender, drop.cluster_id, drop.command_id) == (DropReason.UNENCRYPTED, CHF, 0x19, 0x02)


async def test_wrong_key_and_replay_are_dropped() -> None:
    p = pair(device_key=OTHER_KEY)
    p.chf_radio.send(packet(0x0000, 0x1001, data=bytes.fromhex("1905020000")))
    await settle()
    assert p.device.got == [] and [d.reason for d in p.drops] == [DropReason.BAD_MIC]
    q = pair(duplicate=1.0)
    q.device_radio.send(packet(0x1001, 0x0000))
    await settle()
    assert len(q.chf.got) == 1 and [d.reason for d in q.drops] == [DropReason.REPLAY]


async def test_not_ready_node_ignores_secured_clusters_and_admission_keeps_a_node_off_the_air() -> None:
    p = pair()
    p.device_radio.application_ready = False
    p.chf_radio.send(packet(0x0000, 0x1001, data=bytes.fromhex("1905020000")))
    p.chf_radio.send(packet(0x0000, 0x1001, cluster=0x0800, data=bytes.fromhex("1905000000")))
    await settle()
    assert [x.cluster_id for x in p.device.got] == [0x0800] and p.drops == []
    air = Air()
    radio = SecureRadio(air, SecurityContext(DEVICE), admission=lambda node: False)
    node = Node(0x1002, DEVICE)
    radio.join(node)
    assert radio.admitted is False and air.node(0x1002) is None


def test_the_capture_writes_a_secured_frame_as_it_is() -> None:
    secured = aps.secure(
        bytes([0x40, 0x01, 0x19, 0x00, 0x09, 0x01, 0x01, 0x07]) + QUERY_NEXT_IMAGE, KEY,
        AuxHeader(KeyId.DATA, 5, bytes(DEVICE)),
    )  # fmt: skip
    encoder = FrameEncoder(pan_id=0x1A62, network_key=None)
    encoder.add_node(0x1001, DEVICE)
    encoder.add_node(0x0000, CHF)
    frame = encoder.encode(packet(0x1001, 0x0000).replace(data=SecuredApsFrame(secured)))
    # MAC (9) + NWK (8) headers, then the APS frame exactly as the sender secured it, then the FCS.
    assert frame[17:-2] == secured
    assert encoder.missing_link_keys == set()
