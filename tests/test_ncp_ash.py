"""ASH framing against UG101 and against the wire trace measured between bellows and an NCP
(ZIGPY_BELLOWS.md §3.2). Expected bytes are literals, written by hand from the specification."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.ncp import ash


def test_crc_is_ccitt_false_with_the_standard_check_value() -> None:
    # CRC-16/CCITT-FALSE check value for ASCII "123456789"
    assert ash.crc_ccitt(b"123456789") == 0x29B1


def test_pseudo_random_sequence_starts_as_ug101_lists_it() -> None:
    assert ash.pseudo_random_sequence(8) == bytes.fromhex("42 21 a8 54 2a 15 b2 59")


def test_randomization_is_its_own_inverse() -> None:
    data = bytes(range(40))
    assert ash.randomize(data) != data
    assert ash.randomize(ash.randomize(data)) == data


@pytest.mark.parametrize(
    ("frame", "wire"),
    [
        (ash.Rst(), "c0 38 bc 7e"),
        (ash.RstAck(reset_code=ash.RESET_SOFTWARE), "c1 02 0b 0a 52 7e"),
        (ash.Data(frm_num=0, ack_num=0, payload=bytes.fromhex("00 00 00 04")), "00 42 21 a8 50 ed 2c 7e"),
        (ash.Ack(ack_num=1), "81 60 59 7e"),
        (
            ash.Data(frm_num=0, ack_num=1, payload=bytes.fromhex("00 80 00 0d 02 50 74")),
            "01 42 a1 a8 59 28 45 c6 a5 bb 7e",
        ),
    ],
)
def test_frames_of_the_measured_wire_trace(frame: ash.Frame, wire: str) -> None:
    assert ash.encode(frame) == bytes.fromhex(wire)
    (raw,) = ash.Deframer().feed(bytes.fromhex(wire))
    assert ash.decode(raw) == frame


@pytest.mark.parametrize(
    ("frame", "control"),
    [
        (ash.Data(frm_num=5, ack_num=3, payload=b"\x00\x00\x00", re_tx=True), 0x5B),
        (ash.Ack(ack_num=6, not_ready=True), 0x8E),
        (ash.Nak(ack_num=2), 0xA2),
        (ash.Nak(ack_num=7, not_ready=True), 0xAF),
        (ash.Rst(), 0xC0),
        (ash.RstAck(reset_code=2), 0xC1),
        (ash.Error(code=0x51), 0xC2),
    ],
)
def test_control_bytes(frame: ash.Frame, control: int) -> None:
    assert ash.control_byte(frame) == control
    assert ash.decode(ash.to_raw(frame)) == frame


def test_error_frame_bytes() -> None:
    raw = ash.to_raw(ash.Error(code=ash.ERROR_EXCEEDED_MAXIMUM_ACK_TIMEOUT_COUNT))
    assert raw[:3] == bytes.fromhex("c2 02 51")
    assert int.from_bytes(raw[3:], "big") == ash.crc_ccitt(bytes.fromhex("c2 02 51"))


def test_reserved_bytes_are_escaped() -> None:
    assert ash.stuff(bytes([0x7E, 0x7D, 0x11, 0x13, 0x18, 0x1A, 0x42])) == bytes.fromhex(
        "7d5e 7d5d 7d31 7d33 7d38 7d3a 42"
    )
    assert ash.unstuff(bytes.fromhex("7d5e 7d5d 7d31 7d33 7d38 7d3a 42")) == bytes(
        [0x7E, 0x7D, 0x11, 0x13, 0x18, 0x1A, 0x42]
    )


def test_an_escape_of_an_unreserved_byte_is_a_bad_frame() -> None:
    with pytest.raises(ash.BadFrame):
        ash.unstuff(bytes.fromhex("7d 00"))


@given(st.binary(min_size=0, max_size=300))
def test_stuffed_data_never_contains_a_reserved_byte_except_escapes(data: bytes) -> None:
    stuffed = ash.stuff(data)
    assert not set(stuffed) & (ash.RESERVED - {ash.ESCAPE})
    assert ash.unstuff(stuffed) == data


@given(
    st.integers(0, 7),
    st.integers(0, 7),
    st.booleans(),
    st.binary(min_size=ash.MIN_DATA_LEN, max_size=ash.MAX_DATA_LEN),
)
def test_data_frames_round_trip_through_the_deframer(frm: int, ack: int, re_tx: bool, payload: bytes) -> None:
    frame = ash.Data(frm_num=frm, ack_num=ack, payload=payload, re_tx=re_tx)
    (raw,) = ash.Deframer().feed(ash.encode(frame))
    assert ash.decode(raw) == frame


def test_bad_crc_is_reported_and_says_whether_it_was_data() -> None:
    raw = bytearray(ash.to_raw(ash.Data(frm_num=1, ack_num=2, payload=b"\x01\x02\x03")))
    raw[-1] ^= 0x01
    with pytest.raises(ash.BadCrc) as exc:
        ash.decode(bytes(raw))
    assert exc.value.data_like
    ack = bytearray(ash.to_raw(ash.Ack(ack_num=0)))
    ack[1] ^= 0xFF
    with pytest.raises(ash.BadCrc) as exc:
        ash.decode(bytes(ack))
    assert not exc.value.data_like


def with_crc(body: bytes) -> bytes:
    return body + ash.crc_ccitt(body).to_bytes(2, "big")


@pytest.mark.parametrize(
    "raw",
    [
        with_crc(b"\xc3"),  # no frame type has control byte 0xC3
        with_crc(b"\x81\x00"),  # an ACK carries no data
        with_crc(b"\xc1\x02"),  # an RSTACK carries version and reset code
        b"\x80\x55",  # shorter than control byte + CRC
    ],
)
def test_malformed_frames(raw: bytes) -> None:
    with pytest.raises(ash.BadFrame):
        ash.decode(raw)


def test_data_frame_with_too_little_data_is_rejected() -> None:
    with pytest.raises(ash.BadFrame) as exc:
        ash.decode(with_crc(bytes([0x00, 0x42])))
    assert exc.value.data_like


def test_deframer_cancel_substitute_and_flow_control_bytes() -> None:
    rst = ash.encode(ash.Rst())
    deframer = ash.Deframer()
    # bellows' reset: 32 Cancel bytes then RST; garbage before the Cancel bytes is thrown away
    assert deframer.feed(b"\x99\x98" + b"\x1a" * 32 + rst) == [bytes.fromhex("c0 38 bc")]
    # a Substitute byte spoils the frame in progress up to the next Flag
    out = deframer.feed(b"\x81\x18\x60\x59\x7e" + rst)
    assert isinstance(out[0], ash.FramingError)
    assert out[1:] == [bytes.fromhex("c0 38 bc")]
    # XON/XOFF are dropped wherever they appear
    assert deframer.feed(b"\xc0\x11\x38\x13\xbc\x7e") == [bytes.fromhex("c0 38 bc")]


def test_deframer_keeps_partial_frames_between_reads() -> None:
    deframer = ash.Deframer()
    wire = ash.encode(ash.Data(frm_num=3, ack_num=4, payload=bytes.fromhex("7e7d11131a18")))
    out: list = []
    for byte in wire:
        out += deframer.feed(bytes([byte]))
    assert [ash.decode(raw) for raw in out] == [ash.Data(frm_num=3, ack_num=4, payload=bytes.fromhex("7e7d11131a18"))]


def test_deframer_drops_an_endless_frame() -> None:
    deframer = ash.Deframer()
    out = deframer.feed(b"\x01" * 1000 + b"\x7e" + ash.encode(ash.Rst()))
    assert isinstance(out[0], ash.FramingError)
    assert out[1:] == [bytes.fromhex("c0 38 bc")]


@given(st.binary(max_size=300))
def test_the_library_crc_equals_the_table_written_from_ug101(data: bytes) -> None:
    assert ash.crc_ccitt(data) == ash.crc_ccitt_table(data)


_STREAM = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"\x7e", b"\x7d", b"\x1a", b"\x18", b"\x11\x13", b"\x7e\x7e", bytes(500)]),
        st.builds(
            lambda frm, payload: ash.encode(ash.Data(frm, 0, payload)),
            st.integers(0, 7),
            st.binary(min_size=3, max_size=60),
        ),
    ),
    max_size=30,
)


@given(_STREAM, st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_the_deframer_reads_any_stream_in_any_chunks_as_byte_by_byte(pieces: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(pieces)
    expected = ash.Deframer().feed_bytes(stream)
    deframer, got, at = ash.Deframer(), [], 0
    for read in range(len(stream)):
        if at >= len(stream):
            break
        size = cuts[read % len(cuts)]
        got.extend(deframer.feed(stream[at : at + size]))
        at += size
    assert got == expected


@given(st.binary(max_size=200))
def test_unstuffing_undoes_stuffing(raw: bytes) -> None:
    assert ash.unstuff(ash.stuff(raw)) == raw
