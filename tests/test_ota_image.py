"""Upgrade-file model: the DCC samples, every validation problem, zigpy interop and byte-exact round trips."""

from __future__ import annotations

import dataclasses
import itertools
import struct
from pathlib import Path

import pytest
import zigpy.types as t
from hypothesis import given, settings
from hypothesis import strategies as st
from zigpy.ota.image import (
    ElementTagId,
    FieldControl,
    HeaderString,
    HWVersion,
    LVBytes32,
    OTAImage,
    OTAImageHeader,
    SubElement,
    parse_ota_image,
)

from emulator.errors import InputError
from emulator.ota.image import (
    ImageError,
    Problem,
    UpgradeImage,
    build_gb,
    build_zigbee,
    load,
    parse,
    read,
    validate,
)

ALL_TAGS = (0x0000, 0x0001, 0x0002, 0x0003, 0x0004, 0x0005, 0x0006, 0xF000, 0xFFFF)
FC_COMBINATIONS = list(itertools.product((False, True), repeat=3))


def _optional(with_credential: bool, with_destination: bool, with_hw: bool) -> dict:
    return {
        "security_credential_version": 0x05 if with_credential else None,
        "destination": "00:0D:6F:00:00:19:8B:36" if with_destination else None,
        "hw_min": 0x0102 if with_hw else None,
        "hw_max": 0x0304 if with_hw else None,
    }


