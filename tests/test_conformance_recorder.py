"""The recorder's fast path for Image Block Requests and Responses names every field exactly as the general OTA
decoder (zigpy's schemas) does, so evidence and verdicts cannot depend on which path read a frame."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from emulator.conformance.recorder import _block_fields, ota_fields
from emulator.ota import frames

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


@given(u8, u16, u16, u32, u32, u8, st.none() | u16, st.booleans())
def test_block_request_fields_match_the_general_decoder(
    tsn, manufacturer, image_type, version, offset, size, period, no_default_response
):
    fields = dict(
        manufacturer_code=manufacturer,
        image_type=image_type,
        file_version=version,
        file_offset=offset,
        maximum_data_size=size,
        field_control=0 if period is None else 2,
    )
    if period is not None:
        fields["minimum_block_period"] = period
    data = frames.encode("image_block", tsn=tsn, disable_default_response=no_default_response, **fields)
    fast = _block_fields(data)
    assert fast is not None
    assert fast == ota_fields(data)
    assert list(fast[1]) == list(ota_fields(data)[1])  # the same order, as the reports show it


@given(u8, u16, u16, u32, u32, st.binary(max_size=80), st.booleans())
def test_block_response_fields_match_the_general_decoder(
    tsn, manufacturer, image_type, version, offset, chunk, no_default_response
):
    data = frames.encode(
        "image_block_response",
        tsn=tsn,
        disable_default_response=no_default_response,
        status=frames.Status.SUCCESS,
        manufacturer_code=manufacturer,
        image_type=image_type,
        file_version=version,
        file_offset=offset,
        image_data=chunk,
    )
    fast = _block_fields(data)
    assert fast is not None
    assert fast == ota_fields(data)
    assert list(fast[1]) == list(ota_fields(data)[1])


def test_other_frames_take_the_general_path():
    wait = frames.encode(
        "image_block_response", tsn=1, status=frames.Status.WAIT_FOR_DATA, current_time=0, request_time=10
    )
    truncated = frames.encode(
        "image_block",
        tsn=1,
        field_control=0,
        manufacturer_code=1,
        image_type=2,
        file_version=3,
        file_offset=4,
        maximum_data_size=5,
    )[:-1]
    assert _block_fields(wait) is None and _block_fields(truncated) is None
    assert ota_fields(truncated)[0] == "malformed OTA frame"
