"""The GBCS messages of a run: the CHF's CCS08 alerts, a PPMID's CS09 alert and an HCALCS's CS06 response and
0x00CA alert are signed frames whose fields match the run's outcomes, verify with the public keys written beside
the alert log, and an HCALCS takes the DCC's RTDS CS06 command (tests/data/gb-vectors/rtds, see its README)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import zigpy.types as t
from click.testing import CliRunner

from conftest import held_image
from emulator import keys
from emulator.chf import events as server_events
from emulator.cli import main
from emulator.device import events as device_events
from emulator.gb.codes import ActivateImageResult, ActivationResponse, AlertCode, CraFlag, TransferResponse
from emulator.gb.counters import CounterFileError
from emulator.gb.cs06 import CommandRefused
from emulator.gb.frame import GbcsFrame, build_signed, bytes_from_hex, decode_message, parse, verify
from emulator.gb.messages import (
    ActivateFirmwareAlert,
    ActivateFirmwareCommand,
    ActivateFirmwareResponse,
    FirmwareTransferAlert,
    PpmidFirmwareActivationAlert,
)
from emulator.han.alert_log import AlertLog, public_key_name
from emulator.han.gbcs import HanGbcs
from emulator.han.network import Han, HanOptions
from emulator.han.originators import Originator
from emulator.ota.signing import manufacturer_image_hash
from emulator.profiles import ProfileError, bundled, load_chf, load_device

GB_VECTORS = Path(__file__).parent / "data" / "gb-vectors"
CS06_COMMAND = GB_VECTORS / "rtds" / "CS06_11.3_IMMEDIATE_SUCCESS_COMMAND_GBCS.HEX"
DCC_SUPPLIER_CERT = GB_VECTORS / "signer-90b3d51f30010000-cert.pem"
ESME_ID = t.EUI64.convert("00:DB:12:34:56:78:90:A0")  # the device the RTDS CS06 command is addressed to
SUPPLIER_ID = t.EUI64.convert("90:B3:D5:1F:30:01:00:00")
ALERT_RECIPIENT = t.EUI64.convert("90:B3:D5:1F:30:00:00:02")
START = datetime(2025, 1, 1, tzinfo=UTC)
NEW = 0x00000002
DAY = 86400.0


def at_utc(seconds: float) -> datetime:
    return (START + timedelta(seconds=seconds)).replace(microsecond=0)


def read_log(path: Path) -> list[tuple[dict, GbcsFrame, object]]:
    """Every line of an alert log with its frame and content, each frame verified with its originator's key as
    written beside the log."""
    entries = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        frame = parse(bytes.fromhex(record["hex"]))
        key = keys.load_public_key(path.parent / public_key_name(frame.originator_id))
        assert verify(frame, key), record
        message = decode_message(frame)
        assert record["content"]["type"] == type(message).__name__
        assert record["originator_counter"] == frame.originator_counter
        entries.append((record, frame, message))
    return entries


def gbcs_han(chf, devices, images, options) -> tuple[Han, HanGbcs]:
    han = Han(chf, devices, images, options)
    return han, HanGbcs(han)


async def settled(chf, devices, images, options) -> tuple[Han, HanGbcs]:
    han, gbcs = gbcs_han(chf, devices, images, options)
    await han.start()
    assert await han.settle(2 * DAY), {str(k): v.result for k, v in han.summaries.items()}
    return han, gbcs


@pytest.mark.virtual_time
async def test_a_run_sends_signed_messages_that_match_its_outcomes(tmp_path):
    ppmid = load_device(bundled("ppmid"))
    mismatched = ppmid.replace(ieee=t.EUI64.convert("00:DB:12:34:56:78:90:B4"), hardware_version=0x2000)
    hcalcs = load_device(bundled("hcalcs"))
    hcalcs_image = held_image(hcalcs)
    images = [held_image(ppmid, device_ids=(ppmid.ieee, mismatched.ieee)), hcalcs_image]
    options = HanOptions(start_utc=START, activate_hcalcs=True, activate_after=1800.0)
    chf = load_chf(bundled("chf"))
    han, gbcs = await settled(chf, [ppmid, mismatched, hcalcs], images, options)
    await han.stop()
    log = tmp_path / "alerts.jsonl"
    gbcs.alert_log.write(log)
    entries = read_log(log)

    # CCS08: one per TransferOutcome, from the CHF to the alert recipient, with the outcome's fields.
    outcomes = [e for e in han.events if isinstance(e, server_events.TransferOutcome)]
    assert {o.response for o in outcomes} == {TransferResponse.SUCCESS, TransferResponse.HARDWARE_VERSION_MISMATCH}
    ccs08 = [(r, f, m) for r, f, m in entries if isinstance(m, FirmwareTransferAlert)]
    assert [m for _, _, m in ccs08] == [
        FirmwareTransferAlert(o.alert_code, at_utc(o.at), o.ieee, o.file_version.to_bytes(4, "big"), o.response)
        for o in outcomes
    ]
    assert {(f.originator_id, f.recipient_id, f.cra_flag) for _, f, _ in ccs08} == {
        (chf.ieee, ALERT_RECIPIENT, CraFlag.ALERT)
    }
    assert [f.originator_counter for _, f, _ in ccs08] == list(range(1, len(outcomes) + 1))
    assert [r["event"]["type"] for r, _, _ in ccs08] == ["TransferOutcome"] * len(outcomes)
    assert [r["protocol_time"] for r, _, _ in ccs08] == [round(o.at, 3) for o in outcomes]
    mismatch = next(m for _, _, m in ccs08 if m.response_code == TransferResponse.HARDWARE_VERSION_MISMATCH)
    assert (mismatch.entity_id, mismatch.alert_code) == (mismatched.ieee, AlertCode.FIRMWARE_TRANSFER_FAILURE)

    # CS09: the PPMID reports its activation, signed with its own key.
    [activated] = [e for e in han.events if isinstance(e, device_events.Activated) and e.ieee == ppmid.ieee]
    [(record, frame, cs09)] = [(r, f, m) for r, f, m in entries if isinstance(m, PpmidFirmwareActivationAlert)]
    assert cs09 == PpmidFirmwareActivationAlert(
        at_utc(activated.at), NEW.to_bytes(4, "big"), ActivateImageResult.SUCCESS
    )
    assert (frame.originator_id, frame.recipient_id, frame.originator_counter) == (ppmid.ieee, ALERT_RECIPIENT, 1)
    assert record["event"]["type"] == "Activated"

    # CS06: the supplier's future-dated command, the HCALCS's commandAccepted, then its 0x8F66 alert.
    [(_, command_frame, command)] = [(r, f, m) for r, f, m in entries if isinstance(m, ActivateFirmwareCommand)]
    [(_, response_frame, response)] = [(r, f, m) for r, f, m in entries if isinstance(m, ActivateFirmwareResponse)]
    [(record, alert_frame, alert)] = [(r, f, m) for r, f, m in entries if isinstance(m, ActivateFirmwareAlert)]
    assert (command_frame.originator_id, command_frame.recipient_id) == (SUPPLIER_ID, hcalcs.ieee)
    assert command.manufacturer_image_hash == manufacturer_image_hash(hcalcs_image.image)
    assert response == ActivateFirmwareResponse(None)
    assert (response_frame.originator_id, response_frame.recipient_id) == (hcalcs.ieee, SUPPLIER_ID)
    assert response_frame.originator_counter == command_frame.originator_counter == command.originator_counter
    [outcome] = [e for e in han.events if isinstance(e, device_events.ActivationOutcome)]
    assert outcome.future_dated and at_utc(outcome.at) == command.execution_datetime
    assert alert.alert_code == AlertCode.FUTURE_DATED_COMMAND_SUCCESS
    assert (alert.execution_datetime, alert.originator_counter) == (
        command.execution_datetime,
        command.originator_counter,
    )
    assert (alert.outcome.response_code, alert.outcome.firmware_version) == (ActivationResponse.SUCCESS, b"\0\0\0\2")
    assert (alert_frame.originator_id, alert_frame.recipient_id) == (hcalcs.ieee, SUPPLIER_ID)
    assert record["event"]["type"] == "ActivationOutcome"
    assert han.summaries[hcalcs.ieee].result == "upgraded"


def resigned(vector: bytes, key: keys.PrivateKey, **changes) -> bytes:
    """The RTDS CS06 command with content fields replaced, signed again by `key` (a test supplier)."""
    frame = parse(vector)
    counter = changes.get("originator_counter", frame.originator_counter)
    command = dataclasses.replace(decode_message(frame), **changes)
    return build_signed(
        cra_flag=frame.cra_flag,
        originator_counter=counter,
        originator_id=frame.originator_id,
        recipient_id=frame.recipient_id,
        message_code=frame.message_code,
        content=command.encode(),
        key=key,
    )


def rtds_hcalcs(supplier_signer: Path):
    return load_device(bundled("hcalcs")).replace(ieee=ESME_ID, supplier_signer=str(supplier_signer))


@pytest.mark.virtual_time
async def test_rtds_command_checked_with_the_dcc_supplier_cert_answers_hash_mismatch(tmp_path):
    hcalcs = rtds_hcalcs(DCC_SUPPLIER_CERT)
    held = held_image(hcalcs)
    han, gbcs = await settled(load_chf(bundled("chf")), [hcalcs], [held], HanOptions(start_utc=START))
    assert han.summaries[ESME_ID].result == "held"
    vector = bytes_from_hex(CS06_COMMAND.read_text())
    tampered = vector.replace(parse(vector).content[4:36], manufacturer_image_hash(held.image))
    with pytest.raises(CommandRefused, match=r"signature does not verify with .*signer-90b3d51f30010000-cert\.pem"):
        await gbcs.activate_gbcs(ESME_ID, tampered, "tampered")

    exchange = await gbcs.activate_gbcs(ESME_ID, vector, "RTDS vector")
    assert exchange.command["signature"]["status"] == "verified"
    assert exchange.command["signature"]["mac"].startswith("not checked")
    response = parse(bytes.fromhex(exchange.response["hex"]))
    assert decode_message(response).outcome.response_code == ActivationResponse.HASH_MISMATCH == 2
    assert (response.originator_id, response.recipient_id, response.originator_counter) == (ESME_ID, SUPPLIER_ID, 1000)
    device = han.devices[ESME_ID]
    assert device.running_version == 1 and device.downloaded_image == held.data
    await han.stop()


@pytest.mark.virtual_time
async def test_rtds_command_with_the_held_images_hash_resigned_activates(tmp_path):
    supplier = keys.generate_private_key()
    trusted = tmp_path / "supplier.pub.pem"
    trusted.write_bytes(keys.public_key_pem(supplier.public_key()))
    hcalcs = rtds_hcalcs(trusted)
    held = held_image(hcalcs)
    han, gbcs = await settled(load_chf(bundled("chf")), [hcalcs], [held], HanOptions(start_utc=START))
    vector = bytes_from_hex(CS06_COMMAND.read_text())
    with pytest.raises(CommandRefused, match="does not verify"):
        await gbcs.activate_gbcs(ESME_ID, vector)  # signed by the DCC's supplier, not the one this device trusts

    right = resigned(vector, supplier, manufacturer_image_hash=manufacturer_image_hash(held.image))
    exchange = await gbcs.activate_gbcs(ESME_ID, right)
    assert exchange.reply == device_events.ActivationReply(False, ActivationResponse.SUCCESS, NEW)
    outcome = decode_message(parse(bytes.fromhex(exchange.response["hex"]))).outcome
    assert (outcome.response_code, outcome.firmware_version) == (ActivationResponse.SUCCESS, NEW.to_bytes(4, "big"))
    assert han.devices[ESME_ID].running_version == NEW
    with pytest.raises(CommandRefused, match="originator counter 1000 is not above 1000"):
        await gbcs.activate_gbcs(ESME_ID, right)
    await han.stop()


@pytest.mark.virtual_time
async def test_a_run_whose_supplier_the_hcalcs_does_not_trust_ends_it_failed():
    hcalcs = rtds_hcalcs(DCC_SUPPLIER_CERT)
    options = HanOptions(start_utc=START, activate_hcalcs=True)
    han, _ = await settled(load_chf(bundled("chf")), [hcalcs], [held_image(hcalcs)], options)
    summary = han.summaries[ESME_ID]
    assert summary.result == "failed" and "Activate Firmware refused" in summary.reason
    assert "does not verify" in summary.reason
    assert han.devices[ESME_ID].running_version == 1
    await han.stop()


@pytest.mark.virtual_time
async def test_a_ppmid_takes_no_activate_firmware_command():
    ppmid = load_device(bundled("ppmid"))
    han, _ = gbcs_han(load_chf(bundled("chf")), [ppmid], [held_image(ppmid)], HanOptions(start_utc=START))
    await han.start()
    with pytest.raises(CommandRefused, match=r"is a ppmid; Activate Firmware \(CS06\) is for an HCALCS"):
        await han.activate(ppmid.ieee, bytes(32))
    await han.stop()


def test_originators_keep_key_and_counters_in_the_state_dir(tmp_path):
    first = Originator(ESME_ID, None, tmp_path)
    alert = FirmwareTransferAlert(AlertCode.FIRMWARE_TRANSFER_SUCCESS, START, ESME_ID, bytes(4), 0)
    assert [parse(first.sign(alert, SUPPLIER_ID)).originator_counter for _ in range(3)] == [1, 2, 3]
    first.accept(SUPPLIER_ID, 1000)
    again = Originator(ESME_ID, None, tmp_path)
    assert parse(again.sign(alert, SUPPLIER_ID)).originator_counter == 4
    assert again.counters.last_accepted(SUPPLIER_ID) == 1000
    assert keys.public_key_pem(again.key.public_key()) == keys.public_key_pem(first.key.public_key())
    assert (tmp_path / "00DB1234567890A0.gbcs-key.pem").stat().st_mode & 0o077 == 0


def test_a_damaged_counter_file_is_named(tmp_path):
    (tmp_path / "00DB1234567890A0.gbcs.json").write_text('{"format": 1, "ieee": "00:db:12:34:56:78:90:a0"}')
    with pytest.raises(CounterFileError, match=r"00DB1234567890A0\.gbcs\.json: not a GBCS counter file"):
        Originator(ESME_ID, None, tmp_path)


def test_an_unreadable_gbcs_key_is_a_profile_error(tmp_path):
    profile = load_device(bundled("ppmid")).replace(gbcs_key=str(tmp_path / "missing.pem"))
    with pytest.raises(ProfileError, match=r"key 'device\.gbcs_key': .*missing\.pem: no such file"):
        gbcs_han(load_chf(bundled("chf")), [profile], [], HanOptions())


def test_an_alert_log_appends_after_the_lines_already_there(tmp_path):
    path = tmp_path / "alerts.jsonl"
    originator = Originator(ESME_ID, None, None)
    for count in (1, 2):
        log = AlertLog(START)
        alert = FirmwareTransferAlert(AlertCode.FIRMWARE_TRANSFER_SUCCESS, START, ESME_ID, bytes(4), 0)
        log.sent(originator, originator.sign(alert, ALERT_RECIPIENT), {"type": "test"}, START)
        log.write(path, append=True)
        assert len(path.read_text().splitlines()) == count
    assert [f.originator_counter for _, f, _ in read_log(path)] == [1, 2]


def run_cli(*args: object):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def test_ota_emu_run_writes_an_alert_log_that_gbcs_decode_verifies(tmp_path):
    ppmid, hcalcs = load_device(bundled("ppmid")), load_device(bundled("hcalcs"))
    paths = []
    for profile in (ppmid, hcalcs):
        paths.append(tmp_path / f"{profile.kind}.ota")
        paths[-1].write_bytes(held_image(profile).data)
    log = tmp_path / "out" / "alerts.jsonl"
    result = run_cli("run", "--image", paths[0], "--image", paths[1], "--activate", "--alert-log", log, "--json")
    assert result.exit_code == 0, result.output
    assert "5 GBCS messages" in result.stderr and str(log) in result.stderr
    entries = read_log(log)
    assert [type(m).__name__ for _, _, m in entries].count("FirmwareTransferAlert") == 2
    for record, frame, _ in entries:
        signer = log.parent / public_key_name(frame.originator_id)
        decoded = run_cli("gbcs", "decode", "--json", "--signer", signer, record["hex"])
        assert decoded.exit_code == 0 and json.loads(decoded.stdout)["signature"]["status"] == "verified"


def test_ota_emu_run_refuses_a_bad_gbcs_key_in_one_line(tmp_path):
    profile = tmp_path / "chf.toml"
    profile.write_text('[chf]\ngbcs_key = "nowhere.pem"\n')
    image = tmp_path / "ppmid.ota"
    image.write_bytes(held_image(load_device(bundled("ppmid"))).data)
    result = run_cli("run", "--chf", profile, "--image", image, "--alert-log", tmp_path / "a.jsonl")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "key 'chf.gbcs_key'" in result.stderr
    assert not (tmp_path / "a.jsonl").exists()


def test_demo_writes_its_alert_log(tmp_path):
    result = run_cli("demo", "--out", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    entries = read_log(tmp_path / "alerts.jsonl")
    command = next(r for r, _, m in entries if isinstance(m, ActivateFirmwareCommand))
    assert command["signature"] == {"status": "verified", "signer": str(tmp_path / "demo-supplier.pub.pem")}
    assert {type(m).__name__ for _, _, m in entries} == {
        "FirmwareTransferAlert",
        "PpmidFirmwareActivationAlert",
        "ActivateFirmwareCommand",
        "ActivateFirmwareResponse",
    }
