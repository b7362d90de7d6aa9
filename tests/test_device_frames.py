"""The device's answers byte for byte: ZDO descriptors, Basic and OTA attribute reads, Default Responses for
frames it cannot use, the hot-path block codec, and random or truncated frames (never an unhandled error)."""

from __future__ import annotations

import asyncio
import random

import pytest
import zigpy.types as t
from test_device_harness import SERVER_IEEE, Status, bench, gb_image, ppmid_profile, vrun
from zigpy.zcl import foundation

from emulator.device import events
from emulator.ota import frames
from emulator.ota.blocks import decode_block_success, encode_block_request

DEVICE = 0x1234
ZDO = {"dst_ep": 0, "src_ep": 0, "profile_id": 0}


async def exchange(b, data: bytes, *, settle: float = 1.0, **send) -> list:
    """Send `data` to the device and return what it sent back meanwhile (ignoring its own OTA client traffic)."""
    before = len(b.server.received)
    send.setdefault("dst", DEVICE)
    b.server.send(data, **send)
    await asyncio.sleep(settle)
    return [r for r in b.server.received[before:] if r.name not in ("query_next_image", "zdo:0006", "zdo:0001")]


async def idle_bench(**kwargs):
    b = await bench(**kwargs)
    await b.server.wait_for("query_next_image")
    await asyncio.sleep(1)
    return b


# -- ZDO ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cluster", "request_payload", "response_cluster", "response_payload"),
    [
        # Node_Desc: end device, 2.4 GHz, AllocateAddress|RxOnWhenIdle|MainsPowered, manufacturer 0x121D, R22
        (0x0002, "3412", 0x8002, "00 3412 02 40 8c 1d12 52 5200 002c 5200 00"),
        (0x0005, "3412", 0x8005, "00 3412 01 01"),
        # Simple_Desc: ep 1, SE profile, PPMID 0x0506, in Basic, out OTA
        (0x0004, "3412 01", 0x8004, "00 3412 0c 01 0901 0605 00 01 0000 01 1900"),
        (0x0004, "3412 02", 0x8004, "83 3412 00"),
        (0x0004, "3412 00", 0x8004, "82 3412 00"),
        (0x0001, "3412 00 00", 0x8001, "00 a490785634 12db00 3412"),
        (0x0001, "3412 01 00", 0x8001, "00 a490785634 12db00 3412 00 00"),
        (0x0000, "a490785634 12db00 00 00", 0x8000, "00 a490785634 12db00 3412"),
        (0x0002, "9999", 0x8002, "81 9999"),
        (0x0006, "3412 0901 00 01 1900", 0x8006, "00 3412 01 01"),  # who has an OTA client? us
        (0x0006, "3412 0401 01 1900 00", 0x8006, "00 3412 00"),  # HA profile: no match
        (0x0031, "00", 0x8031, "84"),  # Mgmt_Lqi_req: not supported
        (0x0002, "34", 0x8002, "80"),  # truncated: INV_REQUESTTYPE
    ],
)
def test_zdo_answers_are_byte_exact(
    cluster: int, request_payload: str, response_cluster: int, response_payload: str
) -> None:
    async def main() -> None:
        b = await idle_bench()
        replies = await exchange(b, bytes([0x5A]) + bytes.fromhex(request_payload), cluster=cluster, **ZDO)
        (reply,) = replies
        assert reply.packet.cluster_id == response_cluster and reply.packet.src_ep == 0 and reply.packet.dst_ep == 0
        assert reply.data == bytes([0x5A]) + bytes.fromhex(response_payload)
        await b.device.stop()

    vrun(main)


def test_sleepy_device_descriptor_says_rx_off_and_battery() -> None:
    async def main() -> None:
        b = await bench(ppmid_profile(sleepy=True, poll_period=0.5))
        await b.server.wait_for("query_next_image")
        (reply,) = await exchange(b, bytes.fromhex("07 3412"), cluster=0x0002, settle=3, **ZDO)
        assert reply.data == bytes.fromhex("07 00 3412 02 40 80 1d12 52 5200 002c 5200 00")
        await b.device.stop()

    vrun(main)


def test_device_announces_itself_on_joining() -> None:
    async def main() -> None:
        b = await bench()
        annce = (await b.server.wait_for("zdo:0013"))[0]
        assert annce.packet.dst.addr_mode == t.AddrMode.Broadcast and annce.packet.dst.address == 0xFFFD
        assert annce.data[1:] == bytes.fromhex("3412 a490785634 12db00 8c")
        await b.device.stop()

    vrun(main)


