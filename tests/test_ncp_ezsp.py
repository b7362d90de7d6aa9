"""EZSP frames of the virtual NCP against bytes written by hand from the UG100 layouts (v8/v13: EmberStatus,
u8 message tags; v14: sl_Status u32, u16 message tags, status-first messageSentHandler and the permuted
incomingMessageHandler). The codec derives its layouts from bellows' tables; these literals do not."""

from __future__ import annotations

import enum

import bellows.types as bt
import pytest
import zigpy.types as zt
from hypothesis import given
from hypothesis import strategies as st

from emulator.errors import InputError
from emulator.ncp.ezsp import SUPPORTED_VERSIONS, EzspCodec, EzspFrameError, zero_value
from emulator.ncp.fields import ApsFrame, read_aps, write_aps

H = bytes.fromhex
EUI = bt.EUI64.convert("00:11:22:33:44:55:66:77")  # little-endian on the wire: 77 66 55 44 33 22 11 00
APS = bt.EmberApsFrame(
    profileId=0x0104,
    clusterId=0x0006,
    sourceEndpoint=1,
    destinationEndpoint=1,
    options=bt.EmberApsOption.APS_OPTION_RETRY | bt.EmberApsOption.APS_OPTION_ENABLE_ROUTE_DISCOVERY,
    groupId=0,
    sequence=0x7B,
)
APS_WIRE = "0401 0600 01 01 4001 0000 7b"


def as_bellows(frame: ApsFrame) -> bt.EmberApsFrame:
    """The codec's plain APS frame as bellows' structure (whose constructor checks every field's type)."""
    return bt.EmberApsFrame(**{name: getattr(frame, name) for name, _ in fields_of(bt.EmberApsFrame)})


def fields_of(struct: type) -> list[tuple[str, type]]:
    return [(f.name, f.type) for f in struct.fields]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("version", "response"),
    [(8, "00 80 00 08 02 80 67"), (13, "00 80 00 0d 02 50 74"), (14, "00 80 00 0e 02 20 80")],
)
def test_legacy_version_exchange(version: int, response: str) -> None:
    codec = EzspCodec(version)
    command = codec.parse(H("00 00 00 04"))
    assert (command.seq, command.frame_id, command.name, command.legacy) == (0, 0, "version", True)
    assert codec.decode_params(command) == {"desiredProtocolVersion": 4}
    major_minor = {8: 0x6780, 13: 0x7450, 14: 0x8020}[version]
    values = {"protocolVersion": version, "stackType": 2, "stackVersion": major_minor}
    assert codec.encode(0, "version", values, legacy=True) == H(response)


def test_extended_version_exchange_v13() -> None:
    codec = EzspCodec(13)
    command = codec.parse(H("00 00 01 00 00 0d"))
    assert (command.name, command.legacy) == ("version", False)
    assert codec.decode_params(command) == {"desiredProtocolVersion": 13}
    values = {"protocolVersion": 13, "stackType": 2, "stackVersion": 0x7450}
    assert codec.encode(0, "version", values) == H("00 80 01 00 00 0d 02 50 74")


@pytest.mark.parametrize("version", [8, 13])
def test_send_unicast_classic_layout(version: int) -> None:
    codec = EzspCodec(version)
    frame = H(f"21 00 01 34 00  00 3412 {APS_WIRE} 0a 03 01 7b 02")
    command = codec.parse(frame)
    args = codec.decode_params(command)
    assert command.name == "sendUnicast"
    assert args["type"] == bt.EmberOutgoingMessageType.OUTGOING_DIRECT
    assert args["indexOrDestination"] == 0x1234
    assert as_bellows(args["apsFrame"]) == APS
    assert args["messageTag"] == 0x0A
    assert args["messageContents"] == H("01 7b 02")
    assert codec.encode(0x21, "sendUnicast", {"status": bt.sl_Status.OK, "sequence": 0x7B}) == H("21 80 01 34 00 00 7b")


def test_send_unicast_v14_layout() -> None:
    codec = EzspCodec(14)
    frame = H(f"21 00 01 34 00  00 3412 {APS_WIRE} 0a00 03 01 7b 02")
    args = codec.decode_params(codec.parse(frame))
    assert (args["nwk"], as_bellows(args["aps_frame"]), args["message_tag"], args["message"]) == (
        0x1234,
        APS,
        0x0A,
        H("01 7b 02"),
    )
    assert codec.encode(0x21, "sendUnicast", {"status": bt.sl_Status.OK, "sequence": 0x7B}) == H(
        "21 80 01 34 00 00000000 7b"
    )


@pytest.mark.parametrize(("status", "wire"), [(bt.sl_Status.OK, "00"), (bt.sl_Status.ZIGBEE_DELIVERY_FAILED, "66")])
def test_message_sent_handler_v13(status: bt.sl_Status, wire: str) -> None:
    values = {
        "type": bt.EmberOutgoingMessageType.OUTGOING_DIRECT,
        "indexOrDestination": 0x1234,
        "apsFrame": APS,
        "messageTag": 0x0A,
        "status": status,
        "messageContents": b"",
    }
    frame = EzspCodec(13).encode(0x21, "messageSentHandler", values, callback=True)
    assert frame == H(f"21 90 01 3f 00  00 3412 {APS_WIRE} 0a {wire} 00")


