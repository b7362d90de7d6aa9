"""The Key Establishment cluster machines: full exchanges U↔V with byte-exact messages (SE Annex C data and our own
test CA, both suites), suite negotiation, every failure path, timeouts, and the payloads read back by tshark's
Smart Energy dissector."""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import zigpy.types as t
from hypothesis import given, settings
from hypothesis import strategies as st
from se_vectors import SUITE1, SUITE2, VECTORS, Vector, credentials_of, ephemeral_key_of

from emulator.radio.capture import PcapWriter
from emulator.security.ca import CertificateAuthority
from emulator.security.certs import CryptoSuite, DeviceCredentials
from emulator.security.key_establishment import (
    CLUSTER_ID,
    SMART_ENERGY_PROFILE,
    ConfirmKeyDataRequest,
    ConfirmKeyDataResponse,
    EphemeralDataRequest,
    EphemeralDataResponse,
    Established,
    Failed,
    InitiateKeyEstablishmentRequest,
    InitiateKeyEstablishmentResponse,
    Initiator,
    Message,
    MessageError,
    Responder,
    Step,
    TerminateKeyEstablishment,
    TerminateStatus,
    choose_suite,
    decode_client_command,
    decode_server_command,
)
from emulator.security.koblitz import PrivateKey

DEVICE = bytes.fromhex("000D6F0000BBBBBB")
CHF = bytes.fromhex("000D6F0000AAAAAA")


def _vector_parties(vector: Vector) -> tuple[Initiator, Responder]:
    def fixed(key: PrivateKey):  # type: ignore[no-untyped-def]
        return lambda curve: key

    u = Initiator(
        credentials_of(vector, vector.u),
        bytes.fromhex(vector.v.eui),
        ephemeral_key=fixed(ephemeral_key_of(vector, vector.u)),
    )
    v = Responder(
        credentials_of(vector, vector.v),
        bytes.fromhex(vector.u.eui),
        ephemeral_key=fixed(ephemeral_key_of(vector, vector.v)),
    )
    return u, v


def _run(u: Initiator, v: Responder, now: float = 0.0) -> list[Message]:
    """Drive both machines through the raw payloads until neither has anything to send; the wire transcript."""
    sent: list[Message] = []
    step = u.start(now, v.supported_suites)
    to_v = True
    while step.outbound:
        next_steps = []
        for message in step.outbound:
            sent.append(message)
            if to_v:
                next_steps.append(v.receive_payload(message.COMMAND_ID, message.to_bytes(), now))
            else:
                next_steps.append(u.receive_payload(message.COMMAND_ID, message.to_bytes(), now))
        step = Step(tuple(m for s in next_steps for m in s.outbound))
        to_v = not to_v
        now += 0.1
    return sent


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.suite.name)
def test_annex_c_exchange_is_byte_exact(vector: Vector) -> None:
    u, v = _vector_parties(vector)
    sent = _run(u, v)
    suite = vector.suite.bit.to_bytes(2, "little")
    assert [type(m) for m in sent] == [
        InitiateKeyEstablishmentRequest,
        InitiateKeyEstablishmentResponse,
        EphemeralDataRequest,
        EphemeralDataResponse,
        ConfirmKeyDataRequest,
        ConfirmKeyDataResponse,
    ]
    wire = [m.to_bytes() for m in sent]
    assert wire == [
        suite + b"\x02\x02" + bytes.fromhex(vector.u.cert),
        suite + b"\x02\x02" + bytes.fromhex(vector.v.cert),
        bytes.fromhex(vector.u.q_e),
        bytes.fromhex(vector.v.q_e),
        bytes.fromhex(vector.mac_u),
        bytes.fromhex(vector.mac_v),
    ]
    lengths = {CryptoSuite.SUITE_1: [52, 52, 22, 22, 16, 16], CryptoSuite.SUITE_2: [78, 78, 37, 37, 16, 16]}
    assert [len(w) for w in wire] == lengths[vector.suite]
    key_data = bytes.fromhex(vector.key_data)
    assert u.outcome == Established(vector.suite, bytes.fromhex(vector.v.eui), key_data)
    assert v.outcome == Established(vector.suite, bytes.fromhex(vector.u.eui), key_data)
    assert u.deadline() is None and v.deadline() is None


