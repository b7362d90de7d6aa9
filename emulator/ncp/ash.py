"""ASH framing (Silicon Labs UG101, "UART-EZSP Gecko Protocol Reference"): pure bytes in, frames out.

ASH carries EZSP frames over a UART. Every frame is `control byte + data + CRC-CCITT (big-endian)`, byte-stuffed
so that the six reserved bytes never appear inside it, and terminated by a Flag byte. DATA payloads are XORed
with a fixed pseudo-random sequence so that long runs of equal bytes (which upset some UARTs) become unlikely.

This module knows nothing of timers, sockets or sequence windows: `ash_protocol` builds the NCP's side of the
link on top of it. Written from UG101; bellows' host implementation is only used as a peer in the tests.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

from emulator.errors import InputError

FLAG = 0x7E  # ends a frame
ESCAPE = 0x7D  # the next byte is XORed with 0x20
XON = 0x11
XOFF = 0x13
SUBSTITUTE = 0x18  # a UART error replaced a byte: the frame is bad
CANCEL = 0x1A  # discard everything since the last Flag

RESERVED = frozenset({FLAG, ESCAPE, XON, XOFF, SUBSTITUTE, CANCEL})
ESCAPE_XOR = 0x20
_FLAG_BYTE = bytes([FLAG])
_ESCAPE_BYTE = bytes([ESCAPE])
_RESERVED_RE = re.compile(b"[" + re.escape(bytes(sorted(RESERVED))) + b"]")
# Bytes that change how the receiver reads the stream (other than Flag and Escape): rare, handled byte by byte.
_STREAM_CONTROL_RE = re.compile(b"[" + re.escape(bytes([XON, XOFF, SUBSTITUTE, CANCEL])) + b"]")

ASH_VERSION = 0x02

# A DATA frame carries one EZSP frame: at least the legacy 3-byte header, at most EZSP_MAX_FRAME_LENGTH (200)
# bytes. The longest ASH frame is such a DATA frame with its control byte and CRC.
MIN_DATA_LEN = 3
MAX_DATA_LEN = 200
MAX_FRAME_LEN = 1 + MAX_DATA_LEN + 2

# Reset and error codes carried by RSTACK and ERROR (UG101 Table 4, EmberZNet reset reasons).
RESET_UNKNOWN = 0x00
RESET_EXTERNAL = 0x01
RESET_POWER_ON = 0x02
RESET_WATCHDOG = 0x03
RESET_ASSERT = 0x06
RESET_BOOTLOADER = 0x09
RESET_SOFTWARE = 0x0B
ERROR_EXCEEDED_MAXIMUM_ACK_TIMEOUT_COUNT = 0x51


class AshError(InputError):
    """A frame that cannot be accepted. `data_like` says whether its control byte claims a DATA frame, which
    decides whether the receiver answers with a NAK (UG101 §3.4: only DATA frames are rejected)."""

    def __init__(self, message: str, *, data_like: bool = False) -> None:
        super().__init__(message)
        self.data_like = data_like


class BadCrc(AshError):
    pass


class BadFrame(AshError):
    pass


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc_ccitt_table(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-CCITT: polynomial x^16 + x^12 + x^5 + 1, initial value 0xFFFF, no reflection, no final XOR, as UG101
    gives it, one table step per byte."""
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[(crc >> 8) ^ byte]
    return crc


def crc_ccitt(data: bytes, crc: int = 0xFFFF) -> int:
    """The same CRC from the standard library's C implementation (`binascii.crc_hqx` is CRC-CCITT with the
    polynomial 0x1021, unreflected); the tests hold it equal to `crc_ccitt_table`."""
    return binascii.crc_hqx(data, crc)


def pseudo_random_sequence(length: int) -> bytes:
    """UG101 §4.3: an 8-bit LFSR seeded with 0x42; shift right, and XOR with 0xB8 when the bit shifted out is 1."""
    out = bytearray()
    rand = 0x42
    for _ in range(length):
        out.append(rand)
        rand = (rand >> 1) ^ (0xB8 if rand & 1 else 0)
    return bytes(out)


_RANDOM = pseudo_random_sequence(256)
# The sequence as one big integer per length: XOR of two integers is one C operation instead of a byte loop.
_RANDOM_INTS = tuple(int.from_bytes(_RANDOM[:n], "big") for n in range(len(_RANDOM) + 1))


def randomize(data: bytes) -> bytes:
    """XOR `data` with the pseudo-random sequence; applying it twice gives the data back."""
    length = len(data)
    if length > len(_RANDOM):
        raise BadFrame(f"ASH DATA field of {length} bytes: expected at most {len(_RANDOM)}", data_like=True)
    return (int.from_bytes(data, "big") ^ _RANDOM_INTS[length]).to_bytes(length, "big")


def _escaped(match: re.Match[bytes]) -> bytes:
    return bytes((ESCAPE, match[0][0] ^ ESCAPE_XOR))


