"""The virtual NCP in a joining role: end device, sleepy end device and router on another virtual NCP's network.

The joining stick is driven by bellows' own EZSP protocol layer (`bellows.ezsp.EZSP`: ASH, version negotiation,
command tables) over the NCP's in-process serial link on virtual time, as a host on a real stick would; the
coordinator stack is driven through its command handler. Stack-only cases (no serial link) run on the test's
event loop.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bellows.ezsp
import bellows.types as bt
import pytest
import zigpy.config
import zigpy.types as zt
import zigpy.zdo.types as zdo_t

from emulator.ncp.counters import NcpCounters
from emulator.ncp.faults import Faults
from emulator.ncp.joining import WELL_KNOWN_LINK_KEY
from emulator.ncp.server import VirtualNcp
from emulator.ncp.stack import EmberStack
from emulator.ncp.state import NetworkState, load_state
from emulator.radio.air import Air

pytestmark = pytest.mark.virtual_time

OK = bt.sl_Status.OK
CHANNEL = 20
PAN = 0x5A5A
EXT_PAN = bt.ExtendedPanId.convert("11:22:33:44:55:66:77:88")
NETWORK_KEY = bytes(range(16))
HASHED_TC_SEED = bytes(range(16, 32))
Callbacks = list[tuple[str, Any]]


def call(stack: EmberStack, name: str, **args: Any) -> dict:
    result = stack.handle(name, args)
    assert result is not None, name
    return result[1]


def form(stack: EmberStack, *, permit: int = 0xFF) -> Callbacks:
    """Form the coordinator's network as bellows does (hashed TC link key, global link key allowed)."""
    seen: Callbacks = []
    stack.sink = lambda name, values: seen.append((name, values))
    bits = bt.EmberInitialSecurityBitmask
    security = bt.EmberInitialSecurityState(
        bitmask=bits.HAVE_PRECONFIGURED_KEY
        | bits.TRUST_CENTER_GLOBAL_LINK_KEY
        | bits.HAVE_NETWORK_KEY
        | bits.TRUST_CENTER_USES_HASHED_LINK_KEY,
        preconfiguredKey=bt.KeyData(HASHED_TC_SEED),
        networkKey=bt.KeyData(NETWORK_KEY),
        networkKeySequenceNumber=0,
        preconfiguredTrustCenterEui64=bt.EUI64.convert("00:00:00:00:00:00:00:00"),
    )
    assert call(stack, "setInitialSecurityState", state=security)["status"] == OK
    params = bt.EmberNetworkParameters(
        extendedPanId=EXT_PAN,
        panId=PAN,
        radioTxPower=8,
        radioChannel=CHANNEL,
        joinMethod=bt.EmberJoinMethod.USE_MAC_ASSOCIATION,
        nwkManagerId=0,
        nwkUpdateId=0,
        channels=bt.Channels.from_channel_list([CHANNEL]),
    )
    assert call(stack, "formNetwork", parameters=params)["status"] == OK
    if permit:
        call(stack, "permitJoining", duration=permit)
    return seen


def joiner_security(key: bytes = WELL_KNOWN_LINK_KEY) -> bt.EmberInitialSecurityState:
    bits = bt.EmberInitialSecurityBitmask
    return bt.EmberInitialSecurityState(
        bitmask=bits.HAVE_PRECONFIGURED_KEY | bits.REQUIRE_ENCRYPTED_KEY,
        preconfiguredKey=bt.KeyData(key),
        networkKey=bt.KeyData(bytes(16)),
        networkKeySequenceNumber=0,
        preconfiguredTrustCenterEui64=bt.EUI64.convert("00:00:00:00:00:00:00:00"),
    )


def wanted(ext_pan: bt.ExtendedPanId = EXT_PAN) -> bt.EmberNetworkParameters:
    return bt.EmberNetworkParameters(
        extendedPanId=ext_pan,
        panId=0xFFFF,
        radioTxPower=8,
        radioChannel=CHANNEL,
        joinMethod=bt.EmberJoinMethod.USE_MAC_ASSOCIATION,
        nwkManagerId=0,
        nwkUpdateId=0,
        channels=bt.Channels.from_channel_list([CHANNEL]),
    )


