"""`ota-emu image ...`: inspect, build, sign, verify and hash OTA upgrade files."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import click
import zigpy.types as t
from rich.console import Console
from rich.table import Table
from rich.text import Text
from zigpy.ota.image import ElementTagId

from emulator import keys
from emulator.cli.params import U8, U16, U32, AliasedCommand, Eui64Param, example
from emulator.errors import InputError
from emulator.files import check_output_file, write_atomic
from emulator.ota.image import (
    DEFINED_TAGS,
    KINDS,
    MANUFACTURER_TAGS,
    SUBELEMENT_OVERHEAD,
    TRAILER_LENGTH,
    TRAILER_MARK,
    Kind,
    Reading,
    UpgradeImage,
    build_gb,
    build_zigbee,
    load,
    problems_error,
    read,
    read_file,
)
from emulator.ota.signing import manufacturer_image_hash, sign_image, verify_image

_KIND_HELP = (
    "Read the file as this kind instead of detecting it (zigbee: sub-elements after the header; gb: raw "
    "Manufacturer Image, optional 00 40 + signature trailer)."
)
_KIND_NAMES = {"gb": "GB Upgrade Image", "zigbee": "Zigbee OTA file"}
F = TypeVar("F", bound=Callable[..., Any])


def _kind_option(func: F) -> F:
    """The detection rule can misread an odd file; the user who knows better says which kind it is."""
    return click.option("--kind", type=click.Choice(KINDS), default=None, help=_KIND_HELP)(func)


_OUT_ALIAS = {"--output": "--out"}


def _json_option(help_text: str) -> Callable[[F], F]:
    return click.option("--json", "as_json", is_flag=True, help=help_text)


@click.group("image", epilog=example("ota-emu image inspect ppmid.ota", "ota-emu image hash --json ppmid.ota"))
def command() -> None:
    """Read, build, sign and verify Zigbee OTA and GB Upgrade Image files.

    A GB Upgrade Image is an OTA header, the raw Manufacturer Image and an optional trailer 00 40 + 64-byte
    ECDSA P-256 signature over the Manufacturer Image; a Zigbee OTA file carries sub-elements instead.
    """


@command.command("inspect", epilog=example("ota-emu image inspect --json ppmid.ota esme.ota"))
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON (a list, one object per file).")
@_kind_option
def inspect_command(files: tuple[Path, ...], as_json: bool, kind: Kind | None) -> None:
    """Show what each FILE holds: kind, header fields, hardware-version range, sizes, the Manufacturer Image
    length and SHA-256 hash, the signature trailer, sub-elements and every validation problem.

    Exits 2 (one line on stderr) when a file cannot be read or has problems; the facts are printed first.
    """
    contents = [(path, read_file(path)) for path in files]
    readings = [(path, data, read(data, kind)) for path, data in contents]
    reports = [_facts(path, data, reading) for path, data, reading in readings]
    if as_json:
        click.echo(json.dumps(reports, indent=2))
    else:
        console = Console()
        for report in reports:
            console.print(_table(report))
    invalid = [(path, reading.problems) for path, _, reading in readings if reading.problems]
    if len(invalid) == 1:
        raise problems_error(str(invalid[0][0]), invalid[0][1])
    if invalid:
        names = ", ".join(str(path) for path, _ in invalid)
        count = f"{len(invalid)} of {len(reports)} files"
        raise InputError(f"{count} have problems (expected valid upgrade files): {names}")


@command.command(
    "build",
    cls=AliasedCommand,
    aliases=_OUT_ALIAS,
    epilog=example(
        "ota-emu image build --format gb --manufacturer 0x121D --image-type 0x0084 --file-version 2 \\",
        "    --hw-min 0x1111 --hw-max 0x1211 --payload firmware.bin -o ppmid.ota",
    ),
)
@click.option(
    "--format",
    "kind",
    type=click.Choice(KINDS),
    required=True,
    help="gb: header + raw Manufacturer Image (GB Upgrade Image); zigbee: header + Upgrade Image sub-element 0x0000.",
)
@click.option("--manufacturer", type=U16, required=True, help="Manufacturer code (16-bit, decimal or 0x-hex).")
@click.option("--image-type", type=U16, required=True, help="Image type (16-bit).")
@click.option("--file-version", type=U32, required=True, help="File version (32-bit).")
@click.option("--stack-version", type=U16, default=2, show_default=True, help="Zigbee stack version (2 = PRO).")
@click.option("--header-string", default="", help="Header string, at most 32 bytes of UTF-8 (NUL-padded).")
@click.option("--hw-min", type=U16, default=None, help="Minimum hardware version (give with --hw-max).")
@click.option("--hw-max", type=U16, default=None, help="Maximum hardware version (give with --hw-min).")
@click.option(
    "--destination",
    type=Eui64Param(),
    default=None,
    help="Upgrade file destination: makes a device-specific file (e.g. 00:0D:6F:00:00:19:8B:36).",
)
@click.option("--security-credential-version", type=U8, default=None, help="Security credential version (8-bit).")
@click.option(
    "--payload",
    type=click.Path(path_type=Path),
    required=True,
    help="File holding the firmware (the Manufacturer Image).",
)
@click.option("-o", "--out", "output", type=click.Path(path_type=Path), required=True, help="Upgrade file to write.")
@_json_option("Print what was written as JSON.")
def build_command(
    *,
    kind: Kind,
    manufacturer: int,
    image_type: int,
    file_version: int,
    stack_version: int,
    header_string: str,
    hw_min: int | None,
    hw_max: int | None,
    destination: t.EUI64 | None,
    security_credential_version: int | None,
    payload: Path,
    output: Path,
    as_json: bool,
) -> None:
    """Wrap a firmware payload in an OTA header and write the upgrade file.

    The header's field control selects exactly the optional fields given; header length and total image size
    are computed. Sign a GB image afterwards with `ota-emu image sign`.
    """
    if (hw_min is None) != (hw_max is None):
        raise click.UsageError("--hw-min and --hw-max go together: give both or neither")
    check_output_file(output, "the upgrade file to write", inputs=[payload])
    build = build_gb if kind == "gb" else build_zigbee
    image = build(
        manufacturer,
        image_type,
        file_version,
        payload=read_file(payload, "a firmware payload file"),
        stack_version=stack_version,
        header_string=header_string,
        hw_min=hw_min,
        hw_max=hw_max,
        destination=destination,
        security_credential_version=security_credential_version,
    )
    data = image.serialize()
    write_atomic(output, data)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "file": str(output),
                    "kind": image.kind,
                    "size": len(data),
                    "manufacturer_image_size": len(image.manufacturer_image),
                    "manufacturer_image_sha256": manufacturer_image_hash(image).hex(),
                },
                indent=2,
            )
        )
        return
    click.echo(
        f"{output}: wrote {_KIND_NAMES[image.kind]}, {len(data)} bytes, "
        f"Manufacturer Image {len(image.manufacturer_image)} bytes"
    )


@command.command(
    "sign",
    cls=AliasedCommand,
    aliases=_OUT_ALIAS,
    epilog=example("ota-emu image sign --key signer.key.pem ppmid.ota -o ppmid-signed.ota"),
)
@click.option(
    "--key",
    "key_path",
    type=click.Path(path_type=Path),
    required=True,
    help="PEM private key (P-256) of the signer, e.g. from `ota-emu keys generate`.",
)
@click.argument("source", metavar="IN", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    "output",
    type=click.Path(path_type=Path),
    required=True,
    help="Signed upgrade file to write (not IN or the key: write a new file).",
)
@_kind_option
@_json_option("Print what was written as JSON.")
def sign_command(key_path: Path, source: Path, output: Path, kind: Kind | None, as_json: bool) -> None:
    """Sign the Manufacturer Image of the GB Upgrade Image IN and write it with the trailer 00 40 + signature.

    An existing trailer is replaced; the total image size in the header follows. Nothing is written if the key
    or the image is unusable.
    """
    check_output_file(output, "the signed upgrade file to write", inputs=[key_path, source])
    key = keys.load_private_key(key_path)
    image = load(source, kind)
    signed = sign_image(image, key, str(source))
    data = signed.serialize()
    write_atomic(output, data)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "file": str(output),
                    "source": str(source),
                    "size": len(data),
                    "replaced_signature": image.signature is not None,
                    "signature": signed.signature.hex() if signed.signature else None,
                },
                indent=2,
            )
        )
        return
    verb = "replaced the signature" if image.signature is not None else "added a signature"
    click.echo(f"{output}: {verb}, {len(data)} bytes")


@command.command("verify", epilog=example("ota-emu image verify --signer signer.pub.pem ppmid-signed.ota"))
@click.option(
    "--signer",
    "signer_paths",
    type=click.Path(path_type=Path),
    multiple=True,
    required=True,
    help="Trusted signer: a PEM public key or X.509 certificate (P-256). Repeat for several.",
)
@click.argument("file", type=click.Path(path_type=Path))
@_kind_option
@_json_option("Print the verdict as JSON.")
@click.pass_context
def verify_command(
    ctx: click.Context, signer_paths: tuple[Path, ...], file: Path, kind: Kind | None, as_json: bool
) -> None:
    """Check the signature trailer of a GB Upgrade Image against the trusted signers.

    Exit 0 when it verifies with one of them, 1 when it does not (the reason is printed), 2 on unusable input.
    """
    signers = [keys.load_public_key(path) for path in signer_paths]
    image = load(file, kind)
    outcome = verify_image(image, signers)
    if as_json:
        signer = None if outcome.signer is None else str(signer_paths[outcome.signer])
        click.echo(
            json.dumps({"file": str(file), "valid": outcome.ok, "reason": outcome.reason, "signer": signer}, indent=2)
        )
        if not outcome.ok:
            ctx.exit(1)
        return
    if outcome.ok and outcome.signer is not None:
        click.echo(f"{file}: valid: {outcome.reason} ({signer_paths[outcome.signer]})")
        return
    click.echo(f"{file}: NOT valid: {outcome.reason}")
    ctx.exit(1)


@command.command("hash", epilog=example("ota-emu image hash ppmid-signed.ota"))
@click.argument("file", type=click.Path(path_type=Path))
@_kind_option
@_json_option("Print the file and its hash as JSON.")
def hash_command(file: Path, kind: Kind | None, as_json: bool) -> None:
    """Print the Manufacturer Image Hash (SHA-256 of the Manufacturer Image, header and trailer excluded) in hex:
    the value an Activate Firmware command carries."""
    digest = manufacturer_image_hash(load(file, kind)).hex()
    click.echo(json.dumps({"file": str(file), "manufacturer_image_sha256": digest}) if as_json else digest)


def _facts(path: Path, data: bytes, reading: Reading) -> dict[str, Any]:
    fields = reading.fields
    header: dict[str, Any] = {
        name: fields.get(name)
        for name in (
            "upgrade_file_id",
            "header_version",
            "header_length",
            "field_control",
            "manufacturer_id",
            "image_type",
            "file_version",
            "stack_version",
            "header_string",
            "image_size",
            "security_credential_version",
            "upgrade_file_destination",
            "minimum_hardware_version",
            "maximum_hardware_version",
        )
    }
    if header["header_string"] is not None:
        header["header_string"] = header["header_string"].rstrip(b"\x00").decode("utf-8", errors="replace")
    if header["upgrade_file_destination"] is not None:
        header["upgrade_file_destination"] = str(header["upgrade_file_destination"]).upper()
    facts: dict[str, Any] = {
        "file": str(path),
        "valid": reading.image is not None,
        "kind": reading.kind,
        "file_size": len(data),
        "header": header,
        "manufacturer_image": None,
        "signature": None,
        "subelements": None,
        "problems": [asdict(problem) for problem in reading.problems],
    }
    if reading.image is not None:
        facts.update(_image_facts(reading.image))
    return facts


def _image_facts(image: UpgradeImage) -> dict[str, Any]:
    manufacturer_image = image.manufacturer_image
    signature: dict[str, Any] = {"present": image.signature is not None}
    if image.signature is not None:
        trailer = image.header.image_size - TRAILER_LENGTH
        signature.update(
            trailer_offset=trailer,
            offset=trailer + len(TRAILER_MARK),
            length=len(image.signature),
            hex=image.signature.hex(),
        )
    subelements = []
    offset = int(image.header.header_length)
    for element in image.subelements:
        tag = int(element.tag_id)
        subelements.append({"offset": offset, "tag": tag, "name": _tag_name(tag), "length": len(element.data)})
        offset += SUBELEMENT_OVERHEAD + len(element.data)
    return {
        "manufacturer_image": {
            "offset": image.manufacturer_image_offset,
            "length": len(manufacturer_image),
            "sha256": manufacturer_image_hash(image).hex(),
        },
        "signature": signature,
        "subelements": subelements if image.kind == "zigbee" else None,
    }


def _tag_name(tag: int) -> str:
    if tag in DEFINED_TAGS:
        return ElementTagId(tag).name
    return "MANUFACTURER_SPECIFIC" if tag in MANUFACTURER_TAGS else "UNKNOWN"


def _hex(value: int | None, digits: int) -> str:
    return "—" if value is None else f"0x{value:0{digits}X}"


def _count(value: int | None) -> str:
    return "—" if value is None else str(value)


def _table(report: dict[str, Any]) -> Table:
    """Values are wrapped in `Text` so that bytes from the file (the header string) are never read as markup."""
    table = Table(title=Text(report["file"]), show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value, style in _rows(report):
        table.add_row(Text(name, style=style), Text(value, style=style))
    return table


def _rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    header = report["header"]
    problems = report["problems"]
    rows = [
        ("status", f"{len(problems)} problem(s)" if problems else "valid", "red" if problems else ""),
        ("kind", _KIND_NAMES.get(report["kind"] or "", "unknown"), ""),
        ("file size", f"{report['file_size']} bytes", ""),
        ("magic", _hex(header["upgrade_file_id"], 8), ""),
        ("header version", _hex(header["header_version"], 4), ""),
        ("header length", _count(header["header_length"]), ""),
        ("field control", _hex(header["field_control"], 4), ""),
        ("manufacturer", _hex(header["manufacturer_id"], 4), ""),
        ("image type", _hex(header["image_type"], 4), ""),
        ("file version", _hex(header["file_version"], 8), ""),
        ("stack version", _hex(header["stack_version"], 4), ""),
        ("header string", "—" if header["header_string"] is None else repr(header["header_string"]), ""),
        ("total image size", _count(header["image_size"]), ""),
    ]
    if header["security_credential_version"] is not None:
        rows.append(("security credential version", _hex(header["security_credential_version"], 2), ""))
    if header["upgrade_file_destination"] is not None:
        rows.append(("upgrade file destination", header["upgrade_file_destination"], ""))
    if header["minimum_hardware_version"] is not None:
        hw_range = f"{_hex(header['minimum_hardware_version'], 4)}..{_hex(header['maximum_hardware_version'], 4)}"
        rows.append(("hardware versions", hw_range, ""))
    image = report["manufacturer_image"]
    if image is not None:
        where = "no Upgrade Image sub-element" if image["offset"] is None else f"at offset {image['offset']}"
        rows.append(("manufacturer image", f"{image['length']} bytes {where}", ""))
        rows.append(("manufacturer image hash", image["sha256"], ""))
        signature = report["signature"]
        rows.append(
            (
                "signature",
                f"{signature['length']} bytes at offset {signature['offset']} (trailer 00 40 at "
                f"{signature['trailer_offset']})"
                if signature["present"]
                else "none",
                "",
            )
        )
    for element in report["subelements"] or ():
        rows.append(
            (
                "sub-element",
                f"0x{element['tag']:04X} {element['name']}: {element['length']} bytes at offset {element['offset']}",
                "",
            )
        )
    rows += [("problem", f"@{problem['offset']} {problem['message']}", "red") for problem in problems]
    return rows