def test_broadcast_zdo_requests_for_others_get_no_answer() -> None:
    async def main() -> None:
        b = await idle_bench()
        replies = await exchange(b, bytes.fromhex("11 0100000000000000 00 00"), cluster=0x0000, broadcast=0xFFFD, **ZDO)
        assert replies == []
        await b.device.stop()

    vrun(main)


# -- ZCL: Basic and OTA attributes -----------------------------------------------------------------------------


def test_basic_read_attributes_is_byte_exact() -> None:
    async def main() -> None:
        b = await idle_bench()
        request = bytes.fromhex("00 42 00 0400 0500 0700 0040 0300 3412")
        (reply,) = await exchange(b, request, cluster=0x0000)
        expected = bytes.fromhex("18 42 01") + b"".join(
            [
                bytes.fromhex("0400 00 42 07") + b"ota-emu",
                bytes.fromhex("0500 00 42 05") + b"PPMID",
                bytes.fromhex("0700 00 30 01"),
                bytes.fromhex("0040 00 42 08") + b"00000001",
                bytes.fromhex("0300 00 20 11"),
                bytes.fromhex("3412 86"),
            ]
        )
        assert reply.data == expected
        assert (reply.packet.src_ep, reply.packet.dst_ep, reply.packet.cluster_id) == (1, 1, 0x0000)
        await b.device.stop()

    vrun(main)


def test_ota_client_attributes_read_server_to_client_answer_client_to_server() -> None:
    """zigpy reads the OTA *client* cluster Server→Client; the response must travel Client→Server."""

    async def main() -> None:
        b = await idle_bench()
        request = bytes.fromhex("18 43 00 0200 0600 0000 0100 0900 0b00 fdff 9900")
        (reply,) = await exchange(b, request)
        expected = bytes.fromhex("10 43 01") + b"".join(
            [
                bytes.fromhex("0200 00 23 01000000"),
                bytes.fromhex("0600 00 30 00"),
                bytes.fromhex("0000 00 f0") + SERVER_IEEE.serialize(),
                bytes.fromhex("0100 00 23 ffffffff"),
                bytes.fromhex("0900 00 21 0000"),
                bytes.fromhex("0b00 00 30 00"),
                bytes.fromhex("fdff 00 21 0400"),
                bytes.fromhex("9900 86"),
            ]
        )
        assert reply.data == expected
        assert reply.frame.header.direction == frames.C2S
        await b.device.stop()

    vrun(main)


def test_write_and_discover_attributes() -> None:
    async def main() -> None:
        b = await idle_bench()
        (written,) = await exchange(b, bytes.fromhex("00 44 02 0500 42 01 41 9999 20 01"), cluster=0x0000)
        assert written.data == bytes.fromhex("18 44 04 88 0500 86 9999")
        (found,) = await exchange(b, bytes.fromhex("18 45 0c 0000 03"))
        assert found.data == bytes.fromhex("10 45 0d 00 0000 f0 0100 23 0200 23")
        await b.device.stop()

    vrun(main)