def unicast(
    stack: EmberStack, dst: int, payload: bytes, *, cluster: int = 0x0019, encrypt: bool = False, sequence: int = 7
) -> None:
    """`sendUnicast` from `stack` (SE profile, endpoint 1 to 1), APS-encrypted when asked."""
    options = bt.EmberApsOption.APS_OPTION_RETRY
    if encrypt:
        options |= bt.EmberApsOption.APS_OPTION_ENCRYPTION
    aps = bt.EmberApsFrame(
        profileId=0x0109,
        clusterId=cluster,
        sourceEndpoint=1,
        destinationEndpoint=1,
        options=options,
        groupId=0,
        sequence=sequence,
    )
    answer = call(
        stack,
        "sendUnicast",
        type=bt.EmberOutgoingMessageType.OUTGOING_DIRECT,
        indexOrDestination=dst,
        apsFrame=aps,
        messageTag=1,
        messageContents=payload,
    )
    assert answer["status"] == OK


async def connect(ncp: VirtualNcp) -> tuple[bellows.ezsp.EZSP, Callbacks]:
    ezsp = bellows.ezsp.EZSP(zigpy.config.SCHEMA_DEVICE({"path": ncp.url}))
    await ezsp.connect(use_thread=False)
    seen: Callbacks = []
    ezsp.add_callback(lambda name, args: seen.append((name, args)))
    return ezsp, seen


async def until(probe: Callable[[], Any], within: float = 5.0) -> Any:
    async with asyncio.timeout(within):
        while not (value := probe()):
            await asyncio.sleep(0.01)
    return value


def named(seen: Callbacks, name: str) -> list[Any]:
    return [args for frame, args in seen if frame == name]


async def join(ezsp: bellows.ezsp.EZSP, node_type: bt.EmberNodeType) -> None:
    (status,) = await ezsp.setInitialSecurityState(state=joiner_security())
    assert bt.sl_Status.from_ember_status(status) == OK
    with ezsp.wait_for_stack_status(bt.sl_Status.NETWORK_UP) as up:
        (status,) = await ezsp.joinNetwork(nodeType=node_type, parameters=wanted())
        assert bt.sl_Status.from_ember_status(status) == OK
        async with asyncio.timeout(5):
            await up


def by_name(ezsp: bellows.ezsp.EZSP, frame: str, args: list[Any]) -> dict[str, Any]:
    """A callback's values by their names in this protocol version's table (v14 renamed and reordered many)."""
    _, _, schema = ezsp._protocol.COMMANDS[frame]
    return dict(zip(schema, args, strict=True))


@pytest.mark.parametrize("version", [8, 13, 14])
async def test_bellows_joins_an_end_device_that_then_talks_both_ways(version: int) -> None:
    air = Air(seed=3)
    async with VirtualNcp(air, seed=1) as coordinator, VirtualNcp(air, seed=2, ezsp_version=version) as stick:
        tc_seen = form(coordinator.stack)
        ezsp, seen = await connect(stick)
        try:
            await join(ezsp, bt.EmberNodeType.END_DEVICE)
            (nwk,) = await ezsp.getNodeId()
            status, node_type, params = await ezsp.getNetworkParameters()
            assert (node_type, params.panId, params.radioChannel) == (bt.EmberNodeType.END_DEVICE, PAN, CHANNEL)
            assert bytes(params.extendedPanId) == bytes(EXT_PAN)
            assert 0 < nwk <= 0xFFF7 and air.node(nwk) is stick.stack
            # The trust centre's host hears the join; everyone hears the stick's own Device_annce.
            joins = named(tc_seen, "trustCenterJoinHandler")
            assert [(j["newNodeId"], j["newNodeEui64"], j["parentOfNewNodeId"]) for j in joins] == [
                (nwk, stick.stack.ieee, 0x0000)
            ]
            annce = await until(
                lambda: [v for n, v in tc_seen if n == "incomingMessageHandler" and v["apsFrame"].clusterId == 0x13]
            )
            assert annce[0]["messageContents"][1:] == zt.serialize(
                [zt.NWK(nwk), stick.stack.ieee, zt.uint8_t(0x8C)], zdo_t.CLUSTERS[zdo_t.ZDOCmd.Device_annce][1]
            )
            # Coordinator -> stick, and stick -> coordinator, through bellows' own frame tables.
            unicast(coordinator.stack, nwk, b"\x19\x05\x02")
            incoming = await until(lambda: named(seen, "incomingMessageHandler"))
            got = by_name(ezsp, "incomingMessageHandler", incoming[0])
            aps = got.get("aps_frame", got.get("apsFrame"))
            sender = got.get("nwk", got.get("sender"))
            message = got.get("message", got.get("messageContents"))
            assert (aps.clusterId, aps.profileId, sender, message) == (0x0019, 0x0109, 0x0000, b"\x19\x05\x02")
            aps = bt.EmberApsFrame(
                profileId=0x0109,
                clusterId=0x0019,
                sourceEndpoint=1,
                destinationEndpoint=1,
                options=bt.EmberApsOption.APS_OPTION_RETRY,
                groupId=0,
                sequence=9,
            )
            status, _ = await ezsp.send_unicast(nwk=0x0000, aps_frame=aps, message_tag=3, data=b"\x01\x09\x01")
            assert status == OK
            got = await until(
                lambda: [v for n, v in tc_seen if n == "incomingMessageHandler" and v["apsFrame"].clusterId == 0x19]
            )
            assert (got[0]["sender"], got[0]["messageContents"]) == (nwk, b"\x01\x09\x01")
            sent = await until(lambda: named(seen, "messageSentHandler"))
            assert bt.sl_Status.from_ember_status(by_name(ezsp, "messageSentHandler", sent[0])["status"]) == OK
        finally:
            await ezsp.disconnect()


