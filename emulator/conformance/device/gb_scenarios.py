"""The GB device cases (SPEC.md §8, DESIGN.md §3; SPEC.md §9.3 C-22, C-23): a PPMID activates when the CHF says
now and reports it (CS09); an HCALCS holds its image until Activate Firmware (CS06) with the right Manufacturer
Image Hash.

Activation itself is judged from frames (the DUT's Device_annce on rebooting into the new firmware, its OTA
attributes read over the air). The GBCS messages — the CS09 alert, Activate Firmware and its outcome — travel
through the CHF's GBCS tunnel, which this bench does not speak; for an emulated DUT its events stand in for
them (each verdict says so), and for a real device those checks are inconclusive.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime, timedelta

from emulator.conformance.device.scenarios import HOLD_WATCH, Scenario, failed, passed
from emulator.conformance.device.trial import IMAGE_UPGRADE_STATUS, Download, Trial
from emulator.conformance.interface import Ability, ActivationReply, Unable
from emulator.conformance.verdict import FrameRecord, Inconclusive, Judgement, NotApplicable, evidence
from emulator.gb.codes import ActivateImageResult, ActivationResponse, AlertCode
from emulator.ota.signing import manufacturer_image_hash

STAND_IN = "device event standing in for the GBCS {}"
FUTURE = 3600.0  # C-23e: Activate Firmware dated this far ahead


def _version(value: int | None) -> str:
    return "unknown" if value is None else f"0x{value:08X}"


async def _server_activates(trial: Trial) -> None:
    """The PPMID cases need a PPMID the CHF's Upgrade End Response may activate (GB: SR 11.4, CS05c)."""
    if await trial.activation_policy() == 1:
        raise NotApplicable(
            "UpgradeActivationPolicy is 1 (out-of-band activation only): the PPMID must refuse the Upgrade End "
            "Response's time (SE 1.2b 15-0324-02 §11.10.12, judged by C-17), so the CHF cannot activate it"
        )


async def c22a_ppmid_activates_now(trial: Trial) -> Judgement:
    await trial.learn()
    await _server_activates(trial)
    download = await trial.verified_download("now")
    response = download.response
    assert response is not None
    rebooted = await trial.reboot(trial.chf.after(response), 2 * trial.timing.response)
    running = await trial.running_version()
    new = download.held.file_version
    if running == new or (running is None and rebooted is not None):
        when = f"rebooted {rebooted.at - response.at:.1f} s later" if rebooted is not None else "no Device_annce seen"
        return passed(f"activated 0x{new:08X} when the Upgrade End Response said now ({when})", response, rebooted)
    return failed(
        f"still runs {_version(running)} after an Upgrade End Response saying activate 0x{new:08X} now",
        response,
        rebooted,
    )


async def c22b_ppmid_activation_alert(trial: Trial) -> Judgement:
    if not trial.dut.can(Ability.GBCS):
        raise Inconclusive(trial.dut.unable(Ability.GBCS))
    await trial.learn()
    await _server_activates(trial)
    seen = len(trial.dut.alerts)
    download = await trial.verified_download("now")
    response = download.response
    assert response is not None
    rebooted = await trial.reboot(trial.chf.after(response), 2 * trial.timing.response)
    running = await trial.running_version()
    if running is None:
        raise Inconclusive(
            "the version the PPMID runs is unknown (CurrentFileVersion not supported and no Query Next Image "
            "Request after the Upgrade End Response), so the CS09 alert cannot be compared with what happened",
            evidence(response, rebooted),
        )
    alerts = [a for a in trial.dut.alerts[seen:] if not a.future_dated]
    if not alerts:
        return failed(
            f"no CS09 alert after the Upgrade End Response said now ({STAND_IN.format('CS09')} missing)", response
        )
    alert = alerts[0]
    activated = running == download.held.file_version
    told = (
        f"alert 0x{int(alert.alert_code or 0):04X}, firmware {_version(alert.firmware_version)}, "
        f"activateImage {alert.activate_image} ({STAND_IN.format('CS09 alert')})"
    )
    if alert.alert_code != AlertCode.FIRMWARE_VERSION:
        return failed(f"CS09 with the wrong alert code: {told}", response, rebooted)
    if alert.firmware_version != running:
        return failed(f"CS09 reports a version other than the one running ({_version(running)}): {told}", response)
    expected = ActivateImageResult.SUCCESS if activated else ActivateImageResult.FAILURE
    if alert.activate_image != expected:
        return failed(
            f"CS09 activateImage does not match what happened (running {_version(running)}): {told}", response
        )
    return passed(f"CS09 PPMID Firmware Activation Alert after activation: {told}", response, rebooted)


