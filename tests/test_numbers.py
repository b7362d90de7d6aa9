"""Numbers as people write them: a profile key and a command-line option take the same spellings and refuse the
same values in the same words, because both go through `emulator.numbers.parse_unsigned`."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from emulator.cli import main
from emulator.numbers import parse_unsigned
from emulator.profiles import ProfileError, load_device

PROFILE = """
[device]
kind = "ppmid"
ieee = "00:DB:12:34:56:78:90:A4"
manufacturer_code = {value}
image_type = "0x0084"
file_version = 1
"""


@pytest.mark.parametrize(
    ("value", "bits", "number"),
    [("0x121D", 16, 0x121D), ("0X121d", 16, 0x121D), (" 4637 ", 16, 4637), (0xFF, 8, 0xFF), ("0", 32, 0)],
)
def test_decimal_and_hex_spellings(value: object, bits: int, number: int) -> None:
    assert parse_unsigned(value, bits) == number


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("0x1FFFF", "expected 0..0xFFFF (a 16-bit number), got 0x1FFFF"),
        ("-1", "expected 0..0xFFFF (a 16-bit number), got -1"),
        ("ten", "'ten' is not a number (expected decimal or 0x-hex)"),
        (True, "expected an integer (decimal or 0x-hex), got True"),
        (1.5, "expected an integer (decimal or 0x-hex), got 1.5"),
    ],
)
def test_refusals_say_what_was_expected(value: object, words: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_unsigned(value, 16)
    assert str(refused.value) == words


def test_a_lower_maximum_is_named() -> None:
    with pytest.raises(ValueError) as refused:
        parse_unsigned("0xFFFF", 16, maximum=0xFFFE)
    assert str(refused.value) == "expected 0..0xFFFE (a 16-bit number), got 0xFFFF"


@pytest.mark.parametrize("written", ["0x1FFFF", "ten"])
def test_a_profile_and_an_option_refuse_in_the_same_words(tmp_path: Path, written: str) -> None:
    profile = tmp_path / "ppmid.toml"
    profile.write_text(PROFILE.format(value=f'"{written}"'))
    with pytest.raises(ProfileError) as refused:
        load_device(profile)
    words = str(refused.value).split("key 'device.manufacturer_code': ", 1)[1]
    payload = tmp_path / "fw.bin"
    payload.write_bytes(b"fw")
    args = ["image", "build", "--format", "gb", "--manufacturer", written, "--image-type", "1", "--file-version", "1"]
    result = CliRunner().invoke(main, [*args, "--payload", str(payload), "-o", str(tmp_path / "out.ota")])
    assert result.exit_code == 2
    assert words in result.stderr, result.stderr