def stuff(raw: bytes) -> bytes:
    """Escape every reserved byte (Escape, then the byte XOR 0x20)."""
    return _RESERVED_RE.sub(_escaped, raw)


def unstuff(stuffed: bytes) -> bytes:
    if ESCAPE not in stuffed:
        return bytes(stuffed)
    first, *escaped = bytes(stuffed).split(_ESCAPE_BYTE)
    out = bytearray(first)
    last = len(escaped) - 1
    for index, part in enumerate(escaped):
        if not part:
            if index == last:
                raise BadFrame("ASH frame ends with an escape byte: expected the escaped byte to follow")
            raise BadFrame(f"ASH escape followed by 0x{ESCAPE:02X}: expected an escaped reserved byte")
        value = part[0] ^ ESCAPE_XOR
        if value not in RESERVED:
            raise BadFrame(f"ASH escape followed by 0x{part[0]:02X}: expected an escaped reserved byte")
        out.append(value)
        out += part[1:]
    return bytes(out)


# -- frames ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Data:
    """`0 fff r aaa`: frame number, retransmission flag, acknowledgement number (next frame expected)."""

    frm_num: int
    ack_num: int
    payload: bytes
    re_tx: bool = False


@dataclass(frozen=True)
class Ack:
    """`100 0 n aaa`: everything before `ack_num` is received; `not_ready` asks the peer to hold its DATA."""

    ack_num: int
    not_ready: bool = False


@dataclass(frozen=True)
class Nak:
    """`101 0 n aaa`: frame `ack_num` arrived damaged or out of sequence; resend from there."""

    ack_num: int
    not_ready: bool = False


@dataclass(frozen=True)
class Rst:
    """0xC0, sent by the host: reset the NCP."""


@dataclass(frozen=True)
class RstAck:
    """0xC1, sent by the NCP after every reset, solicited or not."""

    reset_code: int
    version: int = ASH_VERSION


@dataclass(frozen=True)
class Error:
    """0xC2, sent by the NCP when it enters the FAILED state; only an RST gets it out."""

    code: int
    version: int = ASH_VERSION


Frame = Data | Ack | Nak | Rst | RstAck | Error


def _check_seq(name: str, value: int) -> None:
    if not 0 <= value <= 7:
        raise ValueError(f"{name} must be a 3-bit sequence number, got {value}")


def control_byte(frame: Frame) -> int:
    if isinstance(frame, Data):
        _check_seq("frm_num", frame.frm_num)
        _check_seq("ack_num", frame.ack_num)
        return (frame.frm_num << 4) | (int(frame.re_tx) << 3) | frame.ack_num
    if isinstance(frame, Ack | Nak):
        _check_seq("ack_num", frame.ack_num)
        return (0x80 if isinstance(frame, Ack) else 0xA0) | (int(frame.not_ready) << 3) | frame.ack_num
    if isinstance(frame, Rst):
        return 0xC0
    if isinstance(frame, RstAck):
        return 0xC1
    return 0xC2


def data_raw(frm_num: int, ack_num: int, payload: bytes, re_tx: bool = False) -> bytes:
    """`to_raw` of a DATA frame, without building the frame first (the link sends one per EZSP frame)."""
    if not (0 <= frm_num <= 7 and 0 <= ack_num <= 7):
        raise ValueError(f"frm_num {frm_num} and ack_num {ack_num} must be 3-bit sequence numbers")
    if not MIN_DATA_LEN <= len(payload) <= MAX_DATA_LEN:
        raise ValueError(f"EZSP frame of {len(payload)} bytes: ASH carries {MIN_DATA_LEN}..{MAX_DATA_LEN}")
    body = bytes([(frm_num << 4) | (re_tx << 3) | ack_num]) + randomize(payload)
    return body + crc_ccitt(body).to_bytes(2, "big")


def to_raw(frame: Frame) -> bytes:
    """Control byte, data field and CRC: the frame before byte stuffing."""
    if isinstance(frame, Data):
        return data_raw(frame.frm_num, frame.ack_num, frame.payload, frame.re_tx)
    body = bytes([control_byte(frame)])
    if isinstance(frame, RstAck):
        body += bytes([frame.version, frame.reset_code])
    elif isinstance(frame, Error):
        body += bytes([frame.version, frame.code])
    return body + crc_ccitt(body).to_bytes(2, "big")


# `to_raw` of every ACK, indexed by ack_num | not_ready << 3.
ACK_RAW = tuple(to_raw(Ack(ack_num=n & 7, not_ready=bool(n & 8))) for n in range(16))


def encode(frame: Frame) -> bytes:
    """The bytes that go on the wire: stuffed frame plus Flag."""
    return stuff(to_raw(frame)) + bytes([FLAG])


