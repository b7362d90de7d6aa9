"""A conformance report as JUnit XML, the format CI systems (Jenkins, GitLab, GitHub actions) show per test.

One `<testcase>` per check, in the common schema shape: FAIL is a `<failure>` whose `type` is the check's level
(a SHOULD failure is shown, though only MUST failures fail the run), NOT_APPLICABLE is `<skipped>`, and
INCONCLUSIVE is an `<error>` of type "inconclusive": the bench could not reach a verdict, which a CI should
show as a problem with the run rather than hide as skipped or blame on the device. Times are protocol
seconds, the unit the checks themselves measure; the wall time is a suite property.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

from emulator.conformance.model import CheckResult, Report, Verdict
from emulator.conformance.report_text import counts_text, evidence_text, outcome_text, visible
from emulator.files import write_atomic

SUITES_NAME = "ota-emu conformance"


def _seconds(value: float) -> str:
    return f"{value:.3f}"


def _testcase(parent: ET.Element, result: CheckResult) -> None:
    check = result.check
    case = ET.SubElement(
        parent,
        "testcase",
        classname=visible(f"ota_emu.conformance.{check.scenario}"),
        name=visible(f"{check.id} {check.title}"),
        time=_seconds(result.duration),
    )
    reason = visible(result.reason)
    if result.verdict == Verdict.FAIL:
        failure = ET.SubElement(case, "failure", message=reason, type=check.level.value)
        failure.text = visible(f"{check.level.value} {check.reference}: {result.reason}")
    elif result.verdict == Verdict.NOT_APPLICABLE:
        ET.SubElement(case, "skipped", message=reason)
    elif result.verdict == Verdict.INCONCLUSIVE:
        error = ET.SubElement(case, "error", message=reason, type="inconclusive")
        error.text = visible(f"no verdict: {result.reason}")
    ET.SubElement(case, "system-out").text = visible(evidence_text(result))


def junit_xml(report: Report) -> bytes:
    counts = report.counts()
    totals = {
        "tests": str(len(report.results)),
        "failures": str(counts[Verdict.FAIL.value]),
        "errors": str(counts[Verdict.INCONCLUSIVE.value]),
        "skipped": str(counts[Verdict.NOT_APPLICABLE.value]),
        "time": _seconds(report.protocol_time),
    }
    suites = ET.Element("testsuites", name=SUITES_NAME, **totals)
    suite = ET.SubElement(suites, "testsuite", name=visible(report.target), **totals)
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("description", report.description),
        ("outcome", outcome_text(report)),
        ("protocol_time_s", _seconds(report.protocol_time)),
        ("wall_time_s", _seconds(report.wall_time)),
        ("pcap", report.pcap or ""),
    ):
        ET.SubElement(properties, "property", name=name, value=visible(value))
    for result in report.results:
        _testcase(suite, result)
    notes = [counts_text(report), outcome_text(report), *report.notes]
    ET.SubElement(suite, "system-out").text = visible("\n".join(notes))
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"


def write_junit(report: Report, path: str | os.PathLike[str]) -> None:
    write_atomic(path, junit_xml(report))
