"""What a conformance run produces: each check's result (verdict, reason, the frames it was judged on), who the
device said it was, how the run was made, and the report that holds them all.

Kept free of asyncio and of the benches themselves, so report writers (terminal, JSON, JUnit XML, HTML) and
the benches share one vocabulary, and a report can be re-rendered from its JSON (`Report.from_dict`, which is
also how an interrupted run is resumed). The JSON form is described by `report.schema.json` next to this module;
`SCHEMA_VERSION` changes whenever that form does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from emulator.conformance.check import Check, Level
from emulator.conformance.verdict import FrameRecord, TimelinePoint, Verdict, key

SCHEMA_VERSION = "1"


@dataclass
class CheckResult:
    """A check's verdict. `duration` is protocol seconds; `wall_duration` real seconds where the bench timed it;
    `span` the protocol times (on the clock of its evidence frames) the check started and ended, so a timeline
    can show what happened after the last transfer point (a hold, a wait for a reboot)."""

    check: Check
    verdict: Verdict
    reason: str
    evidence: list[FrameRecord] = field(default_factory=list)
    timeline: list[TimelinePoint] = field(default_factory=list)
    duration: float = 0.0
    wall_duration: float | None = None
    span: tuple[float, float] | None = None


@dataclass(frozen=True)
class DutInfo:
    """Who the device under test says it is, read over the air with ZCL Read Attributes at the start of the run
    (ZCL Basic cluster and OTA Upgrade cluster client attributes); None where it did not answer or does not
    support the attribute."""

    ieee: str
    manufacturer_name: str | None = None
    model_identifier: str | None = None
    hw_version: str | None = None
    sw_build_id: str | None = None
    current_file_version: str | None = None
    manufacturer_id: str | None = None
    image_type_id: str | None = None


# How each identity field is labelled, and the attribute it was read from.
DUT_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("ieee", "EUI-64", "IEEE address"),
    ("manufacturer_name", "Manufacturer", "Basic 0x0004 ManufacturerName"),
    ("model_identifier", "Model", "Basic 0x0005 ModelIdentifier"),
    ("hw_version", "Hardware version", "Basic 0x0003 HWVersion"),
    ("sw_build_id", "Software build", "Basic 0x4000 SWBuildID"),
    ("current_file_version", "Firmware (file version)", "OTA 0x0002 CurrentFileVersion"),
    ("manufacturer_id", "Manufacturer code", "OTA 0x0007 ManufacturerID"),
    ("image_type_id", "Image type", "OTA 0x0008 ImageTypeID"),
)
NOT_READABLE = "not readable"


@dataclass
class RunInfo:
    """When and how a run was made: the UTC it started, the tool's version, which bench (device or server),
    the settings it was given (option name to value) and the checks it was to run, in order. `resumed` counts
    the times an interrupted run was continued."""

    started_utc: str
    tool_version: str
    bench: str
    settings: dict[str, Any] = field(default_factory=dict)
    planned: list[str] = field(default_factory=list)
    resumed: int = 0


@dataclass
class Report:
    """A whole run: what was tested, each check's result, and how long it took (protocol and wall time)."""

    target: str
    description: str
    results: list[CheckResult]
    protocol_time: float = 0.0
    wall_time: float = 0.0
    pcap: str | None = None
    #: The keys file beside the capture (Wireshark `zigbee_pc_keys` rows: network key, install-code and CBKE keys).
    pcap_keys: str | None = None
    notes: list[str] = field(default_factory=list)
    run: RunInfo | None = None
    dut: DutInfo | None = None
    interrupted: bool = False

    @property
    def must_failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.verdict == Verdict.FAIL and r.check.level == Level.MUST]

    @property
    def should_failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.verdict == Verdict.FAIL and r.check.level == Level.SHOULD]

    @property
    def passed(self) -> bool:
        return not self.must_failures

    @property
    def not_run(self) -> list[str]:
        """IDs of planned checks the run did not get to (an interrupted run)."""
        done = {r.check.id for r in self.results}
        return [i for i in (self.run.planned if self.run else []) if i not in done]

    def counts(self) -> dict[str, int]:
        """Checks per verdict, keyed by the verdict's identifier form (`not_applicable`)."""
        counts = {key(v): 0 for v in Verdict}
        for result in self.results:
            counts[key(result.verdict)] += 1
        return counts

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "ota-emu", "version": self.run.tool_version if self.run else None},
            "run": None if self.run is None else asdict(self.run),
            "dut": None if self.dut is None else asdict(self.dut),
            "target": self.target,
            "description": self.description,
            "passed": self.passed,
            "interrupted": self.interrupted,
            "counts": self.counts(),
            "must_failures": len(self.must_failures),
            "should_failures": len(self.should_failures),
            "not_run": self.not_run,
            "protocol_time_s": round(self.protocol_time, 3),
            "wall_time_s": round(self.wall_time, 3),
            "pcap": self.pcap,
            "pcap_keys": self.pcap_keys,
            "notes": self.notes,
            "results": [
                {
                    "check": asdict(r.check),
                    "verdict": r.verdict.value,
                    "reason": r.reason,
                    "duration_s": round(r.duration, 3),
                    "wall_duration_s": None if r.wall_duration is None else round(r.wall_duration, 3),
                    "span_s": None if r.span is None else [round(r.span[0], 6), round(r.span[1], 6)],
                    "evidence": [asdict(f) | {"direction": f.direction} for f in r.evidence],
                    "timeline": [asdict(p) for p in r.timeline],
                }
                for r in self.results
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """The report a JSON report (as `as_dict` wrote it) describes; frame fields come back as plain values."""
        run = data.get("run")
        dut = data.get("dut")
        return cls(
            target=data["target"],
            description=data["description"],
            results=[_result(r) for r in data["results"]],
            protocol_time=float(data["protocol_time_s"]),
            wall_time=float(data["wall_time_s"]),
            pcap=data.get("pcap"),
            pcap_keys=data.get("pcap_keys"),
            notes=list(data.get("notes", [])),
            run=None if run is None else RunInfo(**run),
            dut=None if dut is None else DutInfo(**dut),
            interrupted=bool(data.get("interrupted", False)),
        )


def _result(data: dict[str, Any]) -> CheckResult:
    check = data["check"]
    span = data.get("span_s")
    return CheckResult(
        check=Check(
            id=check["id"],
            title=check["title"],
            reference=check["reference"],
            level=Level(check["level"]),
            applies_to=tuple(check["applies_to"]),
            scenario=check["scenario"],
        ),
        verdict=Verdict(data["verdict"]),
        reason=data["reason"],
        evidence=[
            FrameRecord(**{k: v for k, v in frame.items() if k != "direction"}) for frame in data.get("evidence", [])
        ],
        timeline=[TimelinePoint(**point) for point in data.get("timeline", [])],
        duration=float(data.get("duration_s", 0.0)),
        wall_duration=data.get("wall_duration_s"),
        span=None if span is None else (float(span[0]), float(span[1])),
    )
