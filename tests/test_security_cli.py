"""`ota-emu keys install-code` and `ota-emu certs ...` as a user runs them, including bad input."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from se_vectors import SUITE1, SUITE2

from conftest import assert_one_line_error
from emulator.cli import main
from emulator.security.certs import reconstruct_public_key
from emulator.security.credentials import parse_device


def test_install_code_prints_code_crc_and_keys() -> None:
    result = CliRunner().invoke(main, ["keys", "install-code", "83FE-D340-7A93-9723-A5C6-39B2-6916-D505", "--json"])
    assert result.exit_code == 0, result.output
    fields = json.loads(result.stdout)
    assert fields == {
        "install_code": "83FED3407A939723A5C639B26916D505",
        "crc": "B5C3",
        "install_code_with_crc": "83FED3407A939723A5C639B26916D505C3B5",
        "link_key": "66B6900981E1EE3CA4206B6B861C02BB",
        "key_transport_key": "3C6CCA8977EB189EFD1614C3E7F75989",
        "key_load_key": "1177A0EE2600D0020DBA82D7049F53BC",
    }
    text = CliRunner().invoke(main, ["keys", "install-code", "83FED3407A939723A5C639B26916D505C3B5"])
    assert text.exit_code == 0
    assert "66B6900981E1EE3CA4206B6B861C02BB" in text.stdout


@pytest.mark.parametrize(
    ("code", "fragment"),
    [("83FED3407A939723A5C639B26916D505C3B6", "CRC is C3B6"), ("0102", "2 bytes"), ("zz", "not hex")],
)
def test_install_code_bad_input_is_one_line(code: str, fragment: str) -> None:
    result = CliRunner().invoke(main, ["keys", "install-code", code])
    assert_one_line_error(result, "install code", fragment, "expected")


# --- certs ---------------------------------------------------------------------------------------------------
def _ca(tmp_path: Path, suite: str) -> Path:
    result = CliRunner().invoke(main, ["certs", "ca", "-o", str(tmp_path / "ca"), "--suite", suite])
    assert result.exit_code == 0, result.output
    return tmp_path / "ca"


@pytest.mark.parametrize("suite", ["1", "2"])
def test_ca_issue_and_show(tmp_path: Path, suite: str) -> None:
    ca_dir = _ca(tmp_path, suite)
    assert stat.S_IMODE((ca_dir / "ca.key.json").stat().st_mode) == 0o600
    result = CliRunner().invoke(
        main, ["certs", "issue", "--ca", str(ca_dir), "--eui64", "00:0D:6F:00:00:BB:BB:BB", "-o", str(tmp_path / "d")]
    )
    assert result.exit_code == 0, result.output
    device_file = tmp_path / "d" / "000D6F0000BBBBBB.cbke.json"
    assert stat.S_IMODE(device_file.stat().st_mode) == 0o600
    credentials = parse_device(device_file.read_text(), "device")
    ca_public = json.loads((ca_dir / "ca.pub.json").read_text())
    assert credentials.ca_public_key.to_bytes().hex().upper() == ca_public["public_key"]
    assert credentials.certificate.subject == bytes.fromhex("000D6F0000BBBBBB")
    assert reconstruct_public_key(credentials.certificate, credentials.ca_public_key) == (
        credentials.private_key.public_key()
    )

    shown = CliRunner().invoke(main, ["certs", "show", str(device_file), "--json"])
    assert shown.exit_code == 0, shown.output
    fields = json.loads(shown.stdout)
    assert fields["suite"] == int(suite)
    assert fields["subject"] == "00:0D:6F:00:00:BB:BB:BB"
    assert fields["issuer"] == b"OTAEMUCA".hex().upper()
    assert fields["certificate"] == credentials.certificate.to_bytes().hex().upper()
    assert "private_key" not in fields
    text = CliRunner().invoke(main, ["certs", "show", str(ca_dir / "ca.pub.json")])
    assert text.exit_code == 0 and ca_public["public_key"] in text.stdout

    again = CliRunner().invoke(main, ["certs", "ca", "-o", str(ca_dir), "--suite", suite])
    assert_one_line_error(again, "ca.key.json", "already exists")


def test_show_bare_certificates(tmp_path: Path) -> None:
    binary = tmp_path / "u.cert"
    binary.write_bytes(bytes.fromhex(SUITE1.u.cert))
    result = CliRunner().invoke(main, ["certs", "show", str(binary), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["profile_data"] == "01090006000000000000"
    hex_file = tmp_path / "v.hex"
    hex_file.write_text(SUITE2.v.cert.lower() + "\n")
    fields = json.loads(CliRunner().invoke(main, ["certs", "show", str(hex_file), "--json"]).stdout)
    assert (fields["serial"], fields["valid_to"], fields["key_usage"]) == ("2622A505E8938F27", "no expiry", "0x88")
    assert fields["subject"] == "0A:0B:0C:0D:0E:0F:10:11"


def test_certs_bad_input_is_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    truncated = tmp_path / "short.hex"
    truncated.write_text(SUITE2.u.cert[:-2])
    assert_one_line_error(runner.invoke(main, ["certs", "show", str(truncated)]), "short.hex", "73 bytes", "expected")
    bad_curve = tmp_path / "curve.hex"
    bad_curve.write_text(SUITE2.u.cert[:18] + "0E" + SUITE2.u.cert[20:])
    assert_one_line_error(runner.invoke(main, ["certs", "show", str(bad_curve)]), "curve.hex", "curve is not 0x0D")
    assert_one_line_error(runner.invoke(main, ["certs", "show", str(tmp_path / "none")]), "no such file")
    not_ours = tmp_path / "x.json"
    not_ours.write_text('{"format": "something"}')
    assert_one_line_error(runner.invoke(main, ["certs", "show", str(not_ours)]), "x.json", "expected an ota-emu")
    assert_one_line_error(runner.invoke(main, ["certs", "ca", "-o", str(tmp_path), "--suite", "3"]), "--suite")

    ca_dir = _ca(tmp_path, "1")
    issue = ["certs", "issue", "--eui64", "000D6F0000BBBBBB", "-o", str(tmp_path / "d")]
    assert_one_line_error(
        runner.invoke(main, [*issue, "--ca", str(ca_dir / "ca.pub.json")]),
        "ca.pub.json",
        "is a CA public key file",
        "expected a CA key file",
    )
    assert_one_line_error(runner.invoke(main, [*issue, "--ca", str(ca_dir), "--suite", "2"]), "suite-1 CA")
    assert_one_line_error(runner.invoke(main, [*issue[:2], "000D6F", *issue[3:], "--ca", str(ca_dir)]), "--eui64")
    wrong_suite = json.loads((ca_dir / "ca.key.json").read_text())
    wrong_suite["suite"] = 3
    (tmp_path / "ca3.json").write_text(json.dumps(wrong_suite))
    result = runner.invoke(main, [*issue, "--ca", str(tmp_path / "ca3.json")])
    assert_one_line_error(result, "suite 3", "expected 1 or 2")

    assert runner.invoke(main, [*issue, "--ca", str(ca_dir)]).exit_code == 0
    device = tmp_path / "d" / "000D6F0000BBBBBB.cbke.json"
    assert_one_line_error(runner.invoke(main, [*issue, "--ca", str(device)]), "is a device credentials file")
    assert_one_line_error(runner.invoke(main, [*issue, "--ca", str(ca_dir)]), "already exists")
    tampered = json.loads(device.read_text())
    tampered["private_key"] = "00" * 20 + "01"
    device.write_text(json.dumps(tampered))
    assert_one_line_error(runner.invoke(main, ["certs", "show", str(device)]), "does not match")
