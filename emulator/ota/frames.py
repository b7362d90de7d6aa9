"""ZCL frames of the OTA Upgrade cluster (0x0019), built and parsed with zigpy's own schemas.

Both ends of the emulator (the CHF server and the emulated clients) and the conformance bench speak through
this module, so the bytes on the air are zigpy's bytes. What zigpy's schemas do not cover is handled here:
the 9-byte WAIT_FOR_DATA Image Block Response of older OTA revisions (SPEC.md §2.6: no MinimumBlockPeriod),
and rejecting payloads of the wrong length, which zigpy would partly accept.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import zigpy.types as t
from zigpy.zcl import foundation
from zigpy.zcl.clusters.general import Ota

from emulator.ota import control, headers

CLUSTER_ID = Ota.cluster_id

Status = foundation.Status
Direction = foundation.Direction

C2S = foundation.Direction.Client_to_Server
S2C = foundation.Direction.Server_to_Client

# Server-side commands are received by the server (sent by clients), client-side ones the reverse.
SERVER_COMMANDS = {cmd.id: cmd for cmd in Ota.ServerCommandDefs}
CLIENT_COMMANDS = {cmd.id: cmd for cmd in Ota.ClientCommandDefs}
COMMAND_IDS = {cmd.name: cmd.id for cmd in (*Ota.ServerCommandDefs, *Ota.ClientCommandDefs)}
_SERVER_COMMAND_NAMES = frozenset(cmd.name for cmd in Ota.ServerCommandDefs)
_DEFAULT_DIRECTION = {name: C2S if name in _SERVER_COMMAND_NAMES else S2C for name in COMMAND_IDS}


class OtaCommand(IntEnum):
    """Every OTA Upgrade cluster command id, the one name for each in the code (ZCL r7 §11.13.2 and §11.13.3).

    The ids the client sends and those the server sends do not overlap, so one enum names both; its values are
    zigpy's own (`tests/test_frames.py` compares them with zigpy's command definitions)."""

    IMAGE_NOTIFY = 0x00
    QUERY_NEXT_IMAGE = 0x01
    QUERY_NEXT_IMAGE_RESPONSE = 0x02
    IMAGE_BLOCK = 0x03
    IMAGE_PAGE = 0x04
    IMAGE_BLOCK_RESPONSE = 0x05
    UPGRADE_END = 0x06
    UPGRADE_END_RESPONSE = 0x07
    QUERY_SPECIFIC_FILE = 0x08
    QUERY_SPECIFIC_FILE_RESPONSE = 0x09


WAIT_FOR_DATA_SHORT_LENGTH = 9  # status + CurrentTime + RequestTime, without MinimumBlockPeriod
UPGRADE_TIME_WAIT = 0xFFFFFFFF
WILDCARD_MANUFACTURER = 0xFFFF
WILDCARD_IMAGE_TYPE = 0xFFFF
WILDCARD_FILE_VERSION = 0xFFFFFFFF


class MalformedFrame(ValueError):
    """A ZCL frame that cannot be decoded: the receiver answers MALFORMED_COMMAND where the spec asks it to."""


@dataclass(frozen=True)
class Frame:
    """One decoded ZCL frame on the OTA cluster (cluster-specific or general)."""

    header: foundation.ZCLHeader
    name: str
    command: Any

    @property
    def tsn(self) -> int:
        return self.header.tsn

    @property
    def is_general(self) -> bool:
        return self.header.frame_control.frame_type == foundation.FrameType.GLOBAL_COMMAND

    @property
    def direction(self) -> foundation.Direction:
        return self.header.direction


def _schema(command_id: int, direction: foundation.Direction) -> tuple[str, type[foundation.CommandSchema]]:
    table = SERVER_COMMANDS if direction == C2S else CLIENT_COMMANDS
    if command_id not in table:
        raise KeyError(command_id)
    cmd = table[command_id]
    return cmd.name, cmd.schema


def decode(data: bytes) -> Frame:
    """Decode an OTA-cluster ZCL frame. Raises `MalformedFrame` for a frame that is short, long or unknown;
    `KeyError` is never raised: an unknown cluster command id raises `UnsupportedCommand`."""
    try:
        header, rest = headers.parse(data)
    except (ValueError, IndexError) as exc:
        raise MalformedFrame(f"ZCL header: {exc}") from None
    if header.frame_control.frame_type == foundation.FrameType.GLOBAL_COMMAND:
        try:
            general = foundation.GeneralCommand(header.command_id)
            fast = control.unpack(general.name, rest)
            if fast is not None:
                return Frame(header, general.name, fast)
            schema = foundation.GENERAL_COMMANDS[general].schema
            command, _ = schema.deserialize(rest)
        except (ValueError, KeyError, IndexError) as exc:
            raise MalformedFrame(f"general command 0x{header.command_id:02X}: {exc}") from None
        return Frame(header, general.name, command)
    if header.frame_control.is_manufacturer_specific:
        raise UnsupportedCommand(header)
    try:
        name, schema = _schema(header.command_id, header.direction)
    except KeyError:
        raise UnsupportedCommand(header) from None
    fast = control.unpack(name, rest)
    if fast is not None:
        return Frame(header, name, fast)
    if name == "image_block_response" and len(rest) == WAIT_FOR_DATA_SHORT_LENGTH and rest[0] == Status.WAIT_FOR_DATA:
        command, extra = schema.deserialize(rest + b"\x00\x00")
        command.minimum_block_period = None  # a new object of ours: set in place, not copied by `replaced`
    else:
        try:
            command, extra = schema.deserialize(rest)
        except (ValueError, IndexError, KeyError) as exc:
            raise MalformedFrame(f"{name}: {exc}") from None
    if extra:
        raise MalformedFrame(f"{name}: {len(extra)} unexpected trailing byte(s)")
    return Frame(header, name, command)


class UnsupportedCommand(Exception):
    """A cluster command this end does not implement; the receiver answers UNSUP_CLUSTER_COMMAND (0x81)."""

    def __init__(self, header: foundation.ZCLHeader) -> None:
        super().__init__(f"unsupported OTA command 0x{header.command_id:02X}")
        self.header = header


def encode(
    name: str,
    *,
    tsn: int,
    direction: foundation.Direction | None = None,
    disable_default_response: bool | None = None,
    **fields: Any,
) -> bytes:
    """Build an OTA cluster-specific frame. Direction defaults from the command (client→server commands are
    C2S); default responses are disabled for S2C frames, as zigpy and Silicon Labs do (FC 0x19)."""
    command_id = COMMAND_IDS[name]
    if direction is None:
        direction = C2S if name in _SERVER_COMMAND_NAMES else S2C
    header = headers.cluster_bytes(tsn, command_id, direction, disable_default_response)
    packed = control.pack(name, fields)
    if packed is not None and _DEFAULT_DIRECTION[name] == direction:
        return header + packed
    _, schema = _schema(command_id, direction)
    if (
        name == "image_block_response"
        and fields.get("status") == Status.WAIT_FOR_DATA
        and (fields.get("minimum_block_period") is None)
    ):
        fields["minimum_block_period"] = 0
        return header + schema(**fields).serialize()[:WAIT_FOR_DATA_SHORT_LENGTH]
    return header + schema(**fields).serialize()


def default_response(*, tsn: int, command_id: int, status: foundation.Status, direction: foundation.Direction) -> bytes:
    """A ZCL Default Response to a command that travelled in the opposite `direction`."""
    header = headers.general_bytes(tsn, foundation.GeneralCommand.Default_Response, direction, True)
    return header + bytes((command_id, status))  # ZCL r7 §2.5.12: the command's id and a status, a byte each


def wants_default_response(header: foundation.ZCLHeader) -> bool:
    return not header.frame_control.disable_default_response


def eui64(value: int | str | t.EUI64) -> t.EUI64:
    """An EUI-64 from an int, a "00:0d:..."/"000D..." string, or an EUI64."""
    if isinstance(value, t.EUI64):
        return value
    if isinstance(value, int):
        return t.EUI64(value.to_bytes(8, "little"))
    text = value.replace(":", "").replace("-", "").strip()
    if len(text) != 16:
        raise ValueError(f"{value!r} is not an EUI-64 (expected 16 hex digits)")
    return t.EUI64(bytes.fromhex(text)[::-1])
