"""`ota-emu profiles ...`: the profiles shipped with ota-emu, by name: list, show, export them to start from."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from emulator.cli.params import example
from emulator.errors import InputError
from emulator.files import check_output_dir, write_atomic
from emulator.profiles import bundled, bundled_names, bundled_root


@dataclass(frozen=True, slots=True)
class BundledProfile:
    """One shipped profile as `profiles list` shows it; `summary` is the first sentence of its header comment."""

    name: str
    kind: str
    summary: str
    path: str


def describe(name: str) -> BundledProfile:
    path = bundled(name)
    text = path.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    kind = "chf" if "chf" in data else str(data.get("device", {}).get("kind", "device"))
    return BundledProfile(name, kind, _summary(text), str(path))


def _summary(text: str) -> str:
    """The leading `#` comment block up to its first full stop."""
    words = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        words.append(line.lstrip("#").strip())
    comment = " ".join(words)
    end = comment.find(". ")
    return comment if end < 0 else comment[: end + 1]


@click.group("profiles", epilog=example("ota-emu profiles list", "ota-emu run --device faults/no-resend --image x.ota"))
def command() -> None:
    """The device and CHF profiles shipped with ota-emu. Any `--device` or `--chf` option takes one by name
    (`ppmid`, `hcalcs`, `chf`, `faults/<name>`) as well as a path to a TOML file."""


@command.command("list", epilog=example("ota-emu profiles list", "ota-emu profiles list --json"))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per profile.")
def list_command(as_json: bool) -> None:
    """List the bundled profiles: name, kind (ppmid, hcalcs or chf) and what each is for."""
    profiles = [describe(name) for name in bundled_names()]
    if as_json:
        click.echo(json.dumps([asdict(p) for p in profiles], indent=2))
        return
    table = Table(title="Bundled profiles", caption="use a name wherever a --device or --chf PROFILE is asked for")
    for column in ("name", "kind", "what it is"):
        table.add_column(column)
    for profile in profiles:
        table.add_row(profile.name, profile.kind, profile.summary)
    Console(width=None if Console().is_terminal else 160).print(table)


@command.command("show", epilog=example("ota-emu profiles show faults/ignore-wait-for-data"))
@click.argument("name")
def show_command(name: str) -> None:
    """Print the bundled profile NAME as it is shipped (TOML)."""
    text = bundled(name).read_text(encoding="utf-8")
    click.echo(text, nl=not text.endswith("\n"))


@command.command(
    "export",
    epilog=example(
        "ota-emu profiles export my-profiles/", "ota-emu run --device my-profiles/ppmid.toml --image ppmid.ota"
    ),
)
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite profile files that already exist in DIR.")
@click.option("--json", "as_json", is_flag=True, help="Print the written files as a JSON list.")
def export_command(directory: Path, force: bool, as_json: bool) -> None:
    """Copy every bundled profile into DIR (created if missing; fault profiles under DIR/faults/) to start your
    own from. Refuses to overwrite an existing file unless --force is given; then nothing is written."""
    root = bundled_root()
    names = bundled_names()
    if root is None or not names:
        raise InputError("no bundled profiles are installed (expected emulator/_profiles in the package)")
    check_output_dir(directory, "the folder to export the profiles to", create=True)
    targets = [(root / f"{name}.toml", directory / f"{name}.toml") for name in names]
    # The profiles name the test-only signing keys beside them (keys/), so the copies must find them too.
    keys = root / "keys"
    if keys.is_dir():
        targets += [(path, directory / "keys" / path.name) for path in sorted(keys.iterdir()) if path.is_file()]
    for _, target in targets:
        if target.is_dir():
            raise InputError(f"{target}: is a directory (expected a profile file to write)")
    existing = [target for _, target in targets if target.exists()]
    if existing and not force:
        raise InputError(f"{existing[0]}: already exists (expected a new file; use --force to overwrite)")
    for source, target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, source.read_bytes(), mode=0o600 if source.name.endswith(".key.pem") else 0o644)
    if as_json:
        click.echo(json.dumps([str(target) for _, target in targets], indent=2))
    else:
        click.echo(
            f"{directory}: wrote {len(names)} profiles ({', '.join(n for n in names if '/' not in n)} "
            "and faults/) and the test-only keys they trust (keys/)"
        )
