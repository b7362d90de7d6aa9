"""Implicit certificates of suites 1 and 2 (layout, validation, ECQV) against the SE Annex C test data and Certicom
test-CA identities, and the test CA: its certificates reconstruct the keys it hands out."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from se_vectors import CERTICOM, SUITE1, SUITE2, VECTORS, Vector, credentials_of, ephemeral_key_of

from emulator.errors import InputError
from emulator.security.ca import CertificateAuthority
from emulator.security.certs import (
    CertificateError,
    CertificateProblem,
    CryptoSuite,
    Suite1Certificate,
    Suite2Certificate,
    check_certificate,
    parse_certificate,
    reconstruct_public_key,
)
from emulator.security.koblitz import PrivateKey, PublicKey


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.suite.name)
def test_certificates_parse_round_trip_and_reconstruct_the_static_keys(vector: Vector) -> None:
    curve = vector.suite.curve
    ca = PublicKey.from_bytes(curve, bytes.fromhex(vector.ca))
    for party in (vector.u, vector.v):
        raw = bytes.fromhex(party.cert)
        certificate = parse_certificate(raw)
        assert certificate.suite is vector.suite
        assert certificate.to_bytes() == raw
        assert certificate.subject == bytes.fromhex(party.eui)
        assert certificate.problems() == ()
        q = reconstruct_public_key(certificate, ca)
        assert q.to_bytes() == bytes.fromhex(party.q_s)
        assert PrivateKey.from_bytes(curve, bytes.fromhex(party.d_s)).public_key() == q
        assert ephemeral_key_of(vector, party).public_key().to_bytes() == bytes.fromhex(party.q_e)
        assert credentials_of(vector, party).check().suite is vector.suite


def test_suite1_fields() -> None:
    certificate = parse_certificate(bytes.fromhex(SUITE1.u.cert))
    assert isinstance(certificate, Suite1Certificate)
    assert certificate.issuer == b"TESTSECA"
    assert certificate.profile_data == bytes.fromhex("01090006000000000000")
    assert certificate.reconstruction_point == bytes.fromhex("020615E07D30ECA2DAD58002E667D94BC1B422398307")


def test_suite2_fields() -> None:
    certificate = parse_certificate(bytes.fromhex(SUITE2.u.cert))
    assert isinstance(certificate, Suite2Certificate)
    assert (certificate.type, certificate.curve, certificate.hash, certificate.key_usage) == (0x00, 0x0D, 0x08, 0x88)
    assert certificate.serial == bytes.fromhex("84A933B37F018DEC")
    assert certificate.issuer == bytes.fromhex("1112131415161718")
    assert certificate.valid_from == 0x005292A38A
    assert certificate.valid_to == 0xFFFFFFFF


@pytest.mark.parametrize(("ca", "cert", "d", "q"), CERTICOM, ids=["suite1", "suite2"])
def test_certicom_test_ca_identities(ca: str, cert: str, d: str, q: str) -> None:
    certificate = parse_certificate(bytes.fromhex(cert))
    curve = certificate.suite.curve
    assert certificate.subject == bytes.fromhex("0022080000000001")
    reconstructed = reconstruct_public_key(certificate, PublicKey.from_bytes(curve, bytes.fromhex(ca)))
    assert reconstructed.to_bytes() == bytes.fromhex(q)
    assert PrivateKey.from_bytes(curve, bytes.fromhex(d)).public_key() == reconstructed


def test_certicom_suite2_certificate_with_key_usage_08_only_is_valid() -> None:
    certificate = parse_certificate(bytes.fromhex(CERTICOM[1][1]))
    assert isinstance(certificate, Suite2Certificate)
    assert certificate.key_usage == 0x08
    assert certificate.problems() == ()


# --- our own CA ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suite", list(CryptoSuite), ids=lambda s: s.name)
def test_test_ca_issues_certificates_that_reconstruct_its_keys(suite: CryptoSuite) -> None:
    ca = CertificateAuthority.generate(suite)
    device = ca.issue(bytes.fromhex("000D6F0000BBBBBB"), valid_from=1_700_000_000)
    chf = ca.issue(bytes.fromhex("000D6F0000AAAAAA"))
    for credentials in (device, chf):
        assert credentials.check() is credentials
        assert credentials.certificate.issuer == b"OTAEMUCA"
        assert len(credentials.certificate.to_bytes()) == suite.certificate_length
        q = reconstruct_public_key(credentials.certificate, ca.public_key)
        assert q == credentials.private_key.public_key()
    assert device.certificate.subject == bytes.fromhex("000D6F0000BBBBBB")
    if isinstance(device.certificate, Suite2Certificate):
        assert device.certificate.valid_from == 1_700_000_000


def test_credentials_that_do_not_belong_together_are_refused() -> None:
    ca = CertificateAuthority.generate(CryptoSuite.SUITE_1)
    one, two = ca.issue(bytes(8)), ca.issue(bytes.fromhex("0000000000000001"))
    with pytest.raises(CertificateError, match="does not match"):
        replace(one, private_key=two.private_key).check()


# --- validation ----------------------------------------------------------------------------------------------
def _suite2() -> Suite2Certificate:
    certificate = parse_certificate(bytes.fromhex(SUITE2.u.cert))
    assert isinstance(certificate, Suite2Certificate)
    return certificate


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"type": 0x01}, CertificateProblem.BAD_TYPE),
        ({"curve": 0x0E}, CertificateProblem.BAD_CURVE),
        ({"hash": 0x07}, CertificateProblem.BAD_HASH),
        ({"key_usage": 0x80}, CertificateProblem.NO_KEY_AGREEMENT),
        ({"reconstruction_point": b"\x04" + bytes(36)}, CertificateProblem.BAD_POINT),
    ],
)
def test_suite2_problems(change: dict[str, object], problem: CertificateProblem) -> None:
    certificate = replace(_suite2(), **change)  # type: ignore[arg-type]
    assert certificate.problems() == (problem,)
    assert parse_certificate(certificate.to_bytes()).problems() == (problem,)
    with pytest.raises(CertificateError, match=re.escape(problem.value)):
        check_certificate(certificate)


def test_suite1_bad_point_and_lengths() -> None:
    raw = bytearray(bytes.fromhex(SUITE1.u.cert))
    raw[0] = 0x05
    assert parse_certificate(bytes(raw)).problems() == (CertificateProblem.BAD_POINT,)
    for length in (0, 47, 49, 73, 75):
        with pytest.raises(CertificateError, match=f"{length} bytes") as info:
            parse_certificate(bytes(length))
        assert isinstance(info.value, InputError)
    with pytest.raises(CertificateError, match="expected a 74-byte suite-2 certificate"):
        parse_certificate(bytes.fromhex(SUITE1.u.cert), CryptoSuite.SUITE_2)
    with pytest.raises(CertificateError, match="on sect283k1"):
        reconstruct_public_key(
            parse_certificate(bytes.fromhex(SUITE1.u.cert)),
            PublicKey.from_bytes(CryptoSuite.SUITE_2.curve, bytes.fromhex(SUITE2.ca)),
        )
