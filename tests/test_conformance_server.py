"""Server-side conformance checks S-01…S-18 (S-19…S-21, Smart Energy security: test_conformance_server_security.py):
scripted probes against our CHF and against zigpy's own OTA server, on virtual time. Every check is shown to fail
somewhere — on zigpy, on a deliberately misconfigured CHF, or on recorded frames altered byte by byte — so a pass
means something."""

from __future__ import annotations

import dataclasses
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import zigpy.types as t

from emulator.chf.events import TransferOutcome
from emulator.conformance.check import Level
from emulator.conformance.running import INTERRUPTED_EXIT, Step, exit_code
from emulator.conformance.selection import UnknownCheckError
from emulator.conformance.server.bench import judge_check, play_check, run_server_checks, run_target
from emulator.conformance.server.catalogue import CHECKS
from emulator.conformance.server.probe import decode_record, server_frame
from emulator.conformance.server.targets import OursTarget
from emulator.conformance.server.transcript import Transcript
from emulator.conformance.verdict import FrameRecord, Verdict
from emulator.errors import InputError
from emulator.gb.codes import TransferResponse
from emulator.ota import frames
from emulator.ota.blocks import encode_block_response
from emulator.ota.frames import Status
from emulator.profiles import ChfProfile

# One worker runs the whole module under pytest-xdist, so its module-scoped fixtures are built once, not per worker.
pytestmark = pytest.mark.xdist_group("test_conformance_server")

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (apt: tshark)")

PROBE_NWK = 0x2001


@pytest.fixture(scope="module")
def ours():
    return run_server_checks("ours", None)


@pytest.fixture(scope="module")
def zigpy_report():
    return run_server_checks("zigpy", None)


def verdicts(report) -> dict[str, Verdict]:
    return {r.check.id: r.verdict for r in report.results}


def result(report, check_id: str):
    return next(r for r in report.results if r.check.id == check_id)


def from_server(data: bytes, *, at: float = 1.0, dst: int = PROBE_NWK) -> FrameRecord:
    """A frame as the probe would have recorded it from the server (NWK 0x0000)."""
    packet = t.ZigbeePacket(
        src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=0x0000),
        src_ep=1,
        dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=dst),
        dst_ep=1 if dst < 0xFFF8 else 0xFF,
        tsn=data[1],
        profile_id=0x0109,
        cluster_id=frames.CLUSTER_ID,
        data=t.SerializableBytes(data),
    )
    return server_frame(packet, at)


def with_answers(transcript: Transcript, index: int, answers: list) -> Transcript:
    exchanges = list(transcript.exchanges)
    exchanges[index] = dataclasses.replace(exchanges[index], answers=answers)
    return dataclasses.replace(transcript, exchanges=exchanges)


# -- the catalogue and bad input ------------------------------------------------------------------------------


def test_catalogue_covers_s01_to_s21_each_with_level_reference_and_scenario():
    numbered = {f"S-{n:02d}" for n in range(1, 22)}
    assert numbered <= CHECKS.keys()
    assert {c.split(".")[0] for c in CHECKS} == numbered
    for check in CHECKS.values():
        assert check.reference.startswith(("ZCL r7 §", "DUIS ", "GBCS ", "SE 07-5356 §")) and check.scenario
        assert check.title
        assert "SPEC.md" not in check.reference and "UNCONFIRMED" not in check.scenario
        assert check.level in (Level.MUST, Level.SHOULD)
    assert CHECKS["S-18"].applies_to == ("ours",)
    assert all(CHECKS[c].level == Level.SHOULD for c in ("S-01.FC", "S-03", "S-08.FORM", "S-13.DR", "S-17.TSN"))


def test_unknown_check_ids_are_one_line_input_errors_naming_the_valid_ones():
    with pytest.raises(UnknownCheckError) as caught:
        run_server_checks("ours", ["S-01", "S-99", "X"])
    message = str(caught.value)
    assert isinstance(caught.value, InputError)
    assert "\n" not in message
    assert "S-99" in message and "X" in message
    assert all(check_id in message for check_id in CHECKS)