async def _held(trial: Trial) -> Download:
    """An HCALCS holding a verified image after being told to wait (the GB distribution step)."""
    await trial.learn()
    download = await trial.verified_download("wait")
    if not trial.waiting_response(download):
        raise Inconclusive("the CHF's Upgrade End Response did not say wait", evidence(download.response))
    await asyncio.sleep(5.0)
    return download


async def c23a_hcalcs_holds(trial: Trial) -> Judgement:
    download = await _held(trial)
    response = download.response
    assert response is not None
    status = await trial.read(IMAGE_UPGRADE_STATUS)
    rebooted = await trial.reboot(trial.chf.after(response), HOLD_WATCH)
    if rebooted is not None:
        return failed(
            f"activated {rebooted.at - response.at:.0f} s after download, without Activate Firmware", response, rebooted
        )
    if status is not None and status.get(IMAGE_UPGRADE_STATUS) != 3:
        return failed(f"ImageUpgradeStatus {status.get(IMAGE_UPGRADE_STATUS)} while holding (expected 3)", response)
    if await trial.running_version() == download.held.file_version:
        return failed("runs the new image although no Activate Firmware came", response)
    read = "ImageUpgradeStatus 3, " if status is not None else ""
    return passed(f"holds the verified image: {read}not activated in {HOLD_WATCH / 60:.0f} min", response)


def _outcome(reply: ActivationReply) -> str:
    if reply.response_code is None:
        code = "none"
    elif reply.response_code in set(ActivationResponse):
        code = f"{reply.response_code} ({ActivationResponse(reply.response_code).name})"
    else:
        code = str(reply.response_code)
    return f"responseCode {code}, firmware {_version(reply.firmware_version)} ({STAND_IN.format('CS06 response')})"


def _needs_cs06(trial: Trial) -> None:
    if not trial.dut.can(Ability.GBCS):
        raise Inconclusive(trial.dut.unable(Ability.GBCS))


async def _activate(trial: Trial, image_hash: bytes, at: datetime | None = None) -> tuple[ActivationReply, int]:
    """Send Activate Firmware (CS06) through the DUT's harness; its reply, and the mark before it."""
    mark = trial.chf.mark()
    try:
        reply = await trial.dut.activate_firmware(image_hash, at)
    except Unable as exc:
        raise Inconclusive(exc.reason) from None
    return reply, mark


async def c23b_right_hash(trial: Trial) -> Judgement:
    _needs_cs06(trial)
    download = await _held(trial)
    reply, mark = await _activate(trial, manufacturer_image_hash(download.held.image))
    rebooted = await trial.reboot(mark, trial.timing.response)
    new = download.held.file_version
    if reply.response_code != ActivationResponse.SUCCESS or reply.firmware_version != new:
        return failed(
            f"Activate Firmware with the right hash: {_outcome(reply)}, expected success and 0x{new:08X}", rebooted
        )
    running = await trial.running_version()
    if running not in (None, new):
        return failed(f"reported success but runs {_version(running)}", rebooted)
    return passed(f"Activate Firmware with the right hash: {_outcome(reply)}", download.response, rebooted)


