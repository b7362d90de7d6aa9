"""`ota-emu conform`: the conformance bench — a PPMID/HCALCS against the test CHF (`device`), or an OTA server
against a scripted client (`server`). A table of verdicts always; JSON, JUnit XML and HTML reports and a pcap
on request. Exit 0 when every MUST check passed (or does not apply), 1 otherwise, 2 on bad input."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from emulator.chf.store import HeldImage
from emulator.conformance import server_checks
from emulator.conformance.bench import DeviceTarget, exit_code, run_device_checks
from emulator.conformance.checks import parse_ids, select
from emulator.conformance.interface import load_plugin
from emulator.conformance.model import Check, CheckResult, Report
from emulator.conformance.reports import render_terminal, report_json, write_all
from emulator.ota import image as ota_image
from emulator.profiles import load_device, parse_eui64

# Wide enough that a table in a CI log keeps one line per check.
LOG_WIDTH = 160


def _console(as_json: bool) -> Console:
    """The summary's console: stdout, or stderr when stdout carries JSON."""
    stream = sys.stderr if as_json else sys.stdout
    return Console(file=stream, width=None if stream.isatty() else LOG_WIDTH, highlight=False)


class _CheckProgress:
    """One spinner line per running check, on a terminal only."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=Console(stderr=True)
        )
        self._task: TaskID | None = None

    def __enter__(self) -> _CheckProgress:
        if self.enabled:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._progress.stop()

    def __call__(self, check: Check, result: CheckResult | None) -> None:
        if not self.enabled:
            return
        if result is None:
            self._task = self._progress.add_task(f"{check.id} {check.title}", total=1)
        elif self._task is not None:
            self._progress.update(self._task, completed=1, description=f"{check.id} {result.verdict.value}")


def _finish(report: Report, *, report_dir: Path | None, as_json: bool) -> int:
    console = _console(as_json)
    render_terminal(report, console)
    code = exit_code(report)
    if code and report.passed:
        console.print("Some MUST check could not be decided (inconclusive): exit code 1", highlight=False)
    if report_dir is not None:
        paths = write_all(report, report_dir)
        console.print("reports: " + ", ".join(str(p) for p in paths.values()), highlight=False)
    if as_json:
        click.echo(report_json(report), nl=False)
    return code


def _checks(text: str | None) -> list[str] | None:
    return None if text is None else parse_ids(text)


@click.group("conform")
def command() -> None:
    """Conformance bench: check a device (PPMID/HCALCS) or an OTA server against the SPEC.md §9.3 catalogue,
    with a verdict and the frames that decided it for every check."""


@command.command("device")
@click.option("--dut", "dut_path", type=click.Path(path_type=Path), help="Profile of an emulated device under test.")
@click.option(
    "--dut-plugin",
    metavar="MODULE:FACTORY",
    help="A device under test from your own harness: FACTORY() returns an "
    "emulator.conformance.interface.DeviceUnderTest (README, Conformance bench).",
)
@click.option(
    "--radio",
    type=click.Choice(["loopback", "ezsp"]),
    help="loopback: in process on virtual time (the default with --dut); ezsp: through bellows — to a virtual "
    "NCP with --dut, to the coordinator at --device for a real device.",
)
@click.option("--device", "port", metavar="PATH", help="EZSP coordinator of a real device (serial port or tcp://).")
@click.option("--eui64", help="EUI-64 of the real device under test.")
@click.option("--kind", type=click.Choice(["ppmid", "hcalcs"]), help="What the real device is (for the GB checks).")
@click.option(
    "--image",
    "image_path",
    type=click.Path(path_type=Path),
    help="Upgrade file the real device accepts (else the bench's unsigned images; checks needing one are then "
    "inconclusive when the device rejects them).",
)
@click.option(
    "--block-period-unit",
    type=click.Choice(["ms", "s"]),
    default="ms",
    show_default=True,
    help="Unit the real device reads MinimumBlockPeriod in.",
)
@click.option(
    "--join-timeout",
    type=click.FloatRange(1.0, 86400.0),
    default=300.0,
    show_default=True,
    help="Seconds joining stays open for the real device before its checks are given up as inconclusive.",
)
@click.option("--checks", "check_ids", metavar="ID,...", help="Only these checks (default: all).")
@click.option(
    "--report-dir", type=click.Path(path_type=Path, file_okay=False), help="Write report.json/.xml/.html here."
)
@click.option("--pcap", type=click.Path(path_type=Path, dir_okay=False), help="Capture the CHF radio's frames here.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the emulated HAN.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout (the table goes to stderr).")
def device(
    dut_path: Path | None,
    dut_plugin: str | None,
    radio: str | None,
    port: str | None,
    eui64: str | None,
    kind: str | None,
    image_path: Path | None,
    block_period_unit: str,
    join_timeout: float,
    check_ids: str | None,
    report_dir: Path | None,
    pcap: Path | None,
    seed: int,
    as_json: bool,
) -> int:
    """Run a PPMID or HCALCS through the device checks (C-01 … C-23, C-PAGE) against the test CHF.

    Either an emulated device, `--dut PROFILE` (each check gets a fresh HAN; on virtual time a full run takes
    seconds), or a real device behind an EZSP dongle, `--radio ezsp --device PATH --eui64 EUI64`: the bench
    opens joining and waits `--join-timeout` seconds for it to join, then runs the checks one after another.
    Checks that cannot be decided (the device never joined, a GBCS message this bench cannot see) are
    inconclusive with the reason."""
    ids = _checks(check_ids)
    select(ids)  # unknown IDs are a usage error before anything runs
    if dut_plugin is not None:
        if dut_path is not None or port is not None or eui64 is not None:
            raise click.UsageError("--dut-plugin names the device under test; drop --dut/--device/--eui64")
        supplied = None
        if image_path is not None:
            supplied = HeldImage.from_bytes(ota_image.read_file(image_path), source=str(image_path))
        target = DeviceTarget(
            dut=load_plugin(dut_plugin), image=supplied, radio=radio or "loopback", seed=seed, join_timeout=join_timeout
        )
    elif dut_path is not None:
        if port is not None or eui64 is not None:
            raise click.UsageError("--dut names an emulated device; --device/--eui64 are for a real one, not both")
        target = DeviceTarget(profile=load_device(dut_path), radio=radio or "loopback", seed=seed)
    else:
        if port is None or eui64 is None:
            raise click.UsageError("give --dut PROFILE, or --radio ezsp --device PATH --eui64 EUI64 for a real device")
        if radio == "loopback":
            raise click.UsageError("a real device is reached through an EZSP coordinator: --radio ezsp")
        try:
            ieee = parse_eui64(eui64)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--eui64") from None
        image = None
        if image_path is not None:
            image = HeldImage.from_bytes(ota_image.read_file(image_path), source=str(image_path))
        target = DeviceTarget(
            port=port,
            ieee=ieee,
            kind=kind,
            image=image,
            block_period_unit=block_period_unit,
            join_timeout=join_timeout,
            radio="ezsp",
        )
    with _CheckProgress(not as_json) as progress:
        report = run_device_checks(
            target, ids, pcap=pcap, notice=lambda text: click.echo(text, err=True), progress=progress
        )
    return _finish(report, report_dir=report_dir, as_json=as_json)


@command.command("server")
@click.option("--target", type=click.Choice(["ours", "zigpy"]), required=True, help="The OTA server under test.")
@click.option("--checks", "check_ids", metavar="ID,...", help="Only these checks (default: all).")
@click.option(
    "--report-dir", type=click.Path(path_type=Path, file_okay=False), help="Write report.json/.xml/.html here."
)
@click.option("--pcap", type=click.Path(path_type=Path, dir_okay=False), help="Capture the air here.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout (the table goes to stderr).")
def server(target: str, check_ids: str | None, report_dir: Path | None, pcap: Path | None, as_json: bool) -> int:
    """Probe an OTA server — this project's CHF (`ours`) or zigpy's own (`zigpy`) — with a scripted client
    through the server checks (S-xx), on virtual time."""
    ids: Sequence[str] | None = _checks(check_ids)
    select(ids, server_checks.CHECKS)
    report = server_checks.run_server_checks(target, ids, pcap=pcap)
    return _finish(report, report_dir=report_dir, as_json=as_json)
