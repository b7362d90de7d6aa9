"""What an emulated device tells the world while it upgrades.

A run, the CLI's progress display and the conformance bench all watch devices through these events instead of
reaching into device state, so each event carries everything needed to judge it on its own: which device
(`ieee`), when in protocol seconds (`at`, the device clock's `now()`), and the specifics. They are frozen so one
event object can be handed to many listeners safely.

GB response and alert codes are the ones `emulator.gb.codes` defines, so an event compares equal to the number
a GBCS message would carry.
"""

from __future__ import annotations

from dataclasses import dataclass

import zigpy.types as t

from emulator.gb.codes import ActivateImageResult, ActivationResponse, AlertCode

__all__ = [
    "ActivateImageResult",
    "Activated",
    "ActivationOutcome",
    "ActivationReply",
    "ActivationResponse",
    "AlertCode",
    "Announced",
    "CountdownStarted",
    "DeviceEvent",
    "DiscoveryFailed",
    "DownloadAborted",
    "DownloadStarted",
    "FrameRejected",
    "ImageOffered",
    "ImageVerified",
    "NotifyReceived",
    "PageFallback",
    "Progress",
    "QueryAnswered",
    "QuerySent",
    "ServerDiscovered",
    "UpgradeEndSent",
    "WaitingForData",
    "WaitingToUpgrade",
]


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    ieee: t.EUI64
    at: float


@dataclass(frozen=True, slots=True)
class Announced(DeviceEvent):
    """A ZDO Device_annce went out: on joining, and again when the device reboots into new firmware."""

    nwk: int


@dataclass(frozen=True, slots=True)
class ServerDiscovered(DeviceEvent):
    server_nwk: int
    server_endpoint: int
    server_ieee: t.EUI64


@dataclass(frozen=True, slots=True)
class DiscoveryFailed(DeviceEvent):
    """No usable Match_Desc/IEEE_addr answer; the device tries again after `retry_in` seconds."""

    reason: str
    retry_in: float


@dataclass(frozen=True, slots=True)
class NotifyReceived(DeviceEvent):
    """An Image Notify arrived; `queried` says whether it led to a Query Next Image Request, `reason` why."""

    payload_type: int
    query_jitter: int
    broadcast: bool
    queried: bool
    reason: str


@dataclass(frozen=True, slots=True)
class QuerySent(DeviceEvent):
    image_type: int
    file_version: int
    hardware_version: int | None


@dataclass(frozen=True, slots=True)
class QueryAnswered(DeviceEvent):
    """A query that did not offer an image: `status` is the QNI Response status, None when nothing came back."""

    status: int | None


@dataclass(frozen=True, slots=True)
class ImageOffered(DeviceEvent):
    """A QNI Response SUCCESS; `accepted` is False when the offer was discarded (`reason` says why)."""

    manufacturer_code: int
    image_type: int
    file_version: int
    image_size: int
    accepted: bool
    reason: str


@dataclass(frozen=True, slots=True)
class DownloadStarted(DeviceEvent):
    """A download began or resumed (`offset` > 0 after a restart)."""

    image_type: int
    version: int
    size: int
    offset: int


@dataclass(frozen=True, slots=True)
class Progress(DeviceEvent):
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class WaitingForData(DeviceEvent):
    """The server answered WAIT_FOR_DATA; the device waits `delay` seconds (MinimumBlockPeriod as now held)."""

    delay: float
    minimum_block_period: int


@dataclass(frozen=True, slots=True)
class PageFallback(DeviceEvent):
    """The server does not support Image Page Requests; the device uses Image Block Requests from now on."""


@dataclass(frozen=True, slots=True)
class DownloadAborted(DeviceEvent):
    reason: str
    offset: int
    upgrade_end_sent: bool


@dataclass(frozen=True, slots=True)
class ImageVerified(DeviceEvent):
    ok: bool
    reason: str
    version: int


@dataclass(frozen=True, slots=True)
class UpgradeEndSent(DeviceEvent):
    status: int
    manufacturer_code: int
    image_type: int
    file_version: int


@dataclass(frozen=True, slots=True)
class WaitingToUpgrade(DeviceEvent):
    """The verified image is held: the server said wait (status 3) or, with `external`, activation may only come
    out of band (status 6)."""

    version: int
    external: bool


@dataclass(frozen=True, slots=True)
class CountdownStarted(DeviceEvent):
    delay: float
    version: int


@dataclass(frozen=True, slots=True)
class Activated(DeviceEvent):
    """The device tried to run the held image. For a PPMID this is the CS09 PPMID Firmware Activation Alert:
    `alert_code` 0x8F8B, the firmware version now running and activateImage success (0) or failure (1)."""

    old_version: int
    new_version: int
    success: bool
    alert_code: AlertCode | None
    activate_image: ActivateImageResult


@dataclass(frozen=True, slots=True)
class ActivationOutcome(DeviceEvent):
    """The executionOutcome of an Activate Firmware command (CS06). `future_dated` outcomes are the ones a
    device reports later in a 0x00CA alert, with `alert_code` 0x8F66 (success) or 0x8F67 (failure)."""

    response_code: ActivationResponse
    version: int
    future_dated: bool
    alert_code: AlertCode | None


@dataclass(frozen=True, slots=True)
class FrameRejected(DeviceEvent):
    """The device answered a frame with an error Default Response (or, for a broadcast, dropped it)."""

    cluster_id: int
    command_id: int
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class ActivationReply:
    """The device's answer to Activate Firmware (CS06 response CHOICE): `accepted` for a future-dated command
    (commandAccepted; the outcome follows as an `ActivationOutcome` event at that time), otherwise the
    executionOutcome: `response_code` and the firmware version running afterwards."""

    accepted: bool
    response_code: ActivationResponse | None
    firmware_version: int
