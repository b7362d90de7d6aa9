"""What a judge decides and what it cites: the verdict, its reason, and the frames (and transfer timeline) that
decided it.

Every check, device or server, ends in a `Judgement` — from its judge over the evidence its play step recorded,
or from the play step itself when that could not record what the check needs (`Inconclusive`, `NotApplicable`:
an exception, so a play step can give up from however deep it is). Kept free of asyncio, so report writers can
read the same vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NOT_APPLICABLE = "not applicable"
    INCONCLUSIVE = "inconclusive"


def key(verdict: Verdict) -> str:
    """A verdict as an identifier (JSON keys, CSS classes): `not applicable` → `not_applicable`."""
    return verdict.value.replace(" ", "_")


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


@dataclass(frozen=True, slots=True)
class Judgement:
    """A judge's finding. `evidence` None means every frame the play step recorded; `note` names a feature the
    target lacks, for the report's list of deviations even when the check is not applicable."""

    verdict: Verdict
    reason: str
    evidence: list[FrameRecord] | None = None
    timeline: list[TimelinePoint] = field(default_factory=list)
    note: str = ""


def evidence(*items: FrameRecord | list[FrameRecord] | None) -> list[FrameRecord]:
    """The frames that decided a verdict, in time order, each once."""
    seen: dict[int, FrameRecord] = {}
    for item in items:
        for frame in item if isinstance(item, list) else [item]:
            if frame is not None:
                seen.setdefault(id(frame), frame)
    return sorted(seen.values(), key=lambda f: f.at)


class Unsettled(Exception):
    """A play step that could not record what its check judges; `verdict` says how the check ends."""

    verdict: ClassVar[Verdict]

    def __init__(self, reason: str, evidence: list[FrameRecord] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.evidence = evidence or []

    def judgement(self) -> Judgement:
        return Judgement(self.verdict, self.reason, list(self.evidence))


class Inconclusive(Unsettled):
    """The play could not decide: the target did not do what the check needs (the reason says what)."""

    verdict = Verdict.INCONCLUSIVE


class NotApplicable(Unsettled):
    """The rule does not apply to this target (its kind, or a policy it declares)."""

    verdict = Verdict.NOT_APPLICABLE
