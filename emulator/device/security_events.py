"""What an emulated device reports about Smart Energy security: joining by install code, key establishment and
frames its APS layer refused. They are `DeviceEvent`s, so runs and listeners take them like any other."""

from __future__ import annotations

from dataclasses import dataclass

import zigpy.types as t

from emulator.device.events import DeviceEvent


@dataclass(frozen=True, slots=True)
class Admitted(DeviceEvent):
    """The device opened the trust centre's Transport-Key with its install-code key: it holds the network key."""

    trust_centre: t.EUI64


@dataclass(frozen=True, slots=True)
class NotAdmitted(DeviceEvent):
    """The device never got the network key (not in the CHF's Device Log, or another install code)."""

    reason: str


@dataclass(frozen=True, slots=True)
class KeyEstablished(DeviceEvent):
    """CBKE (SE Annex C.4.2) succeeded: the device now uses the new link key with `partner`."""

    suite: int
    partner: t.EUI64


@dataclass(frozen=True, slots=True)
class KeyEstablishmentFailed(DeviceEvent):
    """CBKE failed: `status` is the Terminate Key Establishment status name (or TIMEOUT / NO_SERVER)."""

    status: str
    reason: str


@dataclass(frozen=True, slots=True)
class FrameDropped(DeviceEvent):
    """The device's APS layer refused a frame (e.g. an OTA command without APS encryption)."""

    cluster_id: int
    command_id: int | None
    reason: str
    detail: str
