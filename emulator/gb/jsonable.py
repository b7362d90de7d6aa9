"""JSON form of decoded GBCS values: the alert log and `ota-emu gbcs decode` both write it, so that a log line and
the decoder show the same message the same way."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

import zigpy.types as t

from emulator.gb.codes import AlertCode


def iso(when: datetime) -> str:
    return (
        when.astimezone(UTC)
        .isoformat(timespec="milliseconds" if when.microsecond else "seconds")
        .replace("+00:00", "Z")
    )


def json_value(value: object) -> Any:
    """JSON form of a decoded field or event field: ids as printed EUI-64s, octets as hex, enums by name."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: json_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, IntEnum):
        named = {"value": int(value), "name": value.name.lower()}
        return {**named, "hex": f"0x{value:04X}"} if isinstance(value, AlertCode) else named
    if isinstance(value, t.EUI64):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, float):
        return round(value, 3)
    return value
