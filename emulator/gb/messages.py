"""DER content of the GBCS firmware messages (SPEC.md §8.3), as typed values.

Each message is a frozen dataclass that knows its message code and CRA flag, encodes itself with asn1crypto
and decodes strictly: a decoded value must re-encode to exactly the bytes it came from, so non-canonical DER,
trailing data or unknown enumeration values are rejected rather than silently normalised — a device under test
that sends them is wrong, and the RTDS vectors all pass this check.

Byte conventions: identifiers are `zigpy.types.EUI64` (the project's IEEE type; on the wire GBCS writes them
most significant byte first, the order zigpy prints); firmware versions are the raw octets (a 32-bit OTA file
version is `version.to_bytes(4, "big")`); date-times are timezone-aware and normalised to UTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, ClassVar, NoReturn, Self, TypeVar

import zigpy.types as t
from asn1crypto import core

from emulator.errors import InputError
from emulator.gb.codes import (
    ActivateImageResult,
    ActivationResponse,
    AlertCode,
    CraFlag,
    MessageCode,
    ReadResult,
    TransferResponse,
)

EUI64_LENGTH = 8
FIRMWARE_VERSION_LENGTH = 4
IMAGE_HASH_LENGTH = 32
COUNTER_LIMIT = 1 << 64  # originator counters are the 8-byte GBCS transaction counter


class GbcsError(InputError):
    """A GBCS frame or message content that does not have the expected structure."""


# ---------------------------------------------------------------------------------------------------------------
# ASN.1 schemas (gbcs-parser asn1.ts, SPEC.md §8.3)


class _FirmwareTransferAlertDer(core.Sequence):
    _fields: ClassVar[list[tuple[Any, ...]]] = [
        ("alertCode", core.Integer),
        ("executionDateTime", core.GeneralizedTime),
        ("entityId", core.OctetString),
        ("firmwareVersion", core.OctetString),
        ("responseCode", core.Integer),
    ]


class _ReadFirmwareVersionResponseDer(core.Sequence):
    _fields: ClassVar[list[tuple[Any, ...]]] = [
        ("firmwareVersion", core.OctetString),
        ("responseCode", core.Integer),
    ]


class _PpmidFirmwareActivationAlertDer(core.Sequence):
    _fields: ClassVar[list[tuple[Any, ...]]] = [
        ("alertCode", core.Integer),
        ("executionDateTime", core.GeneralizedTime),
        ("firmwareVersion", core.OctetString),
        ("activateImage", core.Integer),
    ]


class _ActivateFirmwareCommandDer(core.Sequence):
    _fields: ClassVar[list[tuple[Any, ...]]] = [
        ("manufacturerImageHash", core.OctetString),
        ("originatorCounter", core.Integer),
        ("executionDateTime", core.GeneralizedTime, {"optional": True}),
    ]


class _ExecutionOutcomeDer(core.Sequence):
    _fields: ClassVar[list[tuple[Any, ...]]] = [
        ("responseCode", core.Integer),
        ("firmwareVersion", core.OctetString),
    ]


class _ActivateFirmwareResponseDer(core.Choice):
    _alternatives: ClassVar[list[tuple[Any, ...]]] = [
        ("commandAccepted", core.Null),
        ("executionOutcome", _ExecutionOutcomeDer),
    ]


class _ActivateFirmwareAlertDer(core.Sequence):
    _fields: ClassVar[list[tuple[Any, ...]]] = [
        ("alertCode", core.Integer),
        ("executionDateTime", core.GeneralizedTime),
        ("originatorCounter", core.Integer),
        ("executionOutcome", _ExecutionOutcomeDer),
    ]


# ---------------------------------------------------------------------------------------------------------------
# Field checks shared by construction and decoding (and by the frame header in frame.py): a bad value raises
# GbcsError naming the field.

E = TypeVar("E", bound=IntEnum)
_Der = TypeVar("_Der", bound=core.Asn1Value)


def _enum(cls: type[E], value: object, field: str, allowed: tuple[E, ...] | None = None) -> E:
    choices = allowed or tuple(cls)
    if isinstance(value, int) and not isinstance(value, bool) and value in {int(c) for c in choices}:
        return cls(value)
    expected = ", ".join(f"{c.name.lower()} ({_show(c, cls)})" for c in choices)
    return _fail(f"{field} is {_show(value, cls)}, expected one of {expected}")


def _show(value: object, cls: type[IntEnum]) -> str:
    if not isinstance(value, int):
        return type(value).__name__
    return f"0x{value:04X}" if cls is AlertCode else str(value)


def _octets(value: object, field: str, length: int | None = None) -> bytes:
    if not isinstance(value, bytes):
        _fail(f"{field} is {type(value).__name__}, expected bytes")
    if length is not None and len(value) != length:
        _fail(f"{field} is {len(value)} bytes, expected {length}")
    return value


def check_eui64(value: object, field: str) -> t.EUI64:
    """Accept zigpy's EUI64 or 8 bytes in GBCS wire order (most significant first, as printed)."""
    if isinstance(value, t.EUI64):
        return value
    return t.EUI64(reversed(_octets(value, field, EUI64_LENGTH)))


