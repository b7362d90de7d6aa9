"""The upgrade files the test CHF serves the device under test, made to measure for each scenario.

Everything is derived from what the DUT said about itself in its Query Next Image Request (manufacturer code,
image type, running version, hardware version), so the same scenarios work on a real device: a good image is
either the file the operator supplied (a real device accepts only its vendor's images) or a synthetic GB
Upgrade Image; the bad ones are that image with one byte changed, or with a hardware range that excludes the DUT.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from dataclasses import dataclass

import zigpy.types as t
from zigpy.ota.image import FieldControl, HWVersion

from emulator import keys
from emulator.chf.store import HeldImage
from emulator.conformance.verdict import FrameRecord
from emulator.ota import image as ota_image
from emulator.ota import signing
from emulator.ota.frames import WILDCARD_FILE_VERSION
from emulator.profiles import ActivationTime, bundled_key

SYNTHETIC_SIZE = 1536
# Offset of the most significant byte of the header's file version (SPEC.md §5.1: FileVersion at 14..17, LE).
FILE_VERSION_MSB = 17


@dataclass(frozen=True)
class DutIdentity:
    """What the DUT's Query Next Image Request says about it (SPEC.md §2.2)."""

    manufacturer_code: int
    image_type: int
    file_version: int
    hardware_version: int | None

    @classmethod
    def from_query(cls, query: FrameRecord) -> DutIdentity:
        fields = query.fields
        hardware = fields.get("hardware_version") if int(fields.get("field_control", 0)) & 1 else None
        return cls(
            int(fields["manufacturer_code"]),
            int(fields["image_type"]),
            int(fields["current_file_version"]),
            None if hardware is None else int(hardware),
        )


def other_version(version: int, step: int = 1) -> int:
    """A file version `step` above `version`, never the wildcard."""
    candidate = (version + step) & 0xFFFFFFFF
    return candidate if candidate != WILDCARD_FILE_VERSION else (candidate + 1) & 0xFFFFFFFF


def synthetic(identity: DutIdentity, version: int, *, hardware: tuple[int, int] | None = None) -> HeldImage:
    """A GB Upgrade Image for the DUT, signed with the test-only key; its hardware range is the DUT's own version
    unless given."""
    if hardware is None and identity.hardware_version is not None:
        hardware = (identity.hardware_version, identity.hardware_version)
    image, data = _synthetic_file(identity, version, hardware)
    return HeldImage(image, data, source="<synthetic>")


@functools.lru_cache(maxsize=256)
def _synthetic_file(
    identity: DutIdentity, version: int, hardware: tuple[int, int] | None
) -> tuple[ota_image.UpgradeImage, bytes]:
    """The file `synthetic` holds, built once per process: its payload is seeded by the arguments, so only the
    ECDSA signature would differ from one build to the next, and any valid signature serves every check alike."""
    payload = random.Random(f"{identity.manufacturer_code}:{identity.image_type}:{version}").randbytes(SYNTHETIC_SIZE)
    image = ota_image.build_gb(
        identity.manufacturer_code,
        identity.image_type,
        version,
        payload=payload,
        header_string="ota-emu conformance image",
        hw_min=None if hardware is None else hardware[0],
        hw_max=None if hardware is None else hardware[1],
    )
    # Signed with the test-only manufacturer key the bundled and fault profiles trust (profiles/keys/README.md).
    image = signing.sign_image(image, keys.load_private_key(bundled_key("test-image-signer.key.pem")))
    return image, image.serialize()


def for_device(held: HeldImage, ieee: t.EUI64, activation: str | None = None) -> HeldImage:
    """`held`, targeted at the DUT only (its DeviceIDList) with the Upgrade End policy the scenario wants, written
    as in a profile ("now", "wait", "+SECONDS", an ISO time)."""
    when = None if activation is None else ActivationTime.parse(activation)
    return HeldImage(held.image, held.data, frozenset({ieee}), when, held.source)


def one_byte_changed(held: HeldImage) -> HeldImage:
    """`held` offered under its own identity, but served with one byte of the header's file version changed:
    the file no longer is the image that was offered, which every client's integrity check must see."""
    data = bytearray(held.data)
    data[FILE_VERSION_MSB] ^= 0x01
    return HeldImage(held.image, bytes(data), held.device_ids, held.activation, f"{held.source} (one byte changed)")


def excluding_hardware(held: HeldImage, hardware_version: int) -> HeldImage:
    """`held` with a hardware range in its header that does not include `hardware_version` (for a GB image the
    header is outside the signed Manufacturer Image, so a supplied image keeps a valid signature)."""
    low, high = (hardware_version + 1, 0xFFFF) if hardware_version < 0xFFFF else (0, hardware_version - 1)
    old = held.image.header
    header = type(old)(
        **old.as_dict()
        | {
            "field_control": FieldControl(old.field_control | FieldControl.HARDWARE_VERSIONS_PRESENT),
            "minimum_hardware_version": HWVersion(low),
            "maximum_hardware_version": HWVersion(high),
        }
    )
    image = dataclasses.replace(held.image, header=header)
    return HeldImage(image, image.serialize(), held.device_ids, held.activation, f"{held.source} (other hardware)")
