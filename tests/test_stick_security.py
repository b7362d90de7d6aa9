"""Smart Energy security of a device on a stick, at the radio (`StickRadio` with `StickSecurity`), on a virtual NCP
through bellows' EZSP layer, for each EZSP version: the join under the install-code key, the trust centre named by
the stick, the CBKE key installed in the NCP the way the version allows, and the SE rule on frames both ways (OTA
APS-encrypted out, OTA in the clear dropped, other clusters untouched). The trust centre is a coordinator stack
driven through its command handler, set up as `ota-emu chf` sets up its NCP."""

from __future__ import annotations

import asyncio

import bellows.types as bt
import pytest
import zigpy.types as zt
from test_ncp_joining import call, form, named, unicast, until
from test_stick_radio import ENDPOINT, Recorder, ota_frame

from emulator.chf.node import RadioError
from emulator.ncp.server import VirtualNcp
from emulator.ncp.stack import EmberStack
from emulator.radio.air import Air
from emulator.radio.secure import DroppedFrame, DropReason
from emulator.radio.stick import JoinPlan, Role, StickRadio
from emulator.radio.stick_security import StickSecurity
from emulator.security.install_code import InstallCode

pytestmark = pytest.mark.virtual_time

INSTALL_CODE = InstallCode.parse("83FED3407A939723A5C639B26916D505")  # AN1089's example code
CBKE_KEY = bytes.fromhex("0F1E2D3C4B5A69788796A5B4C3D2E1F0")
INSTALL_CODE_JOINS = 0x0011  # EzspDecisionBitmask ALLOW_JOINS | JOINS_USE_INSTALL_CODE_KEY


def smart_energy_trust_centre(stack: EmberStack, joiner: zt.EUI64) -> list[tuple[str, object]]:
    """Form the network and admit `joiner` by its install-code key only, as `ota-emu chf` does."""
    seen = form(stack)
    assert call(stack, "clearTransientLinkKeys") == {}
    assert call(stack, "addTransientLinkKey", partner=joiner, transientKey=bt.KeyData(INSTALL_CODE.key))["status"] == 0
    call(stack, "setPolicy", policyId=bt.EzspPolicyId.TRUST_CENTER_POLICY, decisionId=INSTALL_CODE_JOINS)
    return seen


def send_from_trust_centre(stack: EmberStack, dst: int, payload: bytes, *, cluster: int, encrypt: bool) -> None:
    unicast(stack, dst, payload, cluster=cluster, encrypt=encrypt, sequence=payload[1])