def _patch(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


def _problem_at(problems: list[Problem], offset: int, field: str) -> Problem:
    matches = [p for p in problems if p.offset == offset and p.field == field]
    assert matches, f"no {field} problem @{offset} in {problems}"
    return matches[0]


# --- the DCC samples (F-04) -------------------------------------------------------------------------------------


def test_ppmid_sample_has_the_documented_facts(ppmid_image_path: Path) -> None:
    data = ppmid_image_path.read_bytes()
    image = parse(data)
    header = image.header
    assert len(data) == 295
    assert image.kind == "gb"
    assert header.upgrade_file_id == 0x0BEEF11E
    assert header.header_version == 0x0100
    assert header.header_length == 60
    assert header.field_control == 0x0004
    assert header.manufacturer_id == 0x121D
    assert header.image_type == 0x0084
    assert header.file_version == 0xACDCACDC
    assert header.stack_version == 2
    assert bytes(header.header_string) == b"I am a GFI PPMID firmware image "
    assert header.image_size == 295
    assert (header.minimum_hardware_version, header.maximum_hardware_version) == (0x1111, 0x1211)
    assert header.security_credential_version is None
    assert header.upgrade_file_destination is None
    assert image.signature is None
    assert image.subelements == ()
    assert image.manufacturer_image == data[60:]
    assert image.manufacturer_image_offset == 60


def test_esme_sample_has_the_documented_facts(esme_image_path: Path) -> None:
    data = esme_image_path.read_bytes()
    image = parse(data)
    assert len(data) == 361
    assert image.kind == "gb"
    assert image.header.image_type == 0x0000
    assert image.header.image_size == 361
    assert image.header.header_length == 60
    assert bytes(image.header.header_string) == b"I am a GFI ESME[] firmware image"
    assert data[-66:-64] == b"\x00\x40"
    assert image.signature == data[-64:]
    assert image.manufacturer_image == data[60:295]


@pytest.mark.parametrize("name", ["ppmid_image_path", "esme_image_path"])
def test_samples_reserialize_byte_identically(name: str, request: pytest.FixtureRequest) -> None:
    data = request.getfixturevalue(name).read_bytes()
    assert parse(data).serialize() == data
    assert load(request.getfixturevalue(name)).serialize() == data


def test_forcing_zigbee_on_a_gb_sample_reports_the_failed_walk(ppmid_image_path: Path) -> None:
    data = ppmid_image_path.read_bytes()
    problems = validate(data, kind="zigbee")
    assert [p.field for p in problems] == ["subelement"]
    assert problems[0].offset == 60


def test_unsigned_reading_keeps_the_trailer_in_the_manufacturer_image(esme_image_path: Path) -> None:
    data = esme_image_path.read_bytes()
    image = parse(data, signed=False)
    assert image.signature is None
    assert image.manufacturer_image == data[60:]
    assert image.serialize() == data


# --- validation: every problem, with its offset ------------------------------------------------------------------


def test_wrong_magic_is_reported_at_offset_0(ppmid_image_path: Path) -> None:
    data = _patch(ppmid_image_path.read_bytes(), 0, struct.pack("<I", 0x12345678))
    problem = _problem_at(validate(data), 0, "upgrade_file_id")
    assert problem.message == "magic is 0x12345678, expected 0x0BEEF11E"


def test_wrong_header_version_is_reported_at_offset_4(ppmid_image_path: Path) -> None:
    data = _patch(ppmid_image_path.read_bytes(), 4, struct.pack("<H", 0x0200))
    assert "0x0200, expected 0x0100" in _problem_at(validate(data), 4, "header_version").message


@pytest.mark.parametrize("declared", [0, 55, 56, 61, 69, 0xFFFF])
def test_header_length_inconsistent_with_field_control_is_reported(ppmid_image_path: Path, declared: int) -> None:
    data = _patch(ppmid_image_path.read_bytes(), 6, struct.pack("<H", declared))
    problem = _problem_at(validate(data), 6, "header_length")
    assert f"header length is {declared}, expected 60 for field control 0x0004" in problem.message


def test_total_image_size_differing_from_file_length_is_reported(ppmid_image_path: Path) -> None:
    data = ppmid_image_path.read_bytes() + b"\x00"
    problem = _problem_at(validate(data), 52, "image_size")
    assert problem.message == "total image size is 295, expected the file length 296"


def test_minimum_hardware_version_above_maximum_is_reported(ppmid_image_path: Path) -> None:
    data = _patch(ppmid_image_path.read_bytes(), 56, struct.pack("<HH", 0x1300, 0x1211))
    problem = _problem_at(validate(data), 56, "minimum_hardware_version")
    assert "0x1300 is above the maximum 0x1211" in problem.message


def test_subelement_running_past_the_end_is_reported() -> None:
    data = build_zigbee(1, 2, 3, payload=b"firmware").serialize()
    broken = _patch(data, 56 + 2, struct.pack("<I", 9))
    problem = _problem_at(validate(broken, kind="zigbee"), 56, "subelement")
    assert "sub-element 0x0000 of 9 bytes runs to 71, past the end of the image at 70" in problem.message


def test_subelement_header_cut_short_is_reported() -> None:
    data = build_zigbee(1, 2, 3, payload=b"fw").serialize() + b"\x00\xf0\x01"
    data = _patch(data, 52, struct.pack("<I", len(data)))
    problem = _problem_at(validate(data, kind="zigbee"), 64, "subelement")
    assert "3 bytes left" in problem.message


def test_required_trailer_with_a_wrong_length_field_is_reported(esme_image_path: Path) -> None:
    data = _patch(esme_image_path.read_bytes(), 295, b"\x40\x00")
    problem = _problem_at(validate(data, signed=True), 295, "trailer")
    assert "length is 0x4000, expected 0x0040" in problem.message
    assert validate(data) == []  # without the requirement, the body is an unsigned Manufacturer Image


def test_required_trailer_on_a_short_body_is_reported() -> None:
    data = build_gb(1, 2, 3, payload=b"tiny").serialize()
    problem = _problem_at(validate(data, signed=True), 56, "trailer")
    assert "too short for the 66-byte signature trailer" in problem.message


def test_required_trailer_on_a_zigbee_file_is_reported() -> None:
    data = build_zigbee(1, 2, 3, payload=b"x" * 100).serialize()
    assert [p.field for p in validate(data, kind="zigbee", signed=True)] == ["trailer"]


def test_every_problem_is_reported_in_one_error(ppmid_image_path: Path) -> None:
    data = ppmid_image_path.read_bytes()
    data = _patch(data, 0, struct.pack("<I", 0x12345678))
    data = _patch(data, 4, struct.pack("<H", 0x0001))
    data = _patch(data, 56, struct.pack("<HH", 0x2000, 0x1000))
    data = data[:-5]
    problems = validate(data)
    assert [(p.offset, p.field) for p in problems] == [
        (0, "upgrade_file_id"),
        (4, "header_version"),
        (52, "image_size"),
        (56, "minimum_hardware_version"),
    ]
    with pytest.raises(ImageError) as caught:
        parse(data, source="file.ota")
    message = str(caught.value)
    assert message.startswith("file.ota: 4 problems: @0 magic is 0x12345678, expected 0x0BEEF11E; @4 ")
    assert "\n" not in message
    assert caught.value.problems == tuple(problems)


@pytest.mark.parametrize(
    ("length", "offset", "field"),
    [
        (0, 0, "upgrade_file_id"),
        (3, 0, "upgrade_file_id"),
        (5, 4, "header_version"),
        (9, 8, "field_control"),
        (17, 14, "file_version"),
        (30, 20, "header_string"),
        (55, 52, "image_size"),
        (57, 56, "minimum_hardware_version"),
        (59, 58, "maximum_hardware_version"),
    ],
)
def test_a_file_too_short_for_a_field_names_that_field(
    ppmid_image_path: Path, length: int, offset: int, field: str
) -> None:
    data = ppmid_image_path.read_bytes()[:length]
    problem = validate(data)[-1]
    assert (problem.offset, problem.field) == (offset, field)
    assert f"file ends at {length}, too short" in problem.message


def test_a_destination_cut_short_is_reported() -> None:
    data = build_gb(1, 2, 3, payload=b"p", destination="01:02:03:04:05:06:07:08").serialize()
    problem = validate(data[:60])[-1]
    assert (problem.offset, problem.field) == (56, "upgrade_file_destination")


def test_image_error_is_an_input_error() -> None:
    with pytest.raises(InputError):
        parse(b"\x00" * 10)


# --- loading files -----------------------------------------------------------------------------------------------


def test_load_names_the_path_for_each_file_error(tmp_path: Path, ppmid_image_path: Path) -> None:
    empty = tmp_path / "empty.ota"
    empty.write_bytes(b"")
    truncated = tmp_path / "cut.ota"
    truncated.write_bytes(ppmid_image_path.read_bytes()[:40])
    cases = {
        tmp_path / "missing.ota": "no such file",
        tmp_path: "is a directory",
        empty: "file is empty",
        truncated: "1 problem: @20 file ends at 40",
    }
    for path, expected in cases.items():
        with pytest.raises(ImageError) as caught:
            load(path)
        assert str(caught.value).startswith(f"{path}: ")
        assert expected in str(caught.value)


# --- kinds, sub-elements, headers --------------------------------------------------------------------------------


def test_zigbee_file_keeps_every_subelement_byte_for_byte() -> None:
    extra = [
        SubElement(tag_id=ElementTagId(tag), data=LVBytes32(bytes([tag & 0xFF]) * (tag % 7 + 1)))
        for tag in ALL_TAGS[1:]
    ] + [SubElement(tag_id=ElementTagId(0x0100), data=LVBytes32(b"unknown"))]
    built = build_zigbee(0x1002, 0x5678, 5, payload=b"\x01\x02\x03", subelements=extra)
    data = built.serialize()
    image = parse(data)
    assert image.kind == "zigbee"
    assert [int(e.tag_id) for e in image.subelements] == [0x0000, *ALL_TAGS[1:], 0x0100]
    assert [bytes(e.data) for e in image.subelements[1:]] == [bytes(e.data) for e in extra]
    assert image.manufacturer_image == b"\x01\x02\x03"
    assert image.manufacturer_image_offset == 56 + 6
    assert image.serialize() == data
    assert image.header.image_size == len(data) == 56 + sum(6 + len(e.data) for e in image.subelements)


@pytest.mark.parametrize("first_tag", ALL_TAGS)
def test_a_known_first_tag_makes_a_zigbee_file(first_tag: int) -> None:
    header = build_gb(1, 2, 3, payload=b"").serialize()
    data = header + SubElement(tag_id=ElementTagId(first_tag), data=LVBytes32(b"abc")).serialize()
    data = _patch(data, 52, struct.pack("<I", len(data)))
    image = parse(data)
    assert image.kind == "zigbee"
    assert image.manufacturer_image == (b"abc" if first_tag == 0 else b"")


def test_an_unknown_first_tag_makes_a_gb_file() -> None:
    header = build_gb(1, 2, 3, payload=b"").serialize()
    data = header + SubElement(tag_id=ElementTagId(0x0100), data=LVBytes32(b"abc")).serialize()
    data = _patch(data, 52, struct.pack("<I", len(data)))
    image = parse(data)
    assert image.kind == "gb"
    assert image.manufacturer_image == data[56:]
    assert parse(data, kind="zigbee").subelements[0].tag_id == 0x0100


def test_reserved_field_control_bits_survive_a_round_trip() -> None:
    data = build_gb(1, 2, 3, payload=b"payload", hw_min=1, hw_max=2).serialize()
    data = _patch(data, 8, struct.pack("<H", 0x8004))
    image = parse(data)
    assert image.header.field_control == 0x8004
    assert image.serialize() == data


def test_the_total_size_follows_every_change() -> None:
    image = build_gb(1, 2, 3, payload=b"abc", hw_min=1, hw_max=1)
    bigger = dataclasses.replace(image, body=b"x" * 1000, signature=bytes(64))
    assert bigger.header.image_size == len(bigger.serialize()) == 60 + 1000 + 66
    bigger.header.image_size = 7  # a caller's stale edit never reaches the bytes
    assert struct.unpack_from("<I", bigger.serialize(), 52)[0] == 1126


def test_manufacturer_image_of_a_zigbee_file_without_upgrade_tag_is_empty() -> None:
    image = UpgradeImage(
        header=build_zigbee(1, 2, 3, payload=b"").header,
        kind="zigbee",
        subelements=(SubElement(tag_id=ElementTagId(0xF000), data=LVBytes32(b"vendor")),),
    )
    assert image.manufacturer_image == b""
    assert image.manufacturer_image_offset is None


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"manufacturer_id": 0x1FFFF}, "manufacturer_id 0x1ffff is out of range"),
        ({"file_version": 1 << 32}, "file_version 0x100000000 is out of range"),
        ({"header_string": "x" * 33}, "header string is 33 bytes"),
        ({"hw_min": 1}, "give both hw_min and hw_max"),
        ({"hw_min": 3, "hw_max": 2}, "hw_min 0x0003 is above hw_max 0x0002"),
        ({"destination": "00:11"}, "is not an EUI64"),
        ({"security_credential_version": 256}, "security_credential_version 0x100 is out of range"),
    ],
)
def test_builders_refuse_values_that_do_not_fit(kwargs: dict, expected: str) -> None:
    arguments = {"manufacturer_id": 1, "image_type": 2, "file_version": 3, "payload": b"p", **kwargs}
    for build in (build_gb, build_zigbee):
        with pytest.raises(ImageError, match=expected):
            build(**arguments)


