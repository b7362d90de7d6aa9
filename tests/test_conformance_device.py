"""The device conformance bench: the bundled PPMID and HCALCS pass every check that applies to them, each check
has a fault profile (profiles/faults/) that fails it, and the bench reaches a device through bellows — an
emulated one it starts behind a virtual NCP, or one already on a coordinator's network named by its EUI-64."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import re
from pathlib import Path

import pytest
from zigpy.zcl import foundation

from emulator.clock import Clock
from emulator.conformance.check import Level
from emulator.conformance.device.bench import DeviceTarget, check_device, judge_check, play_check, run_device_checks
from emulator.conformance.device.catalogue import CHECKS, PLAYS, RULES
from emulator.conformance.results import Report
from emulator.conformance.running import exit_code
from emulator.conformance.selection import UnknownCheckError, parse_ids, select
from emulator.conformance.verdict import FrameRecord, Verdict
from emulator.device.device import EmulatedDevice
from emulator.ncp.server import VirtualNcp
from emulator.ota import frames
from emulator.profiles import DeviceProfile, bundled, load_device
from emulator.radio.air import Air

ROOT = Path(__file__).resolve().parent.parent
FAULTS = ROOT / "profiles" / "faults"

# fault profile → the checks it fails (and the bundled profiles pass, or find not applicable).
FAULT_TABLE: dict[str, tuple[str, ...]] = {
    "ignore-unicast-notify": ("C-01",),
    "query-on-any-notify": ("C-02a", "C-02b", "C-03"),
    "no-hardware-version": ("C-04",),
    "accept-same-version": ("C-05",),
    "assume-full-blocks": ("C-06",),
    "ignore-offset": ("C-07",),
    "ignore-wait-for-data": ("C-08a",),
    "ignore-min-block-period": ("C-08b",),
    "continue-after-abort": ("C-09",),
    "ignore-no-image-default-response": ("C-10",),
    "no-resend": ("C-11",),
    "skip-verification": ("C-12a", "C-12b"),
    "no-upgrade-end-on-invalid": ("C-12a", "C-12b"),
    "upgrade-end-running-version": ("C-13",),
    "activate-while-waiting": ("C-14",),
    "hcalcs-activate-while-waiting": ("C-14", "C-23a"),
    "ignore-upgrade-time": ("C-15a", "C-15b"),
    "accept-foreign-upgrade-end": ("C-16",),
    "ignore-activation-policy": ("C-17",),
    "ignore-timeout-policy": ("C-18",),
    "restart-from-zero": ("C-20",),
    "keep-image-type": ("C-21",),
    "activation-fails": ("C-22a",),
    "no-activation-alert": ("C-22b",),
    "hcalcs-activation-fails": ("C-23b",),
    "skip-hash-check": ("C-23c",),
    "activate-without-image": ("C-23d",),
    "activate-future-dated-now": ("C-23e",),
    "no-page-fallback": ("C-PAGE",),
    "zcl-wrong-tsn": ("Z-01",),
    "zcl-wrong-direction": ("Z-02",),
    "zcl-default-response-when-disabled": ("Z-03",),
    "zcl-silent-on-unsupported": ("Z-04", "Z-05"),
    "zcl-manufacturer-flag": ("Z-05",),
    "join-with-foreign-key": ("SE-01",),
    "ota-without-aps-encryption": ("SE-02",),
    "ke-no-terminate": ("SE-03", "SE-04", "SE-05"),
    "ke-terminate-bad-message": ("SE-03", "SE-05"),
    "accept-unencrypted-ota": ("SE-06",),
}

# Checks a bundled profile has no rule for, and why not.
NOT_APPLICABLE = {
    "ppmid": {"C-17", "C-PAGE", "C-23a", "C-23b", "C-23c", "C-23d", "C-23e"},
    "hcalcs": {"C-15a", "C-15b", "C-PAGE", "C-22a", "C-22b"},  # GB: out-of-band activation (policy 1)
}


def verdicts(report: Report) -> dict[str, Verdict]:
    return {r.check.id: r.verdict for r in report.results}


# The tests that read the two full runs below share one worker under pytest-xdist, so each run is made once.
SHARES_REPORTS = pytest.mark.xdist_group("bundled_device_reports")


@pytest.fixture(scope="module")
def ppmid_report() -> Report:
    return run_device_checks(DeviceTarget(profile=load_device(bundled("ppmid"))))


@pytest.fixture(scope="module")
def hcalcs_report() -> Report:
    return run_device_checks(DeviceTarget(profile=load_device(bundled("hcalcs"))))


def test_every_check_has_a_scenario_and_a_failing_fault_profile():
    assert set(RULES) == set(CHECKS) and {rule.play for rule in RULES.values()} == set(PLAYS)
    covered = {check for checks in FAULT_TABLE.values() for check in checks}
    assert covered == set(CHECKS)
    assert {p.stem for p in FAULTS.glob("*.toml")} == set(FAULT_TABLE)


@pytest.mark.parametrize("name", sorted(FAULT_TABLE))
def test_fault_profile_says_which_checks_it_fails(name):
    """The comment at the top of each fault profile is what an operator reads; it must match the table."""
    comment = " ".join(line[2:] for line in (FAULTS / f"{name}.toml").read_text().splitlines() if line.startswith("# "))
    named = re.search(r"fails ((?:(?:[CZ]|SE)-[0-9A-Za-z]+(?:, )?)+)", comment)
    assert named is not None
    assert tuple(parse_ids(named.group(1))) == FAULT_TABLE[name]


@SHARES_REPORTS
@pytest.mark.parametrize(("kind", "fixture"), [("ppmid", "ppmid_report"), ("hcalcs", "hcalcs_report")])
def test_bundled_profile_passes_every_applicable_check(kind, fixture, request):
    report: Report = request.getfixturevalue(fixture)
    got = verdicts(report)
    assert list(got) == list(CHECKS)
    assert {c for c, v in got.items() if v == Verdict.NOT_APPLICABLE} == NOT_APPLICABLE[kind]
    assert {c: v for c, v in got.items() if v not in (Verdict.PASS, Verdict.NOT_APPLICABLE)} == {}
    assert exit_code(report) == 0 and report.passed
    for result in report.results:
        assert result.reason
        if result.verdict == Verdict.PASS:
            assert result.evidence, result.check.id  # every pass cites the frames that decided it


@SHARES_REPORTS
def test_not_applicable_says_why(ppmid_report, hcalcs_report):
    reasons = {r.check.id: r.reason for r in ppmid_report.results}
    assert "applies to HCALCS only" in reasons["C-23a"]
    assert "UpgradeActivationPolicy is 0" in reasons["C-17"]
    assert "Image Block Requests only" in reasons["C-PAGE"]
    assert "applies to PPMID only" in {r.check.id: r.reason for r in hcalcs_report.results}["C-22b"]


@pytest.mark.parametrize("name", sorted(FAULT_TABLE))
def test_fault_profile_fails_its_checks(name):
    profile = load_device(FAULTS / f"{name}.toml")
    report = run_device_checks(DeviceTarget(profile=profile), FAULT_TABLE[name])
    assert verdicts(report) == dict.fromkeys(FAULT_TABLE[name], Verdict.FAIL), [r.reason for r in report.results]
    musts = [r for r in report.results if r.check.level == Level.MUST]
    assert exit_code(report) == (1 if musts else 0)


@pytest.mark.parametrize(
    ("changes", "checks"),
    [
        ({"upgrade_activation_policy": 1}, ("C-17", "C-14")),
        ({"upgrade_timeout_policy": 1}, ("C-18",)),
        ({"page_requests": True}, ("C-PAGE", "C-06", "C-07", "C-13")),
        ({"block_period_unit": "s"}, ("C-08b",)),
    ],
)
def test_conforming_variants_pass_the_checks_the_bundled_profiles_do_not_reach(changes, checks):
    """A device with out-of-band activation, UpgradeTimeoutPolicy 1, page requests or a seconds-unit
    MinimumBlockPeriod is judged by the same checks and passes them."""
    profile: DeviceProfile = load_device(bundled("ppmid")).replace(**changes)
    report = run_device_checks(DeviceTarget(profile=profile), checks)
    assert verdicts(report) == dict.fromkeys(checks, Verdict.PASS), [r.reason for r in report.results]


def test_out_of_band_activation_makes_c18_not_applicable():
    profile = load_device(bundled("ppmid")).replace(upgrade_activation_policy=1)
    [result] = run_device_checks(DeviceTarget(profile=profile), ["C-18"]).results
    assert result.verdict == Verdict.NOT_APPLICABLE and "manufacturer specific" in result.reason


def test_sleepy_device_that_hears_no_broadcast_is_inconclusive_not_failed():
    profile = load_device(bundled("ppmid")).replace(sleepy=True)
    [result] = run_device_checks(DeviceTarget(profile=profile), ["C-02a"]).results
    assert result.verdict == Verdict.INCONCLUSIVE
    assert "ignored even a matching broadcast" in result.reason


@SHARES_REPORTS
def test_evidence_and_timeline_are_the_recorded_frames(ppmid_report):
    results = {r.check.id: r for r in ppmid_report.results}
    wait = results["C-08a"]
    [wfd] = [f for f in wait.evidence if f.name == "image_block_response"]
    decoded = frames.decode(bytes.fromhex(wfd.hex))
    assert decoded.command.status == foundation.Status.WAIT_FOR_DATA
    assert decoded.command.request_time - decoded.command.current_time == 30
    [follow] = [f for f in wait.evidence if f.name == "image_block"]
    assert follow.at - wfd.at >= 30 - 1 and follow.direction == "from DUT"
    assert any("wait 30 s" in p.mark for p in wait.timeline)

    abort = results["C-09"]
    assert any(p.mark.startswith("abort") for p in abort.timeline)
    offsets = [p.offset for p in abort.timeline if not p.mark]
    assert offsets == sorted(offsets) and offsets[0] == 0

    block_loop = results["C-06"].timeline
    steps = {b.offset - a.offset for a, b in itertools.pairwise(block_loop) if not b.mark}
    assert steps == {40}  # the test CHF capped blocks at 40 bytes and the DUT followed
    assert results["C-22b"].reason.endswith("(device event standing in for the GBCS CS09 alert)")


@SHARES_REPORTS
def test_references_and_reasons_cite_public_clauses(ppmid_report, hcalcs_report):
    """Users do not have the project's private digests: every reference and every reason cites a public clause."""
    for check in CHECKS.values():
        assert check.reference.split()[0] in ("ZCL", "OTA", "SE", "GBCS", "SEC", "SECMP0007;"), check.reference
    for result in [*ppmid_report.results, *hcalcs_report.results]:
        assert "SPEC.md" not in result.reason and "UNCONFIRMED" not in result.reason, result.reason