def test_unknown_target_is_an_input_error():
    with pytest.raises(InputError, match="expected one of ours, zigpy"):
        run_server_checks("silabs", None)


def test_check_ids_are_accepted_in_any_case_and_run_in_catalogue_order():
    report = run_server_checks("ours", ["s-07", "S-01"])
    assert [r.check.id for r in report.results] == ["S-01", "S-07"]


# -- our CHF ------------------------------------------------------------------------------------------------------


def test_our_chf_passes_every_must(ours):
    failures = {r.check.id: r.reason for r in ours.must_failures}
    assert failures == {}
    assert ours.passed
    assert verdicts(ours)["S-18"] == Verdict.PASS


def test_our_chf_evidence_is_timed_protocol_frames_with_the_server_as_dut(ours):
    download = result(ours, "S-06")
    assert download.evidence and download.duration > 0
    times = [f.at for f in download.evidence]
    assert times == sorted(times)
    request, answer = download.evidence[0], download.evidence[1]
    assert (request.src, request.direction) == (PROBE_NWK, "to DUT")
    assert (answer.src, answer.direction) == (0x0000, "from DUT")
    assert download.timeline[-1].offset == 360  # the GB image: 60-byte header + 300-byte manufacturer image


def test_our_chf_rate_limits_as_configured(ours):
    rate = result(ours, "S-09")
    waits = [decode_record(f).command for f in rate.evidence if f.name == "image_block_response"]
    waits = [w for w in waits if w.status == Status.WAIT_FOR_DATA]
    assert [w.request_time - w.current_time for w in waits] == [30, 0]
    assert {w.minimum_block_period for w in waits} == {250}
    assert any(p.mark.startswith("wait") for p in rate.timeline)


def test_a_signal_stops_a_server_run_and_keeps_the_checks_decided():
    """The same runner as the device bench: SIGINT while the third check starts leaves the two decided."""

    def progress(step: Step) -> None:
        if step.index == 3 and step.result is None:
            signal.raise_signal(signal.SIGINT)

    report = run_server_checks("ours", ["S-01", "S-07", "S-12"], progress=progress, signals=True)
    assert report.interrupted and exit_code(report) == INTERRUPTED_EXIT
    assert [(r.check.id, r.verdict) for r in report.results] == [("S-01", Verdict.PASS), ("S-07", Verdict.PASS)]


def test_frames_are_reproducible_between_runs():
    first = result(run_server_checks("ours", ["S-12"]), "S-12")
    second = result(run_server_checks("ours", ["S-12"]), "S-12")
    assert [(f.at, f.hex) for f in first.evidence] == [(f.at, f.hex) for f in second.evidence]


# -- zigpy's OTA server -------------------------------------------------------------------------------------------


def test_zigpy_deviations_are_reported(zigpy_report):
    got = verdicts(zigpy_report)
    assert {c for c, v in got.items() if v == Verdict.FAIL} == {
        "S-02", "S-03", "S-07", "S-08.FORM", "S-13", "S-13.DR", "S-15", "S-16",
    }  # fmt: skip
    not_applicable = {"S-09", "S-14", "S-18", "S-19", "S-20", "S-21"}  # S-19…S-21: no Key Establishment server
    assert {c for c, v in got.items() if v == Verdict.NOT_APPLICABLE} == not_applicable
    assert not zigpy_report.passed
    # A 50-byte block for MaximumDataSize 64 is within the rule: not a deviation.
    assert got["S-06"] == Verdict.PASS and "at most 50 B" in result(zigpy_report, "S-06").reason
    notes = "\n".join(zigpy_report.notes)
    for check_id in ("S-07", "S-13", "S-15", "S-16"):
        assert f"{check_id} (MUST)" in notes
    assert "never sends WAIT_FOR_DATA" in notes and "S-06" not in notes


