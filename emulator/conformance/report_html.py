"""A conformance report as ONE self-contained HTML file: inline CSS, inline SVG, no script, no external URL.

It is attached to tickets and opened offline in a lab, so it must render the same anywhere with nothing
fetched. Each check shows its verdict, reason and reference; a transfer timeline (file offset against
protocol time) where the check has one, with waits shaded and aborts drawn as red rules; and the frames
it was judged on, folded in `<details>` so a long transfer does not bury the summary.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from html import escape as html_escape

from emulator.conformance.model import CheckResult, FrameRecord, Report, TimelinePoint, Verdict
from emulator.conformance.report_text import counts_text, fields_text, outcome_text, seconds_text, visible
from emulator.files import write_atomic

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 80, 20, 24, 40

VERDICT_CLASS = {
    Verdict.PASS: "pass",
    Verdict.FAIL: "fail",
    Verdict.NOT_APPLICABLE: "na",
    Verdict.INCONCLUSIVE: "inconclusive",
}

STYLE = """
:root { --pass: #1a7f37; --fail: #cf222e; --na: #6e7781; --inconclusive: #9a6700; --wait: #d4a72c; --event: #0969da; }
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
svg .mark.wait { stroke: var(--wait); stroke-width: 2; stroke-dasharray: 4 3; }
svg .mark.abort { stroke: var(--fail); stroke-width: 2.5; }
svg .mark.event { stroke: var(--na); stroke-width: 1.5; stroke-dasharray: 2 3; }
svg .dot.wait { fill: var(--wait); } svg .dot.abort { fill: var(--fail); } svg .dot.event { fill: var(--na); }
svg text.label.abort { fill: var(--fail); font-weight: 700; } svg text.label.wait { fill: #7d4e00; }
.legend span { margin-right: 1.2em; } .legend .wait { color: #7d4e00; } .legend .abort { color: var(--fail); }
"""


def escape(text: str) -> str:
    return html_escape(visible(text))


def anchor(check_id: str) -> str:
    return "check-" + re.sub(r"[^A-Za-z0-9_-]", "-", check_id)


def mark_kind(mark: str) -> str:
    """What a timeline mark denotes, for how it is drawn: a wait (shaded until the next point), an abort
    (red rule) or any other event."""
    lowered = mark.lower()
    if "abort" in lowered:
        return "abort"
    if "wait" in lowered:
        return "wait"
    return "event"


def _num(value: float) -> str:
    return f"{value:.1f}"


def timeline_svg(points: list[TimelinePoint]) -> str:
    """File offset against protocol time as an SVG polyline, marks drawn on top."""
    ordered = sorted(points, key=lambda p: p.at)
    start = ordered[0].at
    span = (ordered[-1].at - start) or 1.0
    top_offset = max(p.offset for p in ordered) or 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(at: float) -> float:
        return LEFT + (at - start) / span * plot_w

    def y(offset: int) -> float:
        return TOP + plot_h - offset / top_offset * plot_h

    parts = [
        f'<svg class="timeline" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="transfer timeline: file offset against time">'
    ]
    for fraction in (0.25, 0.5, 0.75, 1.0):
        gy = _num(TOP + plot_h - fraction * plot_h)
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{gy}" x2="{WIDTH - RIGHT}" y2="{gy}"/>')
    for index, point in enumerate(ordered):
        if mark_kind(point.mark) == "wait" and point.mark:
            until = ordered[index + 1].at if index + 1 < len(ordered) else point.at
            width = max(x(until) - x(point.at), 2.0)
            parts.append(
                f'<rect class="wait-span" x="{_num(x(point.at))}" y="{TOP}" width="{_num(width)}" height="{plot_h}">'
                f"<title>{escape(point.mark)}</title></rect>"
            )
    bottom = TOP + plot_h
    parts.append(f'<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}"/>')
    parts.append(f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}"/>')
    coords = " ".join(f"{_num(x(p.at))},{_num(y(p.offset))}" for p in ordered)
    parts.append(f'<polyline class="transfer" points="{coords}"/>')
    if len(ordered) <= 200:
        parts.extend(
            f'<circle class="point" cx="{_num(x(p.at))}" cy="{_num(y(p.offset))}" r="2"/>'
            for p in ordered
            if not p.mark
        )
    marked = [p for p in ordered if p.mark]
    for index, point in enumerate(marked):
        kind = mark_kind(point.mark)
        px, py = _num(x(point.at)), _num(y(point.offset))
        tip = escape(f"{point.mark} at {seconds_text(point.at)}, offset {point.offset}")
        # Labels of marks in the right half read leftwards, so they stay inside the chart.
        right_half = x(point.at) > LEFT + plot_w / 2
        label_position = (
            f'x="{_num(x(point.at) - 4)}" text-anchor="end"' if right_half else f'x="{_num(x(point.at) + 4)}"'
        )
        parts.append(
            f'<g class="marker" data-mark="{kind}"><title>{tip}</title>'
            f'<line class="mark {kind}" x1="{px}" y1="{TOP}" x2="{px}" y2="{bottom}"/>'
            f'<circle class="dot {kind}" cx="{px}" cy="{py}" r="4.5"/>'
            f'<text class="label {kind}" {label_position} y="{TOP + 11 + (index % 3) * 13}">'
            f"{escape(point.mark)}</text></g>"
        )
    parts.append(f'<text x="{LEFT}" y="{bottom + 16}">{escape(seconds_text(start))}</text>')
    parts.append(
        f'<text x="{WIDTH - RIGHT}" y="{bottom + 16}" text-anchor="end">{escape(seconds_text(start + span))}</text>'
    )
    parts.append(f'<text x="{LEFT + plot_w / 2}" y="{bottom + 32}" text-anchor="middle">protocol time</text>')
    parts.append(f'<text x="{LEFT - 6}" y="{bottom}" text-anchor="end">0</text>')
    parts.append(f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">{top_offset} B</text>')
    parts.append(
        f'<text x="14" y="{TOP + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {TOP + plot_h / 2})">file offset</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


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
        f"{escape(', '.join(check.applies_to))} · scenario {escape(check.scenario)} · "
        f"{escape(seconds_text(result.duration))}</p>",
        f'<p class="reason">{escape(result.reason)}</p>',
    ]
    if result.timeline:
        kinds = {mark_kind(p.mark) for p in result.timeline if p.mark}
        legend = "".join(
            f'<span class="{kind}">{label}</span>'
            for kind, label in (("wait", "▮ wait"), ("abort", "┃ abort"), ("event", "┊ event"))
            if kind in kinds
        )
        parts.append(f"<figure>{timeline_svg(result.timeline)}")
        parts.append(f'<figcaption class="legend">Transfer timeline {legend}</figcaption></figure>')
    if result.evidence:
        parts.append(
            f"<details><summary>Evidence ({len(result.evidence)} frame{'s' if len(result.evidence) != 1 else ''})"
            "</summary>"
            f"{_frames_table(result.evidence)}</details>"
        )
    else:
        parts.append('<p class="meta">No frames recorded as evidence.</p>')
    parts.append("</article>")
    return "".join(parts)


def report_html(report: Report) -> str:
    outcome = "pass" if report.passed else "fail"
    summary_rows = "".join(
        "<tr>"
        f'<td><a href="#{anchor(r.check.id)}">{escape(r.check.id)}</a></td>'
        f"<td>{escape(r.check.level.value)}</td>"
        f"<td>{_badge(r.verdict)}</td>"
        f"<td>{escape(r.check.title)}</td>"
        f"<td>{escape(r.reason)}</td>"
        "</tr>"
        for r in report.results
    )
    notes = "".join(f"<li>{escape(note)}</li>" for note in report.notes)
    facts = [
        ("Target", report.target),
        ("Checks", counts_text(report)),
        ("Protocol time", seconds_text(report.protocol_time)),
        ("Wall time", seconds_text(report.wall_time)),
    ]
    if report.pcap:
        facts.append(("Capture", report.pcap))
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
