"""The arithmetic of certificate-based key establishment (CBKE): ECMQV, the key derivation and the key-confirmation
MACs of Smart Energy 07-5356 Annex C.4 (the same for suites 1 and 2 apart from the curve).

* Shared secret: ECMQV with cofactor (SEC 1 §3.4). With f = ceil(bitlen(n)/2) and avf(Q) = (x(Q) mod 2^f) + 2^f,
  s = d_e + avf(Q_e)·d_s mod n and P = h·s·(Q_e' + avf(Q_e')·Q_s'); Z = x(P) as a big-endian field string.
  The static public keys come from the certificates by ECQV (`certs.reconstruct_public_key`).
* Key derivation (Annex C.4.1, X9.63-style with AES-MMO and no shared info): MacKey = MMO(Z ‖ 00000001),
  KeyData = MMO(Z ‖ 00000002); KeyData becomes the APS link key between the two devices.
* Key confirmation: MACU = HMAC-MMO(MacKey, 02 ‖ ID_U ‖ ID_V ‖ E_U ‖ E_V) and
  MACV = HMAC-MMO(MacKey, 03 ‖ ID_V ‖ ID_U ‖ E_V ‖ E_U), where U is the initiator, V the responder, IDs are the
  EUI-64s most significant byte first and E are the compressed ephemeral keys exactly as exchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from emulator.security.certs import Certificate, DeviceCredentials, reconstruct_public_key
from emulator.security.koblitz import Curve, Point, PointError, PrivateKey
from emulator.security.mmo import hmac_mmo, mmo_hash

MAC_U_PREFIX = b"\x02"
MAC_V_PREFIX = b"\x03"


def _avf(curve: Curve, point: Point) -> int:
    """The associate value function of SEC 1 §3.4: the low ceil(bitlen(n)/2) bits of x(Q), plus 2^f."""
    f = (curve.n.bit_length() + 1) // 2
    return (point.x & ((1 << f) - 1)) | (1 << f)


def ecmqv(
    curve: Curve,
    static_key: PrivateKey,
    ephemeral_key: PrivateKey,
    ephemeral_point: Point,
    partner_static: Point,
    partner_ephemeral: Point,
) -> bytes:
    """Z, the ECMQV shared secret with cofactor (SEC 1 §3.4.1); PointError when the result is the point at
    infinity (a partner key outside the group)."""
    s = (ephemeral_key.d + _avf(curve, ephemeral_point) * static_key.d) % curve.n
    combined = curve.add(partner_ephemeral, curve.multiply(_avf(curve, partner_ephemeral), partner_static))
    shared = curve.multiply(curve.h * s, combined)
    if shared.infinity:
        raise PointError("ECMQV: the shared point is the point at infinity (expected valid partner keys)")
    return shared.x.to_bytes(curve.field_bytes, "big")


def derive_keys(z: bytes) -> tuple[bytes, bytes]:
    """(MacKey, KeyData) from the shared secret Z (Annex C.4.1 KDF: AES-MMO of Z and a 32-bit counter)."""
    return mmo_hash(z + (1).to_bytes(4, "big")), mmo_hash(z + (2).to_bytes(4, "big"))


def mac_u(mac_key: bytes, id_u: bytes, id_v: bytes, ephemeral_u: bytes, ephemeral_v: bytes) -> bytes:
    """MACU, which the initiator U sends in the Confirm Key Data Request."""
    return hmac_mmo(mac_key, MAC_U_PREFIX + id_u + id_v + ephemeral_u + ephemeral_v)


def mac_v(mac_key: bytes, id_u: bytes, id_v: bytes, ephemeral_u: bytes, ephemeral_v: bytes) -> bytes:
    """MACV, which the responder V sends in the Confirm Key Data Response."""
    return hmac_mmo(mac_key, MAC_V_PREFIX + id_v + id_u + ephemeral_v + ephemeral_u)


@dataclass(frozen=True, slots=True)
class KeyAgreement:
    """Everything one side derives once it holds the partner's certificate and ephemeral key."""

    z: bytes = field(repr=False)
    mac_key: bytes = field(repr=False)
    key_data: bytes = field(repr=False)
    mac_u: bytes
    mac_v: bytes


def agree(
    own: DeviceCredentials,
    own_ephemeral: PrivateKey,
    own_ephemeral_public: bytes,
    partner_certificate: Certificate,
    partner_ephemeral_public: bytes,
    *,
    initiator: bool,
) -> KeyAgreement:
    """Run ECQV on the partner certificate, ECMQV, the KDF and both MACs for one side (U when `initiator`).

    Raises CertificateError or PointError (both InputError) for a partner certificate or ephemeral key that is
    not usable; the partner certificate's issuer is not checked here."""
    curve = own.suite.curve
    partner_static = reconstruct_public_key(partner_certificate, own.ca_public_key).point
    partner_ephemeral = curve.validate(
        curve.decompress(partner_ephemeral_public, "partner ephemeral key"), "partner ephemeral key", full=False
    )
    own_ephemeral_point = curve.decompress(own_ephemeral_public, "own ephemeral key")
    z = ecmqv(curve, own.private_key, own_ephemeral, own_ephemeral_point, partner_static, partner_ephemeral)
    mac_key, key_data = derive_keys(z)
    own_id, partner_id = own.certificate.subject, partner_certificate.subject
    id_u, id_v = (own_id, partner_id) if initiator else (partner_id, own_id)
    own_e, partner_e = own_ephemeral_public, partner_ephemeral_public
    e_u, e_v = (own_e, partner_e) if initiator else (partner_e, own_e)
    return KeyAgreement(
        z, mac_key, key_data, mac_u(mac_key, id_u, id_v, e_u, e_v), mac_v(mac_key, id_u, id_v, e_u, e_v)
    )
