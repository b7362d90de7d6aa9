"""Click parameter types shared by the command groups."""

from __future__ import annotations

import click


class Number(click.ParamType):
    """An unsigned integer written in decimal or 0x-hex, checked against a bit width."""

    name = "number"

    def __init__(self, bits: int) -> None:
        self.bits = bits

    def convert(self, value, param, ctx):  # type: ignore[override]
        if isinstance(value, int):
            number = value
        else:
            text = str(value).strip()
            try:
                number = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
            except ValueError:
                self.fail(f"{value!r} is not a number (expected decimal or 0x-hex)", param, ctx)
        limit = (1 << self.bits) - 1
        if not 0 <= number <= limit:
            self.fail(f"{value} is out of range (expected 0..0x{limit:X}, a {self.bits}-bit value)", param, ctx)
        return number


U8 = Number(8)
U16 = Number(16)
U32 = Number(32)
