"""`ota-emu conform`: the conformance bench — a PPMID/HCALCS against the test CHF (`device`), or an OTA server
against a scripted client (`server`). A table of verdicts always; JSON, JUnit XML and HTML reports and a pcap
on request. Exit 0 when every MUST check passed (or does not apply), 1 otherwise, 2 on bad input, 130 when the
run was interrupted (its report is written all the same, and `conform --resume DIR` continues it)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from emulator import __version__
from emulator.chf.store import HeldImage
from emulator.cli.params import ProfileParam
from emulator.conformance.device.bench import DeviceTarget, expected_durations, run_device_checks
from emulator.conformance.device.catalogue import CHECKS as DEVICE_CHECKS
from emulator.conformance.device.durations import EXPECTED_S
from emulator.conformance.device.dut import DutSecurity, read_credentials
from emulator.conformance.interface import load_plugin
from emulator.conformance.reports import (
    FILE_NAMES,
    ReportError,
    check_report_dir,
    read_json,
    render_terminal,
    report_json,
    write_all,
)
from emulator.conformance.reports.text import span_text
from emulator.conformance.results import CheckResult, Report, RunInfo
from emulator.conformance.running import Step, exit_code
from emulator.conformance.selection import parse_ids, select
from emulator.conformance.server.bench import run_server_checks
from emulator.conformance.server.catalogue import CHECKS as SERVER_CHECKS
from emulator.errors import InputError
from emulator.ota import image as ota_image
from emulator.profiles import load_device, parse_eui64
from emulator.security.install_code import InstallCode, InstallCodeError

# Wide enough that a table in a CI log keeps one line per check.
LOG_WIDTH = 160
# Waits at least this long (seconds) get a line of their own in a log.
LONG_WAIT = 60.0

F = TypeVar("F", bound=Callable[..., Any])


def _console(as_json: bool) -> Console:
    """The summary's console: stdout, or stderr when stdout carries JSON."""
    stream = sys.stderr if as_json else sys.stdout
    return Console(file=stream, width=None if stream.isatty() else LOG_WIDTH, highlight=False)


# -- option spellings of the previous release ---------------------------------------------------------------


