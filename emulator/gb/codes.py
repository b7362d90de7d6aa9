"""The numbers GBCS gives the firmware use cases: CRA flags, message codes, alert codes and response codes.

Values from SPEC.md §8.3 (gbcs-parser's tables, checked against the DCC RTDS 4.5.0 vectors). They are IntEnums
so that a decoded message prints its meaning and still compares equal to the number on the wire.
"""

from __future__ import annotations

from enum import IntEnum


class CraFlag(IntEnum):
    """First byte of the GBCS transaction id: what kind of message the frame carries."""

    COMMAND = 1
    RESPONSE = 2
    ALERT = 3


class MessageCode(IntEnum):
    """Message codes (general-signing other-information) of the firmware use cases."""

    CS06_ACTIVATE_FIRMWARE = 0x0012
    CS06_FUTURE_DATED_ACTIVATE_FIRMWARE_ALERT = 0x00CA
    CCS08_FIRMWARE_TRANSFER_ALERT = 0x0128
    CS08_READ_PPMID_HCALCS_FIRMWARE_VERSION = 0x0129
    CS09_PPMID_FIRMWARE_ACTIVATION_ALERT = 0x012B


MESSAGE_TITLES: dict[MessageCode, str] = {
    MessageCode.CS06_ACTIVATE_FIRMWARE: "CS06 Activate Firmware",
    MessageCode.CS06_FUTURE_DATED_ACTIVATE_FIRMWARE_ALERT: "CS06 Future-Dated Activate Firmware Alert",
    MessageCode.CCS08_FIRMWARE_TRANSFER_ALERT: "CCS08 Firmware Transfer Alert",
    MessageCode.CS08_READ_PPMID_HCALCS_FIRMWARE_VERSION: "CS08 Read PPMID/HCALCS Firmware Version",
    MessageCode.CS09_PPMID_FIRMWARE_ACTIVATION_ALERT: "CS09 PPMID Firmware Activation Alert",
}


class AlertCode(IntEnum):
    """GBCS alert codes carried in the alertCode INTEGER of the firmware alerts."""

    FUTURE_DATED_COMMAND_SUCCESS = 0x8F66
    FUTURE_DATED_COMMAND_FAILURE = 0x8F67
    FIRMWARE_TRANSFER_FAILURE = 0x8F89
    FIRMWARE_TRANSFER_SUCCESS = 0x8F8A
    FIRMWARE_VERSION = 0x8F8B


class TransferResponse(IntEnum):
    """CCS08 responseCode: what became of the image the CHF held for one target device."""

    SUCCESS = 0
    IMAGE_DISCARDED = 1
    HARDWARE_VERSION_MISMATCH = 2
    FILE_TRANSFER_FAILURE = 3


class ActivationResponse(IntEnum):
    """CS06 executionOutcome responseCode: why an activation did or did not happen."""

    SUCCESS = 0
    NO_IMAGE_HELD = 1
    HASH_MISMATCH = 2
    ACTIVATION_FAILURE = 3


class ActivateImageResult(IntEnum):
    """CS09 activateImage: whether the PPMID now runs the new image."""

    SUCCESS = 0
    FAILURE = 1


class ReadResult(IntEnum):
    """CS08 response responseCode."""

    READ_SUCCESS = 0
    READ_FAILURE = 1
