"""The virtual NCP's security commands and APS security, EZSP v8, v13 and v14.

Every command is exchanged byte for byte with bellows' own protocol classes: bellows writes the host frame
(`_ezsp_frame`), the NCP parses and answers it, bellows reads the answer (`_ezsp_frame_rx` and its schema).
Layouts the codec takes from bellows' tables are also checked against bytes written by hand from UG100. The
APS frames the NCP secures are recomputed here with `cryptography`'s AES-CCM from the Zigbee nonce and
authenticated-data rules (05-3474 §4.5), not with the emulator's own CCM* code."""

from __future__ import annotations

import asyncio
import functools
import importlib
import random
import struct
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import bellows.types as bt
import bellows.zigbee.application
import pytest
import zigpy.state
import zigpy.types as zt
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from emulator import clock
from emulator.chf.trust_centre import open_transport_key
from emulator.ncp.counters import NcpCounters
from emulator.ncp.ezsp import EzspCodec
from emulator.ncp.faults import Faults
from emulator.ncp.security import TransportKeySent
from emulator.ncp.server import VirtualNcp
from emulator.ncp.stack import EmberStack
from emulator.ncp.state import NetworkState
from emulator.radio.air import Air
from emulator.radio.secure import SecuredApsFrame
from emulator.security.install_code import InstallCode
from emulator.security.keystore import KeyOrigin, SecurityContext

OK = bt.sl_Status.OK
H = bytes.fromhex
# AN1089's install code and the link key it hashes to (SE_SECURITY.md §2).
INSTALL_CODE = InstallCode.parse("83FED3407A939723A5C639B26916D505C3B5")
CODE_KEY = H("66B6900981E1EE3CA4206B6B861C02BB")
DEVICE = bt.EUI64.convert("00:0d:6f:00:00:bb:bb:bb")
OTHER = bt.EUI64.convert("00:0d:6f:00:00:cc:cc:cc")
DEVICE_NWK = 0x4321
NETWORK_KEY = bytes(range(16))
POLICY = bt.EzspPolicyId.TRUST_CENTER_POLICY
DECISION = bt.EzspDecisionBitmask