@pytest.mark.parametrize("version", [8, 13, 14])
async def test_a_device_joins_by_install_code_installs_its_cbke_key_and_keeps_the_se_rule(version: int) -> None:
    air = Air(seed=21)
    async with (
        VirtualNcp(air, seed=1) as coordinator,
        VirtualNcp(air, seed=2, ezsp_version=version) as stick,
    ):
        tc_seen = smart_energy_trust_centre(coordinator.stack, stick.stack.ieee)
        dropped: list[DroppedFrame] = []
        security = StickSecurity(on_drop=dropped.append)
        plan = JoinPlan(Role.END_DEVICE, join_timeout=10, link_key=lambda ieee: INSTALL_CODE.key)
        radio = StickRadio(stick.url or "", plan, security=security)
        joined = await radio.open(ENDPOINT)
        try:
            node = Recorder(joined.nwk, joined.ieee)
            radio.join(node)
            # The stick names the trust centre it got the network key from.
            assert await radio.trust_centre() == coordinator.stack.ieee
            [admitted] = named(tc_seen, "trustCenterJoinHandler")
            assert admitted["newNodeEui64"] == joined.ieee

            # CBKE gave both ends a key: the trust centre's key table, and the stick (as the version allows).
            call(coordinator.stack, "addOrUpdateKeyTableEntry", address=joined.ieee, linkKey=True,
                 keyData=bt.KeyData(CBKE_KEY))  # fmt: skip
            assert not security.link_key_in_use
            await radio.install_link_key(coordinator.stack.ieee, CBKE_KEY)
            assert security.link_key_in_use

            # Out: the device's OTA frame goes APS-encrypted, and the trust centre's NCP opens it with the key.
            radio.send(ota_frame(joined.nwk, b"\x01\x30\x01"))
            [got] = await until(
                lambda: [v for n, v in tc_seen if n == "incomingMessageHandler" and v["apsFrame"].clusterId == 0x19]
            )
            assert got["messageContents"] == b"\x01\x30\x01"
            assert bt.EmberApsOption.APS_OPTION_ENCRYPTION in got["apsFrame"].options

            # In: an APS-encrypted OTA frame is taken (and says so); the same in the clear is dropped and reported;
            # a cluster outside the SE list (Basic) in the clear is taken.
            tc = coordinator.stack
            send_from_trust_centre(tc, joined.nwk, b"\x19\x31\x02", cluster=0x0019, encrypt=True)
            send_from_trust_centre(tc, joined.nwk, b"\x19\x32\x02", cluster=0x0019, encrypt=False)
            send_from_trust_centre(tc, joined.nwk, b"\x18\x33\x0a", cluster=0x0000, encrypt=False)
            await until(lambda: len(node.received) >= 2 and dropped)
            await asyncio.sleep(0.2)
            assert [(p.cluster_id, p.data.serialize()) for p in node.received] == [
                (0x0019, b"\x19\x31\x02"),
                (0x0000, b"\x18\x33\x0a"),
            ]
            assert [bool(p.tx_options & zt.TransmitOptions.APS_Encryption) for p in node.received] == [True, False]
            [drop] = dropped
            assert (drop.sender_nwk, drop.sender, drop.cluster_id, drop.command_id, drop.reason) == (
                0x0000,
                coordinator.stack.ieee,
                0x0019,
                0x02,
                DropReason.UNENCRYPTED,
            )
        finally:
            await radio.close()


async def test_a_stick_without_the_install_code_key_is_not_let_in() -> None:
    air = Air(seed=22)
    async with VirtualNcp(air, seed=1) as coordinator, VirtualNcp(air, seed=2) as stick:
        smart_energy_trust_centre(coordinator.stack, stick.stack.ieee)
        wrong = InstallCode.parse("0102030405060708090A0B0C0D0E0F10")
        plan = JoinPlan(Role.END_DEVICE, join_timeout=2, link_key=wrong.key)
        radio = StickRadio(stick.url or "", plan, security=StickSecurity())
        with pytest.raises(RadioError, match="NO_NETWORK_KEY_RECEIVED"):
            await radio.open(ENDPOINT)
        await radio.close()


async def test_before_key_establishment_no_ota_frame_is_taken() -> None:
    """Between the join and the CBKE key (`application_ready` False) an OTA frame, even APS-encrypted under the
    install-code key, is not the device's to take (CBKE precedes application traffic)."""
    air = Air(seed=23)
    async with VirtualNcp(air, seed=1) as coordinator, VirtualNcp(air, seed=2) as stick:
        smart_energy_trust_centre(coordinator.stack, stick.stack.ieee)
        security = StickSecurity()
        radio = StickRadio(stick.url or "", JoinPlan(Role.END_DEVICE, join_timeout=10, link_key=INSTALL_CODE.key),
                           security=security)  # fmt: skip
        joined = await radio.open(ENDPOINT)
        try:
            node = Recorder(joined.nwk, joined.ieee)
            radio.join(node)
            security.application_ready = False
            send_from_trust_centre(coordinator.stack, joined.nwk, b"\x19\x40\x02", cluster=0x0019, encrypt=False)
            send_from_trust_centre(coordinator.stack, joined.nwk, b"\x18\x41\x0a", cluster=0x0000, encrypt=False)
            await until(lambda: node.received)
            await asyncio.sleep(0.2)
            assert [p.cluster_id for p in node.received] == [0x0000]
            assert security.stats["ignored"] == 1
        finally:
            await radio.close()
