"""The GBCS general-signing frame around the firmware messages: build, sign, parse, verify.

Layout, read byte by byte off the DCC RTDS 4.5.0 vectors (SPEC.md §8.3; gbcs-parser parser.ts agrees)::

    DF                                general-signing tag
    09 CC NNNNNNNNNNNNNNNN            transaction id: CRA flag (1 command, 2 response, 3 alert)
                                      + 8-byte originator counter, big-endian
    08 OOOOOOOOOOOOOOOO               originator id (EUI-64, most significant byte first)
    08 RRRRRRRRRRRRRRRR               recipient id
    00 | 0C <12 bytes>                date-time: absent, or a DLMS date-time (below)
    LL MMMM [SSSSSSSSSSSSSSSS         other-information: message code, then optionally the supplementary
             [KKKKKKKKKKKKKKKK]]      remote party id and its 8-byte counter (length 2, 10 or 18)
    LL <DER content>                  content (messages.py); LL is 1 byte, or 81 nn / 82 nnnn
    40 <64 bytes> | 00                signature r‖s, or 00 for an unsigned frame

The signature is ECDSA P-256/SHA-256 over every byte after the DF up to, not including, the signature length
byte: CCS08 and CS09 verify with the CHF (…A2) and PPMID (…A4) certificates, the CS06 responses and 0x00CA
alerts with the ESME (…A0) certificate, the CS06 command with the supplier's (90B3D51F30010000).

The DLMS date-time (present in the CS06 responses): year (2 bytes), month, day, day-of-week (FF), hour,
minute, second, hundredths, deviation (2 bytes, 8000 = unspecified), clock status (FF). GB runs on UTC, so a
deviation other than unspecified or zero is rejected; frames built here write FF / 8000 / FF like the vectors.

Commands to a device and the CS08 responses travel inside a general-ciphering wrapper that adds a MAC::

    DD 00 00 00 00 00 00              tag; empty transaction-id, system titles, date-time and other-information;
                                      key-info absent
    LL                                ciphered-content length (81 9C in the CS06 command vector)
    11                                security control: authenticated, not encrypted
    00000000                          invocation counter
    DF ...                            the general-signing frame above, in clear
    <12 bytes>                        MAC (AES-GCM tag under a key agreed by ECDH: not checkable here)

Inside it the general-signing frame may be unsigned (CS08 responses end `00` + MAC): `signature` is then None
and `verify` answers False, so callers report "no signature" rather than an error. Encrypted content (any other
security control) cannot be read without the recipient's key and is rejected.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import zigpy.types as t

from emulator import keys
from emulator.gb.codes import MESSAGE_TITLES, CraFlag, MessageCode
from emulator.gb.messages import (
    EUI64_LENGTH,
    MESSAGE_TYPES,
    GbcsError,
    GbcsMessage,
    check_counter,
    check_eui64,
    check_utc,
    eui64_octets,
)

GENERAL_SIGNING = 0xDF
GENERAL_CIPHERING = 0xDD
TRANSACTION_ID_LENGTH = 9
DATE_TIME_LENGTH = 12
MAC_LENGTH = 12
SECURITY_CONTROL_AUTHENTICATED = 0x11
_CIPHERING_EMPTY_FIELDS = bytes(6)
_INVOCATION_COUNTER_LENGTH = 4
_OTHER_INFO_LENGTHS = (2, 2 + EUI64_LENGTH, 2 + 2 * EUI64_LENGTH)
_MAX_LENGTH_OCTETS = 3
_DEVIATION_UNSPECIFIED = 0x8000
_UNSPECIFIED = 0xFF
_HUNDREDTHS_PER_SECOND = 100


@dataclass(frozen=True)
class GbcsFrame:
    """One general-signing frame. `signed_data` and `raw` are the bytes as received (empty for a frame built
    here); `mac` and `invocation_counter` are set when the frame came inside a general-ciphering wrapper."""

    cra_flag: CraFlag
    originator_counter: int
    originator_id: t.EUI64
    recipient_id: t.EUI64
    message_code: int
    content: bytes
    date_time: datetime | None = None
    supplementary_remote_party_id: t.EUI64 | None = None
    supplementary_remote_party_counter: int | None = None
    signature: bytes | None = None
    mac: bytes | None = None
    invocation_counter: int | None = None
    signed_data: bytes = field(default=b"", repr=False, compare=False)
    raw: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.cra_flag not in set(CraFlag):
            raise GbcsError(f"CRA flag is {self.cra_flag!r}, expected 1 (command), 2 (response) or 3 (alert)")
        object.__setattr__(self, "cra_flag", CraFlag(self.cra_flag))
        check_counter(self.originator_counter, "originator counter")
        object.__setattr__(self, "originator_id", check_eui64(self.originator_id, "originator id"))
        object.__setattr__(self, "recipient_id", check_eui64(self.recipient_id, "recipient id"))
        if not isinstance(self.message_code, int) or not 0 <= self.message_code <= 0xFFFF:
            raise GbcsError(f"message code is {self.message_code!r}, expected 0..0xFFFF")
        if self.message_code in set(MessageCode):
            object.__setattr__(self, "message_code", MessageCode(self.message_code))
        if not isinstance(self.content, bytes):
            raise GbcsError(f"content is {type(self.content).__name__}, expected bytes")
        if self.date_time is not None:
            object.__setattr__(self, "date_time", check_utc(self.date_time, "date-time"))
        if self.supplementary_remote_party_id is not None:
            sid = check_eui64(self.supplementary_remote_party_id, "supplementary remote party id")
            object.__setattr__(self, "supplementary_remote_party_id", sid)
        if self.supplementary_remote_party_counter is not None:
            if self.supplementary_remote_party_id is None:
                raise GbcsError("supplementary remote party counter given without a supplementary remote party id")
            check_counter(self.supplementary_remote_party_counter, "supplementary remote party counter")
        if self.signature is not None and len(self.signature) != keys.SIGNATURE_LENGTH:
            raise GbcsError(f"signature is {len(self.signature)} bytes, expected {keys.SIGNATURE_LENGTH}")

    def encode_signed_data(self) -> bytes:
        """The bytes the signature covers, re-built from the fields (what `build_signed` signs)."""
        other = self.message_code.to_bytes(2, "big")
        if self.supplementary_remote_party_id is not None:
            other += eui64_octets(self.supplementary_remote_party_id)
        if self.supplementary_remote_party_counter is not None:
            other += self.supplementary_remote_party_counter.to_bytes(8, "big")
        return b"".join(
            (
                bytes([TRANSACTION_ID_LENGTH, self.cra_flag]),
                self.originator_counter.to_bytes(8, "big"),
                bytes([EUI64_LENGTH]),
                eui64_octets(self.originator_id),
                bytes([EUI64_LENGTH]),
                eui64_octets(self.recipient_id),
                _encode_date_time(self.date_time),
                _encode_length(len(other)),
                other,
                _encode_length(len(self.content)),
                self.content,
            )
        )

    def encode(self) -> bytes:
        """The general-signing frame (without any general-ciphering wrapper it arrived in)."""
        trailer = b"\x00" if self.signature is None else _encode_length(len(self.signature)) + self.signature
        return bytes([GENERAL_SIGNING]) + self.encode_signed_data() + trailer


def build_signed(
    *,
    cra_flag: CraFlag,
    originator_counter: int,
    originator_id: t.EUI64 | bytes,
    recipient_id: t.EUI64 | bytes,
    message_code: int,
    content: bytes,
    key: keys.PrivateKey,
    date_time: datetime | None = None,
    supplementary_remote_party_id: t.EUI64 | bytes | None = None,
    supplementary_remote_party_counter: int | None = None,
) -> bytes:
    """A general-signing frame carrying `content`, signed with `key`."""
    supplementary_id = (
        None
        if supplementary_remote_party_id is None
        else check_eui64(supplementary_remote_party_id, "supplementary remote party id")
    )
    frame = GbcsFrame(
        cra_flag=cra_flag,
        originator_counter=originator_counter,
        originator_id=check_eui64(originator_id, "originator id"),
        recipient_id=check_eui64(recipient_id, "recipient id"),
        message_code=message_code,
        content=content,
        date_time=date_time,
        supplementary_remote_party_id=supplementary_id,
        supplementary_remote_party_counter=supplementary_remote_party_counter,
    )
    return replace(frame, signature=keys.sign(key, frame.encode_signed_data())).encode()


def sign_message(
    message: GbcsMessage,
    *,
    originator_counter: int,
    originator_id: t.EUI64 | bytes,
    recipient_id: t.EUI64 | bytes,
    key: keys.PrivateKey,
    date_time: datetime | None = None,
) -> bytes:
    """A signed frame for one of our messages; its class supplies the message code and CRA flag."""
    return build_signed(
        cra_flag=message.CRA_FLAG,
        originator_counter=originator_counter,
        originator_id=originator_id,
        recipient_id=recipient_id,
        message_code=message.MESSAGE_CODE,
        content=message.encode(),
        key=key,
        date_time=date_time,
    )


def verify(frame: GbcsFrame, public_key: keys.PublicKey) -> bool:
    """True when the frame carries a signature that `public_key` verifies; False when unsigned or forged.
    A received frame is checked over the bytes as received, not over a re-encoding."""
    if frame.signature is None:
        return False
    return keys.verify(public_key, frame.signed_data or frame.encode_signed_data(), frame.signature)


def decode_message(frame: GbcsFrame, source: str = "GBCS message") -> GbcsMessage:
    """The typed content, chosen by message code and CRA flag."""
    message_type = MESSAGE_TYPES.get((frame.message_code, frame.cra_flag))
    if message_type is not None:
        return message_type.decode(frame.content, f"{source}: content")
    if isinstance(frame.message_code, MessageCode):
        allowed = " or ".join(cra.name.lower() for code, cra in MESSAGE_TYPES if code == frame.message_code)
        raise GbcsError(
            f"{source}: message code 0x{frame.message_code:04X} ({MESSAGE_TITLES[frame.message_code]}) "
            f"with CRA flag {frame.cra_flag.name.lower()}, expected {allowed}"
        )
    known = ", ".join(f"0x{code:04X}" for code in MessageCode)
    raise GbcsError(f"{source}: message code 0x{frame.message_code:04X} is not a firmware message (expected {known})")


def bytes_from_hex(text: str, source: str = "hex") -> bytes:
    """Hex text as printed in the RTDS files and logs: whitespace anywhere is ignored."""
    digits = "".join(text.split())
    for position, char in enumerate(digits):
        if char not in string.hexdigits:
            raise GbcsError(f"{source}: {char!r} at hex digit {position} is not a hex digit (expected hex text)")
    if len(digits) % 2:
        raise GbcsError(f"{source}: odd number of hex digits ({len(digits)}), expected whole bytes")
    if not digits:
        raise GbcsError(f"{source}: no hex digits, expected a GBCS message in hex")
    return bytes.fromhex(digits)


def parse(data: bytes, source: str = "GBCS message") -> GbcsFrame:
    """Parse a general-signing frame, bare or inside a general-ciphering wrapper. Only the frame structure is
    checked here; `decode_message` checks the content and `verify` the signature."""
    reader = _Reader(data, source, 0, len(data))
    tag = reader.peek("frame tag")
    if tag == GENERAL_SIGNING:
        frame = _parse_signing(reader)
        reader.expect_end("after the signature")
        return replace(frame, raw=bytes(data))
    if tag == GENERAL_CIPHERING:
        return replace(_parse_ciphering(reader), raw=bytes(data))
    raise GbcsError(
        f"{source}: first byte is 0x{tag:02X}, expected 0x{GENERAL_SIGNING:02X} (general signing) "
        f"or 0x{GENERAL_CIPHERING:02X} (general ciphering)"
    )


class _Reader:
    """Walks a byte range; every shortfall or surplus becomes a GbcsError naming the byte offset."""

    def __init__(self, data: bytes, source: str, start: int, end: int) -> None:
        self.data, self.source, self.pos, self.end = data, source, start, end

    def fail(self, message: str, at: int | None = None) -> GbcsError:
        return GbcsError(f"{self.source}: byte {self.pos if at is None else at}: {message}")

    def take(self, count: int, what: str) -> bytes:
        if self.pos + count > self.end:
            raise GbcsError(
                f"{self.source}: truncated at byte {self.pos}: {what} needs {count} bytes, {self.end - self.pos} left"
            )
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def peek(self, what: str) -> int:
        if self.pos >= self.end:
            raise GbcsError(f"{self.source}: truncated at byte {self.pos}: {what} missing")
        return self.data[self.pos]

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def expect(self, value: int, what: str) -> None:
        got = self.peek(what)
        if got != value:
            raise self.fail(f"{what} is 0x{got:02X}, expected 0x{value:02X}")
        self.pos += 1

    def length(self, what: str) -> int:
        """A GBCS length: one byte below 0x80, else 0x8N followed by N (1..3) big-endian length bytes."""
        at = self.pos
        first = self.byte(what)
        if first < 0x80:
            return first
        octets = first & 0x7F
        if not 1 <= octets <= _MAX_LENGTH_OCTETS:
            raise self.fail(f"{what} starts 0x{first:02X}, expected a length (< 0x80, or 0x81..0x83)", at)
        return int.from_bytes(self.take(octets, what), "big")

    def expect_end(self, where: str) -> None:
        if self.pos != self.end:
            raise self.fail(f"{self.end - self.pos} unexpected bytes {where}")


def _parse_ciphering(reader: _Reader) -> GbcsFrame:
    reader.expect(GENERAL_CIPHERING, "general-ciphering tag")
    at = reader.pos
    if reader.take(len(_CIPHERING_EMPTY_FIELDS), "general-ciphering header") != _CIPHERING_EMPTY_FIELDS:
        raise reader.fail("general-ciphering header fields are not empty, expected DD 00 00 00 00 00 00", at)
    length = reader.length("ciphered-content length")
    if reader.pos + length > reader.end:
        raise GbcsError(
            f"{reader.source}: truncated: ciphered content declares {length} bytes at byte {reader.pos}, "
            f"{reader.end - reader.pos} left"
        )
    if reader.pos + length < reader.end:
        raise reader.fail(f"{reader.end - reader.pos - length} unexpected bytes after the MAC", reader.pos + length)
    at = reader.pos
    control = reader.byte("security control")
    if control != SECURITY_CONTROL_AUTHENTICATED:
        raise reader.fail(
            f"security control is 0x{control:02X}, expected 0x{SECURITY_CONTROL_AUTHENTICATED:02X} "
            "(authenticated, not encrypted; encrypted content needs the recipient's key)",
            at,
        )
    invocation_counter = int.from_bytes(reader.take(_INVOCATION_COUNTER_LENGTH, "invocation counter"), "big")
    if reader.end - reader.pos < MAC_LENGTH:
        raise GbcsError(f"{reader.source}: truncated at byte {reader.pos}: no room for the 12-byte MAC")
    inner = _Reader(reader.data, reader.source, reader.pos, reader.end - MAC_LENGTH)
    tag = inner.peek("general-signing tag")
    if tag != GENERAL_SIGNING:
        raise inner.fail(f"general-signing tag is 0x{tag:02X}, expected 0x{GENERAL_SIGNING:02X}")
    frame = _parse_signing(inner)
    inner.expect_end("between the signature and the MAC")
    reader.pos = inner.pos
    mac = reader.take(MAC_LENGTH, "MAC")
    return replace(frame, mac=mac, invocation_counter=invocation_counter)


def _parse_signing(reader: _Reader) -> GbcsFrame:
    reader.expect(GENERAL_SIGNING, "general-signing tag")
    signed_start = reader.pos
    reader.expect(TRANSACTION_ID_LENGTH, "transaction-id length")
    at = reader.pos
    cra_flag = reader.byte("CRA flag")
    if cra_flag not in set(CraFlag):
        raise reader.fail(f"CRA flag is 0x{cra_flag:02X}, expected 1 (command), 2 (response) or 3 (alert)", at)
    originator_counter = int.from_bytes(reader.take(8, "originator counter"), "big")
    reader.expect(EUI64_LENGTH, "originator id length")
    originator_id = reader.take(EUI64_LENGTH, "originator id")
    reader.expect(EUI64_LENGTH, "recipient id length")
    recipient_id = reader.take(EUI64_LENGTH, "recipient id")
    date_time = _parse_date_time(reader)
    at = reader.pos
    other_length = reader.length("other-information length")
    if other_length not in _OTHER_INFO_LENGTHS:
        raise reader.fail(
            f"other-information length is {other_length}, expected 2 (message code), 10 or 18 "
            "(plus supplementary remote party id and counter)",
            at,
        )
    other = reader.take(other_length, "other-information")
    content = reader.take(reader.length("content length"), "content")
    signed_end = reader.pos
    signature_length = reader.length("signature length")
    if signature_length not in (0, keys.SIGNATURE_LENGTH):
        raise reader.fail(
            f"signature length is {signature_length}, expected {keys.SIGNATURE_LENGTH} (or 0 when unsigned)",
            signed_end,
        )
    signature = reader.take(signature_length, "signature") if signature_length else None
    return GbcsFrame(
        cra_flag=CraFlag(cra_flag),
        originator_counter=originator_counter,
        originator_id=check_eui64(originator_id, "originator id"),
        recipient_id=check_eui64(recipient_id, "recipient id"),
        message_code=int.from_bytes(other[:2], "big"),
        content=content,
        date_time=date_time,
        supplementary_remote_party_id=(
            check_eui64(other[2:10], "supplementary remote party id") if other[2:10] else None
        ),
        supplementary_remote_party_counter=int.from_bytes(other[10:], "big") if other[10:] else None,
        signature=signature,
        signed_data=reader.data[signed_start:signed_end],
    )


def _parse_date_time(reader: _Reader) -> datetime | None:
    at = reader.pos
    length = reader.byte("date-time length")
    if length == 0:
        return None
    if length != DATE_TIME_LENGTH:
        raise reader.fail(f"date-time length is {length}, expected 0 (absent) or {DATE_TIME_LENGTH}", at)
    at = reader.pos
    raw = reader.take(DATE_TIME_LENGTH, "date-time")
    year = int.from_bytes(raw[0:2], "big")
    month, day, _weekday, hour, minute, second, hundredths = raw[2:9]
    deviation = int.from_bytes(raw[9:11], "big")
    if deviation not in (0, _DEVIATION_UNSPECIFIED):
        raise reader.fail(f"date-time deviation is 0x{deviation:04X}, expected 0x8000 or 0 (GB time is UTC)", at)
    if hundredths == _UNSPECIFIED:
        hundredths = 0
    invalid = reader.fail(f"date-time {raw.hex().upper()} is not a valid DLMS date-time", at)
    if hundredths >= _HUNDREDTHS_PER_SECOND:
        raise invalid
    try:
        return datetime(year, month, day, hour, minute, second, hundredths * 10_000, tzinfo=UTC)
    except ValueError:
        raise invalid from None


def _encode_date_time(value: datetime | None) -> bytes:
    if value is None:
        return b"\x00"
    return bytes([DATE_TIME_LENGTH]) + b"".join(
        (
            value.year.to_bytes(2, "big"),
            bytes([value.month, value.day, _UNSPECIFIED, value.hour, value.minute, value.second]),
            bytes([value.microsecond // 10_000]),
            _DEVIATION_UNSPECIFIED.to_bytes(2, "big"),
            bytes([_UNSPECIFIED]),
        )
    )


def _encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    octets = (length.bit_length() + 7) // 8
    if octets > _MAX_LENGTH_OCTETS:
        raise GbcsError(f"field of {length} bytes is too long for a GBCS length")
    return bytes([0x80 | octets]) + length.to_bytes(octets, "big")