def real_time(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def virtual_time(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        clock.run(lambda: test(*args, **kwargs), virtual=True)

    return run


def make_stack(tmp_path: Path, version: int = 13) -> tuple[EmberStack, list[tuple[str, dict[str, Any]]]]:
    state = NetworkState.new(seed=3)
    state.formed, state.channel, state.pan_id = True, 15, 0x1A62
    state.network_key = NETWORK_KEY.hex()
    path = tmp_path / "ncp.json"
    stack = EmberStack(
        version=version,
        air=Air(seed=3),
        state=state,
        faults=Faults(),
        rng=random.Random(3),
        counters=NcpCounters(),
        persist=lambda: state.save(path),
    )
    callbacks: list[tuple[str, dict[str, Any]]] = []
    stack.sink = lambda name, values: callbacks.append((name, values))
    stack.config[bt.EzspConfigId.CONFIG_KEY_TABLE_SIZE] = 4
    return stack, callbacks


def call(stack: EmberStack, name: str, **args: Any) -> dict[str, Any]:
    result = stack.handle(name, args)
    assert result is not None, name
    return result[1]


def exchange(stack: EmberStack, name: str, **args: Any) -> dict[str, Any]:
    """`name(**args)` as bellows sends it, answered by the NCP and read back as bellows reads it."""
    version = stack.version
    protocol = getattr(importlib.import_module(f"bellows.ezsp.v{version}"), f"EZSPv{version}")(None, None)
    codec = EzspCodec(version)
    command = codec.parse(protocol._ezsp_frame(name, **args))
    assert command.name == name
    answer = stack.handle(name, codec.decode_params(command))
    assert answer is not None, name
    reply = codec.encode(command.seq, answer[0], answer[1])
    _, frame_id, data = protocol._ezsp_frame_rx(reply)
    frame, _, rx_schema = protocol.COMMANDS[name]
    assert frame_id == frame
    values, rest = bt.deserialize_dict(data, rx_schema)
    assert rest == b""
    return dict(values)


def status_ok(values: dict[str, Any]) -> bool:
    return bt.sl_Status.from_ember_status(values["status"]) == OK


# -- transient keys ----------------------------------------------------------------------------------------


def test_addTransientLinkKey_v8_is_the_ug100_frame(tmp_path: Path) -> None:
    codec = EzspCodec(8)
    frame = H("05 00 01 af00") + bytes(DEVICE) + CODE_KEY
    command = codec.parse(frame)
    assert codec.decode_params(command) == {"partner": DEVICE, "transientKey": bt.KeyData(CODE_KEY)}
    assert codec.encode(5, "addTransientLinkKey", {"status": OK}) == H("05 80 01 af00 00")
    assert codec.encode(5, "addTransientLinkKey", {"status": bt.sl_Status.FULL}) == H("05 80 01 af00 b4")


@pytest.mark.parametrize("version", [13, 14])
def test_importTransientKey_is_the_ug100_frame(version: int) -> None:
    codec = EzspCodec(version)
    frame = H("06 00 01 1101") + bytes(DEVICE) + CODE_KEY + H("00")
    args = codec.decode_params(codec.parse(frame))
    assert (args["eui64"], bytes(args["plaintext_key"])) == (DEVICE, CODE_KEY)
    assert codec.encode(6, "importTransientKey", {"status": OK}) == H("06 80 01 1101 00000000")


@virtual_time
async def test_transient_keys_v8_add_read_time_out_and_vanish_at_reset(tmp_path: Path) -> None:
    stack, _ = make_stack(tmp_path, 8)
    stack.config[bt.EzspConfigId.CONFIG_TRANSIENT_KEY_TIMEOUT_S] = 300
    assert status_ok(exchange(stack, "addTransientLinkKey", partner=DEVICE, transientKey=bt.KeyData(CODE_KEY)))
    await asyncio.sleep(100)
    got = exchange(stack, "getTransientLinkKey", eui64=DEVICE)
    assert status_ok(got)
    data = got["transient_key_data"]
    assert (data.eui64, bytes(data.keyData), data.remainingTimeSeconds) == (DEVICE, CODE_KEY, 200)
    assert not status_ok(exchange(stack, "getTransientLinkKey", eui64=OTHER))
    await asyncio.sleep(201)
    assert exchange(stack, "getTransientLinkKey", eui64=DEVICE)["status"] == bt.EmberStatus.NOT_FOUND
    exchange(stack, "addTransientLinkKey", partner=DEVICE, transientKey=bt.KeyData(CODE_KEY))
    stack.reboot()  # RAM: a reset forgets every transient key
    assert not status_ok(exchange(stack, "getTransientLinkKey", eui64=DEVICE))


@pytest.mark.parametrize("version", [13, 14])
@virtual_time
async def test_transient_keys_v13_import_export_and_clear(tmp_path: Path, version: int) -> None:
    stack, _ = make_stack(tmp_path, version)
    for eui64, key in ((OTHER, bytes(16)), (DEVICE, CODE_KEY)):
        imported = exchange(stack, "importTransientKey", eui64=eui64, plaintext_key=bt.KeyData(key), flags=0)
        assert status_ok(imported)
    by_eui = exchange(stack, "exportTransientKeyByEui", eui64=DEVICE)
    assert status_ok(by_eui)
    assert bytes(by_eui["plaintext_key"]) == CODE_KEY
    context = by_eui["context"]
    assert (context.core_key_type, context.key_index, context.eui64) == (
        bt.SecurityManagerKeyType.TC_LINK_WITH_TIMEOUT,
        1,
        DEVICE,
    )
    assert by_eui["key_data"].ttl_in_seconds == 300
    by_index = exchange(stack, "exportTransientKeyByIndex", index=1)
    assert (bytes(by_index["plaintext_key"]), by_index["context"].eui64) == (CODE_KEY, DEVICE)
    assert not status_ok(exchange(stack, "exportTransientKeyByIndex", index=2))
    assert exchange(stack, "clearTransientLinkKeys") == {}
    assert not status_ok(exchange(stack, "exportTransientKeyByEui", eui64=DEVICE))


# -- the link key table --------------------------------------------------------------------------------------


def test_setKeyTableEntry_v8_then_read_find_and_erase(tmp_path: Path) -> None:
    stack, _ = make_stack(tmp_path, 8)
    key = bt.KeyData(CODE_KEY)
    assert status_ok(exchange(stack, "setKeyTableEntry", index=2, address=DEVICE, linkKey=True, keyData=key))
    assert not status_ok(exchange(stack, "setKeyTableEntry", index=4, address=DEVICE, linkKey=True, keyData=key))
    assert not status_ok(exchange(stack, "setKeyTableEntry", index=1, address=OTHER, linkKey=False, keyData=key))
    assert exchange(stack, "findKeyTableEntry", address=DEVICE, linkKey=True) == {"index": 2}
    entry = exchange(stack, "getKeyTableEntry", index=2)
    assert (bytes(entry["keyStruct"].key), entry["keyStruct"].partnerEUI64) == (CODE_KEY, DEVICE)
    assert status_ok(exchange(stack, "eraseKeyTableEntry", index=2))
    assert exchange(stack, "findKeyTableEntry", address=DEVICE, linkKey=True) == {"index": 0xFF}
    assert not status_ok(exchange(stack, "getKeyTableEntry", index=2))


@pytest.mark.parametrize("version", [13, 14])
def test_importLinkKey_then_export_by_eui_and_index(tmp_path: Path, version: int) -> None:
    stack, _ = make_stack(tmp_path, version)
    assert status_ok(exchange(stack, "importLinkKey", index=3, address=DEVICE, key=bt.KeyData(CODE_KEY)))
    by_eui = exchange(stack, "exportLinkKeyByEui", eui64=DEVICE)
    assert status_ok(by_eui) and bytes(by_eui["plaintext_key"]) == CODE_KEY
    assert (by_eui["context"].key_index if version >= 14 else by_eui["index"]) == 3
    assert not status_ok(exchange(stack, "exportLinkKeyByEui", eui64=OTHER))
    by_index = exchange(stack, "exportLinkKeyByIndex", index=3)
    assert bytes(by_index["plaintext_key"]) == CODE_KEY
    assert status_ok(exchange(stack, "eraseKeyTableEntry", index=3))
    assert not status_ok(exchange(stack, "exportLinkKeyByEui", eui64=DEVICE))


# -- the trust centre -------------------------------------------------------------------------------------


def _permit(stack: EmberStack) -> None:
    call(stack, "networkInit", networkInitBitmask=0)
    call(stack, "permitJoining", duration=60)


@real_time
async def test_install_code_policy_admits_only_joiners_with_a_transient_key(tmp_path: Path) -> None:
    stack, _ = make_stack(tmp_path, 13)
    _permit(stack)
    sent: list[TransportKeySent] = []
    stack.security_listeners.append(sent.append)
    call(stack, "importTransientKey", eui64=DEVICE, plaintext_key=bt.KeyData(CODE_KEY), flags=0)
    call(stack, "setPolicy", policyId=POLICY, decisionId=DECISION.ALLOW_JOINS | DECISION.JOINS_USE_INSTALL_CODE_KEY)
    assert stack.join_keys(DEVICE) == [CODE_KEY]
    assert stack.join_keys(OTHER) == []  # neither the TC link key nor the well-known key admits anyone now
    assert stack.transport_network_key(OTHER, 0x1111) is None
    assert stack.transport_network_key(DEVICE, DEVICE_NWK, held=b"ZigBeeAlliance09") is None

    transport = stack.transport_network_key(DEVICE, DEVICE_NWK)
    assert transport is not None
    # The joiner opens the Transport-Key with its own install code and learns the network key.
    joiner = SecurityContext(zt.EUI64(DEVICE))
    assert open_transport_key(joiner, zt.EUI64(stack.ieee), INSTALL_CODE, transport.frame) == NETWORK_KEY
    assert sent == [TransportKeySent(DEVICE_NWK, transport)]
    # Secured with the key-transport key (key id 2) and the trust centre's IEEE address in the nonce.
    assert transport.frame[2] == 0x30 and transport.frame[7:15] == bytes(stack.ieee)

    call(stack, "permitJoining", duration=0)
    assert stack.transport_network_key(DEVICE, DEVICE_NWK) is None  # joining closed
    call(stack, "setPolicy", policyId=POLICY, decisionId=0)
    assert stack.join_keys(DEVICE) == []  # the policy allows no joins


@real_time
async def test_without_the_install_code_policy_the_tc_and_key_table_keys_admit_too(tmp_path: Path) -> None:
    stack, _ = make_stack(tmp_path, 8)
    _permit(stack)
    stack.state.tc_link_key = b"ZigBeeAlliance09".hex()
    call(stack, "addTransientLinkKey", partner=bt.EUI64.convert("ff:ff:ff:ff:ff:ff:ff:ff"), transientKey=bytes(16))
    call(stack, "addOrUpdateKeyTableEntry", address=OTHER, linkKey=True, keyData=bt.KeyData(CODE_KEY))
    assert stack.join_keys(OTHER) == [bytes(16), CODE_KEY, b"ZigBeeAlliance09"]  # wildcard transient key first
    assert stack.join_keys(DEVICE) == [bytes(16), b"ZigBeeAlliance09"]
    # A joiner holding the well-known key gets its Transport-Key under that key (as the trust centre tries them).
    transport = stack.transport_network_key(DEVICE, DEVICE_NWK, held=b"ZigBeeAlliance09")
    assert transport is not None and transport.link_key == b"ZigBeeAlliance09"


# -- APS security ------------------------------------------------------------------------------------------


class Node:
    """A device on the air that keeps what it receives."""

    def __init__(self, ieee: bt.EUI64 = DEVICE, nwk: int = DEVICE_NWK) -> None:
        self.ieee = zt.EUI64(ieee)
        self.nwk = nwk
        self.rx_on_when_idle = True
        self.received: list[zt.ZigbeePacket] = []

    def receive(self, packet: zt.ZigbeePacket) -> None:
        self.received.append(packet)


def ota_aps(*, encrypted: bool, sequence: int = 0x42) -> bt.EmberApsFrame:
    options = bt.EmberApsOption.APS_OPTION_RETRY
    if encrypted:
        options |= bt.EmberApsOption.APS_OPTION_ENCRYPTION
    return bt.EmberApsFrame(
        profileId=0x0109,
        clusterId=0x0019,
        sourceEndpoint=1,
        destinationEndpoint=2,
        options=options,
        groupId=0,
        sequence=sequence,
    )


def ccm_open(key: bytes, frame: bytes) -> tuple[int, bytes, bytes]:
    """(frame counter, source IEEE as sent, payload) of an APS data frame secured under `key` with the extended
    nonce, opened from first principles: nonce = source ‖ counter ‖ security control with level 5, authenticated
    data = APS header ‖ auxiliary header with level 5, 4-byte MIC (05-3474 §4.5.2.2, §4.4.1.2)."""
    header, control = frame[:8], frame[8]
    assert header[0] & 0x20 and control == 0x20  # APS security bit; key id 0 (data key), extended nonce, level 0
    counter_bytes, source = frame[9:13], frame[13:21]
    patched = bytes([control | 5])
    nonce = source + counter_bytes + patched
    payload = AESCCM(key, tag_length=4).decrypt(nonce, frame[21:], header + patched + counter_bytes + source)
    return int.from_bytes(counter_bytes, "little"), source, payload


async def send(stack: EmberStack, version: int, aps: bt.EmberApsFrame, message: bytes) -> dict[str, Any]:
    if version >= 14:
        args = {"message_type": 0, "nwk": DEVICE_NWK, "aps_frame": aps, "message_tag": 1, "message": message}
    else:
        args = {"type": 0, "indexOrDestination": DEVICE_NWK, "apsFrame": aps, "messageTag": 1}
        args["messageContents"] = message
    return exchange(stack, "sendUnicast", **args)


@pytest.mark.parametrize("version", [8, 13, 14])
@real_time
async def test_sendUnicast_with_aps_encryption_secures_under_the_key_table_key(tmp_path: Path, version: int) -> None:
    stack, _ = make_stack(tmp_path, version)
    stack.attach()
    call(stack, "networkInit", networkInitBitmask=0)
    node = Node()
    stack.air.join(node)
    message = bytes([0x19, 0x42, 0x05, 0x00]) + bytes(range(40))

    refused = await send(stack, version, ota_aps(encrypted=True), message)  # no link key yet
    assert bt.sl_Status.from_ember_status(refused["status"]) == bt.sl_Status.ZIGBEE_APS_ENCRYPTION_ERROR
    if version < 14:
        assert refused["status"] == bt.EmberStatus.APS_ENCRYPTION_ERROR  # 0xA6 on the wire

    stack.state.key_table[0] = None
    call(stack, "addOrUpdateKeyTableEntry" if version == 8 else "importLinkKey",
         **({"address": DEVICE, "linkKey": True, "keyData": CODE_KEY} if version == 8
            else {"index": 0, "address": DEVICE, "key": bt.KeyData(CODE_KEY)}))  # fmt: skip
    counter = stack.state.aps_frame_counter
    assert status_ok(await send(stack, version, ota_aps(encrypted=True), message))
    assert status_ok(await send(stack, version, ota_aps(encrypted=False, sequence=0x43), message))
    await asyncio.sleep(0.05)
    secured, plain = node.received
    assert isinstance(secured.data, SecuredApsFrame)
    frame = secured.data.serialize()
    # APS header: data frame with security and ack request, endpoints, cluster, profile, the APS counter.
    assert frame[:8] == bytes([0x60, 2]) + struct.pack("<HHBB", 0x0019, 0x0109, 1, 0x42)
    assert ccm_open(CODE_KEY, frame) == (counter, bytes(stack.ieee), message)
    assert stack.state.aps_frame_counter == counter + 1
    assert secured.tx_options & zt.TransmitOptions.APS_Encryption
    assert plain.data.serialize() == message and not isinstance(plain.data, SecuredApsFrame)


@pytest.mark.parametrize("version", [8, 13, 14])
@real_time
async def test_secured_frames_from_the_air_reach_the_host_opened_and_flagged(tmp_path: Path, version: int) -> None:
    stack, callbacks = make_stack(tmp_path, version)
    stack.attach()
    call(stack, "networkInit", networkInitBitmask=0)
    node = Node()
    stack.air.join(node)
    stack.state.key_table[1] = None
    call(stack, "importLinkKey" if version > 8 else "setKeyTableEntry",
         **({"index": 1, "address": DEVICE, "key": bt.KeyData(CODE_KEY)} if version > 8
            else {"index": 1, "address": DEVICE, "linkKey": True, "keyData": CODE_KEY}))  # fmt: skip
    device = SecurityContext(zt.EUI64(DEVICE), outgoing_frame_counter=7)
    device.set_link_key(zt.EUI64(stack.ieee), CODE_KEY, KeyOrigin.CBKE)
    stranger = SecurityContext(zt.EUI64(DEVICE), outgoing_frame_counter=50)
    stranger.set_link_key(zt.EUI64(stack.ieee), bytes(16), KeyOrigin.CBKE)
    payload = bytes([0x01, 0x10, 0x01, 0x00]) + bytes(10)

    def from_device(context: SecurityContext, data: bytes | None = None) -> zt.ZigbeePacket:
        header = struct.pack("<BBHHBB", 0x40, 1, 0x0019, 0x0109, 2, 0x10)
        secured = data if data is not None else context.secure(header + payload, zt.EUI64(stack.ieee))
        return zt.ZigbeePacket(
            src=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=DEVICE_NWK),
            src_ep=2,
            dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=0x0000),
            dst_ep=1,
            tsn=0x10,
            profile_id=0x0109,
            cluster_id=0x0019,
            data=SecuredApsFrame(secured),
            tx_options=zt.TransmitOptions.ACK | zt.TransmitOptions.APS_Encryption,
        )

    good = from_device(device)
    stack.air.send(good)
    stack.air.send(from_device(device, good.data.serialize()))  # the same frame again: a replay
    stack.air.send(from_device(stranger))  # another key: the MIC fails
    await asyncio.sleep(0.05)
    incoming = [values for name, values in callbacks if name == "incomingMessageHandler"]
    assert len(incoming) == 1
    [values] = incoming
    aps = values["aps_frame" if version >= 14 else "apsFrame"]
    assert bt.EmberApsOption.APS_OPTION_ENCRYPTION in aps.options
    assert values["message" if version >= 14 else "messageContents"] == payload
    assert stack.counters.air["aps_replayed"] == 1 and stack.counters.air["aps_not_opened"] == 1
    assert stack.state.key_table[1] is not None and stack.state.key_table[1].rx_counter == 8
    # The callback as it goes to the host: bellows reads the encryption bit back out of the apsFrame options.
    codec = EzspCodec(version)
    reply = codec.encode(0, "incomingMessageHandler", values, callback=True)
    protocol = getattr(importlib.import_module(f"bellows.ezsp.v{version}"), f"EZSPv{version}")(None, None)
    _, _, data = protocol._ezsp_frame_rx(reply)
    decoded, _ = bt.deserialize_dict(data, protocol.COMMANDS["incomingMessageHandler"][2])
    decoded_aps = decoded["aps_frame" if version >= 14 else "apsFrame"]
    assert decoded_aps.options == bt.EmberApsOption.APS_OPTION_ENCRYPTION


