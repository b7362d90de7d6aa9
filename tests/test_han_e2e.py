"""End to end, in process: emulated PPMIDs and HCALCSs upgrade from the CHF OTA server on zigpy's loopback
radio over the virtual air, and an emulated device is upgraded by zigpy's own OTA server."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest
import zigpy.ota
import zigpy.ota.image
import zigpy.ota.providers
import zigpy.types as t
from zigpy.zcl import foundation

from conftest import held_image
from emulator.chf import events as server_events
from emulator.device import events as device_events
from emulator.device.device import EmulatedDevice
from emulator.gb.codes import ActivationResponse, AlertCode, TransferResponse
from emulator.han.network import Han, HanOptions, expand
from emulator.ota.image import build_zigbee
from emulator.ota.signing import manufacturer_image_hash
from emulator.profiles import ChfProfile, bundled, load_chf, load_device
from emulator.radio.air import LinkModel

pytestmark = pytest.mark.virtual_time

NEW = 0x00000002
DAY = 86400.0


@pytest.fixture
def ppmid():
    return load_device(bundled("ppmid"))


@pytest.fixture
def hcalcs():
    return load_device(bundled("hcalcs"))


async def settled_han(devices, images, chf: ChfProfile | None = None, **options) -> Han:
    han = Han(chf or load_chf(bundled("chf")), devices, images, HanOptions(**options))
    await han.start()
    assert await han.settle(2 * DAY), {str(k): v.result for k, v in han.summaries.items()}
    return han


async def test_ppmid_and_hcalcs_upgrade_with_gb_activation_rules(ppmid, hcalcs):
    ppmid_image, hcalcs_image = held_image(ppmid, size=4096), held_image(hcalcs, size=4096)
    han = await settled_han([ppmid, hcalcs], [ppmid_image, hcalcs_image])
    p, h = han.devices[ppmid.ieee], han.devices[hcalcs.ieee]

    # PPMID: distribution and activation in one step; the CHF said "now".
    assert han.summaries[ppmid.ieee].result == "upgraded"
    assert p.running_version == NEW and p.state.running_image == ppmid_image.data
    attrs = p.attributes
    assert (attrs[0x0002], attrs[0x0006], attrs[0x0008]) == (NEW, 0, 0xFFFF)
    assert attrs[0x0000] == han.chf_profile.ieee
    [activated] = [e for e in han.events if isinstance(e, device_events.Activated)]
    assert (activated.ieee, activated.new_version, activated.success) == (ppmid.ieee, NEW, True)
    assert activated.alert_code == AlertCode.FIRMWARE_VERSION

    # HCALCS: holds the verified image and waits (status 3) for Activate Firmware.
    assert han.summaries[hcalcs.ieee].result == "held"
    assert h.running_version == 1 and h.downloaded_image == hcalcs_image.data
    assert h.attributes[0x0006] == 3

    # CHF: one CCS08-meaning outcome per target, both success.
    outcomes = [e for e in han.events if isinstance(e, server_events.TransferOutcome)]
    assert {(o.ieee, o.response, o.alert_code) for o in outcomes} == {
        (ppmid.ieee, TransferResponse.SUCCESS, AlertCode.FIRMWARE_TRANSFER_SUCCESS),
        (hcalcs.ieee, TransferResponse.SUCCESS, AlertCode.FIRMWARE_TRANSFER_SUCCESS),
    }

    wrong = await han.activate(hcalcs.ieee, bytes(32))
    assert (wrong.accepted, wrong.response_code, wrong.firmware_version) == (False, ActivationResponse.HASH_MISMATCH, 1)
    assert h.running_version == 1
    right = await han.activate(hcalcs.ieee, manufacturer_image_hash(hcalcs_image.image))
    assert (right.response_code, right.firmware_version) == (ActivationResponse.SUCCESS, NEW)
    assert h.running_version == NEW and h.state.running_image == hcalcs_image.data
    assert h.attributes[0x0006] == 0
    await han.stop()


async def test_hcalcs_with_nothing_held_answers_no_image_held(hcalcs):
    other = load_device(bundled("ppmid"))
    han = await settled_han([hcalcs, other], [held_image(other, size=4096)])
    assert han.summaries[hcalcs.ieee].result == "no-image"
    reply = await han.activate(hcalcs.ieee, bytes(32))
    assert reply.response_code == ActivationResponse.NO_IMAGE_HELD
    await han.stop()


async def test_future_dated_activation_accepted_then_executed_at_its_time(hcalcs):
    held = held_image(hcalcs, size=4096)
    han = await settled_han([hcalcs], [held])
    at = han.clock.utc() + timedelta(hours=6)
    reply = await han.activate(hcalcs.ieee, manufacturer_image_hash(held.image), at)
    assert reply.accepted and reply.response_code is None
    start = han.clock.now()
    while han.devices[hcalcs.ieee].running_version != NEW:
        await asyncio.sleep(60)
    [outcome] = [e for e in han.events if isinstance(e, device_events.ActivationOutcome)]
    assert outcome.future_dated and outcome.alert_code == AlertCode.FUTURE_DATED_COMMAND_SUCCESS
    assert 6 * 3600 - 60 <= outcome.at - start <= 6 * 3600 + 60
    await han.stop()


async def test_ten_devices_finish_byte_identical_through_loss_and_duplication(ppmid):
    devices = expand([ppmid], 10)
    held = held_image(ppmid, size=8192, device_ids=tuple(d.ieee for d in devices))
    han = await settled_han(devices, [held], seed=11, link=LinkModel(loss=0.2, duplicate=0.05))
    assert han.air.stats["lost"] > 100 and han.air.stats["duplicated"] > 20
    for device in han.devices.values():
        assert device.running_version == NEW
        assert device.state.running_image == held.data
    await han.stop()


async def test_device_restarted_mid_download_resumes_from_its_persisted_offset(ppmid, tmp_path):
    held = held_image(ppmid, size=16384)
    han = Han(load_chf(bundled("chf")), [ppmid], [held], HanOptions(state_dir=tmp_path))
    await han.start()
    device = han.devices[ppmid.ieee]
    while han.summaries[ppmid.ieee].offset < held.size // 2:
        await asyncio.sleep(0.5)
    await device.stop()
    stopped_at = han.summaries[ppmid.ieee].offset

    # The restarted device joins as the first did: through its radio with the HAN's security (SE by default).
    radio = han.security.device_radio(ppmid, han.air)
    again = EmulatedDevice(ppmid, radio, han.clock, nwk=device.nwk, state_dir=tmp_path)
    han.security.attach_device(again, radio)
    seen: list[device_events.DeviceEvent] = []
    again.add_listener(seen.append)
    await again.start()
    while again.running_version != NEW:
        await asyncio.sleep(1)
    [started] = [e for e in seen if isinstance(e, device_events.DownloadStarted)]
    assert 0 < started.offset <= stopped_at
    assert again.state.running_image == held.data
    await again.stop()
    await han.stop()


async def test_zigpy_update_firmware_upgrades_an_emulated_zha_device(ppmid):
    """Interop: zigpy's own OTA server (update_firmware) on the same loopback radio, no CHF server attached."""
    # A Zigbee OTA file has no GB signature trailer: this Home Automation device opts out of signature checks.
    zha_device = ppmid.replace(profile_id=0x0104, require_signature=False)
    han = Han(load_chf(bundled("chf")), [zha_device], [], HanOptions())
    await han.start()
    han.server.stop()  # zigpy alone answers OTA frames now
    while not (zdev := han.app.devices.get(zha_device.ieee)) or not zdev.is_initialized:
        await asyncio.sleep(1)

    payload = random.Random(5).randbytes(3000)
    data = build_zigbee(zha_device.manufacturer_code, zha_device.image_type, NEW, payload=payload).serialize()
    firmware, _ = zigpy.ota.image.parse_ota_image(data)
    metadata = zigpy.ota.providers.BaseOtaImageMetadata(
        file_version=NEW, manufacturer_id=zha_device.manufacturer_code, image_type=zha_device.image_type
    )
    status = await zdev.update_firmware(zigpy.ota.OtaImageWithMetadata(metadata, firmware))
    assert status == foundation.Status.SUCCESS
    device = han.devices[zha_device.ieee]
    assert device.running_version == NEW and device.state.running_image == data
    await han.stop()


def test_expand_gives_consecutive_eui64s(ppmid):
    devices = expand([ppmid], 3)
    assert [d.ieee for d in devices] == [
        t.EUI64.convert("00:db:12:34:56:78:90:a4"),
        t.EUI64.convert("00:db:12:34:56:78:90:a5"),
        t.EUI64.convert("00:db:12:34:56:78:90:a6"),
    ]
