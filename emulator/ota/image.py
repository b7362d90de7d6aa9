"""OTA upgrade files: standard Zigbee OTA files and GB Upgrade Images, one model, byte-exact both ways.

Both kinds share the Zigbee OTA header (SPEC.md §5.1, zigpy's `OTAImageHeader`). They differ after it:

* **zigbee** — a sequence of sub-elements `tag u16 | length u32 | data` up to TotalImageSize (SPEC.md §5.3); the
  firmware sits in tag 0x0000, signature/certificate/integrity tags and manufacturer tags (0xF000–0xFFFF) are kept
  byte for byte;
* **gb** — the raw Manufacturer Image with no sub-element framing, optionally followed by the trailer `00 40` (the
  2-byte big-endian length 64) and a 64-byte ECDSA P-256 signature (SPEC.md §8.4, the DCC DUIS samples).

The bytes do not say which kind a file is, so reading applies one rule (see `read`). Reading never trusts the file:
every check is done on raw offsets first so that a broken file yields a list of `Problem`s (each with its offset)
instead of an exception from deep inside a decoder.
"""

from __future__ import annotations

import os
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import zigpy.types as t
from zigpy.ota.image import (
    ElementTagId,
    FieldControl,
    HeaderString,
    HWVersion,
    LVBytes32,
    OTAImageHeader,
    SubElement,
)

from emulator.errors import InputError
from emulator.keys import SIGNATURE_LENGTH
from emulator.structs import replaced

Kind = Literal["gb", "zigbee"]
KINDS: tuple[Kind, ...] = ("gb", "zigbee")

MAGIC = OTAImageHeader.MAGIC_VALUE
HEADER_VERSION = 0x0100
FIXED_HEADER_LENGTH = 56
MAX_HEADER_LENGTH = 69
SUBELEMENT_OVERHEAD = 6
TRAILER_MARK = SIGNATURE_LENGTH.to_bytes(2, "big")
TRAILER_LENGTH = len(TRAILER_MARK) + SIGNATURE_LENGTH
MANUFACTURER_TAGS = range(0xF000, 0x10000)
DEFINED_TAGS = frozenset(int(tag) for tag in ElementTagId)

# SPEC.md §5.1: the fixed part of the header as (zigpy field name, offset, size, what a reader calls it).
_FIXED_FIELDS: tuple[tuple[str, int, int, str], ...] = (
    ("upgrade_file_id", 0, 4, "magic"),
    ("header_version", 4, 2, "header version"),
    ("header_length", 6, 2, "header length"),
    ("field_control", 8, 2, "field control"),
    ("manufacturer_id", 10, 2, "manufacturer code"),
    ("image_type", 12, 2, "image type"),
    ("file_version", 14, 4, "file version"),
    ("stack_version", 18, 2, "stack version"),
    ("header_string", 20, 32, "header string"),
    ("image_size", 52, 4, "total image size"),
)

# SPEC.md §5.1: optional fields in file order, each present when its field-control bit is set.
_OPTIONAL_FIELDS: tuple[tuple[str, int, FieldControl, str], ...] = (
    ("security_credential_version", 1, FieldControl.SECURITY_CREDENTIAL_VERSION_PRESENT, "security credential version"),
    ("upgrade_file_destination", 8, FieldControl.DEVICE_SPECIFIC_FILE_PRESENT, "upgrade file destination"),
    ("minimum_hardware_version", 2, FieldControl.HARDWARE_VERSIONS_PRESENT, "minimum hardware version"),
    ("maximum_hardware_version", 2, FieldControl.HARDWARE_VERSIONS_PRESENT, "maximum hardware version"),
)


class ImageError(InputError):
    """An upgrade file (or the values to build one) that does not make a valid Zigbee OTA / GB Upgrade Image."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file: where (`offset`), which field (a stable key), and what was expected."""

    offset: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"@{self.offset} {self.message}"


