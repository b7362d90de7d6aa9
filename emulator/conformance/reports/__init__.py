"""Where a conformance report goes: the terminal, JSON, JUnit XML and a self-contained HTML file.

This is the one import point for report output; the JUnit and HTML writers live in their own modules because
each is a format of its own. Every file is written atomically. The JSON form is described by the JSON Schema
shipped next to the model (`SCHEMA_PATH`, `load_schema`); `read_json` reads a report back (to resume a run).
"""

from __future__ import annotations

import enum
import json
import os
from pathlib import Path
from typing import Any

import zigpy.types as t
from rich.console import Console
from rich.table import Table
from rich.text import Text

from emulator.conformance.reports.html import report_html, write_html
from emulator.conformance.reports.junit import junit_xml, write_junit
from emulator.conformance.reports.text import counts_text, header_lines, outcome_text, seconds_text
from emulator.conformance.results import SCHEMA_VERSION, Report
from emulator.conformance.verdict import Verdict
from emulator.errors import InputError
from emulator.files import write_atomic

__all__ = [
    "SCHEMA_PATH",
    "ReportError",
    "check_report_dir",
    "junit_xml",
    "load_schema",
    "read_json",
    "render_terminal",
    "report_html",
    "report_json",
    "write_all",
    "write_html",
    "write_json",
    "write_junit",
]

VERDICT_STYLE = {
    Verdict.PASS: "bold green",
    Verdict.FAIL: "bold red",
    Verdict.NOT_APPLICABLE: "dim",
    Verdict.INCONCLUSIVE: "bold yellow",
}

FILE_NAMES = {"json": "report.json", "junit": "report.xml", "html": "report.html"}
SCHEMA_PATH = Path(__file__).parent.parent / "report.schema.json"


class ReportError(InputError):
    """A report destination that cannot be written."""


def render_terminal(report: Report, console: Console) -> None:
    for label, value in header_lines(report):
        console.print(f"{label}: {value}", highlight=False, markup=False)
    table = Table(title=f"Conformance: {report.target}", title_justify="left", expand=False)
    table.add_column("ID", no_wrap=True)
    table.add_column("Level", no_wrap=True)
    table.add_column("Verdict", no_wrap=True)
    table.add_column("Title")
    table.add_column("Reason")
    for result in report.results:
        table.add_row(
            result.check.id,
            result.check.level.value,
            Text(result.verdict.value, style=VERDICT_STYLE[result.verdict]),
            result.check.title,
            result.reason,
        )
    console.print(table)
    console.print(
        f"{counts_text(report)}; protocol time {seconds_text(report.protocol_time)}, "
        f"wall time {seconds_text(report.wall_time)}",
        highlight=False,
    )
    if report.pcap:
        keys = f" (keys to open it: {report.pcap_keys})" if report.pcap_keys else ""
        console.print(f"capture: {report.pcap}{keys}", highlight=False)
    console.print(Text(outcome_text(report), style="bold green" if report.passed else "bold red"))


def _jsonable(value: Any) -> Any:
    """Frame fields hold zigpy values: EUI-64s are lists to Python and bytes are not JSON at all."""
    if isinstance(value, t.EUI64):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, enum.Enum) and not isinstance(value, int | str):
        return value.name
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def report_json(report: Report) -> str:
    return json.dumps(_jsonable(report.as_dict()), indent=2) + "\n"


def write_json(report: Report, path: str | os.PathLike[str]) -> None:
    write_atomic(path, report_json(report))


def load_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) every report.json conforms to."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


def read_json(path: str | os.PathLike[str]) -> Report:
    """A report as `write_json` wrote it; a missing, unreadable or foreign file is a one-line `ReportError`."""
    source = Path(path)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{source}: no such report (expected report.json of an earlier run)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{source}: not a readable JSON report ({exc})") from None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        found = data.get("schema_version") if isinstance(data, dict) else None
        raise ReportError(f"{source}: expected a report of schema_version {SCHEMA_VERSION}, found {found!r}")
    try:
        return Report.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportError(f"{source}: a report with a missing or wrong field ({exc!r})") from None


def check_report_dir(directory: str | os.PathLike[str]) -> Path:
    """Make sure reports can be written into `directory` (creating it), before a run spends hours on checks."""
    target = Path(directory)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ReportError(f"report directory {target}: expected a directory, found a file in the way") from None
    except OSError as exc:
        raise ReportError(f"report directory {target}: cannot create it ({exc.strerror})") from None
    probe = target / f".ota-emu-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ReportError(f"report directory {target}: cannot write in it ({exc.strerror})") from None
    return target


def write_all(report: Report, directory: str | os.PathLike[str]) -> dict[str, Path]:
    """report.json, report.xml (JUnit) and report.html in `directory` (created if missing)."""
    target = check_report_dir(directory)
    paths = {kind: target / name for kind, name in FILE_NAMES.items()}
    write_json(report, paths["json"])
    write_junit(report, paths["junit"])
    write_html(report, paths["html"])
    return paths
