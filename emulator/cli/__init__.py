"""The `ota-emu` command line.

Each command group lives in its own module and is attached to `main` here. Bad input anywhere below surfaces
as an `InputError`, which becomes one line on stderr and exit code 2 — never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from emulator import __version__
from emulator.clock import Stalled
from emulator.errors import InputError


class _Main(click.Group):
    """Turns every user-facing failure into one line on stderr: click's usage errors (exit 2), our
    `InputError` (exit 2), and an interrupt (exit 130)."""

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
        except Stalled as exc:
            click.echo(f"ota-emu: error: {exc}", err=True)
            sys.exit(1)
        except (click.Abort, KeyboardInterrupt):
            click.echo("ota-emu: interrupted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(
    cls=_Main,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="\b\nExamples:\n  ota-emu demo\n  ota-emu run --device ppmid --image ppmid.ota\n  ota-emu profiles list",
)
@click.version_option(__version__, prog_name="ota-emu")
def main() -> None:
    """Emulate GB smart-metering HAN devices (PPMID, HCALCS) upgrading their firmware over the Zigbee OTA
    Upgrade cluster from a CHF OTA server, in-process or on an EZSP coordinator, and check conformance."""


def _register() -> None:
    """Attach every `emulator.cli` module that defines a click `command` (one module per command or group)."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        command = getattr(module, "command", None)
        if isinstance(command, click.Command):
            main.add_command(command)


_register()