def with_hex(frame: FrameRecord, at: int, byte: int) -> FrameRecord:
    """`frame` with byte `at` of its ZCL bytes replaced (its decoded fields left as they were)."""
    data = bytearray.fromhex(frame.hex)
    data[at] = byte
    return dataclasses.replace(frame, hex=data.hex())


def test_device_evidence_is_judged_without_the_device():
    """Play once, judge many times: the ZCL exchange and a block loop, recorded from the bundled PPMID, pass their
    rules; the same evidence altered to break a rule fails it, with no device running."""
    target = DeviceTarget(profile=load_device(bundled("ppmid")))
    exchange = play_check(target, "Z-01")
    assert all(judge_check(i, exchange).verdict == Verdict.PASS for i in ("Z-01", "Z-02", "Z-03", "Z-04", "Z-05"))
    assert exchange.read is not None
    wrong_tsn = dataclasses.replace(exchange, read=with_hex(exchange.read, 1, 0x00))
    judged = judge_check("Z-01", wrong_tsn)
    assert judged.verdict == Verdict.FAIL and "using TSN 0x00" in judged.reason
    server_bit = [with_hex(f, 0, int(f.hex[:2], 16) | 0x08) for f in exchange.own]
    assert judge_check("Z-02", dataclasses.replace(exchange, own=server_bit)).verdict == Verdict.FAIL

    transfer = play_check(target, "C-06")
    assert judge_check("C-06", transfer).verdict == Verdict.PASS
    requests = [i for i, f in enumerate(transfer.frames) if f.name == "image_block"]
    frames_ = list(transfer.frames)
    second = frames_[requests[1]]
    frames_[requests[1]] = dataclasses.replace(second, fields={**second.fields, "file_offset": 0})
    judged = judge_check("C-06", dataclasses.replace(transfer, frames=frames_))
    assert judged.verdict == Verdict.FAIL and "requested offset 0 when the data received ended at 40" in judged.reason


