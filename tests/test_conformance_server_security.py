"""Server checks S-19…S-21, Smart Energy security of the OTA server: probes join with their install-code key, run
CBKE with the server and present bad certificates, on virtual time. Our CHF passes; a CHF broken on purpose
(`keys.ServerFault`, or declared with SE security and served without) fails each check with its reason; zigpy's
server, which has no Key Establishment server, gets "not applicable" with what it does instead."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from emulator.conformance.check import Level
from emulator.conformance.server.bench import judge_check, play_check, run_server_checks, run_target
from emulator.conformance.server.catalogue import CHECKS
from emulator.conformance.server.keys import Presented, ServerFault
from emulator.conformance.server.targets import OursTarget
from emulator.conformance.verdict import Verdict
from emulator.ota import frames
from emulator.profiles import ChfProfile
from emulator.security import key_establishment as ke

# One worker runs the whole module under pytest-xdist, so its module-scoped fixtures are built once, not per worker.
pytestmark = pytest.mark.xdist_group("test_conformance_server_security")

SECURITY_CHECKS = ["S-19", "S-20", "S-21"]
NO_KEY_SERVER = "no Key Establishment server: no link key can be established"
PROBE_NWK = 0x2001
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (apt: tshark)")


def results(report) -> dict:
    return {r.check.id: r for r in report.results}


def ke_from_server(frame) -> tuple[int, bytes] | None:
    """(command id, payload) of a Key Establishment command the server sent; None for any other frame."""
    data = bytes.fromhex(frame.hex)
    if frame.cluster_id != ke.CLUSTER_ID or frame.src != 0 or len(data) < 3 or data[0] & 0x0B != 0x09:
        return None
    return data[2], data[3:]


@pytest.fixture(scope="module")
def ours():
    return run_server_checks("ours", SECURITY_CHECKS)


@pytest.fixture(scope="module")
def recorded():
    return {check_id: play_check(OursTarget(), check_id) for check_id in ("S-19", "S-20")}


def test_catalogue_cites_smart_energy_for_each_security_check():
    for check_id, clause in (("S-19", "§5.4.6"), ("S-20", "UNKNOWN_ISSUER 0x01"), ("S-21", "BAD_MESSAGE 0x03")):
        check = CHECKS[check_id]
        assert check.reference.startswith("SE 07-5356 §") and clause in check.reference
        assert check.level == Level.MUST and check.applies_to == ("ours", "zigpy")


def test_our_chf_passes_the_security_checks(ours):
    got = results(ours)
    assert {c: r.verdict for c, r in got.items()} == dict.fromkeys(SECURITY_CHECKS, Verdict.PASS)
    assert ours.notes == []
    # S-20 and S-21: the server's Terminate with the expected status, and the control's Initiate Response.
    for check_id, status in (("S-20", ke.TerminateStatus.UNKNOWN_ISSUER), ("S-21", ke.TerminateStatus.BAD_MESSAGE)):
        commands = [c for c in map(ke_from_server, got[check_id].evidence) if c is not None]
        assert (ke.ServerCommand.TERMINATE_KEY_ESTABLISHMENT, status) in [(cmd, p[0]) for cmd, p in commands]
        assert ke.ServerCommand.INITIATE_KEY_ESTABLISHMENT_RESPONSE in [cmd for cmd, _ in commands]
    # S-19: the clear requests went unanswered, the encrypted ones drew the Query Next Image Response and a block.
    answers = [f.name for f in got["S-19"].evidence if f.src == 0]
    assert answers == ["query_next_image_response", "image_block_response"]
    assert "2 OTA request(s) without APS encryption unanswered" in got["S-19"].reason


@pytest.mark.parametrize(
    ("fault", "check_id", "why"),
    [
        (ServerFault.ACCEPT_CLEAR_OTA, "S-19", "answered query next image response SUCCESS (0x00) to 'query without"),
        (ServerFault.IGNORE_ISSUER, "S-20", "answered Initiate Key Establishment Response to a certificate from a CA"),
        (ServerFault.IGNORE_SUBJECT, "S-21", "answered Initiate Key Establishment Response to a genuine certificate"),
    ],
)
def test_each_security_fault_fails_its_check_and_only_that(fault, check_id, why):
    report = run_target(OursTarget(faults={fault}), SECURITY_CHECKS)
    got = results(report)
    assert got[check_id].verdict == Verdict.FAIL and why in got[check_id].reason
    assert got[check_id].evidence
    assert {c for c, r in got.items() if r.verdict == Verdict.PASS} == set(SECURITY_CHECKS) - {check_id}
    assert [note.split(" ")[0] for note in report.notes] == [check_id]


def test_chf_declaring_se_security_but_served_without_fails_s19():
    report = run_target(OursTarget(served={"security": "none"}), ["S-19"])
    (checked,) = report.results
    assert checked.verdict == Verdict.FAIL
    assert "declares Smart Energy security, but key establishment with a genuine certificate gave no link key" in (
        checked.reason
    )


def test_chf_declaring_no_se_security_makes_the_checks_not_applicable():
    report = run_target(OursTarget(settings={"security": "none"}), SECURITY_CHECKS)
    assert {r.verdict for r in report.results} == {Verdict.NOT_APPLICABLE}
    assert all(r.reason.startswith(NO_KEY_SERVER) for r in report.results)


def test_zigpy_has_no_key_establishment_server_and_answers_clear_ota():
    report = run_server_checks("zigpy", SECURITY_CHECKS)
    got = results(report)
    assert {r.verdict for r in got.values()} == {Verdict.NOT_APPLICABLE}
    assert all(r.reason.startswith(NO_KEY_SERVER) for r in got.values())
    # Nothing came back from its endpoint on the Key Establishment cluster...
    assert not [f for r in got.values() for f in r.evidence if f.src == 0 and f.cluster_id == ke.CLUSTER_ID]
    # ...and it served the clear OTA requests of a device it shares only the network key with.
    served = [f.name for f in got["S-19"].evidence if f.src == 0 and f.cluster_id == frames.CLUSTER_ID]
    assert "query_next_image_response" in served and "image_block_response" in served
    note = next(n for n in report.notes if n.startswith("S-19"))
    assert "answers OTA requests without APS encryption from a device it shares only the network key with" in note


# -- the judges on recorded frames, altered -------------------------------------------------------------------


def test_s19_silent_to_encrypted_requests_too_is_inconclusive(recorded):
    transcript = recorded["S-19"]
    assert judge_check("S-19", transcript).verdict == Verdict.PASS
    keys = transcript.keys
    silent = [
        dataclasses.replace(a, exchange=dataclasses.replace(a.exchange, answers=[])) if a.encrypted else a
        for a in keys.requests
    ]
    judged = judge_check("S-19", dataclasses.replace(transcript, keys=dataclasses.replace(keys, requests=silent)))
    assert judged.verdict == Verdict.INCONCLUSIVE and "says nothing" in judged.reason


def test_s20_judges_the_terminate_status_byte_and_needs_the_control(recorded):
    transcript = recorded["S-20"]
    keys = transcript.keys
    assert judge_check("S-20", transcript).verdict == Verdict.PASS

    def altered(presented: Presented, change) -> object:
        attempts = dict(keys.attempts)
        attempts[presented.name] = [
            dataclasses.replace(e, answers=[change(a) for a in e.answers]) for e in attempts[presented.name]
        ]
        return dataclasses.replace(transcript, keys=dataclasses.replace(keys, attempts=attempts))

    def status_03(frame):
        data = bytearray.fromhex(frame.hex)
        if ke_from_server(frame) is not None and data[2] == ke.ServerCommand.TERMINATE_KEY_ESTABLISHMENT:
            data[3] = ke.TerminateStatus.BAD_MESSAGE
        return dataclasses.replace(frame, hex=data.hex())

    judged = judge_check("S-20", altered(Presented.UNKNOWN_ISSUER, status_03))
    assert judged.verdict == Verdict.FAIL
    assert "BAD_MESSAGE (0x03)" in judged.reason and "expected UNKNOWN_ISSUER (0x01)" in judged.reason

    def no_response(frame):
        return dataclasses.replace(frame, hex="1900ff")  # an unknown command in place of every answer

    judged = judge_check("S-20", altered(Presented.GENUINE, no_response))
    assert judged.verdict == Verdict.INCONCLUSIVE and "genuine certificate either" in judged.reason


@needs_tshark
def test_capture_shows_the_clear_requests_clear_and_the_others_aps_secured(tmp_path: Path):
    """tshark reads the probe's last four OTA frames of S-19: Query Next Image (0x01) and Image Block (0x03)
    Requests without APS security, then two APS-secured frames it cannot open (it has the network key only)."""
    pcap = tmp_path / "s19.pcap"
    run_server_checks("ours", ["S-19"], pcap=pcap)
    key = bytes.fromhex(ChfProfile().network_key.replace(":", ""))
    done = subprocess.run(
        ["tshark", "-r", str(pcap), "-o", f'uat:zigbee_pc_keys:"{key.hex(":")}","Normal","net"',
         "-Y", f"zbee_nwk.src == 0x{PROBE_NWK:04x} && zbee_aps.cluster == 0x0019",
         "-T", "fields", "-e", "zbee_aps.security", "-e", "zbee_zcl_general.ota.cmd.srv_rx.id"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert rows[-4:] == [["0", "0x01"], ["0", "0x03"], ["1", ""], ["1", ""]]
