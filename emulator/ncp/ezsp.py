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
    return importlib.import_module(f"bellows.ezsp.v{version}.commands").COMMANDS


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


def zero_value(type_: type) -> Any:
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


class EzspCodec:
    """Frames for one EZSP protocol version (8 or later)."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.commands = load_commands(version)
        self.by_id = {frame_id: name for name, (frame_id, _, _) in self.commands.items()}

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
        _, tx_schema, _ = self.commands[command.name]
        data = command.params
        try:
            if isinstance(tx_schema, dict):
                values, rest = bt.deserialize_dict(data, tx_schema)
            else:
                struct, rest = tx_schema.deserialize(data)
                values = struct.as_dict()
        except (ValueError, KeyError) as exc:
            raise EzspFrameError(
                f"EZSP {command.name} parameters {data.hex()}: {exc}",
                seq=command.seq,
                reason=_EZSP.ERROR_TRUNCATED,
                legacy=command.legacy,
            ) from exc
        if rest:
            raise EzspFrameError(
                f"EZSP {command.name} parameters {data.hex()}: {len(rest)} bytes more than expected",
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
        frame_id, _, rx_schema = self.commands[name]
        fields = _fields(rx_schema)
        unknown = set(values) - {field_name for field_name, _ in fields}
        if unknown:
            raise KeyError(f"EZSP v{self.version} {name} has no field(s) {sorted(unknown)}")
        typed = {}
        for field_name, type_ in fields:
            if field_name in values:
                value = values[field_name]
                if issubclass(type_, (_SL, _EMBER, _EZSP)):
                    value = convert_status(value, type_)
                typed[field_name] = value if isinstance(value, type_) else type_(value)
            elif isinstance(rx_schema, dict):
                typed[field_name] = zero_value(type_)
        if isinstance(rx_schema, dict):
            body = b"".join(typed[field_name].serialize() for field_name, _ in fields)
        else:
            body = rx_schema(**typed).serialize()
        return self.header(seq, frame_id, callback=callback, legacy=legacy) + body

    def invalid_command(self, seq: int, reason: bt.EzspStatus, *, legacy: bool = False) -> bytes:
        """`invalidCommand`: v8-v13 carry the EzspStatus reason; v14 declares an sl_Status, where every EZSP
        framing error is SL_STATUS_ZIGBEE_EZSP_ERROR."""
        frame_id, _, rx_schema = self.commands[INVALID_COMMAND]
        (type_,) = rx_schema.values()
        value = reason if type_ is _EZSP else _SL.ZIGBEE_EZSP_ERROR
        return self.header(seq, frame_id, legacy=legacy) + type_(value).serialize()