def test_unknown_check_ids_are_rejected_with_the_valid_ones():
    with pytest.raises(UnknownCheckError) as error:
        select(["C-01", "C-99"], CHECKS)
    message = str(error.value)
    assert "C-99" in message and "C-01, C-02a" in message and "\n" not in message
    assert [c.id for c in select(["c-page", "C-01"], CHECKS)] == ["C-01", "C-PAGE"]


def test_emulated_device_behind_a_virtual_ncp_through_bellows():
    """`radio="ezsp"`: the test CHF is bellows talking ASH/EZSP to a virtual NCP in process, on virtual time."""
    profile = load_device(bundled("ppmid"))
    report = run_device_checks(DeviceTarget(profile=profile, radio="ezsp"), ["C-01", "C-13", "C-22a"])
    assert verdicts(report) == dict.fromkeys(["C-01", "C-13", "C-22a"], Verdict.PASS), [
        r.reason for r in report.results
    ]
    assert "bellows and a virtual EZSP NCP, virtual time" in report.description


@pytest.mark.virtual_time
async def test_device_named_by_eui64_on_a_coordinator_network():
    """The real-device path: a coordinator (a virtual NCP here) whose network an emulated device joins once the
    bench opens joining; the bench knows it only by its EUI-64, so the GB checks that need a GBCS message are
    inconclusive and say why."""
    profile = load_device(bundled("ppmid"))
    air = Air()
    ncp = VirtualNcp(air)
    await ncp.start()
    assert ncp.url is not None
    devices: list[EmulatedDevice] = []

    async def join() -> None:
        await ncp.wait_for_joining()
        device = EmulatedDevice(profile, air, Clock(), nwk=0x2345)
        await device.start()
        devices.append(device)

    joining = asyncio.get_running_loop().create_task(join())
    notices: list[str] = []
    target = DeviceTarget(port=ncp.url, ieee=profile.ieee, kind="ppmid", join_timeout=30)
    try:
        report = await check_device(target, select(["C-04", "C-13", "C-22b"], CHECKS), notice=notices.append)
    finally:
        joining.cancel()
        for device in devices:
            await device.stop()
        await ncp.stop()
    got = {r.check.id: (r.verdict, r.reason) for r in report.results}
    assert got["C-04"][0] == Verdict.PASS and got["C-13"][0] == Verdict.PASS
    assert got["C-22b"][0] == Verdict.INCONCLUSIVE and "GBCS" in got["C-22b"][1]
    assert any("Joining is open for 30 s" in n for n in notices)
    assert report.notes and "in sequence" in report.notes[0]
