"""A virtual NCP that joins a Smart Energy network: install-code join, its trust centre's EUI-64, the TC link key
its host installs after CBKE, and APS-encrypted unicasts with the trust centre, EZSP v8, v13 and v14.

The joining stick is driven by bellows' own EZSP protocol layer (`bellows.ezsp.EZSP`: ASH, version negotiation,
command tables) over the NCP's in-process link on virtual time, as a device's host on a real stick would; the
trust centre's stack is driven through its command handler, as the CHF's bellows drives it. Secured frames on
the air are opened with `cryptography`'s AES-CCM from the Zigbee nonce rules (05-3474 §4.5), not with the
emulator's own CCM* code.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bellows.ezsp
import bellows.types as bt
import pytest
import zigpy.config
import zigpy.types as zt
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from se_vectors import SUITE1, SUITE2, ephemeral_key_of
from test_ncp_joining import call
from test_ncp_security import exchange, make_stack, status_ok
from test_ncp_security_cbke import bellows_callback, callback, install

from emulator.ncp.counters import NcpCounters
from emulator.ncp.ezsp import EzspCodec
from emulator.ncp.faults import Faults
from emulator.ncp.joining import WELL_KNOWN_LINK_KEY
from emulator.ncp.server import VirtualNcp
from emulator.ncp.stack import EmberStack
from emulator.ncp.state import NetworkState, StateFileError
from emulator.radio.air import Air
from emulator.radio.secure import SecuredApsFrame
from emulator.security.install_code import InstallCode

pytestmark = pytest.mark.virtual_time

OK = bt.sl_Status.OK
H = bytes.fromhex
# AN1089's install code and the link key it hashes to (SE_SECURITY.md §2).
INSTALL_CODE = InstallCode.parse("83FED3407A939723A5C639B26916D505C3B5")
CODE_KEY = H("66B6900981E1EE3CA4206B6B861C02BB")
TC_OWN_KEY = bytes(range(0x40, 0x50))  # the trust centre's own preconfigured key: neither of the two above
NETWORK_KEY = bytes(range(16))
LINK_KEY = H("0123456789ABCDEF0011223344556677")  # what CBKE gave both sides
OTHER_KEY = H("F0E1D2C3B4A5968778695A4B3C2D1E0F")
CHANNEL = 20
PAN = 0x5E5E
EXT_PAN = bt.ExtendedPanId.convert("53:45:53:45:53:45:53:45")
DECISION = bt.EzspDecisionBitmask
Callbacks = list[tuple[str, Any]]


def security(key: bytes, *, network_key: bytes = bytes(16)) -> bt.EmberInitialSecurityState:
    bits = bt.EmberInitialSecurityBitmask
    bitmask = bits.HAVE_PRECONFIGURED_KEY | (bits.HAVE_NETWORK_KEY if any(network_key) else bits.REQUIRE_ENCRYPTED_KEY)
    return bt.EmberInitialSecurityState(
        bitmask=bitmask,
        preconfiguredKey=bt.KeyData(key),
        networkKey=bt.KeyData(network_key),
        networkKeySequenceNumber=0,
        preconfiguredTrustCenterEui64=bt.EUI64.convert("00:00:00:00:00:00:00:00"),
    )


def network_parameters(pan: int = PAN) -> bt.EmberNetworkParameters:
    return bt.EmberNetworkParameters(
        extendedPanId=EXT_PAN,
        panId=pan,
        radioTxPower=8,
        radioChannel=CHANNEL,
        joinMethod=bt.EmberJoinMethod.USE_MAC_ASSOCIATION,
        nwkManagerId=0,
        nwkUpdateId=0,
        channels=bt.Channels.from_channel_list([CHANNEL]),
    )


def form_se_trust_centre(tc: EmberStack, joiner: zt.EUI64) -> Callbacks:
    """An SE trust centre as the CHF sets one up: no global link key, the joiner's install-code key as a
    transient key, and a TRUST_CENTER_POLICY that admits only joiners holding one."""
    seen: Callbacks = []
    tc.sink = lambda name, values: seen.append((name, values))
    assert call(tc, "setInitialSecurityState", state=security(TC_OWN_KEY, network_key=NETWORK_KEY))["status"] == OK
    assert call(tc, "formNetwork", parameters=network_parameters())["status"] == OK
    imported = call(tc, "importTransientKey", eui64=joiner, plaintext_key=bt.KeyData(INSTALL_CODE.key), flags=0)
    assert imported["status"] == OK
    policy = DECISION.ALLOW_JOINS | DECISION.JOINS_USE_INSTALL_CODE_KEY
    assert call(tc, "setPolicy", policyId=bt.EzspPolicyId.TRUST_CENTER_POLICY, decisionId=policy)["status"] == OK
    assert call(tc, "permitJoining", duration=0xFF)["status"] == OK
    return seen


def tc_install(tc: EmberStack, joiner: zt.EUI64, key: bytes) -> None:
    """The CHF's step after CBKE (SE_SECURITY.md §7): importLinkKey at the joiner's entry or a free slot."""
    index = call(tc, "findKeyTableEntry", address=joiner, linkKey=True)["index"]
    if index == 0xFF:
        index = next(i for i, entry in enumerate(tc.state.key_table) if entry is None)
    assert call(tc, "importLinkKey", index=index, address=joiner, key=bt.KeyData(key))["status"] == OK


def se_aps(*, sequence: int) -> bt.EmberApsFrame:
    return bt.EmberApsFrame(
        profileId=0x0109,
        clusterId=0x0019,
        sourceEndpoint=1,
        destinationEndpoint=1,
        options=bt.EmberApsOption.APS_OPTION_RETRY | bt.EmberApsOption.APS_OPTION_ENCRYPTION,
        groupId=0,
        sequence=sequence,
    )


def tc_send(tc: EmberStack, nwk: int, payload: bytes, *, sequence: int) -> bt.sl_Status:
    answer = call(
        tc,
        "sendUnicast",
        type=bt.EmberOutgoingMessageType.OUTGOING_DIRECT,
        indexOrDestination=nwk,
        apsFrame=se_aps(sequence=sequence),
        messageTag=1,
        messageContents=payload,
    )
    return bt.sl_Status(answer["status"])


def ccm_open(key: bytes, frame: bytes) -> tuple[bytes, bytes]:
    """(source IEEE as sent, payload) of an APS data frame secured under `key` with the extended nonce, opened
    from first principles: nonce = source ‖ counter ‖ security control with level 5, authenticated data = APS
    header ‖ auxiliary header with level 5, 4-byte MIC (05-3474 §4.5.2.2, §4.4.1.2)."""
    header, control = frame[:8], frame[8]
    assert header[0] & 0x20 and control == 0x20  # APS security bit; key id 0 (data key), extended nonce
    counter, source = frame[9:13], frame[13:21]
    level = bytes([control | 5])
    payload = AESCCM(key, tag_length=4).decrypt(source + counter + level, frame[21:], header + level + counter + source)
    return source, payload


class Stick:
    """A joining stick's host: bellows' EZSP on the NCP's in-process link, and the callbacks it heard."""

    def __init__(self, ezsp: bellows.ezsp.EZSP) -> None:
        self.ezsp = ezsp
        self.seen: Callbacks = []
        ezsp.add_callback(lambda name, args: self.seen.append((name, args)))

    @classmethod
    async def connect(cls, ncp: VirtualNcp) -> Stick:
        ezsp = bellows.ezsp.EZSP(zigpy.config.SCHEMA_DEVICE({"path": ncp.url}))
        await ezsp.connect(use_thread=False)
        return cls(ezsp)

    @property
    def version(self) -> int:
        return int(self.ezsp.ezsp_version)

    def named(self, frame: str) -> list[dict[str, Any]]:
        """The callbacks `frame` heard, by their names in this version's table (v14 renamed many)."""
        _, _, schema = self.ezsp._protocol.COMMANDS[frame]
        return [dict(zip(schema, args, strict=True)) for name, args in self.seen if name == frame]

    async def join(self, key: bytes) -> bt.sl_Status:
        """setInitialSecurityState with `key` as the preconfigured key, then joinNetwork: the stack status the
        join ends with (NETWORK_UP, or the trust centre's refusal)."""
        (status,) = await self.ezsp.setInitialSecurityState(state=security(key))
        assert bt.sl_Status.from_ember_status(status) == OK
        up = bt.sl_Status.NETWORK_UP
        refused = bt.sl_Status.ZIGBEE_NO_NETWORK_KEY_RECEIVED
        with self.ezsp.wait_for_stack_status(up) as joined, self.ezsp.wait_for_stack_status(refused) as turned_away:
            parameters = network_parameters(0xFFFF)
            (status,) = await self.ezsp.joinNetwork(nodeType=bt.EmberNodeType.END_DEVICE, parameters=parameters)
            assert bt.sl_Status.from_ember_status(status) == OK
            done, _ = await asyncio.wait([joined, turned_away], timeout=5, return_when=asyncio.FIRST_COMPLETED)
        return next(iter(done)).result()

    async def install_tc_link_key(self, trust_centre: zt.EUI64, key: bytes) -> None:
        """What the device's host does after CBKE: v13+ importKey TC_LINK, v8 a key-table entry for the TC."""
        if self.version >= 13:
            context = bt.SecurityManagerContextV13(
                core_key_type=bt.SecurityManagerKeyType.TC_LINK,
                key_index=0,
                derived_type=bt.SecurityManagerDerivedKeyTypeV13.NONE,
                eui64=trust_centre,
                multi_network_index=0,
                flags=bt.SecurityManagerContextFlags.NONE,
                psa_key_alg_permission=0,
            )
            status, *_ = await self.ezsp.importKey(context=context, key=bt.KeyData(key))
        else:
            (status,) = await self.ezsp.addOrUpdateKeyTableEntry(
                address=trust_centre, linkKey=True, keyData=bt.KeyData(key)
            )
        assert bt.sl_Status.from_ember_status(status) == OK

    async def tc_link_key(self) -> bytes:
        """The key the stack reports for its trust centre (v13+ exportKey TC_LINK; v8 the TC's key-table entry)."""
        if self.version >= 13:
            context = bt.SecurityManagerContextV13(
                core_key_type=bt.SecurityManagerKeyType.TC_LINK,
                key_index=0,
                derived_type=bt.SecurityManagerDerivedKeyTypeV13.NONE,
                eui64=bt.EUI64.convert("00:00:00:00:00:00:00:00"),
                multi_network_index=0,
                flags=bt.SecurityManagerContextFlags.NONE,
                psa_key_alg_permission=0,
            )
            values = await self.ezsp.exportKey(context=context)
            status, key = (values[0], values[1]) if self.version >= 14 else (values[1], values[0])
            assert bt.sl_Status.from_ember_status(status) == OK
            return bytes(key)
        status, key_struct = await self.ezsp.getKey(keyType=bt.EmberKeyType.TRUST_CENTER_LINK_KEY)
        assert bt.sl_Status.from_ember_status(status) == OK
        return bytes(key_struct.key)

    async def send(self, payload: bytes, *, sequence: int) -> bt.sl_Status:
        status, _ = await self.ezsp.send_unicast(
            nwk=0x0000, aps_frame=se_aps(sequence=sequence), message_tag=2, data=payload
        )
        return bt.sl_Status.from_ember_status(status)

    def received(self) -> list[tuple[bt.EmberApsOption, bytes]]:
        """(APS options, message) of every incomingMessageHandler from the trust centre."""
        got = []
        for values in self.named("incomingMessageHandler"):
            aps = values.get("aps_frame", values.get("apsFrame"))
            sender = values.get("nwk", values.get("sender"))
            assert sender == 0x0000
            got.append((aps.options, bytes(values.get("message", values.get("messageContents")))))
        return got