async def c23c_wrong_hash(trial: Trial) -> Judgement:
    _needs_cs06(trial)
    download = await _held(trial)
    wrong = bytes(b ^ 0xFF for b in manufacturer_image_hash(download.held.image))
    reply, mark = await _activate(trial, wrong)
    rebooted = await trial.reboot(mark, 2 * trial.timing.response)
    if rebooted is not None or reply.response_code != ActivationResponse.HASH_MISMATCH:
        return failed(f"Activate Firmware with a wrong hash: {_outcome(reply)}, expected 2 (hashMismatch)", rebooted)
    running = await trial.running_version()
    if running == download.held.file_version:
        return failed("activated the held image on a wrong hash", download.response)
    return passed(f"Activate Firmware with a wrong hash: {_outcome(reply)}; not activated", download.response)


async def c23d_nothing_held(trial: Trial) -> Judgement:
    _needs_cs06(trial)
    await trial.learn()
    reply, mark = await _activate(trial, hashlib.sha256(b"no image held").digest())
    rebooted = await trial.reboot(mark, trial.timing.response)
    if rebooted is not None or reply.response_code != ActivationResponse.NO_IMAGE_HELD:
        return failed(f"Activate Firmware with no image held: {_outcome(reply)}, expected 1 (noImageHeld)", rebooted)
    return passed(f"Activate Firmware with no image held: {_outcome(reply)}", trial.first_query)


async def c23e_future_dated(trial: Trial) -> Judgement:
    _needs_cs06(trial)
    download = await _held(trial)
    seen = len(trial.dut.alerts)
    at = trial.clock.utc() + timedelta(seconds=FUTURE)
    start = trial.clock.now()
    reply, mark = await _activate(trial, manufacturer_image_hash(download.held.image), at)
    if not reply.accepted or reply.response_code is not None:
        return failed(f"future-dated Activate Firmware ({FUTURE:g} s ahead) was executed at once: {_outcome(reply)}")
    early = await trial.reboot(mark, FUTURE - 60)
    if early is not None:
        ahead = FUTURE - (early.at - start)
        return failed(f"accepted a future-dated Activate Firmware but activated {ahead:.0f} s before its time", early)
    rebooted = await trial.reboot(mark, 180.0)
    outcomes = [a for a in trial.dut.alerts[seen:] if a.future_dated]
    if not outcomes:
        return failed(
            f"no outcome reported after the future-dated activation time ({STAND_IN.format('0x00CA alert')} missing)",
            rebooted,
        )
    outcome = outcomes[0]
    late = round(outcome.at - start - FUTURE, 1) + 0.0  # no "-0.0"
    told = (
        f"alert 0x{int(outcome.alert_code or 0):04X}, responseCode {outcome.response_code}, "
        f"firmware {_version(outcome.firmware_version)}, {late:+.1f} s from the execution time "
        f"({STAND_IN.format('0x00CA alert')})"
    )
    if abs(late) > 60:
        return failed(f"executed the future-dated activation off its time: {told}", rebooted)
    if (
        outcome.alert_code != AlertCode.FUTURE_DATED_COMMAND_SUCCESS
        or outcome.response_code != ActivationResponse.SUCCESS
    ):
        return failed(f"future-dated activation reported: {told}", rebooted)
    evidence_frames: list[FrameRecord] = [f for f in (download.response, rebooted) if f is not None]
    return passed(f"commandAccepted, then at the execution time: {told}", evidence_frames)


GB_SCENARIOS: dict[str, Scenario] = {
    "C-22a": c22a_ppmid_activates_now,
    "C-22b": c22b_ppmid_activation_alert,
    "C-23a": c23a_hcalcs_holds,
    "C-23b": c23b_right_hash,
    "C-23c": c23c_wrong_hash,
    "C-23d": c23d_nothing_held,
    "C-23e": c23e_future_dated,
}
