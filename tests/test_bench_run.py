"""The device bench's run loop: the DUT's identity read over the air, check n of N with expected durations, and
a run stopped by a real SIGINT or SIGTERM returning the report of what was decided (then resumed)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from emulator.conformance.device.bench import DeviceTarget, run_device_checks
from emulator.conformance.device.catalogue import CHECKS
from emulator.conformance.device.durations import EXPECTED_S, expected_seconds
from emulator.conformance.device.identity import parse_response, read_request
from emulator.conformance.running import INTERRUPTED_EXIT, Step, exit_code
from emulator.conformance.verdict import Verdict
from emulator.profiles import bundled, load_device

ROOT = Path(__file__).resolve().parent.parent


def hcalcs() -> DeviceTarget:
    return DeviceTarget(profile=load_device(bundled("hcalcs")))


def test_identity_is_read_from_the_device_over_the_air() -> None:
    profile = load_device(bundled("hcalcs"))
    report = run_device_checks(DeviceTarget(profile=profile), ["C-23d"])
    assert report.dut is not None
    assert report.dut.ieee == str(profile.ieee)
    assert report.dut.manufacturer_name == profile.manufacturer_name
    assert report.dut.model_identifier == profile.effective_model
    assert report.dut.current_file_version == f"0x{profile.file_version:08X}"
    assert report.dut.manufacturer_id == f"0x{profile.manufacturer_code:04X}"
    assert report.dut.hw_version == str(profile.hardware_version >> 8)
    assert report.dut.sw_build_id == f"{profile.file_version:08X}"


def test_read_attributes_frames_are_the_zcl_general_commands() -> None:
    # ZCL §2.5.1: frame control (global, direction, no default response), TSN, command 0x00, attribute IDs LE.
    assert read_request(7, [0x0004, 0x4000], to_client=False) == bytes.fromhex("1007000400" + "0040")
    assert read_request(8, [0x0002], to_client=True) == bytes.fromhex("1808000200")
    # A Read Attributes Response: one string read, one unsupported (status 0x86) which is left out.
    response = bytes.fromhex("1807010400004204416362650040" + "86")
    assert parse_response(response, 7) == {4: "Acbe"}
    assert parse_response(response, 8) is None  # another TSN
    assert parse_response(bytes.fromhex("0107000400"), 7) is None  # a cluster-specific frame


def test_progress_reports_check_n_of_n_with_its_expected_duration() -> None:
    steps: list[Step] = []
    run_device_checks(hcalcs(), ["C-01", "C-22a", "C-23d"], progress=steps.append)
    assert [(s.index, s.total, s.check.id, s.result is None) for s in steps] == [
        (1, 3, "C-01", True),
        (1, 3, "C-01", False),
        (2, 3, "C-22a", True),
        (2, 3, "C-22a", False),
        (3, 3, "C-23d", True),
        (3, 3, "C-23d", False),
    ]
    assert [s.expected for s in steps[::2]] == [EXPECTED_S["C-01"]["hcalcs"], 0, EXPECTED_S["C-23d"]["hcalcs"]]


def test_every_device_check_has_an_expected_duration_per_kind() -> None:
    assert set(EXPECTED_S) == set(CHECKS)
    assert all(set(figures) == {"ppmid", "hcalcs"} for figures in EXPECTED_S.values())
    # The 65 min holds and the Upgrade End timeout policy dominate a run.
    assert expected_seconds("C-14", "ppmid") >= 65 * 60 and expected_seconds("C-18") >= 3600
    assert expected_seconds("C-23a", "ppmid") == 0 and expected_seconds("X-99") is None


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_run_and_keeps_the_checks_decided(signum: signal.Signals) -> None:
    """The signal is raised for real in this process while the third check starts; asyncio (SIGINT) or the
    bench's handler (SIGTERM) cancels the run."""

    def progress(step: Step) -> None:
        if step.index == 3 and step.result is None:
            signal.raise_signal(signum)

    report = run_device_checks(hcalcs(), ["C-01", "C-04", "C-13", "C-23d"], progress=progress, signals=True)
    assert report.interrupted
    assert [(r.check.id, r.verdict) for r in report.results] == [("C-01", Verdict.PASS), ("C-04", Verdict.PASS)]
    assert exit_code(report) == INTERRUPTED_EXIT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_resumed_run_keeps_the_decided_checks_and_runs_the_rest() -> None:
    first = run_device_checks(hcalcs(), ["C-01", "C-04"])
    ran: list[str] = []
    report = run_device_checks(
        hcalcs(),
        ["C-01", "C-04", "C-13", "C-23d"],
        done=first.results[:1],
        progress=lambda step: ran.append(step.check.id) if step.result is None else None,
    )
    assert ran == ["C-04", "C-13", "C-23d"]
    assert [r.check.id for r in report.results] == ["C-01", "C-04", "C-13", "C-23d"]
    assert report.results[0] is first.results[0] and not report.interrupted


@pytest.mark.realtime
def test_on_real_time_progress_says_what_the_check_waits_for() -> None:
    """An emulated PPMID through bellows and a virtual NCP on real time, as for a device behind a dongle."""
    steps: list[Step] = []
    report = run_device_checks(
        DeviceTarget(profile=load_device(bundled("ppmid")), radio="ezsp", real_time=True),
        ["C-04"],
        progress=steps.append,
    )
    assert [r.verdict for r in report.results] == [Verdict.PASS]
    waits = [(s.waiting, s.wait) for s in steps if s.waiting is not None]
    assert waits and all(s.check.id == "C-04" and s.result is None for s in steps if s.waiting)
    # C-04 waits for the DUT's Query Next Image Request (its own, else one a unicast Image Notify draws, up to
    # 30 s), then for the CHF's answer.
    assert "query_next_image from the DUT" in {what for what, _ in waits}
    assert "query_next_image_response from the CHF" in {what for what, _ in waits}
    assert all(0 < seconds <= 30.0 for what, seconds in waits if what == "query_next_image from the DUT")
    # Virtual-time runs are over in moments: no waits are reported.
    virtual: list[Step] = []
    run_device_checks(hcalcs(), ["C-01"], progress=virtual.append)
    assert [s.waiting for s in virtual] == [None, None]
