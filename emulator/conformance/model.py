"""What a conformance run produces: checks, the frames they were judged on, verdicts and the report.

Kept free of asyncio and of the scenarios themselves, so report writers (terminal, JSON, JUnit XML, HTML) and
the checks share one vocabulary, and a report can be re-rendered from its JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NOT_APPLICABLE = "not applicable"
    INCONCLUSIVE = "inconclusive"


class Level(StrEnum):
    """RFC 2119 strength of the rule a check enforces; only MUST failures make a run fail."""

    MUST = "MUST"
    SHOULD = "SHOULD"


@dataclass(frozen=True)
class Check:
    """One named, citable rule and the scenario the test CHF (or test client) plays to probe it."""

    id: str
    title: str
    reference: str
    level: Level
    applies_to: tuple[str, ...]
    scenario: str


@dataclass(frozen=True)
class FrameRecord:
    """One frame as the bench saw it cross the air, decoded where it could be."""

    at: float
    src: int
    dst: int
    src_ep: int
    dst_ep: int
    profile_id: int
    cluster_id: int
    name: str
    fields: dict[str, Any]
    hex: str

    @property
    def direction(self) -> str:
        return "to DUT" if self.src == 0 else "from DUT"


@dataclass(frozen=True)
class TimelinePoint:
    """A point of the transfer timeline: the DUT's file offset at a time, or a marked event (wait, abort)."""

    at: float
    offset: int
    mark: str = ""


@dataclass
class CheckResult:
    check: Check
    verdict: Verdict
    reason: str
    evidence: list[FrameRecord] = field(default_factory=list)
    timeline: list[TimelinePoint] = field(default_factory=list)
    duration: float = 0.0


@dataclass
class Report:
    """A whole run: what was tested, each check's result, and how long it took (protocol and wall time)."""

    target: str
    description: str
    results: list[CheckResult]
    protocol_time: float = 0.0
    wall_time: float = 0.0
    pcap: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def must_failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.verdict == Verdict.FAIL and r.check.level == Level.MUST]

    @property
    def passed(self) -> bool:
        return not self.must_failures

    def counts(self) -> dict[str, int]:
        counts = {v.value: 0 for v in Verdict}
        for result in self.results:
            counts[result.verdict.value] += 1
        return counts

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "description": self.description,
            "passed": self.passed,
            "counts": self.counts(),
            "protocol_time_s": round(self.protocol_time, 3),
            "wall_time_s": round(self.wall_time, 3),
            "pcap": self.pcap,
            "notes": self.notes,
            "results": [
                {
                    "check": asdict(r.check),
                    "verdict": r.verdict.value,
                    "reason": r.reason,
                    "duration_s": round(r.duration, 3),
                    "evidence": [asdict(f) | {"direction": f.direction} for f in r.evidence],
                    "timeline": [asdict(p) for p in r.timeline],
                }
                for r in self.results
            ],
        }