@pytest.mark.parametrize(
    ("cluster", "request_bytes", "status", "reply_fc"),
    [
        (0x0019, "09 50 02 00 1d12", Status.MALFORMED_COMMAND, 0x10),  # QNI rsp SUCCESS, short
        (0x0019, "19 51 02 00 1d12 8400 02000000", Status.MALFORMED_COMMAND, 0x10),  # DDR set: still reported
        (0x0019, "19 52 0a 00", Status.UNSUP_CLUSTER_COMMAND, 0x10),  # no such OTA command
        (0x0019, "01 53 01 00 1d12 8400 01000000", Status.UNSUP_CLUSTER_COMMAND, 0x18),  # C2S to a client
        (0x0019, "1d 3412 54 00 00 64", Status.UNSUP_MANUF_CLUSTER_COMMAND, 0x10),  # manufacturer specific
        (0x0019, "00 55 00 0000", Status.UNSUPPORTED_CLUSTER, 0x18),  # read of an OTA *server* cluster
        (0x0000, "01 56 00", Status.UNSUP_CLUSTER_COMMAND, 0x18),  # Basic: reset to factory defaults
        (0x0000, "00 57 00 04", Status.MALFORMED_COMMAND, 0x18),  # Read Attributes with half an id
        (0x0000, "00 58 30", Status.UNSUP_GENERAL_COMMAND, 0x18),  # unknown general command
        (0x0006, "01 59 02", Status.UNSUPPORTED_CLUSTER, 0x18),  # On/Off toggle: no such cluster here
    ],
)
def test_unusable_frames_get_the_default_response_the_spec_asks_for(
    cluster: int, request_bytes: str, status: Status, reply_fc: int
) -> None:
    async def main() -> None:
        b = await idle_bench()
        request = bytes.fromhex(request_bytes)
        manufacturer = request[0] & 0x04
        tsn, command = (request[3], request[4]) if manufacturer else (request[1], request[2])
        (reply,) = await exchange(b, request, cluster=cluster)
        assert reply.data == bytes([reply_fc, tsn, 0x0B, command, status])
        assert b.log.of(events.FrameRejected)[-1].status == status
        assert await exchange(b, request, cluster=cluster, broadcast=0xFFFF, dst_ep=0xFF) == []
        await b.device.stop()

    vrun(main)


def test_frames_for_other_endpoints_or_profiles_are_dropped() -> None:
    async def main() -> None:
        b = await idle_bench()
        read = bytes.fromhex("00 42 00 0400")
        assert await exchange(b, read, cluster=0x0000, dst_ep=2) == []
        assert await exchange(b, read, cluster=0x0000, profile_id=0x0104) == []
        assert len(await exchange(b, read, cluster=0x0000, profile_id=0xFFFF)) == 1
        await b.device.stop()

    vrun(main)


# -- hot-path codec -------------------------------------------------------------------------------------------


def test_block_codec_matches_the_general_codec() -> None:
    rng = random.Random(3)
    for _ in range(300):
        fields = {
            "manufacturer_code": rng.randrange(1 << 16),
            "image_type": rng.randrange(1 << 16),
            "file_version": rng.randrange(1 << 32),
            "file_offset": rng.randrange(1 << 32),
            "maximum_data_size": rng.randrange(256),
        }
        tsn = rng.randrange(256)
        period = rng.choice([None, rng.randrange(1 << 16)])
        extra = {} if period is None else {"minimum_block_period": period}
        expected = frames.encode("image_block", tsn=tsn, field_control=0 if period is None else 2, **fields, **extra)
        assert encode_block_request(tsn, *fields.values(), period) == expected
        data = rng.randbytes(rng.randrange(64))
        response = frames.encode(
            "image_block_response",
            tsn=tsn,
            status=Status.SUCCESS,
            manufacturer_code=fields["manufacturer_code"],
            image_type=fields["image_type"],
            file_version=fields["file_version"],
            file_offset=fields["file_offset"],
            image_data=data,
        )
        general = frames.decode(response).command
        assert decode_block_success(response) == (
            0x19,
            tsn,
            general.manufacturer_code,
            general.image_type,
            general.file_version,
            general.file_offset,
            data,
        )


@pytest.mark.parametrize(
    "frame",
    [
        "19 01 05 00 1d12 8400 02000000 00000000 02 aa",  # DataSize 2, one byte present
        "19 01 05 00 1d12 8400 02000000 00000000 01 aa bb",  # trailing byte
        "19 01 05 95",  # ABORT
        "11 01 05 00 1d12 8400 02000000 00000000 01 aa",  # client→server
        "1d 01 05 00 1d12 8400 02000000 00000000 01 aa",  # manufacturer specific
        "19 01 02 00 1d12 8400 02000000 00000000 01 aa",  # another command
    ],
)
def test_block_codec_leaves_everything_else_to_the_general_decoder(frame: str) -> None:
    assert decode_block_success(bytes.fromhex(frame)) is None


# -- robustness -------------------------------------------------------------------------------------------------