def _pair(
    suites_u: tuple[CryptoSuite, ...] = (CryptoSuite.SUITE_1, CryptoSuite.SUITE_2),
    suites_v: tuple[CryptoSuite, ...] = (CryptoSuite.SUITE_1, CryptoSuite.SUITE_2),
) -> tuple[dict[CryptoSuite, DeviceCredentials], dict[CryptoSuite, DeviceCredentials]]:
    return ({s: _issued(s, DEVICE) for s in suites_u}, {s: _issued(s, CHF) for s in suites_v})


@functools.cache
def _ca(suite: CryptoSuite) -> CertificateAuthority:
    """One test CA per suite for the module, made when a test first needs it (not while pytest collects)."""
    return CertificateAuthority.generate(suite)


@functools.cache
def _issued(suite: CryptoSuite, subject: bytes) -> DeviceCredentials:
    """One certificate per node and suite, as a real node carries one for life: every exchange still draws its own
    ephemeral keys and runs the whole key agreement."""
    return _ca(suite).issue(subject)


@pytest.mark.parametrize(
    ("suites_u", "suites_v", "chosen"),
    [
        ((CryptoSuite.SUITE_1, CryptoSuite.SUITE_2), (CryptoSuite.SUITE_1, CryptoSuite.SUITE_2), CryptoSuite.SUITE_2),
        ((CryptoSuite.SUITE_1, CryptoSuite.SUITE_2), (CryptoSuite.SUITE_1,), CryptoSuite.SUITE_1),
        ((CryptoSuite.SUITE_2,), (CryptoSuite.SUITE_2,), CryptoSuite.SUITE_2),
    ],
)
def test_exchange_between_parties_of_our_test_ca(
    suites_u: tuple[CryptoSuite, ...], suites_v: tuple[CryptoSuite, ...], chosen: CryptoSuite
) -> None:
    cred_u, cred_v = _pair(suites_u, suites_v)
    u, v = Initiator(cred_u, CHF), Responder(cred_v, DEVICE)
    sent = _run(u, v)
    assert len(sent) == 6
    assert sent[0].to_bytes()[:2] == chosen.bit.to_bytes(2, "little")
    assert isinstance(u.outcome, Established) and isinstance(v.outcome, Established)
    assert u.outcome.suite is chosen and u.outcome.key_data == v.outcome.key_data
    assert (u.outcome.partner, v.outcome.partner) == (CHF, DEVICE)


def test_suite_choice() -> None:
    both = (CryptoSuite.SUITE_1, CryptoSuite.SUITE_2)
    assert choose_suite(both, 0x0003) is CryptoSuite.SUITE_2
    assert choose_suite(both, 0x0000) is CryptoSuite.SUITE_1  # old stacks report 0 for suite 1
    assert choose_suite((CryptoSuite.SUITE_2,), 0x0000) is None
    assert choose_suite(both, 0x0004) is None


def test_no_common_suite_fails_before_sending_anything() -> None:
    cred_u, _ = _pair((CryptoSuite.SUITE_2,))
    step = Initiator(cred_u, CHF).start(0.0, partner_suites=0x0001)
    assert step.outbound == ()
    assert isinstance(step.outcome, Failed)
    assert step.outcome.status is TerminateStatus.UNSUPPORTED_SUITE and step.outcome.terminate is None


# --- failures at the responder -------------------------------------------------------------------------------
def _initiate(credentials: DeviceCredentials, suite: int | None = None) -> bytes:
    return InitiateKeyEstablishmentRequest(
        credentials.suite.bit if suite is None else suite, 2, 2, credentials.certificate.to_bytes()
    ).to_bytes()


def _terminated(step: Step, status: TerminateStatus, suite: int) -> None:
    assert isinstance(step.outcome, Failed)
    assert step.outcome.status is status
    assert step.outbound == (step.outcome.terminate,)
    assert step.outbound[0].to_bytes() == bytes([status, 30]) + suite.to_bytes(2, "little")


def test_responder_unknown_issuer() -> None:
    other = CertificateAuthority.generate(CryptoSuite.SUITE_2, issuer=b"OTHER-CA").issue(DEVICE)
    _, cred_v = _pair()
    v = Responder(cred_v, DEVICE)
    step = v.receive_payload(0x00, _initiate(other), 0.0)
    _terminated(step, TerminateStatus.UNKNOWN_ISSUER, 0x0002)
    assert "issuer" in step.outcome.reason  # type: ignore[union-attr]