async def test_sleepy_end_device_polls_leaves_rejoins_and_resumes_after_a_new_host() -> None:
    air = Air(seed=4)
    async with VirtualNcp(air, seed=1) as coordinator, VirtualNcp(air, seed=2) as stick:
        form(coordinator.stack)
        ezsp, seen = await connect(stick)
        try:
            await join(ezsp, bt.EmberNodeType.SLEEPY_END_DEVICE)
            (nwk,) = await ezsp.getNodeId()
            # Nothing held: MAC_NO_DATA (bellows' own pollForData raises on a non-OK completion).
            with pytest.raises(Exception, match="MAC_NO_DATA"):
                await ezsp.pollForData(interval=0, units=bt.EmberEventUnits.EVENT_MS_TIME, failureLimit=0)
            unicast(coordinator.stack, nwk, b"held")
            await asyncio.sleep(0.05)
            assert air.held_for(nwk) == 1 and not named(seen, "incomingMessageHandler")
            await ezsp.pollForData(interval=0, units=bt.EmberEventUnits.EVENT_MS_TIME, failureLimit=0)
            incoming = await until(lambda: named(seen, "incomingMessageHandler"))
            assert incoming[0][-1] == b"held"

            # A rejoin after the network went down keeps the address and needs no permit-join.
            call(coordinator.stack, "permitJoining", duration=0)
            stick.stack._set_network_up(False)
            with ezsp.wait_for_stack_status(bt.sl_Status.NETWORK_UP) as up:
                (status,) = await ezsp.findAndRejoinNetwork(haveCurrentNetworkKey=True, channelMask=0)
                assert bt.sl_Status.from_ember_status(status) == OK
                async with asyncio.timeout(5):
                    await up
            assert (await ezsp.getNodeId())[0] == nwk
        finally:
            await ezsp.disconnect()

        # A new host (a restarted device process) resumes from the network tokens with networkInit.
        ezsp, seen = await connect(stick)
        try:
            with ezsp.wait_for_stack_status(bt.sl_Status.NETWORK_UP) as up:
                no_options = bt.EmberNetworkInitBitmask.NETWORK_INIT_NO_OPTIONS
                (status,) = await ezsp.networkInit(networkInitBitmask=no_options)
                assert bt.sl_Status.from_ember_status(status) == OK
                async with asyncio.timeout(5):
                    await up
            assert (await ezsp.getNodeId())[0] == nwk
            _, node_type, _ = await ezsp.getNetworkParameters()
            assert node_type == bt.EmberNodeType.SLEEPY_END_DEVICE
            with ezsp.wait_for_stack_status(bt.sl_Status.NETWORK_DOWN):
                await ezsp.leaveNetwork()
            assert air.node(nwk) is None
            assert (await ezsp.networkState())[0] == bt.EmberNetworkStatus.NO_NETWORK
        finally:
            await ezsp.disconnect()


# -- stack only: no serial link ------------------------------------------------------------------------------


