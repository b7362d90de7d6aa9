"""ZCL frame headers (frame control, manufacturer code, sequence number, command id), read and written fast.

Every ZCL frame a device or the CHF receives starts with this header, and zigpy's `ZCLHeader.deserialize` costs
about 0.1 ms: its Struct constructor binds a signature and, on setting `manufacturer`, rebuilds the frame control.
That made the header, not the command, the dearest part of every control frame of a download (Query Next Image,
Upgrade End, their responses, WAIT_FOR_DATA, Default Responses). Here the bytes are read with plain indexing and
the result is still zigpy's own `ZCLHeader`, field for field of the same types: its frame control comes from
zigpy's own `FrameControl.deserialize` of that byte (cached; it is an immutable int), its numbers are zigpy's
`uint8_t`/`uint16_t`. `tests/test_zcl_headers.py` compares both functions with zigpy on any bytes (hypothesis).
Anything short or odd goes to zigpy, so errors are zigpy's own.
"""

from __future__ import annotations

import zigpy.types as t
from zigpy.zcl import foundation

_MANUFACTURER_SPECIFIC = 0x04
_CLUSTER_COMMAND = 0x01
_SERVER_TO_CLIENT = 0x08
_DISABLE_DEFAULT_RESPONSE = 0x10

# Immutable ints, so one object per value serves every header.
_UINT8 = tuple(t.uint8_t(value) for value in range(256))
_FRAME_CONTROLS: dict[int, foundation.FrameControl] = {}


def _frame_control(byte: int) -> foundation.FrameControl:
    frame_control = _FRAME_CONTROLS.get(byte)
    if frame_control is None:
        frame_control, _ = foundation.FrameControl.deserialize(bytes((byte,)))
        _FRAME_CONTROLS[byte] = frame_control
    return frame_control


def parse(data: bytes) -> tuple[foundation.ZCLHeader, bytes]:
    """What `foundation.ZCLHeader.deserialize(data)` returns: the header and the payload after it."""
    size = len(data)
    if size >= 3:
        first = data[0]
        if not first & _MANUFACTURER_SPECIFIC:
            return _assemble(first, None, data[1], data[2]), data[3:]
        if size >= 5:
            return _assemble(first, t.uint16_t(data[1] | data[2] << 8), data[3], data[4]), data[5:]
    return foundation.ZCLHeader.deserialize(data)


def _assemble(first: int, manufacturer: t.uint16_t | None, tsn: int, command_id: int) -> foundation.ZCLHeader:
    """A `ZCLHeader` with these fields, without its constructor's per-field work (the fields are already
    of their types, and `manufacturer` agrees with the frame control's manufacturer-specific bit)."""
    header = object.__new__(foundation.ZCLHeader)
    fields = header.__dict__
    fields["frame_control"] = _frame_control(first)
    fields["manufacturer"] = manufacturer
    fields["tsn"] = _UINT8[tsn]
    fields["command_id"] = _UINT8[command_id]
    return header


def cluster_bytes(
    tsn: int, command_id: int, direction: foundation.Direction, disable_default_response: bool | None = None
) -> bytes:
    """The 3 bytes of `ZCLHeader.cluster(tsn=…, command_id=…, direction=…)`, whose frame control disables
    default responses for server→client frames unless `disable_default_response` says otherwise."""
    return bytes((_first(_CLUSTER_COMMAND, direction, disable_default_response, None), tsn, command_id))


def general_bytes(
    tsn: int,
    command_id: int,
    direction: foundation.Direction,
    disable_default_response: bool | None = None,
    manufacturer: int | None = None,
) -> bytes:
    """The bytes of `ZCLHeader.general(tsn=…, command_id=…, manufacturer=…, direction=…)` (a profile-wide
    command), 5 with a manufacturer code and 3 without."""
    first = _first(0, direction, disable_default_response, manufacturer)
    if manufacturer is None:
        return bytes((first, tsn, command_id))
    return bytes((first, manufacturer & 0xFF, manufacturer >> 8, tsn, command_id))


def _first(
    frame_type: int, direction: foundation.Direction, disable_default_response: bool | None, manufacturer: int | None
) -> int:
    server_to_client = direction == foundation.Direction.Server_to_Client
    if disable_default_response is None:
        disable_default_response = server_to_client
    first = frame_type
    if manufacturer is not None:
        if not 0 <= manufacturer <= 0xFFFF:
            raise ValueError(f"manufacturer code {manufacturer} is not a uint16")
        first |= _MANUFACTURER_SPECIFIC
    if server_to_client:
        first |= _SERVER_TO_CLIENT
    if disable_default_response:
        first |= _DISABLE_DEFAULT_RESPONSE
    return first