def header_length_for(field_control: int) -> int:
    """The header length the field control implies: 56 + 1·b0 + 8·b1 + 4·b2 (SPEC.md §5.1, F-01)."""
    return FIXED_HEADER_LENGTH + sum(size for _, size, bit, _ in _OPTIONAL_FIELDS if field_control & bit)


def is_known_tag(tag: int) -> bool:
    """Tags SPEC.md §5.3 defines (0x0000–0x0006) plus the manufacturer range 0xF000–0xFFFF."""
    return tag in DEFINED_TAGS or tag in MANUFACTURER_TAGS


@dataclass(frozen=True)
class UpgradeImage:
    """One upgrade file.

    `body` holds a GB image's raw Manufacturer Image (trailer excluded) and is empty for a zigbee file, whose
    content lives in `subelements`; `manufacturer_image` gives the firmware for either kind. The header's
    header length and total image size are derived, never trusted: construction rewrites them so that
    `header.image_size == len(serialize())` always holds.
    """

    header: OTAImageHeader
    kind: Kind
    body: bytes = b""
    subelements: tuple[SubElement, ...] = ()
    signature: bytes | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ImageError(f"upgrade image: kind is {self.kind!r}, expected one of {', '.join(KINDS)}")
        if self.kind == "zigbee" and (self.body or self.signature is not None):
            raise ImageError(
                "upgrade image: a Zigbee OTA file carries its content in sub-elements; a raw body and a "
                "signature trailer are defined for GB Upgrade Images only"
            )
        if self.kind == "gb" and self.subelements:
            raise ImageError("upgrade image: a GB Upgrade Image has a raw Manufacturer Image, expected no sub-elements")
        if self.signature is not None and len(self.signature) != SIGNATURE_LENGTH:
            raise ImageError(
                f"upgrade image: signature is {len(self.signature)} bytes, expected {SIGNATURE_LENGTH} (r‖s)"
            )
        fc = self.header.field_control or 0
        for name, _, bit, label in _OPTIONAL_FIELDS:
            if fc & bit and getattr(self.header, name) is None:
                raise ImageError(f"upgrade image: field control 0x{fc:04X} announces the {label}, but it has no value")
        object.__setattr__(self, "subelements", tuple(self.subelements))
        object.__setattr__(self, "header", self._sized_header(len(self._content())))

    @property
    def manufacturer_image(self) -> bytes:
        """GB: the raw body; zigbee: the data of the first Upgrade Image (0x0000) sub-element, or b"" if none."""
        if self.kind == "gb":
            return self.body
        for element in self.subelements:
            if element.tag_id == ElementTagId.UPGRADE_IMAGE:
                return bytes(element.data)
        return b""

    @property
    def manufacturer_image_offset(self) -> int | None:
        """Where `manufacturer_image` starts in the serialized file (None for a zigbee file without tag 0x0000)."""
        if self.kind == "gb":
            return self.header.header_length
        offset: int = self.header.header_length
        for element in self.subelements:
            if element.tag_id == ElementTagId.UPGRADE_IMAGE:
                return offset + SUBELEMENT_OVERHEAD
            offset += SUBELEMENT_OVERHEAD + len(element.data)
        return None

    def serialize(self) -> bytes:
        content = self._content()
        return self._sized_header(len(content)).serialize() + content

    def _content(self) -> bytes:
        if self.kind == "zigbee":
            return b"".join(element.serialize() for element in self.subelements)
        trailer = b"" if self.signature is None else TRAILER_MARK + self.signature
        return self.body + trailer

    def _sized_header(self, content_length: int) -> OTAImageHeader:
        length = header_length_for(self.header.field_control or 0)
        return replaced(self.header, header_length=length, image_size=length + content_length)


@dataclass(frozen=True)
class Reading:
    """What a lenient read found: the header fields it could read (zigpy `OTAImageHeader` names), the kind,
    every problem, and the image when there were none."""

    fields: dict[str, Any]
    kind: Kind | None
    problems: tuple[Problem, ...]
    image: UpgradeImage | None


