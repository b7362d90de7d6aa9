"""Smart Energy implicit (ECQV) certificates of crypto suites 1 and 2, and the keys reconstructed from them.

An SE device certificate is not X.509: it is a fixed-layout implicit certificate (SEC 4) carrying the public-key
reconstruction point P_U instead of a public key and signature. Anyone holding the CA public key Q_CA computes
the device's public key as Q_U = e·P_U + Q_CA, where e is the AES-MMO hash of the whole certificate read as a
big-endian integer (both suites; Smart Energy 07-5356 Annex C.4.2, SEC 4 §3.5). The device's private key is
d_U = e·k_U + r mod n, with k_U its request secret and r the CA's private-key reconstruction data (SEC 4 §3.4).

Layouts (Smart Energy Annex C.4.2.2 and C.4.2.3; the same fields as Wireshark's `zbee_zcl_se.ke.cert.*`):

* suite 1, 48 bytes: P_U (22, compressed sect163k1) ‖ subject (8) ‖ issuer (8) ‖ profile attribute data (10);
* suite 2, 74 bytes: type (1) ‖ serial (8) ‖ curve (1) ‖ hash (1) ‖ issuer (8) ‖ valid from (5, seconds)
  ‖ valid to (4, seconds after valid from; FFFFFFFF = no expiry) ‖ subject (8) ‖ key usage (1) ‖ P_U (37,
  compressed sect283k1).

EUI-64s (subject, issuer) are 8 bytes most significant first, as printed on devices and as carried in the
certificate; zigpy's `EUI64` holds the same bytes in the reverse order.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field

from emulator.errors import InputError
from emulator.security.koblitz import SECT163K1, SECT283K1, Curve, Point, PointError, PrivateKey, PublicKey
from emulator.security.mmo import mmo_hash

EUI64_LENGTH = 8


class CertificateError(InputError):
    """Bytes that cannot be read as an SE implicit certificate, or a certificate that fails validation."""


class CryptoSuite(enum.IntEnum):
    """Smart Energy key-establishment crypto suites (KeyEstablishmentSuite attribute, 07-5356 §C.3.1.1)."""

    SUITE_1 = 1  # CBKE-ECMQV on sect163k1, 48-byte certificates
    SUITE_2 = 2  # CBKE-ECMQV on sect283k1, 74-byte certificates

    @property
    def bit(self) -> int:
        """This suite's bit in the KeyEstablishmentSuite attribute (0x0001, 0x0002)."""
        return 1 << (self.value - 1)

    @property
    def curve(self) -> Curve:
        return SECT163K1 if self is CryptoSuite.SUITE_1 else SECT283K1

    @property
    def certificate_length(self) -> int:
        return 48 if self is CryptoSuite.SUITE_1 else 74


class CertificateProblem(enum.Enum):
    """What can be wrong with a well-formed certificate (the checks of SE Annex C.4.2.3 for suite 2)."""

    BAD_TYPE = "certificate type is not 0x00 (no extensions)"
    BAD_CURVE = "curve is not 0x0D (sect283k1)"
    BAD_HASH = "hash is not 0x08 (AES-MMO)"
    NO_KEY_AGREEMENT = "key usage lacks 0x08 (key agreement)"
    BAD_POINT = "public-key reconstruction point is not a point on the curve"


SUITE2_TYPE = 0x00
SUITE2_CURVE_SECT283K1 = 0x0D
SUITE2_HASH_AES_MMO = 0x08
KEY_USAGE_KEY_AGREEMENT = 0x08
KEY_USAGE_DIGITAL_SIGNATURE = 0x80
NO_EXPIRY = 0xFFFFFFFF


def _need(data: bytes, length: int, what: str) -> None:
    if len(data) != length:
        raise CertificateError(f"{what}: {len(data)} bytes (expected {length} bytes)")