def test_zigpy_s13_evidence_is_its_upgrade_end_response_to_each_failed_upgrade_end(zigpy_report):
    s13 = result(zigpy_report, "S-13")
    assert s13.verdict == Verdict.FAIL
    requests = [f for f in s13.evidence if f.name == "upgrade_end"]
    responses = [f for f in s13.evidence if f.name == "upgrade_end_response"]
    assert [decode_record(f).command.status for f in requests] == [
        Status.ABORT,
        Status.INVALID_IMAGE,
        Status.REQUIRE_MORE_IMAGE,
    ]
    assert len(responses) == 3
    for request, response in zip(requests, responses, strict=True):
        data = bytes.fromhex(response.hex)
        assert (response.src, response.direction) == (0x0000, "from DUT")
        assert data[:3] == bytes([0x19, bytes.fromhex(request.hex)[1], 0x07])
        assert data[11:] == bytes(8)  # CurrentTime 0, UpgradeTime 0: "upgrade now"
        assert response.at > request.at


def test_zigpy_serves_a_missing_file_from_its_own_image(zigpy_report):
    s07 = result(zigpy_report, "S-07")
    answer = decode_record(next(f for f in s07.evidence if f.src == 0x0000)).command
    assert (answer.status, answer.file_offset, answer.manufacturer_code) == (Status.SUCCESS, 100, 0x121D)


# -- each check can fail: a misconfigured CHF (declared one way, served another) ------------------------------------


@pytest.mark.parametrize(
    ("check_id", "served", "why"),
    [
        ("S-01", {"query_policy": "reinstall"}, "status NO_IMAGE_AVAILABLE"),
        ("S-03", {"require_hardware_version": True}, "refuses (0x98)"),
        ("S-04", {"query_policy": "any"}, "expected NO_IMAGE_AVAILABLE"),
        ("S-09", {"minimum_block_period": 0}, "expected WAIT_FOR_DATA carrying 250"),
        ("S-10", {"max_concurrent_downloads": 1}, "1 download(s) in progress, limit 2"),
        ("S-11", {"page_requests": False}, "page requests are declared supported"),
        ("S-12", {"ppmid_activation": "wait"}, "declared activation 'now'"),
        ("S-15", {"query_specific_file": False}, "UNSUP_CLUSTER_COMMAND"),
    ],
)
def test_misconfigured_chf_fails_the_check(check_id, served, why):
    report = run_target(OursTarget(served=served), [check_id])
    (checked,) = report.results
    assert checked.verdict == Verdict.FAIL
    assert why in checked.reason
    assert checked.evidence


@pytest.mark.parametrize(("check_id", "setting"), [("S-11", "page_requests"), ("S-15", "query_specific_file")])
def test_unsupported_and_declared_so_is_refused_with_0x81(check_id, setting):
    report = run_target(OursTarget(settings={setting: False}), [check_id])
    (checked,) = report.results
    assert checked.verdict == Verdict.PASS and "0x81" in checked.reason
    refusals = [bytes.fromhex(f.hex) for f in checked.evidence if f.name == "Default_Response"]
    assert [(data[0], data[2], data[4]) for data in refusals] == [(0x18, 0x0B, 0x81)]


def test_chf_without_rate_limiting_makes_s09_not_applicable():
    report = run_target(OursTarget(settings={"wait_for_data": 0, "minimum_block_period": 0}), ["S-09"])
    (checked,) = report.results
    assert checked.verdict == Verdict.NOT_APPLICABLE
    assert len(report.notes) == 1 and report.notes[0].startswith("S-09 (not applicable): never sends WAIT_FOR_DATA")


# -- each check can fail: recorded frames altered ----------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded():
    """Transcripts of our CHF's scenarios, recorded once and altered per test."""
    target = OursTarget()
    return {check_id: play_check(target, check_id) for check_id in ("S-01", "S-05", "S-06", "S-08", "S-14", "S-17")}


