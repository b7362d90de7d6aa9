"""The `ota-emu` command table: each command's module is imported only when the command runs, so the table
carries every command's short help, and it must be the command's own; a command that needs no radio stack
imports none."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import click
from click.utils import make_default_short_help

import emulator.cli
from emulator.cli import COMMANDS, load_command, main

ROOT = Path(__file__).resolve().parents[1]
RTDS = Path(__file__).parent / "data" / "gb-vectors" / "rtds"
SIGNER = RTDS / "00db1234567890a2-ds-cert.pem"


def own_short_help(command: click.Command) -> str:
    """A command's short help as click derives it, before shortening to the terminal: its `short_help`, else the
    first sentence of its help."""
    return command.short_help or make_default_short_help(command.help or "", 10**6)


def test_the_table_names_every_command_module() -> None:
    modules = {info.name for info in pkgutil.iter_modules(emulator.cli.__path__)}
    defining = {name for name in modules if isinstance(getattr(load_module(name), "command", None), click.Command)}
    assert defining == set(COMMANDS)


def load_module(name: str) -> object:
    return importlib.import_module(f"emulator.cli.{name}")


def test_the_table_short_help_is_each_commands_own() -> None:
    for name, short_help in COMMANDS.items():
        command = load_command(name)
        assert command.name == name
        assert short_help == own_short_help(command), name


def test_the_command_list_is_what_click_writes_from_the_loaded_commands() -> None:
    for width in (40, 60, 80):
        ctx = click.Context(main, info_name="ota-emu", max_content_width=width, terminal_width=width)
        lazy, loaded = click.HelpFormatter(width=width), click.HelpFormatter(width=width)
        main.format_commands(ctx, lazy)
        for name in COMMANDS:
            main.get_command(ctx, name)
        click.Group.format_commands(main, ctx, loaded)
        assert lazy.getvalue() == loaded.getvalue()
        assert all(f"  {name}  " in lazy.getvalue() for name in COMMANDS)


LIGHT = """
import sys
from click.testing import CliRunner
from emulator.cli import main
for args in {commands!r}:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, (args, result.output)
heavy = ("zigpy.zcl", "zigpy.ota", "zigpy.application", "zigpy.device", "bellows", "aiohttp", "asyncio")
print(" ".join(sorted(name for name in sys.modules if name.startswith(heavy))))
"""


def test_commands_without_a_radio_import_no_radio_stack() -> None:
    """`--help`, `keys`, `certs --help` and `gbcs decode` in a fresh interpreter: none of zigpy's clusters, OTA
    and application, bellows, aiohttp or asyncio is imported (zigpy's types are, for EUI-64s)."""
    commands = [
        ["--help"],
        ["keys", "install-code", "83FED3407A939723A5C639B26916D505C3B5"],
        ["certs", "--help"],
        ["gbcs", "decode", "--signer", str(SIGNER), str(RTDS / "CCS08_NA_NA_ALERT_GBCS.HEX")],
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = LIGHT.format(commands=commands)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
