"""A test certificate authority for Smart Energy implicit certificates, so emulated devices need no Certicom CA.

Issuing follows SEC 4 §3.4 with both roles in one place: the requester picks k_U and sends R_U = k_U·G; the CA
picks k, publishes P_U = R_U + k·G in the certificate, hashes the certificate to e and returns
r = e·k + d_CA mod n; the requester's private key is d_U = e·k_U + r mod n, and anyone computes the same public key
Q_U = e·P_U + Q_CA = d_U·G from the certificate (`certs.reconstruct_public_key`). Real devices carry certificates
from the Certicom CA, whose private key is not public; this CA is for the emulator's own devices and for tests.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from emulator.security.certs import (
    KEY_USAGE_DIGITAL_SIGNATURE,
    KEY_USAGE_KEY_AGREEMENT,
    NO_EXPIRY,
    Certificate,
    CertificateError,
    CryptoSuite,
    DeviceCredentials,
    Suite1Certificate,
    Suite2Certificate,
    certificate_hash,
    reconstruct_private_key,
    reconstruct_public_key,
)
from emulator.security.koblitz import PrivateKey, PublicKey

DEFAULT_ISSUER = b"OTAEMUCA"
SUITE1_PROFILE_DATA = b"\x01\x09" + bytes(8)  # starts with the SE profile id 0x0109; the rest is opaque


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A CA key pair for one suite and the 8-byte issuer id written into the certificates it issues."""

    suite: CryptoSuite
    private_key: PrivateKey = field(repr=False)
    issuer: bytes = DEFAULT_ISSUER
    # Q_CA = d_CA·G, worked out once: every certificate issued needs it.
    _public_key: PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.issuer) != 8:
            raise CertificateError(f"CA issuer: {len(self.issuer)} bytes (expected an 8-byte issuer id)")
        if self.private_key.curve is not self.suite.curve:
            raise CertificateError(
                f"CA key is on {self.private_key.curve.name} (expected {self.suite.curve.name} for suite "
                f"{self.suite.value})"
            )
        object.__setattr__(self, "_public_key", self.private_key.public_key())

    @classmethod
    def generate(cls, suite: CryptoSuite, issuer: bytes = DEFAULT_ISSUER) -> CertificateAuthority:
        return cls(suite, PrivateKey.generate(suite.curve), issuer)

    @property
    def public_key(self) -> PublicKey:
        return self._public_key

    def issue(
        self,
        subject: bytes,
        *,
        valid_from: int = 0,
        valid_to: int = NO_EXPIRY,
        key_usage: int = KEY_USAGE_KEY_AGREEMENT | KEY_USAGE_DIGITAL_SIGNATURE,
        serial: bytes | None = None,
    ) -> DeviceCredentials:
        """Certificate and private key for the device `subject` (8-byte EUI-64, most significant byte first),
        with both halves of SEC 4 §3.4 run here; `valid_from`, `valid_to`, `key_usage` and `serial` apply to
        suite 2 only."""
        curve = self.suite.curve
        ca_public = self.public_key
        while True:
            request_secret = curve.random_scalar()  # k_U, the requester's
            ca_secret = curve.random_scalar()  # k, the CA's
            # P_U = R_U + k·G with R_U = k_U·G: one scalar multiplication, since both secrets are at hand
            p_u = curve.multiply_generator(request_secret + ca_secret)
            if p_u.infinity:
                continue
            certificate = self._certificate(subject, curve.compress(p_u), valid_from, valid_to, key_usage, serial)
            reconstruction_data = (certificate_hash(certificate) * ca_secret + self.private_key.d) % curve.n
            if (certificate_hash(certificate) * request_secret + reconstruction_data) % curve.n:
                break
        private_key = reconstruct_private_key(certificate, request_secret, reconstruction_data)
        credentials = DeviceCredentials(certificate, private_key, ca_public)
        # SEC 4 §3.6: the requester checks that the reconstructed key pair agrees with the certificate
        if reconstruct_public_key(certificate, ca_public).point != private_key.public_key().point:
            raise AssertionError("issued certificate does not reconstruct the device's public key")
        return credentials

    def _certificate(
        self, subject: bytes, point: bytes, valid_from: int, valid_to: int, key_usage: int, serial: bytes | None
    ) -> Certificate:
        if self.suite is CryptoSuite.SUITE_1:
            return Suite1Certificate(point, bytes(subject), self.issuer, SUITE1_PROFILE_DATA)
        return Suite2Certificate(
            serial=serial if serial is not None else secrets.token_bytes(8),
            issuer=self.issuer,
            valid_from=valid_from,
            valid_to=valid_to,
            subject=bytes(subject),
            reconstruction_point=point,
            key_usage=key_usage,
        )
