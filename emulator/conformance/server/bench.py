"""The server conformance bench: probe an OTA server — ``ours``, the emulator's CHF, or ``zigpy``, zigpy's own OTA
server (`targets.py`) — through the selected checks on virtual time, and report the verdicts.

    report = run_server_checks("ours", None)

Every play step runs on a fresh air and bench; checks that name the same play share its run (`catalogue.py`).
A play that could not be set up leaves its checks inconclusive, not failed. The run itself is the runner's
(`emulator/conformance/running.py`); `play_check` and `judge_check` split one check into its two halves, so
recorded (or altered) frames can be judged without a server.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from emulator.clock import Clock, run
from emulator.conformance.check import Check, Rule
from emulator.conformance.results import Report
from emulator.conformance.running import Played, Progress, Waiting, run_rules
from emulator.conformance.selection import select
from emulator.conformance.server.catalogue import CHECKS, RULES
from emulator.conformance.server.plan import TARGET_IEEES
from emulator.conformance.server.scenarios import SCENARIOS
from emulator.conformance.server.targets import TARGETS, OursTarget, ScenarioError, ServerTarget, ZigpyTarget
from emulator.conformance.server.transcript import Claims, Transcript
from emulator.conformance.verdict import Inconclusive, Judgement, Verdict
from emulator.errors import InputError
from emulator.han.security import HanSecurity, attach_capture
from emulator.radio.air import Air
from emulator.radio.capture import PcapWriter

# Frames are dated from a fixed UTC so that two runs of the same checks produce the same bytes.
START_UTC = datetime(2026, 1, 1, tzinfo=UTC)


class UnknownTargetError(InputError):
    """A server target other than the ones this module can start."""


class ServerPlayer:
    """The server bench as the runner sees it: a target, the run's clock and, with `pcap`, one capture of the
    air of every play."""

    def __init__(self, target: ServerTarget, clock: Clock, pcap: Path | None = None) -> None:
        self.target = target
        self.clock = clock
        self.writer: PcapWriter | None = None
        self.keys: Path | None = None  # the keys file written beside the capture
        if pcap is not None:
            network = target.network()
            self.writer = PcapWriter(
                pcap,
                network_key=bytes.fromhex(network.network_key.replace(":", "")),
                pan_id=network.pan_id,
                clock=clock,
            )

    async def start(self) -> None:
        return None

    async def stop(self, failed: bool) -> None:
        if self.writer is not None:
            if failed:
                self.writer.discard()
            else:
                self.writer.close()
                self.keys = self.writer.write_keys()

    def ruled_out(self, rule: Rule[Any]) -> Judgement | None:
        check = rule.check
        if self.target.name in check.applies_to:
            return None
        return Judgement(Verdict.NOT_APPLICABLE, f"applies to {', '.join(check.applies_to)} only: {rule.elsewhere}")

    def expected(self, check: Check) -> float | None:
        return None

    async def play(self, rule: Rule[Any], waiting: Waiting | None) -> Played[Transcript]:
        """Play one scenario on a fresh air; the transcript, or why the scenario could not be set up."""
        try:
            transcript = await play(self.target, rule.play, self.clock, self.writer)
        except ScenarioError as exc:
            return Played(Inconclusive(str(exc)))
        remark = f" [{'; '.join(sorted(set(transcript.sessions)))}]" if transcript.sessions else ""
        return Played(transcript, transcript.frames, transcript.duration, remark=remark)

    def note(self, check: Check, judgement: Judgement) -> str | None:
        """Every failure, and what a target lacks, for the report's list of deviations."""
        if judgement.verdict == Verdict.FAIL:
            return f"{check.id} ({check.level.value}): {judgement.note or judgement.reason}"
        if judgement.note:
            return f"{check.id} ({judgement.verdict.value}): {judgement.note}"
        return None


async def run_checks(
    target: ServerTarget,
    checks: Sequence[Check],
    *,
    pcap: Path | None = None,
    progress: Progress | None = None,
    signals: bool = False,
) -> Report:
    """Run `checks` against `target`, one fresh bench per scenario; checks sharing a scenario share its run.
    Each check is reported to `progress` as it starts and ends; with `signals`, SIGTERM stops the run as Ctrl-C
    does (the report then holds the checks decided so far)."""
    clock = Clock(START_UTC)
    rules = [RULES[check.id] for check in checks]
    player = ServerPlayer(target, clock, pcap)
    ran = await run_rules(player, rules, progress=progress, signals=signals)
    return Report(
        target=target.name,
        description=target.description,
        results=ran.results,
        protocol_time=clock.now(),
        wall_time=clock.wall_elapsed(),
        pcap=str(pcap) if pcap is not None and player.keys is not None else None,
        pcap_keys=None if player.keys is None else str(player.keys),
        notes=ran.notes,
        interrupted=ran.interrupted,
    )