@dataclass(frozen=True, slots=True)
class Suite1Certificate:
    """A 48-byte suite-1 (sect163k1) implicit certificate."""

    reconstruction_point: bytes  # P_U, 22 bytes compressed
    subject: bytes
    issuer: bytes
    profile_data: bytes = b"\x01\x09" + bytes(8)

    suite = CryptoSuite.SUITE_1
    LENGTH = 48

    def __post_init__(self) -> None:
        _need(self.reconstruction_point, 22, "suite-1 certificate reconstruction point")
        _need(self.subject, EUI64_LENGTH, "suite-1 certificate subject")
        _need(self.issuer, EUI64_LENGTH, "suite-1 certificate issuer")
        _need(self.profile_data, 10, "suite-1 certificate profile attribute data")

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "certificate") -> Suite1Certificate:
        if len(data) != cls.LENGTH:
            raise CertificateError(f"{what}: {len(data)} bytes (expected a {cls.LENGTH}-byte suite-1 certificate)")
        return cls(bytes(data[0:22]), bytes(data[22:30]), bytes(data[30:38]), bytes(data[38:48]))

    def to_bytes(self) -> bytes:
        return self.reconstruction_point + self.subject + self.issuer + self.profile_data

    def problems(self) -> tuple[CertificateProblem, ...]:
        return () if _point_ok(self.suite.curve, self.reconstruction_point) else (CertificateProblem.BAD_POINT,)


@dataclass(frozen=True, slots=True)
class Suite2Certificate:
    """A 74-byte suite-2 (sect283k1) implicit certificate."""

    serial: bytes
    issuer: bytes
    valid_from: int  # seconds (40 bits); Wireshark shows it as Unix time
    valid_to: int  # seconds after valid_from; NO_EXPIRY means none
    subject: bytes
    reconstruction_point: bytes  # P_U, 37 bytes compressed
    key_usage: int = KEY_USAGE_KEY_AGREEMENT | KEY_USAGE_DIGITAL_SIGNATURE
    type: int = SUITE2_TYPE
    curve: int = SUITE2_CURVE_SECT283K1
    hash: int = SUITE2_HASH_AES_MMO

    suite = CryptoSuite.SUITE_2
    LENGTH = 74

    def __post_init__(self) -> None:
        _need(self.serial, 8, "suite-2 certificate serial number")
        _need(self.issuer, EUI64_LENGTH, "suite-2 certificate issuer")
        _need(self.subject, EUI64_LENGTH, "suite-2 certificate subject")
        _need(self.reconstruction_point, 37, "suite-2 certificate reconstruction point")
        for name, value, bits in (
            ("valid from", self.valid_from, 40),
            ("valid to", self.valid_to, 32),
            ("key usage", self.key_usage, 8),
            ("type", self.type, 8),
            ("curve", self.curve, 8),
            ("hash", self.hash, 8),
        ):
            if not 0 <= value < 1 << bits:
                raise CertificateError(f"suite-2 certificate {name}: {value} (expected a {bits}-bit value)")

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "certificate") -> Suite2Certificate:
        if len(data) != cls.LENGTH:
            raise CertificateError(f"{what}: {len(data)} bytes (expected a {cls.LENGTH}-byte suite-2 certificate)")
        return cls(
            type=data[0],
            serial=bytes(data[1:9]),
            curve=data[9],
            hash=data[10],
            issuer=bytes(data[11:19]),
            valid_from=int.from_bytes(data[19:24], "big"),
            valid_to=int.from_bytes(data[24:28], "big"),
            subject=bytes(data[28:36]),
            key_usage=data[36],
            reconstruction_point=bytes(data[37:74]),
        )

    def to_bytes(self) -> bytes:
        return (
            bytes([self.type])
            + self.serial
            + bytes([self.curve, self.hash])
            + self.issuer
            + self.valid_from.to_bytes(5, "big")
            + self.valid_to.to_bytes(4, "big")
            + self.subject
            + bytes([self.key_usage])
            + self.reconstruction_point
        )

    def problems(self) -> tuple[CertificateProblem, ...]:
        found = []
        if self.type != SUITE2_TYPE:
            found.append(CertificateProblem.BAD_TYPE)
        if self.curve != SUITE2_CURVE_SECT283K1:
            found.append(CertificateProblem.BAD_CURVE)
        if self.hash != SUITE2_HASH_AES_MMO:
            found.append(CertificateProblem.BAD_HASH)
        if not self.key_usage & KEY_USAGE_KEY_AGREEMENT:
            found.append(CertificateProblem.NO_KEY_AGREEMENT)
        if not _point_ok(self.suite.curve, self.reconstruction_point):
            found.append(CertificateProblem.BAD_POINT)
        return tuple(found)


Certificate = Suite1Certificate | Suite2Certificate


def _point_ok(curve: Curve, data: bytes) -> bool:
    try:
        curve.decompress(data)
    except PointError:
        return False
    return True