def read(data: bytes, kind: Kind | None = None, *, signed: bool | None = None) -> Reading:
    """Read `data` as an upgrade file, collecting every problem rather than stopping at the first.

    Kind rule (when `kind` is None): the file is **zigbee** if its body — from the end of the header to
    TotalImageSize (or to the end of the file, if that comes first) — walks as a valid sequence of sub-elements
    ending exactly there, the first sub-element carries a known tag (0x0000–0x0006 or 0xF000–0xFFFF) and at
    least one sub-element carries data; otherwise it is **gb**: everything after the header is the raw
    Manufacturer Image, with a signature trailer if the last 66 bytes start with `00 40`. (So GB firmware that
    merely starts with six bytes looking like a sub-element header, such as zeros, stays GB: the walk fails
    further on, or finds only empty sub-elements, which carry no file.) A GB image whose whole body walks as
    sub-elements with data, or an unsigned one whose bytes at −66 read `00 40`, is read correctly by forcing
    `kind="gb"` and/or `signed`.

    `signed` (GB only; it implies `kind="gb"` unless kind is forced) replaces trailer detection: True requires
    the trailer and reports its length field if it is not 0x0040; False reads the whole body as the image.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} or None, not {kind!r}")
    fields: dict[str, Any] = {}
    problems: list[Problem] = []
    header_length = _read_header(data, fields, problems)
    if header_length is None:
        return Reading(fields, None, tuple(problems), None)
    problems += _hardware_range_problems(fields, header_length)
    kind, elements, body, signature, body_problems = _read_body(data, header_length, fields["image_size"], kind, signed)
    problems += body_problems
    if problems:
        return Reading(fields, kind, tuple(problems), None)
    header = OTAImageHeader(**fields)
    image = UpgradeImage(header=header, kind=kind, body=body, subelements=tuple(elements), signature=signature)
    return Reading(fields, kind, (), image)


def _read_header(data: bytes, fields: dict[str, Any], problems: list[Problem]) -> int | None:
    """Fill `fields` from the fixed and the optional header fields; the header's length, or None when the file
    ends inside it (the problem saying where is in `problems`)."""
    size = len(data)
    for name, offset, width, label in _FIXED_FIELDS:
        if size < offset + width:
            problems.append(_too_short(offset, name, label, width, size))
            return None
        raw = data[offset : offset + width]
        fields[name] = bytes(raw) if name == "header_string" else int.from_bytes(raw, "little")
    problems += _fixed_header_problems(fields, size)
    fc = fields["field_control"]
    offset = FIXED_HEADER_LENGTH
    for name, width, bit, label in _OPTIONAL_FIELDS:
        if not fc & bit:
            continue
        if size < offset + width:
            problems.append(_too_short(offset, name, label, width, size))
            return None
        raw = data[offset : offset + width]
        fields[name] = t.EUI64(raw) if name == "upgrade_file_destination" else int.from_bytes(raw, "little")
        offset += width
    return offset


def _hardware_range_problems(fields: dict[str, Any], header_length: int) -> list[Problem]:
    hw_min, hw_max = fields.get("minimum_hardware_version"), fields.get("maximum_hardware_version")
    if hw_min is None or hw_max is None or hw_min <= hw_max:
        return []
    message = f"minimum hardware version 0x{hw_min:04X} is above the maximum 0x{hw_max:04X}, expected min ≤ max"
    return [Problem(header_length - 4, "minimum_hardware_version", message)]


def _read_body(
    data: bytes, header_length: int, declared: int, kind: Kind | None, signed: bool | None
) -> tuple[Kind, list[SubElement], bytes, bytes | None, list[Problem]]:
    """(kind, sub-elements, GB body, GB signature, problems) of what follows the header, by `read`'s kind rule."""
    end = declared if header_length <= declared <= len(data) else len(data)
    elements: list[SubElement] = []
    walk_problems: list[Problem] = []
    if kind == "zigbee" or (kind is None and signed is None and is_known_tag(_first_tag(data, header_length, end))):
        elements, walk_problems = _walk(data, header_length, end)
    if kind is None:
        kind = "zigbee" if not walk_problems and any(len(e.data) for e in elements) else "gb"
    if kind == "gb":
        body, signature, trailer_problems = _split_trailer(data, header_length, signed)
        return kind, [], body, signature, trailer_problems
    if signed:
        walk_problems.append(
            Problem(
                header_length,
                "trailer",
                "a signature trailer was required, but the file is read as Zigbee OTA (sub-elements); the "
                "trailer is defined for GB Upgrade Images only",
            )
        )
    return kind, elements, b"", None, walk_problems


