"""Every deliberate deviation in `DeviceFault` changes exactly the behaviour it names: each scenario
runs once on a conforming device and once on a faulty one and the two must be told apart by what the device did
on the air (or reported), which is what a conformance check sees."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from test_device_harness import (
    MFR,
    PPMID_TYPE,
    Received,
    Status,
    bench,
    gb_image,
    hcalcs_profile,
    notify,
    ppmid_profile,
    vrun,
)

from emulator.conformance.device.bench import DeviceTarget, check_device
from emulator.conformance.device.catalogue import CHECKS
from emulator.conformance.selection import select
from emulator.device import events
from emulator.device.device import EmulatedDevice
from emulator.device.faults import DeviceFault
from emulator.ota import frames
from emulator.ota import image as ota_image
from emulator.ota.signing import manufacturer_image_hash

Scenario = Callable[[list[str], Path], Awaitable[Any]]


def _offsets(b) -> list[int]:
    return [r.frame.command.file_offset for r in b.server.sent("image_block")]


async def no_hardware_version(faults: list[str], _: Path) -> int:
    b = await bench(ppmid_profile(faults=faults))
    (query,) = await b.server.wait_for("query_next_image")
    await b.device.stop()
    return query.frame.command.field_control


async def _queries_after_notify(faults: list[str], **notify_args: Any) -> int:
    b = await bench(ppmid_profile(faults=faults))
    await b.server.wait_for("query_next_image")
    notify(b.server, **notify_args)
    await asyncio.sleep(2)
    await b.device.stop()
    return len(b.server.sent("query_next_image")) - 1


async def query_on_any_notify(faults: list[str], _: Path) -> int:
    return await _queries_after_notify(faults, payload_type=1, jitter=1, broadcast=True, manufacturer_code=0x9999)


async def ignore_unicast_notify(faults: list[str], _: Path) -> int:
    return await _queries_after_notify(faults, payload_type=0, jitter=100)


async def accept_same_version(faults: list[str], _: Path) -> int:
    b = await bench(ppmid_profile(faults=faults), image=gb_image(1, size=100))
    b.server.on["query_next_image"] = lambda r: frames.encode(
        "query_next_image_response",
        tsn=r.frame.tsn,
        status=Status.SUCCESS,
        manufacturer_code=MFR,
        image_type=PPMID_TYPE,
        file_version=1,
        image_size=len(b.server.image),
    )
    await b.server.wait_for("query_next_image")
    await asyncio.sleep(5)
    await b.device.stop()
    return len(b.server.sent("image_block"))


async def ignore_offset(faults: list[str], _: Path) -> list[int]:
    b = await bench(ppmid_profile(faults=faults), image=gb_image(size=300))
    b.server.on["image_block"] = lambda r: (
        b.server.block(r, offset=126) if len(b.server.sent("image_block")) == 1 else None
    )
    await b.server.wait_for("image_block", 2)
    await b.device.stop()
    return _offsets(b)[:2]


async def ignore_wait_for_data(faults: list[str], _: Path) -> int:
    b = await bench(ppmid_profile(faults=faults), image=gb_image(size=100))
    b.server.on["image_block"] = lambda r: (
        frames.encode(
            "image_block_response", tsn=r.frame.tsn, status=Status.WAIT_FOR_DATA, current_time=0, request_time=90
        )
        if len(b.server.sent("image_block")) == 1
        else None
    )
    first, second = await b.server.wait_for("image_block", 2)
    await b.device.stop()
    return round(second.at - first.at)


async def ignore_min_block_period(faults: list[str], _: Path) -> int:
    b = await bench(
        ppmid_profile(faults=faults, minimum_block_period=2, block_period_unit="s"), image=gb_image(size=200)
    )
    reqs = await b.server.wait_for("image_block", 3)
    await b.device.stop()
    return round(min(r2.at - r1.at for r1, r2 in itertools.pairwise(reqs)))


async def continue_after_abort(faults: list[str], _: Path) -> list[int]:
    b = await bench(ppmid_profile(faults=faults), image=gb_image(size=300))
    b.server.on["image_block"] = lambda r: (
        frames.encode("image_block_response", tsn=r.frame.tsn, status=Status.ABORT)
        if r.frame.command.file_offset == 63
        else b.server.block(r)
    )
    await b.server.wait_for("image_block", 2)
    await asyncio.sleep(60)
    await b.device.stop()
    return _offsets(b)


async def ignore_no_image_default_response(faults: list[str], _: Path) -> list[int]:
    b = await bench(ppmid_profile(faults=faults, max_resends=3), image=gb_image(size=300))
    b.server.on["image_block"] = lambda r: (
        frames.default_response(tsn=r.frame.tsn, command_id=3, status=Status.NO_IMAGE_AVAILABLE, direction=frames.S2C)
        if r.frame.command.file_offset == 63
        else b.server.block(r)
    )
    await b.server.wait_for("upgrade_end")
    await b.device.stop()
    return _offsets(b)


async def no_resend(faults: list[str], _: Path) -> list[int]:
    b = await bench(ppmid_profile(faults=faults, max_resends=2), image=gb_image(size=300))
    b.server.on["image_block"] = lambda r: None if r.frame.command.file_offset == 63 else b.server.block(r)
    await b.server.wait_for("upgrade_end")
    await b.device.stop()
    return _offsets(b)


async def _upgrade_end_status(faults: list[str], image: bytes) -> list[int]:
    b = await bench(ppmid_profile(faults=faults), image=image)
    await b.log.wait(events.ImageVerified)
    await asyncio.sleep(5)
    await b.device.stop()
    return [r.frame.command.status for r in b.server.sent("upgrade_end")]


async def skip_verification(faults: list[str], _: Path) -> list[int]:
    return await _upgrade_end_status(faults, gb_image(size=100, hw_min=0x2000, hw_max=0x2100))


async def no_upgrade_end_on_invalid(faults: list[str], _: Path) -> list[int]:
    return await _upgrade_end_status(faults, gb_image(size=100, hw_min=0x2000, hw_max=0x2100))


async def _activated_after(faults: list[str], policy: Any, seconds: float, **profile: Any) -> bool:
    b = await bench(ppmid_profile(faults=faults, **profile), image=gb_image(size=100))
    if callable(policy):
        b.server.on["upgrade_end"] = lambda r: policy(b, r)
    else:
        b.server.upgrade_time = policy
    await b.server.wait_for("upgrade_end")
    await asyncio.sleep(seconds)
    await b.device.stop()
    return b.device.running_version == 2


async def activate_while_waiting(faults: list[str], _: Path) -> bool:
    return await _activated_after(faults, "wait", 60)


async def ignore_upgrade_time(faults: list[str], _: Path) -> bool:
    return await _activated_after(faults, 3600, 60)


async def accept_foreign_upgrade_end(faults: list[str], _: Path) -> bool:
    def other_image(b, r: Received) -> bytes:
        return b.server.upgrade_end_response(r.frame.tsn, current=0, upgrade=0, file_version=7)

    return await _activated_after(faults, other_image, 60)


async def ignore_activation_policy(faults: list[str], _: Path) -> bool:
    return await _activated_after(faults, "now", 60, upgrade_activation_policy=1)


async def restart_from_zero(faults: list[str], state_dir: Path) -> int:
    profile = ppmid_profile(faults=faults)
    b = await bench(profile, image=gb_image(size=5000), state_dir=state_dir)
    await b.server.wait_for("image_block", 40)
    await b.device.stop()
    before = len(b.server.sent("image_block"))
    device = EmulatedDevice(profile, b.air, b.clock, nwk=0x1234, state_dir=state_dir)
    await device.start()
    await b.server.wait_for("image_block", before + 1)
    await device.stop()
    return b.server.sent("image_block")[before].frame.command.file_offset


async def keep_image_type_after_upgrade(faults: list[str], _: Path) -> int:
    b = await bench(ppmid_profile(faults=faults), image=gb_image(size=100))
    await b.log.wait(events.Announced, 2)  # rebooted into the new firmware
    await b.device.stop()
    return b.device.attributes[0x0008]


async def no_activation_alert(faults: list[str], _: Path) -> tuple[int, int]:
    b = await bench(ppmid_profile(faults=faults), image=gb_image(size=100))
    await b.log.wait(events.Announced, 2)  # rebooted into the new firmware
    await b.device.stop()
    return len(b.log.of(events.Activated)), b.device.running_version


async def skip_hash_check(faults: list[str], _: Path) -> int:
    b = await bench(hcalcs_profile(faults=faults), image=gb_image(3, image_type=0x0085, size=100))
    b.server.upgrade_time = "wait"
    await b.log.wait(events.WaitingToUpgrade)
    reply = await b.device.activate_firmware(bytes(32))
    await b.device.stop()
    return reply.response_code


async def activate_without_image(faults: list[str], _: Path) -> int:
    b = await bench(hcalcs_profile(faults=faults))
    await b.server.wait_for("query_next_image")
    reply = await b.device.activate_firmware(bytes(32))
    await b.device.stop()
    return reply.response_code


async def no_page_fallback(faults: list[str], _: Path) -> tuple[int, int]:
    b = await bench(ppmid_profile(faults=faults, page_requests=True, page_size=128), image=gb_image(size=300))
    await asyncio.sleep(120)
    await b.device.stop()
    return len(b.server.sent("image_page")), len(b.server.sent("image_block"))


async def assume_full_blocks(faults: list[str], _: Path) -> list[int]:
    b = await bench(ppmid_profile(faults=faults), image=gb_image(size=300))
    b.server.max_block = 40
    await b.server.wait_for("image_block", 3)
    await b.device.stop()
    return _offsets(b)[:3]


async def upgrade_end_running_version(faults: list[str], _: Path) -> list[int]:
    b = await bench(ppmid_profile(faults=faults), image=gb_image(size=100))
    await b.server.wait_for("upgrade_end")
    await b.device.stop()
    return [r.frame.command.file_version for r in b.server.sent("upgrade_end")]


async def ignore_timeout_policy(faults: list[str], _: Path) -> bool:
    def never(_b, _r: Received) -> None:
        return None

    return await _activated_after(
        faults, never, 12 * 3600, upgrade_timeout_policy=1, upgrade_end_retry=600, upgrade_wait_threshold=3
    )


async def activate_future_dated_now(faults: list[str], _: Path) -> tuple[bool, int]:
    b = await bench(hcalcs_profile(faults=faults), image=gb_image(3, image_type=0x0085, size=100))
    b.server.upgrade_time = "wait"
    await b.log.wait(events.WaitingToUpgrade)
    held = ota_image.parse(b.device.downloaded_image)
    reply = await b.device.activate_firmware(manufacturer_image_hash(held), b.clock.utc() + timedelta(hours=6))
    version_soon = b.device.running_version
    await b.device.stop()
    return reply.accepted, version_soon


# fault → (scenario, what a conforming device does, what the faulty one does)
CASES: dict[str, tuple[Scenario, Any, Any]] = {
    "no_hardware_version": (no_hardware_version, 1, 0),
    "query_on_any_notify": (query_on_any_notify, 0, 1),
    "ignore_unicast_notify": (ignore_unicast_notify, 1, 0),
    "accept_same_version": (accept_same_version, 0, 3),
    "ignore_offset": (ignore_offset, [0, 0], [0, 189]),
    "ignore_wait_for_data": (ignore_wait_for_data, 90, 0),
    "ignore_min_block_period": (ignore_min_block_period, 2, 0),
    "continue_after_abort": (continue_after_abort, [0, 63], [0, 63, 63, 63, 63]),
    "ignore_no_image_default_response": (ignore_no_image_default_response, [0, 63, 63, 63], [0, 63, 63, 63, 63]),
    "no_resend": (no_resend, [0, 63, 63, 63], [0, 63]),
    "skip_verification": (skip_verification, [Status.INVALID_IMAGE], [Status.SUCCESS]),
    "activate_while_waiting": (activate_while_waiting, False, True),
    "ignore_upgrade_time": (ignore_upgrade_time, False, True),
    "accept_foreign_upgrade_end": (accept_foreign_upgrade_end, False, True),
    "ignore_activation_policy": (ignore_activation_policy, False, True),
    "restart_from_zero": (restart_from_zero, 39 * 63, 0),  # stopped with the 40th request unanswered
    "keep_image_type_after_upgrade": (keep_image_type_after_upgrade, 0xFFFF, PPMID_TYPE),
    "no_activation_alert": (no_activation_alert, (1, 2), (0, 2)),
    "skip_hash_check": (skip_hash_check, 2, 0),
    "activate_without_image": (activate_without_image, 1, 0),
    "no_page_fallback": (no_page_fallback, (1, 6), (4, 0)),
    "no_upgrade_end_on_invalid": (no_upgrade_end_on_invalid, [Status.INVALID_IMAGE], []),
    "assume_full_blocks": (assume_full_blocks, [0, 40, 80], [0, 63, 126]),
    "upgrade_end_running_version": (upgrade_end_running_version, [2], [1]),
    "ignore_timeout_policy": (ignore_timeout_policy, False, True),
    "activate_future_dated_now": (activate_future_dated_now, (True, 1), (False, 3)),
}


def _zcl_check(check: str) -> Scenario:
    """The ZCL header faults, told apart by the bench's ZCL check that judges them (Z-01 … Z-05)."""

    async def scenario(faults: list[str], _: Path) -> str:
        report = await check_device(DeviceTarget(profile=ppmid_profile(faults=faults)), select([check], CHECKS))
        return report.results[0].verdict.value

    return scenario


