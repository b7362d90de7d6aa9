"""Running checks: the one loop both benches use, from the selected rules to each check's result.

For every rule in order the runner asks the bench (a `Player`) whether the check is ruled out for this target
(its kind, a device that never joined); otherwise it has the bench play the rule's play step — once per play
name, so checks that read the same exchange share one run of it — and hands the recorded evidence to the
rule's judge. A play step that could not record the evidence ends the check with its reason instead.

Each check is reported to a `progress` callback as it starts (n of N, with the time it is expected to take) and
as it ends. A run that is cancelled — Ctrl-C, or SIGTERM with `signals=True` — stops the check in progress and
returns the results decided so far, marked interrupted; `done` passes those back in to resume such a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

from emulator.conformance.check import Check, Level, Rule
from emulator.conformance.results import CheckResult, Report
from emulator.conformance.verdict import FrameRecord, Judgement, Unsettled, Verdict

E = TypeVar("E")

# Exit code of a run stopped by a signal before every check ran (128 + SIGINT, as shells report it).
INTERRUPTED_EXIT = 130

# Told (what, for how many protocol seconds) whenever a play step starts waiting for a frame.
Waiting = Callable[[str, float], None]


@dataclass(frozen=True, slots=True)
class Step:
    """A check starting (`result` None) or ended: its place in the run and the time it is expected to take
    (protocol seconds; None when unknown). On real time, also each time the check starts waiting for a frame:
    `waiting` says for what, `wait` for how many seconds at most."""

    index: int
    total: int
    check: Check
    result: CheckResult | None
    expected: float | None
    waiting: str | None = None
    wait: float | None = None


Progress = Callable[[Step], None]


@dataclass(slots=True)
class Played(Generic[E]):
    """What a play step left: the evidence its checks are judged on — or, when it could not record that, why
    not — every frame it recorded (the evidence of a judgement that names none), how long it took in protocol
    seconds (`duration`) and real seconds (`wall_duration`, where the bench timed it), the protocol times it
    started and ended on the clock of its frames (`span`), and a remark for the reason of every check judged
    from it."""

    evidence: E | Unsettled
    frames: list[FrameRecord] = field(default_factory=list)
    duration: float = 0.0
    wall_duration: float | None = None
    span: tuple[float, float] | None = None
    remark: str = ""


class Player(Protocol):
    """What the runner needs of a bench."""

    async def start(self) -> None:
        """Get the target ready (before the first check)."""

    async def stop(self, failed: bool) -> None:
        """Release the target; `failed` when the run ended in an error (not an interruption)."""

    def ruled_out(self, rule: Rule[Any]) -> Judgement | None:
        """Why the check cannot be played on this target (not applicable, or inconclusive), or None."""

    def expected(self, check: Check) -> float | None:
        """The protocol seconds the check is expected to take, None when unknown."""

    async def play(self, rule: Rule[Any], waiting: Waiting | None) -> Played[Any]:
        """Play the rule's play step and return what it recorded."""

    def note(self, check: Check, judgement: Judgement) -> str | None:
        """A line for the report's notes about this judgement, or None."""


@dataclass(slots=True)
class Ran:
    """The results of a run, in the order of its rules; `notes` from the judgements; whether it was cut short."""

    results: list[CheckResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False


async def run_rules(
    player: Player,
    rules: Sequence[Rule[Any]],
    *,
    progress: Progress | None = None,
    done: Sequence[CheckResult] = (),
    live_waits: bool = False,
    signals: bool = False,
) -> Ran:
    """Decide every rule on `player`'s target. Results in `done` (of an interrupted run) are kept, not played
    again. With `live_waits` each wait for a frame is reported to `progress` too (a run on real time)."""
    ran = Ran()
    failed = True
    try:
        with terminate_cancels(signals):
            await player.start()
            await _decide_all(player, rules, ran, progress, done, live_waits)
        failed = False
    except asyncio.CancelledError:
        # Ctrl-C (asyncio cancels the main task) or SIGTERM: keep what was decided; the check in progress is
        # left out, so a resumed run plays it again from its start.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        failed, ran.interrupted = False, True
        decided = {r.check.id for r in ran.results}
        ran.results.extend(r for r in done if r.check.id not in decided)
    finally:
        await player.stop(failed)
    order = {rule.check.id: index for index, rule in enumerate(rules)}
    ran.results.sort(key=lambda r: order.get(r.check.id, len(order)))
    return ran


async def _decide_all(
    player: Player,
    rules: Sequence[Rule[Any]],
    ran: Ran,
    progress: Progress | None,
    done: Sequence[CheckResult],
    live_waits: bool,
) -> None:
    decided = {r.check.id: r for r in done}
    plays: dict[str, Played[Any]] = {}
    for index, rule in enumerate(rules, 1):
        check = rule.check
        if check.id in decided:
            ran.results.append(decided[check.id])
            continue
        # A play already run for an earlier check costs nothing more.
        expected = 0.0 if rule.play in plays else player.expected(check)
        step = Step(index, len(rules), check, None, expected)
        if progress is not None:
            progress(step)
        waiting = _waits(progress, step) if progress is not None and live_waits else None
        result, judgement = await _decide(player, rule, plays, waiting)
        ran.results.append(result)
        note = None if judgement is None else player.note(check, judgement)
        if note:
            ran.notes.append(note)
        if progress is not None:
            progress(replace(step, result=result))


async def _decide(
    player: Player, rule: Rule[Any], plays: dict[str, Played[Any]], waiting: Waiting | None
) -> tuple[CheckResult, Judgement | None]:
    """The check's result, and the judgement it came from (None when the check was ruled out)."""
    check = rule.check
    ruled = player.ruled_out(rule)
    if ruled is not None:
        return CheckResult(check, ruled.verdict, ruled.reason, list(ruled.evidence or [])), None
    if rule.play not in plays:
        plays[rule.play] = await player.play(rule, waiting)
    played = plays[rule.play]
    found = played.evidence
    judgement = found.judgement() if isinstance(found, Unsettled) else rule.judge(found)
    shown = played.frames if judgement.evidence is None else sorted(judgement.evidence, key=lambda f: f.at)
    result = CheckResult(
        check,
        judgement.verdict,
        judgement.reason + played.remark,
        shown,
        judgement.timeline,
        played.duration,
        played.wall_duration,
        played.span,
    )
    return result, judgement


def _waits(progress: Progress, step: Step) -> Waiting:
    def waiting(what: str, seconds: float) -> None:
        progress(replace(step, waiting=what, wait=seconds))

    return waiting


@contextlib.contextmanager
def terminate_cancels(enabled: bool) -> Iterator[None]:
    """While running, SIGTERM cancels the run as Ctrl-C does (asyncio already turns SIGINT into a
    cancellation of the main task), so a run stopped by a service manager also writes its report."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    try:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    except (NotImplementedError, RuntimeError):
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def exit_code(report: Report) -> int:
    """0 when every MUST check passed or does not apply; 1 when one failed or could not be decided; 130 when
    the run was interrupted before every check ran."""
    if report.interrupted:
        return INTERRUPTED_EXIT
    decided = {Verdict.PASS, Verdict.NOT_APPLICABLE}
    musts = [r for r in report.results if r.check.level == Level.MUST]
    return 0 if all(r.verdict in decided for r in musts) else 1