def tc_received(seen: Callbacks, cluster: int = 0x0019) -> list[tuple[bt.EmberApsOption, int, bytes]]:
    return [
        (v["apsFrame"].options, v["sender"], bytes(v["messageContents"]))
        for name, v in seen
        if name == "incomingMessageHandler" and v["apsFrame"].clusterId == cluster
    ]


async def until(probe: Callable[[], Any], within: float = 5.0) -> Any:
    async with asyncio.timeout(within):
        while not (value := probe()):
            await asyncio.sleep(0.01)
    return value


def secured_on_air(taps: list[zt.ZigbeePacket], src: int) -> list[bytes]:
    return [p.data.serialize() for p in taps if isinstance(p.data, SecuredApsFrame) and p.src.address == src]


ENCRYPTED = bt.EmberApsOption.APS_OPTION_ENCRYPTION


@pytest.mark.parametrize("version", [8, 13, 14])
async def test_install_code_join_then_tc_link_key_secures_unicasts_both_ways_across_a_restart(
    tmp_path: Path, version: int
) -> None:
    assert INSTALL_CODE.key == CODE_KEY
    air = Air(seed=11)
    on_air: list[zt.ZigbeePacket] = []
    air.add_tap(lambda packet, at: on_air.append(packet))
    path = tmp_path / "stick.json"
    async with VirtualNcp(air, seed=1) as coordinator:
        tc = coordinator.stack
        ncp = VirtualNcp(air, seed=2, ezsp_version=version, state_path=path)
        await ncp.start()
        joiner = ncp.stack.ieee
        tc_seen = form_se_trust_centre(tc, joiner)
        stick = await Stick.connect(ncp)
        try:
            # The well-known key gets no network key from an install-code-only trust centre; the code key does.
            assert await stick.join(WELL_KNOWN_LINK_KEY) == bt.sl_Status.ZIGBEE_NO_NETWORK_KEY_RECEIVED
            assert (await stick.ezsp.networkState())[0] == bt.EmberNetworkStatus.NO_NETWORK
            assert await stick.join(CODE_KEY) == bt.sl_Status.NETWORK_UP
            (nwk,) = await stick.ezsp.getNodeId()
            status, current = await stick.ezsp.getCurrentSecurityState()
            assert bt.sl_Status.from_ember_status(status) == OK
            assert current.trustCenterLongAddress == tc.ieee != joiner
            assert await stick.tc_link_key() == CODE_KEY
            (tc_status, tc_current) = call(tc, "getCurrentSecurityState").values()
            assert (tc_status, tc_current.trustCenterLongAddress) == (OK, tc.ieee)  # the TC names itself

            # Before CBKE the joiner's key with its TC is the install-code key; this TC keeps no entry for it.
            assert await stick.send(b"\x01\x00\x01", sequence=1) == OK
            await asyncio.sleep(0.1)
            assert ccm_open(CODE_KEY, secured_on_air(on_air, nwk)[-1]) == (bytes(joiner), b"\x01\x00\x01")
            assert tc_received(tc_seen) == [] and tc.counters.air["aps_no_key"] == 1

            # CBKE done: both sides install the same link key.
            tc_install(tc, joiner, LINK_KEY)
            await stick.install_tc_link_key(tc.ieee, LINK_KEY)
            if version >= 13:
                assert await stick.tc_link_key() == LINK_KEY
            assert await stick.send(b"\x01\x09\x01\x02", sequence=2) == OK
            assert await until(lambda: tc_received(tc_seen)) == [(ENCRYPTED, nwk, b"\x01\x09\x01\x02")]
            assert ccm_open(LINK_KEY, secured_on_air(on_air, nwk)[-1]) == (bytes(joiner), b"\x01\x09\x01\x02")
            assert tc_send(tc, nwk, b"\x19\x05\x02\x00", sequence=3) == OK
            got = await until(stick.received)
            assert [(ENCRYPTED in options, message) for options, message in got] == [(True, b"\x19\x05\x02\x00")]
            assert ccm_open(LINK_KEY, secured_on_air(on_air, 0x0000)[-1]) == (bytes(tc.ieee), b"\x19\x05\x02\x00")
        finally:
            await stick.ezsp.disconnect()
            await ncp.stop()

        # The stick's NCP restarts from its state file: the key and the trust centre are still there.
        saved = NetworkState.from_json(path.read_text())
        assert saved.trust_centre == tc.ieee
        ncp = VirtualNcp(air, seed=2, ezsp_version=version, state_path=path)
        await ncp.start()
        stick = await Stick.connect(ncp)
        try:
            with stick.ezsp.wait_for_stack_status(bt.sl_Status.NETWORK_UP) as up:
                (status,) = await stick.ezsp.networkInit(networkInitBitmask=0)
                assert bt.sl_Status.from_ember_status(status) == OK
                async with asyncio.timeout(5):
                    await up
            status, current = await stick.ezsp.getCurrentSecurityState()
            assert current.trustCenterLongAddress == tc.ieee
            assert await stick.send(b"\x01\x0a\x03", sequence=4) == OK
            got_tc = await until(lambda: tc_received(tc_seen)[1:])
            assert got_tc == [(ENCRYPTED, nwk, b"\x01\x0a\x03")]
            assert tc_send(tc, nwk, b"\x19\x06\x05", sequence=5) == OK
            got = await until(stick.received)
            assert [(ENCRYPTED in options, message) for options, message in got] == [(True, b"\x19\x06\x05")]
        finally:
            await stick.ezsp.disconnect()
            await ncp.stop()


