"""Choosing checks: the one way a run, the command line and the pytest plugin turn check IDs into checks.

IDs are matched case-insensitively and come back in catalogue order; an unknown ID is an input error naming
the valid ones, raised before anything runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from emulator.errors import InputError

T = TypeVar("T")


class UnknownCheckError(InputError):
    """A check ID that is not in the catalogue."""


def parse_ids(text: str) -> list[str]:
    """`C-01,C-13` (spaces allowed) as a list of IDs, in the order given."""
    return [part.strip() for part in text.split(",") if part.strip()]


def select(ids: Sequence[str] | None, catalogue: Mapping[str, T]) -> list[T]:
    """The entries of `catalogue` named (case-insensitively), in catalogue order; all of them for None."""
    if ids is None:
        return list(catalogue.values())
    by_upper = {key.upper(): key for key in catalogue}
    unknown = [i for i in ids if i.upper() not in by_upper]
    if unknown or not ids:
        named = ", ".join(unknown) if unknown else "none"
        raise UnknownCheckError(f"--checks: unknown check ID(s) {named}; valid IDs: {', '.join(catalogue)}")
    wanted = {by_upper[i.upper()] for i in ids}
    return [entry for key, entry in catalogue.items() if key in wanted]
