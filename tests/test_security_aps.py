"""CCM* frame protection, APS frame security, the Transport-Key command and a node's APS security context.

The fixed points: the Transport-Key frame whose encryption tshark opens with only the install-code key (a 54-byte
APS frame built for AN1089's install code), Wireshark's derived-key values for the AN1089 key and for
"ZigBeeAlliance09", and scapy as an independent reader of the auxiliary header. tshark reading whole captures with
these frames is in test_capture.py.
"""

from __future__ import annotations

import pytest
import zigpy.types as t
from hypothesis import given
from hypothesis import strategies as st

from emulator.errors import InputError
from emulator.security import aps, ccm
from emulator.security.aps import (
    ApplicationLinkKeyTransport,
    NetworkKeyTransport,
    TrustCenterLinkKeyTransport,
)
from emulator.security.ccm import (
    AuxHeader,
    BadMicError,
    FrameCounterExhaustedError,
    KeyId,
    MalformedFrameError,
    StaleFrameCounterError,
    UnknownKeyError,
)
from emulator.security.keystore import KeyOrigin, SecurityContext, requires_aps_encryption

TC = t.EUI64.convert("00:0D:6F:00:00:AA:AA:AA")
JOINER = t.EUI64.convert("00:0D:6F:00:00:BB:BB:BB")
NETWORK_KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
# Silicon Labs AN1089: install code 83FED3407A939723A5C639B26916D505 (CRC C3 B5) hashes to this link key.
INSTALL_CODE_KEY = bytes.fromhex("66B6900981E1EE3CA4206B6B861C02BB")
TRANSPORT_KEY_FRAME = bytes.fromhex(
    "2110" "30" "01000000" "aaaaaa00006f0d00"
    "4aa81e5a0f79152f6a5503a9427aa48a3c412571449e16a14d962d57f3a3b69538b484" "01cdaa2d"
)  # fmt: skip
TRANSPORT_KEY_PLAIN = bytes.fromhex("0501 00112233445566778899aabbccddeeff 00 bbbbbb00006f0d00 aaaaaa00006f0d00")


# -- ccm ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("link_key", "key_id", "expected"),
    [
        # Wireshark (packet-zbee-security.c) derives these from the key-id field; values as it decrypts with them.
        (INSTALL_CODE_KEY, KeyId.KEY_TRANSPORT, "3C6CCA8977EB189EFD1614C3E7F75989"),
        (INSTALL_CODE_KEY, KeyId.KEY_LOAD, "1177A0EE2600D0020DBA82D7049F53BC"),
        (b"ZigBeeAlliance09", KeyId.KEY_TRANSPORT, "4BAB0F173E1434A2D572E1C1EF478782"),
        (b"ZigBeeAlliance09", KeyId.KEY_LOAD, "C5A47035C332CCBF251571D8BADED188"),
        (INSTALL_CODE_KEY, KeyId.DATA, INSTALL_CODE_KEY.hex()),
    ],
)
def test_derived_keys(link_key: bytes, key_id: KeyId, expected: str) -> None:
    assert ccm.derive_key(link_key, key_id) == bytes.fromhex(expected)


def test_network_key_is_not_derived() -> None:
    with pytest.raises(ValueError, match="not derived"):
        ccm.derive_key(INSTALL_CODE_KEY, KeyId.NETWORK)


@pytest.mark.parametrize(
    ("aux", "wire"),
    [
        (AuxHeader(KeyId.KEY_TRANSPORT, 1, bytes(TC)), "30 01000000 aaaaaa00006f0d00"),
        (AuxHeader(KeyId.NETWORK, 0x01020304, bytes(JOINER), key_sequence=7), "28 04030201 bbbbbb00006f0d00 07"),
        (AuxHeader(KeyId.DATA, 0xFFFFFFFE), "00 feffffff"),
        (AuxHeader(KeyId.KEY_LOAD, 2, bytes(TC), level=5, reserved=0x40), "7d 02000000 aaaaaa00006f0d00"),
    ],
)
def test_aux_header_round_trip(aux: AuxHeader, wire: str) -> None:
    data = bytes.fromhex(wire)
    assert aux.to_bytes() == data and aux.size == len(data)
    assert AuxHeader.from_bytes(b"\x99" + data + b"tail", 1) == aux
    # scapy reads the same fields from the same bytes (imported here: half a second, which only this test needs, not
    # every test worker while it collects).
    from scapy.layers.zigbee import ZigbeeSecurityHeader

    scapy = ZigbeeSecurityHeader(data + bytes(4))
    assert (scapy.key_type, scapy.extended_nonce, scapy.fc) == (aux.key_id, aux.source is not None, aux.frame_counter)
    if aux.source is not None:
        assert scapy.source == int.from_bytes(aux.source, "little")
    if aux.key_sequence is not None:
        assert scapy.key_seqnum == aux.key_sequence