@pytest.mark.parametrize("version", [8, 13, 14])
async def test_a_joiner_holding_another_key_gets_nothing_through(tmp_path: Path, version: int) -> None:
    air = Air(seed=12)
    async with (
        VirtualNcp(air, seed=1) as coordinator,
        VirtualNcp(air, seed=2, ezsp_version=version, state_path=tmp_path / "stick.json") as ncp,
    ):
        tc = coordinator.stack
        tc_seen = form_se_trust_centre(tc, ncp.stack.ieee)
        stick = await Stick.connect(ncp)
        try:
            assert await stick.join(CODE_KEY) == bt.sl_Status.NETWORK_UP
            (nwk,) = await stick.ezsp.getNodeId()
            tc_install(tc, ncp.stack.ieee, LINK_KEY)
            await stick.install_tc_link_key(tc.ieee, OTHER_KEY)
            assert await stick.send(b"\x01\x09\x01\x02", sequence=1) == OK  # sent: the MIC fails at the TC
            await asyncio.sleep(0.2)
            assert tc_received(tc_seen) == []
            assert tc.counters.air["aps_not_opened"] == 1
            assert tc_send(tc, nwk, b"\x19\x05\x02\x00", sequence=2) == OK
            await asyncio.sleep(0.2)
            assert stick.received() == [] and ncp.stack.counters.air["aps_not_opened"] == 1
        finally:
            await stick.ezsp.disconnect()


