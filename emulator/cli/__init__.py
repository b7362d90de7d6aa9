"""The `ota-emu` command line.

Each command (or command group) lives in its own module, named in `COMMANDS` with its short help, and is imported
only when it runs: `ota-emu --help` and a command that needs no radio stack never pay for importing zigpy,
bellows and aiohttp. Bad input anywhere below surfaces as an `InputError`, which becomes one line on stderr and
exit code 2 — never a traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click
from click.utils import make_default_short_help

from emulator import __version__
from emulator.errors import InputError, RunFailure

# Command name -> its short help (the first sentence of the command's help). The command is `command` in the
# module of the same name under emulator.cli. The short help is kept here so the command list needs no import;
# a test holds it equal to the command's own.
COMMANDS: dict[str, str] = {
    "activate": "Activate the image an emulated HCALCS holds with an Activate Firmware command (GBCS CS06) and print "
    "the device's signed response (decoded and hex); a future-dated command is accepted, then executed on virtual "
    "time, and its 0x00CA alert (0x8F66 success / 0x8F67 failure) printed too.",
    "certs": "Smart Energy implicit certificates (crypto suites 1 and 2) from a test CA, for key establishment (CBKE).",
    "chf": "Run the CHF OTA server on an EZSP coordinator through bellows and upgrade the target devices.",
    "conform": "Conformance bench: check a device (PPMID/HCALCS) or an OTA server against the check catalogue (each "
    "check cites the ZCL/OTA, Zigbee or GBCS clause it enforces), with a verdict and the frames that decided it for "
    "every check.",
    "demo": "Build and sign GB Upgrade Images with a fresh demo key, then upgrade one emulated PPMID (distribution "
    "and activation in one step) and one HCALCS (held, then activated by a hash-checked Activate Firmware command) "
    "from the in-process CHF, on virtual time.",
    "device": "Run one emulated PPMID or HCALCS on an EZSP stick that joins an existing network.",
    "gbcs": "Decode GBCS firmware messages and verify their signatures.",
    "image": "Read, build, sign and verify Zigbee OTA and GB Upgrade Image files.",
    "keys": "Generate P-256 signing keys for Manufacturer Image signatures; derive install-code link keys.",
    "ncp": "Run a virtual EZSP NCP (ASH + EZSP over TCP or a pty) until Ctrl-C.",
    "profiles": "The device and CHF profiles shipped with ota-emu.",
    "run": "Run emulated PPMIDs and HCALCSs against the CHF OTA server in this process, show each transfer and end "
    "with a table of outcomes (protocol time and wall time).",
}


class _Main(click.Group):
    """Turns every user-facing failure into one line on stderr: click's usage errors (exit 2), our
    `InputError` (exit 2), a run that could not finish (`RunFailure`, exit 1) and an interrupt (exit 130)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> NoReturn:
        try:
            rv = super().main(args, prog_name or "ota-emu", complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            click.echo(f"ota-emu: error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except InputError as exc:
            click.echo(f"ota-emu: error: {exc}", err=True)
            sys.exit(2)
        except RunFailure as exc:
            click.echo(f"ota-emu: error: {exc}", err=True)
            sys.exit(1)
        except (click.Abort, KeyboardInterrupt):
            click.echo("ota-emu: interrupted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


class _LazyMain(_Main):
    """The `ota-emu` group: its commands come from `COMMANDS`, each module imported when its command is asked
    for (to run it or show its own help), and the command list is written from the table alone."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.add_command(load_command(cmd_name))
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click writes it, with each short help shortened from the table's instead of the loaded command's."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [(name, make_default_short_help(_short_help(self, name), limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _short_help(group: click.Group, name: str) -> str:
    """From the table; a command attached some other way (`add_command`) is already loaded and says it itself."""
    if name in COMMANDS:
        return COMMANDS[name]
    return group.commands[name].get_short_help_str(10**6)


def load_command(name: str) -> click.Command:
    """Import the module of command `name` (a key of `COMMANDS`) and return its click command."""
    module = importlib.import_module(f"{__name__}.{name}")
    command = module.command
    assert isinstance(command, click.Command) and command.name == name, f"{module.__name__}.command is not {name!r}"
    return command


@click.group(
    cls=_LazyMain,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="\b\nExamples:\n  ota-emu demo\n  ota-emu run --device ppmid --image ppmid.ota\n  ota-emu profiles list",
)
@click.version_option(__version__, prog_name="ota-emu")
def main() -> None:
    """Emulate GB smart-metering HAN devices (PPMID, HCALCS) upgrading their firmware over the Zigbee OTA
    Upgrade cluster from a CHF OTA server, in-process or on an EZSP coordinator, and check conformance."""
