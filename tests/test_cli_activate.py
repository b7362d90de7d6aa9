"""`ota-emu activate` as a lab uses it: `ota-emu run --state-dir` leaves an HCALCS holding its image, then a CS06
command activates it — the DCC's RTDS vector (tests/data/gb-vectors/rtds, see its README) as it is, or with the
held image's hash and signed again by a test supplier — and bad input gets one line and exit 2."""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import zigpy.types as t
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import TEST_KEYS, assert_one_line_error, image_file
from emulator import keys
from emulator.cli import main
from emulator.device.state import StateStore
from emulator.gb.frame import build_signed, bytes_from_hex, decode_message, parse, verify
from emulator.han.alert_log import public_key_name
from emulator.ota import image as ota_image
from emulator.ota.signing import manufacturer_image_hash
from emulator.profiles import load_device

GB_VECTORS = Path(__file__).parent / "data" / "gb-vectors"
RTDS = GB_VECTORS / "rtds"
CS06_COMMAND = RTDS / "CS06_11.3_IMMEDIATE_SUCCESS_COMMAND_GBCS.HEX"
DCC_SUPPLIER_CERT = GB_VECTORS / "signer-90b3d51f30010000-cert.pem"
ESME_ID = t.EUI64.convert("00:DB:12:34:56:78:90:A0")  # the device the RTDS CS06 command is addressed to
NEW = 0x00000002
NOW = "2015-01-01T00:00:00Z"

HCALCS_PROFILE = """
[device]
kind = "hcalcs"
ieee = "00:DB:12:34:56:78:90:A0"
manufacturer_code = "0x121D"
image_type = "0x0085"
file_version = 1
hardware_version = "0x1111"
query_start_jitter = 10
"""


def run(*args: object) -> Result:
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    assert "Traceback" not in result.output, result.output
    return result


def write_profile(path: Path, supplier_signer: str | None = None, kind: str = "hcalcs") -> Path:
    text = HCALCS_PROFILE.replace('"hcalcs"', f'"{kind}"')
    text += f'signers = ["{TEST_KEYS / "test-image-signer.pub.pem"}"]\n'
    if supplier_signer is not None:
        text += f'supplier_signer = "{supplier_signer}"\n'
    else:  # the opt-out these tests exercise: CS06 commands taken without a signature check
        text += "require_supplier_signature = false\n"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def distributed(tmp_path_factory) -> Path:
    """A state directory left by a real `ota-emu run --state-dir`: the HCALCS holds image version 2."""
    base = tmp_path_factory.mktemp("distributed")
    profile = write_profile(base / "hcalcs.toml")
    image_file(base / "hcalcs.ota", load_device(profile), size=1500)
    result = run("run", "--device", profile, "--image", base / "hcalcs.ota", "--state-dir", base / "state", "--json")
    assert result.exit_code == 0, result.output
    [device] = json.loads(result.stdout)["devices"]
    assert (device["ieee"], device["result"]) == (str(ESME_ID), "held")
    return base


@pytest.fixture
def lab(tmp_path: Path, distributed: Path) -> Path:
    """A copy of the distributed state, the DCC supplier certificate beside the profiles, and a test supplier."""
    shutil.copytree(distributed / "state", tmp_path / "state")
    shutil.copy(DCC_SUPPLIER_CERT, tmp_path / "dcc-supplier.pem")
    key = keys.generate_private_key()
    (tmp_path / "supplier.key.pem").write_bytes(keys.private_key_pem(key))
    (tmp_path / "supplier.pub.pem").write_bytes(keys.public_key_pem(key.public_key()))
    write_profile(tmp_path / "dcc.toml", "dcc-supplier.pem")
    write_profile(tmp_path / "test-supplier.toml", "supplier.pub.pem")
    write_profile(tmp_path / "unchecked.toml")
    return tmp_path


def held_hash(lab: Path) -> bytes:
    image = StateStore(lab / "state", ESME_ID).held_path(0x0085).read_bytes()
    return manufacturer_image_hash(ota_image.parse(image))


def activate(lab: Path, profile: str, *args: object) -> Result:
    return run("activate", "--device", lab / profile, "--state-dir", lab / "state", *args)


def activate_json(lab: Path, profile: str, *args: object) -> tuple[int, dict]:
    result = activate(lab, profile, *args, "--json")
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def running_version(lab: Path) -> int:
    return StateStore(lab / "state", ESME_ID).load().running_version


