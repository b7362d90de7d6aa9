"""CCM* frame protection shared by the NWK and APS layers (Zigbee specification 05-3474 §4.5 and Annex A).

Every secured Zigbee frame carries the auxiliary security header of §4.5.1 between its (NWK or APS) header and its
payload, and is protected with CCM* at security level 5 (ENC-MIC-32): AES-128 encryption and a 4-byte MIC. With
an encrypting level CCM* is plain AES-CCM with a 13-byte nonce (L = 2), so `cryptography`'s `AESCCM` with a 4-byte
tag does the work (Annex A.1).

* The nonce (§4.5.2.2) is the source IEEE address (8 bytes, as sent: least significant byte first) ‖ the frame
  counter (4 bytes LE) ‖ the security control byte.
* The authenticated data is the frame header through the end of the auxiliary header; the payload is encrypted
  and the MIC appended.
* The level bits of the security control byte are sent as 0 (§4.3.1.1, §4.4.1.1): the level is a
  network-wide setting (nwkSecurityLevel, always 5), and a receiver puts it back into the nonce and the
  authenticated data before it checks the MIC (§4.3.1.2, §4.4.1.2).
* The key identifier (§4.5.1.1.2) says which key protects the frame. The key-transport and key-load keys of an
  APS link key are its keyed hashes with the one-byte inputs 0x00 and 0x02 (§4.5.3, B.1.4).

This module holds the bytes and the arithmetic, nothing else: no counters, no key tables (see `keystore`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from emulator.errors import InputError
from emulator.security.mmo import hmac_mmo

KEY_SIZE = 16
MIC_LENGTH = 4
EUI64_SIZE = 8
NONCE_SIZE = 13
MAX_FRAME_COUNTER = 0xFFFFFFFF

_LEVEL_MASK = 0x07
_KEY_ID_SHIFT = 3
_KEY_ID_MASK = 0x18
_EXTENDED_NONCE = 0x20
_RESERVED_MASK = 0xC0
_COUNTER = struct.Struct("<I")


class SecurityLevel(IntEnum):
    """The security levels of §4.5.1.1.1. Zigbee PRO uses only ENC_MIC_32."""

    NONE = 0
    MIC_32 = 1
    MIC_64 = 2
    MIC_128 = 3
    ENC = 4
    ENC_MIC_32 = 5
    ENC_MIC_64 = 6
    ENC_MIC_128 = 7


#: The level every Zigbee PRO / Smart Energy network runs at (nwkSecurityLevel, §4.3.1): receivers substitute it.
NETWORK_SECURITY_LEVEL = SecurityLevel.ENC_MIC_32


class KeyId(IntEnum):
    """The key identifier sub-field of the security control byte (§4.5.1.1.2)."""

    DATA = 0  # the link key shared with the partner, as is
    NETWORK = 1  # the active network key (its sequence number follows in the auxiliary header)
    KEY_TRANSPORT = 2  # HMAC-MMO(link key, 0x00): protects Transport-Key commands
    KEY_LOAD = 3  # HMAC-MMO(link key, 0x02): protects Transport-Key commands carrying a link key


_KEY_IDS = tuple(KeyId)


class FrameSecurityError(InputError):
    """A secured frame from the air that cannot be accepted. Subclasses say why; none of them is a crash."""


class MalformedFrameError(FrameSecurityError):
    """The frame is too short or its headers are inconsistent."""


class BadMicError(FrameSecurityError):
    """The MIC does not verify: wrong key, wrong nonce, or the frame was altered."""


class UnknownKeyError(FrameSecurityError):
    """No key is held for the frame's sender or for its key identifier."""


class StaleFrameCounterError(FrameSecurityError):
    """The frame counter is below the next one expected from that sender: a replay or an old frame."""


class FrameCounterExhaustedError(FrameSecurityError):
    """The outgoing frame counter reached 0xFFFFFFFF, which must not be sent (§4.4.1.1)."""


