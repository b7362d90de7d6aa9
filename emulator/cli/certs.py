"""`ota-emu certs ...`: a test CA for Smart Energy implicit certificates, device credentials, and decoding."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import zigpy.types as t

from emulator.cli.params import AliasedCommand, Eui64Param, example
from emulator.errors import InputError
from emulator.files import check_output_dir, write_atomic
from emulator.security import credentials as files
from emulator.security.ca import DEFAULT_ISSUER, CertificateAuthority
from emulator.security.certs import (
    NO_EXPIRY,
    Certificate,
    CertificateError,
    CryptoSuite,
    Suite2Certificate,
    check_certificate,
    parse_certificate,
)

CA_KEY_FILE = "ca.key.json"
CA_PUBLIC_FILE = "ca.pub.json"
SUITES = click.Choice(["1", "2"])


@click.group(
    "certs",
    epilog=example(
        "ota-emu certs ca -o ca/ --suite 2",
        "ota-emu certs issue --ca ca/ --eui64 00:DB:12:34:56:78:90:A4 -o creds/",
    ),
)
def command() -> None:
    """Smart Energy implicit certificates (crypto suites 1 and 2) from a test CA, for key establishment (CBKE)."""


def _issuer(text: str) -> bytes:
    raw = text.encode() if len(text) == 8 else None
    if raw is None:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = b""
    if len(raw) != 8:
        raise click.BadParameter(
            f"{text!r} is not an issuer id (expected 8 ASCII characters or 16 hex digits)", param_hint="'--issuer'"
        )
    return raw


def _prepare(directory: Path, names: list[str], force: bool) -> list[Path]:
    check_output_dir(directory, "a directory for the credential files")
    paths = [directory / name for name in names]
    existing = [path for path in paths if path.exists()]
    if existing and not force:
        raise InputError(f"{existing[0]}: already exists (expected a new file; use --force to overwrite)")
    directory.mkdir(parents=True, exist_ok=True)
    return paths


def _read(path: Path, expected: str) -> str:
    if not path.exists():
        raise InputError(f"{path}: no such file (expected {expected})")
    if path.is_dir():
        raise InputError(f"{path}: is a directory (expected {expected})")
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise InputError(f"{path}: not text (expected {expected})") from None


@command.command(
    "ca",
    cls=AliasedCommand,
    aliases={"--output": "--out"},
    epilog=example("ota-emu certs ca -o ca/ --suite 2"),
)
@click.option(
    "-o",
    "--out",
    "directory",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory for ca.key.json (private) and ca.pub.json (created if missing).",
)
@click.option("--suite", type=SUITES, required=True, help="Crypto suite: 1 (sect163k1) or 2 (sect283k1).")
@click.option(
    "--issuer",
    default=DEFAULT_ISSUER.decode(),
    show_default=True,
    help="Issuer id written into certificates: 8 ASCII characters or 16 hex digits.",
)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def ca_command(directory: Path, suite: str, issuer: str, force: bool) -> None:
    """Generate a test CA: ca.key.json (CA private key, mode 0600) issues device certificates with
    `ota-emu certs issue`; ca.pub.json is the CA public key devices trust."""
    issuer_id = _issuer(issuer)
    key_path, public_path = _prepare(directory, [CA_KEY_FILE, CA_PUBLIC_FILE], force)
    ca = CertificateAuthority.generate(CryptoSuite(int(suite)), issuer_id)
    write_atomic(key_path, files.ca_text(ca), mode=0o600)
    write_atomic(public_path, files.ca_public_text(ca))
    click.echo(f"{key_path}: suite-{ca.suite.value} CA private key (keep it secret)")
    click.echo(f"{public_path}: CA public key {ca.public_key.to_bytes().hex().upper()}")


@command.command(
    "issue",
    cls=AliasedCommand,
    aliases={"--output": "--out"},
    epilog=example("ota-emu certs issue --ca ca/ --eui64 00:DB:12:34:56:78:90:A4 --suite 2 -o creds/"),
)
@click.option(
    "--ca",
    "ca_path",
    type=click.Path(path_type=Path),
    required=True,
    help="The CA: its directory (with ca.key.json) or its ca.key.json file.",
)
@click.option("--eui64", type=Eui64Param(), required=True, help="EUI-64 of the device (the certificate subject).")
@click.option("--suite", type=SUITES, help="Crypto suite (must be the CA's; default: the CA's).")
@click.option(
    "-o",
    "--out",
    "directory",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory for EUI64.cbke.json (created if missing).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def issue_command(ca_path: Path, eui64: t.EUI64, suite: str | None, directory: Path, force: bool) -> None:
    """Issue a device certificate and private key (SEC 4 implicit certificate, Smart Energy Annex C.4.2) into
    EUI64.cbke.json (mode 0600): certificate, private key and CA public key, what a device loads for CBKE.
    Suite-2 certificates are valid from now, with no expiry, for key agreement and signatures."""
    key_file = ca_path / CA_KEY_FILE if ca_path.is_dir() else ca_path
    ca = files.parse_ca(_read(key_file, "an ota-emu CA key file (ca.key.json)"), str(key_file))
    if suite is not None and int(suite) != ca.suite.value:
        raise InputError(f"{key_file}: is a suite-{ca.suite.value} CA (expected suite {suite}, as --suite asks)")
    subject = bytes(eui64)[::-1]  # certificates carry the EUI-64 most significant byte first
    (path,) = _prepare(directory, [f"{subject.hex().upper()}.cbke.json"], force)
    credentials = ca.issue(subject, valid_from=int(time.time()), valid_to=NO_EXPIRY)
    write_atomic(path, files.device_text(credentials), mode=0o600)
    click.echo(f"{path}: suite-{ca.suite.value} certificate and private key for {_eui(subject)}")


@command.command("show", epilog=example("ota-emu certs show creds/00DB1234567890A4.cbke.json --json"))
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def show_command(file: Path, as_json: bool) -> None:
    """Decode and check a device credentials file, a CA file, or a bare certificate (48 or 74 bytes, binary
    or hex). A device file is checked whole: its private key must match the certificate and CA key."""
    fields = _describe(file)
    if as_json:
        click.echo(json.dumps(fields, indent=2))
        return
    for name, value in fields.items():
        click.echo(f"{name.replace('_', ' ') + ':':28}{value}")


def _describe(file: Path) -> dict[str, Any]:
    expected = "a device credentials file, a CA file or a certificate"
    if not file.exists():
        raise InputError(f"{file}: no such file (expected {expected})")
    if file.is_dir():
        raise InputError(f"{file}: is a directory (expected {expected})")
    raw = file.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    if text.lstrip().startswith("{"):
        kind, _ = files.kind_of(text, str(file))
        if kind is files.FileKind.DEVICE:
            credentials = files.parse_device(text, str(file))
            fields = {"file": "device credentials", **_certificate_fields(credentials.certificate)}
            fields["public_key"] = credentials.private_key.public_key().to_bytes().hex().upper()
            fields["ca_public_key"] = credentials.ca_public_key.to_bytes().hex().upper()
            return fields
        ca = files.parse_ca_public(text, str(file))
        return {
            "file": "CA private key" if kind is files.FileKind.CA else "CA public key",
            "suite": ca.suite.value,
            "curve": ca.suite.curve.name,
            "issuer": ca.issuer.hex().upper(),
            "ca_public_key": ca.public_key.to_bytes().hex().upper(),
        }
    data = raw if len(raw) in (48, 74) else _hex_certificate(text, file)
    try:
        certificate = check_certificate(parse_certificate(data, what=str(file)), str(file))
    except CertificateError as exc:
        raise InputError(str(exc)) from None
    return {"file": "certificate", **_certificate_fields(certificate)}


def _hex_certificate(text: str, file: Path) -> bytes:
    digits = "".join(text.split()).replace(":", "")
    try:
        return bytes.fromhex(digits)
    except ValueError:
        raise InputError(
            f"{file}: neither JSON, 48/74 binary bytes nor hex (expected a device credentials file, a CA file or a "
            "certificate)"
        ) from None


def _eui(subject: bytes) -> str:
    return ":".join(f"{b:02X}" for b in subject)


def _certificate_fields(certificate: Certificate) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "suite": certificate.suite.value,
        "curve": certificate.suite.curve.name,
        "certificate": certificate.to_bytes().hex().upper(),
        "subject": _eui(certificate.subject),
        "issuer": certificate.issuer.hex().upper(),
        "reconstruction_point": certificate.reconstruction_point.hex().upper(),
    }
    if isinstance(certificate, Suite2Certificate):
        fields.update(
            {
                "type": f"0x{certificate.type:02X}",
                "serial": certificate.serial.hex().upper(),
                "curve_id": f"0x{certificate.curve:02X}",
                "hash_id": f"0x{certificate.hash:02X}",
                "valid_from": _time(certificate.valid_from),
                "valid_to": "no expiry"
                if certificate.valid_to == NO_EXPIRY
                else _time(certificate.valid_from + certificate.valid_to),
                "key_usage": f"0x{certificate.key_usage:02X}",
            }
        )
    else:
        fields["profile_data"] = certificate.profile_data.hex().upper()
    return fields


def _time(seconds: int) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        return str(seconds)