def test_responder_subject_is_not_the_partner() -> None:
    cred_u, cred_v = _pair()
    v = Responder(cred_v, bytes.fromhex("000D6F0000CCCCCC"))
    step = v.receive_payload(0x00, _initiate(cred_u[CryptoSuite.SUITE_1]), 0.0)
    _terminated(step, TerminateStatus.BAD_MESSAGE, 0x0001)
    assert "subject" in step.outcome.reason  # type: ignore[union-attr]


def test_responder_invalid_suite2_certificate() -> None:
    no_agreement = _ca(CryptoSuite.SUITE_2).issue(DEVICE, key_usage=0x80)
    _, cred_v = _pair()
    step = Responder(cred_v, DEVICE).receive_payload(0x00, _initiate(no_agreement), 0.0)
    _terminated(step, TerminateStatus.INVALID_CERTIFICATE, 0x0002)


def test_responder_bad_point_in_suite1_certificate() -> None:
    good = _ca(CryptoSuite.SUITE_1).issue(DEVICE).certificate
    bad = replace(good, reconstruction_point=b"\x05" + good.reconstruction_point[1:])  # type: ignore[arg-type]
    _, cred_v = _pair()
    payload = InitiateKeyEstablishmentRequest(1, 2, 2, bad.to_bytes()).to_bytes()
    _terminated(Responder(cred_v, DEVICE).receive_payload(0x00, payload, 0.0), TerminateStatus.INVALID_CERTIFICATE, 1)


@pytest.mark.parametrize("suite", [0x0000, 0x0003, 0x0004, 0x8000])
def test_responder_unsupported_suite_value(suite: int) -> None:
    cred_u, cred_v = _pair()
    step = Responder(cred_v, DEVICE).receive_payload(0x00, _initiate(cred_u[CryptoSuite.SUITE_2], suite), 0.0)
    _terminated(step, TerminateStatus.UNSUPPORTED_SUITE, 0x0003)


def test_responder_without_the_requested_suite() -> None:
    cred_u, cred_v = _pair(suites_v=(CryptoSuite.SUITE_1,))
    step = Responder(cred_v, DEVICE).receive_payload(0x00, _initiate(cred_u[CryptoSuite.SUITE_2]), 0.0)
    _terminated(step, TerminateStatus.UNSUPPORTED_SUITE, 0x0001)


@pytest.mark.parametrize(
    ("command_id", "payload"),
    [
        (0x00, b"\x01\x00\x02\x02" + bytes(47)),  # suite-1 certificate one byte short
        (0x00, b"\x02\x00"),  # no room for the times
        (0x01, bytes(22)),  # Ephemeral Data before Initiate
        (0x02, bytes(16)),  # Confirm Key before Initiate
        (0x07, b""),  # no such command
    ],
)
def test_responder_bad_messages(command_id: int, payload: bytes) -> None:
    _, cred_v = _pair()
    step = Responder(cred_v, DEVICE).receive_payload(command_id, payload, 0.0)
    _terminated(step, TerminateStatus.BAD_MESSAGE, 0x0003)


def _to_ephemeral(suite: CryptoSuite) -> tuple[Initiator, Responder, EphemeralDataRequest]:
    cred_u, cred_v = _pair((suite,), (suite,))
    u, v = Initiator(cred_u, CHF), Responder(cred_v, DEVICE)
    request = u.start(0.0, v.supported_suites).outbound[0]
    response = v.receive(request, 0.0).outbound[0]  # type: ignore[arg-type]
    ephemeral = u.receive(response, 0.0).outbound[0]  # type: ignore[arg-type]
    assert isinstance(ephemeral, EphemeralDataRequest)
    return u, v, ephemeral


@pytest.mark.parametrize("suite", list(CryptoSuite), ids=lambda s: s.name)
def test_responder_bad_ephemeral_point(suite: CryptoSuite) -> None:
    _, v, ephemeral = _to_ephemeral(suite)
    bad = b"\x04" + ephemeral.ephemeral[1:]
    _terminated(v.receive_payload(0x01, bad, 0.1), TerminateStatus.BAD_MESSAGE, suite.bit)


def test_responder_bad_ephemeral_length() -> None:
    _, v, ephemeral = _to_ephemeral(CryptoSuite.SUITE_2)
    _terminated(v.receive_payload(0x01, ephemeral.ephemeral[:22], 0.1), TerminateStatus.BAD_MESSAGE, 0x0002)


