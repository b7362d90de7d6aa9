"""The device conformance bench: run a PPMID or HCALCS through the selected checks and report the verdicts.

    report = run_device_checks(DeviceTarget(profile=load_device("profiles/ppmid.toml")))

Each check's play step runs against the test CHF (`scenarios.py`, `gb_scenarios.py`, `zcl_scenarios.py`) in a
session of the device's world (`dut.py`): a fresh HAN for an emulated device, the same device in turn for one
behind a coordinator. A check the DUT's kind rules out is not applicable; a play step that cannot decide, or
that runs past its budget, is inconclusive with the reason — a run never hangs. The run itself — order,
progress, interruption and resuming — is the runner's (`emulator/conformance/running.py`).

Before the checks the bench reads who the device says it is (`identity.py`). `play_check` and `judge_check`
split one check into its two halves, so recorded (or altered) evidence can be judged without a device.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import zigpy.types as t

from emulator import clock
from emulator.chf.ezsp_security import EzspSmartEnergy
from emulator.chf.store import HeldImage
from emulator.conformance.check import Check, Rule
from emulator.conformance.device.catalogue import BOTH, CHECKS, PLAYS, RULES
from emulator.conformance.device.durations import expected_seconds
from emulator.conformance.device.dut import DutSecurity, EmulatedDut, EmulatedWorld, Notice, RadioDut, RadioWorld
from emulator.conformance.device.identity import read_identity
from emulator.conformance.device.testchf import TEST_CHF, TestChf
from emulator.conformance.interface import DeviceUnderTest
from emulator.conformance.results import CheckResult, DutInfo, Report
from emulator.conformance.running import Played, Progress, Waiting, run_rules
from emulator.conformance.selection import select
from emulator.conformance.verdict import Inconclusive, Judgement, Unsettled, Verdict
from emulator.han.security import HanSecurity, attach_capture
from emulator.profiles import DeviceProfile
from emulator.radio.capture import PcapWriter, parse_network_key

# The most protocol time one check may take (its play step's own windows are all shorter).
VIRTUAL_BUDGET = 4 * 86400.0
REAL_BUDGET = 6 * 3600.0


@dataclass(frozen=True)
class DeviceTarget:
    """The device under test: an emulated one from `profile` (on the loopback radio, or with `radio="ezsp"` on
    bellows and a virtual NCP; virtual time unless `real_time`), or a real one on the EZSP coordinator at `port`
    named by `ieee`, or any `dut` written to the public interface (`interface.DeviceUnderTest`: one that joins
    the bench's virtual air, or one behind its own `port`). For a real device, `kind` (ppmid|hcalcs) selects
    the GB checks, `image` is an upgrade file it accepts and `block_period_unit` the unit it reads
    MinimumBlockPeriod in; with `security` (the device's install code) the test CHF on the coordinator speaks Smart
    Energy security to it, else the network key only."""

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
    security: DutSecurity | None = None

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
        security = (
            f"Smart Energy security ({self.security.describe()})"
            if self.security is not None
            else "the network key only"
        )
        return (
            f"{kind} {self.ieee} on {self.port}",
            f"Device conformance of a device behind the EZSP coordinator at {self.port}, with {security}; checks "
            "ran one after another on the same device (it cannot be reset between them)",
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
    """Run the checks named (all by default; an unknown ID is an `UnknownCheckError` before anything runs) on
    their own event loop — virtual time for an emulated device on the loopback radio. Checks in `done` (of an
    interrupted run) are kept, not run again."""
    selected = select(checks, CHECKS)
    return clock.run(
        lambda: check_device(target, selected, pcap=pcap, notice=notice, progress=progress, done=done, signals=signals),
        virtual=target.virtual,
    )


def play_check(target: DeviceTarget, check_id: str) -> Any:
    """The evidence the play step of check `check_id` records on `target`, to judge — or judge again, altered —
    with `judge_check`. A play that cannot record it raises `Inconclusive` or `NotApplicable`."""
    rule = RULES[select([check_id], CHECKS)[0].id]

    async def main() -> Any:
        world = _world(target, _Capture(None), None)
        await world.start()
        try:
            async with world.session() as trial:
                return await PLAYS[rule.play](trial)
        finally:
            await world.stop()

    return clock.run(main, virtual=target.virtual)


def judge_check(check_id: str, evidence: Any) -> Judgement:
    """Judge `evidence` (as `play_check` recorded it) by the rule of check `check_id`."""
    return RULES[select([check_id], CHECKS)[0].id].judge(evidence)


def expected_durations(checks: Sequence[Check], kind: str | None) -> dict[str, float | None]:
    """The protocol seconds each of `checks` is expected to take when they run in this order (None where not
    measured): a check whose play step an earlier one already ran costs nothing more."""
    played: set[str] = set()
    expected: dict[str, float | None] = {}
    for check in checks:
        play = RULES[check.id].play
        expected[check.id] = 0.0 if play in played else expected_seconds(check.id, kind)
        played.add(play)
    return expected


class _Capture:
    """One pcap for the whole run: every session's CHF radio writes into it, and the keys that open its frames go
    into a keys file beside it (`<pcap>.keys`, Wireshark `zigbee_pc_keys` rows)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.writer: PcapWriter | None = None

    def open(self, network_key: bytes, pan_id: int) -> None:
        if self.path is not None and self.writer is None:
            self.writer = PcapWriter(self.path, network_key=network_key, pan_id=pan_id)

    def __call__(self, chf: TestChf, security: HanSecurity | EzspSmartEnergy | None = None) -> None:
        if self.path is None:
            return
        if self.writer is None:
            info = chf.app.state.network_info
            self.open(bytes(info.network_key.key), int(info.pan_id))
        writer = self.writer
        assert writer is not None
        chf.capture(writer)
        if isinstance(security, EzspSmartEnergy):
            # As `ota-emu chf` does: each CBKE key the CHF stores in the NCP opens (and secures) the OTA frames.
            security.notices.append(
                lambda n: writer.set_link_key(n.coordinator, n.device, n.key, label=f"CBKE link key {n.device}")
            )
        elif security is not None:
            attach_capture(security, writer)

    def close(self, failed: bool = False) -> tuple[str, str] | None:
        """The pcap and its keys file, both written; None when there was no capture (or the run failed)."""
        if self.writer is None:
            return None
        if failed:
            self.writer.discard()
            return None
        pcap = self.writer.close()
        return str(pcap), str(self.writer.write_keys())


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
        security=target.security,
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
    player = DevicePlayer(target, _world(target, capture, notice), capture)
    rules = [RULES[check.id] for check in checks]
    ran = await run_rules(player, rules, progress=progress, done=done, live_waits=not target.virtual, signals=signals)
    name, description = target.describe()
    world = player.world
    notes = []
    if world.shared and world.absent is None:
        notes.append("checks ran in sequence on one device; an earlier check may have left it holding an image")
    notes.extend(world.notes)
    return Report(
        target=name,
        description=description,
        results=ran.results,
        protocol_time=loop.time() - began,
        wall_time=time.monotonic() - wall,
        pcap=player.pcap,
        pcap_keys=player.pcap_keys,
        notes=notes,
        dut=player.identity,
        interrupted=ran.interrupted,
    )


class DevicePlayer:
    """The device bench as the runner sees it: the DUT's world, the capture, and a budget per play step."""

    def __init__(self, target: DeviceTarget, world: EmulatedWorld | RadioWorld, capture: _Capture) -> None:
        self.target = target
        self.world = world
        self.capture = capture
        self.budget = VIRTUAL_BUDGET if target.virtual else REAL_BUDGET
        self.identity: DutInfo | None = None
        self.pcap: str | None = None
        self.pcap_keys: str | None = None

    async def start(self) -> None:
        await self.world.start()
        self.identity = await self._identity()

    async def stop(self, failed: bool) -> None:
        await self.world.stop()
        written = self.capture.close(failed)
        self.pcap, self.pcap_keys = written if written is not None else (None, None)

    async def _identity(self) -> DutInfo:
        """Who the device says it is, read in a session of its own before the checks (nothing read from a
        device that never joined)."""
        target, world = self.target, self.world
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

    def ruled_out(self, rule: Rule[Any]) -> Judgement | None:
        """Inconclusive for a device that never joined; by kind, not applicable (or inconclusive when the kind
        is unknown)."""
        world, check = self.world, rule.check
        if world.absent is not None:
            return Judgement(Verdict.INCONCLUSIVE, world.absent)
        if check.applies_to == BOTH:
            return None
        kinds = " and ".join(k.upper() for k in check.applies_to)
        if world.kind is None:
            return Judgement(Verdict.INCONCLUSIVE, f"applies to {kinds} only; the device's kind is unknown (--kind)")
        if world.kind not in check.applies_to:
            article = "an" if world.kind == "hcalcs" else "a"
            return Judgement(
                Verdict.NOT_APPLICABLE, f"applies to {kinds} only; the DUT is {article} {world.kind.upper()}"
            )
        return None

    def expected(self, check: Check) -> float | None:
        return expected_seconds(check.id, self.world.kind)

    async def play(self, rule: Rule[Any], waiting: Waiting | None) -> Played[Any]:
        """The rule's play step in a session of its own, within the budget of one check."""
        loop = asyncio.get_running_loop()
        start, wall = loop.time(), time.monotonic()
        span: tuple[float, float] | None = None
        frames = []
        found: Any
        try:
            async with asyncio.timeout(self.budget), self.world.session() as trial:
                began, mark = trial.clock.now(), trial.chf.mark()
                trial.chf.on_wait = waiting
                try:
                    found = await PLAYS[rule.play](trial)
                finally:
                    span = (began, trial.clock.now())
                    frames = trial.chf.since(mark)
                    trial.chf.on_wait = None
        except Unsettled as exc:
            found = exc
        except TimeoutError:
            found = Inconclusive(f"the scenario did not finish within {self.budget:g} s")
        return Played(found, frames, loop.time() - start, time.monotonic() - wall, span)

    def note(self, check: Check, judgement: Judgement) -> None:
        return None
