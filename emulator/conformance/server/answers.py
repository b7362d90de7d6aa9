"""Reading the server's answers back from recorded frames: judges decode bytes again rather than trust a summary."""

from __future__ import annotations

from typing import Any

from emulator.conformance.server.probe import Exchange, decode_record, raw
from emulator.conformance.verdict import FrameRecord
from emulator.ota.frames import Status

ZCL_HEADER_SIZE = 3


def status_text(value: int) -> str:
    try:
        return f"{Status(value).name} (0x{value:02X})"
    except ValueError:
        return f"0x{value:02X}"


def tsn(frame: FrameRecord) -> int:
    return raw(frame)[1]


def payload_size(frame: FrameRecord) -> int:
    return len(raw(frame)) - ZCL_HEADER_SIZE


def default_response(frame: FrameRecord) -> tuple[int, int] | None:
    """(command id, status) of a ZCL Default Response; None for any other frame."""
    decoded = decode_record(frame)
    if decoded is None or not decoded.is_general or decoded.name != "Default_Response":
        return None
    return int(decoded.command.command_id), int(decoded.command.status)


def named(frame: FrameRecord, name: str) -> Any | None:
    """The decoded command if `frame` is the cluster command `name`, else None."""
    decoded = decode_record(frame)
    if decoded is None or decoded.is_general or decoded.name != name:
        return None
    return decoded.command


def describe(frame: FrameRecord) -> str:
    """A frame in a few words, for a reason."""
    decoded = decode_record(frame)
    if decoded is None:
        return f"an undecodable frame [{frame.hex}]"
    command = decoded.command
    if decoded.name == "Default_Response":
        return f"Default Response {status_text(command.status)} to command 0x{command.command_id:02X}"
    if decoded.name == "image_block_response" and command.status == Status.SUCCESS:
        return f"Image Block Response SUCCESS @{command.file_offset}, {len(command.image_data)} B"
    status = getattr(command, "status", None)
    text = decoded.name.replace("_", " ")
    return f"{text} {status_text(status)}" if status is not None else text


def request_command(exchange: Exchange) -> Any:
    """The probe's request decoded again; None for an exchange it only listened in (or an undecodable one)."""
    decoded = None if exchange.request is None else decode_record(exchange.request)
    return None if decoded is None else decoded.command


def first_block(exchange: Exchange) -> Any | None:
    """The Image Block Response that answered `exchange` first, decoded; None if the first answer is another."""
    return named(exchange.answers[0], "image_block_response") if exchange.answers else None