# -- importKey and exportKey, byte for byte -----------------------------------------------------------------


def _tc_link_context(eui64: bytes) -> bytes:
    """SecurityManagerContextV13 by hand (EZSP v13+ sl_zb_sec_man_context_t): core key type u8, key index u8,
    derived type u16, EUI-64, network index u8, flags u8, PSA algorithm permission u32."""
    return bytes([bt.SecurityManagerKeyType.TC_LINK, 0]) + H("0000") + eui64 + H("00 00") + H("00000000")


@pytest.mark.parametrize("version", [13, 14])
def test_importKey_tc_link_frame_sets_the_tc_link_key_and_other_types_are_refused(version: int) -> None:
    protocol = getattr(importlib.import_module(f"bellows.ezsp.v{version}"), f"EZSPv{version}")(None, None)
    codec = EzspCodec(version)
    eui64 = H("0807060504030201")
    frame = H("00 00 01 1501") + _tc_link_context(eui64) + LINK_KEY
    context = bt.SecurityManagerContextV13.deserialize(_tc_link_context(eui64))[0]
    assert protocol._ezsp_frame("importKey", context=context, key=bt.KeyData(LINK_KEY)) == frame
    command = codec.parse(frame)
    state = NetworkState.new(seed=5)
    state.tc_link_rx_counter = 77
    stack = EmberStack(
        version=version,
        air=Air(seed=5),
        state=state,
        faults=Faults(),
        rng=random.Random(5),
        counters=NcpCounters(),
        persist=lambda: None,
    )
    answer = stack.handle("importKey", codec.decode_params(command))
    assert answer is not None
    reply = codec.encode(command.seq, *answer)
    expected = H("00 80 01 1501 00000000") + (_tc_link_context(eui64) if version >= 14 else b"")
    assert reply == expected
    assert (state.tc_link_key, state.tc_link_rx_counter) == (LINK_KEY.hex(), 0)
    # A network-key import (which this NCP does not take over the host's head) and a derived type are refused.
    for key_type, derived in ((bt.SecurityManagerKeyType.NETWORK, 0), (bt.SecurityManagerKeyType.TC_LINK, 1)):
        refused = context.replace(core_key_type=key_type, derived_type=derived)
        values = stack.handle("importKey", {"context": refused, "key": bt.KeyData(OTHER_KEY)})
        assert values is not None and values[1]["status"] == bt.sl_Status.INVALID_PARAMETER
        assert codec.encode(7, *values)[5:9] == H("21000000")  # SL_STATUS_INVALID_PARAMETER on the wire
    assert state.tc_link_key == LINK_KEY.hex() and state.network_key == "00" * 16


