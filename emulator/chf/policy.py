"""Which image, if any, the CHF offers a device that sends Query Next Image Request. Pure decisions.

Order of the checks (SPEC.md §2.2, §8.6):
1. images for the device's manufacturer code and image type, not device-specific (those are for QDSF);
2. the DeviceIDList: an image held for other devices is not offered (`untargeted`: 0x98 or NOT_AUTHORIZED);
3. the version policy: upgrade (newer), downgrade (older), reinstall (same) or any (different);
4. the hardware range: a hardware version outside min..max disqualifies the image (Silicon Labs only does so
   when both sides carry versions; `require_hardware_version` also refuses a query without one). A mismatch
   with an image held for this device is reported, because GB raises CCS08 "hardware version mismatch" for it.
The highest remaining version wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import zigpy.types as t
from zigpy.zcl import foundation

from emulator.chf.store import HeldImage, ImageStore
from emulator.profiles import ChfProfile


@dataclass(frozen=True)
class QueryDecision:
    status: foundation.Status
    image: HeldImage | None = None
    reason: str = ""
    hardware_mismatch: HeldImage | None = None


def version_allowed(policy: str, offered: int, current: int) -> bool:
    if policy == "upgrade":
        return offered > current
    if policy == "downgrade":
        return offered < current
    if policy == "reinstall":
        return offered == current
    return offered != current


def hardware_allowed(held: HeldImage, hardware_version: int | None, require: bool) -> bool:
    hw_range = held.hardware_range
    if hw_range is None:
        return True
    if hardware_version is None:
        return not require
    return hw_range[0] <= hardware_version <= hw_range[1]


def decide_query(
    store: ImageStore,
    profile: ChfProfile,
    ieee: t.EUI64,
    manufacturer_id: int,
    image_type: int,
    current_version: int,
    hardware_version: int | None,
) -> QueryDecision:
    candidates = [
        held
        for held in store
        if held.manufacturer_id in (manufacturer_id, 0xFFFF)
        and held.image_type == image_type
        and held.destination is None
    ]
    if not candidates:
        return QueryDecision(foundation.Status.NO_IMAGE_AVAILABLE, reason="no image for this manufacturer and type")
    targeted = [held for held in candidates if held.targets(ieee)]
    if not targeted:
        status = (
            foundation.Status.NOT_AUTHORIZED
            if profile.untargeted == "not_authorized"
            else foundation.Status.NO_IMAGE_AVAILABLE
        )
        return QueryDecision(status, reason="device is not in the image's DeviceIDList")
    versioned = [held for held in targeted if version_allowed(profile.query_policy, held.file_version, current_version)]
    if not versioned:
        return QueryDecision(
            foundation.Status.NO_IMAGE_AVAILABLE, reason=f"no image passes the {profile.query_policy} policy"
        )
    fitting = [held for held in versioned if hardware_allowed(held, hardware_version, profile.require_hardware_version)]
    if not fitting:
        mismatch = max(versioned, key=lambda h: h.file_version)
        reason = (
            "query carries no hardware version"
            if hardware_version is None
            else f"hardware version 0x{hardware_version:04X} outside the image's range"
        )
        return QueryDecision(foundation.Status.NO_IMAGE_AVAILABLE, reason=reason, hardware_mismatch=mismatch)
    best = max(fitting, key=lambda h: h.file_version)
    return QueryDecision(foundation.Status.SUCCESS, best, "offered")


def specific_file(store: ImageStore, ieee: t.EUI64, manufacturer_id: int, image_type: int) -> HeldImage | None:
    """The device-specific file (upgrade file destination = the requester) for Query Device Specific File."""
    matches = [
        held
        for held in store
        if held.destination == ieee
        and held.image_type == image_type
        and held.manufacturer_id in (manufacturer_id, 0xFFFF)
    ]
    return max(matches, key=lambda h: h.file_version, default=None)
