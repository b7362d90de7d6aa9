"""The control frames `frames.encode` packs with `struct` (`emulator.ota.control`) are zigpy's bytes, for any
field values; whatever the packer does not fit goes to zigpy and fares as zigpy makes it fare."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from zigpy.zcl import foundation

from emulator.ota import blocks, control, frames

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
statuses = st.sampled_from(list(foundation.Status))
no_default_response = st.none() | st.booleans()

_DEFINITIONS = {d.name: d for d in (*frames.SERVER_COMMANDS.values(), *frames.CLIENT_COMMANDS.values())}
_DEFAULT_RESPONSE = foundation.GENERAL_COMMANDS[foundation.GeneralCommand.Default_Response]


def _zigpy(name: str, tsn: int, ddr: bool | None, **fields: object) -> bytes:
    """The frame as zigpy's own header and schema write it."""
    definition = _DEFINITIONS[name]
    direction = frames.C2S if frames.SERVER_COMMANDS.get(definition.id) is definition else frames.S2C
    header = foundation.ZCLHeader.cluster(tsn=tsn, command_id=definition.id, direction=direction)
    if ddr is not None:
        header.frame_control = header.frame_control.replace(disable_default_response=ddr)
    return header.serialize() + definition.schema(**fields).serialize()


def _check(name: str, tsn: int, ddr: bool | None, **fields: object) -> None:
    assert control.pack(name, fields) is not None  # the fast path is the one under test
    ours = frames.encode(name, tsn=tsn, disable_default_response=ddr, **fields)
    assert ours == _zigpy(name, tsn, ddr, **fields)
    decoded = frames.decode(ours)
    assert decoded.name == name and decoded.tsn == tsn
    assert decoded.command == _DEFINITIONS[name].schema(**fields)


@given(u8, no_default_response, u8, u16, u16, u32, st.none() | u16)
def test_query_next_image(tsn, ddr, field_control, manufacturer, image_type, version, hardware):
    fields = dict(manufacturer_code=manufacturer, image_type=image_type, current_file_version=version)
    if hardware is None:
        fields["field_control"] = field_control & ~1
    else:
        fields.update(field_control=field_control | 1, hardware_version=hardware)
    _check("query_next_image", tsn, ddr, **fields)


@given(u8, no_default_response, statuses, st.none() | st.tuples(u16, u16, u32, u32))
def test_query_next_image_response(tsn, ddr, status, offer):
    fields: dict[str, object] = {"status": status}
    if offer is not None:
        fields.update(zip(("manufacturer_code", "image_type", "file_version", "image_size"), offer, strict=True))
    _check("query_next_image_response", tsn, ddr, **fields)


@given(u8, no_default_response, statuses, u16, u16, u32)
def test_upgrade_end(tsn, ddr, status, manufacturer, image_type, version):
    _check(
        "upgrade_end",
        tsn,
        ddr,
        status=status,
        manufacturer_code=manufacturer,
        image_type=image_type,
        file_version=version,
    )


@given(u8, no_default_response, u16, u16, u32, u32, u32)
def test_upgrade_end_response(tsn, ddr, manufacturer, image_type, version, now, when):
    fields = dict(
        manufacturer_code=manufacturer, image_type=image_type, file_version=version, current_time=now, upgrade_time=when
    )
    _check("upgrade_end_response", tsn, ddr, **fields)


