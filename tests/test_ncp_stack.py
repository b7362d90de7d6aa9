"""The emulated stack's own semantics, command by command: per-device tables, what survives a reset (flash) and
what does not (RAM), the persisted state file, and the air bridge's view of ZDO addressed to the coordinator."""

from __future__ import annotations

import asyncio
import functools
import json
import random
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import bellows.types as bt
import pytest
import zigpy.types as zt

from emulator.ncp.counters import NcpCounters
from emulator.ncp.faults import Faults
from emulator.ncp.stack import EmberStack
from emulator.ncp.state import NetworkState, load_state
from emulator.radio.air import Air

OK = bt.sl_Status.OK
DEVICE = bt.EUI64.convert("00:0d:6f:00:00:00:aa:01")


def real_time(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run on a plain event loop of the test's own (the stack schedules its callbacks on the running loop)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def make_stack(tmp_path: Path, version: int = 13, *, formed: bool = True) -> tuple[EmberStack, list]:
    path = tmp_path / "ncp.json"
    state = NetworkState.new(seed=1)
    if formed:
        state.formed, state.channel, state.pan_id = True, 11, 0x1234
    stack = EmberStack(
        version=version,
        air=Air(seed=1),
        state=state,
        faults=Faults(),
        rng=random.Random(1),
        counters=NcpCounters(),
        persist=lambda: state.save(path),
    )
    callbacks: list = []
    stack.sink = lambda name, values: callbacks.append((name, values))
    return stack, callbacks


def call(stack: EmberStack, name: str, **args: Any) -> dict:
    result = stack.handle(name, args)
    assert result is not None, name
    return result[1]


@pytest.mark.parametrize(
    ("version", "on", "off"),
    [(13, {"extendedTimeout": True}, {"extendedTimeout": False}), (14, {"status": OK}, {"status": bt.sl_Status.FAIL})],
)
def test_extended_timeout_is_kept_per_device(tmp_path: Path, version: int, on: dict, off: dict) -> None:
    stack, _ = make_stack(tmp_path, version)
    other = bt.EUI64.convert("00:0d:6f:00:00:00:aa:02")
    assert call(stack, "getExtendedTimeout", remoteEui64=DEVICE) == off
    call(stack, "setExtendedTimeout", remoteEui64=DEVICE, extendedTimeout=True)
    assert call(stack, "getExtendedTimeout", remoteEui64=DEVICE) == on
    assert call(stack, "getExtendedTimeout", remoteEui64=other) == off


def test_address_table_replace_returns_the_old_entry_and_feeds_lookups(tmp_path: Path) -> None:
    stack, _ = make_stack(tmp_path)
    first = call(
        stack, "replaceAddressTableEntry", addressTableIndex=2, newEui64=DEVICE, newId=0x4444, newExtendedTimeout=True
    )
    assert (first["status"], first["oldId"], first["oldExtendedTimeout"]) == (OK, 0xFFFF, False)
    other = bt.EUI64.convert("00:0d:6f:00:00:00:aa:02")
    second = call(
        stack, "replaceAddressTableEntry", addressTableIndex=2, newEui64=other, newId=0x5555, newExtendedTimeout=False
    )
    assert (second["oldEui64"], second["oldId"], second["oldExtendedTimeout"]) == (DEVICE, 0x4444, True)
    assert call(stack, "getAddressTableRemoteNodeId", addressTableIndex=2) == {"nodeId": 0x5555}
    assert call(stack, "lookupNodeIdByEui64", eui64=other) == {"nodeId": 0x5555}
    assert call(stack, "lookupEui64ByNodeId", nodeId=0x5555) == {"status": OK, "eui64": other}
    assert call(stack, "lookupNodeIdByEui64", eui64=DEVICE) == {"nodeId": 0xFFFF}
    size = stack.config[bt.EzspConfigId.CONFIG_ADDRESS_TABLE_SIZE]
    out_of_range = call(
        stack, "replaceAddressTableEntry", addressTableIndex=size, newEui64=DEVICE, newId=1, newExtendedTimeout=False
    )
    assert out_of_range == {"status": bt.sl_Status.INVALID_INDEX}


def test_key_table_lives_in_the_state_file_and_survives_a_reset(tmp_path: Path) -> None:
    stack, _ = make_stack(tmp_path)
    key = bt.KeyData(bytes(range(16)))
    assert call(stack, "importLinkKey", index=1, address=DEVICE, key=key) == {"status": OK}
    saved = json.loads((tmp_path / "ncp.json").read_text())
    assert saved["key_table"][1] == {
        "eui64": "000d6f000000aa01",
        "key": bytes(range(16)).hex(),
        "tx_counter": 0,
        "rx_counter": 0,
    }
    stack.reboot()
    assert call(stack, "findKeyTableEntry", address=DEVICE, linkKey=True) == {"index": 1}
    exported = call(stack, "exportLinkKeyByIndex", index=1)
    assert (exported["status"], exported["eui64"], exported["plaintext_key"]) == (OK, DEVICE, key)
    assert call(stack, "exportLinkKeyByIndex", index=0)["status"] == bt.sl_Status.NOT_FOUND
    assert call(stack, "eraseKeyTableEntry", index=1) == {"status": OK}
    assert call(stack, "findKeyTableEntry", address=DEVICE, linkKey=True) == {"index": 0xFF}


def test_a_reset_forgets_ram_and_takes_the_network_down(tmp_path: Path) -> None:
    stack, _ = make_stack(tmp_path)
    call(stack, "setConfigurationValue", configId=bt.EzspConfigId.CONFIG_ADDRESS_TABLE_SIZE, value=16)
    call(stack, "setExtendedTimeout", remoteEui64=DEVICE, extendedTimeout=True)
    stack.network_up = True
    refused = call(stack, "setConfigurationValue", configId=bt.EzspConfigId.CONFIG_ADDRESS_TABLE_SIZE, value=20)
    assert refused == {"status": bt.sl_Status.INVALID_STATE}  # tables are sized once, before the network starts
    stack.reboot()
    assert not stack.network_up
    assert call(stack, "getConfigurationValue", configId=bt.EzspConfigId.CONFIG_ADDRESS_TABLE_SIZE)["value"] == 8
    assert call(stack, "getExtendedTimeout", remoteEui64=DEVICE) == {"extendedTimeout": False}
    assert call(stack, "networkState") == {"status": bt.EmberNetworkStatus.NO_NETWORK}


@real_time
async def test_network_init_and_leave_report_through_stack_status(tmp_path: Path) -> None:
    stack, callbacks = make_stack(tmp_path)
    assert call(stack, "networkInit", networkInitBitmask=0) == {"status": OK}
    assert call(stack, "networkInit", networkInitBitmask=0) == {"status": bt.sl_Status.INVALID_STATE}
    await asyncio.sleep(0)
    assert callbacks == [("stackStatusHandler", {"status": bt.sl_Status.NETWORK_UP})]
    assert call(stack, "leaveNetwork") == {"status": OK}
    await asyncio.sleep(0)
    assert callbacks[-1] == ("stackStatusHandler", {"status": bt.sl_Status.NETWORK_DOWN})
    assert load_state(tmp_path / "ncp.json", seed=0).formed is False
    assert call(stack, "networkInit", networkInitBitmask=0) == {"status": bt.sl_Status.NOT_JOINED}


@real_time
async def test_callbacks_queued_before_a_reset_are_never_sent(tmp_path: Path) -> None:
    stack, callbacks = make_stack(tmp_path)
    call(stack, "networkInit", networkInitBitmask=0)
    stack.reboot()
    await asyncio.sleep(0)
    assert callbacks == []


@real_time
async def test_zdo_node_descriptor_request_to_the_coordinator_itself(tmp_path: Path) -> None:
    stack, callbacks = make_stack(tmp_path)
    call(stack, "networkInit", networkInitBitmask=0)
    aps = bt.EmberApsFrame(
        profileId=0,
        clusterId=0x0002,
        sourceEndpoint=0,
        destinationEndpoint=0,
        options=bt.EmberApsOption.APS_OPTION_RETRY,
        groupId=0,
        sequence=0x42,
    )
    rsp = call(
        stack,
        "sendUnicast",
        type=bt.EmberOutgoingMessageType.OUTGOING_DIRECT,
        indexOrDestination=0x0000,
        apsFrame=aps,
        messageTag=9,
        messageContents=b"\x42\x00\x00",
    )
    assert rsp == {"status": OK, "sequence": 0x42}
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    names = [name for name, _ in callbacks]
    assert names == ["stackStatusHandler", "messageSentHandler", "incomingMessageHandler"]
    sent, incoming = callbacks[1][1], callbacks[2][1]
    assert (sent["status"], sent["messageTag"], sent["indexOrDestination"]) == (OK, 9, 0x0000)
    assert incoming["sender"] == 0x0000 and incoming["apsFrame"].clusterId == 0x8002
    # Node_Desc_rsp: TSN, SUCCESS, NWK 0x0000, coordinator, 2.4 GHz, MAC capability 0x8F, Silicon Labs 0x1049
    assert incoming["messageContents"][:9] == bytes.fromhex("42 00 0000 00 40 8f 4910")


@real_time
async def test_unicast_to_nobody_fails_delivery_and_frame_counters_advance(tmp_path: Path) -> None:
    stack, callbacks = make_stack(tmp_path)
    call(stack, "networkInit", networkInitBitmask=0)
    before = stack.state.nwk_frame_counter
    aps = bt.EmberApsFrame(
        profileId=0x0104,
        clusterId=6,
        sourceEndpoint=1,
        destinationEndpoint=1,
        options=bt.EmberApsOption.APS_OPTION_NONE,
        groupId=0,
        sequence=1,
    )
    call(
        stack,
        "sendUnicast",
        type=bt.EmberOutgoingMessageType.OUTGOING_DIRECT,
        indexOrDestination=0x7777,
        apsFrame=aps,
        messageTag=3,
        messageContents=b"\x01\x01\x02",
    )
    too_long = call(
        stack,
        "sendUnicast",
        type=bt.EmberOutgoingMessageType.OUTGOING_DIRECT,
        indexOrDestination=0x7777,
        apsFrame=aps,
        messageTag=4,
        messageContents=bytes(83),
    )
    assert too_long == {"status": bt.sl_Status.MESSAGE_TOO_LONG, "sequence": 0}
    await asyncio.sleep(0)
    sent = callbacks[-1]
    assert sent[0] == "messageSentHandler" and sent[1]["status"] == bt.sl_Status.ZIGBEE_DELIVERY_FAILED
    assert stack.state.nwk_frame_counter == before + 1


def test_joins_before_the_network_is_up_are_not_reported(tmp_path: Path) -> None:
    stack, callbacks = make_stack(tmp_path)
    stack.attach()
    stack.device_joined(0x2222, zt.EUI64(DEVICE), 0x0000)
    assert callbacks == []
    assert stack.counters.air["joins_while_down"] == 1


def test_unknown_commands_are_not_handled(tmp_path: Path) -> None:
    stack, _ = make_stack(tmp_path)
    assert stack.handle("zllNetworkOps", {}) is None
    assert stack.handle("setConcentrator", {}) == ("setConcentrator", {})


def test_a_command_added_to_the_table_is_served_in_place_of_none(tmp_path: Path) -> None:
    stack, _ = make_stack(tmp_path)
    seen: list[dict[str, object]] = []
    stack.add_command("zllNetworkOps", lambda args: seen.append(args) or {"status": bt.sl_Status.OK})
    assert stack.handle("zllNetworkOps", {"op": 1}) == ("zllNetworkOps", {"status": bt.sl_Status.OK})
    assert seen == [{"op": 1}]
    assert "networkInit" in stack.commands and "zllNetworkOps" in stack.commands
