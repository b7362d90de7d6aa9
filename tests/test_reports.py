"""Report writers: terminal table, JSON, JUnit XML shape, and a self-contained HTML file (parsed, and rendered
by headless Chromium where it is installed)."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
import zigpy.types as t
from rich.console import Console
from zigpy.zcl import foundation

from emulator.conformance.model import (
    Check,
    CheckResult,
    FrameRecord,
    Level,
    Report,
    TimelinePoint,
    Verdict,
)
from emulator.conformance.reports import (
    ReportError,
    render_terminal,
    write_all,
    write_html,
    write_json,
    write_junit,
)
from emulator.errors import InputError

DUT = t.EUI64.convert("00:db:12:34:56:78:90:a4")


def check(check_id: str, title: str, level: Level = Level.MUST, scenario: str = "plain-upgrade") -> Check:
    return Check(check_id, title, f"SPEC.md §{check_id}", level, ("ppmid", "hcalcs"), scenario)


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
                        [QUERY], duration=1.5),
            CheckResult(check("C-05", "Honours WAIT_FOR_DATA", scenario="wait-for-data"), Verdict.FAIL,
                        "re-requested after 2.4 s, asked to wait 30 s <b>", [QUERY, BLOCK, ABORT], timeline, 38.4),
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
    )  # fmt: skip


# -- JUnit ---------------------------------------------------------------------------------------------------


def test_junit_has_one_testcase_per_check_and_counts_that_match(tmp_path: Path) -> None:
    report = sample_report()
    path = tmp_path / "report.xml"
    write_junit(report, path)
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    [suite] = root.findall("testsuite")
    for element in (root, suite):
        assert {k: element.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
            "tests": "5",
            "failures": "2",
            "errors": "1",
            "skipped": "1",
        }
        assert float(element.get("time")) == pytest.approx(642.0)
    assert suite.get("name") == report.target
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [f"{r.check.id} {r.check.title}" for r in report.results]
    assert cases[1].get("classname") == "ota_emu.conformance.wait-for-data"
    assert [float(c.get("time")) for c in cases] == [1.5, 38.4, 2.0, 0.0, 600.0]

    def outcome(case: ET.Element) -> list[tuple[str, str | None, str | None]]:
        return [(e.tag, e.get("type"), e.get("message")) for e in case if e.tag != "system-out"]

    assert outcome(cases[0]) == []
    assert outcome(cases[1]) == [("failure", "MUST", "re-requested after 2.4 s, asked to wait 30 s <b>")]
    # A control character cannot travel in XML; it is spelled out instead.
    assert outcome(cases[2]) == [("failure", "SHOULD", "blocks 120 ms apart, period 250 ms\\x01")]
    assert outcome(cases[3]) == [("skipped", None, "device does not use Image Page Request")]
    assert outcome(cases[4]) == [("error", "inconclusive", "device never reached 50 % before the limit")]

    evidence = cases[1].find("system-out").text
    assert BLOCK.hex in evidence and ABORT.hex in evidence and "image_block_response" in evidence
    assert "[abort]" in evidence and "requester=00:db:12:34:56:78:90:a4" in evidence
    properties = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert properties["outcome"] == "FAIL (1 MUST failure)" and properties["pcap"] == "runs/c05.pcap"


# -- JSON ----------------------------------------------------------------------------------------------------


def test_json_is_the_report_dict_with_zigpy_values_made_plain(tmp_path: Path) -> None:
    report = sample_report()
    path = tmp_path / "report.json"
    write_json(report, path)
    data = json.loads(path.read_text())
    assert data["passed"] is False
    assert data["counts"] == {"pass": 1, "fail": 2, "not applicable": 1, "inconclusive": 1}
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
    assert [len(p["points"].split()) for p in polylines] == [5, 2]
    xs = [float(pair.split(",")[0]) for pair in polylines[0]["points"].split()]
    assert xs == sorted(xs) and xs[0] < xs[-1]
    assert [m["data-mark"] for m in html.find("g", **{"class": "marker"})] == ["wait", "abort"]
    assert len(html.find("rect", **{"class": "wait-span"})) == 1
    assert len(html.find("line", **{"class": "mark abort"})) == 1

    assert len(html.find("details")) == 3  # checks with evidence frames
    assert [a["id"] for a in html.find("article")] == [f"check-{r.check.id}" for r in report.results]
    assert len(html.find("a")) == 5 and html.find("a")[1]["href"] == "#check-C-05"
    text = "".join(html.text)
    assert BLOCK.hex in text and "upgrade_end" in text and "FAIL (1 MUST failure)" in text
    # Reasons are text, never markup.
    assert "asked to wait 30 s <b>" in text and not html.find("b")
    assert "<profile ppmid.toml>" in text
    assert "\x01" not in document and "period 250 ms\\x01" in text


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