# -- through bellows ---------------------------------------------------------------------------------------


class RecordingApp(bellows.zigbee.application.ControllerApplication):
    """bellows' own app; it records what it hands zigpy."""

    received: list[zt.ZigbeePacket]

    def packet_received(self, packet: zt.ZigbeePacket) -> None:
        self.received.append(packet)
        super().packet_received(packet)


async def start_recording_app(url: str) -> RecordingApp:
    app = RecordingApp(
        {
            "device": {"path": url},
            "use_thread": False,
            "database_path": None,
            "backup_enabled": False,
            "topology_scan_enabled": False,
            "ota": {"providers": [], "broadcast_enabled": False},
            "network": {"channel": 15},
        }
    )
    app.received = []
    async with asyncio.timeout(30):
        await app.startup(auto_form=True)
    return app


class SecureNode(Node):
    """A device that answers every APS-secured frame with one of its own, under the same link key."""

    def __init__(self, context: SecurityContext, trust_centre: zt.EUI64) -> None:
        super().__init__()
        self.context = context
        self.trust_centre = trust_centre

    def receive(self, packet: zt.ZigbeePacket) -> None:
        super().receive(packet)
        if isinstance(packet.data, SecuredApsFrame):
            opened = self.context.unsecure(packet.data.serialize(), self.trust_centre).frame
            reply = struct.pack("<BBHHBB", 0x00, 1, 0x0019, 0x0109, 2, 0x33) + opened[8:][::-1]
            asyncio.get_running_loop().call_soon(
                self.air.send,
                zt.ZigbeePacket(
                    src=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=self.nwk),
                    src_ep=2,
                    dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=0x0000),
                    dst_ep=1,
                    tsn=0x33,
                    profile_id=0x0109,
                    cluster_id=0x0019,
                    data=SecuredApsFrame(self.context.secure(reply, self.trust_centre)),
                ),
            )