def validate(data: bytes, kind: Kind | None = None, *, signed: bool | None = None) -> list[Problem]:
    """Every problem in `data` (empty when it is a valid upgrade file); see `read` for the kind rule."""
    return list(read(data, kind, signed=signed).problems)


def parse(data: bytes, kind: Kind | None = None, source: str = "image", *, signed: bool | None = None) -> UpgradeImage:
    """Strictly parse an upgrade file; any problem raises `ImageError` naming `source` and listing them all."""
    try:
        reading = read(data, kind, signed=signed)
    except ImageError as exc:
        raise ImageError(f"{source}: {exc}", exc.problems) from None
    if reading.image is None:
        raise problems_error(source, reading.problems)
    return reading.image


def problems_error(source: str, problems: Sequence[Problem]) -> ImageError:
    """The one-line error for a file with problems: "<source>: N problems: @off what; @off what"."""
    count = len(problems)
    listed = "; ".join(str(problem) for problem in problems)
    return ImageError(f"{source}: {count} problem{'' if count == 1 else 's'}: {listed}", problems)


def read_file(path: str | os.PathLike[str], what: str = "an OTA upgrade file") -> bytes:
    """The bytes of a file the user named, or an `ImageError` saying why it cannot be one (`what` it should be)."""
    p = Path(path)
    try:
        if p.is_dir():
            raise ImageError(f"{p}: is a directory (expected {what})")
        data = p.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{p}: no such file (expected {what})") from None
    except OSError as exc:
        raise ImageError(f"{p}: cannot be read: {exc.strerror} (expected {what})") from None
    if not data:
        raise ImageError(f"{p}: file is empty (expected {what})")
    return data


def load(path: str | os.PathLike[str], kind: Kind | None = None, *, signed: bool | None = None) -> UpgradeImage:
    """Read and strictly parse an upgrade file; every failure is an `ImageError` naming the path."""
    return parse(read_file(path), kind, str(path), signed=signed)


def build_gb(
    manufacturer_id: int,
    image_type: int,
    file_version: int,
    *,
    payload: bytes,
    stack_version: int = 2,
    header_string: str | bytes = "",
    hw_min: int | None = None,
    hw_max: int | None = None,
    destination: t.EUI64 | str | None = None,
    security_credential_version: int | None = None,
    signature: bytes | None = None,
) -> UpgradeImage:
    """A GB Upgrade Image: header + `payload` as the raw Manufacturer Image (+ trailer if `signature` is given)."""
    header = make_header(
        manufacturer_id,
        image_type,
        file_version,
        stack_version=stack_version,
        header_string=header_string,
        hw_min=hw_min,
        hw_max=hw_max,
        destination=destination,
        security_credential_version=security_credential_version,
    )
    return UpgradeImage(header=header, kind="gb", body=bytes(payload), signature=signature)


def build_zigbee(
    manufacturer_id: int,
    image_type: int,
    file_version: int,
    *,
    payload: bytes,
    stack_version: int = 2,
    header_string: str | bytes = "",
    hw_min: int | None = None,
    hw_max: int | None = None,
    destination: t.EUI64 | str | None = None,
    security_credential_version: int | None = None,
    subelements: Sequence[SubElement] = (),
) -> UpgradeImage:
    """A standard Zigbee OTA file: header + an Upgrade Image sub-element (0x0000) holding `payload`, then any
    further `subelements` (signature, certificate, integrity or manufacturer tags) in the order given."""
    header = make_header(
        manufacturer_id,
        image_type,
        file_version,
        stack_version=stack_version,
        header_string=header_string,
        hw_min=hw_min,
        hw_max=hw_max,
        destination=destination,
        security_credential_version=security_credential_version,
    )
    upgrade = SubElement(tag_id=ElementTagId.UPGRADE_IMAGE, data=LVBytes32(payload))
    return UpgradeImage(header=header, kind="zigbee", subelements=(upgrade, *subelements))