def test_state_files_without_a_trust_centre_still_load_and_new_ones_keep_it() -> None:
    old = NetworkState.new(seed=9)
    data = old.to_json()
    for line in ('  "trust_centre_eui64": null,\n', '  "tc_link_rx_counter": 0,\n', '  "cbke_data": {},\n'):
        assert line in data
        data = data.replace(line, "")
    loaded = NetworkState.from_json(data)
    assert (loaded.trust_centre, loaded.tc_link_rx_counter, loaded.cbke_data) == (None, 0, {})
    loaded.trust_centre_eui64 = "0011223344556677"
    loaded.tc_link_rx_counter = 5
    again = NetworkState.from_json(loaded.to_json())
    assert again.trust_centre == zt.EUI64.convert("00:11:22:33:44:55:66:77")
    assert again.tc_link_rx_counter == 5
    loaded.forget_network()
    assert loaded.trust_centre is None


# -- CBKE on the NCPs: the joined node initiates, its trust centre responds --------------------------------


async def tc_callback(seen: Callbacks, name: str) -> dict[str, Any]:
    found = await until(lambda: [values for frame, values in seen if frame == name])
    return dict(found[-1])


@pytest.mark.parametrize("version", [8, 13, 14])
@pytest.mark.parametrize("suffix", ["", "283k1"], ids=["suite1", "suite2"])
async def test_ncp_cbke_initiated_by_the_joined_node_gives_both_sides_the_tc_link_key(
    tmp_path: Path, version: int, suffix: str
) -> None:
    air = Air(seed=13)
    async with (
        VirtualNcp(air, seed=1) as coordinator,
        VirtualNcp(air, seed=2, ezsp_version=version, state_path=tmp_path / "stick.json") as ncp,
    ):
        tc, joiner = coordinator.stack, ncp.stack.ieee
        tc_seen = form_se_trust_centre(tc, joiner)
        stick = await Stick.connect(ncp)
        ezsp = stick.ezsp
        try:
            assert await stick.join(CODE_KEY) == bt.sl_Status.NETWORK_UP
            (nwk,) = await ezsp.getNodeId()
            # Each side makes its ephemeral key pair; the certificates are the NCPs' own (the bundled test CA's).
            (status,) = await getattr(ezsp, f"generateCbkeKeys{suffix}")()
            assert bt.sl_Status.from_ember_status(status) == OK
            assert call(tc, f"generateCbkeKeys{suffix}")["status"] == OK
            mine = (await until(lambda: stick.named(f"generateCbkeKeysHandler{suffix}")))[0]
            theirs = await tc_callback(tc_seen, f"generateCbkeKeysHandler{suffix}")
            status, my_certificate = await getattr(ezsp, f"getCertificate{suffix}")()
            their_certificate = call(tc, f"getCertificate{suffix}")["localCert"]
            # The joined node is the initiator (SE practice), the trust centre the responder.
            (status,) = await getattr(ezsp, f"calculateSmacs{suffix}")(
                amInitiator=True,
                partnerCertificate=their_certificate,
                partnerEphemeralPublicKey=theirs["ephemeralPublicKey"],
            )
            assert bt.sl_Status.from_ember_status(status) == OK
            answer = call(
                tc,
                f"calculateSmacs{suffix}",
                amInitiator=False,
                partnerCertificate=my_certificate,
                partnerEphemeralPublicKey=mine["ephemeralPublicKey"],
            )
            assert answer["status"] == OK
            my_smacs = (await until(lambda: stick.named(f"calculateSmacsHandler{suffix}")))[0]
            their_smacs = await tc_callback(tc_seen, f"calculateSmacsHandler{suffix}")
            assert bytes(my_smacs["initiatorSmac"]) == bytes(their_smacs["initiatorSmac"])
            assert bytes(my_smacs["responderSmac"]) == bytes(their_smacs["responderSmac"])

            (status,) = await getattr(ezsp, f"clearTemporaryDataMaybeStoreLinkKey{suffix}")(storeLinkKey=True)
            assert bt.sl_Status.from_ember_status(status) == OK
            assert call(tc, f"clearTemporaryDataMaybeStoreLinkKey{suffix}", storeLinkKey=True)["status"] == OK
            # The joined node stored the key as its TC link key; the trust centre in its key table.
            key = bytes.fromhex(ncp.stack.state.tc_link_key)
            assert key != CODE_KEY and tc.link_key_for(joiner) == key
            assert all(entry is None for entry in ncp.stack.state.key_table)
            assert await stick.tc_link_key() == key
            established = await until(lambda: stick.named("zigbeeKeyEstablishmentHandler"))
            trust_centre_key = bt.EmberKeyStatus.TRUST_CENTER_LINK_KEY_ESTABLISHED
            assert [(e["partner"], e["status"]) for e in established] == [(tc.ieee, trust_centre_key)]
            assert await tc_callback(tc_seen, "zigbeeKeyEstablishmentHandler") == {
                "partner": joiner,
                "status": trust_centre_key,
            }

            # And APS encryption with the trust centre now uses it, both ways.
            assert await stick.send(b"\x01\x09\x01\x02", sequence=1) == OK
            assert await until(lambda: tc_received(tc_seen)) == [(ENCRYPTED, nwk, b"\x01\x09\x01\x02")]
            assert tc_send(tc, nwk, b"\x19\x05\x02\x00", sequence=2) == OK
            got = await until(stick.received)
            assert [(ENCRYPTED in options, message) for options, message in got] == [(True, b"\x19\x05\x02\x00")]
        finally:
            await ezsp.disconnect()


