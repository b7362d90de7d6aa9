"""ECDSA P-256 keys and raw r‖s signatures, shared by OTA image signing and GBCS message signing.

Both GB signature forms (the Upgrade Image trailer and the GBCS general-signing frame) carry a bare 64-byte
r‖s signature over SHA-256, not DER; the conversion lives here once.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from emulator.errors import InputError

SIGNATURE_LENGTH = 64
_HALF = SIGNATURE_LENGTH // 2

PrivateKey = ec.EllipticCurvePrivateKey
PublicKey = ec.EllipticCurvePublicKey


class KeyFileError(InputError):
    """A key or certificate file that cannot be used as a P-256 signer."""


def generate_private_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    p = Path(path)
    if not p.exists():
        raise KeyFileError(f"{p}: no such file (expected a PEM {what})")
    if p.is_dir():
        raise KeyFileError(f"{p}: is a directory (expected a PEM {what})")
    data = p.read_bytes()
    if not data.strip():
        raise KeyFileError(f"{p}: file is empty (expected a PEM {what})")
    return data


def _not_p256(key: object, source: str) -> KeyFileError:
    """The error for a loaded key that is not a P-256 key of the kind asked for: another type, or another curve."""
    if isinstance(key, PublicKey | PrivateKey):
        return KeyFileError(f"{source}: key is on curve {key.curve.name}, expected P-256 (secp256r1)")
    return KeyFileError(f"{source}: key is {type(key).__name__.lstrip('_')}, expected an EC P-256 (secp256r1) key")


def private_key_from_pem(data: bytes, source: str = "private key") -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{source}: not an unencrypted PEM private key ({_reason(exc)})") from None
    if isinstance(key, PrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise _not_p256(key, source)


def public_key_from_pem(data: bytes, source: str = "public key") -> PublicKey:
    """Accept what a lab is handed: a PEM public key, or an X.509 certificate (PEM) of the signer."""
    key: PublicKeyTypes
    if b"-----BEGIN CERTIFICATE-----" in data:
        try:
            key = x509.load_pem_x509_certificate(data).public_key()
        except ValueError as exc:
            raise KeyFileError(f"{source}: not a valid PEM X.509 certificate ({_reason(exc)})") from None
    else:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{source}: not a PEM public key or X.509 certificate ({_reason(exc)})") from None
    if isinstance(key, PublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise _not_p256(key, source)


def load_private_key(path: str | os.PathLike[str]) -> PrivateKey:
    return private_key_from_pem(_read(path, "P-256 private key"), str(path))


def load_public_key(path: str | os.PathLike[str]) -> PublicKey:
    return public_key_from_pem(_read(path, "P-256 public key or X.509 certificate"), str(path))


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def sign(key: PrivateKey, data: bytes) -> bytes:
    """ECDSA P-256/SHA-256 signature of `data` as 64 bytes r‖s, big-endian."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(_HALF, "big") + s.to_bytes(_HALF, "big")


def verify(key: PublicKey, data: bytes, signature: bytes) -> bool:
    if len(signature) != SIGNATURE_LENGTH:
        return False
    der = encode_dss_signature(int.from_bytes(signature[:_HALF], "big"), int.from_bytes(signature[_HALF:], "big"))
    try:
        key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.split(". See ")[0]
