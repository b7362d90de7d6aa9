"""`ota-emu ncp --device ppmid --count 200`: one virtual NCP carries 200 emulated devices, and one CHF on bellows
upgrades all of them through it. The devices join as that command joins them (`join_devices`, its one line per
device); the CHF is `ota-emu chf`'s ChfNode on the NCP's in-process port. On virtual time: protocol minutes in
seconds of CPU."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime

import pytest
import zigpy.types as t

from conftest import sign_for_tests
from emulator.chf import events as server_events
from emulator.chf.node import ChfNode
from emulator.chf.store import HeldImage, ImageStore
from emulator.cli.ncp import Output, join_devices
from emulator.clock import Clock
from emulator.device.device import EmulatedDevice
from emulator.gb.codes import TransferResponse
from emulator.han.network import FIRST_DEVICE_NWK, expand
from emulator.ncp.server import VirtualNcp
from emulator.ota.image import build_gb
from emulator.profiles import bundled, load_chf, load_device
from emulator.radio.air import Air

pytestmark = pytest.mark.virtual_time

COUNT = 200
START = datetime(2026, 3, 1, tzinfo=UTC)
SETTLE = 6 * 3600.0


@pytest.mark.long
async def test_one_ncp_carries_200_devices_upgrading_through_one_chf_on_bellows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Network-key security: what is measured is the NCP's capacity; Smart Energy security on the EZSP path is
    # tests/test_ezsp_security.py's.
    profiles = expand([load_device(bundled("ppmid")).replace(security="none")], COUNT)
    first = profiles[0]
    image = sign_for_tests(
        build_gb(
            first.manufacturer_code,
            first.image_type,
            2,
            # A few blocks per device: what is proven is how many devices one NCP carries, each joining,
            # interviewed and downloading block by block; more blocks per device would prove nothing more.
            payload=random.Random(COUNT).randbytes(100),
            hw_min=0x1111,
            hw_max=0x1211,
        )
    )
    held = HeldImage(image, image.serialize(), frozenset(p.ieee for p in profiles))
    chf = load_chf(bundled("chf")).replace(security="none")
    outcomes: dict[t.EUI64, server_events.TransferOutcome] = {}
    all_done = asyncio.Event()

    def outcome(event: server_events.ServerEvent) -> None:
        if isinstance(event, server_events.TransferOutcome):
            outcomes.setdefault(event.ieee, event)  # type: ignore[arg-type]
            if len(outcomes) == COUNT:
                all_done.set()

    devices: list[EmulatedDevice] = []
    async with VirtualNcp(Air(seed=COUNT), seed=COUNT) as ncp:
        node = ChfNode(chf, ImageStore.from_profile(chf, [held]), Clock(START))
        await node.start_ezsp(ncp.url or "")
        node.server.add_listener(outcome)
        await node.app.permit(254)
        joining = asyncio.get_running_loop().create_task(join_devices(ncp, profiles, 0, devices, Output(True)))
        try:
            async with asyncio.timeout(SETTLE):
                await all_done.wait()
                while not all(device.state.running_image == held.data for device in devices):
                    await asyncio.sleep(1.0)  # a PPMID activates once told "now", after its Upgrade End Response
        finally:
            joining.cancel()  # done by then, unless a device was never admitted: then the test fails, not hangs
            await asyncio.gather(joining, return_exceptions=True)
            for device in devices:
                await device.stop()
            await node.stop()

    joined = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["nwk"] for line in joined if line["event"] == "joined"] == [
        f"0x{FIRST_DEVICE_NWK + index:04X}" for index in range(COUNT)
    ]
    assert ncp.counters.air["joins"] == COUNT and len(ncp.state.children) == COUNT
    assert {str(ieee) for ieee in outcomes} == {str(p.ieee) for p in profiles}
    assert {o.response for o in outcomes.values()} == {TransferResponse.SUCCESS}
    assert len(devices) == COUNT and {device.state.running_version for device in devices} == {2}
    blocks = -(-held.size // 63)
    assert blocks >= 4  # every device downloads in several blocks
    assert ncp.counters.commands["sendUnicast"] >= COUNT * blocks  # every block went through bellows and the NCP
    assert zigpy_knows_every_device(node, profiles)


def zigpy_knows_every_device(node: ChfNode, profiles: list) -> bool:
    """bellows reported every join and zigpy interviewed the device (its endpoint is known)."""
    known = node.app.devices
    return all(p.ieee in known and known[p.ieee].endpoints.get(p.endpoint) is not None for p in profiles)
