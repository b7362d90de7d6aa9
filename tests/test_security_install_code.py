"""Install codes: CRC-16/X-25, parsing, link-key derivation; published vectors and zigpy as a second witness."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from zigpy.util import convert_install_code

from emulator.errors import InputError
from emulator.security.install_code import (
    InstallCode,
    InstallCodeError,
    crc16_x25,
    key_load_key,
    key_transport_key,
)

# (code without CRC, CRC value, link key): Silicon Labs AN1089; zigpy tests/test_util.py; zigbee-herdsman tests.
VECTORS = [
    ("83FED3407A939723A5C639B26916D505", 0xB5C3, "66B6900981E1EE3CA4206B6B861C02BB"),
    ("1122334455667788", 0xF74A, "41618FC0C83B0E14A589954B16E31466"),
    ("83FED3407A939723A5C639FF", 0x124C, "58C1828CF7F1C3FE29E7B1024AD84BFA"),
]


def test_crc_check_value() -> None:
    assert crc16_x25(b"123456789") == 0x906E


@pytest.mark.parametrize(("code", "crc", "key"), VECTORS)
def test_published_vectors(code: str, crc: int, key: str) -> None:
    install_code = InstallCode.parse(code)
    assert install_code.crc == crc
    assert install_code.with_crc == bytes.fromhex(code) + crc.to_bytes(2, "little")
    assert install_code.key == bytes.fromhex(key)
    # the same code given with its CRC, and with separators, is the same code
    assert InstallCode.parse(install_code.with_crc.hex()) == install_code
    spaced = " ".join(install_code.with_crc.hex()[i : i + 4] for i in range(0, 2 * len(install_code.with_crc), 4))
    assert InstallCode.parse(spaced) == install_code
    assert InstallCode.parse(":".join(f"{b:02x}" for b in bytes.fromhex(code))) == install_code


def test_derived_keys_of_the_an1089_code() -> None:
    key = InstallCode.parse("83FED3407A939723A5C639B26916D505").key
    # Wireshark packet-zbee-security.c derives the same keys from the link key (hash inputs 0x00 and 0x02)
    assert key_transport_key(key) == bytes.fromhex("3C6CCA8977EB189EFD1614C3E7F75989")
    assert key_load_key(key) == bytes.fromhex("1177A0EE2600D0020DBA82D7049F53BC")


@given(st.sampled_from([6, 8, 12, 16]).flatmap(lambda n: st.binary(min_size=n, max_size=n)))
def test_agrees_with_zigpy(code: bytes) -> None:
    install_code = InstallCode(code)
    assert install_code.key == bytes(convert_install_code(install_code.with_crc))
    assert InstallCode.from_bytes(install_code.with_crc, has_crc=True) == install_code


@given(st.sampled_from([6, 8, 12, 16]).flatmap(lambda n: st.binary(min_size=n + 2, max_size=n + 2)))
def test_crc_check_agrees_with_zigpy(data: bytes) -> None:
    try:
        zigpy_key = bytes(convert_install_code(data))
    except ValueError:
        zigpy_key = None
    try:
        ours = InstallCode.from_bytes(data, has_crc=True).key
    except InstallCodeError:
        ours = None
    assert ours == zigpy_key


def test_eight_bytes_are_a_six_byte_code_with_crc_only_when_the_crc_matches() -> None:
    six = InstallCode(bytes.fromhex("010203040506"))
    assert InstallCode.from_bytes(six.with_crc) == six
    assert InstallCode.parse("1122334455667788").code == bytes.fromhex("1122334455667788")
    assert InstallCode.parse(six.with_crc.hex(), has_crc=False).code == six.with_crc


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("83FED3407A939723A5C639B26916D505C3B6", "CRC is C3B6 but the code's CRC-16/X-25 is C3B5"),
        ("83FED3407A939723A5C639B26916D5", "has 15 bytes"),
        ("0102030405", "has 5 bytes"),
        ("xyz", "is not hex"),
        ("", "has 0 bytes"),
    ],
)
def test_bad_codes_name_what_was_expected(text: str, fragment: str) -> None:
    with pytest.raises(InstallCodeError, match="expected") as info:
        InstallCode.parse(text)
    assert fragment in str(info.value)
    assert isinstance(info.value, InputError)
    assert "\n" not in str(info.value)


def test_a_code_of_a_wrong_length_is_refused() -> None:
    with pytest.raises(InstallCodeError, match="7 bytes"):
        InstallCode(bytes(7))
    with pytest.raises(InstallCodeError, match="8, 10, 14 or 18"):
        InstallCode.from_bytes(bytes(9), has_crc=True)
