"""The device bench's Smart Energy security checks (SE-01 … SE-06): what the test CHF plays and what decides them,
read from the frames the CHF radio recorded; and the targets that cannot show them (no SE security, the EZSP
path) are not applicable or inconclusive with the reason, never failed. That the bundled profiles pass and each
fault profile fails its checks is in tests/test_conformance_device.py (FAULT_TABLE)."""

from __future__ import annotations

import pytest

from emulator.conformance.device.bench import DeviceTarget, play_check, run_device_checks
from emulator.conformance.device.security_scenarios import KE_CLUSTER
from emulator.conformance.verdict import FrameRecord, Verdict
from emulator.profiles import bundled, load_device
from emulator.security import credentials
from emulator.security.ca import CertificateAuthority
from emulator.security.certs import CryptoSuite, parse_certificate
from emulator.security.key_establishment import TerminateStatus

SECURITY_CHECKS = ["SE-01", "SE-02", "SE-03", "SE-04", "SE-05", "SE-06"]
CHF_IEEE = bytes.fromhex("00DB1234567890A2")  # TEST_CHF's EUI-64, most significant byte first


def ke_frames(frames: list[FrameRecord], command: int, *, from_dut: bool) -> list[bytes]:
    """ZCL bytes of the Key Establishment cluster command `command` sent by the DUT (or by the CHF)."""
    found = []
    for frame in frames:
        data = bytes.fromhex(frame.hex)
        ours = frame.cluster_id == KE_CLUSTER and (frame.src != 0) == from_dut
        if ours and data[0] & 0x03 == 1 and data[2] == command:
            found.append(data)
    return found


@pytest.mark.parametrize(
    ("check", "status", "lie"),
    [
        ("SE-03", TerminateStatus.UNKNOWN_ISSUER, "issuer"),
        ("SE-04", TerminateStatus.BAD_MESSAGE, "subject"),
        ("SE-05", TerminateStatus.BAD_KEY_CONFIRM, "mac"),
    ],
)
def test_terminate_status_is_read_from_the_dut_frame_after_the_chf_lied(check, status, lie):
    judgement = play_check(DeviceTarget(profile=load_device(bundled("ppmid"))), check)
    assert judgement.verdict == Verdict.PASS, judgement.reason
    frames = judgement.evidence or []
    terminates = ke_frames(frames, 0x03, from_dut=True)
    assert [t[3] for t in terminates] == [status]  # Terminate Key Establishment: status, wait time, suite
    assert status.name in judgement.reason
    response = ke_frames(frames, 0x00, from_dut=False)[0]  # Initiate Key Establishment Response
    bits = int.from_bytes(response[3:5], "little")
    suite = CryptoSuite.SUITE_2 if bits == CryptoSuite.SUITE_2.bit else CryptoSuite.SUITE_1
    certificate = parse_certificate(response[7:], suite, "CHF certificate")
    request = ke_frames(frames, 0x00, from_dut=True)[0]
    device_certificate = parse_certificate(request[7:], suite, "DUT certificate")
    # What the CHF presented is what the check says it presented.
    assert (certificate.issuer != device_certificate.issuer) == (lie == "issuer")
    assert (certificate.subject != CHF_IEEE) == (lie == "subject")
    if lie == "mac":
        assert ke_frames(frames, 0x02, from_dut=False), "the CHF's Confirm Key Data Response is in the evidence"


def test_a_wrong_terminate_status_fails_and_names_both():
    """The judge reads the status byte: a DUT that terminates with another status than the rule's fails, and one
    whose rule happens to be that status passes."""
    profile = load_device(bundled("ppmid")).replace(faults=frozenset({"ke_terminate_bad_message"}))
    wrong = play_check(DeviceTarget(profile=profile), "SE-03")
    assert wrong.verdict == Verdict.FAIL
    assert "BAD_MESSAGE (0x03)" in wrong.reason and "expected UNKNOWN_ISSUER (0x01)" in wrong.reason
    assert [t[3] for t in ke_frames(wrong.evidence or [], 0x03, from_dut=True)] == [TerminateStatus.BAD_MESSAGE]
    assert play_check(DeviceTarget(profile=profile), "SE-04").verdict == Verdict.PASS


