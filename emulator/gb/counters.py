"""GBCS originator counters: the replay protection of GBCS §11.5, as values.

Every originator numbers the messages it originates with a strictly increasing counter, and a recipient accepts
a command only when its counter is above the last one accepted from that originator. `Counters` holds both
sides for one node; its JSON form (`as_json`, `from_json`) is what a state directory keeps between runs, so that
a device never reuses a counter and never takes a replayed command after a restart. Reading and writing the file
is the caller's part (`emulator.han.originators`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import zigpy.types as t

from emulator.errors import InputError

COUNTER_FORMAT = 1


class CounterFileError(InputError):
    """Kept counters that are not ones this program wrote for this node."""


@dataclass(slots=True)
class Counters:
    """The counters of one originator: `last`, its own originator counter, and `accepted`, the highest counter
    it accepted from each remote originator (keyed by the printed EUI-64, as the JSON form keeps them)."""

    ieee: t.EUI64
    last: int = 0
    accepted: dict[str, int] = field(default_factory=dict)

    def next(self, at_least: int = 0) -> int:
        """The counter of the next message this originator sends: above the last, and at least `at_least`."""
        self.last = max(self.last + 1, at_least)
        return self.last

    def last_accepted(self, originator: t.EUI64) -> int | None:
        return self.accepted.get(str(originator))

    def accept(self, originator: t.EUI64, counter: int) -> None:
        self.accepted[str(originator)] = counter

    def as_json(self) -> dict[str, Any]:
        return {
            "format": COUNTER_FORMAT,
            "ieee": str(self.ieee),
            "originator_counter": self.last,
            "accepted": dict(self.accepted),
        }

    @classmethod
    def from_json(cls, data: object, ieee: t.EUI64, source: str) -> Counters:
        """The counters `as_json` wrote for `ieee`; anything else is a `CounterFileError` naming `source`."""
        if not (
            isinstance(data, dict)
            and data.get("format") == COUNTER_FORMAT
            and data.get("ieee") == str(ieee)
            and _is_int(data.get("originator_counter"))
            and isinstance(data.get("accepted"), dict)
            and all(isinstance(k, str) and _is_int(v) for k, v in data["accepted"].items())
        ):
            raise CounterFileError(f"{source}: not a GBCS counter file of device {ieee} (format {COUNTER_FORMAT})")
        return cls(ieee, data["originator_counter"], dict(data["accepted"]))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