def make_header(
    manufacturer_id: int,
    image_type: int,
    file_version: int,
    *,
    stack_version: int = 2,
    header_string: str | bytes = "",
    hw_min: int | None = None,
    hw_max: int | None = None,
    destination: t.EUI64 | str | None = None,
    security_credential_version: int | None = None,
) -> OTAImageHeader:
    """A header whose field control selects exactly the optional fields given; sizes are filled in by
    `UpgradeImage`."""
    for label, value, bits in (
        ("manufacturer_id", manufacturer_id, 16),
        ("image_type", image_type, 16),
        ("file_version", file_version, 32),
        ("stack_version", stack_version, 16),
        ("security_credential_version", security_credential_version, 8),
        ("hw_min", hw_min, 16),
        ("hw_max", hw_max, 16),
    ):
        if value is not None and not 0 <= value < 1 << bits:
            raise ImageError(f"{label} {value:#x} is out of range (expected 0..{(1 << bits) - 1:#x}, {bits} bits)")
    if (hw_min is None) != (hw_max is None):
        raise ImageError("hardware versions: give both hw_min and hw_max, or neither")
    if hw_min is not None and hw_max is not None and hw_min > hw_max:
        raise ImageError(f"hardware versions: hw_min 0x{hw_min:04X} is above hw_max 0x{hw_max:04X}, expected min ≤ max")
    fc = FieldControl(0)
    if security_credential_version is not None:
        fc |= FieldControl.SECURITY_CREDENTIAL_VERSION_PRESENT
    if destination is not None:
        fc |= FieldControl.DEVICE_SPECIFIC_FILE_PRESENT
    if hw_min is not None:
        fc |= FieldControl.HARDWARE_VERSIONS_PRESENT
    return OTAImageHeader(
        upgrade_file_id=MAGIC,
        header_version=HEADER_VERSION,
        header_length=header_length_for(fc),
        field_control=fc,
        manufacturer_id=manufacturer_id,
        image_type=image_type,
        file_version=file_version,
        stack_version=stack_version,
        header_string=_header_string(header_string),
        image_size=header_length_for(fc),
        security_credential_version=security_credential_version,
        upgrade_file_destination=None if destination is None else _eui64(destination),
        minimum_hardware_version=None if hw_min is None else HWVersion(hw_min),
        maximum_hardware_version=None if hw_max is None else HWVersion(hw_max),
    )


def _header_string(value: str | bytes) -> HeaderString:
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(raw) > HeaderString._size:
        raise ImageError(
            f"header string is {len(raw)} bytes (UTF-8), expected at most {HeaderString._size} (NUL-padded field)"
        )
    return HeaderString(raw.ljust(HeaderString._size, b"\x00"))


def _eui64(value: t.EUI64 | str) -> t.EUI64:
    """Accept the written form a user copies from a label or a log: 00:0D:6F:00:00:19:8B:36, dashes, or bare hex."""
    if isinstance(value, t.EUI64):
        return value
    digits = str(value).replace(":", "").replace("-", "")
    if len(digits) != 16 or not all(c in string.hexdigits for c in digits):
        raise ImageError(
            f"upgrade file destination {value!r} is not an EUI64 (expected 8 hex bytes, e.g. 00:0D:6F:00:00:19:8B:36)"
        )
    return t.EUI64(bytes.fromhex(digits)[::-1])


def _first_tag(data: bytes, offset: int, end: int) -> int:
    """The first sub-element's tag, or -1 when fewer than two bytes are left."""
    return int.from_bytes(data[offset : offset + 2], "little") if end - offset >= 2 else -1