def make_stack(air: Air, seed: int, tmp_path: Path) -> tuple[EmberStack, Callbacks]:
    state = NetworkState.new(seed=seed)
    stack = EmberStack(
        version=13,
        air=air,
        state=state,
        faults=Faults(),
        rng=random.Random(seed),
        counters=NcpCounters(),
        persist=lambda: state.save(tmp_path / f"ncp{seed}.json"),
    )
    seen: Callbacks = []
    stack.sink = lambda name, values: seen.append((name, values))
    stack.attach()
    return stack, seen


async def settle() -> None:
    await asyncio.sleep(0.1)


async def test_no_open_network_means_no_beacons_and_a_wrong_key_gets_no_network_key(tmp_path: Path) -> None:
    air = Air(seed=5)
    coordinator, _ = make_stack(air, 1, tmp_path)
    stick, seen = make_stack(air, 2, tmp_path)
    assert air.node(0) is coordinator  # the second stick is off the air until it joins
    form(coordinator, permit=0)
    call(stick, "setInitialSecurityState", state=joiner_security())
    assert call(stick, "joinNetwork", nodeType=bt.EmberNodeType.END_DEVICE, parameters=wanted())["status"] == OK
    await settle()
    assert seen[-1] == ("stackStatusHandler", {"status": bt.sl_Status.NO_BEACONS})
    call(coordinator, "permitJoining", duration=60)
    call(stick, "joinNetwork", nodeType=bt.EmberNodeType.END_DEVICE, parameters=wanted(bt.ExtendedPanId([1] * 8)))
    await settle()
    assert seen[-1] == ("stackStatusHandler", {"status": bt.sl_Status.NO_BEACONS})  # another network's ID
    call(stick, "setInitialSecurityState", state=joiner_security(b"not-the-tc-key!!"))
    call(stick, "joinNetwork", nodeType=bt.EmberNodeType.END_DEVICE, parameters=wanted())
    await settle()
    assert seen[-1] == ("stackStatusHandler", {"status": bt.sl_Status.ZIGBEE_NO_NETWORK_KEY_RECEIVED})
    assert not stick.network_up and air.node(stick.nwk) is not stick
    # The key-table seam: a per-device key the trust centre holds (where install-code keys go) admits it.
    call(coordinator, "setConfigurationValue", configId=bt.EzspConfigId.CONFIG_KEY_TABLE_SIZE, value=4)
    call(coordinator, "importLinkKey", index=0, address=stick.ieee, key=bt.KeyData(b"not-the-tc-key!!"))
    call(stick, "joinNetwork", nodeType=bt.EmberNodeType.END_DEVICE, parameters=wanted())
    await settle()
    assert seen[-1] == ("stackStatusHandler", {"status": bt.sl_Status.NETWORK_UP})
    assert call(stick, "joinNetwork", nodeType=bt.EmberNodeType.END_DEVICE, parameters=wanted()) == {
        "status": bt.sl_Status.INVALID_STATE
    }


