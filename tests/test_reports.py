"""Report writers: terminal table, JSON (validated against the shipped JSON Schema by the `jsonschema` package),
JUnit XML (parsed, checked against the element/attribute shape CI tools read) and a self-contained HTML file
(parsed, and rendered by headless Chromium where it is installed)."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import pytest
import zigpy.types as t
from rich.console import Console
from zigpy.zcl import foundation

from emulator.conformance.check import Check, Level
from emulator.conformance.reports import (
    ReportError,
    junit_xml,
    load_schema,
    read_json,
    render_terminal,
    report_json,
    write_all,
    write_html,
    write_json,
    write_junit,
)
from emulator.conformance.results import CheckResult, DutInfo, Report, RunInfo
from emulator.conformance.verdict import FrameRecord, TimelinePoint, Verdict
from emulator.errors import InputError

DUT = t.EUI64.convert("00:db:12:34:56:78:90:a4")


def check(check_id: str, title: str, level: Level = Level.MUST, scenario: str = "plain-upgrade") -> Check:
    return Check(check_id, title, f"ZCL8 §11.13 ({check_id})", level, ("ppmid", "hcalcs"), scenario)


def frame(at: float, src: int, name: str, fields: dict, hex_: str) -> FrameRecord:
    dst = 0x1001 if src == 0 else 0x0000
    return FrameRecord(at, src, dst, 1, 1, 0x0109, 0x0019, name, fields, hex_)


QUERY = frame(
    1.5,
    0x1001,
    "query_next_image",
    {"field_control": 1, "manufacturer_code": 0x121D, "image_type": 0x84, "current_file_version": 1},
    "0101011d12840001000000011100",
)
BLOCK = frame(
    1.6,
    0x0000,
    "image_block_response",
    {"status": foundation.Status.SUCCESS, "file_offset": 0, "image_data": bytes(range(40)), "requester": DUT},
    "190105001d128400020000000000000028" + bytes(range(40)).hex(),
)
ABORT = frame(40.0, 0x1001, "upgrade_end", {"status": foundation.Status.ABORT}, "010903951d12840002000000")
END_OK = frame(130.0, 0x1001, "upgrade_end", {"status": 0}, "010906001d12840002000000")
WAIT = frame(
    130.2,
    0x0000,
    "upgrade_end_response",
    {"manufacturer_code": 0x121D, "image_type": 0x84, "file_version": 2, "current_time": 0, "upgrade_time": 0xFFFFFFFF},
    "190707" + "1d12" + "8400" + "02000000" + "00000000" + "ffffffff",
)
ANNCE = frame(4030.2, 0x1001, "Device_annce", {}, "00")
HOLD_TIMELINE = [TimelinePoint(100.0, 0), TimelinePoint(110.0, 2048), TimelinePoint(130.0, 4096, "Upgrade End 0x00")]


def sample_report() -> Report:
    timeline = [
        TimelinePoint(1.6, 0),
        TimelinePoint(2.0, 63),
        TimelinePoint(2.4, 126, "wait 30 s (WAIT_FOR_DATA)"),
        TimelinePoint(32.4, 189),
        TimelinePoint(40.0, 252, "abort"),
    ]
    return Report(
        target="PPMID 00:db:12:34:56:78:90:a4",
        description="Emulated PPMID against the test CHF <profile ppmid.toml>",
        results=[
            CheckResult(check("C-01", "Queries with its current file version"), Verdict.PASS, "version 1 reported",
                        [QUERY], duration=1.5, wall_duration=0.5),
            CheckResult(check("C-05", "Honours WAIT_FOR_DATA", scenario="wait-for-data"), Verdict.FAIL,
                        "re-requested after 2.4 s, asked to wait 30 s <b>", [QUERY, BLOCK, ABORT], timeline, 38.4, 0.25,
                        (1.0, 41.0)),
            CheckResult(check("C-09", "Respects MinimumBlockPeriod", Level.SHOULD), Verdict.FAIL,
                        "blocks 120 ms apart, period 250 ms\x01", [BLOCK], duration=2.0),
            CheckResult(check("C-12", "Page requests", scenario="page"), Verdict.NOT_APPLICABLE,
                        "device does not use Image Page Request"),
            CheckResult(check("C-14", "Resumes after reboot", scenario="reboot"), Verdict.INCONCLUSIVE,
                        "device never reached 50 % before the limit",
                        timeline=[TimelinePoint(0.0, 0), TimelinePoint(10.0, 63)], duration=600.0),
        ],
        protocol_time=642.0,
        wall_time=1.25,
        pcap="runs/c05.pcap",
        notes=["seed 7", "image 4096 bytes"],
        run=RunInfo("2026-12-02T15:00:00Z", "0.1.0", "device", {"dut": "ppmid.toml", "seed": 7, "json": False},
                    ["C-01", "C-05", "C-09", "C-12", "C-14"]),
        dut=DutInfo(str(DUT), manufacturer_name="Acme Meters", model_identifier="PPMID-1", hw_version="1",
                    current_file_version="0x00000001", manufacturer_id="0x121D", image_type_id="0x0084"),
    )  # fmt: skip


def hold_report() -> Report:
    """A check that holds an image 65 min after a 30 s transfer, then sees the device restart."""
    result = CheckResult(check("C-14", "Told to wait, the image is held"), Verdict.PASS, "held the image 65 min",
                         [END_OK, WAIT, ANNCE], HOLD_TIMELINE, 4100.0, 2.0, (90.0, 4190.0))  # fmt: skip
    return Report("PPMID", "hold", [result], 4100.0, 2.0)


# -- JUnit ---------------------------------------------------------------------------------------------------

# The JUnit shape CI tools read (Jenkins' junit plugin, GitLab's unit test reports): element -> (attributes it
# may carry, attributes it must carry, children it may have).
JUNIT_SHAPE = {
    "testsuites": ({"name", "tests", "failures", "errors", "skipped", "time"}, {"tests"}, {"testsuite"}),
    "testsuite": (
        {"name", "tests", "failures", "errors", "skipped", "time", "timestamp"},
        {"name", "tests", "failures", "errors"},
        {"properties", "testcase", "system-out"},
    ),
    "properties": (set(), set(), {"property"}),
    "property": ({"name", "value"}, {"name", "value"}, set()),
    "testcase": ({"name", "classname", "time"}, {"name", "classname"}, {"failure", "error", "skipped", "system-out"}),
    "failure": ({"message", "type"}, set(), set()),
    "error": ({"message", "type"}, set(), set()),
    "skipped": ({"message"}, set(), set()),
    "system-out": (set(), set(), set()),
}


def assert_junit_shape(root: ET.Element) -> None:
    """Every element and attribute is one CI tools read; numbers parse; totals match the test cases."""
    for element in root.iter():
        allowed, required, children = JUNIT_SHAPE[element.tag]
        assert set(element.attrib) <= allowed, element.tag
        assert required <= set(element.attrib), element.tag
        assert {child.tag for child in element} <= children, element.tag
    for suite in [root, *root.iter("testsuite")]:
        cases = list(suite.iter("testcase"))
        assert int(suite.get("tests")) == len(cases)
        for tag, attribute in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
            assert int(suite.get(attribute)) == sum(1 for c in cases if c.find(tag) is not None)
        float(suite.get("time"))
    for case in root.iter("testcase"):
        assert len([c for c in case if c.tag != "system-out"]) <= 1  # one outcome at most
        assert float(case.get("time")) >= 0


def test_junit_has_one_testcase_per_check_by_id_with_wall_times(tmp_path: Path) -> None:
    report = sample_report()
    path = tmp_path / "report.xml"
    write_junit(report, path)
    root = ET.parse(path).getroot()
    assert_junit_shape(root)
    [suite] = root.findall("testsuite")
    for element in (root, suite):
        assert {k: element.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
            "tests": "5",
            "failures": "1",
            "errors": "1",
            "skipped": "2",
        }
        assert float(element.get("time")) == pytest.approx(1.25)  # wall time, not the 642 s of protocol time
    assert suite.get("name") == report.target and suite.get("timestamp") == "2026-12-02T15:00:00"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [f"{r.check.id} {r.check.title}" for r in report.results]
    assert [c.get("classname") for c in cases] == [f"ota_emu.conformance.{r.check.id}" for r in report.results]
    assert [float(c.get("time")) for c in cases] == [0.5, 0.25, 0.0, 0.0, 0.0]

    def outcome(case: ET.Element) -> list[tuple[str, str | None, str | None]]:
        return [(e.tag, e.get("type"), e.get("message")) for e in case if e.tag != "system-out"]

    assert outcome(cases[0]) == []
    assert outcome(cases[1]) == [("failure", "MUST", "re-requested after 2.4 s, asked to wait 30 s <b>")]
    # A SHOULD failure does not fail the run, so it does not fail the CI build either; a control character
    # cannot travel in XML and is spelled out.
    assert outcome(cases[2]) == [("skipped", None, "SHOULD not met: blocks 120 ms apart, period 250 ms\\x01")]
    assert outcome(cases[3]) == [("skipped", None, "device does not use Image Page Request")]
    assert outcome(cases[4]) == [("error", "inconclusive", "device never reached 50 % before the limit")]
    assert cases[1].find("failure").text.startswith("MUST ZCL8 §11.13 (C-05): ")

    evidence = cases[1].find("system-out").text
    assert BLOCK.hex in evidence and ABORT.hex in evidence and "image_block_response" in evidence
    assert "[abort]" in evidence and "requester=00:db:12:34:56:78:90:a4" in evidence
    assert "status=0x95 ABORT" in evidence and "protocol time: 38.400 s" in evidence
    properties = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert properties["outcome"] == "FAIL (1 MUST failure)" and properties["pcap"] == "runs/c05.pcap"
    assert properties["should_failures"] == "C-09" and properties["interrupted"] == "false"
    assert properties["tool_version"] == "ota-emu 0.1.0" and properties["started_utc"] == "2026-12-02T15:00:00Z"
    assert properties["settings"] == "dut=ppmid.toml, seed=7"
    assert properties["dut: Manufacturer"] == "Acme Meters" and properties["dut: Model"] == "PPMID-1"
    assert properties["dut: Software build"] == "not readable"


def test_junit_of_an_interrupted_run_lists_the_checks_not_run_as_skipped() -> None:
    report = sample_report()
    report.results = report.results[:2]
    report.interrupted = True
    root = ET.fromstring(junit_xml(report))
    assert_junit_shape(root)
    cases = root.find("testsuite").findall("testcase")
    assert [c.get("name") for c in cases[2:]] == ["C-09", "C-12", "C-14"]
    assert {c.find("skipped").get("message") for c in cases[2:]} == {
        "not run: the run was interrupted before this check"
    }
    properties = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert properties["not_run"] == "C-09, C-12, C-14" and properties["interrupted"] == "true"
    assert properties["outcome"] == "FAIL (1 MUST failure), INTERRUPTED"


# -- JSON ----------------------------------------------------------------------------------------------------

VALIDATOR = jsonschema.Draft202012Validator(load_schema(), format_checker=jsonschema.FormatChecker())


def test_the_shipped_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(load_schema())


def test_json_is_the_report_dict_with_zigpy_values_made_plain(tmp_path: Path) -> None:
    report = sample_report()
    path = tmp_path / "report.json"
    write_json(report, path)
    data = json.loads(path.read_text())
    VALIDATOR.validate(data)
    assert data["schema_version"] == "1" and data["tool"] == {"name": "ota-emu", "version": "0.1.0"}
    assert data["run"]["started_utc"] == "2026-12-02T15:00:00Z" and data["run"]["settings"]["seed"] == 7
    assert data["dut"]["manufacturer_name"] == "Acme Meters" and data["dut"]["sw_build_id"] is None
    assert data["passed"] is False and data["interrupted"] is False and data["not_run"] == []
    assert data["counts"] == {"pass": 1, "fail": 2, "not_applicable": 1, "inconclusive": 1}
    assert data["must_failures"] == 1 and data["should_failures"] == 1
    assert [r["verdict"] for r in data["results"]] == ["pass", "fail", "fail", "not applicable", "inconclusive"]
    block = data["results"][1]["evidence"][1]
    assert block["fields"] == {
        "status": 0,
        "file_offset": 0,
        "image_data": bytes(range(40)).hex(),
        "requester": "00:db:12:34:56:78:90:a4",
    }
    assert block["direction"] == "to DUT" and block["hex"] == BLOCK.hex
    assert data["results"][1]["timeline"][2] == {"at": 2.4, "offset": 126, "mark": "wait 30 s (WAIT_FOR_DATA)"}
    assert data["results"][1]["span_s"] == [1.0, 41.0] and data["results"][1]["wall_duration_s"] == 0.25


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda d: d["counts"].update({"not applicable": d["counts"].pop("not_applicable")}), "counts"),
        (lambda d: d.pop("schema_version"), ""),
        (lambda d: d["results"][0].update(verdict="passed"), "results/0/verdict"),
        (lambda d: d["dut"].update(current_file_version="1"), "dut"),
        (lambda d: d["run"].update(started_utc="yesterday"), "run"),
    ],
)
def test_the_schema_rejects_a_report_of_another_shape(change, path: str) -> None:
    data = json.loads(report_json(sample_report()))
    change(data)
    errors = list(VALIDATOR.iter_errors(data))
    assert errors and any("/".join(str(p) for p in e.absolute_path).startswith(path) for e in errors)


def test_a_json_report_reads_back_to_the_same_report(tmp_path: Path) -> None:
    report = sample_report()
    report.interrupted = True
    path = tmp_path / "report.json"
    write_json(report, path)
    again = read_json(path)
    assert report_json(again) == path.read_text()
    assert again.not_run == [] and again.results[1].span == (1.0, 41.0)


def test_reading_a_foreign_json_file_is_a_one_line_report_error(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text('{"schema_version": "0"}')
    with pytest.raises(ReportError, match="expected a report of schema_version 1, found '0'"):
        read_json(path)
    with pytest.raises(ReportError, match="no such report"):
        read_json(tmp_path / "missing.json")


# -- terminal ------------------------------------------------------------------------------------------------


def terminal(report: Report) -> Console:
    console = Console(record=True, width=200, force_terminal=True, color_system="standard")
    render_terminal(report, console)
    return console


def test_terminal_table_lists_every_check_and_the_outcome() -> None:
    report = sample_report()
    console = terminal(report)
    text = console.export_text(styles=False)
    for result in report.results:
        line = next(line for line in text.splitlines() if result.check.id in line)
        assert result.check.level.value in line and result.verdict.value in line and result.check.title in line
    assert "5 checks: 1 pass, 2 fail, 1 not applicable, 1 inconclusive" in text
    assert text.rstrip().endswith("FAIL (1 MUST failure)")
    styled = terminal(report).export_text(styles=True)
    assert "\x1b[1;31mfail" in styled and "\x1b[1;32mpass" in styled and "\x1b[1;33minconclusive" in styled


def test_terminal_says_pass_when_only_should_checks_fail() -> None:
    report = sample_report()
    report.results = [r for r in report.results if r.check.id != "C-05"]
    assert terminal(report).export_text().rstrip().endswith("PASS")


# -- HTML ----------------------------------------------------------------------------------------------------


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t_, a in self.tags if t_ == tag and all(a.get(k) == v for k, v in attrs.items())]


def parse_html(path: Path) -> tuple[str, Collector]:
    document = path.read_text()
    collector = Collector()
    collector.feed(document)
    collector.close()
    return document, collector


def test_html_is_self_contained_with_timelines_marks_and_evidence(tmp_path: Path) -> None:
    report = sample_report()
    path = tmp_path / "report.html"
    write_html(report, path)
    document, html = parse_html(path)

    assert "http://" not in document and "https://" not in document
    assert not html.find("script") and not html.find("link") and not html.find("img") and not html.find("iframe")
    assert not [attrs for _, attrs in html.tags if "src" in attrs]
    links = [attrs["href"] for _, attrs in html.tags if "href" in attrs]
    assert links and all(link.startswith("#check-") for link in links)
    assert len(html.find("style")) == 1

    assert len(html.find("svg")) == 2  # C-05 and C-14 have timelines
    polylines = html.find("polyline", **{"class": "transfer"})
    # Steps: the offset holds until the next request, so each point after the first adds a corner.
    assert [len(p["points"].split()) for p in polylines] == [9, 3]
    pairs = [tuple(map(float, pair.split(","))) for pair in polylines[0]["points"].split()]
    xs = [px for px, _ in pairs]
    assert xs == sorted(xs) and xs[0] < xs[-1]
    assert all(a[0] == b[0] or a[1] == b[1] for a, b in itertools.pairwise(pairs))  # no slopes
    assert [m["data-mark"] for m in html.find("g", **{"class": "marker"})] == ["wait", "abort"]
    assert len(html.find("rect", **{"class": "wait-span"})) == 1
    assert len(html.find("line", **{"class": "mark abort"})) == 1

    details = html.find("details")
    assert len(details) == 3  # checks with evidence frames
    # A pass keeps its evidence folded; a failure shows it.
    assert ["open" in d for d in details] == [False, True, True]
    assert [a["id"] for a in html.find("article")] == [f"check-{r.check.id}" for r in report.results]
    assert len(html.find("a")) == 5 and html.find("a")[1]["href"] == "#check-C-05"
    text = "".join(html.text)
    assert BLOCK.hex in text and "upgrade_end" in text and "FAIL (1 MUST failure)" in text
    assert "status=0x95 ABORT" in text and "manufacturer_code=0x121D" in text and "image_type=0x0084" in text
    assert "ZCL8 §11.13 (C-05)" in text and "SPEC.md" not in document
    for fact in ("2026-12-02T15:00:00Z", "ota-emu 0.1.0", "dut=ppmid.toml, seed=7", "Acme Meters", "PPMID-1",
                 "0x00000001", "not readable"):  # fmt: skip
        assert fact in text
    # Reasons are text, never markup.
    assert "asked to wait 30 s <b>" in text and not html.find("b")
    assert "<profile ppmid.toml>" in text
    assert "\x01" not in document and "period 250 ms\\x01" in text


def test_a_hold_after_the_transfer_is_drawn_to_the_end_of_the_check_with_the_restart(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    write_html(hold_report(), path)
    _, html = parse_html(path)
    [polyline] = html.find("polyline", **{"class": "transfer"})
    last_x = float(polyline["points"].split()[-1].split(",")[0])
    [tail] = html.find("line", **{"class": "tail"})
    [hold] = html.find("rect", **{"class": "hold-span"})
    # The 30 s transfer takes under 1 % of the 4090 s axis; the hold from the Upgrade End Response (at 130.2 s)
    # runs to the restart at 4030.2 s, and the line goes on to the end of the check at 4190 s.
    plot = 720 - 80 - 20
    assert last_x == pytest.approx(80 + 30 / 4090 * plot, abs=0.1)
    assert float(tail["x2"]) == pytest.approx(80 + plot, abs=0.1)
    assert float(hold["x"]) == pytest.approx(80 + 30.2 / 4090 * plot, abs=0.1)
    assert float(hold["width"]) == pytest.approx(3900 / 4090 * plot, abs=0.2)
    marks = [m["data-mark"] for m in html.find("g", **{"class": "marker"})]
    assert marks == ["event", "hold", "restart"]
    text = "".join(html.text)
    assert "hold: told to wait (UpgradeTime 0xFFFFFFFF): 65 min" in text
    assert "restart (Device_annce)" in text and "68 min" in text  # the axis ends at the check's end
    assert "protocol time since the check started" in text


def test_a_power_cycle_breaks_the_transfer_line_and_repeated_marks_are_counted(tmp_path: Path) -> None:
    restarted = frame(2.0, 0x1001, "Device_annce", {}, "00")
    timeline = [
        TimelinePoint(1.0, 0),
        TimelinePoint(1.2, 409),
        TimelinePoint(1.3, 819),
        *(TimelinePoint(1.4 + i / 10, 819, "Default Response 0x98") for i in range(3)),
        TimelinePoint(225.0, 0),
    ]
    result = CheckResult(check("C-20", "Resumes after a restart", Level.SHOULD), Verdict.FAIL, "restarted from 0",
                         [restarted], timeline, 240.0, None, (0.0, 240.0))  # fmt: skip
    path = tmp_path / "report.html"
    write_html(Report("PPMID", "restart", [result]), path)
    _, html = parse_html(path)
    x = [80 + (at - 1.0) / 239 * 620 for at in (1.3, 2.0, 225.0)]  # the axis runs from the first request
    first, second = (p["points"].split() for p in html.find("polyline", **{"class": "transfer"}))
    # The line ends at the restart at the offset the device had reached, and starts again at its next request.
    assert first[-1] == f"{x[1]:.1f},{24 + 176 - 819 / 819 * 176:.1f}"
    assert max(float(pair.split(",")[0]) for pair in first) == pytest.approx(x[1], abs=0.05)
    assert f"{x[0]:.1f},24.0" in first
    assert second == [f"{x[2]:.1f},{24 + 176:.1f}"]
    labels = [t.strip() for t in "".join(html.text).split("\n")]
    assert [m["data-mark"] for m in html.find("g", **{"class": "marker"})] == ["event", "restart"]
    assert any("Default Response 0x98 ×3" in label for label in labels)


CHROMIUM = next((p for name in ("chromium", "chromium-browser") if (p := shutil.which(name))), None)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt: chromium); HTML rendering not checked")
def test_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    write_html(sample_report(), path)
    png = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={png}",
            "--window-size=1200,1600",
            path.as_uri(),
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


# -- all at once ---------------------------------------------------------------------------------------------


def test_write_all_writes_three_reports_into_a_new_directory(tmp_path: Path) -> None:
    report = sample_report()
    paths = write_all(report, tmp_path / "out" / "run1")
    assert {k: p.name for k, p in paths.items()} == {
        "json": "report.json",
        "junit": "report.xml",
        "html": "report.html",
    }
    assert json.loads(paths["json"].read_text())["target"] == report.target
    assert ET.parse(paths["junit"]).getroot().find("testsuite").get("tests") == "5"
    assert parse_html(paths["html"])[1].find("svg")
    assert sorted(p.name for p in paths["json"].parent.iterdir()) == ["report.html", "report.json", "report.xml"]


def test_write_all_into_a_file_is_a_one_line_input_error(tmp_path: Path) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("not a directory")
    with pytest.raises(ReportError) as caught:
        write_all(sample_report(), blocker)
    assert isinstance(caught.value, InputError)
    assert str(caught.value) == f"report directory {blocker}: expected a directory, found a file in the way"
    assert blocker.read_text() == "not a directory"
