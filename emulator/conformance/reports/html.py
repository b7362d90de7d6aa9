"""A conformance report as ONE self-contained HTML file: inline CSS, inline SVG, no script, no external URL.

It is attached to tickets and opened offline in a lab, so it must render the same anywhere with nothing
fetched. It opens with when and with what the run was made and who the device said it was; then each check
shows its verdict, reason and the clause it cites (the check's own reference: the report adds none); a transfer
timeline (file offset against protocol time, to the end of the check) where the check has one, with waits and
holds shaded, aborts and restarts drawn as rules; and the frames it was judged on with decoded field values —
open for a failure or an inconclusive check, folded for a pass so a long transfer does not bury the summary.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html import escape as html_escape

from emulator.conformance.reports.text import (
    counts_text,
    fields_text,
    header_lines,
    outcome_text,
    seconds_text,
    span_text,
    visible,
)
from emulator.conformance.results import CheckResult, Report
from emulator.conformance.verdict import FrameRecord, TimelinePoint, Verdict
from emulator.files import write_atomic
from emulator.ota.frames import UPGRADE_TIME_WAIT

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 80, 20, 24, 40
LABEL_ROWS = 4
GROUP_PX = 8.0

VERDICT_CLASS = {
    Verdict.PASS: "pass",
    Verdict.FAIL: "fail",
    Verdict.NOT_APPLICABLE: "na",
    Verdict.INCONCLUSIVE: "inconclusive",
}

STYLE = """
:root { --pass: #1a7f37; --fail: #cf222e; --na: #6e7781; --inconclusive: #9a6700; --wait: #d4a72c; --event: #0969da;
  --hold: #8250df; }
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 1.5em; color: #1f2328; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 1.6em; }
h3 { margin-bottom: .3em; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #d0d7de; padding: .3em .5em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
.summary td:nth-child(-n+3) { white-space: nowrap; }
.outcome { display: inline-block; font-weight: 700; font-size: 1.3em; padding: .1em .6em; border-radius: 4px;
  color: #fff; }
.outcome.pass { background: var(--pass); }
.outcome.fail { background: var(--fail); }
.outcome.interrupted { background: var(--inconclusive); }
.badge { display: inline-block; font-size: .8em; font-weight: 700; padding: .05em .5em; border-radius: 3px;
  color: #fff; text-transform: uppercase; vertical-align: middle; white-space: nowrap; }
.badge.pass { background: var(--pass); } .badge.fail { background: var(--fail); }
.badge.na { background: var(--na); } .badge.inconclusive { background: var(--inconclusive); }
.check { border-left: 4px solid var(--na); padding: .2em 0 .6em 1em; margin: 1.2em 0; }
.check.pass { border-color: var(--pass); } .check.fail { border-color: var(--fail); }
.check.inconclusive { border-color: var(--inconclusive); }
.meta { color: #57606a; margin: .2em 0; }
.reason { font-weight: 600; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }
dt { color: #57606a; } dd { margin: 0; }
.hex, .fields { font-family: ui-monospace, monospace; font-size: .85em; word-break: break-all; }
details { margin-top: .6em; } summary { cursor: pointer; font-weight: 600; }
svg.timeline { width: 100%; max-width: 720px; height: auto; background: #fff; border: 1px solid #d0d7de; }
svg .axis { stroke: #57606a; stroke-width: 1; }
svg .grid { stroke: #eaeef2; stroke-width: 1; }
svg .transfer { fill: none; stroke: var(--event); stroke-width: 2; }
svg .point { fill: var(--event); }
svg text { font: 11px system-ui, sans-serif; fill: #57606a; }
svg .wait-span { fill: var(--wait); fill-opacity: .25; }
svg .hold-span { fill: var(--hold); fill-opacity: .12; }
svg .tail { stroke: var(--event); stroke-width: 2; stroke-dasharray: 6 4; }
svg .mark.restart { stroke: var(--hold); stroke-width: 2.5; }
svg .mark.hold { stroke: var(--hold); stroke-width: 1.5; stroke-dasharray: 4 3; }
svg .dot.restart, svg .dot.hold { fill: var(--hold); }
svg text.label.restart, svg text.label.hold { fill: var(--hold); }
svg .mark.wait { stroke: var(--wait); stroke-width: 2; stroke-dasharray: 4 3; }
svg .mark.abort { stroke: var(--fail); stroke-width: 2.5; }
svg .mark.event { stroke: var(--na); stroke-width: 1.5; stroke-dasharray: 2 3; }
svg .dot.wait { fill: var(--wait); } svg .dot.abort { fill: var(--fail); } svg .dot.event { fill: var(--na); }
svg text.label.abort { fill: var(--fail); font-weight: 700; } svg text.label.wait { fill: #7d4e00; }
.legend span { margin-right: 1.2em; } .legend .wait { color: #7d4e00; } .legend .abort { color: var(--fail); }
.legend .hold, .legend .restart { color: var(--hold); }
.notrun td { color: var(--na); }
"""


def escape(text: str) -> str:
    return html_escape(visible(text))


def anchor(check_id: str) -> str:
    return "check-" + re.sub(r"[^A-Za-z0-9_-]", "-", check_id)


def mark_kind(mark: str) -> str:
    """What a timeline mark denotes, for how it is drawn: a wait (shaded until the next point), a hold (shaded
    until the check ended or the device restarted), an abort (red rule), a restart (violet rule) or any other
    event."""
    lowered = mark.lower()
    if "abort" in lowered:
        return "abort"
    if lowered.startswith("restart"):
        return "restart"
    if lowered.startswith("hold"):
        return "hold"
    if "wait" in lowered:
        return "wait"
    return "event"


def _num(value: float) -> str:
    return f"{value:.1f}"


def evidence_marks(evidence: Iterable[FrameRecord]) -> list[TimelinePoint]:
    """Marks the transfer points do not carry but the evidence shows: the device restarting (its Device_annce,
    Zigbee spec §2.4.3.1.11) and the CHF's Upgrade End Response (OTA §11.13.9): told to wait it holds the image,
    else it is told when to activate. Offsets are filled in from the transfer when drawn."""
    marks = []
    for frame in evidence:
        if frame.name == "Device_annce" and frame.src != 0:
            marks.append(TimelinePoint(frame.at, -1, "restart (Device_annce)"))
        elif frame.name == "upgrade_end_response" and frame.src == 0:
            upgrade = int(frame.fields.get("upgrade_time", 0))
            current = int(frame.fields.get("current_time", 0))
            if upgrade == UPGRADE_TIME_WAIT:
                marks.append(TimelinePoint(frame.at, -1, "hold: told to wait (UpgradeTime 0xFFFFFFFF)"))
            else:
                delay = upgrade if current == 0 else upgrade - current
                when = "now" if delay <= 0 else f"in {span_text(delay)}"
                marks.append(TimelinePoint(frame.at, -1, f"Upgrade End Response: activate {when}"))
    return marks


def _offset_at(points: list[TimelinePoint], at: float) -> int:
    """The DUT's offset at `at`: the last transfer point at or before it (0 before the first)."""
    offset = 0
    for point in points:
        if point.at > at:
            break
        offset = point.offset
    return offset


@dataclass(frozen=True)
class _Axes:
    """Where protocol time and file offsets land in the chart: time from `start` over `length` seconds across
    the plot, offsets from 0 to `top_offset` up it."""

    start: float
    length: float
    top_offset: int

    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    bottom = TOP + plot_h

    def x(self, at: float) -> float:
        return LEFT + (at - self.start) / self.length * self.plot_w

    def y(self, offset: int) -> float:
        return TOP + self.plot_h - offset / self.top_offset * self.plot_h


def timeline_svg(
    points: list[TimelinePoint], span: tuple[float, float] | None = None, evidence: Iterable[FrameRecord] = ()
) -> str:
    """File offset against protocol time. The offset is drawn as steps (it holds until the next request), on
    a time axis that runs to the end of the check, so what happened after the last request — a hold, a wait
    for a reboot — keeps its true length; restarts and Upgrade End Responses from the evidence are marked."""
    ordered = sorted(points, key=lambda p: p.at)
    origin = span[0] if span is not None else ordered[0].at
    start = ordered[0].at
    extra = [
        TimelinePoint(m.at, _offset_at(ordered, m.at), m.mark)
        for m in evidence_marks(evidence)
        if m.at >= start and (span is None or m.at <= span[1])
    ]
    last = max([ordered[-1].at, *(m.at for m in extra)])
    stop = max(last, span[1]) if span is not None else last
    axes = _Axes(start, (stop - start) or 1.0, max(p.offset for p in ordered) or 1)
    parts = [
        f'<svg class="timeline" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="transfer timeline: file offset against time">'
    ]
    for fraction in (0.25, 0.5, 0.75, 1.0):
        gy = _num(TOP + axes.plot_h - fraction * axes.plot_h)
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{gy}" x2="{WIDTH - RIGHT}" y2="{gy}"/>')
    marked = sorted([p for p in ordered if p.mark] + extra, key=lambda p: p.at)
    parts.extend(_spans(marked, ordered, stop, axes.x))
    parts.append(f'<line class="axis" x1="{LEFT}" y1="{axes.bottom}" x2="{WIDTH - RIGHT}" y2="{axes.bottom}"/>')
    parts.append(f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{axes.bottom}"/>')
    parts.extend(_transfer(ordered, [m.at for m in extra if mark_kind(m.mark) == "restart"], stop, axes))
    parts.extend(_markers(marked, origin, axes))
    parts.extend(_axis_labels(origin, span is not None, axes))
    parts.append("</svg>")
    return "".join(parts)


def _transfer(ordered: list[TimelinePoint], restarts: list[float], stop: float, axes: _Axes) -> list[str]:
    """The offset as steps between restarts, its tail to the end of the check, and a dot per request."""
    x, y = axes.x, axes.y
    parts = []
    for run in _runs(ordered, restarts):
        steps: list[str] = []
        for index, (at, offset) in enumerate(run):
            if index:
                steps.append(f"{_num(x(at))},{_num(y(run[index - 1][1]))}")
            steps.append(f"{_num(x(at))},{_num(y(offset))}")
        parts.append(f'<polyline class="transfer" points="{" ".join(steps)}"/>')
    if stop > ordered[-1].at:
        tip = escape(f"no further request for {span_text(stop - ordered[-1].at)}, until the check ended")
        parts.append(
            f'<line class="tail" x1="{_num(x(ordered[-1].at))}" y1="{_num(y(ordered[-1].offset))}" '
            f'x2="{_num(x(stop))}" y2="{_num(y(ordered[-1].offset))}"><title>{tip}</title></line>'
        )
    transfer = [p for p in ordered if not p.mark]
    if len(transfer) <= 200:
        parts.extend(f'<circle class="point" cx="{_num(x(p.at))}" cy="{_num(y(p.offset))}" r="2"/>' for p in transfer)
    return parts


def _markers(marked: list[TimelinePoint], origin: float, axes: _Axes) -> list[str]:
    """A rule, a dot and a label per mark (or group of like marks), with its time and offset as a tooltip."""
    parts = []
    for index, (point, count) in enumerate(_grouped(marked, axes.x)):
        kind = mark_kind(point.mark)
        px, py = _num(axes.x(point.at)), _num(axes.y(point.offset))
        label = point.mark if count == 1 else f"{point.mark} ×{count}"
        tip = escape(f"{label} at {span_text(point.at - origin)}, offset {point.offset}")
        # Labels of marks in the right half read leftwards, so they stay inside the chart.
        right_half = axes.x(point.at) > LEFT + axes.plot_w / 2
        label_position = (
            f'x="{_num(axes.x(point.at) - 4)}" text-anchor="end"' if right_half else f'x="{_num(axes.x(point.at) + 4)}"'
        )
        parts.append(
            f'<g class="marker" data-mark="{kind}"><title>{tip}</title>'
            f'<line class="mark {kind}" x1="{px}" y1="{TOP}" x2="{px}" y2="{axes.bottom}"/>'
            f'<circle class="dot {kind}" cx="{px}" cy="{py}" r="4.5"/>'
            f'<text class="label {kind}" {label_position} y="{TOP + 11 + (index % LABEL_ROWS) * 13}">'
            f"{escape(label)}</text></g>"
        )
    return parts


def _axis_labels(origin: float, spanned: bool, axes: _Axes) -> list[str]:
    """Time ticks (since the check started, or the first request when its span is unknown) and the offset axis."""
    parts = []
    bottom, plot_h = axes.bottom, axes.plot_h
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        at = axes.start + fraction * axes.length
        anchor_ = "start" if fraction == 0 else "end" if fraction == 1 else "middle"
        parts.append(
            f'<text class="tick" x="{_num(axes.x(at))}" y="{bottom + 16}" text-anchor="{anchor_}">'
            f"{escape(span_text(at - origin))}</text>"
        )
    since = "since the check started" if spanned else "since the first request"
    parts.append(
        f'<text x="{LEFT + axes.plot_w / 2}" y="{bottom + 32}" text-anchor="middle">protocol time {since}</text>'
    )
    parts.append(f'<text x="{LEFT - 6}" y="{bottom}" text-anchor="end">0</text>')
    parts.append(f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">{axes.top_offset} B</text>')
    parts.append(
        f'<text x="14" y="{TOP + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {TOP + plot_h / 2})">file offset</text>'
    )
    return parts


def _runs(ordered: list[TimelinePoint], restarts: list[float]) -> list[list[tuple[float, int]]]:
    """The transfer as stretches between restarts: a device that restarts stops requesting, so the line ends at
    the restart and picks up at its next request instead of holding the old offset across the power cycle."""
    runs: list[list[tuple[float, int]]] = [[]]
    pending = sorted(restarts)
    for point in ordered:
        if pending and point.at > pending[0] and runs[-1]:
            runs[-1].append((pending[0], runs[-1][-1][1]))
            runs.append([])
        while pending and pending[0] < point.at:
            pending.pop(0)
        runs[-1].append((point.at, point.offset))
    return [run for run in runs if run]


def _grouped(marked: list[TimelinePoint], x: Callable[[float], float]) -> list[tuple[TimelinePoint, int]]:
    """Marks with the same label closer than a few pixels drawn once with a count (three Default Responses a
    second apart on an hour's axis), so their labels do not overprint."""
    groups: list[tuple[TimelinePoint, int]] = []
    for point in marked:
        if groups and groups[-1][0].mark == point.mark and x(point.at) - x(groups[-1][0].at) < GROUP_PX:
            groups[-1] = (groups[-1][0], groups[-1][1] + 1)
        else:
            groups.append((point, 1))
    return groups


def _spans(
    marked: list[TimelinePoint], ordered: list[TimelinePoint], stop: float, x: Callable[[float], float]
) -> list[str]:
    """Shaded spans: a wait until the DUT's next request, a hold until the device restarted or the check ended."""
    parts = []
    plot_h = HEIGHT - TOP - BOTTOM
    for point in marked:
        kind = mark_kind(point.mark)
        if kind == "wait":
            until = next((p.at for p in ordered if p.at > point.at), point.at)
        elif kind == "hold":
            until = next((m.at for m in marked if m.at > point.at and mark_kind(m.mark) == "restart"), stop)
        else:
            continue
        width = max(x(until) - x(point.at), 2.0)
        parts.append(
            f'<rect class="{kind}-span" x="{_num(x(point.at))}" y="{TOP}" width="{_num(width)}" height="{plot_h}">'
            f"<title>{escape(point.mark)}: {escape(span_text(until - point.at))}</title></rect>"
        )
    return parts


def _frames_table(frames: Iterable[FrameRecord]) -> str:
    rows = "".join(
        "<tr>"
        f"<td>{escape(seconds_text(f.at))}</td>"
        f"<td>{escape(f.direction)}</td>"
        f"<td>{escape(f.name)}</td>"
        f'<td class="fields">{escape(fields_text(f.fields))}</td>'
        f'<td class="hex">{escape(f.hex)}</td>'
        "</tr>"
        for f in frames
    )
    return (
        '<table class="frames"><thead><tr><th>Time</th><th>Direction</th><th>Command</th><th>Fields</th>'
        f"<th>Hex</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _badge(verdict: Verdict) -> str:
    return f'<span class="badge {VERDICT_CLASS[verdict]}">{escape(verdict.value)}</span>'


def _check_section(result: CheckResult) -> str:
    check = result.check
    parts = [
        f'<article class="check {VERDICT_CLASS[result.verdict]}" id="{anchor(check.id)}">',
        f"<h3>{escape(check.id)} {escape(check.title)} {_badge(result.verdict)}</h3>",
        f'<p class="meta">{escape(check.level.value)} · {escape(check.reference)} · applies to '
        f"{escape(', '.join(check.applies_to))} · took {escape(_took(result))}</p>",
        f'<p class="meta">Scenario: {escape(check.scenario)}</p>',
        f'<p class="reason">{escape(result.reason)}</p>',
    ]
    if result.timeline:
        marks = [*result.timeline, *evidence_marks(result.evidence)]
        kinds = {mark_kind(p.mark) for p in marks if p.mark}
        legend = "".join(
            f'<span class="{kind}">{label}</span>'
            for kind, label in (
                ("wait", "▮ wait"),
                ("hold", "▮ hold"),
                ("abort", "┃ abort"),
                ("restart", "┃ restart"),
                ("event", "┊ event"),
            )
            if kind in kinds
        )
        parts.append(f"<figure>{timeline_svg(result.timeline, result.span, result.evidence)}")
        parts.append(f'<figcaption class="legend">Transfer timeline {legend}</figcaption></figure>')
    if result.evidence:
        # A verdict that is not a pass is read for its evidence: show it unfolded.
        state = " open" if result.verdict in (Verdict.FAIL, Verdict.INCONCLUSIVE) else ""
        parts.append(
            f"<details{state}><summary>Evidence ({len(result.evidence)} frame"
            f"{'s' if len(result.evidence) != 1 else ''})</summary>"
            f"{_frames_table(result.evidence)}</details>"
        )
    else:
        parts.append('<p class="meta">No frames recorded as evidence.</p>')
    parts.append("</article>")
    return "".join(parts)


def _took(result: CheckResult) -> str:
    took = f"{span_text(result.duration)} protocol time"
    if result.wall_duration is not None:
        took += f", {span_text(result.wall_duration)} wall time"
    return took


def report_html(report: Report) -> str:
    outcome = "interrupted" if report.interrupted else "pass" if report.passed else "fail"
    summary_rows = "".join(
        "<tr>"
        f'<td><a href="#{anchor(r.check.id)}">{escape(r.check.id)}</a></td>'
        f"<td>{escape(r.check.level.value)}</td>"
        f"<td>{_badge(r.verdict)}</td>"
        f"<td>{escape(r.check.title)}</td>"
        f"<td>{escape(r.reason)}</td>"
        "</tr>"
        for r in report.results
    ) + "".join(
        f'<tr class="notrun"><td>{escape(check_id)}</td><td></td><td>not run</td><td></td>'
        "<td>the run was interrupted before this check</td></tr>"
        for check_id in report.not_run
    )
    notes = "".join(f"<li>{escape(note)}</li>" for note in report.notes)
    facts = [
        *header_lines(report),
        ("Checks", counts_text(report)),
        ("Protocol time", seconds_text(report.protocol_time)),
        ("Wall time", seconds_text(report.wall_time)),
    ]
    if report.pcap:
        facts.append(("Capture", report.pcap))
    if report.pcap_keys:
        facts.append(("Capture keys", report.pcap_keys))
    fact_rows = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Conformance report: {escape(report.target)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>Conformance report: {escape(report.target)}</h1>"
        f'<p><span class="outcome {outcome}">{escape(outcome_text(report))}</span></p>'
        f"<p>{escape(report.description)}</p><dl>{fact_rows}</dl>"
        + (f'<ul class="notes">{notes}</ul>' if notes else "")
        + "</header>"
        '<section><h2>Summary</h2><table class="summary"><thead><tr><th>ID</th><th>Level</th><th>Verdict</th>'
        f"<th>Title</th><th>Reason</th></tr></thead><tbody>{summary_rows}</tbody></table></section>"
        "<section><h2>Checks</h2>" + "".join(_check_section(r) for r in report.results) + "</section>"
        "</body></html>\n"
    )


def write_html(report: Report, path: str | os.PathLike[str]) -> None:
    write_atomic(path, report_html(report))