def test_responder_bad_key_confirm() -> None:
    u, v, ephemeral = _to_ephemeral(CryptoSuite.SUITE_1)
    response = v.receive(ephemeral, 0.1).outbound[0]
    confirm = u.receive(response, 0.2).outbound[0]  # type: ignore[arg-type]
    assert isinstance(confirm, ConfirmKeyDataRequest)
    tampered = ConfirmKeyDataRequest(bytes([confirm.mac[0] ^ 1]) + confirm.mac[1:])
    _terminated(v.receive(tampered, 0.3), TerminateStatus.BAD_KEY_CONFIRM, 0x0001)


def test_initiator_bad_key_confirm_from_a_responder_of_another_ca_with_the_same_issuer() -> None:
    cred_u, _ = _pair((CryptoSuite.SUITE_1,), (CryptoSuite.SUITE_1,))
    impostor = CertificateAuthority.generate(CryptoSuite.SUITE_1).issue(CHF)  # same issuer id, other key
    u, v = Initiator(cred_u, CHF), Responder(impostor, DEVICE)
    sent = _run(u, v)
    assert [type(m) for m in sent][-2:] == [ConfirmKeyDataRequest, TerminateKeyEstablishment]
    assert isinstance(v.outcome, Failed) and v.outcome.status is TerminateStatus.BAD_KEY_CONFIRM
    assert isinstance(u.outcome, Failed) and u.outcome.status is TerminateStatus.BAD_KEY_CONFIRM
    assert u.outcome.terminate is None  # the partner terminated: nothing more to send


# --- failures at the initiator -------------------------------------------------------------------------------
def test_initiator_checks_the_responder_certificate_subject() -> None:
    cred_u, cred_v = _pair()
    u = Initiator(cred_u, bytes.fromhex("000D6F0000CCCCCC"))
    v = Responder(cred_v, DEVICE)
    response = v.receive(u.start(0.0, 0x0003).outbound[0], 0.0).outbound[0]  # type: ignore[arg-type]
    _terminated(u.receive(response, 0.1), TerminateStatus.BAD_MESSAGE, 0x0002)  # type: ignore[arg-type]


def test_initiator_refuses_a_suite_it_did_not_ask_for() -> None:
    cred_u, cred_v = _pair()
    u = Initiator(cred_u, CHF)
    u.start(0.0, 0x0003)
    other = InitiateKeyEstablishmentResponse(1, 2, 2, cred_v[CryptoSuite.SUITE_1].certificate.to_bytes())
    _terminated(u.receive(other, 0.1), TerminateStatus.UNSUPPORTED_SUITE, 0x0002)


def test_initiator_bad_macv() -> None:
    u, v, ephemeral = _to_ephemeral(CryptoSuite.SUITE_2)
    u.receive(v.receive(ephemeral, 0.1).outbound[0], 0.2)  # type: ignore[arg-type]
    _terminated(u.receive(ConfirmKeyDataResponse(bytes(16)), 0.3), TerminateStatus.BAD_KEY_CONFIRM, 0x0002)


def test_initiator_out_of_sequence_and_undecodable() -> None:
    cred_u, _ = _pair()
    u = Initiator(cred_u, CHF)
    u.start(0.0, 0x0003)
    _terminated(u.receive(ConfirmKeyDataResponse(bytes(16)), 0.1), TerminateStatus.BAD_MESSAGE, 0x0002)
    assert u.receive(ConfirmKeyDataResponse(bytes(16)), 0.2) == Step()  # finished: ignores what follows
    u2 = Initiator(cred_u, CHF)
    u2.start(0.0, 0x0003)
    _terminated(u2.receive_payload(0x00, b"\x02\x00\x01", 0.1), TerminateStatus.BAD_MESSAGE, 0x0002)


def test_partner_terminate_ends_without_reply() -> None:
    cred_u, _ = _pair()
    u = Initiator(cred_u, CHF)
    u.start(0.0, 0x0003)
    step = u.receive_payload(0x03, bytes([0x04, 10, 0x02, 0x00]), 0.5)
    assert step.outbound == ()
    assert isinstance(step.outcome, Failed) and step.outcome.status is TerminateStatus.NO_RESOURCES
    assert "wait 10 s" in step.outcome.reason


def test_busy_responder_answers_no_resources() -> None:
    assert Responder.busy(suite=0x0002).to_bytes() == bytes([0x04, 30, 0x02, 0x00])


