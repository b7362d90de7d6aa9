"""zigpy's own interview of an emulated device (ZIGPY_BELLOWS.md §1.3): descriptors, Basic model and
manufacturer, the OTA client's CurrentFileVersion — each answer must match zigpy's request by TSN, direction and
endpoint or zigpy would time out. The Home Automation variant is used because zigpy drops SE-profile frames."""

from __future__ import annotations

import asyncio

import zigpy.types as t
from test_device_harness import START, ppmid_profile, vrun
from zigpy.zcl.clusters.general import Basic, Ota

from emulator.clock import Clock
from emulator.device.device import EmulatedDevice
from emulator.radio.air import Air
from emulator.radio.loopback import LoopbackApp, loopback_config

COORDINATOR = t.EUI64.convert("00:DB:12:34:56:78:90:A2")


def test_zigpy_interviews_the_device_completely() -> None:
    async def main() -> None:
        air = Air(seed=2)
        clock = Clock(START)
        config = loopback_config(
            ieee=COORDINATOR,
            channel=15,
            pan_id=0x1A62,
            extended_pan_id=t.EUI64.convert("DD:DD:DD:DD:DD:DD:DD:DD"),
            network_key=bytes(range(16)),
        )
        app = await LoopbackApp.start_on(air, config, COORDINATOR)
        initialized = asyncio.Event()

        class Listener:
            def device_initialized(self, device) -> None:
                initialized.set()

        app.add_listener(Listener())
        profile = ppmid_profile(profile_id=0x0104, device_id=0x0007, file_version=0x01020304)
        device = EmulatedDevice(profile, air, clock, nwk=0x2345)
        await device.start()
        async with asyncio.timeout(120):
            await initialized.wait()
        zdev = app.get_device(ieee=profile.ieee)
        assert zdev.nwk == 0x2345 and zdev.node_desc.is_end_device
        assert zdev.node_desc.manufacturer_code == 0x121D
        endpoint = zdev.endpoints[1]
        assert (endpoint.profile_id, endpoint.device_type) == (0x0104, 0x0007)
        assert list(endpoint.in_clusters) == [Basic.cluster_id] and list(endpoint.out_clusters) == [Ota.cluster_id]
        assert (zdev.manufacturer, zdev.model) == ("ota-emu", "PPMID")
        ota = endpoint.out_clusters[Ota.cluster_id]
        assert ota.get(Ota.AttributeDefs.current_file_version.name) == 0x01020304
        await device.stop()
        await app.shutdown()

    vrun(main)
