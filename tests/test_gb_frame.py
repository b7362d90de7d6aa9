"""The GBCS general-signing frame: the RTDS 4.5.0 vectors parse to the header values in their bytes, re-build
byte for byte, verify with their originators' certificates and fail on any altered byte; frames we sign
ourselves round-trip; every malformed or truncated frame raises only GbcsError."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import zigpy.types as t
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator import keys
from emulator.gb.codes import (
    ActivateImageResult,
    ActivationResponse,
    AlertCode,
    CraFlag,
    MessageCode,
    TransferResponse,
)
from emulator.gb.frame import (
    GbcsFrame,
    build_signed,
    bytes_from_hex,
    decode_message,
    parse,
    sign_message,
    verify,
)
from emulator.gb.messages import (
    ActivateFirmwareAlert,
    ActivateFirmwareCommand,
    ActivateFirmwareResponse,
    ExecutionOutcome,
    FirmwareTransferAlert,
    GbcsError,
    PpmidFirmwareActivationAlert,
    ReadFirmwareVersionResponse,
)

GB_VECTORS = Path(__file__).parent / "data" / "gb-vectors"
RTDS = GB_VECTORS / "rtds"
SUPPLIER = t.EUI64.convert("90:b3:d5:1f:30:00:00:02")
ACCESS_CONTROL = t.EUI64.convert("90:b3:d5:1f:30:01:00:00")
CHF = t.EUI64.convert("00:db:12:34:56:78:90:a2")
PPMID = t.EUI64.convert("00:db:12:34:56:78:90:a4")
ESME = t.EUI64.convert("00:db:12:34:56:78:90:a0")
JAN_2015 = datetime(2015, 1, 1, tzinfo=UTC)


def _raw(name: str) -> bytes:
    return bytes_from_hex((RTDS / name).read_text(), name)


def _key(cert: str) -> keys.PublicKey:
    return keys.load_public_key(GB_VECTORS / cert)


# name: (cra flag, counter, originator, recipient, date-time, message code, supplementary id/counter,
#        signer certificate or None when unsigned, general-ciphering wrapper)
HEADERS = {
    "CCS08_NA_NA_ALERT_GBCS.HEX": (
        CraFlag.ALERT, 4000, CHF, SUPPLIER, None, MessageCode.CCS08_FIRMWARE_TRANSFER_ALERT, None, None,
        "rtds/00db1234567890a2-ds-cert.pem", False,
    ),
    "CS09_NA_8F8B_ALERT_GBCS.HEX": (
        CraFlag.ALERT, 5000, PPMID, SUPPLIER, None, MessageCode.CS09_PPMID_FIRMWARE_ACTIVATION_ALERT, None, None,
        "rtds/00db1234567890a4-ds-cert.pem", False,
    ),
    "CS06_11.3_IMMEDIATE_SUCCESS_COMMAND_GBCS.HEX": (
        CraFlag.COMMAND, 1000, ACCESS_CONTROL, ESME, None, MessageCode.CS06_ACTIVATE_FIRMWARE, None, None,
        "signer-90b3d51f30010000-cert.pem", True,
    ),
    "CS06_11.3_IMMEDIATE_SUCCESS_RESPONSE_GBCS.HEX": (
        CraFlag.RESPONSE, 1000, ESME, ACCESS_CONTROL, JAN_2015, MessageCode.CS06_ACTIVATE_FIRMWARE, None, None,
        "rtds/00db1234567890a0-ds-cert.pem", False,
    ),
    "CS06_11.3_IMMEDIATE_ERROR_RESPONSE_GBCS.HEX": (
        CraFlag.RESPONSE, 1005, ESME, ACCESS_CONTROL, JAN_2015, MessageCode.CS06_ACTIVATE_FIRMWARE, None, None,
        "rtds/00db1234567890a0-ds-cert.pem", False,
    ),
    "CS06_11.3_8F66_FUTURE_DATED_SUCCESS_ALERT_GBCS.HEX": (
        CraFlag.ALERT, 2000, ESME, ACCESS_CONTROL, None, MessageCode.CS06_FUTURE_DATED_ACTIVATE_FIRMWARE_ALERT,
        None, None, "rtds/00db1234567890a0-ds-cert.pem", False,
    ),
    "CS06_11.3_8F67_FUTURE_DATED_ERROR_ALERT_GBCS.HEX": (
        CraFlag.ALERT, 2001, ESME, ACCESS_CONTROL, None, MessageCode.CS06_FUTURE_DATED_ACTIVATE_FIRMWARE_ALERT,
        None, None, "rtds/00db1234567890a0-ds-cert.pem", False,
    ),
    "CS08_11.2_SUCCESS_RESPONSE_GBCS.HEX": (
        CraFlag.RESPONSE, 1300, PPMID, SUPPLIER, None, MessageCode.CS08_READ_PPMID_HCALCS_FIRMWARE_VERSION,
        ACCESS_CONTROL, 1000, None, True,
    ),
    "CS08_11.2_ERROR_RESPONSE_GBCS.HEX": (
        CraFlag.RESPONSE, 1301, t.EUI64.convert("00:db:12:34:56:78:90:a5"), SUPPLIER, None,
        MessageCode.CS08_READ_PPMID_HCALCS_FIRMWARE_VERSION, ACCESS_CONTROL, 1001, None, True,
    ),
}  # fmt: skip

SIGNED = sorted(name for name, header in HEADERS.items() if header[8] is not None)
# The general-ciphering wrapper: DD + six empty fields + ciphered length (1 or 2 bytes) + 0x11 + 4-byte counter.
WRAPPED_PREFIX = {"CS06_11.3_IMMEDIATE_SUCCESS_COMMAND_GBCS.HEX": 14}
WRAPPED_PREFIX.update(dict.fromkeys(("CS08_11.2_SUCCESS_RESPONSE_GBCS.HEX", "CS08_11.2_ERROR_RESPONSE_GBCS.HEX"), 13))


def test_every_vector_file_is_covered() -> None:
    assert sorted(p.name for p in RTDS.glob("*.HEX")) == sorted(HEADERS)


@pytest.mark.parametrize("name", sorted(HEADERS))
def test_vector_header_fields(name: str) -> None:
    cra, counter, originator, recipient, date_time, code, sup_id, sup_counter, cert, wrapped = HEADERS[name]
    frame = parse(_raw(name), name)
    assert frame.cra_flag is cra
    assert frame.originator_counter == counter
    assert frame.originator_id == originator
    assert frame.recipient_id == recipient
    assert frame.date_time == date_time
    assert frame.message_code is code
    assert frame.supplementary_remote_party_id == sup_id
    assert frame.supplementary_remote_party_counter == sup_counter
    assert (frame.signature is not None) == (cert is not None)
    assert (frame.mac is not None) == wrapped
    assert frame.raw == _raw(name)


@pytest.mark.parametrize("name", sorted(HEADERS))
def test_vector_rebuilds_byte_identical(name: str) -> None:
    raw = _raw(name)
    frame = parse(raw, name)
    assert frame.encode_signed_data() == frame.signed_data
    prefix = WRAPPED_PREFIX.get(name, 0)
    end = len(raw) - 12 if prefix else len(raw)
    assert frame.encode() == raw[prefix:end]
    if prefix:
        assert frame.mac == raw[-12:]
        assert frame.invocation_counter == 0


@pytest.mark.parametrize("name", sorted(HEADERS))
def test_vector_rebuilt_from_decoded_values(name: str) -> None:
    """Header values and decoded content alone give back the signed bytes (only the signature is copied)."""
    frame = parse(_raw(name), name)
    rebuilt = GbcsFrame(
        cra_flag=frame.cra_flag,
        originator_counter=frame.originator_counter,
        originator_id=frame.originator_id,
        recipient_id=frame.recipient_id,
        message_code=frame.message_code,
        content=decode_message(frame).encode(),
        date_time=frame.date_time,
        supplementary_remote_party_id=frame.supplementary_remote_party_id,
        supplementary_remote_party_counter=frame.supplementary_remote_party_counter,
        signature=frame.signature,
        mac=frame.mac,
        invocation_counter=frame.invocation_counter,
    )
    assert rebuilt.encode_signed_data() == frame.signed_data
    assert rebuilt == frame


def test_ccs08_signed_region_is_everything_between_df_and_signature_length() -> None:
    raw = _raw("CCS08_NA_NA_ALERT_GBCS.HEX")
    frame = parse(raw)
    assert frame.signed_data == raw[1:-65]
    assert raw[-65] == 0x40
    assert frame.signature == raw[-64:]


def test_cs06_response_date_time_is_dlms() -> None:
    raw = _raw("CS06_11.3_IMMEDIATE_SUCCESS_RESPONSE_GBCS.HEX")
    assert bytes.fromhex("0C07DF0101FF000000008000FF") in raw
    assert parse(raw).date_time == JAN_2015


@pytest.mark.parametrize("name", SIGNED)
def test_vector_signature_verifies_with_originator_certificate(name: str) -> None:
    frame = parse(_raw(name), name)
    assert verify(frame, _key(HEADERS[name][8]))


@pytest.mark.parametrize("name", SIGNED)
def test_vector_signature_fails_with_another_certificate(name: str) -> None:
    frame = parse(_raw(name), name)
    others = {HEADERS[other][8] for other in SIGNED} - {HEADERS[name][8]}
    assert others
    assert not any(verify(frame, _key(cert)) for cert in others)


def _accepted(data: bytes, public_key: keys.PublicKey) -> bool:
    try:
        return verify(parse(data), public_key)
    except GbcsError:
        return False


@pytest.mark.parametrize("name", SIGNED)
def test_flipping_any_signed_or_signature_byte_fails_verification(name: str) -> None:
    raw = _raw(name)
    public_key = _key(HEADERS[name][8])
    start = raw.index(0xDF) + 1
    end = start + len(parse(raw).signed_data) + 1 + keys.SIGNATURE_LENGTH
    parsed_but_rejected = 0
    for position in range(start, end):
        altered = bytearray(raw)
        altered[position] ^= 0x01
        assert not _accepted(bytes(altered), public_key), f"byte {position} altered and still accepted"
        try:
            parse(bytes(altered))
            parsed_but_rejected += 1
        except GbcsError:
            pass
    # Most flips leave a well-formed frame, so it is the signature check, not the parser, that rejects them.
    assert parsed_but_rejected > (end - start) * 3 // 4


def test_unsigned_frame_does_not_verify() -> None:
    frame = parse(_raw("CS08_11.2_SUCCESS_RESPONSE_GBCS.HEX"))
    assert frame.signature is None
    assert not verify(frame, _key("rtds/00db1234567890a4-ds-cert.pem"))


@pytest.mark.parametrize("name", sorted(HEADERS))
def test_every_truncation_raises_gbcs_error(name: str) -> None:
    raw = _raw(name)
    for end in range(len(raw)):
        with pytest.raises(GbcsError):
            parse(raw[:end], name)


@pytest.mark.parametrize("name", sorted(HEADERS))
def test_trailing_bytes_are_rejected(name: str) -> None:
    with pytest.raises(GbcsError, match="unexpected bytes"):
        parse(_raw(name) + b"\x00", name)


# --- our own frames --------------------------------------------------------------------------------------------

OWN_MESSAGES = [
    FirmwareTransferAlert(
        alert_code=AlertCode.FIRMWARE_TRANSFER_SUCCESS,
        execution_datetime=datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC),
        entity_id=t.EUI64.convert("00:0d:6f:00:00:00:00:01"),
        firmware_version=(0x00000102).to_bytes(4, "big"),
        response_code=TransferResponse.SUCCESS,
    ),
    PpmidFirmwareActivationAlert(
        execution_datetime=datetime(2025, 3, 4, 6, tzinfo=UTC),
        firmware_version=(0x00000102).to_bytes(4, "big"),
        activate_image=ActivateImageResult.SUCCESS,
    ),
    ActivateFirmwareResponse(ExecutionOutcome(ActivationResponse.HASH_MISMATCH, bytes.fromhex("00000101"))),
    ActivateFirmwareResponse(),
    ActivateFirmwareAlert(
        alert_code=AlertCode.FUTURE_DATED_COMMAND_SUCCESS,
        execution_datetime=datetime(2025, 3, 5, tzinfo=UTC),
        originator_counter=77,
        outcome=ExecutionOutcome(ActivationResponse.SUCCESS, bytes.fromhex("00000102")),
    ),
    ActivateFirmwareCommand(
        manufacturer_image_hash=bytes(range(32)),
        originator_counter=78,
        execution_datetime=datetime(2025, 3, 5, tzinfo=UTC),
    ),
]


@pytest.mark.parametrize("message", OWN_MESSAGES, ids=lambda m: type(m).__name__)
def test_signed_own_messages_round_trip(message) -> None:
    private_key = keys.generate_private_key()
    data = sign_message(
        message,
        originator_counter=0x0102030405060708,
        originator_id=CHF,
        recipient_id=SUPPLIER,
        key=private_key,
        date_time=datetime(2025, 3, 4, 5, 6, 7, 890000, tzinfo=UTC),
    )
    frame = parse(data)
    assert verify(frame, private_key.public_key())
    assert not verify(frame, keys.generate_private_key().public_key())
    assert frame.cra_flag is message.CRA_FLAG
    assert frame.message_code is message.MESSAGE_CODE
    assert frame.originator_counter == 0x0102030405060708
    assert (frame.originator_id, frame.recipient_id) == (CHF, SUPPLIER)
    assert frame.date_time == datetime(2025, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
    assert decode_message(frame) == message
    assert frame.encode() == data


def test_build_signed_with_long_content_and_supplementary_party() -> None:
    private_key = keys.generate_private_key()
    for size in (200, 300):
        content = ReadFirmwareVersionResponse(bytes(size), 0).encode()
        data = build_signed(
            cra_flag=CraFlag.RESPONSE,
            originator_counter=9,
            originator_id=PPMID,
            recipient_id=SUPPLIER,
            message_code=MessageCode.CS08_READ_PPMID_HCALCS_FIRMWARE_VERSION,
            content=content,
            key=private_key,
            supplementary_remote_party_id=ACCESS_CONTROL,
            supplementary_remote_party_counter=1000,
        )
        length_field = bytes([0x81, len(content)]) if len(content) < 256 else b"\x82" + len(content).to_bytes(2)
        assert length_field + content in data
        frame = parse(data)
        assert frame.content == content
        assert frame.supplementary_remote_party_id == ACCESS_CONTROL
        assert frame.supplementary_remote_party_counter == 1000
        assert verify(frame, private_key.public_key())
        assert decode_message(frame) == ReadFirmwareVersionResponse(bytes(size), 0)


def test_build_matches_vector_header_bytes() -> None:
    """A frame we build with the CCS08 vector's header values carries the vector's signed bytes exactly."""
    raw = _raw("CCS08_NA_NA_ALERT_GBCS.HEX")
    data = build_signed(
        cra_flag=CraFlag.ALERT,
        originator_counter=4000,
        originator_id=CHF,
        recipient_id=SUPPLIER,
        message_code=MessageCode.CCS08_FIRMWARE_TRANSFER_ALERT,
        content=parse(raw).content,
        key=keys.generate_private_key(),
    )
    assert data[:-64] == raw[:-64]


def test_decode_message_rejects_unknown_message_code() -> None:
    frame = replace(parse(_raw("CCS08_NA_NA_ALERT_GBCS.HEX")), message_code=0x0059)
    with pytest.raises(GbcsError, match="0x0059 is not a firmware message"):
        decode_message(frame, "x.hex")


def test_decode_message_rejects_known_code_with_wrong_cra_flag() -> None:
    frame = replace(parse(_raw("CCS08_NA_NA_ALERT_GBCS.HEX")), cra_flag=CraFlag.COMMAND)
    with pytest.raises(GbcsError, match=r"0x0128 .* CRA flag command, expected alert"):
        decode_message(frame, "x.hex")


def test_decode_message_names_content_errors() -> None:
    frame = replace(
        parse(_raw("CCS08_NA_NA_ALERT_GBCS.HEX")), message_code=MessageCode.CS09_PPMID_FIRMWARE_ACTIVATION_ALERT
    )
    with pytest.raises(GbcsError, match=r"^x.hex: content: "):
        decode_message(frame, "x.hex")


def test_frame_rejects_wrong_signature_length() -> None:
    with pytest.raises(GbcsError, match="signature is 63 bytes, expected 64"):
        GbcsFrame(CraFlag.ALERT, 1, CHF, SUPPLIER, 0x0128, b"\x05\x00", signature=bytes(63))


# --- malformed frames ------------------------------------------------------------------------------------------

CCS08_HEX = (RTDS / "CCS08_NA_NA_ALERT_GBCS.HEX").read_text().strip()
CS06_RESPONSE_HEX = (RTDS / "CS06_11.3_IMMEDIATE_SUCCESS_RESPONSE_GBCS.HEX").read_text().strip()
CS08_HEX = (RTDS / "CS08_11.2_SUCCESS_RESPONSE_GBCS.HEX").read_text().strip()


def _patch(hex_text: str, offset: int, replacement: str) -> bytes:
    data = bytearray.fromhex(hex_text)
    new = bytes.fromhex(replacement)
    data[offset : offset + len(new)] = new
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_patch(CCS08_HEX, 0, "30"), "first byte is 0x30, expected 0xDF"),
        (_patch(CCS08_HEX, 1, "08"), "transaction-id length is 0x08, expected 0x09"),
        (_patch(CCS08_HEX, 2, "04"), "CRA flag is 0x04"),
        (_patch(CCS08_HEX, 11, "07"), "originator id length is 0x07"),
        (_patch(CCS08_HEX, 20, "09"), "recipient id length is 0x09"),
        (_patch(CCS08_HEX, 29, "05"), "date-time length is 5"),
        (_patch(CCS08_HEX, 30, "03"), "other-information length is 3"),
        (_patch(CCS08_HEX, 33, "80"), "content length starts 0x80"),
        (_patch(CCS08_HEX, 33 + 1 + 43, "3F"), "signature length is 63, expected 64"),
        (_patch(CCS08_HEX, 33 + 1 + 43, "41"), "signature length is 65, expected 64"),
        (bytes.fromhex(CCS08_HEX)[:-64] + bytes(63), "truncated"),
        (_patch(CS06_RESPONSE_HEX, 29 + 10, "003C"), "deviation is 0x003C"),
        (_patch(CS06_RESPONSE_HEX, 29 + 3, "0D"), "not a valid DLMS date-time"),
        (_patch(CS06_RESPONSE_HEX, 29 + 9, "64"), "not a valid DLMS date-time"),
        (_patch(CS08_HEX, 1, "01"), "general-ciphering header fields are not empty"),
        (_patch(CS08_HEX, 8, "31"), "security control is 0x31"),
        (_patch(CS08_HEX, 7, "50"), "truncated"),
        (_patch(CS08_HEX, 7, "4E"), "unexpected bytes after the MAC"),
        (_patch(CS08_HEX, 13, "30"), "general-signing tag is 0x30"),
        (_patch(CS08_HEX, 13 + 30, "11"), "other-information length is 17"),
        (b"", "truncated"),
    ],
)
def test_malformed_frames_raise_one_line_gbcs_error(data: bytes, reason: str) -> None:
    with pytest.raises(GbcsError, match=reason) as caught:
        parse(data, "frame.hex")
    assert str(caught.value).startswith("frame.hex: ")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("DF0", "odd number of hex digits"),
        ("DF 0G", "'G' at hex digit 3"),
        ("  \n", "no hex digits"),
    ],
)
def test_bad_hex_text(text: str, reason: str) -> None:
    with pytest.raises(GbcsError, match=reason):
        bytes_from_hex(text, "arg")


def test_hex_text_may_contain_whitespace() -> None:
    spaced = " ".join(CCS08_HEX[i : i + 2] for i in range(0, len(CCS08_HEX), 2))
    assert bytes_from_hex(f"\n{spaced}\n", "arg") == bytes.fromhex(CCS08_HEX)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_random_bytes_raise_only_gbcs_error(data: bytes) -> None:
    for candidate in (data, b"\xdf" + data, b"\xdd" + bytes(6) + data):
        try:
            frame = parse(candidate)
            decode_message(frame)
        except GbcsError as exc:
            assert "\n" not in str(exc)


@settings(max_examples=400, deadline=None)
@given(
    name=st.sampled_from(sorted(HEADERS)),
    position=st.integers(min_value=0),
    value=st.integers(min_value=0, max_value=255),
)
def test_mutated_vectors_raise_only_gbcs_error(name: str, position: int, value: int) -> None:
    data = bytearray(_raw(name))
    data[position % len(data)] = value
    try:
        frame = parse(bytes(data))
        decode_message(frame)
    except GbcsError as exc:
        assert "\n" not in str(exc)