def decode(raw: bytes) -> Frame:
    """Parse an unstuffed frame (control, data, CRC) and check its CRC and length."""
    if not raw:
        raise BadFrame("empty ASH frame: expected a control byte and a CRC")
    control = raw[0]
    data_like = control & 0x80 == 0
    if len(raw) < 3:
        raise BadFrame(f"ASH frame {raw.hex()} is {len(raw)} bytes: expected at least 3", data_like=data_like)
    body, crc = raw[:-2], int.from_bytes(raw[-2:], "big")
    if crc_ccitt(body) != crc:
        raise BadCrc(
            f"ASH frame {raw.hex()} has CRC 0x{crc:04X}: expected 0x{crc_ccitt(body):04X}", data_like=data_like
        )
    data = body[1:]
    if data_like:
        if not MIN_DATA_LEN <= len(data) <= MAX_DATA_LEN:
            raise BadFrame(
                f"ASH DATA field of {len(data)} bytes: expected {MIN_DATA_LEN}..{MAX_DATA_LEN}", data_like=True
            )
        return Data(
            frm_num=(control >> 4) & 7, re_tx=bool(control & 0x08), ack_num=control & 7, payload=randomize(data)
        )
    if control & 0xE0 in (0x80, 0xA0):
        if data:
            raise BadFrame(f"ASH ACK/NAK frame {raw.hex()} carries data: expected none")
        cls = Ack if control & 0xE0 == 0x80 else Nak
        return cls(ack_num=control & 7, not_ready=bool(control & 0x08))
    if control == 0xC0:
        if data:
            raise BadFrame(f"ASH RST frame {raw.hex()} carries data: expected none")
        return Rst()
    if control in (0xC1, 0xC2):
        if len(data) != 2:
            raise BadFrame(f"ASH RSTACK/ERROR frame {raw.hex()}: expected version and code")
        return RstAck(reset_code=data[1], version=data[0]) if control == 0xC1 else Error(code=data[1], version=data[0])
    raise BadFrame(f"ASH control byte 0x{control:02X}: expected DATA, ACK, NAK, RST, RSTACK or ERROR")


@dataclass(frozen=True)
class FramingError:
    """Bytes that did not make a frame: cancelled, marked bad by a Substitute byte, too long, or badly escaped."""

    reason: str
    data_like: bool = False


BAD_OR_TOO_LONG = "frame marked bad by a Substitute byte or too long"


class Deframer:
    """Splits a byte stream into unstuffed frames (UG101 §4.2), keeping partial frames between calls."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._discarding = False  # a Substitute byte or an overflow spoiled the frame in progress

    def feed(self, data: bytes) -> list[bytes | FramingError]:
        """The frames that `data` completes, in order. Streams without Cancel, Substitute, XON or XOFF bytes (all
        a healthy link carries) are split at each Flag; the others are read byte by byte."""
        if _STREAM_CONTROL_RE.search(data):
            return self.feed_bytes(data)
        out: list[bytes | FramingError] = []
        *complete, rest = bytes(data).split(_FLAG_BYTE)
        for piece in complete:
            stuffed = bytes(self._buffer) + piece if self._buffer else piece
            self._buffer.clear()
            if self._discarding or len(stuffed) > 2 * MAX_FRAME_LEN:
                self._discarding = False
                out.append(FramingError(BAD_OR_TOO_LONG))
            elif stuffed:
                out.append(self._finish(stuffed))
        if rest and not self._discarding:
            self._buffer += rest
            if len(self._buffer) > 2 * MAX_FRAME_LEN:  # even fully escaped, no frame is this long
                self._buffer.clear()
                self._discarding = True
        return out

    def feed_bytes(self, data: bytes) -> list[bytes | FramingError]:
        """`feed`, one byte at a time, as UG101 §4.2 describes the receiver."""
        out: list[bytes | FramingError] = []
        for byte in data:
            if byte in (XON, XOFF):
                continue  # software flow control is not used; the bytes carry no data
            if byte == CANCEL:
                self._buffer.clear()
                self._discarding = False
                continue
            if byte == SUBSTITUTE:
                self._buffer.clear()
                self._discarding = True
                continue
            if byte == FLAG:
                if self._discarding:
                    self._discarding = False
                    out.append(FramingError(BAD_OR_TOO_LONG))
                elif self._buffer:
                    out.append(self._finish(bytes(self._buffer)))
                self._buffer.clear()
                continue
            if self._discarding:
                continue
            self._buffer.append(byte)
            if len(self._buffer) > 2 * MAX_FRAME_LEN:  # even fully escaped, no frame is this long
                self._buffer.clear()
                self._discarding = True
        return out

    @staticmethod
    def _finish(stuffed: bytes) -> bytes | FramingError:
        try:
            raw = unstuff(stuffed)
        except AshError as exc:
            return FramingError(str(exc), data_like=stuffed[0] & 0x80 == 0)
        if len(raw) > MAX_FRAME_LEN:
            return FramingError(f"frame of {len(raw)} bytes: expected at most {MAX_FRAME_LEN}", raw[0] & 0x80 == 0)
        return raw