@dataclass(frozen=True, slots=True)
class AuxHeader:
    """The auxiliary security header of §4.5.1: security control, frame counter, the optional source IEEE
    address (present when the extended-nonce bit is set) and the key sequence number (present for key id 1).

    `level` is what the security control byte carries; on the air that is 0 (see the module docstring).
    `source` is the IEEE address as sent, least significant byte first. `reserved` keeps bits 6-7 as received.
    """

    key_id: KeyId
    frame_counter: int
    source: bytes | None = None
    key_sequence: int | None = None
    level: int = 0
    reserved: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.frame_counter <= MAX_FRAME_COUNTER:
            raise ValueError(f"frame counter {self.frame_counter} is not a 32-bit value")
        if self.source is not None and len(self.source) != EUI64_SIZE:
            raise ValueError(f"source IEEE address: expected {EUI64_SIZE} bytes, got {len(self.source)}")
        if (self.key_id == KeyId.NETWORK) != (self.key_sequence is not None):
            raise ValueError("a key sequence number is carried with key id 1 (network key) and only with it")
        if not 0 <= self.level <= _LEVEL_MASK or self.reserved & ~_RESERVED_MASK:
            raise ValueError(f"level {self.level} or reserved bits {self.reserved:#x} out of range")

    @property
    def control(self) -> int:
        """The security control byte as this header carries it."""
        extended = _EXTENDED_NONCE if self.source is not None else 0
        return self.level | self.key_id << _KEY_ID_SHIFT | extended | self.reserved

    @property
    def size(self) -> int:
        return 5 + (EUI64_SIZE if self.source is not None else 0) + (1 if self.key_sequence is not None else 0)

    def to_bytes(self) -> bytes:
        return self._pack(self.control)

    def _pack(self, control: int) -> bytes:
        data = bytes([control]) + _COUNTER.pack(self.frame_counter)
        if self.source is not None:
            data += self.source
        if self.key_sequence is not None:
            data += bytes([self.key_sequence])
        return data

    @classmethod
    def from_bytes(cls, data: bytes, offset: int = 0) -> AuxHeader:
        """Read the header starting at `offset` (whatever follows it is ignored; `size` says where it ends)."""
        if len(data) < offset + 5:
            raise MalformedFrameError(f"auxiliary security header: expected at least 5 bytes at offset {offset}")
        control = data[offset]
        key_id = _KEY_IDS[(control & _KEY_ID_MASK) >> _KEY_ID_SHIFT]
        (frame_counter,) = _COUNTER.unpack_from(data, offset + 1)
        position = offset + 5
        source = None
        if control & _EXTENDED_NONCE:
            source = bytes(data[position : position + EUI64_SIZE])
            position += EUI64_SIZE
        key_sequence = None
        if key_id == KeyId.NETWORK:
            key_sequence = data[position] if position < len(data) else 0
            position += 1
        if position > len(data):
            raise MalformedFrameError(f"auxiliary security header (control {control:#04x}) runs past the frame")
        return cls(key_id, frame_counter, source, key_sequence, control & _LEVEL_MASK, control & _RESERVED_MASK)

    def with_level(self, level: int) -> AuxHeader:
        return AuxHeader(self.key_id, self.frame_counter, self.source, self.key_sequence, level, self.reserved)


@lru_cache(maxsize=1024)
def cipher(key: bytes) -> AESCCM:
    """The AES-CCM object of a 16-byte key with a 4-byte MIC, made once per key (the hot path reuses it)."""
    if len(key) != KEY_SIZE:
        raise ValueError(f"a CCM* key is {KEY_SIZE} bytes, got {len(key)}")
    return AESCCM(key, tag_length=MIC_LENGTH)


@lru_cache(maxsize=1024)
def derive_key(link_key: bytes, key_id: KeyId) -> bytes:
    """The key a frame with `key_id` is protected with, from the link key (§4.5.3; B.1.4 keyed hash).

    Key id 0 uses the link key itself, key id 2 its key-transport key HMAC-MMO(key, 0x00) and key id 3 its
    key-load key HMAC-MMO(key, 0x02). The network key (key id 1) is not derived from a link key.
    """
    if len(link_key) != KEY_SIZE:
        raise ValueError(f"a link key is {KEY_SIZE} bytes, got {len(link_key)}")
    if key_id == KeyId.DATA:
        return link_key
    if key_id == KeyId.KEY_TRANSPORT:
        return hmac_mmo(link_key, b"\x00")
    if key_id == KeyId.KEY_LOAD:
        return hmac_mmo(link_key, b"\x02")
    raise ValueError("the network key (key id 1) is not derived from a link key")


def nonce(source: bytes, frame_counter: int, control: int) -> bytes:
    """The CCM* nonce of §4.5.2.2: source IEEE address (as sent) ‖ frame counter LE ‖ security control."""
    return source + _COUNTER.pack(frame_counter) + bytes([control])


def encrypt(key: bytes, header: bytes, aux: AuxHeader, payload: bytes, source: bytes | None = None) -> bytes:
    """`aux` as sent (level 0) ‖ E(payload) ‖ MIC, for a frame whose header is `header`.

    The nonce and the authenticated data use the network security level (5); `source` is the sender's IEEE
    address when the header does not carry it (extended nonce off).
    """
    sender = _source(aux, source)
    sent = aux.control & ~_LEVEL_MASK
    control = sent | NETWORK_SECURITY_LEVEL
    sealed = cipher(key).encrypt(nonce(sender, aux.frame_counter, control), payload, header + aux._pack(control))
    return aux._pack(sent) + sealed


def decrypt(key: bytes, header: bytes, aux: AuxHeader, sealed: bytes, source: bytes | None = None) -> bytes:
    """The payload of a frame whose header is `header`, auxiliary header `aux` (as received) and encrypted
    payload with its MIC `sealed`. Raises `BadMicError` if the MIC does not verify under `key`."""
    sender = _source(aux, source)
    if len(sealed) < MIC_LENGTH:
        raise MalformedFrameError(f"secured payload of {len(sealed)} bytes has no room for the {MIC_LENGTH}-byte MIC")
    control = (aux.control & ~_LEVEL_MASK) | NETWORK_SECURITY_LEVEL
    authenticated = header + aux._pack(control)
    try:
        return cipher(key).decrypt(nonce(sender, aux.frame_counter, control), sealed, authenticated)
    except InvalidTag:
        raise BadMicError(f"MIC check failed (key id {aux.key_id.name}, frame counter {aux.frame_counter})") from None


def _source(aux: AuxHeader, source: bytes | None) -> bytes:
    sender = aux.source if aux.source is not None else source
    if sender is None:
        raise UnknownKeyError("the frame carries no source IEEE address and none was given for the nonce")
    if len(sender) != EUI64_SIZE:
        raise ValueError(f"source IEEE address: expected {EUI64_SIZE} bytes, got {len(sender)}")
    return sender
