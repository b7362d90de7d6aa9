"""Manufacturer signatures and hashes of GB Upgrade Images (SPEC.md §8.4).

The signature is ECDSA P-256/SHA-256 over the Manufacturer Image only — header and trailer excluded — carried as
64 bytes r‖s after the length `00 40`; the Manufacturer Image Hash (SHA-256 of the same bytes) is what an Activate
Firmware command carries to name the image (CS06).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from emulator import keys
from emulator.keys import PrivateKey, PublicKey
from emulator.ota.image import ImageError, UpgradeImage


@dataclass(frozen=True)
class Verification:
    """The outcome of checking an image's trailer: `signer` is the index into the trusted signers that matched."""

    ok: bool
    reason: str
    signer: int | None = None


def manufacturer_image_hash(image: UpgradeImage) -> bytes:
    """SHA-256 of the Manufacturer Image (32 bytes): the value an Activate Firmware command carries."""
    return hashlib.sha256(image.manufacturer_image).digest()


def sign_image(image: UpgradeImage, key: PrivateKey, source: str = "image") -> UpgradeImage:
    """The same image with its signature trailer added or replaced; the header's total size follows."""
    if image.kind != "gb":
        raise ImageError(
            f"{source}: is a Zigbee OTA file (sub-elements), expected a GB Upgrade Image: the signature trailer "
            "is defined for GB Upgrade Images only"
        )
    return dataclasses.replace(image, signature=keys.sign(key, image.manufacturer_image))


def verify_image(image: UpgradeImage, signers: Sequence[PublicKey]) -> Verification:
    """Check the trailer against each trusted signer in turn; the first that verifies wins."""
    if image.signature is None:
        if image.kind == "zigbee":
            return Verification(False, "no signature trailer (a Zigbee OTA file; the trailer is defined for GB images)")
        return Verification(False, "no signature trailer")
    if not signers:
        return Verification(False, "no trusted signers given")
    for index, signer in enumerate(signers):
        if keys.verify(signer, image.manufacturer_image, image.signature):
            return Verification(True, f"signature verifies with trusted signer {index + 1} of {len(signers)}", index)
    count = len(signers)
    return Verification(False, f"signature does not verify with any of {count} trusted signer{'s' * (count != 1)}")