# --- timeouts ------------------------------------------------------------------------------------------------
def test_deadlines_follow_the_advertised_generate_times() -> None:
    cred_u, cred_v = _pair()
    u = Initiator(cred_u, CHF, ephemeral_data_generate_time=3, confirm_key_generate_time=7, transit_allowance=2.0)
    v = Responder(cred_v, DEVICE, ephemeral_data_generate_time=5, confirm_key_generate_time=11, transit_allowance=4.0)
    assert v.deadline() is None  # a responder waits for an initiator indefinitely
    request = u.start(100.0, v.supported_suites).outbound[0]
    assert u.deadline() == 102.0  # transit only: the responder has advertised nothing yet
    response = v.receive(request, 100.5).outbound[0]  # type: ignore[arg-type]
    assert v.deadline() == 100.5 + 3 + 4.0  # the initiator's ephemeral generate time
    ephemeral = u.receive(response, 101.0).outbound[0]  # type: ignore[arg-type]
    assert u.deadline() == 101.0 + 5 + 2.0  # the responder's ephemeral generate time
    reply = v.receive(ephemeral, 102.0).outbound[0]  # type: ignore[arg-type]
    assert v.deadline() == 102.0 + 7 + 4.0  # the initiator's confirm key generate time
    u.receive(reply, 103.0)  # type: ignore[arg-type]
    assert u.deadline() == 103.0 + 11 + 2.0  # the responder's confirm key generate time


def test_timeout_fails_without_terminate() -> None:
    cred_u, _ = _pair()
    u = Initiator(cred_u, CHF)
    u.start(0.0, 0x0003)
    deadline = u.deadline()
    assert deadline is not None
    assert u.timeout(deadline - 0.001) == Step()
    step = u.timeout(deadline)
    assert step.outbound == ()
    assert isinstance(step.outcome, Failed) and step.outcome.status is None and step.outcome.terminate is None
    assert u.deadline() is None


def test_a_late_message_is_a_timeout() -> None:
    _, v, ephemeral = _to_ephemeral(CryptoSuite.SUITE_1)
    deadline = v.deadline()
    assert deadline is not None
    step = v.receive(ephemeral, deadline + 1)
    assert step.outbound == () and isinstance(step.outcome, Failed) and step.outcome.status is None


# --- payload codecs ------------------------------------------------------------------------------------------
def test_decode_round_trips_and_errors() -> None:
    cert = bytes.fromhex(SUITE2.u.cert)
    request = InitiateKeyEstablishmentRequest(2, 5, 6, cert)
    assert decode_client_command(0, request.to_bytes(), None) == request
    assert decode_server_command(0, request.to_bytes(), None) == InitiateKeyEstablishmentResponse(2, 5, 6, cert)
    assert decode_client_command(3, b"\x02\x0a\x01\x00", None) == TerminateKeyEstablishment(2, 10, 1)
    with pytest.raises(MessageError, match="before Initiate"):
        decode_server_command(1, bytes(22), None)
    with pytest.raises(MessageError, match="expected 37") as info:
        decode_server_command(1, bytes(22), CryptoSuite.SUITE_2)
    assert info.value.status is TerminateStatus.BAD_MESSAGE
    with pytest.raises(MessageError) as unsupported:
        decode_client_command(0, b"\x04\x00\x01\x01" + cert, None)
    assert unsupported.value.status is TerminateStatus.UNSUPPORTED_SUITE