CASES |= {
    "zcl_wrong_tsn": (_zcl_check("Z-01"), "pass", "fail"),
    "zcl_wrong_direction": (_zcl_check("Z-02"), "pass", "fail"),
    "zcl_default_response_when_disabled": (_zcl_check("Z-03"), "pass", "fail"),
    "zcl_silent_on_unsupported": (_zcl_check("Z-04"), "pass", "fail"),
    "zcl_manufacturer_flag": (_zcl_check("Z-05"), "pass", "fail"),
}


# The Smart Energy security faults, told apart by the bench's security check that judges them (SE-01 … SE-06).
CASES |= {
    "join_with_foreign_key": (_zcl_check("SE-01"), "pass", "fail"),
    "ota_without_aps_encryption": (_zcl_check("SE-02"), "pass", "fail"),
    "ke_no_terminate": (_zcl_check("SE-05"), "pass", "fail"),
    "ke_terminate_bad_message": (_zcl_check("SE-03"), "pass", "fail"),
    "accept_unencrypted_ota": (_zcl_check("SE-06"), "pass", "fail"),
}


def test_every_fault_has_a_case() -> None:
    assert set(CASES) == {fault.value for fault in DeviceFault}


@pytest.mark.parametrize("fault", sorted(CASES))
def test_fault_changes_the_behaviour_it_names(fault: str, tmp_path: Path) -> None:
    scenario, conforming, faulty = CASES[fault]
    assert vrun(lambda: scenario([], tmp_path / "conforming")) == conforming
    assert vrun(lambda: scenario([fault], tmp_path / "faulty")) == faulty


def test_image_sizes_used_in_the_cases() -> None:
    assert ota_image.parse(gb_image(size=300)).header.image_size == 360  # 5 full blocks of 63, then 45
    assert ota_image.parse(gb_image(size=100)).header.image_size == 160  # 3 blocks