@given(
    key_id=st.sampled_from(KeyId),
    counter=st.integers(0, 0xFFFFFFFF),
    source=st.none() | st.binary(min_size=8, max_size=8),
    key_sequence=st.integers(0, 255),
    level=st.integers(0, 7),
    reserved=st.sampled_from([0, 0x40, 0x80, 0xC0]),
)
def test_aux_header_bytes_round_trip(
    key_id: KeyId, counter: int, source: bytes | None, key_sequence: int, level: int, reserved: int
) -> None:
    sequence = key_sequence if key_id == KeyId.NETWORK else None
    aux = AuxHeader(key_id, counter, source, sequence, level, reserved)
    assert AuxHeader.from_bytes(aux.to_bytes()) == aux and len(aux.to_bytes()) == aux.size


@pytest.mark.parametrize("wire", ["", "30 010000", "30 01000000 aaaaaa", "28 01000000 aaaaaa00006f0d00", "08 01000000"])
def test_truncated_aux_header_is_malformed(wire: str) -> None:
    with pytest.raises(MalformedFrameError) as caught:
        AuxHeader.from_bytes(bytes.fromhex(wire))
    assert isinstance(caught.value, InputError) and "\n" not in str(caught.value)


def test_nonce_and_level_convention() -> None:
    aux = AuxHeader(KeyId.KEY_TRANSPORT, 1, bytes(TC))
    assert ccm.nonce(bytes(TC), 1, aux.control | 5) == bytes.fromhex("aaaaaa00006f0d00 01000000 35")
    header = bytes.fromhex("2110")
    sealed = ccm.encrypt(INSTALL_CODE_KEY, header, aux, b"payload")
    assert sealed[:13] == aux.to_bytes() and sealed[0] == 0x30  # level 0 on the air
    # A header that claims level 5 is sent as level 0 all the same, and opens either way.
    assert ccm.encrypt(INSTALL_CODE_KEY, header, aux.with_level(5), b"payload") == sealed
    received = AuxHeader.from_bytes(sealed)
    assert ccm.decrypt(INSTALL_CODE_KEY, header, received, sealed[13:]) == b"payload"
    assert ccm.decrypt(INSTALL_CODE_KEY, header, received.with_level(5), sealed[13:]) == b"payload"


def test_nonce_source_from_the_caller_when_the_header_has_none() -> None:
    aux = AuxHeader(KeyId.DATA, 9)
    sealed = ccm.encrypt(INSTALL_CODE_KEY, b"\x20", aux, b"zcl", source=bytes(JOINER))
    assert ccm.decrypt(INSTALL_CODE_KEY, b"\x20", aux, sealed[5:], source=bytes(JOINER)) == b"zcl"
    with pytest.raises(BadMicError):
        ccm.decrypt(INSTALL_CODE_KEY, b"\x20", aux, sealed[5:], source=bytes(TC))
    with pytest.raises(UnknownKeyError, match="no source IEEE"):
        ccm.decrypt(INSTALL_CODE_KEY, b"\x20", aux, sealed[5:])


