"""Plain-text forms of report values, shared by the terminal, JUnit and HTML writers so all three say the same.

Frame fields come from zigpy's decoders and may hold enums, EUI-64s (lists of bytes to Python) and raw bytes;
each gets the form a reader of a sniffer trace expects.
"""

from __future__ import annotations

import enum
import re
from typing import Any

import zigpy.types as t

from emulator.conformance.model import CheckResult, FrameRecord, Report, Verdict

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


def fields_text(fields: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value_text(value)}" for name, value in fields.items())


def seconds_text(seconds: float) -> str:
    return f"{seconds:.3f} s"


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
    parts = ", ".join(f"{counts[v.value]} {v.value}" for v in Verdict)
    return f"{len(report.results)} checks: {parts}"


def outcome_text(report: Report) -> str:
    """The one-word outcome, with the number of MUST failures that decided it."""
    failures = len(report.must_failures)
    return "PASS" if report.passed else f"FAIL ({failures} MUST failure{'s' if failures != 1 else ''})"
