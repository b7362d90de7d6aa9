"""What a check is: a rule declared as data, and the one way every check — device or server — is decided.

A `Check` is the citable rule: ID, title, the clause it enforces, its level and where it applies. A `Rule`
pairs it with how it is decided: `play` names the play step that drives the target and records evidence
(checks that name the same play share one run of it), and `judge` is a pure function from that evidence to a
`Judgement`, so recorded evidence can be judged again without a target. The runner (`running.py`) knows
nothing else about a check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from emulator.conformance.verdict import Judgement

E = TypeVar("E")


class Level(StrEnum):
    """RFC 2119 strength of the rule a check enforces; only MUST failures make a run fail."""

    MUST = "MUST"
    SHOULD = "SHOULD"


@dataclass(frozen=True)
class Check:
    """One named, citable rule: `reference` is the clause it enforces, `applies_to` the targets it applies
    to (device kinds, or server targets) and `scenario` what the bench plays to probe it."""

    id: str
    title: str
    reference: str
    level: Level
    applies_to: tuple[str, ...]
    scenario: str


Judge = Callable[[E], Judgement]


@dataclass(frozen=True, slots=True)
class Rule(Generic[E]):
    """A check and how it is decided: the play step (`play`, a name the bench resolves) that records evidence
    of type E, and the `judge` that decides from that evidence alone. `elsewhere` says why the check does not
    apply to targets outside `check.applies_to`, where a bench reports that."""

    check: Check
    play: str
    judge: Judge[E]
    elsewhere: str = ""


def as_played(finding: Judgement) -> Judgement:
    """The judge of a play step that decides as it goes — what it plays next depends on what the target did
    (a control probe after silence, a read after a reboot) — and so records its finding as the evidence."""
    return finding