def rtds_resigned(lab: Path, **changes) -> str:
    """The RTDS CS06 command with content fields replaced and signed by the test supplier, as hex."""
    frame = parse(bytes_from_hex(CS06_COMMAND.read_text()))
    recipient = changes.pop("recipient_id", frame.recipient_id)
    content = dataclasses.replace(decode_message(frame), **changes)
    return build_signed(
        cra_flag=frame.cra_flag,
        originator_counter=content.originator_counter,
        originator_id=frame.originator_id,
        recipient_id=recipient,
        message_code=frame.message_code,
        content=content.encode(),
        key=keys.load_private_key(lab / "supplier.key.pem"),
    ).hex()


def verified_by_the_hcalcs(record: dict, log_dir: Path) -> bool:
    key = keys.load_public_key(log_dir / public_key_name(ESME_ID))
    return verify(parse(bytes.fromhex(record["hex"])), key)


def test_rtds_vector_verified_with_the_dcc_cert_answers_hash_mismatch(lab: Path):
    log = lab / "log" / "alerts.jsonl"
    code, report = activate_json(lab, "dcc.toml", "--gbcs", CS06_COMMAND, "--now", NOW, "--alert-log", log)
    assert code == 1
    assert report["command"]["signature"]["status"] == "verified"
    assert report["command"]["signature"]["signer"] == str(lab / "dcc-supplier.pem")
    response = report["response"]
    assert response["content"]["outcome"]["response_code"] == {"value": 2, "name": "hash_mismatch"}
    assert response["content"]["outcome"]["firmware_version"] == "00000001"
    assert (response["originator_id"], response["recipient_id"]) == (str(ESME_ID), "90:b3:d5:1f:30:01:00:00")
    assert (response["originator_counter"], response["date_time"]) == (1000, NOW)
    assert report["alert"] is None and report["device"]["image_held"] is True
    assert verified_by_the_hcalcs(response, log.parent)
    assert [json.loads(line)["message"] for line in log.read_text().splitlines()] == [
        "CS06 ActivateFirmware command",
        "CS06 ActivateFirmware response",
    ]
    assert running_version(lab) == 1


def test_rtds_vector_with_the_held_hash_resigned_activates_and_persists(lab: Path):
    command = rtds_resigned(lab, manufacturer_image_hash=held_hash(lab))
    log = lab / "alerts.jsonl"
    code, report = activate_json(lab, "test-supplier.toml", "--gbcs", command, "--now", NOW, "--alert-log", log)
    assert code == 0
    outcome = report["response"]["content"]["outcome"]
    assert (outcome["response_code"]["value"], outcome["firmware_version"]) == (0, "00000002")
    assert report["device"] == {"ieee": str(ESME_ID), "running_version": "0x00000002", "image_held": False}
    assert verified_by_the_hcalcs(report["response"], lab)
    assert running_version(lab) == NEW

    again = activate(lab, "test-supplier.toml", "--gbcs", command)
    assert_one_line_error(again, "originator counter 1000 is not above 1000")
    later = rtds_resigned(lab, manufacturer_image_hash=bytes(32), originator_counter=1001)
    code, report = activate_json(lab, "test-supplier.toml", "--gbcs", later)
    assert code == 1 and report["response"]["content"]["outcome"]["response_code"]["name"] == "no_image_held"


def test_text_output_says_when_the_signature_was_not_checked(lab: Path):
    result = activate(lab, "unchecked.toml", "--gbcs", CS06_COMMAND.read_text(), "--now", NOW)
    assert result.exit_code == 1, result.output
    assert "signature: NOT CHECKED: " in result.stdout and "names no supplier_signer" in result.stdout
    assert "response_code: 2 (hash_mismatch)" in result.stdout
    assert "mac: not checked" in result.stdout
    assert f"device {ESME_ID}: running 0x00000001, an image is still held" in result.stdout


