"""The device's firmware slots: checking a downloaded image before it may be run, and switching to it.

Verification is what SPEC.md §2.7 asks of a client before Upgrade End SUCCESS — the image must be intact and
meant for this device: the header names the offered manufacturer, image type and version, the hardware range
covers this device, a device-specific file names this device, and a signature (GB trailer, SPEC.md §8.4) verifies
with a trusted signer when one is present or required. The Manufacturer Image Hash that an Activate Firmware
command must quote (CS06) is computed here too. Pure functions over `DeviceState`; the state machine decides when.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import zigpy.types as t
from zigpy.zcl.clusters.general import Ota

from emulator import keys
from emulator.device.attributes import NO_FILE_OFFSET, NO_FILE_VERSION, NO_IMAGE_TYPE, NO_STACK_VERSION
from emulator.device.state import DeviceState, DownloadBuffer, ImageRef, VerifiedImage
from emulator.keys import PublicKey
from emulator.ota import image as ota_image
from emulator.ota import signing

WILDCARD_MANUFACTURER = 0xFFFF
UpgradeStatus = Ota.ImageUpgradeStatus


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str
    stack_version: int


@dataclass(frozen=True)
class Identity:
    """What the device checks an image against."""

    ieee: t.EUI64
    manufacturer_code: int
    hardware_version: int | None
    signers: tuple[PublicKey, ...]
    require_signature: bool


def load_signers(paths: Sequence[str]) -> tuple[PublicKey, ...]:
    """The trusted signer keys; a bad file raises `KeyFileError` naming it."""
    return tuple(keys.load_public_key(path) for path in paths)


def verify(data: bytes, offered: ImageRef, identity: Identity) -> Verdict:
    """Every check a client makes before declaring the download good (SPEC.md §2.7, §8.4, C-12/C-13)."""
    try:
        image = ota_image.parse(data, source="downloaded image")
    except ota_image.ImageError as exc:
        return Verdict(False, str(exc), NO_STACK_VERSION)
    header = image.header
    stack = int(header.stack_version)
    for label, got, want in (
        ("manufacturer code", header.manufacturer_id, offered.manufacturer_code),
        ("image type", header.image_type, offered.image_type),
        ("file version", header.file_version, offered.file_version),
    ):
        if got != want:
            return Verdict(False, f"header {label} 0x{got:X} differs from the offered 0x{want:X}", stack)
    if header.manufacturer_id not in (identity.manufacturer_code, WILDCARD_MANUFACTURER):
        return Verdict(
            False,
            f"image is for manufacturer 0x{header.manufacturer_id:04X}, not 0x{identity.manufacturer_code:04X}",
            stack,
        )
    hw_min, hw_max = header.minimum_hardware_version, header.maximum_hardware_version
    hardware = identity.hardware_version
    if hardware is not None and hw_min is not None and hw_max is not None and not hw_min <= hardware <= hw_max:
        return Verdict(
            False, f"hardware version 0x{hardware:04X} outside the image's 0x{hw_min:04X}..0x{hw_max:04X}", stack
        )
    destination = header.upgrade_file_destination
    if destination is not None and destination != identity.ieee:
        return Verdict(False, f"device-specific file for {destination}, not {identity.ieee}", stack)
    if (image.signature is not None and identity.signers) or identity.require_signature:
        result = signing.verify_image(image, identity.signers)
        if not result.ok:
            return Verdict(False, f"signature: {result.reason}", stack)
        return Verdict(True, result.reason, stack)
    return Verdict(True, "header matches the offer and this device", stack)


def manufacturer_image_hash(data: bytes) -> bytes:
    """SHA-256 of the Manufacturer Image inside an upgrade file (SPEC.md §8.4); for bytes that do not parse
    (kept only by a device that skips verification) the hash of everything after the fixed header."""
    try:
        return signing.manufacturer_image_hash(ota_image.parse(data, source="held image"))
    except ota_image.ImageError:
        return hashlib.sha256(data[ota_image.FIXED_HEADER_LENGTH :]).digest()


def start_download(state: DeviceState, ref: ImageRef, offset: int) -> None:
    """QNI Response accepted (SPEC.md §2.3): FileOffset, DownloadedFileVersion, ImageTypeID set, status 1."""
    state.download = ref
    state.file_offset = offset
    if state.partial is None or len(state.partial) != ref.image_size:
        state.partial = DownloadBuffer(ref.image_size)
    state.downloaded_file_version = ref.file_version
    state.image_type_id = ref.image_type
    state.image_upgrade_status = UpgradeStatus.Download_in_progress


def hold(state: DeviceState, verdict: Verdict, data: bytes) -> VerifiedImage:
    """Move a verified download (`data`, the bytes of the download buffer) into the held slots (status 2,
    Download complete)."""
    assert state.download is not None
    held = VerifiedImage(state.download, verdict.stack_version, data)
    state.held = [h for h in state.held if h.ref.image_type != held.ref.image_type] + [held]
    state.download = None
    state.partial = None
    state.downloaded_stack_version = verdict.stack_version
    state.image_upgrade_status = UpgradeStatus.Download_complete
    return held


def discard(state: DeviceState) -> None:
    """Forget the download and every held image; the attributes read as if nothing was ever offered."""
    state.download = None
    state.partial = None
    state.held = []
    state.file_offset = NO_FILE_OFFSET
    state.downloaded_file_version = NO_FILE_VERSION
    state.downloaded_stack_version = NO_STACK_VERSION
    state.image_type_id = NO_IMAGE_TYPE
    state.image_upgrade_status = UpgradeStatus.Normal


def suspend(state: DeviceState) -> None:
    """A download that failed on the link: status back to Normal, but the identity, FileOffset and the bytes
    received stay, so the next offer of the same image resumes where this one stopped."""
    state.image_upgrade_status = UpgradeStatus.Normal


def activate(state: DeviceState, main_type: int, *, fails: bool, keep_image_type: bool) -> tuple[int, int, bool]:
    """Reboot into the held image of `main_type` (or the first held one); with `fails` the new image does not
    come up and the old version keeps running. Returns (old version, version now running, success). C-21:
    CurrentFileVersion becomes the new version, ImageTypeID 0xFFFF, FileOffset/Downloaded* reset, status 0."""
    old = state.running_version
    main = next((h for h in state.held if h.ref.image_type == main_type), state.held[0])
    discard(state)
    if fails:
        return old, old, False
    state.running_version = main.ref.file_version
    state.running_stack_version = main.stack_version
    state.running_image = main.data
    if keep_image_type:
        state.image_type_id = main.ref.image_type
    return old, state.running_version, True
