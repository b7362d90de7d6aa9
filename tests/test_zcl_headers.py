"""`emulator.ota.headers` reads and writes ZCL headers exactly as zigpy does: for any bytes, `parse` gives zigpy's
`ZCLHeader.deserialize` result field for field, of the same types, or fails as zigpy fails; the header bytes it
writes are those of zigpy's `ZCLHeader.cluster`/`general` serialised; and the OTA frames built on it are those
zigpy's header and schemas make."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from zigpy.zcl import foundation

from emulator.ota import frames, headers
from emulator.structs import replaced

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
directions = st.sampled_from(list(foundation.Direction))


def _zigpy_parse(data: bytes) -> tuple[foundation.ZCLHeader, bytes] | type[BaseException]:
    try:
        return foundation.ZCLHeader.deserialize(data)
    except Exception as exc:  # whatever zigpy raises, ours must raise too
        return type(exc)


def _typed_fields(header: foundation.ZCLHeader) -> list[tuple[str, type, object]]:
    return [(name, type(value), value) for name, value in vars(header).items()]


@given(st.binary(max_size=8))
def test_parse_is_zigpys_deserialize_on_any_bytes(data):
    expected = _zigpy_parse(data)
    if isinstance(expected, type):
        with pytest.raises(expected):
            headers.parse(data)
        return
    header, rest = headers.parse(data)
    assert rest == expected[1]
    assert header == expected[0]
    assert _typed_fields(header) == _typed_fields(expected[0])
    assert header.serialize() == expected[0].serialize() == data[: len(data) - len(rest)]
    assert header.direction == expected[0].direction
    assert repr(header) == repr(expected[0])


@given(st.integers(0, 0xFF).map(lambda first: bytes((first, 1, 2, 3, 4, 5))))
def test_parse_reads_every_frame_control_byte_as_zigpy_does(data):
    header, rest = headers.parse(data)
    expected, expected_rest = foundation.ZCLHeader.deserialize(data)
    assert (header, rest) == (expected, expected_rest)
    assert _typed_fields(header) == _typed_fields(expected)


def test_a_parsed_header_is_a_header_of_its_own():
    """Headers share immutable parts only: changing one leaves the next parse alone."""
    first, _ = headers.parse(bytes.fromhex("1905020011"))
    first.tsn = 9
    first.frame_control = replaced(first.frame_control, disable_default_response=0)
    second, _ = headers.parse(bytes.fromhex("1905020011"))
    assert second.tsn == 5 and second.frame_control.disable_default_response == 1


@given(u8, u8, directions, st.none() | st.booleans())
def test_cluster_bytes_are_zigpys_cluster_header(tsn, command_id, direction, no_default_response):
    header = foundation.ZCLHeader.cluster(tsn=tsn, command_id=command_id, direction=direction)
    if no_default_response is not None:
        header.frame_control = replaced(header.frame_control, disable_default_response=no_default_response)
    assert headers.cluster_bytes(tsn, command_id, direction, no_default_response) == header.serialize()


@given(u8, u8, directions, st.none() | st.booleans(), st.none() | u16)
def test_general_bytes_are_zigpys_general_header(tsn, command_id, direction, no_default_response, manufacturer):
    header = foundation.ZCLHeader.general(
        tsn=tsn, command_id=command_id, manufacturer=manufacturer, direction=direction
    )
    if no_default_response is not None:
        header.frame_control = replaced(header.frame_control, disable_default_response=no_default_response)
    assert headers.general_bytes(tsn, command_id, direction, no_default_response, manufacturer) == header.serialize()


def _zigpy_encode(name: str, tsn: int, direction: foundation.Direction, no_default_response: bool | None, **fields):
    """`frames.encode` as it was written on zigpy's own header object."""
    definition = next(d for d in (*frames.SERVER_COMMANDS.values(), *frames.CLIENT_COMMANDS.values()) if d.name == name)
    header = foundation.ZCLHeader.cluster(tsn=tsn, command_id=definition.id, direction=direction)
    if no_default_response is not None:
        header.frame_control = replaced(header.frame_control, disable_default_response=no_default_response)
    return header.serialize() + definition.schema(**fields).serialize()


@given(u8, st.none() | st.booleans(), u16, u16, u32, st.none() | u16)
def test_query_next_image_is_zigpys(tsn, no_default_response, manufacturer, image_type, version, hardware):
    fields = dict(
        field_control=0 if hardware is None else 1,
        manufacturer_code=manufacturer,
        image_type=image_type,
        current_file_version=version,
    )
    if hardware is not None:
        fields["hardware_version"] = hardware
    ours = frames.encode("query_next_image", tsn=tsn, disable_default_response=no_default_response, **fields)
    assert ours == _zigpy_encode("query_next_image", tsn, frames.C2S, no_default_response, **fields)
    assert frames.decode(ours).command == frames.SERVER_COMMANDS[1].schema(**fields)


@given(u8, st.none() | st.booleans(), u16, u16, u32, u32, u32)
def test_upgrade_end_response_is_zigpys(tsn, no_default_response, manufacturer, image_type, version, now, when):
    fields = dict(
        manufacturer_code=manufacturer, image_type=image_type, file_version=version, current_time=now, upgrade_time=when
    )
    ours = frames.encode("upgrade_end_response", tsn=tsn, disable_default_response=no_default_response, **fields)
    assert ours == _zigpy_encode("upgrade_end_response", tsn, frames.S2C, no_default_response, **fields)
    frame = frames.decode(ours)
    assert (frame.name, frame.tsn, frame.direction) == ("upgrade_end_response", tsn, frames.S2C)
    assert frame.header == foundation.ZCLHeader.deserialize(ours)[0]


@given(u8, u8, st.sampled_from(list(foundation.Status)), directions)
def test_default_response_is_zigpys(tsn, command_id, status, direction):
    header = foundation.ZCLHeader.general(
        tsn=tsn, command_id=foundation.GeneralCommand.Default_Response, direction=direction
    )
    header.frame_control = replaced(header.frame_control, disable_default_response=True)
    schema = foundation.GENERAL_COMMANDS[foundation.GeneralCommand.Default_Response].schema
    expected = header.serialize() + schema(command_id=command_id, status=status).serialize()
    ours = frames.default_response(tsn=tsn, command_id=command_id, status=status, direction=direction)
    assert ours == expected
