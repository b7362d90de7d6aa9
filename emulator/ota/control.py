"""The payloads of the control frames of a download, packed and unpacked with `struct` instead of zigpy's schemas.

Every download opens with Query Next Image and its response and closes with Upgrade End and its response, and a
CHF announces images with Image Notify; in a HAN of hundreds of devices with small images these frames, not the
blocks, are most of the OTA traffic; a busy CHF answers WAIT_FOR_DATA too. zigpy's schema (de)serialisation costs
15–40 µs per frame, `struct` about 1 µs.

`pack` knows one layout per command and set of fields: exactly the fields zigpy's schema writes for that command
(SPEC.md §2.1–§2.8, ZCL r7 §11.13), in its order. `unpack` knows one layout per command and payload length, and
gives zigpy's own command object, every field of zigpy's type (its other fields None, as zigpy leaves them),
assembled without the Struct constructor's signature binding. Anything else — a field set zigpy would complete,
reject or write differently, a value out of range, a length or leading field no layout is for — returns None,
and `frames.encode`/`frames.decode` take zigpy's path, so errors and odd frames stay zigpy's.
`tests/test_ota_control.py` compares both directions with zigpy on generated fields and on any bytes (hypothesis).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from zigpy.zcl import foundation
from zigpy.zcl.clusters.general import Ota

_DEFAULT_RESPONSE = foundation.GeneralCommand.Default_Response
_SCHEMAS: dict[str, type[foundation.CommandSchema]] = {
    cmd.name: cmd.schema for cmd in (*Ota.ServerCommandDefs, *Ota.ClientCommandDefs)
}
_SCHEMAS[_DEFAULT_RESPONSE.name] = foundation.GENERAL_COMMANDS[_DEFAULT_RESPONSE].schema
_WAIT_FOR_DATA = 0x97


@dataclass(frozen=True, slots=True)
class _Layout:
    """One fixed shape of a command: its fields in zigpy's order, their packer, and which values of the
    leading field (a field control, status or payload type that decides which fields follow) it is for."""

    names: tuple[str, ...]
    packer: struct.Struct
    accepts: Callable[[int], bool]
    schema: type[foundation.CommandSchema]
    kinds: tuple[Callable[[int], Any], ...]  # zigpy's type of each field, which makes it from the int


def _any(_value: int) -> bool:
    return True


def _equals(expected: int) -> Callable[[int], bool]:
    return lambda value: value == expected


def _layout(command: str, names: str, fmt: str, accepts: Callable[[int], bool] = _any) -> _Layout:
    schema = _SCHEMAS[command]
    fields = tuple(names.split())
    kinds = tuple(getattr(schema.fields, field).type for field in fields)
    return _Layout(fields, struct.Struct("<" + fmt), accepts, schema, kinds)


_QUERY = "field_control manufacturer_code image_type current_file_version"
_OFFER = "manufacturer_code image_type file_version"
_NOTIFY_FIELDS = ("manufacturer_code", "image_type", "new_file_version")
_NOTIFY_FORMATS = ("H", "H", "I")

_ALL: dict[str, tuple[_Layout, ...]] = {
    "query_next_image": (
        _layout("query_next_image", _QUERY, "BHHI", lambda fc: not fc & 1),
        _layout("query_next_image", _QUERY + " hardware_version", "BHHIH", lambda fc: bool(fc & 1)),
    ),
    "query_next_image_response": (
        _layout("query_next_image_response", "status", "B"),
        _layout("query_next_image_response", f"status {_OFFER} image_size", "BHHII"),
    ),
    "image_block_response": (  # WAIT_FOR_DATA in its 9- and 11-byte forms (SPEC.md §2.6)
        _layout("image_block_response", "status current_time request_time", "BII", _equals(_WAIT_FOR_DATA)),
        _layout(
            "image_block_response",
            "status current_time request_time minimum_block_period",
            "BIIH",
            _equals(_WAIT_FOR_DATA),
        ),
    ),
    "upgrade_end": (_layout("upgrade_end", f"status {_OFFER}", "BHHI"),),
    "upgrade_end_response": (_layout("upgrade_end_response", f"{_OFFER} current_time upgrade_time", "HHIII"),),
    # The one general command on the path: how the other end fared with a request (ZCL r7 §2.5.12).
    _DEFAULT_RESPONSE.name: (_layout(_DEFAULT_RESPONSE.name, "command_id status", "BB"),),
    # Payload type n (0..3) carries the first n of manufacturer code, image type and new file version.
    "image_notify": tuple(
        _layout(
            "image_notify",
            " ".join(("payload_type", "query_jitter", *_NOTIFY_FIELDS[:count])),
            "BB" + "".join(_NOTIFY_FORMATS[:count]),
            _equals(count),
        )
        for count in range(4)
    ),
}
_BY_FIELDS = {name: {frozenset(layout.names): layout for layout in layouts} for name, layouts in _ALL.items()}
_BY_SIZE = {name: {layout.packer.size: layout for layout in layouts} for name, layouts in _ALL.items()}


def pack(name: str, fields: Mapping[str, Any]) -> bytes | None:
    """The payload of OTA command `name` with these fields, as zigpy's schema serialises it; None when no
    layout here fits (zigpy's schema then builds it, or says what is wrong)."""
    layouts = _BY_FIELDS.get(name)
    if layouts is None:
        return None
    layout = layouts.get(frozenset(fields))
    if layout is None:
        return None
    values = [fields[field] for field in layout.names]
    if type(values[0]) is bool or not isinstance(values[0], int) or not layout.accepts(values[0]):
        return None
    try:
        return layout.packer.pack(*values)
    except struct.error:
        return None


def unpack(name: str, payload: bytes) -> foundation.CommandSchema | None:
    """zigpy's command object for the payload of OTA command (or Default Response) `name`, as its schema's
    `deserialize` makes it from exactly these bytes; None when no layout here is for this length and leading
    field."""
    layouts = _BY_SIZE.get(name)
    layout = layouts.get(len(payload)) if layouts is not None else None
    if layout is None:
        return None
    values = layout.packer.unpack(payload)
    if not layout.accepts(values[0]):
        return None
    schema = layout.schema
    command = tuple.__new__(schema)  # as zigpy's Struct constructor makes it (a CommandSchema is a tuple)
    fields = command.__dict__
    for field in schema.fields:
        fields[field.name] = None
    for field_name, kind, value in zip(layout.names, layout.kinds, values, strict=True):
        fields[field_name] = kind(value)
    return command