def test_direct_construction_refuses_mixed_kinds() -> None:
    header = build_gb(1, 2, 3, payload=b"").header
    with pytest.raises(ImageError, match="defined for GB Upgrade Images only"):
        UpgradeImage(header=header, kind="zigbee", signature=bytes(64))
    with pytest.raises(ImageError, match="expected no sub-elements"):
        UpgradeImage(header=header, kind="gb", subelements=(SubElement(tag_id=0, data=LVBytes32(b"")),))
    with pytest.raises(ImageError, match="signature is 63 bytes"):
        UpgradeImage(header=header, kind="gb", signature=bytes(63))


# --- interop with zigpy ------------------------------------------------------------------------------------------


def _zigpy_header(fc_bits: tuple[bool, bool, bool], size: int) -> OTAImageHeader:
    with_credential, with_destination, with_hw = fc_bits
    fc = FieldControl(0)
    length = 56
    if with_credential:
        fc |= FieldControl.SECURITY_CREDENTIAL_VERSION_PRESENT
        length += 1
    if with_destination:
        fc |= FieldControl.DEVICE_SPECIFIC_FILE_PRESENT
        length += 8
    if with_hw:
        fc |= FieldControl.HARDWARE_VERSIONS_PRESENT
        length += 4
    return OTAImageHeader(
        upgrade_file_id=OTAImageHeader.MAGIC_VALUE,
        header_version=0x0100,
        header_length=length,
        field_control=fc,
        manufacturer_id=0x1234,
        image_type=0x5678,
        file_version=0x01020304,
        stack_version=2,
        header_string=HeaderString("zigpy built"),
        image_size=length + size,
        security_credential_version=t.uint8_t(7) if with_credential else None,
        upgrade_file_destination=t.EUI64.convert("11:22:33:44:55:66:77:88") if with_destination else None,
        minimum_hardware_version=HWVersion(0x0010) if with_hw else None,
        maximum_hardware_version=HWVersion(0x0020) if with_hw else None,
    )