@given(
    payload=st.binary(max_size=80),
    header=st.binary(min_size=1, max_size=20),
    counter=st.integers(0, 0xFFFFFFFE),
    flip=st.integers(0, 10_000),
)
def test_any_altered_byte_fails_the_mic(payload: bytes, header: bytes, counter: int, flip: int) -> None:
    aux = AuxHeader(KeyId.DATA, counter, bytes(JOINER))
    sealed = ccm.encrypt(INSTALL_CODE_KEY, header, aux, payload)
    assert len(sealed) == aux.size + len(payload) + ccm.MIC_LENGTH
    assert ccm.decrypt(INSTALL_CODE_KEY, header, AuxHeader.from_bytes(sealed), sealed[aux.size :]) == payload
    whole = bytearray(header + sealed)
    position = flip % len(whole)
    # The level bits of the security control byte are not protected: receivers overwrite them with 5.
    whole[position] ^= 0x08 if position == len(header) else 0x01
    altered_header, altered = bytes(whole[: len(header)]), bytes(whole[len(header) :])
    with pytest.raises((BadMicError, UnknownKeyError, MalformedFrameError)):
        ccm.decrypt(INSTALL_CODE_KEY, altered_header, AuxHeader.from_bytes(altered), altered[aux.size :])


# -- aps: the regression vector ----------------------------------------------------------------------------


def test_transport_key_vector_is_built_byte_exact() -> None:
    command = NetworkKeyTransport(NETWORK_KEY, 0, destination=bytes(JOINER), source=bytes(TC))
    payload = aps.build_transport_key(command)
    assert payload == TRANSPORT_KEY_PLAIN
    aux = AuxHeader(aps.transport_key_id(command), 1, bytes(TC))
    frame = aps.secure(aps.command_frame(0x10, payload), INSTALL_CODE_KEY, aux)
    assert frame == TRANSPORT_KEY_FRAME and len(frame) == 54


def test_transport_key_vector_is_opened_byte_exact() -> None:
    opened = aps.unsecure(TRANSPORT_KEY_FRAME, INSTALL_CODE_KEY)
    assert opened.frame == bytes.fromhex("0110") + TRANSPORT_KEY_PLAIN
    assert opened.aux == AuxHeader(KeyId.KEY_TRANSPORT, 1, bytes(TC))
    command = aps.parse_transport_key(opened.frame[aps.header_length(opened.frame) :])
    assert command == NetworkKeyTransport(NETWORK_KEY, 0, bytes(JOINER), bytes(TC))
    with pytest.raises(BadMicError):
        aps.unsecure(TRANSPORT_KEY_FRAME, b"ZigBeeAlliance09")


def test_transport_keys_round_trip() -> None:
    commands: list[aps.TransportKey] = [
        NetworkKeyTransport(NETWORK_KEY, 3, bytes(JOINER), bytes(TC)),
        TrustCenterLinkKeyTransport(INSTALL_CODE_KEY, bytes(JOINER), bytes(TC)),
        ApplicationLinkKeyTransport(INSTALL_CODE_KEY, bytes(JOINER), initiator=True),
    ]
    wires = [
        "05 01" + NETWORK_KEY.hex() + "03 bbbbbb00006f0d00 aaaaaa00006f0d00",
        "05 04" + INSTALL_CODE_KEY.hex() + "bbbbbb00006f0d00 aaaaaa00006f0d00",
        "05 03" + INSTALL_CODE_KEY.hex() + "bbbbbb00006f0d00 01",
    ]
    for command, wire in zip(commands, wires, strict=True):
        assert aps.build_transport_key(command) == bytes.fromhex(wire)
        assert aps.parse_transport_key(bytes.fromhex(wire)) == command
    assert [aps.transport_key_id(c) for c in commands] == [KeyId.KEY_TRANSPORT, KeyId.KEY_TRANSPORT, KeyId.KEY_LOAD]
    with pytest.raises(ValueError, match="16 bytes"):
        aps.build_transport_key(NetworkKeyTransport(NETWORK_KEY[:15], 0, bytes(JOINER), bytes(TC)))


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("", "not a Transport-Key"),
        ("0601", "not a Transport-Key"),
        ("0502" + "00" * 33, "key type 0x02"),
        ("0501" + "00" * 32, "expected 33 bytes"),
        ("0503" + "00" * 24 + "02", "initiator flag 0x02"),
    ],
)
def test_bad_transport_key_is_malformed(payload: str, expected: str) -> None:
    with pytest.raises(MalformedFrameError, match=expected):
        aps.parse_transport_key(bytes.fromhex(payload))


# -- aps: data frames --------------------------------------------------------------------------------------

ZCL_BLOCK = bytes.fromhex("19 07 05 00 1d12 8400 02000000 40000000 04") + bytes(range(4))