def _renamed(old: str, new: str, dest: str, **attrs: Any) -> Callable[[F], F]:
    """`old`, kept hidden for one release: it still works (as `new`) and says on stderr that it is renamed."""

    def warn(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None:
            click.echo(f"ota-emu: warning: {old} is renamed {new}; {old} will be removed", err=True)
        return value

    return click.option(old, dest, hidden=True, callback=warn, **attrs)


def _either(new_value: Any, old_value: Any, new: str, old: str) -> Any:
    if new_value is not None and old_value is not None:
        raise click.UsageError(f"{old} is the old name of {new}: give {new} only")
    return new_value if new_value is not None else old_value


# -- progress -----------------------------------------------------------------------------------------------


class _CheckProgress:
    """Where a run is: check n of N, what it plays and waits for, how long it is expected to take and about how
    long the run has left, on stderr (so also with --json). A live bar on a terminal; on a log (stderr not a
    terminal) one line as each check starts and ends, for runs on real time only (a virtual-time run is over
    in seconds)."""

    def __init__(self, *, real_time: bool, expected: dict[str, float | None] | None = None) -> None:
        self.live = sys.stderr.isatty()
        self.lines = not self.live and real_time
        self.real_time = real_time
        self.expected = expected or {}
        self._progress = Progress(
            SpinnerColumn(),
            MofNCompleteColumn(),
            BarColumn(bar_width=20),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self._task: TaskID | None = None
        self._waited = ""

    def _waiting(self, step: Step) -> None:
        """What the check waits for now: on the live line always; in a log once per check and kind of frame,
        for waits of a minute or more (a transfer's many short waits for the next block would flood it)."""
        text = f"{step.check.id} waiting for {step.waiting}, up to {span_text(step.wait or 0.0)}"
        if self.live and self._task is not None:
            self._progress.update(self._task, description=text)
        elif self.lines and (step.wait or 0.0) >= LONG_WAIT and step.waiting != self._waited:
            self._waited = step.waiting or ""
            click.echo(f"[{step.index}/{step.total}] {text}", err=True)

    def __enter__(self) -> _CheckProgress:
        if self.live:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self._progress.stop()

    def left(self, step: Step) -> str:
        """About how long the checks from `step` on take, by their expected durations."""
        if not self.real_time:
            return ""
        ids = list(self.expected)
        rest = ids[ids.index(step.check.id) :] if step.check.id in ids else []
        known = [seconds for i in rest if (seconds := self.expected[i]) is not None]
        return f"; about {span_text(sum(known))} left" if known else ""

    def describe(self, step: Step) -> str:
        check = step.check
        expected = f"expected {span_text(step.expected)}" if step.expected is not None else "duration unknown"
        return f"{check.id} {check.title} ({expected}{self.left(step)}) — {check.scenario}"

    def __call__(self, step: Step) -> None:
        if step.waiting is not None:
            self._waiting(step)
            return
        if step.result is None:
            self._waited = ""
            text = self.describe(step)
            if self.live:
                if self._task is None:
                    self._task = self._progress.add_task(text, total=step.total, completed=step.index - 1)
                self._progress.update(self._task, description=text, completed=step.index - 1)
            elif self.lines:
                click.echo(f"[{step.index}/{step.total}] {text}", err=True)
            return
        took = span_text(step.result.wall_duration or 0.0) if self.real_time else span_text(step.result.duration)
        if self.live and self._task is not None:
            self._progress.update(self._task, completed=step.index)
        elif self.lines:
            click.echo(f"[{step.index}/{step.total}] {step.check.id} {step.result.verdict.value} in {took}", err=True)


# -- finishing ----------------------------------------------------------------------------------------------


def _finish(report: Report, *, report_dir: Path | None, as_json: bool) -> int:
    console = _console(as_json)
    render_terminal(report, console)
    code = exit_code(report)
    if not report.interrupted and code and report.passed:
        console.print("Some MUST check could not be decided (inconclusive): exit code 1", highlight=False)
    if report_dir is not None:
        paths = write_all(report, report_dir)
        console.print("reports: " + ", ".join(str(p) for p in paths.values()), highlight=False)
    if report.interrupted:
        decided = len(report.results)
        planned = decided + len(report.not_run)
        again = (
            f"; continue with: ota-emu conform --resume {report_dir}"
            if report_dir is not None and report.run is not None and report.run.bench == "device"
            else ""
        )
        console.print(f"Interrupted: {decided} of {planned} checks decided{again}", highlight=False, markup=False)
    if as_json:
        click.echo(report_json(report), nl=False)
    return code


def _checks(text: str | None) -> list[str] | None:
    return None if text is None else parse_ids(text)


def _now_utc() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _report_dir(path: Path | None) -> Path | None:
    """A report directory made ready (created, writable) before any check runs: hours of checks must not end
    in a report that cannot be written."""
    return None if path is None else check_report_dir(path)


# -- the group ----------------------------------------------------------------------------------------------


@click.group("conform", invoke_without_command=True)
@click.option("--list-checks", is_flag=True, help="List every device and server check (ID, level, reference).")
@click.option(
    "--resume",
    "resume_dir",
    metavar="REPORT_DIR",
    type=click.Path(path_type=Path, file_okay=False),
    help="Continue the interrupted device run whose reports are in REPORT_DIR (its settings, its remaining "
    "checks); the reports there are rewritten with every check.",
)
@click.option("--json", "as_json", is_flag=True, help="With --list-checks or --resume: JSON on stdout.")
@click.pass_context
def command(ctx: click.Context, list_checks: bool, resume_dir: Path | None, as_json: bool) -> int | None:
    """Conformance bench: check a device (PPMID/HCALCS) or an OTA server against the check catalogue (each
    check cites the ZCL/OTA, Zigbee or GBCS clause it enforces), with a verdict and the frames that decided it
    for every check."""
    if ctx.invoked_subcommand is not None:
        if list_checks or resume_dir is not None or as_json:
            raise click.UsageError("--list-checks, --resume and --json go without a subcommand (device, server)")
        return None
    if list_checks and resume_dir is not None:
        raise click.UsageError("give --list-checks or --resume, not both")
    if list_checks:
        _list_checks(as_json)
        return 0
    if resume_dir is not None:
        return _resume(resume_dir, as_json)
    raise click.UsageError("give a subcommand (device, server), --list-checks or --resume REPORT_DIR")


def _catalogue() -> list[tuple[str, Any]]:
    return [("device", c) for c in DEVICE_CHECKS.values()] + [("server", c) for c in SERVER_CHECKS.values()]


def _list_checks(as_json: bool) -> None:
    if as_json:
        entries = [
            {"bench": bench, **asdict(check), "expected_s": EXPECTED_S.get(check.id)} for bench, check in _catalogue()
        ]
        click.echo(json.dumps(entries, indent=2))
        return
    table = Table(title="Conformance checks", title_justify="left")
    for column in ("ID", "Bench", "Level", "Applies to", "Expected", "Title", "Reference"):
        table.add_column(column, no_wrap=column in ("ID", "Bench", "Level", "Expected"))
    for bench, check in _catalogue():
        figures = EXPECTED_S.get(check.id)
        expected = span_text(max(figures.values())) if figures else ""
        table.add_row(
            check.id, bench, check.level.value, ", ".join(check.applies_to), expected, check.title, check.reference
        )
    _console(False).print(table)


# -- device -------------------------------------------------------------------------------------------------


@command.command("device")
@click.option(
    "--dut",
    "dut_path",
    type=ProfileParam(),
    help="Profile of an emulated device under test (a TOML file or a bundled name).",
)
@click.option(
    "--dut-plugin",
    metavar="MODULE:FACTORY",
    help="A device under test from your own harness: FACTORY() returns an "
    "emulator.conformance.interface.DeviceUnderTest (README, Conformance bench).",
)
@click.option(
    "--radio",
    type=click.Choice(["loopback", "ezsp"]),
    help="loopback: zigpy's in-process radio (the default with --dut); ezsp: through bellows — to a virtual NCP "
    "in process with --dut (virtual time too), to the coordinator at --port for a real device.",
)
@click.option(
    "--real-time",
    is_flag=True,
    help="Run an emulated device's checks on the wall clock instead of virtual time (a real device always is).",
)
@click.option("--port", metavar="PORT", help="EZSP coordinator of a real device (serial port or tcp://).")
@click.option("--target", "target_eui64", metavar="EUI64", help="EUI-64 of the real device under test.")
@_renamed("--device", "--port", "old_port")
@_renamed("--eui64", "--target", "old_eui64")
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
@click.option(
    "--install-code",
    metavar="HEX",
    help="The real device's install code (hex, with or without its CRC): the test CHF then speaks Smart Energy "
    "security as a GB CHF does (admits the device by this code only, runs CBKE, APS-encrypts OTA). Without it the "
    "CHF uses the network key only, which a GB device will not join.",
)
@click.option(
    "--cbke",
    type=click.Choice(["host", "ncp"]),
    help="With --install-code, where key establishment's cryptography runs: on this host (the default), or in the "
    "stick's CBKE library with its own certificate.",
)
@click.option(
    "--chf-credentials",
    type=click.Path(path_type=Path, dir_okay=False),
    help="With --install-code: the CHF's CBKE credentials (an `ota-emu certs issue` file for the coordinator "
    "stick's EUI-64, from the CA the device trusts); default: a certificate of the bundled TEST-ONLY CA.",
)
@click.option("--checks", "check_ids", metavar="ID,...", help="Only these checks (default: all).")
@click.option(
    "--report-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write report.json/.xml/.html here (created if missing).",
)
@click.option("--pcap", type=click.Path(path_type=Path, dir_okay=False), help="Capture the CHF radio's frames here.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the emulated HAN.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout (the table goes to stderr).")
def device(
    dut_path: Path | None,
    dut_plugin: str | None,
    radio: str | None,
    real_time: bool,
    port: str | None,
    target_eui64: str | None,
    old_port: str | None,
    old_eui64: str | None,
    kind: str | None,
    image_path: Path | None,
    block_period_unit: str,
    join_timeout: float,
    install_code: str | None,
    cbke: str | None,
    chf_credentials: Path | None,
    check_ids: str | None,
    report_dir: Path | None,
    pcap: Path | None,
    seed: int,
    as_json: bool,
) -> int:
    """Run a PPMID or HCALCS through the device checks (C-01 … C-23, C-PAGE) against the test CHF.

    Either an emulated device, `--dut PROFILE` (each check gets a fresh HAN; on virtual time a full run takes
    seconds), or a real device behind an EZSP dongle, `--radio ezsp --port PORT --target EUI64`: the bench
    opens joining and waits `--join-timeout` seconds for it to join, reads who it is (Basic and OTA
    attributes), then runs the checks one after another, showing check n of N and the time left. A GB device
    joins only with its install code: give it with --install-code, and the test CHF admits the device by it,
    runs CBKE with it and APS-encrypts the OTA frames. Checks that cannot be decided (the device never joined or
    failed CBKE, a GBCS message this bench cannot see) are inconclusive with the reason. Ctrl-C or SIGTERM stops
    the run and writes the report of the checks decided so far."""
    port = _either(port, old_port, "--port", "--device")
    target_eui64 = _either(target_eui64, old_eui64, "--target", "--eui64")
    ids = _checks(check_ids)
    selected = select(ids, DEVICE_CHECKS)  # unknown IDs are a usage error before anything runs
    settings: dict[str, Any] = {
        "dut": None if dut_path is None else str(dut_path.resolve()),
        "dut-plugin": dut_plugin,
        "radio": radio,
        "real-time": real_time,
        "port": port,
        "target": target_eui64,
        "kind": kind,
        "image": None if image_path is None else str(image_path.resolve()),
        "block-period-unit": block_period_unit,
        "join-timeout": join_timeout,
        "install-code": install_code,
        "cbke": cbke,
        "chf-credentials": None if chf_credentials is None else str(chf_credentials.resolve()),
        "checks": ids,
        "pcap": None if pcap is None else str(pcap),
        "seed": seed,
    }
    target = _device_target(settings)
    report_dir = _report_dir(report_dir)
    run = RunInfo(_now_utc(), __version__, "device", settings, [c.id for c in selected])
    report = _run_device(target, ids, run, pcap=pcap, as_json=as_json)
    return _finish(report, report_dir=report_dir, as_json=as_json)


def _device_target(settings: dict[str, Any]) -> DeviceTarget:
    """The device under test the settings name (as given on the command line, or as a report recorded them)."""
    dut, port, eui64, radio = settings["dut"], settings["port"], settings["target"], settings["radio"]
    plugin = settings.get("dut-plugin")
    security = _stick_security(settings)
    if plugin is not None:
        if dut is not None or port is not None or eui64 is not None:
            raise click.UsageError("--dut-plugin names the device under test; drop --dut/--port/--target")
        supplied = None
        if settings["image"] is not None:
            supplied = HeldImage.from_bytes(ota_image.read_file(settings["image"]), source=settings["image"])
        harness = load_plugin(plugin)
        if security is not None and harness.port is None:
            raise click.UsageError("--install-code is for a device behind a coordinator port; this harness has none")
        return DeviceTarget(
            dut=harness,
            image=supplied,
            radio=radio or "loopback",
            seed=int(settings["seed"]),
            join_timeout=float(settings["join-timeout"]),
            real_time=bool(settings.get("real-time", False)),
            security=security,
        )
    if dut is not None:
        if port is not None or eui64 is not None:
            raise click.UsageError("--dut names an emulated device; --port/--target are for a real one, not both")
        if security is not None:
            raise click.UsageError(
                "--install-code is for a real device (--port, --target); an emulated one's profile holds its own"
            )
        return DeviceTarget(
            profile=load_device(dut),
            radio=radio or "loopback",
            seed=int(settings["seed"]),
            real_time=bool(settings.get("real-time", False)),
        )
    if port is None or eui64 is None:
        raise click.UsageError("give --dut PROFILE, or --radio ezsp --port PORT --target EUI64 for a real device")
    if radio == "loopback":
        raise click.UsageError("a real device is reached through an EZSP coordinator: --radio ezsp")
    try:
        ieee = parse_eui64(eui64)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--target") from None
    image = None
    if settings["image"] is not None:
        image = HeldImage.from_bytes(ota_image.read_file(settings["image"]), source=settings["image"])
    return DeviceTarget(
        port=port,
        ieee=ieee,
        kind=settings["kind"],
        image=image,
        block_period_unit=settings["block-period-unit"],
        join_timeout=float(settings["join-timeout"]),
        radio="ezsp",
        security=security,
    )


def _stick_security(settings: dict[str, Any]) -> DutSecurity | None:
    """Smart Energy security for a device behind a coordinator, as --install-code, --cbke and --chf-credentials
    ask (none without --install-code: the network key only)."""
    text, cbke, credentials = settings.get("install-code"), settings.get("cbke"), settings.get("chf-credentials")
    if text is None:
        if cbke is not None or credentials is not None:
            raise click.UsageError("--cbke and --chf-credentials go with --install-code (Smart Energy security)")
        return None
    try:
        code = InstallCode.parse(text)
    except InstallCodeError as exc:
        raise InputError(f"--install-code: {exc}") from None
    if credentials is not None:
        if cbke == "ncp":
            raise click.UsageError(
                "--chf-credentials is for --cbke host: with --cbke ncp the stick's CBKE library has its own certificate"
            )
        read_credentials(credentials)  # a file that is no credentials file is refused before anything runs
    return DutSecurity(code, cbke or "host", credentials)


def _run_device(
    target: DeviceTarget,
    ids: Sequence[str] | None,
    run: RunInfo,
    *,
    pcap: Path | None,
    as_json: bool,
    done: Sequence[CheckResult] = (),
) -> Report:
    kind = target.profile.kind if target.profile is not None else target.kind
    decided = {r.check.id for r in done}
    expected = expected_durations([c for c in select(ids, DEVICE_CHECKS) if c.id not in decided], kind)
    with _CheckProgress(real_time=not target.virtual, expected=expected) as progress:
        report = run_device_checks(
            target,
            ids,
            pcap=pcap,
            notice=lambda text: click.echo(text, err=True),
            progress=progress,
            done=done,
            signals=True,
        )
    report.run = run
    return report


def _resume(report_dir: Path, as_json: bool) -> int:
    """Run the checks an interrupted device run did not get to, with its settings, and rewrite its reports."""
    path = report_dir / FILE_NAMES["json"]
    earlier = read_json(path)
    run = earlier.run
    if run is None or run.bench != "device":
        raise ReportError(f"{path}: only a device run (ota-emu conform device) can be resumed")
    if not earlier.interrupted:
        raise ReportError(f"{path}: that run finished (it was not interrupted); nothing to resume")
    check_report_dir(report_dir)
    settings = dict(run.settings)
    target = _device_target(settings)
    pcap = None
    if settings.get("pcap"):
        first = Path(settings["pcap"])
        pcap = first.with_name(f"{first.stem}.resumed-{run.resumed + 1}{first.suffix}")
    ids = run.planned
    resumed = RunInfo(run.started_utc, run.tool_version, run.bench, settings, list(run.planned), run.resumed + 1)
    report = _run_device(target, ids, resumed, pcap=pcap, as_json=as_json, done=earlier.results)
    report.protocol_time += earlier.protocol_time
    report.wall_time += earlier.wall_time
    notes = [n for n in earlier.notes if n not in report.notes]
    report.notes = [*notes, *report.notes, f"resumed at {_now_utc()} by ota-emu {__version__}"]
    if earlier.pcap and report.pcap != earlier.pcap:
        report.notes.append(f"capture of the run before: {earlier.pcap}")
    if earlier.dut is not None and report.dut is not None and earlier.dut != report.dut:
        report.notes.append(f"the device answered differently when resumed: {asdict(report.dut)}")
    if earlier.dut is not None:
        report.dut = earlier.dut  # who the device was when the run began
    return _finish(report, report_dir=report_dir, as_json=as_json)


# -- server -------------------------------------------------------------------------------------------------


@command.command("server")
@click.option("--server", "server_name", type=click.Choice(["ours", "zigpy"]), help="The OTA server under test.")
@_renamed("--target", "--server", "old_server", type=click.Choice(["ours", "zigpy"]))
@click.option("--checks", "check_ids", metavar="ID,...", help="Only these checks (default: all).")
@click.option(
    "--report-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write report.json/.xml/.html here (created if missing).",
)
@click.option("--pcap", type=click.Path(path_type=Path, dir_okay=False), help="Capture the air here.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout (the table goes to stderr).")
def server(
    server_name: str | None,
    old_server: str | None,
    check_ids: str | None,
    report_dir: Path | None,
    pcap: Path | None,
    as_json: bool,
) -> int:
    """Probe an OTA server — this project's CHF (`ours`) or zigpy's own (`zigpy`) — with a scripted client
    through the server checks (S-xx), on virtual time."""
    name = _either(server_name, old_server, "--server", "--target")
    if name is None:
        raise click.UsageError("missing option --server (ours or zigpy)")
    ids: Sequence[str] | None = _checks(check_ids)
    selected = select(ids, SERVER_CHECKS)
    report_dir = _report_dir(report_dir)
    settings = {"server": name, "checks": ids, "pcap": None if pcap is None else str(pcap)}
    run = RunInfo(_now_utc(), __version__, "server", settings, [c.id for c in selected])
    report = run_server_checks(name, ids, pcap=pcap, signals=True)
    report.run = run
    return _finish(report, report_dir=report_dir, as_json=as_json)
