"""Which radio a CHF or an emulated device runs on, by the name the command line and the JSON reports use."""

from __future__ import annotations

from enum import StrEnum


class RadioKind(StrEnum):
    """`--radio` and the JSON `radio` field: the value is the text users write and read."""

    LOOPBACK = "loopback"  # in process: zigpy's loopback app (the CHF) and the emulated devices on the virtual air
    EZSP = "ezsp"  # bellows over ASH/EZSP: a Silicon Labs stick, or the virtual NCP (`ota-emu ncp`)