def _server_frames(image: bytes) -> list[bytes]:
    """One of every server→client OTA frame, in each payload variant."""
    ids = {"manufacturer_code": 0x121D, "image_type": 0x0084, "file_version": 2}
    return [
        frames.encode("image_notify", tsn=1, payload_type=0, query_jitter=50),
        frames.encode("image_notify", tsn=1, payload_type=1, query_jitter=50, manufacturer_code=0x121D),
        frames.encode("image_notify", tsn=1, payload_type=2, query_jitter=50, manufacturer_code=1, image_type=2),
        frames.encode(
            "image_notify",
            tsn=1,
            payload_type=3,
            query_jitter=50,
            manufacturer_code=1,
            image_type=2,
            new_file_version=3,
        ),
        frames.encode("query_next_image_response", tsn=1, status=Status.SUCCESS, image_size=len(image), **ids),
        frames.encode("query_next_image_response", tsn=1, status=Status.NO_IMAGE_AVAILABLE),
        frames.encode(
            "image_block_response", tsn=1, status=Status.SUCCESS, file_offset=0, image_data=image[:40], **ids
        ),
        frames.encode(
            "image_block_response",
            tsn=1,
            status=Status.WAIT_FOR_DATA,
            current_time=1,
            request_time=2,
            minimum_block_period=3,
        ),
        frames.encode("image_block_response", tsn=1, status=Status.ABORT),
        frames.encode("upgrade_end_response", tsn=1, current_time=0, upgrade_time=0, **ids),
        frames.encode("query_specific_file_response", tsn=1, status=Status.SUCCESS, image_size=9, **ids),
    ]


def test_every_truncation_of_every_server_frame_is_reported_malformed() -> None:
    async def main() -> None:
        image = gb_image(size=100)
        b = await idle_bench()
        checked = 0
        every = _server_frames(image)
        for full in every:
            for cut in range(3, len(full)):
                data = full[:cut]
                wfd_short = cut == 12 and data[2] == 0x05 and data[3] == Status.WAIT_FOR_DATA
                if wfd_short:  # the 9-byte WAIT_FOR_DATA of older revisions is valid
                    continue
                replies = await exchange(b, data, settle=0.2)
                assert [r.data for r in replies] == [bytes([0x10, 0x01, 0x0B, data[2], Status.MALFORMED_COMMAND])], (
                    data.hex()
                )
                checked += 1
        assert checked == sum(len(full) - 3 for full in every) - 1  # all but the valid short WAIT_FOR_DATA
        assert b.device.running and b.air.stats["receiver_errors"] == 0
        await b.device.stop()

    vrun(main)


def test_random_bytes_never_break_the_device() -> None:
    async def main() -> None:
        image = gb_image(size=400)
        b = await bench(image=image)
        await b.server.wait_for("image_block", 2)
        rng = random.Random(11)
        for _ in range(600):
            data = rng.randbytes(rng.randrange(0, 40))
            cluster = rng.choice([0x0019, 0x0019, 0x0000, 0x0006, 0x0002, 0x0001, 0x0006, 0x8006, 0x8001])
            if cluster in (0x0002, 0x0001, 0x8006, 0x8001) or (cluster == 0x0006 and rng.random() < 0.5):
                addressing = {"dst": DEVICE, **ZDO}
            elif rng.random() < 0.2:
                addressing = {"broadcast": 0xFFFF, "dst_ep": 0xFF}
            else:
                addressing = {"dst": DEVICE}
            b.server.send(data, cluster=cluster, **addressing)
            await asyncio.sleep(0.01)
        (activated,) = await b.log.wait(events.Activated)
        assert activated.success and b.device.running_version == 2
        assert b.air.stats["receiver_errors"] == 0 and b.device.running
        await b.device.stop()

    vrun(main)


def test_general_commands_are_answered_with_the_requests_manufacturer_code() -> None:
    async def main() -> None:
        b = await idle_bench()
        (reply,) = await exchange(b, bytes.fromhex("04 1d12 46 00 0400"), cluster=0x0000)
        header, rest = foundation.ZCLHeader.deserialize(reply.data)
        assert header.manufacturer == 0x121D and header.tsn == 0x46
        assert rest == bytes.fromhex("0400 86")  # no manufacturer-specific attributes here
        await b.device.stop()

    vrun(main)


def test_ota_command_ids_are_zigpys():
    """One vocabulary names every OTA command id; each name and value is zigpy's own command definition."""
    from zigpy.zcl.clusters.general import Ota

    from emulator.ota.frames import OtaCommand

    zigpy_ids = {cmd.name.upper(): cmd.id for cmd in (*Ota.ServerCommandDefs, *Ota.ClientCommandDefs)}
    assert {member.name: member.value for member in OtaCommand} == zigpy_ids