@given(u8, no_default_response, st.integers(0, 3), u8, u16, u16, u32)
def test_image_notify(tsn, ddr, payload_type, jitter, manufacturer, image_type, version):
    fields = dict(payload_type=payload_type, query_jitter=jitter)
    optional = (("manufacturer_code", manufacturer), ("image_type", image_type), ("new_file_version", version))
    fields.update(optional[:payload_type])
    _check("image_notify", tsn, ddr, **fields)


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("upgrade_end_response", dict(manufacturer_code=1, image_type=2, file_version=3, current_time=4)),  # short
        ("upgrade_end", dict(status=0, manufacturer_code=0x10000, image_type=2, file_version=3)),  # out of range
        ("upgrade_end", dict(status=True, manufacturer_code=1, image_type=2, file_version=3)),  # not a status
        ("image_notify", dict(payload_type=2, query_jitter=100, manufacturer_code=1)),  # fields short of its type
        ("query_next_image", dict(field_control=1, manufacturer_code=1, image_type=2, current_file_version=3)),
        (
            "image_block",
            dict(
                field_control=0, manufacturer_code=1, image_type=2, file_version=3, file_offset=0, maximum_data_size=64
            ),
        ),  # not a control frame
    ],
)
def test_what_the_packer_does_not_fit_is_left_to_zigpy(name, fields):
    assert control.pack(name, fields) is None
    try:
        expected: bytes | type[BaseException] = _zigpy(name, 7, None, **fields)
    except Exception as exc:  # whatever zigpy raises, encode raises
        expected = type(exc)
    if isinstance(expected, bytes):
        assert frames.encode(name, tsn=7, **fields) == expected
    else:
        with pytest.raises(expected):
            frames.encode(name, tsn=7, **fields)


@given(u8, u32, u32, st.none() | u16)
def test_wait_for_data_decodes_to_zigpys_fields_in_either_form(tsn, now, when, period):
    """The 9-byte form (no MinimumBlockPeriod, SPEC.md §2.6) reads as zigpy's command with the period None."""
    data = blocks.encode_wait_for_data(tsn, now, when, period)
    frame = frames.decode(data)
    schema = _DEFINITIONS["image_block_response"].schema
    expected = schema(
        status=foundation.Status.WAIT_FOR_DATA, current_time=now, request_time=when, minimum_block_period=period
    )
    assert frame.command == expected
    assert [(f.name, getattr(frame.command, f.name)) for f in schema.fields] == [
        (f.name, getattr(expected, f.name)) for f in schema.fields
    ]
    assert frames.encode("image_block_response", tsn=tsn, **expected.as_dict(skip_missing=True)) == data


def _zigpy_decode(name: str, payload: bytes) -> object | None:
    """What zigpy's schema reads from exactly `payload` (None when it fails or leaves bytes over); the 9-byte
    WAIT_FOR_DATA is read as the 11-byte form with MinimumBlockPeriod None."""
    schema = _DEFINITIONS.get(name, _DEFAULT_RESPONSE).schema
    short_wait = name == "image_block_response" and len(payload) == 9 and payload[0] == 0x97
    try:
        command, extra = schema.deserialize(payload + b"\x00\x00" if short_wait else payload)
    except (ValueError, IndexError, KeyError):
        return None
    if short_wait:
        command = command.replace(minimum_block_period=None)
    return None if extra else command


def _typed(command: object) -> list[tuple[str, type, object]]:
    return [(name, type(value), value) for name, value in vars(command).items()]


_UNPACKED = sorted(control._BY_SIZE)
_SIZES = sorted({size for layouts in control._BY_SIZE.values() for size in layouts})


@given(st.sampled_from(_UNPACKED), st.sampled_from(_SIZES).flatmap(lambda n: st.binary(min_size=n, max_size=n)))
def test_unpack_is_zigpys_deserialize_on_any_bytes(name, payload):
    ours = control.unpack(name, payload)
    if ours is None:
        return  # zigpy's path reads it, whatever it is
    expected = _zigpy_decode(name, payload)
    assert expected is not None
    assert ours == expected
    assert _typed(ours) == _typed(expected)
    assert type(ours) is type(expected)


@given(st.sampled_from(_UNPACKED), st.data())
def test_unpack_takes_every_layout_it_packs(name, data):
    """Every shape `pack` writes, `unpack` reads back as zigpy would (so the fast path is the common path)."""
    layout = data.draw(st.sampled_from(control._ALL[name]))
    leading = data.draw(st.integers(0, 0xFF).filter(layout.accepts))
    rest = [data.draw(st.integers(0, (1 << (8 * struct.calcsize("<" + f))) - 1)) for f in layout.packer.format[2:]]
    payload = layout.packer.pack(leading, *rest)
    ours = control.unpack(name, payload)
    assert ours is not None
    assert _typed(ours) == _typed(_zigpy_decode(name, payload))
