"""GB Upgrade Images whose firmware starts with bytes that look like a sub-element header (zeros, say) are read
back as GB, by the reader and by every command that takes an image, and are served to a device."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from zigpy.ota.image import ElementTagId, LVBytes32, SubElement

from conftest import TEST_IMAGE_KEY
from emulator.cli import main
from emulator.ota import image as ota_image

PPMID = ("--manufacturer", "0x121D", "--image-type", "0x0084", "--file-version", "2")
HW = ("--hw-min", "0x1111", "--hw-max", "0x1211")

FIRMWARES = {
    "six zero bytes, then code": bytes(6) + random.Random(6).randbytes(500),
    "a zero-length Upgrade Image sub-element header, then code": bytes(6) + bytes(range(256)),
    "six zero bytes only": bytes(6),
    "zeros that walk as 170 empty sub-elements": bytes(1020),
}


def cli(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="ota-emu")


@pytest.mark.parametrize("firmware", FIRMWARES.values(), ids=FIRMWARES.keys())
def test_the_reader_keeps_a_gb_body_that_starts_like_a_sub_element(firmware: bytes) -> None:
    data = ota_image.build_gb(0x121D, 0x0084, 2, payload=firmware, hw_min=0x1111, hw_max=0x1211).serialize()
    image = ota_image.parse(data, source="zeros.ota")
    assert (image.kind, image.manufacturer_image, image.subelements) == ("gb", firmware, ())
    assert image.serialize() == data


def test_a_zigbee_file_with_data_is_still_read_as_zigbee() -> None:
    extra = SubElement(tag_id=ElementTagId(0xF000), data=LVBytes32(b""))
    data = ota_image.build_zigbee(0x121D, 0x0084, 2, payload=b"\x01\x02", subelements=[extra]).serialize()
    image = ota_image.parse(data)
    assert image.kind == "zigbee" and image.manufacturer_image == b"\x01\x02" and len(image.subelements) == 2


@pytest.mark.parametrize("firmware", FIRMWARES.values(), ids=FIRMWARES.keys())
def test_built_inspected_hashed_signed_and_served(tmp_path: Path, firmware: bytes) -> None:
    payload, built, signed = tmp_path / "firmware.bin", tmp_path / "ppmid.ota", tmp_path / "ppmid-signed.ota"
    payload.write_bytes(firmware)
    assert cli("image", "build", "--format", "gb", *PPMID, *HW, "--payload", payload, "-o", built).exit_code == 0

    inspected = cli("image", "inspect", "--json", built)
    assert inspected.exit_code == 0, inspected.output
    [facts] = json.loads(inspected.stdout)
    assert (facts["kind"], facts["manufacturer_image"]["length"]) == ("gb", len(firmware))

    hashed = cli("image", "hash", built)
    assert (hashed.exit_code, hashed.stdout.strip()) == (0, hashlib.sha256(firmware).hexdigest())

    assert cli("keys", "generate", "-o", tmp_path / "keys").exit_code == 0
    key, pub = tmp_path / "keys" / "signer.key.pem", tmp_path / "keys" / "signer.pub.pem"
    assert cli("image", "sign", "--key", key, built, "-o", signed).exit_code == 0
    assert cli("image", "verify", "--signer", pub, signed).exit_code == 0

    # The bundled PPMID trusts only the test-only signer in profiles/keys/: serve the build signed with it (into a
    # new file; signing in place is refused).
    served = tmp_path / "ppmid-served.ota"
    assert cli("image", "sign", "--key", TEST_IMAGE_KEY, built, "-o", served).exit_code == 0
    ran = cli("run", "--image", served, "--json")  # the bundled PPMID and HCALCS; the image is the PPMID's
    assert ran.exit_code == 0, ran.output
    outcome = json.loads(ran.stdout)
    assert [(d["kind"], d["result"], d["version"]) for d in outcome["devices"]] == [
        ("ppmid", "upgraded", 2),
        ("hcalcs", "no-image", 1),
    ]
