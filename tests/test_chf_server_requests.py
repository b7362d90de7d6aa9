"""The CHF OTA server's answers at the edges of what a client may send: MaximumDataSize 0 and sizes beyond what
an APS frame carries (blocks and pages answered alike), nothing ever answered to a broadcast, and commands with
trailing bytes accepted on the fields the server knows (a later cluster revision may append fields)."""

from __future__ import annotations

import pytest
import zigpy.types as t
from test_chf_server import MFR, PPMID, TYPE, decode, gb_image, start_han

from emulator.ota import frames
from emulator.ota.frames import Status
from emulator.profiles import ChfProfile

pytestmark = pytest.mark.virtual_time

INVALID_VALUE = 0x87


@pytest.fixture
async def han():
    held = gb_image()
    h = await start_han(ChfProfile(notify="none", page_requests=True, max_block_size=48), [held])
    h.held = held
    yield h
    h.server.stop()
    await h.app.shutdown()


def _page(client, size: int, page: int = 200) -> int:
    return client.send(
        "image_page",
        field_control=0,
        manufacturer_code=MFR,
        image_type=TYPE,
        file_version=2,
        file_offset=0,
        maximum_data_size=size,
        page_size=page,
        response_spacing=20,
    )


async def test_maximum_data_size_zero_is_invalid_for_blocks_and_pages_alike(han):
    client = han.client(PPMID)
    tsn = client.block(han.held, 0, size=0)
    assert (await client.expect())[1] == bytes([0x18, tsn, 0x0B, 0x03, INVALID_VALUE])
    tsn = _page(client, 0)
    assert (await client.expect())[1] == bytes([0x18, tsn, 0x0B, 0x04, INVALID_VALUE])
    await client.silence(2)


async def test_sizes_beyond_the_server_cap_are_served_at_the_cap_for_blocks_and_pages_alike(han):
    client = han.client(PPMID)
    client.block(han.held, 0, size=255)
    block = decode((await client.expect())[1]).command
    _page(client, 255, page=255)
    page_blocks = [decode((await client.expect())[1]).command for _ in range(6)]
    assert len(block.image_data) == 48
    assert [len(b.image_data) for b in page_blocks] == [48, 48, 48, 48, 48, 15]


def _broadcast(client, data: bytes) -> None:
    client.air.send(
        t.ZigbeePacket(
            src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=client.nwk),
            src_ep=client.endpoint,
            dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(0xFFFD)),
            dst_ep=0xFF,
            tsn=data[1],
            profile_id=client.profile_id,
            cluster_id=frames.CLUSTER_ID,
            data=t.SerializableBytes(data),
        )
    )


@pytest.mark.parametrize(
    "payload",
    [
        bytes([0x01, 0x60, 0x01, 0x1D]),  # truncated Query Next Image: MALFORMED_COMMAND if unicast
        bytes([0x01, 0x61, 0x0A]),  # undefined command: UNSUP_CLUSTER_COMMAND if unicast
        frames.encode(
            "upgrade_end", tsn=0x62, status=Status.ABORT, manufacturer_code=MFR, image_type=TYPE, file_version=2
        ),  # Default Response SUCCESS if unicast
    ],
    ids=["truncated-query", "undefined-command", "upgrade-end-abort"],
)
async def test_nothing_is_answered_to_a_broadcast(han, payload):
    client = han.client(PPMID)
    client.send_raw(payload)
    unicast = (await client.expect())[1]
    assert unicast[2] == 0x0B  # the same frame unicast draws a Default Response …
    _broadcast(client, payload)
    await client.silence(5)  # … broadcast, none (ZCL r7 §2.5.12.2)


async def test_trailing_bytes_are_ignored_as_a_later_revision_extension(han):
    client = han.client(PPMID)
    query = frames.encode(
        "query_next_image",
        tsn=0x70,
        field_control=1,
        manufacturer_code=MFR,
        image_type=TYPE,
        current_file_version=1,
        hardware_version=0x1111,
    )
    client.send_raw(query + b"\xaa\xbb")
    answer = decode((await client.expect())[1])
    assert answer.name == "query_next_image_response" and answer.command.status == Status.SUCCESS
    assert answer.tsn == 0x70 and answer.command.image_size == han.held.size
    block = frames.encode(
        "image_block",
        tsn=0x71,
        field_control=0,
        manufacturer_code=MFR,
        image_type=TYPE,
        file_version=2,
        file_offset=0,
        maximum_data_size=40,
    )
    client.send_raw(block + b"\x00")
    served = decode((await client.expect())[1]).command
    assert served.status == Status.SUCCESS and bytes(served.image_data) == han.held.data[:40]
    # A field missing is still malformed: trailing bytes extend, they never stand in for a field.
    client.send_raw(query[:-1])
    assert (await client.expect())[1] == bytes([0x18, 0x70, 0x0B, 0x01, 0x80])