def eui64_octets(eui: t.EUI64) -> bytes:
    """GBCS writes an EUI-64 most significant byte first; zigpy keeps it little-endian."""
    return bytes(reversed(eui))


def check_counter(value: object, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < COUNTER_LIMIT:
        _fail(f"{field} is {value!r}, expected an integer 0..2^64-1")
    return value


def check_utc(value: object, field: str) -> datetime:
    if not isinstance(value, datetime):
        _fail(f"{field} is {type(value).__name__}, expected a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        _fail(f"{field} has no time zone, expected a UTC date-time")
    return value.astimezone(UTC)


def _fail(message: str) -> NoReturn:
    raise GbcsError(message)


def _set(obj: object, field: str, value: object) -> None:
    object.__setattr__(obj, field, value)


@contextmanager
def _decoding(source: str, what: str) -> Iterator[None]:
    """Turn asn1crypto's parse errors and our field checks into one GbcsError naming the input."""
    try:
        yield
    except GbcsError as exc:
        raise GbcsError(f"{source}: {what}: {exc}") from None
    except ValueError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GbcsError(f"{source}: not a DER {what} ({reason})") from None


def _load(schema: type[_Der], data: bytes) -> _Der:
    value = schema.load(data, strict=True)
    value.native  # noqa: B018 - parse every nested field now, inside the error handler
    return value


def _canonical(message: _Message, data: bytes) -> None:
    if message.encode() != data:
        raise GbcsError("not canonical DER (extra, missing or re-encoded fields)")


# ---------------------------------------------------------------------------------------------------------------
# Messages


class _Message:
    MESSAGE_CODE: ClassVar[MessageCode]
    CRA_FLAG: ClassVar[CraFlag]
    TITLE: ClassVar[str]

    def encode(self) -> bytes:
        raise NotImplementedError


@dataclass(frozen=True)
class FirmwareTransferAlert(_Message):
    """CCS08 (0x0128): the CHF reports, per target device, what became of the image it held for it."""

    MESSAGE_CODE: ClassVar[MessageCode] = MessageCode.CCS08_FIRMWARE_TRANSFER_ALERT
    CRA_FLAG: ClassVar[CraFlag] = CraFlag.ALERT
    TITLE: ClassVar[str] = "CCS08 FirmwareTransferAlert"

    alert_code: AlertCode
    execution_datetime: datetime
    entity_id: t.EUI64
    firmware_version: bytes
    response_code: TransferResponse

    def __post_init__(self) -> None:
        ok = (AlertCode.FIRMWARE_TRANSFER_FAILURE, AlertCode.FIRMWARE_TRANSFER_SUCCESS)
        _set(self, "alert_code", _enum(AlertCode, self.alert_code, "alertCode", ok))
        _set(self, "execution_datetime", check_utc(self.execution_datetime, "executionDateTime"))
        _set(self, "entity_id", check_eui64(self.entity_id, "entityId"))
        _octets(self.firmware_version, "firmwareVersion", FIRMWARE_VERSION_LENGTH)
        _set(self, "response_code", _enum(TransferResponse, self.response_code, "responseCode"))

    def encode(self) -> bytes:
        return _FirmwareTransferAlertDer(
            {
                "alertCode": int(self.alert_code),
                "executionDateTime": self.execution_datetime,
                "entityId": eui64_octets(self.entity_id),
                "firmwareVersion": self.firmware_version,
                "responseCode": int(self.response_code),
            }
        ).dump(force=True)

    @classmethod
    def decode(cls, data: bytes, source: str = "content") -> Self:
        with _decoding(source, cls.TITLE):
            der = _load(_FirmwareTransferAlertDer, data)
            message = cls(
                alert_code=der["alertCode"].native,
                execution_datetime=der["executionDateTime"].native,
                entity_id=der["entityId"].native,
                firmware_version=der["firmwareVersion"].native,
                response_code=der["responseCode"].native,
            )
            _canonical(message, data)
        return message


@dataclass(frozen=True)
class ReadFirmwareVersionCommand(_Message):
    """CS08 command (0x0129): ask a PPMID or HCALCS for its firmware version; the content is a DER NULL."""

    MESSAGE_CODE: ClassVar[MessageCode] = MessageCode.CS08_READ_PPMID_HCALCS_FIRMWARE_VERSION
    CRA_FLAG: ClassVar[CraFlag] = CraFlag.COMMAND
    TITLE: ClassVar[str] = "CS08 ReadPPMIDHCALCSFirmwareVersion command"

    def encode(self) -> bytes:
        return core.Null().dump(force=True)

    @classmethod
    def decode(cls, data: bytes, source: str = "content") -> Self:
        with _decoding(source, cls.TITLE):
            _load(core.Null, data)
            message = cls()
            _canonical(message, data)
        return message


@dataclass(frozen=True)
class ReadFirmwareVersionResponse(_Message):
    """CS08 response (0x0129): the device's current firmware version."""

    MESSAGE_CODE: ClassVar[MessageCode] = MessageCode.CS08_READ_PPMID_HCALCS_FIRMWARE_VERSION
    CRA_FLAG: ClassVar[CraFlag] = CraFlag.RESPONSE
    TITLE: ClassVar[str] = "CS08 ReadPPMIDHCALCSFirmwareVersion response"

    firmware_version: bytes
    response_code: ReadResult

    def __post_init__(self) -> None:
        _octets(self.firmware_version, "firmwareVersion")
        _set(self, "response_code", _enum(ReadResult, self.response_code, "responseCode"))

    def encode(self) -> bytes:
        return _ReadFirmwareVersionResponseDer(
            {"firmwareVersion": self.firmware_version, "responseCode": int(self.response_code)}
        ).dump(force=True)

    @classmethod
    def decode(cls, data: bytes, source: str = "content") -> Self:
        with _decoding(source, cls.TITLE):
            der = _load(_ReadFirmwareVersionResponseDer, data)
            message = cls(firmware_version=der["firmwareVersion"].native, response_code=der["responseCode"].native)
            _canonical(message, data)
        return message


@dataclass(frozen=True)
class PpmidFirmwareActivationAlert(_Message):
    """CS09 (0x012B): a PPMID reports the outcome of activating a new image and the version it now runs.

    `alert_code` has one legal value (0x8F8B), hence the default; it is still a field so a decoded alert shows it.
    """

    MESSAGE_CODE: ClassVar[MessageCode] = MessageCode.CS09_PPMID_FIRMWARE_ACTIVATION_ALERT
    CRA_FLAG: ClassVar[CraFlag] = CraFlag.ALERT
    TITLE: ClassVar[str] = "CS09 PPMIDFirmwareActivationAlert"

    execution_datetime: datetime
    firmware_version: bytes
    activate_image: ActivateImageResult
    alert_code: AlertCode = AlertCode.FIRMWARE_VERSION

    def __post_init__(self) -> None:
        _set(self, "alert_code", _enum(AlertCode, self.alert_code, "alertCode", (AlertCode.FIRMWARE_VERSION,)))
        _set(self, "execution_datetime", check_utc(self.execution_datetime, "executionDateTime"))
        _octets(self.firmware_version, "firmwareVersion", FIRMWARE_VERSION_LENGTH)
        _set(self, "activate_image", _enum(ActivateImageResult, self.activate_image, "activateImage"))

    def encode(self) -> bytes:
        return _PpmidFirmwareActivationAlertDer(
            {
                "alertCode": int(self.alert_code),
                "executionDateTime": self.execution_datetime,
                "firmwareVersion": self.firmware_version,
                "activateImage": int(self.activate_image),
            }
        ).dump(force=True)

    @classmethod
    def decode(cls, data: bytes, source: str = "content") -> Self:
        with _decoding(source, cls.TITLE):
            der = _load(_PpmidFirmwareActivationAlertDer, data)
            message = cls(
                alert_code=der["alertCode"].native,
                execution_datetime=der["executionDateTime"].native,
                firmware_version=der["firmwareVersion"].native,
                activate_image=der["activateImage"].native,
            )
            _canonical(message, data)
        return message


@dataclass(frozen=True)
class ActivateFirmwareCommand(_Message):
    """CS06 command (0x0012): activate the held image whose Manufacturer Image Hash is given, now or at a time."""

    MESSAGE_CODE: ClassVar[MessageCode] = MessageCode.CS06_ACTIVATE_FIRMWARE
    CRA_FLAG: ClassVar[CraFlag] = CraFlag.COMMAND
    TITLE: ClassVar[str] = "CS06 ActivateFirmware command"

    manufacturer_image_hash: bytes
    originator_counter: int
    execution_datetime: datetime | None = None

    def __post_init__(self) -> None:
        _octets(self.manufacturer_image_hash, "manufacturerImageHash", IMAGE_HASH_LENGTH)
        check_counter(self.originator_counter, "originatorCounter")
        if self.execution_datetime is not None:
            _set(self, "execution_datetime", check_utc(self.execution_datetime, "executionDateTime"))

    def encode(self) -> bytes:
        value = {"manufacturerImageHash": self.manufacturer_image_hash, "originatorCounter": self.originator_counter}
        if self.execution_datetime is not None:
            value["executionDateTime"] = self.execution_datetime
        return _ActivateFirmwareCommandDer(value).dump(force=True)

    @classmethod
    def decode(cls, data: bytes, source: str = "content") -> Self:
        with _decoding(source, cls.TITLE):
            der = _load(_ActivateFirmwareCommandDer, data)
            message = cls(
                manufacturer_image_hash=der["manufacturerImageHash"].native,
                originator_counter=der["originatorCounter"].native,
                execution_datetime=der["executionDateTime"].native,
            )
            _canonical(message, data)
        return message


@dataclass(frozen=True)
class ExecutionOutcome:
    """CS06 executionOutcome: the activation result and the firmware version running afterwards."""

    response_code: ActivationResponse
    firmware_version: bytes

    def __post_init__(self) -> None:
        _set(self, "response_code", _enum(ActivationResponse, self.response_code, "responseCode"))
        _octets(self.firmware_version, "firmwareVersion")

    def _der(self) -> _ExecutionOutcomeDer:
        return _ExecutionOutcomeDer({"responseCode": int(self.response_code), "firmwareVersion": self.firmware_version})

    @classmethod
    def _from_der(cls, der: core.Asn1Value) -> Self:
        if not isinstance(der, _ExecutionOutcomeDer):  # asn1crypto builds each field as its schema's class
            _fail(f"executionOutcome is {type(der).__name__}, expected an ExecutionOutcome SEQUENCE")
        return cls(response_code=der["responseCode"].native, firmware_version=der["firmwareVersion"].native)


@dataclass(frozen=True)
class ActivateFirmwareResponse(_Message):
    """CS06 response (0x0012): `outcome` None is commandAccepted (future-dated: the outcome comes later in a
    0x00CA alert); otherwise the immediate executionOutcome."""

    MESSAGE_CODE: ClassVar[MessageCode] = MessageCode.CS06_ACTIVATE_FIRMWARE
    CRA_FLAG: ClassVar[CraFlag] = CraFlag.RESPONSE
    TITLE: ClassVar[str] = "CS06 ActivateFirmware response"

    outcome: ExecutionOutcome | None = None

    def __post_init__(self) -> None:
        if self.outcome is not None and not isinstance(self.outcome, ExecutionOutcome):
            _fail(f"executionOutcome is {type(self.outcome).__name__}, expected an ExecutionOutcome")

    def encode(self) -> bytes:
        if self.outcome is None:
            der = _ActivateFirmwareResponseDer(name="commandAccepted", value=core.Null())
        else:
            der = _ActivateFirmwareResponseDer(name="executionOutcome", value=self.outcome._der())
        return der.dump(force=True)

    @classmethod
    def decode(cls, data: bytes, source: str = "content") -> Self:
        with _decoding(source, cls.TITLE):
            der = _load(_ActivateFirmwareResponseDer, data)
            outcome = ExecutionOutcome._from_der(der.chosen) if der.name == "executionOutcome" else None
            message = cls(outcome=outcome)
            _canonical(message, data)
        return message


@dataclass(frozen=True)
class ActivateFirmwareAlert(_Message):
    """CS06 future-dated alert (0x00CA): the outcome of an activation that was scheduled by a CS06 command whose
    originator counter it repeats. 0x8F66 when the command was actioned, 0x8F67 when it was not."""

    MESSAGE_CODE: ClassVar[MessageCode] = MessageCode.CS06_FUTURE_DATED_ACTIVATE_FIRMWARE_ALERT
    CRA_FLAG: ClassVar[CraFlag] = CraFlag.ALERT
    TITLE: ClassVar[str] = "CS06 future-dated ActivateFirmware alert"

    alert_code: AlertCode
    execution_datetime: datetime
    originator_counter: int
    outcome: ExecutionOutcome

    def __post_init__(self) -> None:
        ok = (AlertCode.FUTURE_DATED_COMMAND_SUCCESS, AlertCode.FUTURE_DATED_COMMAND_FAILURE)
        _set(self, "alert_code", _enum(AlertCode, self.alert_code, "alertCode", ok))
        _set(self, "execution_datetime", check_utc(self.execution_datetime, "executionDateTime"))
        check_counter(self.originator_counter, "originatorCounter")
        if not isinstance(self.outcome, ExecutionOutcome):
            _fail(f"executionOutcome is {type(self.outcome).__name__}, expected an ExecutionOutcome")

    def encode(self) -> bytes:
        return _ActivateFirmwareAlertDer(
            {
                "alertCode": int(self.alert_code),
                "executionDateTime": self.execution_datetime,
                "originatorCounter": self.originator_counter,
                "executionOutcome": self.outcome._der(),
            }
        ).dump(force=True)

    @classmethod
    def decode(cls, data: bytes, source: str = "content") -> Self:
        with _decoding(source, cls.TITLE):
            der = _load(_ActivateFirmwareAlertDer, data)
            message = cls(
                alert_code=der["alertCode"].native,
                execution_datetime=der["executionDateTime"].native,
                originator_counter=der["originatorCounter"].native,
                outcome=ExecutionOutcome._from_der(der["executionOutcome"]),
            )
            _canonical(message, data)
        return message


GbcsMessage = (
    FirmwareTransferAlert
    | ReadFirmwareVersionCommand
    | ReadFirmwareVersionResponse
    | PpmidFirmwareActivationAlert
    | ActivateFirmwareCommand
    | ActivateFirmwareResponse
    | ActivateFirmwareAlert
)

MESSAGE_TYPES: dict[tuple[int, CraFlag], type[GbcsMessage]] = {
    (cls.MESSAGE_CODE, cls.CRA_FLAG): cls
    for cls in (
        FirmwareTransferAlert,
        ReadFirmwareVersionCommand,
        ReadFirmwareVersionResponse,
        PpmidFirmwareActivationAlert,
        ActivateFirmwareCommand,
        ActivateFirmwareResponse,
        ActivateFirmwareAlert,
    )
}