async def test_a_joined_router_beacons_parents_the_next_joiner_and_answers_as_a_router(tmp_path: Path) -> None:
    air = Air(seed=6)
    coordinator, _ = make_stack(air, 1, tmp_path)
    router, router_seen = make_stack(air, 2, tmp_path)
    child, _ = make_stack(air, 3, tmp_path)
    tc_seen = form(coordinator)
    call(router, "setInitialSecurityState", state=joiner_security())
    call(router, "joinNetwork", nodeType=bt.EmberNodeType.ROUTER, parameters=wanted())
    await settle()
    assert router.network_up and router.router
    # The coordinator closes joining, then opens it network-wide with a Mgmt_Permit_Joining_req broadcast, which
    # the router obeys; then it closes its own again: the next joiner has only the router as a parent.
    call(coordinator, "permitJoining", duration=0)
    assert router.beacon() is not None and not router.beacon().permit_joining  # type: ignore[union-attr]
    aps = bt.EmberApsFrame(
        profileId=0,
        clusterId=zdo_t.ZDOCmd.Mgmt_Permit_Joining_req,
        sourceEndpoint=0,
        destinationEndpoint=0,
        options=bt.EmberApsOption.APS_OPTION_NONE,
        groupId=0,
        sequence=4,
    )
    call(
        coordinator,
        "sendBroadcast",
        destination=0xFFFC,
        apsFrame=aps,
        radius=0,
        messageTag=1,
        messageContents=b"\x04\x3c\x00",
    )
    await settle()
    assert router.beacon().permit_joining  # type: ignore[union-attr]
    call(coordinator, "permitJoining", duration=0)
    call(child, "startScan", scanType=bt.EzspNetworkScanType.ACTIVE_SCAN, channelMask=[CHANNEL], duration=3)
    call(child, "setInitialSecurityState", state=joiner_security())
    call(child, "joinNetwork", nodeType=bt.EmberNodeType.SLEEPY_END_DEVICE, parameters=wanted())
    await settle()
    assert child.network_up and child.state.parent_nwk == router.nwk
    found = named([(n, v) for n, v in router_seen], "childJoinHandler")
    assert [(c["childId"], c["childEui64"], c["childType"]) for c in found] == [
        (child.nwk, child.ieee, bt.EmberNodeType.SLEEPY_END_DEVICE)
    ]
    tc_joins = [(j["newNodeId"], j["parentOfNewNodeId"]) for j in named(tc_seen, "trustCenterJoinHandler")]
    assert tc_joins == [(router.nwk, 0x0000), (child.nwk, router.nwk)]
    assert call(child, "getParentChildParameters")["parentNodeId"] == router.nwk
    # The router's node descriptor, as its stack answers it.
    reply = router._zdo_reply(zdo_t.ZDOCmd.Node_Desc_req, bytes([5]) + zt.NWK(router.nwk).serialize(), broadcast=False)
    assert reply is not None
    (_, _, descriptor), _ = zt.deserialize(reply[1][1:], zdo_t.CLUSTERS[zdo_t.ZDOCmd.Node_Desc_rsp][1])
    assert (descriptor.logical_type, int(descriptor.mac_capability_flags)) == (zdo_t.LogicalType.Router, 0x8E)
    assert call(router, "pollForData", interval=0, units=bt.EmberEventUnits.EVENT_MS_TIME, failureLimit=0) == {
        "status": bt.sl_Status.INVALID_STATE
    }


async def test_active_scan_reports_the_open_network(tmp_path: Path) -> None:
    air = Air(seed=7)
    coordinator, _ = make_stack(air, 1, tmp_path)
    stick, seen = make_stack(air, 2, tmp_path)
    form(coordinator, permit=30)
    call(stick, "startScan", scanType=bt.EzspNetworkScanType.ACTIVE_SCAN, channelMask=[11, CHANNEL], duration=3)
    await settle()
    networks = named(seen, "networkFoundHandler")
    heard = [
        (n["networkFound"].panId, n["networkFound"].channel, bool(n["networkFound"].allowingJoin)) for n in networks
    ]
    assert heard == [(PAN, CHANNEL, True)]
    assert bytes(networks[0]["networkFound"].extendedPanId) == bytes(EXT_PAN)
    assert named(seen, "scanCompleteHandler")


async def test_a_joined_node_resumes_from_its_state_file_after_the_ncp_restarts(tmp_path: Path) -> None:
    air = Air(seed=8)
    coordinator, _ = make_stack(air, 1, tmp_path)
    stick, _ = make_stack(air, 2, tmp_path)
    form(coordinator)
    call(stick, "setInitialSecurityState", state=joiner_security())
    call(stick, "joinNetwork", nodeType=bt.EmberNodeType.SLEEPY_END_DEVICE, parameters=wanted())
    await settle()
    nwk = stick.nwk
    stick.detach()  # the NCP process stops; its file stays
    assert air.node(nwk) is None
    state = load_state(tmp_path / "ncp2.json", seed=2)
    again = EmberStack(
        version=13,
        air=air,
        state=state,
        faults=Faults(),
        rng=random.Random(2),
        counters=NcpCounters(),
        persist=lambda: None,
    )
    seen: Callbacks = []
    again.sink = lambda name, values: seen.append((name, values))
    again.attach()
    assert air.node(nwk) is again and not again.rx_on_when_idle  # back at its address, receiver off
    assert call(again, "networkInit", networkInitBitmask=0) == {"status": OK}
    await settle()
    assert seen == [("stackStatusHandler", {"status": bt.sl_Status.NETWORK_UP})]
    assert call(again, "getNetworkParameters")["nodeType"] == bt.EmberNodeType.SLEEPY_END_DEVICE