def test_cbke_then_encrypted_query_is_the_evidence_of_se02():
    judgement = play_check(DeviceTarget(profile=load_device(bundled("hcalcs"))), "SE-02")
    assert judgement.verdict == Verdict.PASS, judgement.reason
    frames = judgement.evidence or []
    assert ke_frames(frames, 0x02, from_dut=True) and ke_frames(frames, 0x02, from_dut=False)  # MACU, MACV
    assert [f.name for f in frames if f.cluster_id == 0x0019] == ["query_next_image"]


def test_se06_shows_the_clear_notifies_and_the_encrypted_control():
    judgement = play_check(DeviceTarget(profile=load_device(bundled("ppmid"))), "SE-06")
    assert judgement.verdict == Verdict.PASS, judgement.reason
    names = [(f.src == 0, f.name) for f in judgement.evidence or []]
    assert names[0] == (False, "query_next_image")  # the control: a query after the APS-encrypted notify
    assert names.count((True, "image_notify")) == 3  # the clear notifies, none of which drew a query
    assert "reported dropping them: frame without APS encryption" in judgement.reason


def test_a_device_without_se_security_finds_them_not_applicable():
    profile = load_device(bundled("ppmid")).replace(security="none")
    report = run_device_checks(DeviceTarget(profile=profile), SECURITY_CHECKS)
    assert {r.check.id: r.verdict for r in report.results} == dict.fromkeys(SECURITY_CHECKS, Verdict.NOT_APPLICABLE)
    assert all('security = "none"' in r.reason for r in report.results)
    assert report.passed


def test_the_ezsp_path_is_inconclusive_with_its_reason():
    report = run_device_checks(DeviceTarget(profile=load_device(bundled("ppmid")), radio="ezsp"), ["SE-02"])
    (result,) = report.results
    assert result.verdict == Verdict.INCONCLUSIVE
    assert "network key only" in result.reason


def test_foreign_ca_certificates_differ_in_issuer():
    """The bench's 'unknown issuer' certificate is a real certificate of another CA, not garbage."""
    ours = CertificateAuthority.generate(CryptoSuite.SUITE_2)
    theirs = CertificateAuthority.generate(CryptoSuite.SUITE_2, issuer=b"TEST-CA2")
    assert ours.issue(CHF_IEEE).certificate.issuer != theirs.issue(CHF_IEEE).certificate.issuer


def test_a_device_with_credentials_of_another_ca_is_inconclusive_where_cbke_must_succeed(tmp_path):
    """The bench cannot issue a CHF certificate of a CA it does not hold: the CBKE checks say so, SE-01 still runs."""
    authority = CertificateAuthority.generate(CryptoSuite.SUITE_2)
    profile = load_device(bundled("ppmid"))
    path = tmp_path / "dut.cbke.json"
    path.write_text(credentials.device_text(authority.issue(bytes(profile.ieee)[::-1])))
    report = run_device_checks(DeviceTarget(profile=profile.replace(cbke_credentials=str(path))), SECURITY_CHECKS)
    verdicts = {r.check.id: r.verdict for r in report.results}
    assert verdicts == {"SE-01": Verdict.PASS} | dict.fromkeys(SECURITY_CHECKS[1:], Verdict.INCONCLUSIVE)
    assert all("whose CA the bench does not hold" in r.reason for r in report.results[1:])


def test_suite_1_devices_get_suite_1_certificates_from_the_lying_chf():
    profile = load_device(bundled("ppmid")).replace(cbke_suite="1")
    report = run_device_checks(DeviceTarget(profile=profile), ["SE-02", "SE-04"])
    assert [r.verdict for r in report.results] == [Verdict.PASS, Verdict.PASS], [r.reason for r in report.results]
    assert "suite 1" in report.results[0].reason
    frames = report.results[1].evidence
    response = ke_frames(frames, 0x00, from_dut=False)[0]
    assert int.from_bytes(response[3:5], "little") == CryptoSuite.SUITE_1.bit
    assert parse_certificate(response[7:], CryptoSuite.SUITE_1, "CHF certificate").subject != CHF_IEEE
