"""Install codes: the random code printed on a Smart Energy device, its CRC, and the link key derived from it.

A code is 6, 8, 12 or 16 random bytes (Smart Energy allows all four; Zigbee 3.0 only 16), followed by a
CRC-16/X-25 of the code sent least significant byte first. The preconfigured link key that protects the joining
device's network-key transport is the AES-MMO hash of the code together with its CRC (Silicon Labs AN1089
"Using Installation Codes with Zigbee Devices", Zigbee specification 05-3474 Annex B.6 hash). The key-transport
and key-load keys the APS sublayer actually encrypts with are the keyed hash of that link key with the single
input byte 0x00 or 0x02 (05-3474 Annex B.1.4, §4.4 APS security).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from emulator.errors import InputError
from emulator.security.mmo import hmac_mmo, mmo_hash

CODE_LENGTHS = (6, 8, 12, 16)
CRC_LENGTH = 2
_SEPARATORS = re.compile(r"[\s:\-_.]")


class InstallCodeError(InputError):
    """An install code that is not 6, 8, 12 or 16 hex bytes, or whose CRC does not match."""


def crc16_x25(data: bytes) -> int:
    """CRC-16/X-25 (also IBM-SDLC): reflected polynomial 0x8408, init 0xFFFF, final xor 0xFFFF; check 0x906E."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def key_transport_key(link_key: bytes) -> bytes:
    """The key that protects APS Transport-Key commands under `link_key` (key id 2): HMAC-MMO(link key, 0x00)."""
    return hmac_mmo(link_key, b"\x00")


def key_load_key(link_key: bytes) -> bytes:
    """The key that protects APS commands carrying application link keys (key id 3): HMAC-MMO(link key, 0x02)."""
    return hmac_mmo(link_key, b"\x02")


@dataclass(frozen=True, slots=True)
class InstallCode:
    """An install code without its CRC; `.crc`, `.with_crc` and the derived link key `.key` follow from it."""

    code: bytes

    def __post_init__(self) -> None:
        if len(self.code) not in CODE_LENGTHS:
            raise InstallCodeError(
                f"install code of {len(self.code)} bytes (expected 6, 8, 12 or 16 bytes, not counting the CRC)"
            )

    @property
    def crc(self) -> int:
        return crc16_x25(self.code)

    @property
    def with_crc(self) -> bytes:
        """The code followed by its CRC, least significant byte first: what devices print and stacks store."""
        return self.code + self.crc.to_bytes(CRC_LENGTH, "little")

    @property
    def key(self) -> bytes:
        """The preconfigured link key: AES-MMO over the code and its two CRC bytes."""
        return mmo_hash(self.with_crc)

    @classmethod
    def from_bytes(cls, data: bytes, *, has_crc: bool | None = None) -> InstallCode:
        """A code given as bytes, with its CRC (8, 10, 14 or 18 bytes; the CRC is checked) or without (6, 8, 12 or
        16). Eight bytes are either: with `has_crc` unset they are read as a 6-byte code and CRC when that CRC
        matches, else as an 8-byte code."""
        if has_crc is None:
            has_crc = len(data) in (10, 14, 18) or (len(data) == 8 and _crc_matches(data))
        if not has_crc:
            return cls(bytes(data))
        body, tail = data[:-CRC_LENGTH], data[-CRC_LENGTH:]
        if len(body) not in CODE_LENGTHS:
            raise InstallCodeError(
                f"install code with CRC of {len(data)} bytes (expected 8, 10, 14 or 18 bytes: 6, 8, 12 or 16 plus 2)"
            )
        code = cls(bytes(body))
        if tail != code.with_crc[-CRC_LENGTH:]:
            raise InstallCodeError(
                f"install code CRC is {tail.hex().upper()} but the code's CRC-16/X-25 is "
                f"{code.with_crc[-CRC_LENGTH:].hex().upper()} (expected the CRC least significant byte first)"
            )
        return code

    @classmethod
    def parse(cls, text: str, *, has_crc: bool | None = None) -> InstallCode:
        """A code written as hex, with or without its CRC; spaces, colons, dashes, dots and underscores between
        digits are ignored ("83FE D340 7A93 9723 A5C6 39B2 6916 D505 C3B5")."""
        digits = _SEPARATORS.sub("", text.strip())
        if digits[:2].lower() == "0x":
            digits = digits[2:]
        try:
            data = bytes.fromhex(digits)
        except ValueError:
            raise InstallCodeError(
                f"install code {text!r} is not hex (expected 12, 16, 24 or 32 hex digits, optionally with the CRC)"
            ) from None
        if len(data) not in (*CODE_LENGTHS, 10, 14, 18):
            raise InstallCodeError(
                f"install code {text!r} has {len(data)} bytes "
                "(expected 6, 8, 12 or 16 bytes, or 8, 10, 14 or 18 with the CRC)"
            )
        return cls.from_bytes(data, has_crc=has_crc)


def _crc_matches(data: bytes) -> bool:
    return crc16_x25(data[:-CRC_LENGTH]).to_bytes(CRC_LENGTH, "little") == data[-CRC_LENGTH:]
