"""Unsigned integers of a fixed bit width as people write them: decimal or 0x-hex, in profiles and on the
command line. One parser, so that `manufacturer_code = "0x121D"` in a profile and `--manufacturer 0x121D` take
the same spellings and refuse the same values with the same words. Pure."""

from __future__ import annotations


def parse_unsigned(value: object, bits: int, *, maximum: int | None = None) -> int:
    """An integer 0..2**bits - 1 (or 0..`maximum`) from an int, or from text in decimal or 0x-hex.

    A `ValueError` says what was expected and what was given, in the spelling it was given in."""
    if isinstance(value, str):
        text = value.strip()
        try:
            number = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
        except ValueError:
            raise ValueError(f"{value!r} is not a number (expected decimal or 0x-hex)") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise ValueError(f"expected an integer (decimal or 0x-hex), got {value!r}")
    limit = (1 << bits) - 1 if maximum is None else maximum
    if not 0 <= number <= limit:
        raise ValueError(f"expected 0..0x{limit:X} (a {bits}-bit number), got {value}")
    return number
