"""EZSP frames (Silicon Labs UG100) for one protocol version: header codec and parameter (de)serialization.

Headers, written from UG100:
* legacy (the first `version` after every reset, and EZSP v4): `[sequence, frame control, frame ID (u8)]`;
* v5-v7 marked an extended header with `0xFF 0x00` after the frame control; this NCP speaks v8 and later, which
  has `[sequence, frame control low, frame control high, frame ID (u16 LE)]`, the high byte carrying the frame
  format version (1) in its low bits.
Frame control low byte, NCP to host: bit 7 set on every response; callbacks additionally carry callback type
"asynchronous" (0b10 in bits 4:3), so 0x90. Host to NCP the bit is clear.

Parameter layouts are taken from bellows' per-version command tables (`bellows.ezsp.v{N}.commands.COMMANDS`:
name -> (frame ID, host->NCP schema, NCP->host schema)), so one stack serves every version. The stack speaks one
status language, `sl_Status` (EmberZNet 8.x); versions up to 13 carry `EmberStatus`/`EzspStatus` on the wire
and the codec translates with the table below, written from UG100, not from bellows' own mapping.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import bellows.types as bt
import zigpy.types as zt

from emulator.errors import InputError
from emulator.ncp import fields

SUPPORTED_VERSIONS = (8, 13, 14)

FC_RESPONSE = 0x80
FC_ASYNC_CALLBACK = 0x10
FC_HIGH_FORMAT_V1 = 0x01
LEGACY_VERSION_FRAME_ID = 0x00
INVALID_COMMAND = "invalidCommand"

# EmberZNet release behind each protocol version: stackVersion nibbles major.minor.patch.special.
STACK_RELEASES = {8: (6, 7, 8, 0), 13: (7, 4, 5, 0), 14: (8, 0, 2, 0)}

_SL = bt.sl_Status
_EMBER = bt.EmberStatus
_EZSP = bt.EzspStatus

_SL_TO_EMBER = {
    _SL.OK: _EMBER.SUCCESS,
    _SL.FAIL: _EMBER.ERR_FATAL,
    _SL.INVALID_PARAMETER: _EMBER.BAD_ARGUMENT,
    _SL.NOT_FOUND: _EMBER.NOT_FOUND,
    _SL.INVALID_STATE: _EMBER.INVALID_CALL,
    _SL.MESSAGE_TOO_LONG: _EMBER.MESSAGE_TOO_LONG,
    _SL.ZIGBEE_DELIVERY_FAILED: _EMBER.DELIVERY_FAILED,
    _SL.INVALID_INDEX: _EMBER.INDEX_OUT_OF_RANGE,
    _SL.FULL: _EMBER.TABLE_FULL,
    _SL.NETWORK_UP: _EMBER.NETWORK_UP,
    _SL.NETWORK_DOWN: _EMBER.NETWORK_DOWN,
    _SL.NOT_JOINED: _EMBER.NOT_JOINED,
    _SL.NO_BEACONS: _EMBER.NO_BEACONS,
    _SL.MAC_NO_DATA: _EMBER.MAC_NO_DATA,
    _SL.ZIGBEE_NO_NETWORK_KEY_RECEIVED: _EMBER.NO_NETWORK_KEY_RECEIVED,
    _SL.ZIGBEE_APS_ENCRYPTION_ERROR: _EMBER.APS_ENCRYPTION_ERROR,
    _SL.INVALID_CONFIGURATION: _EMBER.SECURITY_DATA_INVALID,
}
_SL_TO_EZSP = {
    _SL.OK: _EZSP.SUCCESS,
    _SL.INVALID_PARAMETER: _EZSP.ERROR_INVALID_ID,
    _SL.INVALID_STATE: _EZSP.ERROR_INVALID_CALL,
    _SL.FAIL: _EZSP.ERROR_INVALID_VALUE,
}


class EzspFrameError(InputError):
    """A host frame the NCP answers with `invalidCommand(reason)`."""

    def __init__(self, message: str, *, seq: int, reason: bt.EzspStatus, legacy: bool) -> None:
        super().__init__(message)
        self.seq = seq
        self.reason = reason
        self.legacy = legacy


@dataclass(frozen=True)
class Command:
    seq: int
    frame_id: int
    name: str | None
    params: bytes
    legacy: bool


def load_commands(version: int) -> dict[str, tuple[int, Any, Any]]:
    if version not in SUPPORTED_VERSIONS:
        allowed = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        raise InputError(f"EZSP version {version}: expected one of {allowed}")
    commands: dict[str, tuple[int, Any, Any]] = importlib.import_module(f"bellows.ezsp.v{version}.commands").COMMANDS
    return commands


def stack_version_word(version: int) -> int:
    major, minor, patch, special = STACK_RELEASES[version]
    return (major << 12) | (minor << 8) | (patch << 4) | special


def convert_status(value: Any, target: type) -> Any:
    """Express a status in the type a field has in this protocol version."""
    if isinstance(value, target):
        return value
    if target is _EMBER:
        return _SL_TO_EMBER[value]
    if target is _EZSP:
        return _SL_TO_EZSP[value]
    return target(value)


def _fields(schema: Any) -> list[tuple[str, type]]:
    if isinstance(schema, dict):
        return list(schema.items())
    return [(f.name, f.type) for f in schema.fields]


def zero_value(type_: Any) -> Any:
    """The value a field takes when the stack has nothing to say: zero, empty, or all-zero structure."""
    if issubclass(type_, (_SL, _EMBER, _EZSP)):
        return type_(0)
    if issubclass(type_, zt.Struct):
        return type_(**{f.name: zero_value(f.type) for f in type_.fields if f.requires is None})
    if issubclass(type_, bytes):
        return type_(b"")
    if issubclass(type_, list):
        length = getattr(type_, "_length", None)
        if length is not None:
            return type_([zero_value(type_._item_type)] * length)
        return type_([])
    return type_(0)


@dataclass(frozen=True, slots=True)
class Layout:
    """One direction of one command, compiled (`fields`): names, readers, writers, and the bytes of a field
    the stack leaves out. `compiled` is False for the few layouts bellows gives as a structure rather than a
    list of fields; those go through zigpy."""

    frame_id: int
    schema: Any
    names: tuple[str, ...]
    readers: tuple[fields.Reader, ...]
    writers: tuple[fields.Writer, ...]
    zeros: tuple[bytes | None, ...]
    known: frozenset[str]
    compiled: bool

    @classmethod
    def of(cls, frame_id: int, schema: Any) -> Layout:
        pairs = _fields(schema)
        compiled = isinstance(schema, dict)
        return cls(
            frame_id,
            schema,
            tuple(name for name, _ in pairs),
            tuple(fields.reader(type_) for _, type_ in pairs) if compiled else (),
            tuple(_status_writer(type_) or fields.writer(type_) for _, type_ in pairs) if compiled else (),
            tuple(_zero_bytes(type_) for _, type_ in pairs) if compiled else (),
            frozenset(name for name, _ in pairs),
            compiled,
        )


def _zero_bytes(type_: type) -> bytes | None:
    """The bytes of `zero_value(type_)`, or None for a type that has no zero (it must then always be given)."""
    try:
        return bytes(zero_value(type_).serialize())
    except (TypeError, ValueError):
        return None


def _status_writer(type_: type) -> fields.Writer | None:
    """Statuses are given as sl_Status and written in the field's own status type."""
    if not issubclass(type_, (_SL, _EMBER, _EZSP)):
        return None
    size = type_._bits // 8  # type: ignore[attr-defined]

    def write_status(value: Any) -> bytes:
        return int.to_bytes(convert_status(value, type_), size, "little")

    return write_status


