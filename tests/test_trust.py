"""Fail-closed trust on the emulated GB devices: what they refuse unless their profile says otherwise.

* A PPMID or HCALCS checks the Manufacturer Image signature against its configured signers and refuses an
  unsigned image (GBCS 5.x image signing; DUIS SR 11.1/11.4: only manufacturer-signed images are applied).
* An HCALCS refuses a CS06 Activate Firmware command whose signature it cannot check (GBCS §11.5).
* A device refuses an offer of a lower file version than it runs (anti-rollback).
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from conftest import TEST_SUPPLIER_KEY, sign_for_tests
from emulator import keys
from emulator.chf.store import HeldImage
from emulator.device import events as device_events
from emulator.device.firmware import Identity, load_signers, verify
from emulator.device.state import ImageRef
from emulator.gb.cs06 import CommandRefused
from emulator.gb.frame import sign_message
from emulator.gb.messages import ActivateFirmwareCommand
from emulator.han.gbcs import HanGbcs
from emulator.han.network import Han, HanOptions
from emulator.han.originators import DEFAULT_SUPPLIER_ID
from emulator.ota.image import build_gb
from emulator.ota.signing import manufacturer_image_hash
from emulator.profiles import bundled, load_chf, load_device

NEW = 0x00000002
DAY = 86400.0


def gb(profile, version: int = NEW, *, signed: bool = True):
    payload = random.Random(profile.image_type).randbytes(600)
    image = build_gb(
        profile.manufacturer_code, profile.image_type, version, payload=payload, hw_min=0x1111, hw_max=0x1211
    )
    return sign_for_tests(image) if signed else image


def identity_of(profile) -> Identity:
    return Identity(
        profile.ieee,
        profile.manufacturer_code,
        profile.hardware_version,
        load_signers([str(p) for p in profile.signer_paths()]),
        profile.require_signature,
    )


def offer(profile, data: bytes) -> ImageRef:
    return ImageRef(profile.manufacturer_code, profile.image_type, NEW, len(data))


@pytest.mark.parametrize("kind", ["ppmid", "hcalcs"])
def test_bundled_devices_verify_the_signature_with_their_configured_signer(kind):
    profile = load_device(bundled(kind))
    good = gb(profile).serialize()
    assert verify(good, offer(profile, good), identity_of(profile)).ok
    # One byte of the Manufacturer Image flipped: the signature no longer verifies.
    image = gb(profile)
    flipped = dataclasses.replace(image, body=bytes([image.body[0] ^ 0x01]) + image.body[1:])
    data = flipped.serialize()
    verdict = verify(data, offer(profile, data), identity_of(profile))
    assert not verdict.ok and "signature" in verdict.reason


@pytest.mark.parametrize("kind", ["ppmid", "hcalcs"])
def test_bundled_devices_refuse_an_unsigned_image(kind):
    profile = load_device(bundled(kind))
    data = gb(profile, signed=False).serialize()
    verdict = verify(data, offer(profile, data), identity_of(profile))
    assert not verdict.ok and "no signature trailer" in verdict.reason


def test_a_profile_without_signers_refuses_every_image_unless_it_opts_out():
    profile = load_device(bundled("ppmid")).replace(signers=())
    data = gb(profile).serialize()
    verdict = verify(data, offer(profile, data), identity_of(profile))
    assert not verdict.ok and "no trusted signers" in verdict.reason
    opted_out = profile.replace(require_signature=False)
    unsigned = gb(profile, signed=False).serialize()
    assert verify(unsigned, offer(profile, unsigned), identity_of(opted_out)).ok


@pytest.mark.virtual_time
async def test_a_ppmid_fed_a_tampered_image_end_to_end_does_not_activate_it():
    ppmid = load_device(bundled("ppmid"))
    image = gb(ppmid)
    tampered = image.serialize()[:-80] + bytes([image.serialize()[-80] ^ 0x01]) + image.serialize()[-79:]
    held = HeldImage(image, tampered, frozenset({ppmid.ieee}))
    han = Han(load_chf(bundled("chf")), [ppmid], [held], HanOptions())
    await han.start()
    assert await han.settle(2 * DAY)
    await han.stop()
    summary = han.summaries[ppmid.ieee]
    assert summary.result == "failed" and "signature" in summary.reason
    assert han.devices[ppmid.ieee].running_version == 1


@pytest.mark.virtual_time
async def test_a_device_refuses_a_lower_file_version_unless_its_profile_allows_downgrades():
    ppmid = load_device(bundled("ppmid")).replace(file_version=5)
    chf = load_chf(bundled("chf")).replace(query_policy="any")
    for allow, expected in ((False, 5), (True, NEW)):
        profile = ppmid.replace(allow_downgrade=allow)
        han = Han(chf, [profile], [HeldImage(gb(profile), gb(profile).serialize(), frozenset({profile.ieee}))])
        await han.start()
        assert await han.settle(DAY) == allow  # a refused offer leaves the device waiting for its next query
        await han.stop()
        assert han.devices[profile.ieee].running_version == expected
        offers = [e for e in han.events if isinstance(e, device_events.ImageOffered)]
        assert offers and offers[0].accepted == allow
        if not allow:
            assert "lower than the running" in offers[0].reason


def cs06(hcalcs, held: HeldImage, key: keys.PrivateKey) -> bytes:
    command = ActivateFirmwareCommand(manufacturer_image_hash(held.image), 1)
    return sign_message(
        command, originator_counter=1, originator_id=DEFAULT_SUPPLIER_ID, recipient_id=hcalcs.ieee, key=key
    )


@pytest.mark.virtual_time
async def test_an_hcalcs_refuses_cs06_it_cannot_check_unless_its_profile_opts_out():
    stranger = keys.generate_private_key()
    for supplier_signer, require, accepted in (
        (None, True, False),  # no supplier_signer: refused
        (None, False, True),  # opted out: taken, marked not checked
    ):
        hcalcs = load_device(bundled("hcalcs")).replace(
            supplier_signer=supplier_signer, require_supplier_signature=require
        )
        held = HeldImage(gb(hcalcs), gb(hcalcs).serialize(), frozenset({hcalcs.ieee}))
        han = Han(load_chf(bundled("chf")), [hcalcs], [held], HanOptions())
        gbcs = HanGbcs(han)
        await han.start()
        assert await han.settle(2 * DAY)
        if accepted:
            exchange = await gbcs.activate_gbcs(hcalcs.ieee, cs06(hcalcs, held, stranger))
            assert exchange.command["signature"]["status"] == "not checked"
            assert han.devices[hcalcs.ieee].running_version == NEW
        else:
            with pytest.raises(CommandRefused, match="supplier_signer"):
                await gbcs.activate_gbcs(hcalcs.ieee, cs06(hcalcs, held, stranger))
            assert han.devices[hcalcs.ieee].running_version == 1
        await han.stop()


@pytest.mark.virtual_time
async def test_the_bundled_hcalcs_takes_cs06_only_from_its_configured_supplier():
    hcalcs = load_device(bundled("hcalcs"))
    held = HeldImage(gb(hcalcs), gb(hcalcs).serialize(), frozenset({hcalcs.ieee}))
    han = Han(load_chf(bundled("chf")), [hcalcs], [held], HanOptions())
    gbcs = HanGbcs(han)
    await han.start()
    assert await han.settle(2 * DAY)
    with pytest.raises(CommandRefused, match="does not verify"):
        await gbcs.activate_gbcs(hcalcs.ieee, cs06(hcalcs, held, keys.generate_private_key()))
    exchange = await gbcs.activate_gbcs(hcalcs.ieee, cs06(hcalcs, held, keys.load_private_key(TEST_SUPPLIER_KEY)))
    assert exchange.command["signature"]["status"] == "verified"
    assert han.devices[hcalcs.ieee].running_version == NEW
    await han.stop()