def test_message_sent_handler_v14_puts_status_first() -> None:
    values = {
        "status": bt.sl_Status.ZIGBEE_DELIVERY_FAILED,
        "message_type": bt.EmberOutgoingMessageType.OUTGOING_DIRECT,
        "nwk": 0x1234,
        "aps_frame": APS,
        "message_tag": 0x0A,
        "message": b"",
    }
    frame = EzspCodec(14).encode(0x21, "messageSentHandler", values, callback=True)
    assert frame == H(f"21 90 01 3f 00  020c0000 00 3412 {APS_WIRE} 0a00 00")


def test_incoming_message_handler_v13() -> None:
    aps = APS.replace(options=bt.EmberApsOption.APS_OPTION_NONE, sequence=0x2A)
    values = {
        "type": bt.EmberIncomingMessageType.INCOMING_UNICAST,
        "apsFrame": aps,
        "lastHopLqi": 255,
        "lastHopRssi": -40,
        "sender": 0x1234,
        "bindingIndex": 0xFF,
        "addressIndex": 0xFF,
        "messageContents": H("08 2a 0b"),
    }
    frame = EzspCodec(13).encode(0x05, "incomingMessageHandler", values, callback=True)
    assert frame == H("05 90 01 45 00  00 0401 0600 01 01 0000 0000 2a  ff d8 3412 ff ff 03 082a0b")


def test_incoming_message_handler_v14_permuted_layout() -> None:
    aps = APS.replace(options=bt.EmberApsOption.APS_OPTION_NONE, sequence=0x2A)
    values = {
        "message_type": bt.EmberIncomingMessageType.INCOMING_BROADCAST,
        "aps_frame": aps,
        "nwk": 0x1234,
        "eui64": EUI,
        "binding_index": 0xFF,
        "address_index": 0xFF,
        "lqi": 255,
        "rssi": -40,
        "timestamp": 0x01020304,
        "message": H("08 2a 0b"),
    }
    frame = EzspCodec(14).encode(0x05, "incomingMessageHandler", values, callback=True)
    assert frame == H(
        "05 90 01 45 00  04 0401 0600 01 01 0000 0000 2a  3412 7766554433221100 ff ff ff d8 04030201 03 082a0b"
    )


@pytest.mark.parametrize(
    ("version", "up", "down"),
    [(8, "90", "91"), (13, "90", "91"), (14, "15000000", "16000000")],
)
def test_stack_status_handler(version: int, up: str, down: str) -> None:
    codec = EzspCodec(version)
    assert codec.encode(0, "stackStatusHandler", {"status": bt.sl_Status.NETWORK_UP}, callback=True) == H(
        f"00 90 01 19 00 {up}"
    )
    assert codec.encode(7, "stackStatusHandler", {"status": bt.sl_Status.NETWORK_DOWN}, callback=True) == H(
        f"07 90 01 19 00 {down}"
    )


@pytest.mark.parametrize("version", [8, 13, 14])
def test_trust_center_join_handler(version: int) -> None:
    values = {
        "newNodeId": 0x1234,
        "newNodeEui64": EUI,
        "status": bt.EmberDeviceUpdate.STANDARD_SECURITY_UNSECURED_JOIN,
        "policyDecision": bt.EmberJoinDecision.USE_PRECONFIGURED_KEY,
        "parentOfNewNodeId": 0x0000,
    }
    frame = EzspCodec(version).encode(3, "trustCenterJoinHandler", values, callback=True)
    assert frame == H("03 90 01 24 00  3412 7766554433221100 01 00 0000")


@pytest.mark.parametrize(("version", "status"), [(8, "00"), (13, "00"), (14, "00000000")])
def test_get_network_parameters_response(version: int, status: str) -> None:
    params = bt.EmberNetworkParameters(
        extendedPanId=bt.ExtendedPanId.convert("00:11:22:33:44:55:66:77"),
        panId=0x1A2B,
        radioTxPower=8,
        radioChannel=15,
        joinMethod=bt.EmberJoinMethod.USE_MAC_ASSOCIATION,
        nwkManagerId=0x0000,
        nwkUpdateId=0,
        channels=bt.Channels.CHANNEL_15,
    )
    values = {"status": bt.sl_Status.OK, "nodeType": bt.EmberNodeType.COORDINATOR, "parameters": params}
    frame = EzspCodec(version).encode(0x0C, "getNetworkParameters", values)
    assert frame == H(f"0c 80 01 28 00 {status} 01  7766554433221100 2b1a 08 0f 00 0000 00 00800000")


@pytest.mark.parametrize(("version", "reason"), [(8, "31"), (13, "31"), (14, "1e0c0000")])
def test_unknown_frame_id_gets_invalid_command(version: int, reason: str) -> None:
    codec = EzspCodec(version)
    command = codec.parse(H("09 00 01 77 77"))
    assert command.name is None
    assert codec.invalid_command(9, bt.EzspStatus.ERROR_INVALID_FRAME_ID) == H(f"09 80 01 58 00 {reason}")


