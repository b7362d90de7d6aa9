"""The device conformance bench: run a PPMID or HCALCS through the selected checks and report the verdicts.

    report = run_device_checks(DeviceTarget(profile=load_device("profiles/ppmid.toml")))

Each check runs as its own short scenario against the test CHF (`scenarios.py`, `gb_scenarios.py`) in a session
of the device's world (`dut.py`): a fresh HAN for an emulated device, the same device in turn for one behind a
coordinator. A check the DUT's kind rules out is not applicable; a scenario that cannot decide, or that runs
past its budget, is inconclusive with the reason — a run never hangs.

Before the checks the bench reads who the device says it is (`identity.py`). Each check is reported to a
`progress` callback as it starts (n of N, with the time it is expected to take) and as it ends. A run that is
cancelled — Ctrl-C, or SIGTERM with `signals=True` — stops the check in progress and returns the report of the
checks decided so far, marked interrupted; `done` passes those back in to resume such a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import zigpy.types as t

from emulator import clock
from emulator.chf.store import HeldImage
from emulator.conformance.checks import BOTH, select
from emulator.conformance.durations import expected_seconds
from emulator.conformance.dut import EmulatedDut, EmulatedWorld, Notice, RadioDut, RadioWorld
from emulator.conformance.gb_scenarios import GB_SCENARIOS
from emulator.conformance.identity import read_identity
from emulator.conformance.interface import DeviceUnderTest
from emulator.conformance.model import Check, CheckResult, DutInfo, Level, Report, Verdict
from emulator.conformance.scenarios import SCENARIOS, Scenario
from emulator.conformance.testchf import TEST_CHF, TestChf
from emulator.conformance.trial import Inconclusive, NotApplicable
from emulator.conformance.zcl_scenarios import ZCL_SCENARIOS
from emulator.profiles import DeviceProfile
from emulator.radio.capture import PcapWriter, parse_network_key

ALL_SCENARIOS: dict[str, Scenario] = {**SCENARIOS, **GB_SCENARIOS, **ZCL_SCENARIOS}
# The most protocol time one check may take (its scenario's own windows are all shorter).
VIRTUAL_BUDGET = 4 * 86400.0
REAL_BUDGET = 6 * 3600.0

# Exit code of a run stopped by a signal before every check ran (128 + SIGINT, as shells report it).
INTERRUPTED_EXIT = 130


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class DeviceTarget:
    """The device under test: an emulated one from `profile` (on the loopback radio, or with `radio="ezsp"` on
    bellows and a virtual NCP; virtual time unless `real_time`), or a real one on the EZSP coordinator at `port`
    named by `ieee`, or any `dut` written to the public interface (`interface.DeviceUnderTest`: one that joins
    the bench's virtual air, or one behind its own `port`). For a real device, `kind` (ppmid|hcalcs) selects
    the GB checks, `image` is an upgrade file it accepts and `block_period_unit` the unit it reads
    MinimumBlockPeriod in."""

    profile: DeviceProfile | None = None
    radio: str = "loopback"
    port: str | None = None
    ieee: t.EUI64 | None = None
    kind: str | None = None
    image: HeldImage | None = None
    block_period_unit: str = "ms"
    join_timeout: float = 300.0
    seed: int = 0
    dut: DeviceUnderTest | None = None
    real_time: bool = False

    @property
    def virtual(self) -> bool:
        """Virtual time for a device on the bench's own air (either radio); a device behind a port is real."""
        port = self.dut.port if self.dut is not None else self.port
        return port is None and not self.real_time

    def describe(self) -> tuple[str, str]:
        if self.dut is not None:
            dut = self.dut
            kind = dut.kind.upper() if dut.kind else "device"
            where = f"behind the EZSP coordinator at {dut.port}" if dut.port else "on the bench's virtual air"
            return (
                f"{kind} {dut.ieee} ({dut.description})",
                f"Device conformance of {dut.description} ({where}) against the test CHF",
            )
        if self.profile is not None:
            profile = self.profile
            radio = "loopback radio" if self.radio == "loopback" else "bellows and a virtual EZSP NCP"
            how = f"{radio}, {'virtual' if self.virtual else 'real'} time"
            return (
                f"{profile.kind.upper()} {profile.ieee} (emulated, {profile.source})",
                f"Device conformance of an emulated {profile.kind.upper()} against the test CHF ({how}); "
                "a fresh HAN for every check",
            )
        kind = self.kind.upper() if self.kind else "device"
        return (
            f"{kind} {self.ieee} on {self.port}",
            f"Device conformance of a device behind the EZSP coordinator at {self.port}; checks ran one after "
            "another on the same device (it cannot be reset between them)",
        )


def run_device_checks(
    target: DeviceTarget,
    checks: Sequence[str] | None = None,
    *,
    pcap: Path | None = None,
    notice: Notice | None = None,
    progress: Progress | None = None,
    done: Sequence[CheckResult] = (),
    signals: bool = False,
) -> Report:
    """Run the checks named (all by default; an unknown ID is an `UnknownCheck` error before anything runs) on
    their own event loop — virtual time for an emulated device on the loopback radio. Checks in `done` (of an
    interrupted run) are kept, not run again."""
    selected = select(checks)
    return clock.run(
        lambda: check_device(target, selected, pcap=pcap, notice=notice, progress=progress, done=done, signals=signals),
        virtual=target.virtual,
    )


class _Capture:
    """One pcap for the whole run: every session's CHF radio writes into it."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.writer: PcapWriter | None = None

    def open(self, network_key: bytes, pan_id: int) -> None:
        if self.path is not None and self.writer is None:
            self.writer = PcapWriter(self.path, network_key=network_key, pan_id=pan_id)

    def __call__(self, chf: TestChf) -> None:
        if self.path is None:
            return
        if self.writer is None:
            info = chf.app.state.network_info
            self.open(bytes(info.network_key.key), int(info.pan_id))
        assert self.writer is not None
        chf.capture(self.writer)

    def close(self, failed: bool = False) -> str | None:
        if self.writer is None:
            return None
        if failed:
            self.writer.discard()
            return None
        return str(self.writer.close())


def target_dut(target: DeviceTarget) -> DeviceUnderTest:
    """The DUT a target names: its own, the emulated device of its profile, or the device behind its port."""
    if target.dut is not None:
        return target.dut
    if target.profile is not None:
        return EmulatedDut(target.profile, seed=target.seed)
    assert target.port is not None and target.ieee is not None
    return RadioDut(
        target.port,
        target.ieee,
        kind=target.kind,
        block_period_unit=target.block_period_unit,
    )


def _world(target: DeviceTarget, capture: _Capture, notice: Notice | None) -> EmulatedWorld | RadioWorld:
    dut = target_dut(target)
    if dut.port is None:
        # The test CHF forms its network with these settings, so the capture can be opened before the first frame
        # (and an unwritable path is reported before any check runs).
        capture.open(parse_network_key(TEST_CHF.network_key), TEST_CHF.pan_id)
        return EmulatedWorld(dut, radio=target.radio, seed=target.seed, capture=capture, image=target.image)
    return RadioWorld(
        dut,
        image=target.image,
        join_timeout=target.join_timeout,
        notice=notice,
        capture=capture,
    )


async def check_device(
    target: DeviceTarget,
    checks: Sequence[Check],
    *,
    pcap: Path | None = None,
    notice: Notice | None = None,
    progress: Progress | None = None,
    done: Sequence[CheckResult] = (),
    signals: bool = False,
) -> Report:
    """`run_device_checks` inside a running event loop."""
    loop = asyncio.get_running_loop()
    began, wall = loop.time(), time.monotonic()
    capture = _Capture(pcap)
    world = _world(target, capture, notice)
    decided = {r.check.id: r for r in done}
    results: list[CheckResult] = []
    identity: DutInfo | None = None
    failed, interrupted = True, False
    try:
        with _terminate_cancels(signals):
            await world.start()
            identity = await _identity(world, target)
            budget = VIRTUAL_BUDGET if target.virtual else REAL_BUDGET
            for index, check in enumerate(checks, 1):
                if check.id in decided:
                    results.append(decided[check.id])
                    continue
                expected = expected_seconds(check.id, world.kind)
                step = Step(index, len(checks), check, None, expected)
                if progress is not None:
                    progress(step)
                waiting = None if progress is None or target.virtual else _waits(progress, step)
                result = await _run_check(world, check, budget, waiting)
                results.append(result)
                if progress is not None:
                    progress(Step(index, len(checks), check, result, expected))
        failed = False
    except asyncio.CancelledError:
        # Ctrl-C (asyncio cancels the main task) or SIGTERM: keep what was decided; the check in progress is
        # left out, so a resumed run plays it again from its start.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        failed, interrupted = False, True
        ran = {r.check.id for r in results}
        results.extend(r for r in done if r.check.id not in ran)
    finally:
        await world.stop()
        written = capture.close(failed)
    order = {check.id: index for index, check in enumerate(checks)}
    results.sort(key=lambda r: order.get(r.check.id, len(order)))
    name, description = target.describe()
    notes = []
    if world.shared and world.absent is None:
        notes.append("checks ran in sequence on one device; an earlier check may have left it holding an image")
    return Report(
        target=name,
        description=description,
        results=results,
        protocol_time=loop.time() - began,
        wall_time=time.monotonic() - wall,
        pcap=written,
        notes=notes,
        dut=identity,
        interrupted=interrupted,
    )


@contextlib.contextmanager
def _terminate_cancels(enabled: bool) -> Iterator[None]:
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


def _waits(progress: Progress, step: Step) -> Callable[[str, float], None]:
    def waiting(what: str, seconds: float) -> None:
        progress(replace(step, waiting=what, wait=seconds))

    return waiting


async def _identity(world: EmulatedWorld | RadioWorld, target: DeviceTarget) -> DutInfo:
    """Who the device says it is, read in a session of its own before the checks (nothing read from a device
    that never joined)."""
    if target.profile is not None:
        ieee = str(target.profile.ieee)
    elif target.dut is not None:
        ieee = str(target.dut.ieee)
    else:
        ieee = str(target.ieee)
    if world.absent is not None:
        return DutInfo(ieee=ieee)
    async with world.session() as trial:
        return replace(await read_identity(trial.chf, trial.timing.response), ieee=ieee)


def _applicability(world: EmulatedWorld | RadioWorld, check: Check) -> CheckResult | None:
    if world.absent is not None:
        return CheckResult(check, Verdict.INCONCLUSIVE, world.absent)
    if check.applies_to == BOTH:
        return None
    kinds = " and ".join(k.upper() for k in check.applies_to)
    if world.kind is None:
        return CheckResult(
            check, Verdict.INCONCLUSIVE, f"applies to {kinds} only; the device's kind is unknown (--kind)"
        )
    if world.kind not in check.applies_to:
        article = "an" if world.kind == "hcalcs" else "a"
        return CheckResult(
            check, Verdict.NOT_APPLICABLE, f"applies to {kinds} only; the DUT is {article} {world.kind.upper()}"
        )
    return None


async def _run_check(
    world: EmulatedWorld | RadioWorld,
    check: Check,
    budget: float,
    waiting: Callable[[str, float], None] | None = None,
) -> CheckResult:
    ruled = _applicability(world, check)
    if ruled is not None:
        return ruled
    loop = asyncio.get_running_loop()
    start, wall = loop.time(), time.monotonic()
    began: float | None = None
    ended: float | None = None
    try:
        async with asyncio.timeout(budget):
            async with world.session() as trial:
                began = trial.clock.now()
                trial.chf.on_wait = waiting
                try:
                    outcome = await ALL_SCENARIOS[check.id](trial)
                finally:
                    ended = trial.clock.now()
                    trial.chf.on_wait = None
        result = CheckResult(check, outcome.verdict, outcome.reason, outcome.evidence, outcome.timeline)
    except Inconclusive as exc:
        result = CheckResult(check, Verdict.INCONCLUSIVE, exc.reason, exc.evidence)
    except NotApplicable as exc:
        result = CheckResult(check, Verdict.NOT_APPLICABLE, exc.reason, exc.evidence)
    except TimeoutError:
        result = CheckResult(check, Verdict.INCONCLUSIVE, f"the scenario did not finish within {budget:g} s")
    result.duration = loop.time() - start
    result.wall_duration = time.monotonic() - wall
    if began is not None and ended is not None:
        result.span = (began, ended)
    return result


def exit_code(report: Report) -> int:
    """0 when every MUST check passed or does not apply; 1 when one failed or could not be decided; 130 when
    the run was interrupted before every check ran."""
    if report.interrupted:
        return INTERRUPTED_EXIT
    decided = {Verdict.PASS, Verdict.NOT_APPLICABLE}
    musts = [r for r in report.results if r.check.level == Level.MUST]
    return 0 if all(r.verdict in decided for r in musts) else 1
