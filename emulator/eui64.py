"""EUI-64 addresses as dictionary keys that hash in constant time.

zigpy's `EUI64` hashes its text form (`hash(repr(self))`): every dictionary or set lookup by an EUI-64 formats
eight bytes into "aa:bb:...". That costs about as much as the rest of an OTA block round trip's bookkeeping, and
the CHF looks a device up by EUI-64 several times per block (the DeviceIDList, the transfer, the link key). An
`Eui64Key` is an `EUI64` — equal to it, with the same hash, usable wherever zigpy expects one — that computes its
hash once. Hot paths turn the address they resolve into one with `eui64_key` and cache it.
"""

from __future__ import annotations

from typing import Any

import zigpy.types as t


class Eui64Key(t.EUI64):
    """An EUI-64 whose hash (the same as zigpy's) is computed once, when it is made."""

    __slots__ = ("_hash",)
    _hash: int

    def __hash__(self) -> int:  # type: ignore[override]  # list says unhashable; EUI64 hashes, so do we
        return self._hash

    def __reduce__(self) -> tuple[Any, ...]:
        return (eui64_key, (t.EUI64(self),))


def eui64_key(ieee: t.EUI64) -> Eui64Key:
    """`ieee` as an `Eui64Key` (itself when it already is one)."""
    if isinstance(ieee, Eui64Key):
        return ieee
    key = Eui64Key(ieee)
    key._hash = t.EUI64.__hash__(key)
    return key