def test_header_errors_name_the_reason() -> None:
    codec = EzspCodec(13)
    with pytest.raises(EzspFrameError) as exc:
        codec.parse(H("05 80 01 18 00"))
    assert exc.value.reason == bt.EzspStatus.ERROR_WRONG_DIRECTION
    with pytest.raises(EzspFrameError) as exc:
        codec.parse(H("05 00 01 18"))
    assert exc.value.reason == bt.EzspStatus.ERROR_TRUNCATED
    with pytest.raises(EzspFrameError) as exc:
        codec.decode_params(codec.parse(H("05 00 01 34 00 00 3412")))
    assert exc.value.reason == bt.EzspStatus.ERROR_TRUNCATED
    with pytest.raises(EzspFrameError) as exc:
        codec.decode_params(codec.parse(H("05 00 01 18 00 ff")))  # networkState takes no parameters
    assert exc.value.reason == bt.EzspStatus.ERROR_COMMAND_TOO_LONG


def test_fields_left_out_are_zero_and_unknown_fields_are_refused() -> None:
    codec = EzspCodec(13)
    assert codec.encode(1, "getNetworkParameters", {"status": bt.sl_Status.NOT_JOINED}) == H(
        "01 80 01 28 00 93 00" + "00" * 20
    )
    with pytest.raises(KeyError):
        codec.encode(1, "networkState", {"state": 2})


def test_unsupported_version_is_an_input_error() -> None:
    with pytest.raises(InputError, match="EZSP version 9: expected one of 8, 13, 14"):
        EzspCodec(9)


def sample(type_: type) -> object:
    """A value of a field type that fills it: the widest integer, the last enum member, a few bytes, APS."""
    if type_ is bt.EmberApsFrame:
        return APS
    if issubclass(type_, enum.Enum):
        return list(type_)[-1]
    if issubclass(type_, zt.FixedIntType):
        return type_(type_.max_value)
    if issubclass(type_, zt.LVBytes):
        return type_(bytes(range(1, 8)))
    return zero_value(type_)


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_every_layout_reads_and_writes_what_zigpy_does(version: int) -> None:
    """The compiled field codecs against zigpy's own serialization, for every command of bellows' tables."""
    codec = EzspCodec(version)
    compared = 0
    for name, (frame_id, tx_schema, rx_schema) in codec.commands.items():
        if isinstance(rx_schema, dict) and (sent := zigpy_wire(rx_schema)) is not None:
            values, expected = sent
            assert codec.encode(7, name, values)[5:] == expected, name
            compared += 1
        if isinstance(tx_schema, dict) and (sent := zigpy_wire(tx_schema)) is not None:
            values, wire = sent
            read = codec.decode_params(codec.parse(bytes([7, 0, 1]) + frame_id.to_bytes(2, "little") + wire))
            read = {k: as_bellows(v) if isinstance(v, ApsFrame) else v for k, v in read.items()}
            assert read == values, name
            compared += 1
    assert compared > 2 * len(codec.commands) * 0.9  # all but the few whose sample zigpy cannot serialize


def zigpy_wire(schema: dict[str, type]) -> tuple[dict[str, object], bytes] | None:
    """Sample values for a layout and zigpy's bytes for them; None when zigpy cannot serialize the samples (a
    structure with fields that are required only in some of its forms)."""
    values = {field: sample(type_) for field, type_ in schema.items()}
    try:
        return values, b"".join(type_(values[field]).serialize() for field, type_ in schema.items())
    except ValueError:
        return None


@given(
    st.tuples(
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFF),
        st.integers(0, 0xFF),
        st.sampled_from(list(bt.EmberApsOption)),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFF),
    )
)
def test_aps_frames_are_the_bytes_of_bellows_structure(values: tuple[int, ...]) -> None:
    theirs = bt.EmberApsFrame(**dict(zip([name for name, _ in fields_of(bt.EmberApsFrame)], values, strict=True)))
    wire = theirs.serialize()
    assert write_aps(theirs) == wire
    ours, end = read_aps(b"\x00" + wire, 1)
    assert end == 1 + len(wire) and as_bellows(ours) == theirs and ours.serialize() == wire


def test_values_zigpy_refuses_are_refused_and_those_it_takes_are_written_alike() -> None:
    codec = EzspCodec(13)
    # zigpy's enums take an unknown value as an "undefined" member; so does the codec, with the same byte.
    unknown = codec.encode(0, "incomingMessageHandler", {"type": 0x77})
    assert unknown[5] == bt.EmberIncomingMessageType(0x77).serialize()[0] == 0x77
    with pytest.raises(OverflowError):
        codec.encode(0, "incomingMessageHandler", {"lastHopLqi": 256})
    with pytest.raises(ValueError, match="expected fewer than 255"):
        codec.encode(0, "incomingMessageHandler", {"messageContents": bytes(255)})
    with pytest.raises(EzspFrameError, match="runs past the end"):
        codec.decode_params(codec.parse(H("01 00 01 34 00  00 3412") + H(APS_WIRE) + H("0a 05 01")))
