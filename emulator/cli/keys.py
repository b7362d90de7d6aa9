"""`ota-emu keys ...`: manufacturer signing keys, and the link keys derived from Smart Energy install codes."""

from __future__ import annotations

import json
from pathlib import Path

import click

from emulator import keys
from emulator.cli.params import AliasedCommand, example
from emulator.errors import InputError
from emulator.files import check_output_dir, write_atomic
from emulator.security.install_code import InstallCode, key_load_key, key_transport_key


@click.group("keys", epilog=example("ota-emu keys generate -o keys/ --name signer"))
def command() -> None:
    """Generate P-256 signing keys for Manufacturer Image signatures; derive install-code link keys."""


@command.command(
    "generate",
    cls=AliasedCommand,
    aliases={"--output": "--out"},
    epilog=example(
        "ota-emu keys generate -o keys/ --name signer",
        "ota-emu image sign --key keys/signer.key.pem ppmid.ota -o ppmid-signed.ota",
    ),
)
@click.option(
    "-o",
    "--out",
    "directory",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory for the key files (created if missing).",
)
@click.option(
    "--name",
    default="signer",
    show_default=True,
    help="File name stem: writes NAME.key.pem (private) and NAME.pub.pem (public).",
)
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
@click.option("--json", "as_json", is_flag=True, help="Print the written key files as JSON.")
def generate_command(directory: Path, name: str, force: bool, as_json: bool) -> None:
    """Generate an ECDSA P-256 key pair: NAME.key.pem (PKCS#8 private key, unencrypted) signs images with
    `ota-emu image sign --key`; NAME.pub.pem (public key) is what devices trust (`ota-emu image verify --signer`).

    Refuses to overwrite existing files unless --force is given.
    """
    check_output_dir(directory, "a directory for the key files")
    if not name or "/" in name or name in (".", ".."):
        raise click.BadParameter(f"{name!r} is not a file name stem (expected e.g. 'signer')", param_hint="'--name'")
    private_path = directory / f"{name}.key.pem"
    public_path = directory / f"{name}.pub.pem"
    existing = [path for path in (private_path, public_path) if path.exists()]
    if existing and not force:
        raise InputError(f"{existing[0]}: already exists (expected a new file; use --force to overwrite)")
    directory.mkdir(parents=True, exist_ok=True)
    key = keys.generate_private_key()
    write_atomic(private_path, keys.private_key_pem(key), mode=0o600)
    write_atomic(public_path, keys.public_key_pem(key.public_key()))
    if as_json:
        click.echo(json.dumps({"private_key": str(private_path), "public_key": str(public_path)}, indent=2))
        return
    click.echo(f"{private_path}: private key (keep it secret)")
    click.echo(f"{public_path}: public key")


@command.command("install-code", epilog=example("ota-emu keys install-code 83FED3407A939723A5C639B26916D505C3B5"))
@click.argument("code")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def install_code_command(code: str, as_json: bool) -> None:
    """Check an install code and print the link key derived from it.

    CODE is 6, 8, 12 or 16 bytes of hex, with or without its CRC-16/X-25 (least significant byte first;
    checked when given); spaces, colons and dashes are ignored. The link key is AES-MMO over the code and CRC
    (Silicon Labs AN1089); the key-transport and key-load keys are its keyed hash with 0x00 and 0x02 (Zigbee
    specification 05-3474 Annex B.1.4), the keys that protect the network-key transport at join.
    """
    parsed = InstallCode.parse(code)
    fields = {
        "install_code": parsed.code.hex().upper(),
        "crc": f"{parsed.crc:04X}",
        "install_code_with_crc": parsed.with_crc.hex().upper(),
        "link_key": parsed.key.hex().upper(),
        "key_transport_key": key_transport_key(parsed.key).hex().upper(),
        "key_load_key": key_load_key(parsed.key).hex().upper(),
    }
    if as_json:
        click.echo(json.dumps(fields, indent=2))
        return
    for name, value in fields.items():
        click.echo(f"{name.replace('_', ' ') + ':':24}{value}")