async def play(target: ServerTarget, scenario: str, clock: Clock, writer: PcapWriter | None) -> Transcript:
    """Run one scenario on a fresh air; a `ScenarioError` when it could not be played."""
    air = Air()
    if writer is not None:
        air.add_tap(writer.write)
    started = clock.now()
    bench = await target.bench(scenario, air, clock)
    if writer is not None:
        if bench.security is not None:
            _capture_keys(bench.security, writer)
        writer.add_node(bench.app.nwk, bench.app.ieee)
        for index in (*range(len(TARGET_IEEES)), -1):
            identity = bench.identity(index)
            writer.add_node(identity.nwk, identity.ieee)
    transcript = Transcript(bench.claims, bench.offer, bench.specific)
    try:
        await SCENARIOS[scenario](bench, transcript)
    except (ScenarioError, TimeoutError) as exc:
        raise ScenarioError(f"scenario could not be played: {exc or type(exc).__name__}") from None
    finally:
        transcript.notifies = [f for probe in bench.probes for f in probe.notifies]
        transcript.stray = [f for probe in bench.probes for f in probe.late()]
        transcript.outcomes = bench.outcomes()
        transcript.sessions = list(bench.sessions)
        await bench.close()
        if writer is not None:
            air.remove_tap(writer.write)
    transcript.duration = clock.now() - started
    return transcript


def _capture_keys(security: HanSecurity, writer: PcapWriter) -> None:
    """The keys that open the probes' frames: each CBKE link key as it is agreed, and the install-code keys of the
    Device Log, which protect a probe's traffic until its CBKE (the probes are admitted off the air, so no
    Transport-Key in the capture carries them)."""
    attach_capture(security, writer)
    centre = security.trust_centre
    if centre is not None:
        for ieee, code in centre.device_log.items():
            writer.set_link_key(centre.context.eui, ieee, code.key, label=f"install-code link key {ieee}")


def play_check(target: ServerTarget, check_id: str) -> Transcript:
    """The transcript of one check's scenario against `target`, to judge (or re-judge) recorded frames."""
    rule = RULES[select([check_id], CHECKS)[0].id]

    async def main() -> Transcript:
        return await play(target, rule.play, Clock(START_UTC), None)  # the clock reads the running loop

    return run(main, virtual=True)


def judge_check(check_id: str, transcript: Transcript) -> Judgement:
    """Judge `transcript` by the rule of check `check_id`."""
    return RULES[select([check_id], CHECKS)[0].id].judge(transcript)


def run_target(
    target: ServerTarget,
    checks: Sequence[str] | None,
    *,
    pcap: Path | None = None,
    progress: Progress | None = None,
    signals: bool = False,
) -> Report:
    """`run_server_checks` for a target object (e.g. a deliberately misconfigured CHF)."""
    selected = select(checks, CHECKS)
    return run(lambda: run_checks(target, selected, pcap=pcap, progress=progress, signals=signals), virtual=True)


def run_server_checks(
    target: str,
    checks: Sequence[str] | None,
    *,
    pcap: Path | None = None,
    progress: Progress | None = None,
    signals: bool = False,
) -> Report:
    """Probe the OTA server `target` ("ours" or "zigpy") with `checks` (None: all) on virtual time; with `pcap`,
    capture the air of every scenario into that file. `progress` and `signals` as for `run_checks`."""
    if target not in TARGETS:
        raise UnknownTargetError(f"unknown server target {target!r}: expected one of {', '.join(TARGETS)}")
    return run_target(TARGETS[target](), checks, pcap=pcap, progress=progress, signals=signals)


__all__ = [
    "CHECKS",
    "Claims",
    "OursTarget",
    "ServerTarget",
    "Transcript",
    "UnknownTargetError",
    "ZigpyTarget",
    "judge_check",
    "play_check",
    "run_server_checks",
    "run_target",
]
