"""ECMQV, the KDF and the key-confirmation MACs against the Smart Energy Annex C test data on both sides of the
exchange, and between two parties holding certificates from our own test CA."""

from __future__ import annotations

import pytest
from se_vectors import VECTORS, Vector, credentials_of, ephemeral_key_of

from emulator.security.ca import CertificateAuthority
from emulator.security.cbke import agree, derive_keys, ecmqv, mac_u, mac_v
from emulator.security.certs import CryptoSuite
from emulator.security.koblitz import PrivateKey


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.suite.name)
def test_annex_c_key_agreement_on_both_sides(vector: Vector) -> None:
    u, v = credentials_of(vector, vector.u), credentials_of(vector, vector.v)
    du_e, dv_e = ephemeral_key_of(vector, vector.u), ephemeral_key_of(vector, vector.v)
    qu_e, qv_e = bytes.fromhex(vector.u.q_e), bytes.fromhex(vector.v.q_e)
    at_u = agree(u, du_e, qu_e, v.certificate, qv_e, initiator=True)
    at_v = agree(v, dv_e, qv_e, u.certificate, qu_e, initiator=False)
    for side in (at_u, at_v):
        assert side.z == bytes.fromhex(vector.z)
        assert side.mac_key == bytes.fromhex(vector.mac_key)
        assert side.key_data == bytes.fromhex(vector.key_data)
        assert side.mac_u == bytes.fromhex(vector.mac_u)
        assert side.mac_v == bytes.fromhex(vector.mac_v)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.suite.name)
def test_building_blocks_separately(vector: Vector) -> None:
    curve = vector.suite.curve
    z = ecmqv(
        curve,
        PrivateKey.from_bytes(curve, bytes.fromhex(vector.u.d_s)),
        ephemeral_key_of(vector, vector.u),
        curve.decompress(bytes.fromhex(vector.u.q_e)),
        curve.decompress(bytes.fromhex(vector.v.q_s)),
        curve.decompress(bytes.fromhex(vector.v.q_e)),
    )
    assert z == bytes.fromhex(vector.z)
    mac_key, key_data = derive_keys(z)
    assert (mac_key.hex().upper(), key_data.hex().upper()) == (vector.mac_key, vector.key_data)
    ids = bytes.fromhex(vector.u.eui), bytes.fromhex(vector.v.eui)
    ephemerals = bytes.fromhex(vector.u.q_e), bytes.fromhex(vector.v.q_e)
    assert mac_u(mac_key, *ids, *ephemerals).hex().upper() == vector.mac_u
    assert mac_v(mac_key, *ids, *ephemerals).hex().upper() == vector.mac_v


@pytest.mark.parametrize("suite", list(CryptoSuite), ids=lambda s: s.name)
def test_round_trip_between_parties_of_our_test_ca(suite: CryptoSuite) -> None:
    ca = CertificateAuthority.generate(suite)
    device = ca.issue(bytes.fromhex("000D6F0000BBBBBB"))
    chf = ca.issue(bytes.fromhex("000D6F0000AAAAAA"))
    curve = suite.curve
    eu, ev = PrivateKey.generate(curve), PrivateKey.generate(curve)
    pu, pv = eu.public_key().to_bytes(), ev.public_key().to_bytes()
    at_u = agree(device, eu, pu, chf.certificate, pv, initiator=True)
    at_v = agree(chf, ev, pv, device.certificate, pu, initiator=False)
    assert at_u == at_v
    assert at_u.key_data == at_v.key_data
    # a certificate from another CA gives a different static key, so the MACs differ
    stranger = CertificateAuthority.generate(suite).issue(bytes.fromhex("000D6F0000BBBBBB"))
    at_v_wrong = agree(chf, ev, pv, stranger.certificate, pu, initiator=False)
    assert at_v_wrong.mac_u != at_u.mac_u
