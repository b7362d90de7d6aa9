"""Typed access to zigpy `Struct` operations whose annotations are looser than what they do.

zigpy 2.4 annotates `Struct.replace(self, **kwargs: dict[str, Any]) -> Struct`: as written, every new field value
would have to be a dict and the copy would lose its class. In fact it takes field values and returns an instance
of `type(self)` (frozen again if the original was). `replaced` states that, so callers keep their header and
frame-control types instead of casting at every call.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

import zigpy.types as t

S = TypeVar("S", bound=t.Struct)


def replaced(struct: S, **changes: Any) -> S:
    """A copy of `struct` with the named fields changed (zigpy's `Struct.replace`, with its real types)."""
    return cast(S, struct.replace(**changes))
