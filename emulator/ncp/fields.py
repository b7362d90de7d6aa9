"""EZSP parameter layouts compiled into readers and writers: one function per field, chosen once per command.

bellows' command tables name each parameter's zigpy type (`uint8_t`, an enum, `LVBytes`, `EmberApsFrame`, ...).
Serializing through those types builds a zigpy object per field and, for structures, binds every constructor
argument by signature: most of what a frame costs the NCP. Here each type becomes a function that reads or writes
its bytes directly, with the same wire format and the same checks where they matter (an enum value must be a
member, an integer must fit its width, a length-prefixed string its prefix). Types without a fast form keep
zigpy's own (de)serialization, so every command still works; the fast forms are held byte-equal to zigpy's by
the tests.

`EmberApsFrame`, in every unicast, callback and ZDO answer, is read into `ApsFrame`: the same field names, plain
values, no zigpy constructor. Writers accept either class.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import bellows.types as bt
import zigpy.types as zt

Writer = Callable[[Any], bytes]
Reader = Callable[[bytes, int], tuple[Any, int]]

_APS_LAYOUT = struct.Struct("<HHBBHHB")
_APS_FIELDS = (
    ("profileId", zt.uint16_t),
    ("clusterId", zt.uint16_t),
    ("sourceEndpoint", zt.uint8_t),
    ("destinationEndpoint", zt.uint8_t),
    ("options", bt.EmberApsOption),
    ("groupId", zt.uint16_t),
    ("sequence", zt.uint8_t),
)
# The fast form is used only while bellows' structure is the one it was written from.
APS_FAST = [(f.name, f.type) for f in bt.EmberApsFrame.fields] == list(_APS_FIELDS)


@dataclass(slots=True)
class ApsFrame:
    """An EmberApsFrame (UG100) as plain values, under the field names bellows' structure has."""

    profileId: int
    clusterId: int
    sourceEndpoint: int
    destinationEndpoint: int
    options: bt.EmberApsOption
    groupId: int
    sequence: int

    def serialize(self) -> bytes:
        return write_aps(self)


def write_aps(frame: Any) -> bytes:
    """An `ApsFrame` or bellows' `EmberApsFrame`, as UG100 lays it out."""
    return _APS_LAYOUT.pack(
        frame.profileId,
        frame.clusterId,
        frame.sourceEndpoint,
        frame.destinationEndpoint,
        frame.options,
        frame.groupId,
        frame.sequence,
    )


def read_aps(data: bytes, at: int) -> tuple[ApsFrame, int]:
    try:
        profile, cluster, src_ep, dst_ep, options, group, sequence = _APS_LAYOUT.unpack_from(data, at)
    except struct.error:
        raise ValueError(f"EmberApsFrame needs {_APS_LAYOUT.size} bytes, {len(data) - at} left") from None
    frame = ApsFrame(profile, cluster, src_ep, dst_ep, bt.EmberApsOption(options), group, sequence)
    return frame, at + _APS_LAYOUT.size


def _int_writer(type_: type[zt.FixedIntType]) -> Writer:
    size, order, signed = type_._bits // 8, type_._byteorder, type_._signed
    if issubclass(type_, enum.Enum):

        def write_member(value: Any) -> bytes:
            member = value if isinstance(value, type_) else type_(value)  # not a member: ValueError, as zigpy
            return int.to_bytes(member, size, order, signed=signed)

        return write_member

    def write_int(value: Any) -> bytes:
        return int.to_bytes(value, size, order, signed=signed)  # too wide: OverflowError

    return write_int


def _int_reader(type_: type[zt.FixedIntType]) -> Reader:
    size, order, signed = type_._bits // 8, type_._byteorder, type_._signed

    def read_int(data: bytes, at: int) -> tuple[Any, int]:
        end = at + size
        if end > len(data):
            raise ValueError(f"{type_.__name__} needs {size} bytes, {len(data) - at} left")
        return type_(int.from_bytes(data[at:end], order, signed=signed)), end

    return read_int


def _lv_writer(type_: type[zt.LVBytes]) -> Writer:
    prefix = type_._prefix_length
    limit = 256**prefix - 1

    def write_lv(value: Any) -> bytes:
        if len(value) >= limit:
            raise ValueError(f"{type_.__name__} of {len(value)} bytes: expected fewer than {limit}")
        return len(value).to_bytes(prefix, "little") + bytes(value)

    return write_lv


def _lv_reader(type_: type[zt.LVBytes]) -> Reader:
    prefix = type_._prefix_length

    def read_lv(data: bytes, at: int) -> tuple[Any, int]:
        start = at + prefix
        end = start + int.from_bytes(data[at:start], "little")
        if start > len(data) or end > len(data):
            raise ValueError(f"{type_.__name__} runs past the end of the frame")
        return type_(data[start:end]), end

    return read_lv


def _octets_writer(type_: Any) -> Writer:
    length = type_._length

    def write_octets(value: Any) -> bytes:
        octets = bytes(value if isinstance(value, type_) else type_(value))
        if len(octets) != length:
            raise ValueError(f"{type_.__name__} of {len(octets)} bytes: expected {length}")
        return octets

    return write_octets


def _octets_reader(type_: Any) -> Reader:
    length = type_._length

    def read_octets(data: bytes, at: int) -> tuple[Any, int]:
        end = at + length
        if end > len(data):
            raise ValueError(f"{type_.__name__} needs {length} bytes, {len(data) - at} left")
        return type_(data[at:end]), end

    return read_octets


def _is_octets(type_: Any) -> bool:
    """A fixed run of bytes, such as an EUI64: zigpy's list of `length` uint8_t, in wire order."""
    return (
        isinstance(type_, type)
        and issubclass(type_, zt.FixedList)
        and type_._item_type is zt.uint8_t
        and isinstance(type_._length, int)
    )


def _zigpy_writer(type_: Any) -> Writer:
    def write(value: Any) -> bytes:
        return bytes((value if isinstance(value, type_) else type_(value)).serialize())

    return write


def _zigpy_reader(type_: Any) -> Reader:
    def read(data: bytes, at: int) -> tuple[Any, int]:
        value, rest = type_.deserialize(data[at:])
        return value, len(data) - len(rest)

    return read


def _is_int(type_: type) -> bool:
    return issubclass(type_, zt.FixedIntType) and type_._bits is not None and type_._bits % 8 == 0


def writer(type_: Any) -> Writer:
    """The function that writes a value of this field type."""
    if type_ is bt.EmberApsFrame and APS_FAST:
        return write_aps
    if _is_int(type_):
        return _int_writer(type_)
    if isinstance(type_, type) and issubclass(type_, zt.LVBytes):
        return _lv_writer(type_)
    if _is_octets(type_):
        return _octets_writer(type_)
    return _zigpy_writer(type_)


def reader(type_: Any) -> Reader:
    """The function that reads a value of this field type at an offset: (value, offset after it)."""
    if type_ is bt.EmberApsFrame and APS_FAST:
        return read_aps
    if _is_int(type_):
        return _int_reader(type_)
    if isinstance(type_, type) and issubclass(type_, zt.LVBytes):
        return _lv_reader(type_)
    if _is_octets(type_):
        return _octets_reader(type_)
    return _zigpy_reader(type_)
