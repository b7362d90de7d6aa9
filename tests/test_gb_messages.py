"""DER content of the GBCS firmware messages: the RTDS 4.5.0 vectors decode to the values SPEC.md §8.3 states
and re-encode byte for byte; our own messages round-trip; malformed DER raises only GbcsError."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import zigpy.types as t
from hypothesis import given, settings
from hypothesis import strategies as st

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
from emulator.gb.frame import bytes_from_hex, parse
from emulator.gb.messages import (
    MESSAGE_TYPES,
    ActivateFirmwareAlert,
    ActivateFirmwareCommand,
    ActivateFirmwareResponse,
    ExecutionOutcome,
    FirmwareTransferAlert,
    GbcsError,
    PpmidFirmwareActivationAlert,
    ReadFirmwareVersionCommand,
    ReadFirmwareVersionResponse,
)

RTDS = Path(__file__).parent / "data" / "gb-vectors" / "rtds"
JAN_2015 = datetime(2015, 1, 1, tzinfo=UTC)
RTDS_HASH = bytes.fromhex("AA758690730934FF0685AA758690730934FF0685657788990011223344556677")


def _content(name: str) -> bytes:
    path = RTDS / name
    return parse(bytes_from_hex(path.read_text(), str(path))).content


# Each vector's content, the message type it carries and the values read off its bytes (cross-checked with
# SPEC.md §8.3 and the README beside the vectors).
VECTOR_CONTENT = {
    "CCS08_NA_NA_ALERT_GBCS.HEX": FirmwareTransferAlert(
        alert_code=AlertCode.FIRMWARE_TRANSFER_SUCCESS,
        execution_datetime=JAN_2015,
        entity_id=t.EUI64.convert("00:db:12:34:56:78:90:a4"),
        firmware_version=bytes.fromhex("0123ABCD"),
        response_code=TransferResponse.SUCCESS,
    ),
    "CS09_NA_8F8B_ALERT_GBCS.HEX": PpmidFirmwareActivationAlert(
        execution_datetime=JAN_2015,
        firmware_version=bytes.fromhex("1234ABCD"),
        activate_image=ActivateImageResult.SUCCESS,
    ),
    "CS06_11.3_IMMEDIATE_SUCCESS_COMMAND_GBCS.HEX": ActivateFirmwareCommand(
        manufacturer_image_hash=RTDS_HASH, originator_counter=1000
    ),
    "CS06_11.3_IMMEDIATE_SUCCESS_RESPONSE_GBCS.HEX": ActivateFirmwareResponse(
        ExecutionOutcome(ActivationResponse.SUCCESS, bytes.fromhex("0123ABCE"))
    ),
    "CS06_11.3_IMMEDIATE_ERROR_RESPONSE_GBCS.HEX": ActivateFirmwareResponse(
        ExecutionOutcome(ActivationResponse.NO_IMAGE_HELD, bytes.fromhex("0123ABCF"))
    ),
    "CS06_11.3_8F66_FUTURE_DATED_SUCCESS_ALERT_GBCS.HEX": ActivateFirmwareAlert(
        alert_code=AlertCode.FUTURE_DATED_COMMAND_SUCCESS,
        execution_datetime=datetime(2030, 1, 15, 9, 0, tzinfo=UTC),
        originator_counter=1001,
        outcome=ExecutionOutcome(ActivationResponse.SUCCESS, bytes.fromhex("0123ABCF")),
    ),
    "CS06_11.3_8F67_FUTURE_DATED_ERROR_ALERT_GBCS.HEX": ActivateFirmwareAlert(
        alert_code=AlertCode.FUTURE_DATED_COMMAND_FAILURE,
        execution_datetime=datetime(2030, 1, 1, tzinfo=UTC),
        originator_counter=1004,
        outcome=ExecutionOutcome(ActivationResponse.HASH_MISMATCH, bytes.fromhex("0123ABCF")),
    ),
    "CS08_11.2_SUCCESS_RESPONSE_GBCS.HEX": ReadFirmwareVersionResponse(
        firmware_version=bytes.fromhex("0123ABCD"), response_code=ReadResult.READ_SUCCESS
    ),
    "CS08_11.2_ERROR_RESPONSE_GBCS.HEX": ReadFirmwareVersionResponse(
        firmware_version=bytes(4), response_code=ReadResult.READ_FAILURE
    ),
}


def test_every_vector_file_is_covered() -> None:
    assert sorted(p.name for p in RTDS.glob("*.HEX")) == sorted(VECTOR_CONTENT)


@pytest.mark.parametrize("name", sorted(VECTOR_CONTENT))
def test_vector_content_decodes_to_stated_values(name: str) -> None:
    expected = VECTOR_CONTENT[name]
    decoded = type(expected).decode(_content(name))
    assert decoded == expected


@pytest.mark.parametrize("name", sorted(VECTOR_CONTENT))
def test_vector_content_re_encodes_byte_identical(name: str) -> None:
    content = _content(name)
    assert VECTOR_CONTENT[name].encode() == content


def test_ccs08_content_bytes_match_spec_worked_example() -> None:
    """SPEC.md §8.3 spells the CCS08 content out field by field."""
    assert _content("CCS08_NA_NA_ALERT_GBCS.HEX") == bytes.fromhex(
        "3029 0203008F8A 180F" + b"20150101000000Z".hex() + "0408 00DB1234567890A4 0404 0123ABCD 020100"
    )


def test_vector_fields_are_typed() -> None:
    alert = FirmwareTransferAlert.decode(_content("CCS08_NA_NA_ALERT_GBCS.HEX"))
    assert alert.alert_code is AlertCode.FIRMWARE_TRANSFER_SUCCESS
    assert alert.alert_code == 0x8F8A
    assert alert.response_code is TransferResponse.SUCCESS
    assert isinstance(alert.entity_id, t.EUI64)
    assert str(alert.entity_id) == "00:db:12:34:56:78:90:a4"
    assert alert.execution_datetime.tzinfo is UTC


OWN_MESSAGES = [
    FirmwareTransferAlert(
        alert_code=AlertCode.FIRMWARE_TRANSFER_FAILURE,
        execution_datetime=datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
        entity_id=t.EUI64.convert("00:0d:6f:00:0a:bc:de:f0"),
        firmware_version=(0x10203040).to_bytes(4, "big"),
        response_code=TransferResponse.HARDWARE_VERSION_MISMATCH,
    ),
    PpmidFirmwareActivationAlert(
        execution_datetime=datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC),
        firmware_version=bytes.fromhex("00000002"),
        activate_image=ActivateImageResult.FAILURE,
    ),
    ReadFirmwareVersionCommand(),
    ReadFirmwareVersionResponse(firmware_version=bytes(range(200)), response_code=ReadResult.READ_SUCCESS),
    ActivateFirmwareCommand(
        manufacturer_image_hash=bytes(range(32)),
        originator_counter=2**64 - 1,
        execution_datetime=datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC),
    ),
    ActivateFirmwareCommand(manufacturer_image_hash=bytes(32), originator_counter=0),
    ActivateFirmwareResponse(),
    ActivateFirmwareResponse(ExecutionOutcome(ActivationResponse.ACTIVATION_FAILURE, b"")),
    ActivateFirmwareAlert(
        alert_code=AlertCode.FUTURE_DATED_COMMAND_FAILURE,
        execution_datetime=datetime(2030, 6, 1, 12, tzinfo=UTC),
        originator_counter=123456789,
        outcome=ExecutionOutcome(ActivationResponse.HASH_MISMATCH, bytes.fromhex("01020304")),
    ),
]


@pytest.mark.parametrize("message", OWN_MESSAGES, ids=lambda m: type(m).__name__)
def test_own_messages_round_trip(message) -> None:
    data = message.encode()
    decoded = type(message).decode(data)
    assert decoded == message
    assert decoded.encode() == data


def test_command_accepted_is_der_null_and_cs08_command_is_null() -> None:
    assert ActivateFirmwareResponse().encode() == bytes.fromhex("0500")
    assert ReadFirmwareVersionCommand().encode() == bytes.fromhex("0500")
    assert ActivateFirmwareResponse.decode(bytes.fromhex("0500")).outcome is None


def test_future_dated_command_carries_generalized_time() -> None:
    command = ActivateFirmwareCommand(
        manufacturer_image_hash=RTDS_HASH,
        originator_counter=1001,
        execution_datetime=datetime(2030, 1, 15, 9, 0, tzinfo=UTC),
    )
    assert command.encode().endswith(bytes.fromhex("020203E9 180F") + b"20300115090000Z")


def test_datetimes_are_normalised_to_utc() -> None:
    paris = timezone(timedelta(hours=1))
    alert = PpmidFirmwareActivationAlert(
        execution_datetime=datetime(2015, 1, 1, 1, 0, tzinfo=paris),
        firmware_version=bytes.fromhex("1234ABCD"),
        activate_image=ActivateImageResult.SUCCESS,
    )
    assert alert.execution_datetime == JAN_2015
    assert alert.encode() == _content("CS09_NA_8F8B_ALERT_GBCS.HEX")


def test_eui64_given_as_wire_bytes_equals_zigpy_eui64() -> None:
    from_bytes = FirmwareTransferAlert(
        AlertCode.FIRMWARE_TRANSFER_SUCCESS, JAN_2015, bytes.fromhex("00DB1234567890A4"), b"1234", 0
    )
    assert from_bytes.entity_id == t.EUI64.convert("00:db:12:34:56:78:90:a4")


def test_registry_maps_code_and_cra_flag_to_type() -> None:
    assert MESSAGE_TYPES[(MessageCode.CS06_ACTIVATE_FIRMWARE, CraFlag.COMMAND)] is ActivateFirmwareCommand
    assert MESSAGE_TYPES[(MessageCode.CS06_ACTIVATE_FIRMWARE, CraFlag.RESPONSE)] is ActivateFirmwareResponse
    assert len(MESSAGE_TYPES) == 7


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: FirmwareTransferAlert(0x8F66, JAN_2015, bytes(8), bytes(4), 0), "alertCode"),
        (lambda: FirmwareTransferAlert(0x8F8A, JAN_2015, bytes(7), bytes(4), 0), "entityId"),
        (lambda: FirmwareTransferAlert(0x8F8A, JAN_2015, bytes(8), bytes(3), 0), "firmwareVersion"),
        (lambda: FirmwareTransferAlert(0x8F8A, JAN_2015, bytes(8), bytes(4), 4), "responseCode"),
        (lambda: FirmwareTransferAlert(0x8F8A, datetime(2015, 1, 1), bytes(8), bytes(4), 0), "executionDateTime"),
        (lambda: PpmidFirmwareActivationAlert(JAN_2015, bytes(4), 0, alert_code=0x8F8A), "alertCode"),
        (lambda: PpmidFirmwareActivationAlert(JAN_2015, bytes(4), 2), "activateImage"),
        (lambda: ActivateFirmwareCommand(bytes(31), 1), "manufacturerImageHash"),
        (lambda: ActivateFirmwareCommand(bytes(32), -1), "originatorCounter"),
        (lambda: ActivateFirmwareCommand(bytes(32), 2**64), "originatorCounter"),
        (lambda: ActivateFirmwareAlert(0x8F8A, JAN_2015, 1, ExecutionOutcome(0, b"")), "alertCode"),
        (lambda: ExecutionOutcome(4, b""), "responseCode"),
        (lambda: ReadFirmwareVersionResponse("0123", 0), "firmwareVersion"),
        (lambda: ReadFirmwareVersionResponse(b"", 2), "responseCode"),
    ],
)
def test_invalid_field_values_are_rejected_naming_the_field(build, field: str) -> None:
    with pytest.raises(GbcsError, match=field):
        build()


# --- malformed DER --------------------------------------------------------------------------------------------

CCS08 = bytes.fromhex("30290203008F8A180F32303135303130313030303030305A040800DB1234567890A404040123ABCD020100")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (bytes.fromhex("31") + CCS08[1:], "not a DER"),  # SET instead of SEQUENCE
        (CCS08[:2] + bytes.fromhex("04") + CCS08[3:], "not a DER"),  # alertCode as OCTET STRING
        (CCS08 + b"\x00", "not a DER"),  # trailing byte
        (bytes.fromhex("302A020400008F8A") + CCS08[7:], "not canonical DER"),  # INTEGER with a padding byte
        (CCS08[:4] + bytes.fromhex("008F8B") + CCS08[7:], "alertCode is 0x8F8B"),
        (CCS08[:-1] + b"\x07", "responseCode is 7"),
        (bytes.fromhex("3027") + CCS08[2:-3], "not a DER"),  # responseCode missing
        (b"", "not a DER"),
    ],
)
def test_malformed_ccs08_content_is_rejected(data: bytes, reason: str) -> None:
    with pytest.raises(GbcsError, match=reason) as caught:
        FirmwareTransferAlert.decode(data, "alert.hex")
    message = str(caught.value)
    assert message.startswith("alert.hex: ")
    assert "\n" not in message


@pytest.mark.parametrize("name", sorted(VECTOR_CONTENT))
def test_every_truncation_of_vector_content_raises_gbcs_error(name: str) -> None:
    content = _content(name)
    message_type = type(VECTOR_CONTENT[name])
    for end in range(len(content)):
        with pytest.raises(GbcsError):
            message_type.decode(content[:end])


@pytest.mark.parametrize("message_type", sorted(set(MESSAGE_TYPES.values()), key=lambda c: c.__name__))
@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=80))
def test_random_bytes_raise_only_gbcs_error(message_type, data: bytes) -> None:
    try:
        decoded = message_type.decode(data)
    except GbcsError as exc:
        assert isinstance(exc, InputError)
        assert "\n" not in str(exc)
    else:
        assert decoded.encode() == data


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(sorted(VECTOR_CONTENT)),
    position=st.integers(min_value=0),
    value=st.integers(min_value=0, max_value=255),
)
def test_mutated_vector_content_decodes_canonically_or_raises_gbcs_error(name: str, position: int, value: int) -> None:
    content = bytearray(_content(name))
    content[position % len(content)] = value
    try:
        decoded = type(VECTOR_CONTENT[name]).decode(bytes(content))
    except GbcsError:
        return
    assert decoded.encode() == bytes(content)