@pytest.mark.parametrize("partner_is_trust_centre", [False, True], ids=["other-node", "trust-centre"])
async def test_cbke_key_storage_and_status_follow_the_partner(tmp_path: Path, partner_is_trust_centre: bool) -> None:
    """Annex C suite 1 on a joined node (V responds to U): with U as its trust centre the key becomes the TC link
    key; with U another node it goes into the key table, or fails with KEY_TABLE_FULL when there is no room."""
    stack, callbacks = make_stack(tmp_path, 13)
    partner = zt.EUI64(H(SUITE1.u.eui)[::-1])
    stack.state.trust_centre_eui64 = SUITE1.u.eui if partner_is_trust_centre else "0011223344556677"
    install(stack, SUITE1, SUITE1.v)
    stack.cbke_ephemeral = lambda curve: ephemeral_key_of(SUITE1, SUITE1.v)

    async def agree() -> dict[str, Any]:
        assert status_ok(exchange(stack, "generateCbkeKeys"))
        await callback(callbacks, "generateCbkeKeysHandler")
        exchange(stack, "calculateSmacs", amInitiator=False, partnerCertificate=H(SUITE1.u.cert),
                 partnerEphemeralPublicKey=H(SUITE1.u.q_e))  # fmt: skip
        await callback(callbacks, "calculateSmacsHandler")
        answer = exchange(stack, "clearTemporaryDataMaybeStoreLinkKey", storeLinkKey=True)
        established = await callback(callbacks, "zigbeeKeyEstablishmentHandler")
        return answer | {"callback": bellows_callback(stack, "zigbeeKeyEstablishmentHandler", established)}

    done = await agree()
    assert status_ok(done)
    status = bt.EmberKeyStatus
    if partner_is_trust_centre:
        assert done["callback"] == {"partner": partner, "status": status.TRUST_CENTER_LINK_KEY_ESTABLISHED}
        assert (stack.state.tc_link_key, stack.state.key_table) == (SUITE1.key_data.lower(), [None] * 16)
        return
    assert done["callback"] == {"partner": partner, "status": status.APP_LINK_KEY_ESTABLISHED}
    assert stack.link_key_for(partner) == H(SUITE1.key_data) and stack.state.tc_link_key == "00" * 16
    call(stack, "clearKeyTable")
    for index in range(4):
        call(stack, "importLinkKey", index=index, address=zt.EUI64([index + 1] * 8), key=bt.KeyData(bytes(16)))
    full = await agree()
    assert full["status"] == bt.EmberStatus.TABLE_FULL and stack.link_key_for(partner) is None  # 0xB4 on the wire
    assert full["callback"] == {"partner": partner, "status": status.KEY_TABLE_FULL}