def _read(layout: Layout, data: bytes) -> tuple[dict[str, Any], int]:
    if not layout.compiled:
        struct, rest = layout.schema.deserialize(data)
        return struct.as_dict(), len(data) - len(rest)
    values: dict[str, Any] = {}
    at = 0
    for name, read in zip(layout.names, layout.readers, strict=True):
        values[name], at = read(data, at)
    return values, at


def _write(layout: Layout, values: dict[str, Any]) -> bytes:
    if not layout.compiled:
        typed = {}
        for name, type_ in _fields(layout.schema):
            if name in values:
                value = values[name]
                if issubclass(type_, (_SL, _EMBER, _EZSP)):
                    value = convert_status(value, type_)
                typed[name] = value if isinstance(value, type_) else type_(value)
        return bytes(layout.schema(**typed).serialize())
    out = []
    for name, write, zero in zip(layout.names, layout.writers, layout.zeros, strict=True):
        if name in values:
            out.append(write(values[name]))
        elif zero is not None:
            out.append(zero)
        else:
            raise KeyError(f"EZSP field {name} has no zero value: the stack must give it")
    return b"".join(out)


class EzspCodec:
    """Frames for one EZSP protocol version (8 or later)."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.commands = load_commands(version)
        self.by_id = {frame_id: name for name, (frame_id, _, _) in self.commands.items()}
        self._requests: dict[str, Layout] = {}
        self._answers: dict[str, Layout] = {}

    def request_layout(self, name: str) -> Layout:
        """What the host sends for command `name` (compiled on first use)."""
        layout = self._requests.get(name)
        if layout is None:
            frame_id, tx_schema, _ = self.commands[name]
            layout = self._requests[name] = Layout.of(frame_id, tx_schema)
        return layout

    def answer_layout(self, name: str) -> Layout:
        """What the NCP sends for response or callback `name` (compiled on first use)."""
        layout = self._answers.get(name)
        if layout is None:
            frame_id, _, rx_schema = self.commands[name]
            layout = self._answers[name] = Layout.of(frame_id, rx_schema)
        return layout

    # -- host -> NCP ----------------------------------------------------------------------------------------------

    def parse(self, frame: bytes) -> Command:
        if len(frame) < 3:
            raise EzspFrameError(
                f"EZSP frame {frame.hex()}: expected at least 3 bytes",
                seq=frame[0] if frame else 0,
                reason=_EZSP.ERROR_TRUNCATED,
                legacy=True,
            )
        seq, fc_lo = frame[0], frame[1]
        extended = frame[2] & 0x03 == FC_HIGH_FORMAT_V1
        if extended:
            if len(frame) < 5:
                raise EzspFrameError(
                    f"EZSP frame {frame.hex()}: expected a 5-byte extended header",
                    seq=seq,
                    reason=_EZSP.ERROR_TRUNCATED,
                    legacy=False,
                )
            frame_id, params = int.from_bytes(frame[3:5], "little"), frame[5:]
        else:
            frame_id, params = frame[2], frame[3:]
        if fc_lo & FC_RESPONSE:
            raise EzspFrameError(
                f"EZSP frame {frame.hex()} has the response bit set: expected a command",
                seq=seq,
                reason=_EZSP.ERROR_WRONG_DIRECTION,
                legacy=not extended,
            )
        return Command(seq=seq, frame_id=frame_id, name=self.by_id.get(frame_id), params=params, legacy=not extended)

    def decode_params(self, command: Command) -> dict[str, Any]:
        assert command.name is not None
        layout = self.request_layout(command.name)
        data = command.params
        try:
            values, end = _read(layout, data)
        except (ValueError, KeyError) as exc:
            raise EzspFrameError(
                f"EZSP {command.name} parameters {data.hex()}: {exc}",
                seq=command.seq,
                reason=_EZSP.ERROR_TRUNCATED,
                legacy=command.legacy,
            ) from exc
        if end < len(data):
            raise EzspFrameError(
                f"EZSP {command.name} parameters {data.hex()}: {len(data) - end} bytes more than expected",
                seq=command.seq,
                reason=_EZSP.ERROR_COMMAND_TOO_LONG,
                legacy=command.legacy,
            )
        return values

    # -- NCP -> host ----------------------------------------------------------------------------------------------

    def header(self, seq: int, frame_id: int, *, callback: bool = False, legacy: bool = False) -> bytes:
        fc_lo = FC_RESPONSE | (FC_ASYNC_CALLBACK if callback else 0)
        if legacy:
            return bytes([seq & 0xFF, fc_lo, frame_id & 0xFF])
        return bytes([seq & 0xFF, fc_lo, FC_HIGH_FORMAT_V1]) + frame_id.to_bytes(2, "little")

    def encode(
        self, seq: int, name: str, values: dict[str, Any], *, callback: bool = False, legacy: bool = False
    ) -> bytes:
        """A response or callback. Fields the stack leaves out take their zero value; unknown names are a bug."""
        layout = self.answer_layout(name)
        unknown = values.keys() - layout.known
        if unknown:
            raise KeyError(f"EZSP v{self.version} {name} has no field(s) {sorted(unknown)}")
        return self.header(seq, layout.frame_id, callback=callback, legacy=legacy) + _write(layout, values)

    def invalid_command(self, seq: int, reason: bt.EzspStatus, *, legacy: bool = False) -> bytes:
        """`invalidCommand`: v8-v13 carry the EzspStatus reason; v14 declares an sl_Status, where every EZSP
        framing error is SL_STATUS_ZIGBEE_EZSP_ERROR."""
        frame_id, _, rx_schema = self.commands[INVALID_COMMAND]
        (type_,) = rx_schema.values()
        value = reason if type_ is _EZSP else _SL.ZIGBEE_EZSP_ERROR
        return self.header(seq, frame_id, legacy=legacy) + bytes(type_(value).serialize())
