"""Manufacturer Image signatures and hashes, checked against the signed DCC sample."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from emulator import keys
from emulator.errors import InputError
from emulator.ota.image import build_gb, build_zigbee, parse
from emulator.ota.signing import Verification, manufacturer_image_hash, sign_image, verify_image

ESME_IMAGE_HASH = "7542f475e3f12eae887d81e32c46d313741d67076b13caec2f82e00ba5e1bb36"
IMAGE_START, TRAILER_START = 60, 295


@pytest.fixture
def dcc_signer(dcc_signer_cert_path: Path) -> keys.PublicKey:
    return keys.load_public_key(dcc_signer_cert_path)


def _flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1 :]


def test_esme_sample_verifies_with_the_dcc_signer(esme_image_path: Path, dcc_signer: keys.PublicKey) -> None:
    outcome = verify_image(parse(esme_image_path.read_bytes()), [dcc_signer])
    assert outcome == Verification(True, "signature verifies with trusted signer 1 of 1", 0)


def test_esme_sample_hash_is_the_documented_value(esme_image_path: Path) -> None:
    image = parse(esme_image_path.read_bytes())
    assert manufacturer_image_hash(image).hex() == ESME_IMAGE_HASH
    assert manufacturer_image_hash(image) == hashlib.sha256(esme_image_path.read_bytes()[60:295]).digest()


def test_hash_excludes_header_and_trailer(esme_image_path: Path) -> None:
    data = esme_image_path.read_bytes()
    relabelled = parse(_flip(_flip(data, 14), len(data) - 1))  # file version and last signature byte
    assert manufacturer_image_hash(relabelled).hex() == ESME_IMAGE_HASH


def test_flipping_any_manufacturer_image_byte_breaks_the_signature(
    esme_image_path: Path, dcc_signer: keys.PublicKey
) -> None:
    data = esme_image_path.read_bytes()
    for offset in range(IMAGE_START, TRAILER_START):
        outcome = verify_image(parse(_flip(data, offset)), [dcc_signer])
        assert not outcome.ok, offset
        assert outcome.reason == "signature does not verify with any of 1 trusted signer"


def test_flipping_any_signature_byte_breaks_the_signature(esme_image_path: Path, dcc_signer: keys.PublicKey) -> None:
    data = esme_image_path.read_bytes()
    for offset in range(TRAILER_START + 2, len(data)):
        outcome = verify_image(parse(_flip(data, offset)), [dcc_signer])
        assert not outcome.ok, offset
        assert outcome.signer is None


def test_flipping_the_trailer_length_leaves_no_signature(esme_image_path: Path, dcc_signer: keys.PublicKey) -> None:
    data = esme_image_path.read_bytes()
    for offset in (TRAILER_START, TRAILER_START + 1):
        outcome = verify_image(parse(_flip(data, offset)), [dcc_signer])
        assert outcome == Verification(False, "no signature trailer")


def test_the_header_is_not_covered_by_the_signature(esme_image_path: Path, dcc_signer: keys.PublicKey) -> None:
    relabelled = _flip(esme_image_path.read_bytes(), 14)  # file version, SPEC.md §8.4: signature covers the image only
    assert verify_image(parse(relabelled), [dcc_signer]).ok


def test_signing_an_unsigned_image_adds_the_trailer(ppmid_image_path: Path) -> None:
    key = keys.generate_private_key()
    original = parse(ppmid_image_path.read_bytes())
    signed = sign_image(original, key)
    data = signed.serialize()
    assert len(data) == 295 + 66
    assert signed.header.image_size == len(data)
    assert data[:52] == ppmid_image_path.read_bytes()[:52]
    assert data[60:295] == original.manufacturer_image
    assert data[295:297] == b"\x00\x40"
    reparsed = parse(data)
    assert reparsed.signature == signed.signature
    assert verify_image(reparsed, [key.public_key()]).ok


def test_re_signing_replaces_the_trailer(esme_image_path: Path, dcc_signer: keys.PublicKey) -> None:
    key = keys.generate_private_key()
    resigned = sign_image(parse(esme_image_path.read_bytes()), key)
    data = resigned.serialize()
    assert len(data) == 361
    assert data[:295] == esme_image_path.read_bytes()[:295]
    assert not verify_image(resigned, [dcc_signer]).ok
    outcome = verify_image(parse(data), [dcc_signer, key.public_key()])
    assert outcome == Verification(True, "signature verifies with trusted signer 2 of 2", 1)


def test_the_signature_is_raw_r_s_over_the_manufacturer_image() -> None:
    key = keys.generate_private_key()
    signed = sign_image(build_gb(1, 2, 3, payload=b"firmware"), key)
    assert len(signed.signature or b"") == 64
    assert keys.verify(key.public_key(), b"firmware", signed.signature or b"")


def test_a_zigbee_file_cannot_be_signed() -> None:
    image = build_zigbee(1, 2, 3, payload=b"firmware")
    with pytest.raises(InputError, match=r"upgrade\.ota: is a Zigbee OTA file .* defined for GB Upgrade Images only"):
        sign_image(image, keys.generate_private_key(), "upgrade.ota")


def test_verification_reasons(ppmid_image_path: Path, dcc_signer: keys.PublicKey) -> None:
    unsigned = parse(ppmid_image_path.read_bytes())
    assert verify_image(unsigned, [dcc_signer]) == Verification(False, "no signature trailer")
    zigbee = verify_image(build_zigbee(1, 2, 3, payload=b"x"), [dcc_signer])
    assert not zigbee.ok
    assert zigbee.reason.startswith("no signature trailer (a Zigbee OTA file")
    signed = sign_image(unsigned, keys.generate_private_key())
    assert verify_image(signed, []) == Verification(False, "no trusted signers given")
    others = [keys.generate_private_key().public_key() for _ in range(3)]
    assert verify_image(signed, others).reason == "signature does not verify with any of 3 trusted signers"


def test_zigbee_hash_covers_the_upgrade_image_subelement() -> None:
    image = build_zigbee(1, 2, 3, payload=b"firmware")
    assert manufacturer_image_hash(image) == hashlib.sha256(b"firmware").digest()