@pytest.mark.parametrize("version", [8, 13, 14])
@real_time
async def test_bellows_installs_keys_and_its_aps_encrypted_unicast_round_trips(version: int) -> None:
    air = Air(seed=version)
    async with VirtualNcp(air, ezsp_version=version, seed=version) as ncp:
        app = await start_recording_app(ncp.url or "")
        try:
            # bellows' permit_with_link_key: a transient key (addTransientLinkKey / importTransientKey) and the
            # install-code policy, then joining opens.
            # zigpy's startup `permit(0)` went through bellows' pre_permit, which put the well-known key in the
            # transient table for any joiner (the wildcard EUI-64): a GB trust centre must clear it.
            await app.permit_with_link_key(zt.EUI64(DEVICE), zt.KeyData(CODE_KEY), 60)
            assert ncp.stack.join_keys(DEVICE) == [CODE_KEY, b"ZigBeeAlliance09"]
            assert ncp.stack.join_keys(OTHER) == [b"ZigBeeAlliance09"]
            await app._ezsp.clearTransientLinkKeys()
            assert ncp.stack.join_keys(OTHER) == []
            context = SecurityContext(zt.EUI64(DEVICE))
            context.set_link_key(zt.EUI64(ncp.stack.ieee), CODE_KEY, KeyOrigin.CBKE)
            node = SecureNode(context, zt.EUI64(ncp.stack.ieee))
            node.air = air
            air.join(node)
            # bellows erases the key-table entry of a device that joins (cleanup_tc_link_key): keys come after.
            async with asyncio.timeout(5):
                while ncp.counters.commands["findKeyTableEntry"] == 0:
                    await asyncio.sleep(0.01)
            # bellows' own key-table writer (addOrUpdateKeyTableEntry / importLinkKey) and reader.
            await app._ezsp.write_link_keys([zigpy.state.Key(key=zt.KeyData(CODE_KEY), partner_ieee=DEVICE)])
            if version < 14:
                keys = [(bytes(k.key), k.partner_ieee) async for k in app._ezsp.read_link_keys()]
            else:
                # bellows' v13 reader unpacks v13's field order, which v14 changed: read by name here.
                names = list(app._ezsp.COMMANDS["exportLinkKeyByIndex"][2])
                read = dict(zip(names, await app._ezsp.exportLinkKeyByIndex(index=0), strict=True))
                keys = [(bytes(read["plaintext_key"]), read["context"].eui64)]
            assert keys == [(CODE_KEY, DEVICE)]

            request = zt.ZigbeePacket(
                src=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=0x0000),
                src_ep=1,
                dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=DEVICE_NWK),
                dst_ep=2,
                tsn=0x21,
                profile_id=0x0109,
                cluster_id=0x0019,
                data=zt.SerializableBytes(b"\x19\x21\x05\x00\x01\x02\x03"),
                tx_options=zt.TransmitOptions.ACK | zt.TransmitOptions.APS_Encryption,
            )
            async with asyncio.timeout(10):
                await app.send_packet(request)
                while not any(p.cluster_id == 0x0019 for p in app.received):
                    await asyncio.sleep(0.01)
            [secured] = node.received[-1:]
            assert isinstance(secured.data, SecuredApsFrame)
            [reply] = [p for p in app.received if p.cluster_id == 0x0019]
            assert reply.tx_options & zt.TransmitOptions.APS_Encryption
            assert reply.data.serialize() == b"\x19\x21\x05\x00\x01\x02\x03"[::-1]
        finally:
            await app.shutdown()
