"""A conformance report as JUnit XML, the format CI systems (Jenkins, GitLab, GitHub actions) show per test.

The common schema shape CI tools read: `<testsuites>` around one `<testsuite>` with its `<properties>`, one
`<testcase>` per check, each with at most one of `<failure>`, `<error>`, `<skipped>`, then `<system-out>`.

* `classname` is `ota_emu.conformance.<check ID>` (tools group by the part before the last dot), `name` is the
  ID and title.
* A MUST failure is a `<failure>`. A SHOULD failure is `<skipped>` with a message starting `SHOULD not met:`
  and is listed in the suite property `should_failures`: a recommendation the device does not follow does not
  fail the run (RFC 2119), so it must not turn a CI build red while the run says PASS.
* NOT_APPLICABLE is `<skipped>`; INCONCLUSIVE is an `<error>` of type "inconclusive" (the bench could not
  reach a verdict: a problem with the run, neither hidden as skipped nor blamed on the device).
* A planned check an interrupted run did not reach is `<skipped>` "not run".
* Times are wall seconds, as CI tools read them; the protocol time each check measured is in its output.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

from emulator.conformance.check import Level
from emulator.conformance.reports.text import (
    counts_text,
    dut_lines,
    evidence_text,
    outcome_text,
    settings_text,
    visible,
)
from emulator.conformance.results import CheckResult, Report
from emulator.conformance.verdict import Verdict
from emulator.files import write_atomic

SUITES_NAME = "ota-emu conformance"
CLASS_PREFIX = "ota_emu.conformance"
SHOULD_NOT_MET = "SHOULD not met: "


def _seconds(value: float | None) -> str:
    return f"{value or 0.0:.3f}"


def _testcase(parent: ET.Element, result: CheckResult) -> None:
    check = result.check
    case = ET.SubElement(
        parent,
        "testcase",
        classname=visible(f"{CLASS_PREFIX}.{check.id}"),
        name=visible(f"{check.id} {check.title}"),
        time=_seconds(result.wall_duration),
    )
    reason = visible(result.reason)
    if result.verdict == Verdict.FAIL and check.level == Level.MUST:
        failure = ET.SubElement(case, "failure", message=reason, type=check.level.value)
        failure.text = visible(f"{check.level.value} {check.reference}: {result.reason}")
    elif result.verdict == Verdict.FAIL:
        ET.SubElement(case, "skipped", message=SHOULD_NOT_MET + reason)
    elif result.verdict == Verdict.NOT_APPLICABLE:
        ET.SubElement(case, "skipped", message=reason)
    elif result.verdict == Verdict.INCONCLUSIVE:
        error = ET.SubElement(case, "error", message=reason, type="inconclusive")
        error.text = visible(f"no verdict: {result.reason}")
    ET.SubElement(case, "system-out").text = visible(
        evidence_text(result) + f"\nprotocol time: {result.duration:.3f} s"
    )


def _not_run(parent: ET.Element, check_id: str) -> None:
    case = ET.SubElement(parent, "testcase", classname=f"{CLASS_PREFIX}.{check_id}", name=check_id, time="0.000")
    ET.SubElement(case, "skipped", message="not run: the run was interrupted before this check")


def _properties(report: Report) -> list[tuple[str, str]]:
    run = report.run
    properties = [
        ("description", report.description),
        ("outcome", outcome_text(report)),
        ("interrupted", str(report.interrupted).lower()),
        ("should_failures", ", ".join(r.check.id for r in report.should_failures)),
        ("protocol_time_s", _seconds(report.protocol_time)),
        ("wall_time_s", _seconds(report.wall_time)),
        ("pcap", report.pcap or ""),
        ("pcap_keys", report.pcap_keys or ""),
    ]
    if run is not None:
        properties += [
            ("started_utc", run.started_utc),
            ("tool_version", f"ota-emu {run.tool_version}"),
            ("bench", run.bench),
            ("settings", settings_text(run.settings)),
        ]
        if report.not_run:
            properties.append(("not_run", ", ".join(report.not_run)))
    if report.dut is not None:
        properties += [(f"dut: {label}", value) for label, value in dut_lines(report.dut)]
    return properties


def junit_xml(report: Report) -> bytes:
    counts = report.counts()
    not_run = report.not_run
    totals = {
        "tests": str(len(report.results) + len(not_run)),
        "failures": str(len(report.must_failures)),
        "errors": str(counts["inconclusive"]),
        "skipped": str(counts["not_applicable"] + len(report.should_failures) + len(not_run)),
        "time": _seconds(report.wall_time),
    }
    suites = ET.Element("testsuites", {"name": SUITES_NAME, **totals})
    suite = ET.SubElement(suites, "testsuite", {"name": visible(report.target), **totals})
    if report.run is not None:
        # xs:dateTime without a zone suffix, as JUnit writers put it.
        suite.set("timestamp", report.run.started_utc.removesuffix("Z").split("+")[0])
    properties = ET.SubElement(suite, "properties")
    for name, value in _properties(report):
        ET.SubElement(properties, "property", name=name, value=visible(value))
    for result in report.results:
        _testcase(suite, result)
    for check_id in not_run:
        _not_run(suite, check_id)
    notes = [counts_text(report), outcome_text(report), *report.notes]
    ET.SubElement(suite, "system-out").text = visible("\n".join(notes))
    ET.indent(suites)
    document: bytes = ET.tostring(suites, encoding="utf-8", xml_declaration=True)
    return document + b"\n"


def write_junit(report: Report, path: str | os.PathLike[str]) -> None:
    write_atomic(path, junit_xml(report))