def _too_short(offset: int, name: str, label: str, width: int, size: int) -> Problem:
    expected = f"expected at least {offset + width} bytes"
    return Problem(offset, name, f"file ends at {size}, too short for the {width}-byte {label} ({expected})")


def _fixed_header_problems(fields: dict[str, Any], size: int) -> list[Problem]:
    problems = []
    if fields["upgrade_file_id"] != MAGIC:
        magic = fields["upgrade_file_id"]
        problems.append(Problem(0, "upgrade_file_id", f"magic is 0x{magic:08X}, expected 0x{MAGIC:08X}"))
    if fields["header_version"] != HEADER_VERSION:
        version = fields["header_version"]
        problems.append(
            Problem(4, "header_version", f"header version is 0x{version:04X}, expected 0x{HEADER_VERSION:04X}")
        )
    fc = fields["field_control"]
    expected_length = header_length_for(fc)
    if fields["header_length"] != expected_length:
        problems.append(
            Problem(
                6,
                "header_length",
                f"header length is {fields['header_length']}, expected {expected_length} for field control 0x{fc:04X} "
                "(56 + 1·b0 + 8·b1 + 4·b2)",
            )
        )
    if fields["image_size"] != size:
        problems.append(
            Problem(52, "image_size", f"total image size is {fields['image_size']}, expected the file length {size}")
        )
    return problems


def _walk(data: bytes, start: int, end: int) -> tuple[list[SubElement], list[Problem]]:
    """Sub-elements from `start` up to exactly `end` (SPEC.md §5.3, F-03); unknown tags are kept, not rejected."""
    elements: list[SubElement] = []
    offset = start
    while offset < end:
        if end - offset < SUBELEMENT_OVERHEAD:
            return elements, [
                Problem(
                    offset,
                    "subelement",
                    f"{end - offset} bytes left before the image ends at {end}, expected a 6-byte sub-element "
                    "header (tag, length) or nothing",
                )
            ]
        tag = int.from_bytes(data[offset : offset + 2], "little")
        length = int.from_bytes(data[offset + 2 : offset + SUBELEMENT_OVERHEAD], "little")
        stop = offset + SUBELEMENT_OVERHEAD + length
        if stop > end:
            return elements, [
                Problem(
                    offset,
                    "subelement",
                    f"sub-element 0x{tag:04X} of {length} bytes runs to {stop}, past the end of the image at {end}",
                )
            ]
        elements.append(SubElement(tag_id=ElementTagId(tag), data=LVBytes32(data[offset + SUBELEMENT_OVERHEAD : stop])))
        offset = stop
    return elements, []


def _split_trailer(data: bytes, start: int, signed: bool | None) -> tuple[bytes, bytes | None, list[Problem]]:
    """A GB body → (Manufacturer Image, signature or None, problems) per SPEC.md §8.4."""
    body = bytes(data[start:])
    if signed is False:
        return body, None, []
    at = len(data) - TRAILER_LENGTH
    if len(body) < TRAILER_LENGTH:
        if signed:
            return (
                body,
                None,
                [
                    Problem(
                        start,
                        "trailer",
                        f"the image after the header is {len(body)} bytes, too short for the {TRAILER_LENGTH}-byte "
                        "signature trailer (00 40 + 64-byte signature)",
                    )
                ],
            )
        return body, None, []
    mark = body[-TRAILER_LENGTH:-SIGNATURE_LENGTH]
    if mark == TRAILER_MARK:
        return body[:-TRAILER_LENGTH], body[-SIGNATURE_LENGTH:], []
    if signed:
        return (
            body,
            None,
            [
                Problem(
                    at,
                    "trailer",
                    f"signature trailer length is 0x{int.from_bytes(mark, 'big'):04X}, "
                    f"expected 0x{SIGNATURE_LENGTH:04X} (2-byte big-endian length of the 64-byte signature)",
                )
            ],
        )
    return body, None, []
