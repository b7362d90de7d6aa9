"""Several virtual sticks on one air: `ota-emu ncp --listen A --listen B` is one process with two NCPs, and a host
on B joins the network that a host on A formed, both through bellows' EZSP layer."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import bellows.ezsp
import bellows.types as bt
import pytest
import zigpy.config
from test_ncp_joining import (
    CHANNEL,
    EXT_PAN,
    HASHED_TC_SEED,
    NETWORK_KEY,
    join,
    named,
    until,
)

from emulator.ncp.state import NetworkState

BANNER = re.compile(r"Virtual EZSP v13 NCP listening on (tcp://127\.0\.0\.1:\d+)\n")
RUN_TIMEOUT = 30


async def connect(url: str) -> tuple[bellows.ezsp.EZSP, list]:
    ezsp = bellows.ezsp.EZSP(zigpy.config.SCHEMA_DEVICE({"path": url}))
    await ezsp.connect(use_thread=False)
    seen: list = []
    ezsp.add_callback(lambda name, args: seen.append((name, args)))
    return ezsp, seen


async def form_and_open(ezsp: bellows.ezsp.EZSP) -> None:
    bits = bt.EmberInitialSecurityBitmask
    security = bt.EmberInitialSecurityState(
        bitmask=bits.HAVE_PRECONFIGURED_KEY | bits.TRUST_CENTER_GLOBAL_LINK_KEY | bits.HAVE_NETWORK_KEY,
        preconfiguredKey=bt.KeyData(HASHED_TC_SEED),
        networkKey=bt.KeyData(NETWORK_KEY),
        networkKeySequenceNumber=0,
        preconfiguredTrustCenterEui64=bt.EUI64.convert("00:00:00:00:00:00:00:00"),
    )
    await ezsp.setInitialSecurityState(state=security)
    params = bt.EmberNetworkParameters(
        extendedPanId=EXT_PAN,
        panId=0x2222,
        radioTxPower=8,
        radioChannel=CHANNEL,
        joinMethod=bt.EmberJoinMethod.USE_MAC_ASSOCIATION,
        nwkManagerId=0,
        nwkUpdateId=0,
        channels=bt.Channels.from_channel_list([CHANNEL]),
    )
    await ezsp.formNetwork(parameters=params)  # bellows waits for NETWORK_UP
    await ezsp.permitJoining(duration=60)


@pytest.mark.realtime
async def test_one_ncp_process_serves_two_sticks_on_one_air(tmp_path: Path) -> None:
    ncp = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "emulator", "ncp", "--listen", "tcp://127.0.0.1:0", "--listen", "tcp://127.0.0.1:0"),
        *("--state-dir", str(tmp_path)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        urls = []
        for _ in range(2):
            line = (await ncp.stdout.readline()).decode()  # type: ignore[union-attr]
            match = BANNER.fullmatch(line)
            assert match, line
            urls.append(match.group(1))
        assert urls[0] != urls[1]
        coordinator, tc_seen = await connect(urls[0])
        stick, _ = await connect(urls[1])
        try:
            await form_and_open(coordinator)
            await join(stick, bt.EmberNodeType.END_DEVICE)
            (nwk,) = await stick.getNodeId()
            (tc_eui64,) = await coordinator.getEui64()
            (stick_eui64,) = await stick.getEui64()
            assert tc_eui64 != stick_eui64
            joins = await until(lambda: named(tc_seen, "trustCenterJoinHandler"))
            assert (joins[0][0], joins[0][1]) == (nwk, stick_eui64)
            _, _, params = await stick.getNetworkParameters()
            assert (params.panId, params.radioChannel) == (0x2222, CHANNEL)
        finally:
            await stick.disconnect()
            await coordinator.disconnect()
    finally:
        ncp.send_signal(signal.SIGTERM)
        async with asyncio.timeout(RUN_TIMEOUT):
            _, err = await ncp.communicate()
    assert ncp.returncode == 0, err
    assert b"Traceback" not in err
    # Each stick kept its own network: the coordinator's and the joined end device's, with its address.
    first = NetworkState.from_json((tmp_path / "ncp.json").read_text())
    second = NetworkState.from_json((tmp_path / "ncp-2.json").read_text())
    assert first.formed and first.node_type == bt.EmberNodeType.COORDINATOR
    assert second.formed and (second.node_type, second.node_id) == (bt.EmberNodeType.END_DEVICE, nwk)
    assert second.network_key == first.network_key and second.pan_id == first.pan_id == 0x2222
