"""The two frames of the block loop, packed and unpacked with `struct` instead of zigpy's schemas.

A download is hundreds of Image Block Request / Image Block Response pairs per device and the emulator runs
thousands of devices, so these two frames are the hot path on both ends: zigpy's schema (de)serialisation costs
about 0.1 ms per frame, `struct` about 1 µs. The bytes are exactly those of `emulator.ota.frames.encode` (the
tests compare them); anything that is not a plain, well-formed frame of the expected shape returns None here and
takes the general `frames.decode` path, so every error case is still judged by one decoder.
"""

from __future__ import annotations

import struct

from emulator.ota.frames import OtaCommand

# Plain ints: an enum member is looked up through a descriptor on every comparison, and these run per block.
_BLOCK_REQUEST_ID = int(OtaCommand.IMAGE_BLOCK)
_BLOCK_RESPONSE_ID = int(OtaCommand.IMAGE_BLOCK_RESPONSE)

# SPEC.md §1.1: cluster-specific client→server with default responses enabled (0x01); §2.4 field control bit1
# announces the MinimumBlockPeriod field.
_FC_C2S = 0x01
_MIN_BLOCK_PERIOD_PRESENT = 0x02

_REQUEST = struct.Struct("<BBBBHHIIB")
_REQUEST_WITH_PERIOD = struct.Struct("<BBBBHHIIBH")
# fc, tsn, command, status, manufacturer, image type, version, offset, data size (SPEC.md §2.6)
_RESPONSE_HEAD = struct.Struct("<BBBBHHIIB")
_RESPONSE_HEAD_SIZE = _RESPONSE_HEAD.size
# Frame control of a cluster-specific server→client frame, with and without disable-default-response.
_FC_S2C = frozenset({0x09, 0x19})
_FC_C2S_ANY = frozenset({0x01, 0x11})
_FC_S2C_NO_DEFAULT_RESPONSE = 0x19
# fc, tsn, command, status WAIT_FOR_DATA, CurrentTime, RequestTime [, MinimumBlockPeriod] (SPEC.md §2.6)
_WAIT = struct.Struct("<BBBBII")
_WAIT_WITH_PERIOD = struct.Struct("<BBBBIIH")
_WAIT_FOR_DATA = 0x97
_REQUEST_SIZE = _REQUEST.size
_REQUEST_WITH_PERIOD_SIZE = _REQUEST_WITH_PERIOD.size


def encode_block_request(
    tsn: int,
    manufacturer_code: int,
    image_type: int,
    file_version: int,
    file_offset: int,
    maximum_data_size: int,
    minimum_block_period: int | None,
) -> bytes:
    """Image Block Request (SPEC.md §2.4), 17 or 19 bytes with the ZCL header."""
    if minimum_block_period is None:
        return _REQUEST.pack(
            _FC_C2S,
            tsn,
            _BLOCK_REQUEST_ID,
            0,
            manufacturer_code,
            image_type,
            file_version,
            file_offset,
            maximum_data_size,
        )
    return _REQUEST_WITH_PERIOD.pack(
        _FC_C2S,
        tsn,
        _BLOCK_REQUEST_ID,
        _MIN_BLOCK_PERIOD_PRESENT,
        manufacturer_code,
        image_type,
        file_version,
        file_offset,
        maximum_data_size,
        minimum_block_period,
    )


def decode_block_success(data: bytes) -> tuple[int, int, int, int, int, int, bytes] | None:
    """(fc, tsn, manufacturer, image type, version, offset, image data) of an Image Block Response SUCCESS whose
    length matches its DataSize exactly; None for any other frame."""
    if len(data) < _RESPONSE_HEAD_SIZE:
        return None
    fc, tsn, command, status, manufacturer, image_type, version, offset, size = _RESPONSE_HEAD.unpack_from(data)
    if command != _BLOCK_RESPONSE_ID or status != 0 or fc not in _FC_S2C or len(data) != _RESPONSE_HEAD_SIZE + size:
        return None
    return fc, tsn, manufacturer, image_type, version, offset, data[_RESPONSE_HEAD_SIZE:]


def decode_block_request(data: bytes) -> tuple[int, int, int, int, int, int, int | None] | None:
    """(tsn, manufacturer, image type, version, offset, maximum data size, MinimumBlockPeriod or None) of an
    Image Block Request without RequestNodeAddress; None for any other frame."""
    size = len(data)
    if size == _REQUEST_SIZE:
        fc, tsn, command, field_control, manufacturer, image_type, version, offset, maximum = _REQUEST.unpack(data)
        period = None
        if field_control != 0:
            return None
    elif size == _REQUEST_WITH_PERIOD_SIZE:
        fc, tsn, command, field_control, manufacturer, image_type, version, offset, maximum, period = (
            _REQUEST_WITH_PERIOD.unpack(data)
        )
        if field_control != _MIN_BLOCK_PERIOD_PRESENT:
            return None
    else:
        return None
    if command != _BLOCK_REQUEST_ID or fc not in _FC_C2S_ANY:
        return None
    return tsn, manufacturer, image_type, version, offset, maximum, period


def encode_block_response(
    tsn: int, manufacturer_code: int, image_type: int, file_version: int, file_offset: int, chunk: bytes
) -> bytes:
    """Image Block Response SUCCESS (SPEC.md §2.6), FC 0x19."""
    return (
        _RESPONSE_HEAD.pack(
            _FC_S2C_NO_DEFAULT_RESPONSE,
            tsn,
            _BLOCK_RESPONSE_ID,
            0,
            manufacturer_code,
            image_type,
            file_version,
            file_offset,
            len(chunk),
        )
        + chunk
    )


def encode_wait_for_data(tsn: int, current_time: int, request_time: int, minimum_block_period: int | None) -> bytes:
    """Image Block Response WAIT_FOR_DATA (SPEC.md §2.6), FC 0x19: what a busy server answers every client it
    does not admit yet, once a minute each, so it is on the hot path of a crowded HAN."""
    head = (_FC_S2C_NO_DEFAULT_RESPONSE, tsn, _BLOCK_RESPONSE_ID, _WAIT_FOR_DATA, current_time, request_time)
    if minimum_block_period is None:
        return _WAIT.pack(*head)
    return _WAIT_WITH_PERIOD.pack(*head, minimum_block_period)
