"""`ota-emu keys install-code` and `ota-emu certs ...` as a user runs them, including bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import assert_one_line_error
from emulator.cli import main


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
