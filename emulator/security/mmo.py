"""The AES-MMO hash and HMAC-MMO of the Zigbee specification (05-3474 Annex B.6 and B.1.4).

Zigbee and Smart Energy hash with Matyas-Meyer-Oseas over AES-128, never SHA: install-code link keys, the
key-transport and key-load keys, the CBKE certificate hash, KDF and MACs all use it. zigpy's `aes_mmo_hash`
knows only the padding for messages below 2^16 bits; this module also pads longer messages as Annex B.6 says
(a 32-bit length followed by two zero bytes), so a whole upgrade image can be hashed.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 16
_IPAD = bytes([0x36] * BLOCK)
_OPAD = bytes([0x5C] * BLOCK)
_SHORT_LIMIT_BITS = 1 << 16


def _encrypt_block(key: bytes, block: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def pad(message: bytes) -> bytes:
    """The message padded per Annex B.6: a 1 bit, zeros, then the bit length (16-bit, or 32-bit and 0x0000 for
    messages of 2^16 bits or more), filled to a whole number of 16-byte blocks."""
    bits = 8 * len(message)
    trailer = bits.to_bytes(2, "big") if bits < _SHORT_LIMIT_BITS else bits.to_bytes(4, "big") + b"\x00\x00"
    padded = message + b"\x80"
    zeros = -(len(padded) + len(trailer)) % BLOCK
    return padded + bytes(zeros) + trailer


def mmo_hash(message: bytes) -> bytes:
    """AES-MMO of `message`: H0 = 0^16, Hj = AES(Hj-1, Mj) xor Mj over the padded blocks; 16 bytes."""
    state = bytes(BLOCK)
    padded = pad(message)
    for start in range(0, len(padded), BLOCK):
        block = padded[start : start + BLOCK]
        cipher = _encrypt_block(state, block)
        state = bytes(a ^ b for a, b in zip(cipher, block, strict=True))
    return state


def hmac_mmo(key: bytes, message: bytes) -> bytes:
    """The keyed hash of Annex B.1.4 with a 16-byte key: MMO((K xor opad) || MMO((K xor ipad) || M))."""
    if len(key) != BLOCK:
        raise ValueError(f"an HMAC-MMO key is {BLOCK} bytes, got {len(key)}")
    inner = mmo_hash(bytes(a ^ b for a, b in zip(key, _IPAD, strict=True)) + message)
    return mmo_hash(bytes(a ^ b for a, b in zip(key, _OPAD, strict=True)) + inner)
