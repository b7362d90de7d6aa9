"""`ota-emu keys ...`: manufacturer signing keys."""

from __future__ import annotations

import json
from pathlib import Path

import click

from emulator import keys
from emulator.cli.params import AliasedCommand, example
from emulator.errors import InputError
from emulator.files import check_output_dir, write_atomic


@click.group("keys", epilog=example("ota-emu keys generate -o keys/ --name signer"))
def command() -> None:
    """Generate P-256 signing keys for Manufacturer Image signatures."""


@command.command(
    "generate",
    cls=AliasedCommand,
    aliases={"--output": "--out"},
    epilog=example("ota-emu keys generate -o keys/ --name signer",
                   "ota-emu image sign --key keys/signer.key.pem ppmid.ota -o ppmid-signed.ota"),
)
@click.option("-o", "--out", "directory", type=click.Path(path_type=Path), required=True,
              help="Directory for the key files (created if missing).")
@click.option("--name", default="signer", show_default=True,
              help="File name stem: writes NAME.key.pem (private) and NAME.pub.pem (public).")
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
