"""GB behaviour (DESIGN.md §3, SPEC.md §8; C-22, C-23): a PPMID activates when the server says and reports it
CS09-style; an HCALCS holds the image until Activate Firmware (CS06) names it by its Manufacturer Image Hash.
Uses the DCC sample images (tests/data/gb-vectors, see its README)."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

import pytest
from test_device_harness import DATA, HCALCS_TYPE, bench, gb_image, hcalcs_profile, vrun

from conftest import sign_for_tests
from emulator.device import events
from emulator.device.events import ActivateImageResult, ActivationResponse, AlertCode
from emulator.ota import frames
from emulator.ota import image as ota_image
from emulator.profiles import bundled, load_device

ESME_HASH = bytes.fromhex("7542f475e3f12eae887d81e32c46d313741d67076b13caec2f82e00ba5e1bb36")


def signed_dcc_ppmid_image() -> bytes:
    """The DCC PPMID sample (unsigned) with a signature trailer by the test-only key the bundled PPMID trusts."""
    return sign_for_tests(ota_image.parse((DATA / "ppmid-upgrade-image.bin").read_bytes())).serialize()


def test_c22_ppmid_activates_the_dcc_sample_image_and_reports_cs09() -> None:
    async def main() -> None:
        image = signed_dcc_ppmid_image()
        b = await bench(load_device(bundled("ppmid")), image=image)
        (activated,) = await b.log.wait(events.Activated)
        assert activated.alert_code == AlertCode.FIRMWARE_VERSION == 0x8F8B
        assert activated.activate_image == ActivateImageResult.SUCCESS
        assert (activated.old_version, activated.new_version, activated.success) == (1, 0xACDCACDC, True)
        assert b.device.running_version == 0xACDCACDC and b.device.state.running_image == image
        await b.device.stop()

    vrun(main)


def test_c22_ppmid_activation_failure_keeps_the_old_version() -> None:
    async def main() -> None:
        profile = load_device(bundled("ppmid")).replace(activation_fails=True)
        b = await bench(profile, image=signed_dcc_ppmid_image())
        (activated,) = await b.log.wait(events.Activated)
        assert activated.activate_image == ActivateImageResult.FAILURE and not activated.success
        assert activated.new_version == 1 and b.device.running_version == 1
        assert b.device.attributes[0x0006] == 0 and b.device.downloaded_image is None
        await b.device.stop()

    vrun(main)


async def _holding_hcalcs(profile=None, image: bytes | None = None):
    profile = profile or load_device(bundled("hcalcs"))
    image = (
        image
        or sign_for_tests(
            ota_image.parse(gb_image(5, image_type=HCALCS_TYPE, size=300, hw_min=0x1111, hw_max=0x1211))
        ).serialize()
    )
    b = await bench(profile, image=image)
    b.server.upgrade_time = "wait"
    await b.log.wait(events.WaitingToUpgrade)
    return b, image


def _hash(image: bytes) -> bytes:
    return hashlib.sha256(ota_image.parse(image).manufacturer_image).digest()


def test_c23_hcalcs_holds_the_image_until_activate_firmware() -> None:
    async def main() -> None:
        b, image = await _holding_hcalcs()
        await asyncio.sleep(86400)
        assert b.device.running_version == 1 and b.device.attributes[0x0006] == 3
        assert b.device.downloaded_image == image
        reply = await b.device.activate_firmware(_hash(image))
        assert reply == events.ActivationReply(False, ActivationResponse.SUCCESS, 5)
        assert b.device.running_version == 5 and b.device.attributes[0x0002] == 5
        (outcome,) = b.log.of(events.ActivationOutcome)
        assert (outcome.response_code, outcome.version, outcome.future_dated) == (0, 5, False)
        ends = len(b.server.sent("upgrade_end"))
        await asyncio.sleep(3 * 3600)
        assert len(b.server.sent("upgrade_end")) == ends  # no longer asking once activated
        await b.device.stop()

    vrun(main)


def test_c23_hash_mismatch_leaves_the_image_held() -> None:
    async def main() -> None:
        b, image = await _holding_hcalcs()
        reply = await b.device.activate_firmware(bytes(32))
        assert reply.response_code == ActivationResponse.HASH_MISMATCH == 2 and reply.firmware_version == 1
        assert b.device.running_version == 1 and b.device.downloaded_image == image
        assert (await b.device.activate_firmware(_hash(image))).response_code == ActivationResponse.SUCCESS
        await b.device.stop()

    vrun(main)


def test_c23_no_image_held() -> None:
    async def main() -> None:
        b = await bench(load_device(bundled("hcalcs")))
        await b.server.wait_for("query_next_image")
        reply = await b.device.activate_firmware(ESME_HASH)
        assert reply == events.ActivationReply(False, ActivationResponse.NO_IMAGE_HELD, 1)
        await b.device.stop()

    vrun(main)


def test_c23_activation_failure() -> None:
    async def main() -> None:
        b, image = await _holding_hcalcs(load_device(bundled("hcalcs")).replace(activation_fails=True))
        reply = await b.device.activate_firmware(_hash(image))
        assert reply.response_code == ActivationResponse.ACTIVATION_FAILURE == 3
        assert b.device.running_version == 1
        await b.device.stop()

    vrun(main)


@pytest.mark.parametrize(("right_hash", "code", "alert"), [(True, 0, 0x8F66), (False, 2, 0x8F67)])
def test_c23_future_dated_activation_is_accepted_then_reported(right_hash: bool, code: int, alert: int) -> None:
    async def main() -> None:
        b, image = await _holding_hcalcs()
        at = b.clock.utc() + timedelta(days=2)
        reply = await b.device.activate_firmware(_hash(image) if right_hash else bytes(32), at)
        assert reply.accepted and reply.response_code is None
        await asyncio.sleep(2 * 86400 - 60)
        assert b.log.of(events.ActivationOutcome) == [] and b.device.running_version == 1
        (outcome,) = await b.log.wait(events.ActivationOutcome, within=120)
        assert outcome.future_dated and outcome.response_code == code and outcome.alert_code == alert
        assert outcome.at == pytest.approx(b.clock.now(), abs=1) and b.clock.utc() >= at
        assert b.device.running_version == (5 if right_hash else 1)
        await b.device.stop()

    vrun(main)


def test_signed_dcc_image_verifies_and_its_hash_activates() -> None:
    """The ESME sample's trailer verifies with the DCC test signer; its Manufacturer Image Hash is the one
    published with it."""

    async def main() -> None:
        profile = load_device(bundled("hcalcs")).replace(
            image_type=0x0000, signers=(str(DATA / "signer-90b3d51f30010000-cert.pem"),), require_signature=True
        )
        image = (DATA / "esme-upgrade-image-signed.bin").read_bytes()
        b, _ = await _holding_hcalcs(profile, image)
        assert b.log.of(events.ImageVerified)[0].ok
        reply = await b.device.activate_firmware(ESME_HASH)
        assert reply.response_code == ActivationResponse.SUCCESS and b.device.running_version == 0xACDCACDC
        await b.device.stop()

    vrun(main)


@pytest.mark.parametrize("signers", [True, False])
def test_c12_mangled_signed_image_is_invalid(signers: bool) -> None:
    """One byte of the Manufacturer Image flipped in transit: the signature no longer verifies (C-12). A profile
    that trusts no signer and opts out of signature checks (require_signature = false) accepts the same image —
    nothing else can tell; without the opt-out it refuses every image (test_trust.py)."""

    async def main() -> None:
        profile = load_device(bundled("hcalcs")).replace(
            image_type=0x0000,
            signers=(str(DATA / "signer-90b3d51f30010000-cert.pem"),) if signers else (),
            require_signature=signers,
        )
        image = bytearray((DATA / "esme-upgrade-image-signed.bin").read_bytes())
        image[100] ^= 0x01
        b = await bench(profile, image=bytes(image))
        (end,) = await b.server.wait_for("upgrade_end")
        verdict = b.log.of(events.ImageVerified)[0]
        if signers:
            assert end.frame.command.status == frames.Status.INVALID_IMAGE and "signature" in verdict.reason
            assert b.device.downloaded_image is None
        else:
            assert end.frame.command.status == frames.Status.SUCCESS and verdict.ok
        await b.device.stop()

    vrun(main)


def test_required_signature_rejects_an_unsigned_image() -> None:
    async def main() -> None:
        profile = hcalcs_profile(require_signature=True, signers=[str(DATA / "signer-90b3d51f30010000-cert.pem")])
        b = await bench(profile, image=gb_image(5, image_type=HCALCS_TYPE, size=100))
        (end,) = await b.server.wait_for("upgrade_end")
        assert end.frame.command.status == frames.Status.INVALID_IMAGE
        assert "no signature" in b.log.of(events.ImageVerified)[0].reason
        await b.device.stop()

    vrun(main)