def test_s01_judges_the_recorded_bytes(recorded):
    transcript = recorded["S-01"]
    assert judge_check("S-01", transcript).verdict == Verdict.PASS
    answer = transcript.exchanges[0].answers[0]
    data = bytearray(bytes.fromhex(answer.hex))
    data[1] ^= 0xFF  # TSN
    assert "does not echo" in judge_check("S-01", with_answers(transcript, 0, [from_server(bytes(data))])).reason
    assert "2 answers" in judge_check("S-01", with_answers(transcript, 0, [answer, answer])).reason
    data = bytes.fromhex(answer.hex)
    fc_09 = from_server(bytes([0x09]) + data[1:])
    assert judge_check("S-01.FC", transcript).verdict == Verdict.PASS
    assert judge_check("S-01.FC", with_answers(transcript, 0, [fc_09])).verdict == Verdict.FAIL


def test_s05_fails_when_a_stranger_gets_data(recorded):
    transcript = recorded["S-05"]
    assert judge_check("S-05", transcript).verdict == Verdict.PASS
    request = decode_record(transcript.exchanges[1].request)
    block = encode_block_response(request.tsn, 0x121D, 0x0084, 2, 0, bytes(20))
    judged = judge_check("S-05", with_answers(transcript, 1, [from_server(block)]))
    assert judged.verdict == Verdict.FAIL and "outside the DeviceIDList" in judged.reason


def test_s06_fails_on_a_wrong_byte_or_an_oversized_block(recorded):
    transcript = recorded["S-06"]
    assert judge_check("S-06", transcript).verdict == Verdict.PASS
    small = transcript.exchanges[1]
    command = decode_record(small.answers[0]).command
    wrong = bytearray(command.image_data)
    wrong[0] ^= 0x01
    tsn = bytes.fromhex(small.request.hex)[1]
    altered = encode_block_response(tsn, 0x121D, 0x0084, 2, 0, bytes(wrong))
    assert "data differs" in judge_check("S-06", with_answers(transcript, 1, [from_server(altered)])).reason
    oversized = encode_block_response(tsn, 0x121D, 0x0084, 2, 0, transcript.offer.data[:18])
    assert (
        "18 bytes for MaximumDataSize 17"
        in judge_check("S-06", with_answers(transcript, 1, [from_server(oversized)])).reason
    )


def test_s08_fails_when_the_server_stops_answering(recorded):
    transcript = recorded["S-08"]
    assert judge_check("S-08", transcript).verdict == Verdict.PASS
    assert "answers nothing after" in judge_check("S-08", with_answers(transcript, 2, [])).reason
    past = transcript.exchanges[1]
    tsn = bytes.fromhex(past.request.hex)[1]
    data = encode_block_response(tsn, 0x121D, 0x0084, 2, 360, b"")
    assert judge_check("S-08", with_answers(transcript, 1, [from_server(data)])).verdict == Verdict.FAIL


def test_s14_fails_on_an_upgrade_time_before_the_current_time(recorded):
    transcript = recorded["S-14"]
    assert judge_check("S-14", transcript).verdict == Verdict.PASS
    bad = frames.encode(
        "upgrade_end_response",
        tsn=9,
        manufacturer_code=0x121D,
        image_type=0x0084,
        file_version=2,
        current_time=1000,
        upgrade_time=999,
    )
    judged = judge_check("S-14", with_answers(transcript, 0, [from_server(bad)]))
    assert judged.verdict == Verdict.FAIL and "before CurrentTime" in judged.reason


def test_s17_fails_on_a_bad_jitter_or_a_broadcast_asking_for_default_responses(recorded):
    transcript = recorded["S-17"]
    assert judge_check("S-17", transcript).verdict == Verdict.PASS
    zero_jitter = frames.encode("image_notify", tsn=0x61, payload_type=0, query_jitter=0)
    judged = judge_check("S-17", dataclasses.replace(transcript, notifies=[from_server(zero_jitter)]))
    assert "QueryJitter 0" in judged.reason
    chatty = frames.encode("image_notify", tsn=0x62, disable_default_response=False, payload_type=0, query_jitter=50)
    judged = judge_check("S-17", dataclasses.replace(transcript, notifies=[from_server(chatty, dst=0xFFFF)]))
    assert "without disable-default-response" in judged.reason