def parse_certificate(data: bytes, suite: CryptoSuite | None = None, what: str = "certificate") -> Certificate:
    """A certificate of `suite`, or of the suite its length says (48 bytes: suite 1; 74 bytes: suite 2)."""
    if suite is None:
        by_length = {Suite1Certificate.LENGTH: CryptoSuite.SUITE_1, Suite2Certificate.LENGTH: CryptoSuite.SUITE_2}
        if len(data) not in by_length:
            raise CertificateError(
                f"{what}: {len(data)} bytes (expected a 48-byte suite-1 or 74-byte suite-2 certificate)"
            )
        suite = by_length[len(data)]
    if suite is CryptoSuite.SUITE_1:
        return Suite1Certificate.from_bytes(data, what)
    return Suite2Certificate.from_bytes(data, what)


def check_certificate(certificate: Certificate, what: str = "certificate") -> Certificate:
    """The certificate itself when it has no problems; else a CertificateError naming the first one."""
    found = certificate.problems()
    if found:
        raise CertificateError(
            f"{what}: {found[0].value} (expected a valid suite-{certificate.suite.value} certificate)"
        )
    return certificate


def certificate_hash(certificate: Certificate) -> int:
    """e = AES-MMO of the whole encoded certificate, as a big-endian integer (SE Annex C.4.2, both suites)."""
    return int.from_bytes(mmo_hash(certificate.to_bytes()), "big")


def reconstruct_public_key(certificate: Certificate, ca_public_key: PublicKey) -> PublicKey:
    """Q_U = e·P_U + Q_CA (SEC 4 §3.5 Cert_PK_Extraction); CertificateError when P_U is not on the curve or
    Q_U would be the point at infinity."""
    curve = certificate.suite.curve
    if ca_public_key.curve is not curve:
        raise CertificateError(
            f"CA public key is on {ca_public_key.curve.name} (expected {curve.name} for a suite-"
            f"{certificate.suite.value} certificate)"
        )
    return PublicKey(
        curve, _extracted(curve, certificate.to_bytes(), certificate.reconstruction_point, ca_public_key.point)
    )


@functools.lru_cache(maxsize=256)
def _extracted(curve: Curve, encoded: bytes, reconstruction_point: bytes, ca_point: Point) -> Point:
    """Q_U of `reconstruct_public_key`, kept per certificate and CA: a pure function of public values, which every
    key establishment with the same partner would otherwise work out again (a scalar multiplication)."""
    try:
        p_u = curve.decompress(reconstruction_point, "certificate reconstruction point")
    except PointError as exc:
        raise CertificateError(str(exc)) from None
    q_u = curve.add(curve.multiply(int.from_bytes(mmo_hash(encoded), "big"), p_u), ca_point)
    if q_u.infinity:
        raise CertificateError("certificate: the reconstructed public key is the point at infinity")
    return q_u


def reconstruct_private_key(certificate: Certificate, request_secret: int, reconstruction_data: int) -> PrivateKey:
    """d_U = e·k_U + r mod n (SEC 4 §3.6 Cert_Reception), from the requester's secret k_U and the CA's r."""
    curve = certificate.suite.curve
    return PrivateKey(curve, (certificate_hash(certificate) * request_secret + reconstruction_data) % curve.n)


@dataclass(frozen=True, slots=True)
class DeviceCredentials:
    """What a device needs for key establishment: its certificate, its private key and the CA public key
    (the same triple the EZSP `setPreinstalledCbkeData` command and the MFG_CBKE_DATA token hold)."""

    certificate: Certificate
    private_key: PrivateKey = field(repr=False)
    ca_public_key: PublicKey

    @property
    def suite(self) -> CryptoSuite:
        return self.certificate.suite

    def check(self) -> DeviceCredentials:
        """The credentials when they belong together: the curves match the suite, the certificate has no problems
        and the private key's public key equals the one reconstructed from the certificate."""
        curve = self.suite.curve
        if self.private_key.curve is not curve or self.ca_public_key.curve is not curve:
            raise CertificateError(
                f"credentials: keys are not on {curve.name} (expected suite-{self.suite.value} keys)"
            )
        check_certificate(self.certificate)
        if reconstruct_public_key(self.certificate, self.ca_public_key).point != curve.multiply_generator(
            self.private_key.d
        ):
            raise CertificateError(
                "credentials: the private key does not match the certificate and CA public key (expected d·G = Q_U)"
            )
        return self