@pytest.mark.parametrize("fc_bits", FC_COMBINATIONS)
def test_zigpy_reads_our_zigbee_files(fc_bits: tuple[bool, bool, bool]) -> None:
    ours = build_zigbee(
        0x1234, 0x5678, 0x01020304, payload=b"firmware bytes", header_string="ours", **_optional(*fc_bits)
    )
    theirs, rest = parse_ota_image(ours.serialize())
    assert rest == b""
    assert isinstance(theirs, OTAImage)
    assert theirs.header == ours.header
    assert theirs.header.as_dict() == ours.header.as_dict()
    assert [(s.tag_id, bytes(s.data)) for s in theirs.subelements] == [(0, b"firmware bytes")]


@pytest.mark.parametrize("fc_bits", FC_COMBINATIONS)
def test_we_read_zigpy_built_files(fc_bits: tuple[bool, bool, bool]) -> None:
    elements = [
        SubElement(tag_id=ElementTagId.UPGRADE_IMAGE, data=LVBytes32(b"\xaa" * 40)),
        SubElement(tag_id=ElementTagId.IMAGE_INTEGRITY_CODE, data=LVBytes32(b"\x55" * 16)),
        SubElement(tag_id=ElementTagId(0xF001), data=LVBytes32(b"vendor")),
    ]
    size = sum(6 + len(e.data) for e in elements)
    theirs = OTAImage(header=_zigpy_header(fc_bits, size), subelements=elements)
    data = theirs.serialize()
    ours = parse(data)
    assert ours.kind == "zigbee"
    assert ours.header == theirs.header
    assert list(ours.subelements) == elements
    assert ours.manufacturer_image == b"\xaa" * 40
    assert ours.serialize() == data


