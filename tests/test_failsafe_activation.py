"""Fail-safe activation: the CHF never tells a device whose kind it has not learned to activate now.

GB (DUIS SR 11.3, GBCS CS06) lets an HCALCS switch firmware only on a hash-checked Activate Firmware command.
The CHF learns a device's kind from its Simple Descriptor (zigpy's interview); on a lossy air that interview may
not have finished when the device ends its download. These runs use an HCALCS profile that accepts server-driven
activation (UpgradeActivationPolicy 0) but does not apply on its own after unanswered Upgrade End Requests
(UpgradeTimeoutPolicy 1), so only the CHF's answer stands between the device and a wrong switch.
"""

from __future__ import annotations

import random

import pytest

from conftest import held_image
from emulator.chf import events as server_events
from emulator.device import events as device_events
from emulator.han.network import Han, HanOptions, expand
from emulator.ota.frames import UPGRADE_TIME_WAIT
from emulator.profiles import bundled, load_chf, load_device
from emulator.radio.air import LinkModel

pytestmark = pytest.mark.virtual_time

NEW = 0x00000002
DAY = 86400.0


async def run_lossy(loss: float, seed: int, count: int = 100) -> Han:
    # A profile copy with server-driven activation allowed, so the CHF's answer alone decides. Network-key
    # security, as in the runs that showed the fault: whether the CHF learns a device's kind depends on its
    # interview surviving the loss, not on CBKE, which would only make each run ten times dearer.
    hcalcs = load_device(bundled("hcalcs")).replace(
        upgrade_activation_policy=0, upgrade_timeout_policy=1, security="none"
    )
    devices = expand([hcalcs], count)
    chf = load_chf(bundled("chf")).replace(transfer_timeout=7 * DAY, security="none")
    images = [held_image(hcalcs, size=1024, device_ids=[d.ieee for d in devices])]
    han = Han(chf, devices, images, HanOptions(seed=seed, link=LinkModel(loss=loss)))
    await han.start()
    # Six hours of protocol time: every device that gets its image through the loss reaches Upgrade End by then.
    await han.settle(6 * 3600)
    await han.stop()
    return han


@pytest.mark.parametrize(("loss", "seed"), [(0.2, 2), (0.4, 2)])
async def test_no_hcalcs_activates_without_activate_firmware_on_a_lossy_air(loss, seed):
    han = await run_lossy(loss, seed)
    activated = [e for e in han.events if isinstance(e, device_events.Activated)]
    assert activated == []
    now_answers = [
        e
        for e in han.events
        if isinstance(e, server_events.UpgradeEndResponseSent) and e.upgrade_time != UPGRADE_TIME_WAIT
    ]
    assert now_answers == []
    # The run did something: devices downloaded and verified the image and were told to wait.
    assert sum(1 for e in han.events if isinstance(e, device_events.WaitingToUpgrade)) >= 40
    assert all(d.running_version == 1 for d in han.devices.values())


async def test_a_ppmid_whose_kind_was_unknown_is_told_to_activate_once_the_chf_knows():
    ppmid = load_device(bundled("ppmid"))
    devices = expand([ppmid], 10)
    held = held_image(ppmid, payload=random.Random(1).randbytes(1024), device_ids=[d.ieee for d in devices])
    han = Han(load_chf(bundled("chf")), devices, [held], HanOptions(seed=2, link=LinkModel(loss=0.2)))
    await han.start()
    assert await han.settle(3 * DAY)
    await han.stop()
    answers = [e for e in han.events if isinstance(e, server_events.UpgradeEndResponseSent)]
    # Loss kept the CHF from learning some kinds in time: those were told to wait, and told to activate once the
    # CHF knew them (answering the device's next Upgrade End Request, or unsolicited after the interview).
    waited = {e.ieee for e in answers if e.upgrade_time == UPGRADE_TIME_WAIT}
    assert waited
    assert all(s.result == "upgraded" for s in han.summaries.values())
    assert all(d.running_version == NEW for d in han.devices.values())
