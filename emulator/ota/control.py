"""The payloads of the control frames of a download, packed with `struct` instead of zigpy's schemas.

Every download opens with Query Next Image and its response and closes with Upgrade End and its response, and a
CHF announces images with Image Notify; in a HAN of hundreds of devices with small images these frames, not the
blocks, are most of the OTA traffic. zigpy's schema constructor costs about 15 µs per frame, `struct` about 1 µs.

`pack` knows one layout per command and set of fields: exactly the fields zigpy's schema writes for that command
(SPEC.md §2.1–§2.8, ZCL r7 §11.13), in its order. Anything else — a field set zigpy would complete, reject or
write differently, a value out of range — returns None, and `frames.encode` takes zigpy's path, so errors stay
zigpy's. `tests/test_ota_control.py` compares every layout with zigpy's bytes (hypothesis).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

# (field names in zigpy's order, packer, which value of the leading field the layout is for)
_Layout = tuple[tuple[str, ...], struct.Struct, Callable[[int], bool]]


def _any(_value: int) -> bool:
    return True


def _equals(expected: int) -> Callable[[int], bool]:
    return lambda value: value == expected


def _layout(names: str, fmt: str, accepts: Callable[[int], bool] = _any) -> tuple[frozenset[str], _Layout]:
    fields = tuple(names.split())
    return frozenset(fields), (fields, struct.Struct("<" + fmt), accepts)


_NOTIFY_FIELDS = ("manufacturer_code", "image_type", "new_file_version")
_NOTIFY_FORMATS = ("H", "H", "I")

_LAYOUTS: dict[str, dict[frozenset[str], _Layout]] = {
    "query_next_image": dict(
        (
            _layout("field_control manufacturer_code image_type current_file_version", "BHHI", lambda fc: not fc & 1),
            _layout(
                "field_control manufacturer_code image_type current_file_version hardware_version",
                "BHHIH",
                lambda fc: bool(fc & 1),
            ),
        )
    ),
    "query_next_image_response": dict(
        (
            _layout("status", "B"),
            _layout("status manufacturer_code image_type file_version image_size", "BHHII"),
        )
    ),
    "upgrade_end": dict((_layout("status manufacturer_code image_type file_version", "BHHI"),)),
    "upgrade_end_response": dict(
        (_layout("manufacturer_code image_type file_version current_time upgrade_time", "HHIII"),)
    ),
    # Payload type n (0..3) carries the first n of manufacturer code, image type and new file version.
    "image_notify": dict(
        _layout(
            " ".join(("payload_type", "query_jitter", *_NOTIFY_FIELDS[:count])),
            "BB" + "".join(_NOTIFY_FORMATS[:count]),
            _equals(count),
        )
        for count in range(4)
    ),
}


def pack(name: str, fields: Mapping[str, Any]) -> bytes | None:
    """The payload of OTA command `name` with these fields, as zigpy's schema serialises it; None when no
    layout here fits (zigpy's schema then builds it, or says what is wrong)."""
    layouts = _LAYOUTS.get(name)
    if layouts is None:
        return None
    layout = layouts.get(frozenset(fields))
    if layout is None:
        return None
    names, packer, accepts = layout
    values = [fields[field] for field in names]
    if type(values[0]) is bool or not isinstance(values[0], int) or not accepts(values[0]):
        return None
    try:
        return packer.pack(*values)
    except struct.error:
        return None
