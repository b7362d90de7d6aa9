"""Plain-text forms of report values, shared by the terminal, JUnit and HTML writers so all three say the same.

Frame fields come from zigpy's decoders and may hold enums, EUI-64s (lists of bytes to Python) and raw bytes;
each gets the form a reader of a sniffer trace expects: ZCL status codes by name (ZCL §2.6.3, OTA §11.13 status
codes), manufacturer codes, image types and file versions in hex as the OTA file header writes them. The same
forms apply to a report re-read from JSON, where those values are plain integers.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from typing import Any

import zigpy.types as t
from zigpy.zcl import foundation

from emulator.conformance.results import DUT_FIELDS, NOT_READABLE, CheckResult, DutInfo, Report
from emulator.conformance.verdict import FrameRecord, Verdict, key

MAX_FIELD_BYTES = 24
# Characters XML 1.0 cannot carry and HTML renders as boxes; a reason or a frame field could hold any of them.
_INVISIBLE = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def visible(text: str) -> str:
    """`text` with control and non-characters spelled out as \\xNN, so every report format can carry it."""
    return _INVISIBLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def value_text(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, t.EUI64):
        return str(value)
    if isinstance(value, bytes | bytearray):
        shown = bytes(value[:MAX_FIELD_BYTES]).hex()
        return shown if len(value) <= MAX_FIELD_BYTES else f"{shown}… ({len(value)} bytes)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, dict):
        return "{" + fields_text(value) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    return str(value)


# Identifier fields of OTA frames, shown in hex with the digits of their width (OTA header field sizes).
HEX_DIGITS = {
    "manufacturer_code": 4,
    "image_type": 4,
    "hardware_version": 4,
    "file_version": 8,
    "current_file_version": 8,
    "new_file_version": 8,
}
STATUS_FIELDS = frozenset({"status"})
_STATUS: Callable[[int], enum.Enum] = foundation.Status


def status_text(code: int) -> str:
    """A ZCL status code as 0xNN and its name: `0x98 NO_IMAGE_AVAILABLE`."""
    try:
        return f"0x{code:02X} {_STATUS(code).name}"
    except ValueError:
        return f"0x{code:02X}"


def field_text(name: str, value: Any) -> str:
    """One decoded field's value as a reader of the OTA specification writes it."""
    if isinstance(value, int) and not isinstance(value, bool):
        if name in STATUS_FIELDS and 0 <= int(value) <= 0xFF:
            return status_text(int(value))
        if name in HEX_DIGITS and int(value) >= 0:
            return f"0x{int(value):0{HEX_DIGITS[name]}X}"
    return value_text(value)


def fields_text(fields: dict[str, Any]) -> str:
    return ", ".join(f"{name}={field_text(name, value)}" for name, value in fields.items())


def seconds_text(seconds: float) -> str:
    return f"{seconds:.3f} s"


def span_text(seconds: float) -> str:
    """A length of time as a person reads it: `850 ms`, `42.5 s`, `65 min`, `4 h 10 min`."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def dut_lines(dut: DutInfo) -> list[tuple[str, str]]:
    """(label, value) for each identity field, `not readable` where the device did not give it."""
    return [(label, getattr(dut, name) or NOT_READABLE) for name, label, _ in DUT_FIELDS]


def frame_line(frame: FrameRecord) -> str:
    """One evidence frame as a line of a sniffer-style listing."""
    return (
        f"{frame.at:12.3f} s  {frame.direction:8}  0x{frame.src:04X}->0x{frame.dst:04X}  "
        f"cluster 0x{frame.cluster_id:04X}  {frame.name}  {fields_text(frame.fields)}  [{frame.hex}]"
    )


def evidence_text(result: CheckResult) -> str:
    lines = [f"{result.check.id} {result.check.title}", f"verdict: {result.verdict.value}: {result.reason}"]
    lines.append(f"reference: {result.check.reference}")
    if result.evidence:
        lines.append(f"evidence ({len(result.evidence)} frames):")
        lines.extend(frame_line(frame) for frame in result.evidence)
    if result.timeline:
        lines.append(f"timeline ({len(result.timeline)} points):")
        lines.extend(
            f"{point.at:12.3f} s  offset {point.offset}" + (f"  [{point.mark}]" if point.mark else "")
            for point in result.timeline
        )
    return "\n".join(lines)


def counts_text(report: Report) -> str:
    counts = report.counts()
    parts = ", ".join(f"{counts[key(v)]} {v.value}" for v in Verdict)
    text = f"{len(report.results)} check{'s' if len(report.results) != 1 else ''}: {parts}"
    if report.not_run:
        text += f"; {len(report.not_run)} not run"
    return text


def outcome_text(report: Report) -> str:
    """The one-word outcome, with the number of MUST failures that decided it (and, for a run stopped early,
    that it was: its PASS covers only the checks that ran)."""
    failures = len(report.must_failures)
    outcome = "PASS" if report.passed else f"FAIL ({failures} MUST failure{'s' if failures != 1 else ''})"
    return f"{outcome}, INTERRUPTED" if report.interrupted else outcome


def settings_text(settings: dict[str, Any]) -> str:
    """The options a run was given, `name=value`, leaving out those not set."""
    shown = []
    for name, value in settings.items():
        if value is None or value is False or value == []:
            continue
        if value is True:
            shown.append(name)
        elif isinstance(value, list | tuple):
            shown.append(f"{name}={','.join(str(v) for v in value)}")
        else:
            shown.append(f"{name}={value}")
    return ", ".join(shown) if shown else "defaults"


def header_lines(report: Report) -> list[tuple[str, str]]:
    """What a filed report opens with: when, with what, on which device, with which settings."""
    lines: list[tuple[str, str]] = []
    run = report.run
    if run is not None:
        lines.append(("Date", run.started_utc))
        lines.append(("Tool", f"ota-emu {run.tool_version}"))
        lines.append(("Bench", f"{run.bench}: {settings_text(run.settings)}"))
        if run.resumed:
            lines.append(("Resumed", f"{run.resumed} time{'s' if run.resumed != 1 else ''}"))
    lines.append(("Target", report.target))
    if report.dut is not None:
        lines.extend((f"DUT {label}", value) for label, value in dut_lines(report.dut))
    if report.interrupted:
        lines.append(("Interrupted", f"{len(report.not_run)} planned check(s) not run: {', '.join(report.not_run)}"))
    return lines
