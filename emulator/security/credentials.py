"""Text formats of the test CA and of device CBKE credentials (pure: text in, typed values out; the CLI does I/O).

A file is one JSON object with a `format` tag, the suite, and hex fields (big-endian, as on the air):

* `ota-emu-se-ca` (private, mode 0600): suite, issuer, private key, public key;
* `ota-emu-se-ca-public`: suite, issuer, public key, what devices need to trust the CA;
* `ota-emu-se-device` (private, mode 0600): suite, subject, certificate, private key, CA public key.

Why JSON with hex rather than PEM/DER: SE implicit certificates are not X.509 and have no ASN.1 form, and the
device triple (certificate, private key, CA public key) is exactly what a stack loads (the EZSP
`setPreinstalledCbkeData` command, the MFG_CBKE_DATA token), so one small self-describing text file per device
is easy to read, diff, paste into a profile or program into a dongle, and every field can be checked on load.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from emulator.errors import InputError
from emulator.security.ca import CertificateAuthority
from emulator.security.certs import CertificateError, CryptoSuite, DeviceCredentials, parse_certificate
from emulator.security.koblitz import PointError, PrivateKey, PublicKey


class CredentialFileError(InputError):
    """A CA or device credential file that cannot be read as what was expected."""


class FileKind(enum.Enum):
    CA = "ota-emu-se-ca"
    CA_PUBLIC = "ota-emu-se-ca-public"
    DEVICE = "ota-emu-se-device"

    @property
    def description(self) -> str:
        return {
            FileKind.CA: "a CA key file",
            FileKind.CA_PUBLIC: "a CA public key file",
            FileKind.DEVICE: "a device credentials file",
        }[self]


@dataclass(frozen=True, slots=True)
class CaPublic:
    """What a CA public-key file holds."""

    suite: CryptoSuite
    issuer: bytes
    public_key: PublicKey


def ca_text(ca: CertificateAuthority) -> str:
    return _dump(
        FileKind.CA,
        ca.suite,
        {
            "issuer": ca.issuer.hex().upper(),
            "private_key": ca.private_key.to_bytes().hex().upper(),
            "public_key": ca.public_key.to_bytes().hex().upper(),
        },
    )


def ca_public_text(ca: CertificateAuthority) -> str:
    return _dump(
        FileKind.CA_PUBLIC,
        ca.suite,
        {
            "issuer": ca.issuer.hex().upper(),
            "public_key": ca.public_key.to_bytes().hex().upper(),
        },
    )


def device_text(credentials: DeviceCredentials) -> str:
    return _dump(
        FileKind.DEVICE,
        credentials.suite,
        {
            "subject": credentials.certificate.subject.hex().upper(),
            "certificate": credentials.certificate.to_bytes().hex().upper(),
            "private_key": credentials.private_key.to_bytes().hex().upper(),
            "ca_public_key": credentials.ca_public_key.to_bytes().hex().upper(),
        },
    )


def _dump(kind: FileKind, suite: CryptoSuite, fields: dict[str, str]) -> str:
    document = {"format": kind.value, "suite": suite.value, "curve": suite.curve.name, **fields}
    return json.dumps(document, indent=2) + "\n"


def kind_of(text: str, source: str) -> tuple[FileKind, dict[str, Any]]:
    """The kind of credential file `text` is, and its fields."""
    try:
        data = json.loads(text)
    except ValueError:
        raise CredentialFileError(f"{source}: not JSON (expected an ota-emu CA or device credentials file)") from None
    kinds = {kind.value: kind for kind in FileKind}
    if not isinstance(data, dict) or data.get("format") not in kinds:
        raise CredentialFileError(
            f'{source}: no "format" of {", ".join(sorted(kinds))} (expected an ota-emu CA or device credentials file)'
        )
    return kinds[data["format"]], data


def _expect(kind: FileKind, wanted: FileKind, source: str) -> None:
    if kind is not wanted:
        raise CredentialFileError(f"{source}: is {kind.description} (expected {wanted.description})")


def _suite(data: dict[str, Any], source: str) -> CryptoSuite:
    value = data.get("suite")
    if value not in {s.value for s in CryptoSuite} or isinstance(value, bool):
        raise CredentialFileError(f"{source}: suite {value!r} (expected 1 or 2)")
    return CryptoSuite(value)


def _hex(data: dict[str, Any], name: str, source: str) -> bytes:
    value = data.get(name)
    try:
        if not isinstance(value, str):
            raise ValueError
        return bytes.fromhex(value)
    except ValueError:
        raise CredentialFileError(f"{source}: field {name!r} is {value!r} (expected hex bytes)") from None


def _wrap(source: str, exc: InputError) -> CredentialFileError:
    return CredentialFileError(f"{source}: {exc}")


def parse_ca(text: str, source: str) -> CertificateAuthority:
    kind, data = kind_of(text, source)
    _expect(kind, FileKind.CA, source)
    suite = _suite(data, source)
    try:
        private_key = PrivateKey.from_bytes(suite.curve, _hex(data, "private_key", source), "private_key")
        ca = CertificateAuthority(suite, private_key, _hex(data, "issuer", source))
    except (PointError, CertificateError) as exc:
        raise _wrap(source, exc) from None
    if _hex(data, "public_key", source) != ca.public_key.to_bytes():
        raise CredentialFileError(f"{source}: public_key does not match private_key (expected d·G)")
    return ca


def parse_ca_public(text: str, source: str) -> CaPublic:
    kind, data = kind_of(text, source)
    if kind is FileKind.CA:
        ca = parse_ca(text, source)
        return CaPublic(ca.suite, ca.issuer, ca.public_key)
    _expect(kind, FileKind.CA_PUBLIC, source)
    suite = _suite(data, source)
    issuer = _hex(data, "issuer", source)
    if len(issuer) != 8:
        raise CredentialFileError(f"{source}: issuer of {len(issuer)} bytes (expected 8)")
    try:
        public_key = PublicKey.from_bytes(suite.curve, _hex(data, "public_key", source), "public_key")
    except PointError as exc:
        raise _wrap(source, exc) from None
    return CaPublic(suite, issuer, public_key)


def parse_device(text: str, source: str) -> DeviceCredentials:
    """Device credentials, checked to belong together (the private key matches the certificate and CA key)."""
    kind, data = kind_of(text, source)
    _expect(kind, FileKind.DEVICE, source)
    suite = _suite(data, source)
    try:
        credentials = DeviceCredentials(
            parse_certificate(_hex(data, "certificate", source), suite, "certificate"),
            PrivateKey.from_bytes(suite.curve, _hex(data, "private_key", source), "private_key"),
            PublicKey.from_bytes(suite.curve, _hex(data, "ca_public_key", source), "ca_public_key"),
        )
        return credentials.check()
    except (PointError, CertificateError) as exc:
        raise _wrap(source, exc) from None
