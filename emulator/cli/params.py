"""Click parameter types and the option conventions shared by the command groups.

One vocabulary for options across commands (README, "Commands"): `--device PROFILE`, `--chf PROFILE`,
`--port PORT`, `--target EUI64`, `-o/--out PATH`, `--state-dir DIR`, `--json`. A spelling that was renamed keeps
working for one release as a hidden alias that prints one deprecation line on stderr:

    @click.command("chf", cls=AliasedCommand, aliases={"--profile": "--chf", "--device": "--port"})

`AliasedCommand` rewrites the old long option (`--profile X` and `--profile=X`) to the new one before click
parses the arguments, so the rest of the command sees only the new name (required options, help and errors
all speak of it). An alias whose meaning changed too (`ncp --state FILE` against `--state-dir DIR`) is a
hidden option of its own whose handler calls `warn_deprecated`. Every command also gets an example in its
`--help` (`epilog=example(...)`).

Numbers given as floats are finite (`FiniteFloat`: NaN and infinities are refused), EUI-64s are written as
people write them (`Eui64Param`), profiles are a path or a bundled name (`ProfileParam`), and output paths are
checked before any work starts (`emulator.files`).
"""

from __future__ import annotations

import math
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from emulator.numbers import parse_unsigned

# zigpy and the profile loader (which imports zigpy's ZCL clusters) are imported when a value is converted, not
# here: every command imports this module, most never read a profile or an EUI-64.

if TYPE_CHECKING:  # click's ParamType is generic in recent releases only; at run time any 8.x will do
    import zigpy.types as t

    IntParamType = click.ParamType[int]
    PathParamType = click.ParamType[Path]
    StrParamType = click.ParamType[str]
    Eui64ParamType = click.ParamType[t.EUI64]
else:
    IntParamType = PathParamType = StrParamType = Eui64ParamType = click.ParamType


class Number(IntParamType):
    """An unsigned integer written in decimal or 0x-hex, checked against a bit width (and a lower `maximum`)."""

    name = "number"

    def __init__(self, bits: int, maximum: int | None = None) -> None:
        self.bits = bits
        self.maximum = maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            return parse_unsigned(value, self.bits, maximum=self.maximum)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


U8 = Number(8)
U16 = Number(16)
U32 = Number(32)


class Eui64Param(Eui64ParamType):
    """An EUI-64 as people write it ("00:0D:6F:00:00:19:8B:36", "000D6F0000198B36"), as zigpy holds it."""

    name = "EUI64"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> t.EUI64:
        import zigpy.types as t

        from emulator.profiles import parse_eui64

        if isinstance(value, t.EUI64):
            return value
        try:
            return parse_eui64(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class FiniteFloat(click.FloatRange):
    """A float range that refuses NaN and the infinities, which `click.FloatRange` lets through (every
    comparison with NaN is false, and an unbounded side takes infinity)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number (expected {self._describe_range()})", param, ctx)
        return number


class ProfileParam(PathParamType):
    """A profile: a TOML file path, or the name of a bundled profile (`ppmid`, `hcalcs`, `chf`,
    `faults/<name>`); the value is the path to load."""

    name = "profile"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        from emulator.profiles import ProfileError, resolve_profile

        if isinstance(value, Path):
            return value
        try:
            return resolve_profile(str(value))
        except ProfileError as exc:
            self.fail(str(exc), param, ctx)


def warn_deprecated(old: str, new: str) -> None:
    """The one line an old option spelling prints on stderr (it still works for one release)."""
    click.echo(
        f"ota-emu: warning: {old} is deprecated, use {new} (the old spelling goes in a future release)", err=True
    )


class AliasedCommand(click.Command):
    """A command whose renamed long options still work as hidden aliases: `aliases` maps old to new."""

    def __init__(self, *args: Any, aliases: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aliases = dict(aliases or {})

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, rewrite_aliases(args, self.aliases))


def rewrite_aliases(args: list[str], aliases: dict[str, str]) -> list[str]:
    """`args` with each old long option replaced by its new name (one warning per old name); `--` ends options."""
    rewritten: list[str] = []
    warned: set[str] = set()
    for index, arg in enumerate(args):
        if arg == "--":
            return rewritten + args[index:]
        name, sep, value = arg.partition("=")
        new = aliases.get(name)
        if new is None:
            rewritten.append(arg)
            continue
        if name not in warned:
            warn_deprecated(name, new)
            warned.add(name)
        rewritten.append(f"{new}{sep}{value}")
    return rewritten


def example(*lines: str) -> str:
    """A `--help` epilog of example command lines, kept as written (click rewraps paragraphs otherwise)."""
    return "\b\nExample" + ("s" if len(lines) > 1 else "") + ":\n" + "\n".join(f"  {line}" for line in lines)


class PortParam(StrParamType):
    """Where an EZSP stick is: a serial port path, or `tcp://HOST:PORT` / `socket://HOST:PORT` for a network serial
    bridge (or `ota-emu ncp`). A URL is checked here, so a typo fails before bellows starts."""

    name = "port"
    SCHEMES = ("tcp", "socket")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if "://" not in text:
            if not text:
                self.fail("'' is not a serial port (expected e.g. /dev/ttyUSB0 or tcp://HOST:PORT)", param, ctx)
            return text
        parts = urllib.parse.urlsplit(text)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in self.SCHEMES or not parts.hostname or port is None or port == 0 or parts.path:
            self.fail(
                f"{text!r} is not a usable port (expected a serial port such as /dev/ttyUSB0, or "
                "tcp://HOST:PORT or socket://HOST:PORT with PORT 1..65535)",
                param,
                ctx,
            )
        return text