# -- CBKE credentials are manufacturing data: they outlive restarts -----------------------------------------


@pytest.mark.parametrize("version", [8, 13])
async def test_installed_cbke_credentials_survive_a_restart_and_a_token_factory_reset(
    tmp_path: Path, version: int
) -> None:
    path = tmp_path / "stick.json"
    ncp = VirtualNcp(Air(seed=14), seed=2, ezsp_version=version, state_path=path)
    await ncp.start()
    stick = await Stick.connect(ncp)
    ezsp = stick.ezsp
    try:
        (status,) = await ezsp.setPreinstalledCbkeData(
            caPublic=H(SUITE1.ca), myCert=H(SUITE1.u.cert), myKey=H(SUITE1.u.d_s)
        )
        assert bt.sl_Status.from_ember_status(status) == OK
        for value_id, data in (
            (bt.EzspValueId.VALUE_CERTIFICATE_283K1, SUITE2.v.cert),
            (bt.EzspValueId.VALUE_PUBLIC_KEY_283K1, SUITE2.ca),
            (bt.EzspValueId.VALUE_PRIVATE_KEY_283K1, SUITE2.v.d_s),
        ):
            (status,) = await ezsp.setValue(valueId=value_id, value=H(data))
            assert bt.sl_Status.from_ember_status(status) == OK
        (status,) = await ezsp.savePreinstalledCbkeData283k1()
        assert bt.sl_Status.from_ember_status(status) == OK
        if version >= 13:  # the network tokens go, the manufacturing data stays
            await ezsp.tokenFactoryReset(excludeOutgoingFC=False, excludeBootCounter=False)
    finally:
        await ezsp.disconnect()
        await ncp.stop()
    saved = NetworkState.from_json(path.read_text()).cbke_data
    assert (saved["1"].certificate, saved["1"].ca_public_key) == (SUITE1.u.cert.lower(), SUITE1.ca.lower())
    assert (saved["2"].certificate, saved["2"].private_key) == (SUITE2.v.cert.lower(), SUITE2.v.d_s.lower())

    ncp = VirtualNcp(Air(seed=15), seed=2, ezsp_version=version, state_path=path)
    await ncp.start()
    stick = await Stick.connect(ncp)
    try:
        status, certificate = await stick.ezsp.getCertificate()
        assert bytes(certificate) == H(SUITE1.u.cert)
        status, certificate = await stick.ezsp.getCertificate283k1()
        assert bytes(certificate) == H(SUITE2.v.cert)
    finally:
        await stick.ezsp.disconnect()
        await ncp.stop()


def test_a_state_file_whose_cbke_data_do_not_belong_together_is_refused_in_one_line() -> None:
    state = NetworkState.new(seed=9)
    mismatched = {"certificate": SUITE1.v.cert, "ca_public_key": SUITE1.ca, "private_key": SUITE1.u.d_s}
    text = state.to_json().replace('"cbke_data": {}', '"cbke_data": {"1": ' + json.dumps(mismatched) + "}")
    with pytest.raises(StateFileError, match=r"^state file ncp\.json: credentials: the private key does not match"):
        NetworkState.from_json(text, source="ncp.json")
    with pytest.raises(StateFileError, match=r'crypto suites "1" or "2", not \'3\''):
        NetworkState.from_json(text.replace('"1": {', '"3": {'), source="ncp.json")