def test_s17_tsn_fresh_on_both_targets_and_judged_from_the_frames(ours, zigpy_report, recorded):
    """Both servers give each Image Notify a new TSN (ours takes unicast TSNs from zigpy's per-device counter, so
    they never repeat the one zigpy's interview notify used); a repeated TSN fails the check."""
    assert verdicts(zigpy_report)["S-17.TSN"] == Verdict.PASS
    assert verdicts(ours)["S-17.TSN"] == Verdict.PASS
    transcript = recorded["S-17"]
    assert judge_check("S-17.TSN", transcript).verdict == Verdict.PASS
    repeated = dataclasses.replace(transcript, notifies=[*transcript.notifies, transcript.notifies[0]])
    judgement = judge_check("S-17.TSN", repeated)
    assert judgement.verdict == Verdict.FAIL and "reused" in judgement.reason


def test_s18_fails_on_a_repeated_or_missing_outcome():
    transcript = play_check(OursTarget(), "S-18")
    assert judge_check("S-18", transcript).verdict == Verdict.PASS
    assert len(transcript.outcomes) == 4
    repeated = dataclasses.replace(transcript, outcomes=[*transcript.outcomes, transcript.outcomes[0]])
    assert "expected 0 SUCCESS" in judge_check("S-18", repeated).reason
    missing = dataclasses.replace(transcript, outcomes=transcript.outcomes[1:])
    assert judge_check("S-18", missing).verdict == Verdict.FAIL
    stranger = TransferOutcome(
        t.EUI64.convert("00:db:12:34:56:78:91:ff"), 1.0, 0x121D, 0x0084, 2, TransferResponse.IMAGE_DISCARDED, ""
    )
    extra = dataclasses.replace(transcript, outcomes=[*transcript.outcomes, stranger])
    assert "no target" in judge_check("S-18", extra).reason


def test_silence_fails_the_rule_and_leaves_the_detail_inconclusive(recorded):
    """No answer fails S-01; S-01.FC, which judges that answer's frame control, has nothing to judge."""
    silent = with_answers(recorded["S-01"], 0, [])
    assert "no answer" in judge_check("S-01", silent).reason
    assert judge_check("S-01.FC", silent).verdict == Verdict.INCONCLUSIVE


# -- capture --------------------------------------------------------------------------------------------------------


@needs_tshark
def test_capture_shows_zigpys_upgrade_end_responses_on_the_air(tmp_path: Path):
    pcap = tmp_path / "s13.pcap"
    report = run_server_checks("zigpy", ["S-13"], pcap=pcap)
    assert report.pcap == str(pcap) and pcap.is_file()
    key = bytes.fromhex(ChfProfile().network_key.replace(":", ""))
    done = subprocess.run(
        [
            "tshark", "-r", str(pcap), "-o", f'uat:zigbee_pc_keys:"{key.hex(":")}","Normal","net"',
            "-Y", "zbee_zcl_general.ota.cmd.srv_rx.id == 0x06 || zbee_zcl_general.ota.cmd.srv_tx.id == 0x07",
            "-T", "fields", "-e", "zbee_zcl_general.ota.cmd.srv_rx.id", "-e", "zbee_zcl_general.ota.cmd.srv_tx.id",
        ],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert rows == [["0x06", ""], ["", "0x07"]] * 3


def test_capture_into_a_missing_folder_is_an_input_error_and_writes_nothing(tmp_path: Path):
    with pytest.raises(InputError) as caught:
        run_server_checks("ours", ["S-01"], pcap=tmp_path / "missing" / "run.pcap")
    assert "\n" not in str(caught.value) and "missing" in str(caught.value)
    assert list(tmp_path.iterdir()) == []
