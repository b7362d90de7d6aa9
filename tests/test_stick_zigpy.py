"""zigpy's own OTA path upgrades `ota-emu device` on a virtual stick: a plain bellows `ControllerApplication` on
another stick of the same air interviews the device and runs `update_firmware()`. zigpy parses neither GB
Upgrade Images nor Smart Energy frames (it serves OTA over HA), so the device speaks the HA profile here and gets
a standard Zigbee OTA file; and it admits joiners by the Zigbee 3.0 well-known key, not by install code, so the
device's security is "none"."""

from __future__ import annotations

import asyncio
from pathlib import Path

import bellows.zigbee.application
import pytest
import zigpy.device
from test_ncp_joining import until
from test_stick_e2e import quick_profile
from zigpy.ota import OtaImageWithMetadata
from zigpy.ota.image import parse_ota_image
from zigpy.ota.providers import BaseOtaImageMetadata
from zigpy.zcl import foundation

from emulator.cli.device import DeviceRun, run_device
from emulator.ncp.server import VirtualNcp
from emulator.ota.image import build_zigbee
from emulator.profiles import load_device
from emulator.radio.air import Air
from emulator.radio.ezsp import ezsp_config
from emulator.radio.stick import JoinPlan, Role


@pytest.mark.virtual_time
async def test_zigpy_update_firmware_upgrades_the_device_on_the_other_stick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zigpy.device, "AFTER_OTA_ATTR_READ_DELAY", 0.5)  # zigpy waits 10 s before its read-back
    # Opt-out, named: zigpy serves a standard Zigbee OTA file (sub-elements), and the manufacturer signature trailer
    # the PPMID requires is defined for GB Upgrade Images only (`ota-emu image sign` refuses a Zigbee file), so no
    # image zigpy can serve would pass require_signature. The signature checks are tests/test_trust.py's.
    profile = load_device(
        quick_profile(tmp_path, "ppmid", 'profile_id = "0x0104"', "require_signature = false", 'security = "none"')
    )
    image = build_zigbee(0x121D, 0x0084, 2, payload=bytes(range(256)) * 4, hw_min=0x1111, hw_max=0x1211).serialize()
    firmware, _ = parse_ota_image(image)
    metadata = BaseOtaImageMetadata(file_version=2, manufacturer_id=0x121D, image_type=0x0084, file_size=len(image))
    air = Air(seed=21)
    async with VirtualNcp(air, seed=0) as coordinator, VirtualNcp(air, seed=1) as stick:
        config = ezsp_config(
            path=coordinator.url or "",
            channel=20,
            pan_id=0x3C3C,
            extended_pan_id=bellows.types.EUI64.convert("aa:bb:cc:dd:ee:ff:00:11"),
            network_key=bytes(range(16)),
        )
        # bellows registers its endpoints before forming, and forming resets the NCP, which forgets them (UG100
        # addEndpoint): zigpy's endpoint 1 with its OTA cluster is on the stick from the next start, as in a
        # Home Assistant install that has been restarted once.
        app = await bellows.zigbee.application.ControllerApplication.new(config, auto_form=True)
        await app.shutdown()
        app = await bellows.zigbee.application.ControllerApplication.new(config)
        try:
            await app.permit(60)
            run = DeviceRun(
                port=stick.url or "",
                profile=profile,
                plan=JoinPlan(Role.END_DEVICE, join_timeout=10),
                until=60,
                quiet=True,
                stay=True,  # zigpy reads the new version and re-interviews after the upgrade
            )
            stop = asyncio.Event()
            device_run = asyncio.create_task(run_device(run, stop))
            zigpy_device = await until(
                lambda: (d := app.devices.get(stick.stack.ieee)) is not None and d.is_initialized and d.model and d,
                within=20,
            )
            assert zigpy_device.model == "PPMID" and zigpy_device.manufacturer == "ota-emu"
            status = await zigpy_device.update_firmware(OtaImageWithMetadata(metadata=metadata, firmware=firmware))
            stop.set()
            summary, stopped, _, _ = await device_run
        finally:
            await app.shutdown()
    assert status == foundation.Status.SUCCESS
    assert (stopped, summary.result, summary.version) == ("signal", "upgraded", 2)
    assert summary.offset == summary.size == len(image)
    # zigpy read the new version back from the device and re-interviewed it.
    assert zigpy_device.endpoints[1].out_clusters[0x0019].get("current_file_version") == 2
