"""What the CHF OTA server reports while it works. A run prints them, the conformance bench judges from
them, and `TransferOutcome` is the event a GB CHF turns into a CCS08 Firmware Transfer Alert."""

from __future__ import annotations

from dataclasses import dataclass

import zigpy.types as t

from emulator.gb.codes import AlertCode, TransferResponse


@dataclass(frozen=True)
class ServerEvent:
    ieee: t.EUI64 | None
    at: float


@dataclass(frozen=True)
class QueryAnswered(ServerEvent):
    status: int
    offered_version: int | None
    reason: str


@dataclass(frozen=True)
class TransferStarted(ServerEvent):
    file_version: int
    size: int
    offset: int


@dataclass(frozen=True)
class WaitForDataSent(ServerEvent):
    delay: int
    minimum_block_period: int | None
    reason: str


@dataclass(frozen=True)
class UpgradeEndReceived(ServerEvent):
    status: int
    file_version: int


@dataclass(frozen=True)
class UpgradeEndResponseSent(ServerEvent):
    file_version: int
    current_time: int
    upgrade_time: int
    unsolicited: bool


@dataclass(frozen=True)
class NotifySent(ServerEvent):
    payload_type: int
    query_jitter: int
    broadcast: bool


@dataclass(frozen=True)
class DefaultResponseReceived(ServerEvent):
    command_id: int
    status: int


@dataclass(frozen=True)
class FrameRejected(ServerEvent):
    command_id: int
    status: int
    reason: str


@dataclass(frozen=True)
class TransferOutcome(ServerEvent):
    """The fate of an image for one target device, with CCS08 meaning (SPEC.md §8.3, §8.6)."""

    manufacturer_id: int
    image_type: int
    file_version: int
    response: TransferResponse
    reason: str

    @property
    def alert_code(self) -> AlertCode:
        if self.response == TransferResponse.SUCCESS:
            return AlertCode.FIRMWARE_TRANSFER_SUCCESS
        return AlertCode.FIRMWARE_TRANSFER_FAILURE
