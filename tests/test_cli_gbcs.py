"""`ota-emu gbcs decode` as a user runs it: the RTDS vectors, signatures checked or not, and bad input."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import assert_one_line_error
from emulator import keys
from emulator.cli import main
from emulator.gb.frame import sign_message
from emulator.gb.messages import FirmwareTransferAlert

GB_VECTORS = Path(__file__).parent / "data" / "gb-vectors"
RTDS = GB_VECTORS / "rtds"
CCS08 = RTDS / "CCS08_NA_NA_ALERT_GBCS.HEX"
CS09 = RTDS / "CS09_NA_8F8B_ALERT_GBCS.HEX"
CS08 = RTDS / "CS08_11.2_SUCCESS_RESPONSE_GBCS.HEX"
CHF_CERT = RTDS / "00db1234567890a2-ds-cert.pem"
PPMID_CERT = RTDS / "00db1234567890a4-ds-cert.pem"
ESME_CERT = RTDS / "00db1234567890a0-ds-cert.pem"

# Vector, its originator's certificate, message code, content type.
VECTORS = [
    (CCS08, CHF_CERT, 0x0128, "FirmwareTransferAlert"),
    (CS09, PPMID_CERT, 0x012B, "PpmidFirmwareActivationAlert"),
    (RTDS / "CS06_11.3_IMMEDIATE_SUCCESS_COMMAND_GBCS.HEX", GB_VECTORS / "signer-90b3d51f30010000-cert.pem",
     0x0012, "ActivateFirmwareCommand"),
    (RTDS / "CS06_11.3_IMMEDIATE_SUCCESS_RESPONSE_GBCS.HEX", ESME_CERT, 0x0012, "ActivateFirmwareResponse"),
    (RTDS / "CS06_11.3_IMMEDIATE_ERROR_RESPONSE_GBCS.HEX", ESME_CERT, 0x0012, "ActivateFirmwareResponse"),
    (RTDS / "CS06_11.3_8F66_FUTURE_DATED_SUCCESS_ALERT_GBCS.HEX", ESME_CERT, 0x00CA, "ActivateFirmwareAlert"),
    (RTDS / "CS06_11.3_8F67_FUTURE_DATED_ERROR_ALERT_GBCS.HEX", ESME_CERT, 0x00CA, "ActivateFirmwareAlert"),
]  # fmt: skip


def run(*args: object, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], input=stdin)


def decode_json(*args: object) -> tuple[int, dict]:
    result = run("gbcs", "decode", "--json", *args)
    assert "Traceback" not in result.output
    return result.exit_code, json.loads(result.stdout)


# --- good input ---------------------------------------------------------------------------------------------------


def test_ccs08_json_reports_header_content_and_verified_signature() -> None:
    code, report = decode_json(CCS08, "--signer", CHF_CERT)
    assert code == 0
    assert report["source"] == str(CCS08)
    assert report["wrapper"] is None
    assert report["cra_flag"] == {"value": 3, "name": "alert"}
    assert report["originator_counter"] == 4000
    assert report["originator_id"] == "00:db:12:34:56:78:90:a2"
    assert report["recipient_id"] == "90:b3:d5:1f:30:00:00:02"
    assert report["date_time"] is None
    assert report["message_code"] == {"value": 0x0128, "hex": "0x0128", "name": "CCS08 Firmware Transfer Alert"}
    assert report["content"] == {
        "type": "FirmwareTransferAlert",
        "alert_code": {"value": 0x8F8A, "name": "firmware_transfer_success", "hex": "0x8F8A"},
        "execution_datetime": "2015-01-01T00:00:00Z",
        "entity_id": "00:db:12:34:56:78:90:a4",
        "firmware_version": "0123abcd",
        "response_code": {"value": 0, "name": "success"},
    }
    assert report["content_hex"] == CCS08.read_text().strip().lower()[68:154]
    assert report["signature"]["status"] == "verified"
    assert report["signature"]["value"] == CCS08.read_text().strip().lower()[-128:]


@pytest.mark.parametrize(("path", "cert", "message_code", "content_type"), VECTORS, ids=lambda v: getattr(v, "name", v))
def test_signed_vectors_verify_with_their_originator(path: Path, cert: Path, message_code: int, content_type: str):
    code, report = decode_json(path, "--signer", cert)
    assert code == 0
    assert report["signature"]["status"] == "verified"
    assert report["message_code"]["value"] == message_code
    assert report["content"]["type"] == content_type


@pytest.mark.parametrize(("path", "cert", "message_code", "content_type"), VECTORS, ids=lambda v: getattr(v, "name", v))
def test_signed_vectors_without_signer_are_not_checked(path: Path, cert: Path, message_code: int, content_type: str):
    code, report = decode_json(path)
    assert code == 0
    assert report["signature"]["status"] == "not checked"


def test_wrong_signer_does_not_verify_and_exits_1() -> None:
    code, report = decode_json(CS09, "--signer", CHF_CERT)
    assert code == 1
    assert report["signature"]["status"] == "does not verify"


def test_altered_frame_does_not_verify() -> None:
    text = CCS08.read_text().strip()
    altered = text[:-2] + ("00" if text[-2:] != "00" else "01")
    code, report = decode_json(altered, "--signer", CHF_CERT)
    assert code == 1
    assert report["signature"]["status"] == "does not verify"


def test_cs08_response_has_mac_wrapper_and_no_signature() -> None:
    code, report = decode_json(CS08)
    assert code == 0
    assert report["wrapper"] == {
        "type": "general ciphering",
        "invocation_counter": 0,
        "mac": "0da6f255e953f315b792d962",
        "mac_status": "not checked",
    }
    assert report["supplementary_remote_party_id"] == "90:b3:d5:1f:30:01:00:00"
    assert report["supplementary_remote_party_counter"] == 1000
    assert report["content"] == {
        "type": "ReadFirmwareVersionResponse",
        "firmware_version": "0123abcd",
        "response_code": {"value": 0, "name": "read_success"},
    }
    assert report["signature"] == {"status": "no signature", "signer": None, "value": None}


def test_unsigned_frame_with_signer_exits_1() -> None:
    code, report = decode_json(CS08, "--signer", PPMID_CERT)
    assert code == 1
    assert report["signature"]["status"] == "no signature"


def test_cs06_response_reports_dlms_date_time_and_outcome() -> None:
    _, report = decode_json(RTDS / "CS06_11.3_IMMEDIATE_ERROR_RESPONSE_GBCS.HEX")
    assert report["date_time"] == "2015-01-01T00:00:00Z"
    assert report["content"]["outcome"] == {
        "response_code": {"value": 1, "name": "no_image_held"},
        "firmware_version": "0123abcf",
    }


def test_text_output_lists_fields_and_status() -> None:
    result = run("gbcs", "decode", CCS08, "--signer", CHF_CERT)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "message_code: 0x0128 (CCS08 Firmware Transfer Alert)" in lines
    assert "  alert_code: 0x8F8A (firmware_transfer_success)" in lines
    assert "  entity_id: 00:db:12:34:56:78:90:a4" in lines
    assert "  status: verified" in lines


def test_hex_argument_with_whitespace_and_stdin() -> None:
    text = CCS08.read_text().strip()
    spaced = " ".join(text[i : i + 8] for i in range(0, len(text), 8))
    code, report = decode_json(spaced, "--signer", CHF_CERT)
    assert (code, report["source"], report["signature"]["status"]) == (0, "hex argument", "verified")
    result = run("gbcs", "decode", "--json", "-", "--signer", CHF_CERT, stdin=f"{text[:100]}\n{text[100:]}\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["source"] == "standard input"


def test_frame_we_sign_verifies_with_our_public_key(tmp_path: Path) -> None:
    private_key = keys.generate_private_key()
    (tmp_path / "signer.pub.pem").write_bytes(keys.public_key_pem(private_key.public_key()))
    alert = FirmwareTransferAlert(0x8F89, dt.datetime(2025, 1, 2, tzinfo=dt.UTC), bytes(8), bytes(4), 3)
    data = sign_message(
        alert, originator_counter=7, originator_id=bytes.fromhex("00DB1234567890A2"), recipient_id=bytes(8),
        key=private_key,
    )  # fmt: skip
    (tmp_path / "alert.hex").write_text(data.hex())
    code, report = decode_json(tmp_path / "alert.hex", "--signer", tmp_path / "signer.pub.pem")
    assert code == 0
    assert report["signature"]["status"] == "verified"
    assert report["content"]["response_code"] == {"value": 3, "name": "file_transfer_failure"}


# --- bad input ----------------------------------------------------------------------------------------------------


def _p384_files(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "p384")])
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA384())
    )
    cert_path, key_path = tmp_path / "p384-cert.pem", tmp_path / "p384.pub.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return cert_path, key_path


def test_p384_certificate_and_key_are_rejected(tmp_path: Path) -> None:
    cert_path, key_path = _p384_files(tmp_path)
    assert_one_line_error(run("gbcs", "decode", CCS08, "--signer", cert_path), str(cert_path), "secp384r1", "P-256")
    assert_one_line_error(run("gbcs", "decode", CCS08, "--signer", key_path), str(key_path), "secp384r1", "P-256")


def test_signer_that_is_not_a_certificate_is_rejected(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    assert_one_line_error(run("gbcs", "decode", CCS08, "--signer", junk), str(junk), "not a PEM public key")
    assert_one_line_error(run("gbcs", "decode", CCS08, "--signer", tmp_path / "missing.pem"), "no such file")


def _ccs08_bytes() -> bytearray:
    return bytearray.fromhex(CCS08.read_text())


def _wrong_signature_length() -> str:
    data = _ccs08_bytes()
    return (data[:-65] + b"\x3f" + data[-63:]).hex()


@pytest.mark.parametrize(
    ("argument", "fragments"),
    [
        ("DF090", ["hex argument", "odd number of hex digits (5)"]),
        ("DF09 0Z", ["hex argument", "'Z'", "not a hex digit"]),
        (CCS08.read_text().strip()[:-10], ["hex argument", "truncated at byte", "signature"]),
        (CCS08.read_text().strip()[:60], ["hex argument", "truncated at byte 30"]),
        ("30" + CCS08.read_text().strip()[2:], ["first byte is 0x30", "expected 0xDF"]),
        (CCS08.read_text().strip()[:2] + "08" + CCS08.read_text().strip()[4:], ["transaction-id length is 0x08"]),
        (_wrong_signature_length(), ["signature length is 63", "expected 64"]),
        (
            CCS08.read_text().strip()[:62] + "0059" + CCS08.read_text().strip()[66:],
            ["message code 0x0059 is not a firmware message"],
        ),
        (
            CCS08.read_text().strip()[:72] + "04" + CCS08.read_text().strip()[74:],
            ["content", "CCS08 FirmwareTransferAlert"],
        ),
    ],
    ids=["odd", "non-hex", "truncated-signature", "truncated-header", "wrong-tag", "wrong-transaction-length",
         "signature-length", "unknown-message-code", "bad-der"],
)  # fmt: skip
def test_bad_frames_give_one_line_errors(argument: str, fragments: list[str]) -> None:
    assert_one_line_error(run("gbcs", "decode", argument), *fragments)
    assert_one_line_error(run("gbcs", "decode", "--json", argument, "--signer", CHF_CERT), *fragments)


def test_bad_files_give_one_line_errors(tmp_path: Path) -> None:
    odd = tmp_path / "odd.HEX"
    odd.write_text(CCS08.read_text().strip()[:-1])
    assert_one_line_error(run("gbcs", "decode", odd), str(odd), "odd number of hex digits")
    binary = tmp_path / "frame.bin"
    binary.write_bytes(bytes(_ccs08_bytes()))
    assert_one_line_error(run("gbcs", "decode", binary), str(binary), "not a text file of hex digits")
    assert_one_line_error(run("gbcs", "decode", tmp_path / "missing.HEX"), "missing.HEX", "No such file")
    assert_one_line_error(run("gbcs", "decode", tmp_path), str(tmp_path), "is a directory")


def test_every_truncation_of_a_vector_is_a_one_line_error() -> None:
    text = CS08.read_text().strip()
    for end in range(2, len(text), 2):
        assert_one_line_error(run("gbcs", "decode", text[:end]), "hex argument", "truncated")