@pytest.mark.parametrize(
    ("header", "length"),
    [
        ("40 01 1900 0901 01 07", 8),  # unicast data, ack request
        ("08 ff 1900 0901 01 07", 8),  # broadcast data
        ("0c 3412 1900 0901 01 07", 9),  # group data
        ("c0 01 1900 0901 01 07 00", 9),  # extended header, not fragmented
        ("c0 01 1900 0901 01 07 01 03", 10),  # first fragment: block count
        ("01 07", 2),  # command
        ("02 01 1900 0901 01 07", 8),  # ack of a data frame
        ("12 07", 2),  # ack of a command
    ],
)
def test_header_lengths(header: str, length: int) -> None:
    frame = bytes.fromhex(header) + b"payload"
    assert aps.header_length(frame) == length


@pytest.mark.parametrize("frame", ["", "03 00", "04 01 1900", "40 01 1900 0901", "c0 01 1900 0901 01 07"])
def test_unreadable_aps_headers_are_malformed(frame: str) -> None:
    with pytest.raises(MalformedFrameError):
        aps.header_length(bytes.fromhex(frame))


def test_data_frame_secured_and_opened() -> None:
    plain = bytes.fromhex("40 01 1900 0901 01 07") + ZCL_BLOCK
    aux = AuxHeader(KeyId.DATA, 0x1234, bytes(TC))
    secured = aps.secure(plain, INSTALL_CODE_KEY, aux)
    # Security bit set; the auxiliary header after the APS counter; ZCL encrypted; 4-byte MIC.
    assert secured[:8] == bytes.fromhex("60 01 1900 0901 01 07")
    assert secured[8:21] == bytes.fromhex("20 34120000 aaaaaa00006f0d00")
    assert len(secured) == len(plain) + 13 + 4 and ZCL_BLOCK not in secured
    assert aps.security_header(secured) == aux
    assert aps.unsecure(secured, INSTALL_CODE_KEY) == aps.Unsecured(plain, aux)
    with pytest.raises(MalformedFrameError, match="not secured"):
        aps.unsecure(plain, INSTALL_CODE_KEY)
    for cut in (9, 20, 23):
        with pytest.raises(MalformedFrameError):
            aps.unsecure(secured[:cut], INSTALL_CODE_KEY)
    with pytest.raises(BadMicError):
        aps.unsecure(secured[:-1] + bytes([secured[-1] ^ 0x80]), INSTALL_CODE_KEY)
    # The header is authenticated: another cluster id fails the MIC.
    with pytest.raises(BadMicError):
        aps.unsecure(secured[:2] + b"\x1a" + secured[3:], INSTALL_CODE_KEY)


# -- keystore ----------------------------------------------------------------------------------------------

CBKE_KEY = bytes.fromhex("8d5c6cd2a7f0e7a1d1a6c4b0f3e0e2c1")


def pair() -> tuple[SecurityContext, SecurityContext]:
    chf, device = SecurityContext(TC), SecurityContext(JOINER)
    chf.set_link_key(JOINER, CBKE_KEY, KeyOrigin.CBKE)
    device.set_link_key(TC, CBKE_KEY, KeyOrigin.CBKE)
    return chf, device


def test_context_secures_opens_and_rejects_replays() -> None:
    chf, device = pair()
    plain = bytes.fromhex("40 01 1900 0901 01 07") + ZCL_BLOCK
    first, second = chf.secure(plain, JOINER), chf.secure(plain, JOINER)
    assert chf.outgoing_frame_counter == 2
    opened = device.unsecure(first)
    assert (opened.frame, opened.sender, opened.origin, opened.aux.frame_counter) == (plain, TC, KeyOrigin.CBKE, 0)
    with pytest.raises(StaleFrameCounterError, match="frame counter 0"):
        device.unsecure(first)
    assert device.unsecure(second).aux.frame_counter == 1
    assert device.incoming_frame_counter(TC) == 2


def test_a_forged_frame_does_not_move_the_counter() -> None:
    chf, device = pair()
    plain = bytes.fromhex("40 01 1900 0901 01 07") + ZCL_BLOCK
    chf.outgoing_frame_counter = 100
    forged = bytearray(chf.secure(plain, JOINER))
    forged[-1] ^= 1
    with pytest.raises(BadMicError):
        device.unsecure(bytes(forged))
    assert device.incoming_frame_counter(TC) == 0
    chf.outgoing_frame_counter = 5
    assert device.unsecure(chf.secure(plain, JOINER)).aux.frame_counter == 5