@pytest.mark.parametrize(("right_hash", "exit_code", "alert_code"), [(True, 0, "0x8F66"), (False, 1, "0x8F67")])
def test_future_dated_hash_command_is_accepted_then_alerted(lab: Path, right_hash: bool, exit_code: int, alert_code):
    digest = held_hash(lab) if right_hash else bytes(32)
    key = lab / "supplier.key.pem"
    args = ("--hash", digest.hex(), "--at", "+86400", "--supplier-key", key, "--now", NOW, "--alert-log", lab / "a.log")
    code, report = activate_json(lab, "test-supplier.toml", *args)
    assert code == exit_code
    command, response, alert = report["command"], report["response"], report["alert"]
    execution = (datetime(2015, 1, 1, tzinfo=UTC) + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    assert command["content"]["execution_datetime"] == execution and command["originator_counter"] == 1
    assert command["signature"]["status"] == "verified"
    assert response["content"]["outcome"] is None  # commandAccepted
    assert alert["content"]["alert_code"]["hex"] == alert_code
    assert alert["content"]["execution_datetime"] == execution and alert["utc"] == execution
    assert alert["content"]["originator_counter"] == command["originator_counter"]
    assert alert["protocol_time"] == 86400.0
    assert (alert["originator_id"], alert["recipient_id"]) == (str(ESME_ID), "90:b3:d5:1f:30:01:00:00")
    assert verified_by_the_hcalcs(alert, lab) and verified_by_the_hcalcs(response, lab)
    assert running_version(lab) == (NEW if right_hash else 1)


def test_unsigned_hash_command_is_taken_only_without_a_supplier_signer(lab: Path):
    digest = held_hash(lab).hex()
    assert_one_line_error(activate(lab, "dcc.toml", "--hash", digest), "unsigned, expected a signature by")
    code, report = activate_json(lab, "unchecked.toml", "--hash", digest)
    assert code == 0 and report["command"]["signature"]["status"] == "not checked"


def p384_certificate(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "p384")])
    start = datetime(2025, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


VECTOR_HEX = CS06_COMMAND.read_text().strip().lower()
INNER = VECTOR_HEX[VECTOR_HEX.index("df09") :][:-24]  # the general-signing frame without wrapper and MAC
SHORT_SIGNATURE = INNER[:-130] + "3f" + INNER[-128:-2]


@pytest.mark.parametrize(
    ("gbcs", "fragments"),
    [
        (VECTOR_HEX[:-1], ("--gbcs: odd number of hex digits",)),
        (VECTOR_HEX[:100], ("truncated",)),
        ("AB" + INNER[2:], ("first byte is 0xAB, expected 0xDF",)),
        (INNER[:2] + "08" + INNER[4:], ("transaction-id length is 0x08, expected 0x09",)),
        (SHORT_SIGNATURE, ("signature length is 63, expected 64",)),
        ((RTDS / "CCS08_NA_NA_ALERT_GBCS.HEX"), ("CCS08 FirmwareTransferAlert", "expected a CS06")),
        ("missing/command.hex", ("no such file",)),
    ],
    ids=["odd-hex", "truncated", "wrong-frame-tag", "wrong-length-tag", "short-signature", "not-cs06", "no-file"],
)
def test_bad_commands_get_one_line_and_change_nothing(lab: Path, gbcs, fragments):
    log = lab / "alerts.jsonl"
    result = activate(lab, "dcc.toml", "--gbcs", gbcs, "--alert-log", log)
    assert_one_line_error(result, *fragments)
    assert not log.exists() and running_version(lab) == 1
    assert not list((lab / "state").glob("*.gbcs*"))


def test_command_for_another_device_is_refused(lab: Path):
    command = rtds_resigned(lab, recipient_id=t.EUI64.convert("00:DB:12:34:56:78:90:A5"))
    result = activate(lab, "test-supplier.toml", "--gbcs", command)
    assert_one_line_error(result, "addressed to 00:db:12:34:56:78:90:a5, not to this HCALCS 00:db:12:34:56:78:90:a0")


def test_bad_setup_gets_one_line(lab: Path, tmp_path: Path):
    write_profile(lab / "p384.toml", str(p384_certificate(lab / "p384.pem")))
    write_profile(lab / "ppmid.toml", kind="ppmid")
    cases = [
        (activate(lab, "p384.toml", "--gbcs", CS06_COMMAND), ("supplier_signer", "expected P-256")),
        (activate(lab, "ppmid.toml", "--gbcs", CS06_COMMAND), ("a ppmid profile, expected an HCALCS",)),
        (
            run("activate", "--device", lab / "dcc.toml", "--state-dir", tmp_path / "empty", "--gbcs", CS06_COMMAND),
            ("no persisted state for HCALCS 00:db:12:34:56:78:90:a0",),
        ),
        (activate(lab, "dcc.toml"), ("give either --gbcs HEX_OR_FILE or --hash HEX",)),
        (activate(lab, "dcc.toml", "--gbcs", CS06_COMMAND, "--at", "+60"), ("--at and --supplier-key go with --hash",)),
        (activate(lab, "unchecked.toml", "--hash", "ab" * 31), ("--hash: 62 hex digits, expected 64",)),
        (activate(lab, "unchecked.toml", "--hash", "ab" * 32, "--at", "soon"), ("--at: 'soon' is not",)),
        (activate(lab, "unchecked.toml", "--hash", "ab" * 32, "--now", "x"), ("--now: 'x' is not an ISO-8601",)),
    ]
    for result, fragments in cases:
        assert_one_line_error(result, *fragments)
    assert running_version(lab) == 1


def test_damaged_counter_file_gets_one_line(lab: Path):
    (lab / "state" / "00DB1234567890A0.gbcs.json").write_text("{")
    result = activate(lab, "unchecked.toml", "--gbcs", CS06_COMMAND)
    assert_one_line_error(result, "00DB1234567890A0.gbcs.json: not a GBCS counter file")