# --- properties --------------------------------------------------------------------------------------------------

_u16 = st.integers(0, 0xFFFF)
_hw = st.one_of(st.none(), st.tuples(_u16, _u16).map(sorted))
_subelement = st.builds(
    lambda tag, data: SubElement(tag_id=ElementTagId(tag), data=LVBytes32(data)),
    st.integers(0, 0xFFFF),
    st.binary(max_size=40),
)
_common = {
    "manufacturer_id": _u16,
    "image_type": _u16,
    "file_version": st.integers(0, 0xFFFFFFFF),
    "stack_version": _u16,
    "header_string": st.binary(max_size=32),
    "hw": _hw,
    "destination": st.one_of(st.none(), st.binary(min_size=8, max_size=8).map(t.EUI64)),
    "security_credential_version": st.one_of(st.none(), st.integers(0, 0xFF)),
    "payload": st.binary(max_size=300),
}


def _build(kind: str, hw: list[int] | None, extra: object, **kwargs: object) -> UpgradeImage:
    hw_min, hw_max = hw if hw is not None else (None, None)
    if kind == "gb":
        return build_gb(hw_min=hw_min, hw_max=hw_max, signature=extra, **kwargs)
    return build_zigbee(hw_min=hw_min, hw_max=hw_max, subelements=extra, **kwargs)


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(["gb", "zigbee"]),
    signature=st.one_of(st.none(), st.binary(min_size=64, max_size=64)),
    extra=st.lists(_subelement, max_size=4),
    **_common,
)
def test_build_parse_build_is_the_identity(kind: str, signature: bytes | None, extra: list, hw, **kwargs) -> None:
    built = _build(kind, hw, signature if kind == "gb" else extra, **kwargs)
    data = built.serialize()
    signed = None if kind == "zigbee" else signature is not None
    parsed = parse(data, kind=kind, signed=signed)
    assert parsed == built
    assert parsed.serialize() == data
    assert parsed.header.image_size == len(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_image_error(data: bytes) -> None:
    try:
        image = parse(data)
    except ImageError:
        return
    assert image.serialize() == data


@settings(max_examples=200, deadline=None)
@given(
    fc=st.integers(0, 0xFFFF),
    header_length=st.integers(0, 0xFFFF),
    fields=st.binary(min_size=42, max_size=42),
    tail=st.binary(max_size=200),
    fix_size=st.booleans(),
    kind=st.sampled_from([None, "gb", "zigbee"]),
    signed=st.sampled_from([None, True, False]),
)
def test_files_with_a_valid_magic_parse_exactly_or_raise_image_error(
    fc: int, header_length: int, fields: bytes, tail: bytes, fix_size: bool, kind, signed
) -> None:
    data = struct.pack("<IHHH", 0x0BEEF11E, 0x0100, header_length, fc) + fields + tail
    if fix_size:
        data = _patch(data, 52, struct.pack("<I", len(data)))
    try:
        image = parse(data, kind=kind, signed=signed)
    except ImageError as exc:
        assert exc.problems
        return
    assert image.serialize() == data


def _valid_files(ppmid: Path, esme: Path) -> list[bytes]:
    extra = [SubElement(tag_id=ElementTagId(tag), data=LVBytes32(b"\x01" * 5)) for tag in ALL_TAGS[1:]]
    return [
        ppmid.read_bytes(),
        esme.read_bytes(),
        build_zigbee(1, 2, 3, payload=b"z" * 50, subelements=extra, **_optional(True, True, True)).serialize(),
        build_gb(1, 2, 3, payload=b"g" * 10, signature=bytes(range(64)), **_optional(True, True, False)).serialize(),
    ]


def test_every_truncation_of_a_valid_file_raises_image_error(ppmid_image_path: Path, esme_image_path: Path) -> None:
    for data in _valid_files(ppmid_image_path, esme_image_path):
        for kind in (None, "gb", "zigbee"):
            for length in range(len(data)):
                with pytest.raises(ImageError):
                    parse(data[:length], kind=kind)


def test_reading_reports_header_fields_even_when_invalid(ppmid_image_path: Path) -> None:
    reading = read(ppmid_image_path.read_bytes()[:200])
    assert reading.image is None
    assert reading.fields["manufacturer_id"] == 0x121D
    assert reading.fields["maximum_hardware_version"] == 0x1211
    assert [p.field for p in reading.problems] == ["image_size"]
