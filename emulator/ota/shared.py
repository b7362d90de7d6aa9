"""Upgrade-file bytes kept once per process, however many holders they have.

A run of a thousand devices upgrading from one CHF would otherwise hold the same image a thousand and one times:
the CHF's copy it serves blocks from, and each device's verified copy, which becomes the image it runs. `share`
returns the one `SharedBytes` holding bytes equal to its argument for as long as anything holds it (the CHF's
image store does for the whole run), so every holder of the same image refers to the same bytes object. Nothing
is copied; when the last holder goes, so does the entry.
"""

from __future__ import annotations

import weakref


class SharedBytes:
    """Bytes that identical images share; keep a reference to this (not only to `data`) to keep them shared."""

    __slots__ = ("__weakref__", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data


# Keyed by the bytes themselves: a bytes object caches its hash, and equal keys mean equal images.
_POOL: weakref.WeakValueDictionary[bytes, SharedBytes] = weakref.WeakValueDictionary()


def share(data: bytes) -> SharedBytes:
    """The `SharedBytes` for bytes equal to `data`: an existing one, else a new one holding `data` itself."""
    data = bytes(data)
    shared = _POOL.get(data)
    if shared is None:
        shared = _POOL[data] = SharedBytes(data)
    return shared