def test_unknown_partners_and_replaced_keys() -> None:
    chf, device = pair()
    stranger = SecurityContext(t.EUI64.convert("00:0D:6F:00:00:CC:CC:CC"))
    stranger.set_link_key(JOINER, CBKE_KEY, KeyOrigin.PRECONFIGURED)
    frame = bytes.fromhex("01 01") + b"\x0f"
    with pytest.raises(UnknownKeyError, match="no link key for 00:0d:6f:00:00:cc:cc:cc"):
        device.unsecure(stranger.secure(frame, JOINER))
    with pytest.raises(UnknownKeyError):
        stranger.secure(frame, TC)
    # A new key (install code, then CBKE) starts the partner's incoming counter again.
    chf.outgoing_frame_counter = 50
    device.unsecure(chf.secure(frame, JOINER))
    assert device.incoming_frame_counter(TC) == 51
    device.set_link_key(TC, INSTALL_CODE_KEY, KeyOrigin.INSTALL_CODE)
    assert device.incoming_frame_counter(TC) == 0 and device.link_key(TC).origin == KeyOrigin.INSTALL_CODE
    with pytest.raises(BadMicError):
        device.unsecure(chf.secure(frame, JOINER))
    device.remove_link_key(TC)
    assert device.link_key(TC) is None and device.partners() == {}


def test_frame_without_source_uses_the_given_sender() -> None:
    _, device = pair()
    plain = bytes.fromhex("40 01 1900 0901 01 07") + ZCL_BLOCK
    secured = aps.secure(plain, CBKE_KEY, AuxHeader(KeyId.DATA, 3), source=bytes(TC))
    with pytest.raises(UnknownKeyError, match="sender unknown"):
        device.unsecure(secured)
    assert device.unsecure(secured, sender=TC).frame == plain


def test_key_transport_key_through_the_context() -> None:
    tc = SecurityContext(TC, outgoing_frame_counter=1)
    tc.set_link_key(JOINER, INSTALL_CODE_KEY, KeyOrigin.INSTALL_CODE)
    payload = aps.build_transport_key(NetworkKeyTransport(NETWORK_KEY, 0, bytes(JOINER), bytes(TC)))
    assert tc.secure(aps.command_frame(0x10, payload), JOINER, KeyId.KEY_TRANSPORT) == TRANSPORT_KEY_FRAME


def test_exhausted_outgoing_counter() -> None:
    chf, _ = pair()
    chf.outgoing_frame_counter = 0xFFFFFFFE
    chf.secure(b"\x01\x00\x0f", JOINER)
    with pytest.raises(FrameCounterExhaustedError):
        chf.secure(b"\x01\x00\x0f", JOINER)


@pytest.mark.parametrize(
    ("profile", "cluster", "broadcast", "command", "required"),
    [
        (0x0109, 0x0019, False, 0x05, True),  # OTA Image Block Response
        (0x0109, 0x0019, False, 0x00, True),  # unicast Image Notify
        (0x0109, 0x0019, True, 0x00, False),  # broadcast Image Notify
        (0x0109, 0x0800, False, 0x00, False),  # Key Establishment
        (0x0109, 0x000A, False, None, True),  # Time
        (0x0109, 0x0700, False, None, True),  # Price
        (0x0109, 0x0702, False, None, True),  # Metering
        (0x0109, 0x0704, False, None, True),  # Tunneling
        (0x0109, 0x0000, False, None, False),  # Basic
        (0x0109, 0x0702, True, None, False),  # a broadcast is never APS-encrypted
        (0x0000, 0x0013, False, None, False),  # ZDO
        (0x0104, 0x0019, False, 0x05, False),  # Home Automation OTA
        (0xFFFF, 0x0703, False, None, True),  # wildcard profile
    ],
)
def test_se_aps_encryption_policy(
    profile: int, cluster: int, broadcast: bool, command: int | None, required: bool
) -> None:
    assert requires_aps_encryption(profile, cluster, broadcast=broadcast, command_id=command) is required