# --- tshark --------------------------------------------------------------------------------------------------
KE_FIELDS = [
    "zbee_zcl_se.ke.cmd.srv_rx.id",
    "zbee_zcl_se.ke.cmd.srv_tx.id",
    "zbee_zcl_se.ke.attr.suite",
    "zbee_zcl_se.ke.init.ephemeral.time",
    "zbee_zcl_se.ke.init.confirm.time",
    "zbee_zcl_se.ke.cert.reconst",
    "zbee_zcl_se.ke.cert.subject",
    "zbee_zcl_se.ke.cert.issuer",
    "zbee_zcl_se.ke.cert.key.usage.agreement",
    "zbee_zcl_se.ke.qeu",
    "zbee_zcl_se.ke.qev",
    "zbee_zcl_se.ke.macu",
    "zbee_zcl_se.ke.macv",
    "zbee_zcl_se.ke.terminate.status",
    "zbee_zcl_se.ke.terminate.wait.time",
]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (apt: tshark)")
@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.suite.name)
def test_tshark_reads_the_exchange(vector: Vector, tmp_path: Path) -> None:
    u, v = _vector_parties(vector)
    sent = _run(u, v)
    sent.append(TerminateKeyEstablishment(TerminateStatus.BAD_KEY_CONFIRM, 30, vector.suite.bit))
    path = tmp_path / "ke.pcap"
    writer = PcapWriter(path, network_key=None, pan_id=0x1234)
    writer.add_node(0x0000, t.EUI64(bytes.fromhex(vector.v.eui)[::-1]))
    writer.add_node(0x1001, t.EUI64(bytes.fromhex(vector.u.eui)[::-1]))
    for index, message in enumerate(sent):
        from_server = index % 2 == 1
        zcl = bytes([0x09 if from_server else 0x01, index, message.COMMAND_ID]) + message.to_bytes()
        nodes = (0x0000, 0x1001) if from_server else (0x1001, 0x0000)
        writer.write(
            t.ZigbeePacket(
                src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=nodes[0]),
                src_ep=1,
                dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=nodes[1]),
                dst_ep=1,
                profile_id=SMART_ENERGY_PROFILE,
                cluster_id=CLUSTER_ID,
                data=t.SerializableBytes(zcl),
                tx_options=t.TransmitOptions.ACK,
                radius=0,
            ),
            loop_time=float(index),
        )
    writer.close()
    fields = [arg for name in KE_FIELDS for arg in ("-e", name)]
    done = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-E", "occurrence=f", *fields],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    rows = [dict(zip(KE_FIELDS, line.split("\t"), strict=True)) for line in done.stdout.splitlines()]
    assert len(rows) == 7

    def hexof(value: str) -> str:
        return value.replace(":", "").upper()

    suite = f"0x{vector.suite.bit:04x}"
    for row, party in ((rows[0], vector.u), (rows[1], vector.v)):
        assert row["zbee_zcl_se.ke.attr.suite"] == suite
        assert (row["zbee_zcl_se.ke.init.ephemeral.time"], row["zbee_zcl_se.ke.init.confirm.time"]) == ("2", "2")
        cert = bytes.fromhex(party.cert)
        reconstruct = cert[:22] if vector is SUITE1 else cert[37:]
        assert hexof(row["zbee_zcl_se.ke.cert.reconst"]) == reconstruct.hex().upper()
        assert hexof(row["zbee_zcl_se.ke.cert.subject"]) == party.eui
    assert hexof(rows[2]["zbee_zcl_se.ke.qeu"]) == vector.u.q_e
    assert hexof(rows[3]["zbee_zcl_se.ke.qev"]) == vector.v.q_e
    assert hexof(rows[4]["zbee_zcl_se.ke.macu"]) == vector.mac_u
    assert hexof(rows[5]["zbee_zcl_se.ke.macv"]) == vector.mac_v
    assert rows[6]["zbee_zcl_se.ke.terminate.status"] == "0x02"
    assert rows[6]["zbee_zcl_se.ke.terminate.wait.time"] == "30"


# --- never an exception for what the partner sends -----------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    stage=st.integers(0, 2),
    command_id=st.integers(0, 4),
    payload=st.binary(max_size=90),
    prefix=st.sampled_from([b"", b"\x02", b"\x03", b"\x01\x00", b"\x01\x00\x02\x02", b"\x02\x00\x02\x02"]),
)
def test_arbitrary_payloads_never_raise(stage: int, command_id: int, payload: bytes, prefix: bytes) -> None:
    data = prefix + payload
    fuzz_u, fuzz_v = _pair()  # issued on the first example (`_issued` keeps them), not while pytest collects
    u, v = Initiator(fuzz_u, CHF), Responder(fuzz_v, DEVICE)
    request = u.start(0.0, 0x0001).outbound[0]  # suite 1: the cheaper curve keeps the examples fast
    if stage >= 1:
        response = v.receive(request, 0.0).outbound[0]  # type: ignore[arg-type]
        ephemeral = u.receive(response, 0.0).outbound[0]  # type: ignore[arg-type]
        if stage == 2:  # both sides now wait for Confirm Key Data
            u.receive(v.receive(ephemeral, 0.0).outbound[0], 0.0)  # type: ignore[arg-type]
    for machine in (u, v):
        step = machine.receive_payload(command_id, data, 0.1)
        for message in step.outbound:
            assert isinstance(
                message,
                TerminateKeyEstablishment
                | EphemeralDataResponse
                | ConfirmKeyDataResponse
                | InitiateKeyEstablishmentResponse
                | EphemeralDataRequest
                | ConfirmKeyDataRequest,
            )
        if isinstance(step.outcome, Failed) and step.outcome.terminate is not None:
            assert step.outbound == (step.outcome.terminate,)
