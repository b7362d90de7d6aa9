"""What a run of many devices keeps in memory: one copy of an image however many devices hold it, download
buffers no bigger than what arrived, and events that do not grow per block or per request."""

from __future__ import annotations

import random

import pytest

from conftest import sign_for_tests
from emulator.chf import events as server_events
from emulator.chf.store import HeldImage
from emulator.device import events as device_events
from emulator.device.state import DownloadBuffer, ImageRef, VerifiedImage
from emulator.han.network import Han, HanOptions, expand
from emulator.ota.image import build_gb
from emulator.profiles import bundled, load_chf, load_device

pytestmark = pytest.mark.virtual_time

DAY = 86400.0


def test_a_download_buffer_stores_what_arrived_and_reads_as_the_whole_zero_filled_image() -> None:
    buffer = DownloadBuffer(10)
    assert len(buffer) == 10 and bytes(buffer) == bytes(10) and bytearray.__len__(buffer) == 0
    buffer[0:2] = b"ab"
    buffer[5:7] = b"xy"  # a block ahead of the rest (a page): the gap reads as zeros
    assert bytearray.__len__(buffer) == 7
    assert bytes(buffer) == b"ab\x00\x00\x00xy\x00\x00\x00" and buffer.prefix(3) == b"ab\x00"
    buffer[2:5] = b"cde"
    assert bytes(buffer) == b"abcdexy\x00\x00\x00"


def test_equal_images_are_one_bytes_object_whoever_holds_them() -> None:
    data = random.Random(1).randbytes(4096)
    ref = ImageRef(0x1234, 1, 2, len(data))
    first, second = VerifiedImage(ref, 0, bytes(bytearray(data))), VerifiedImage(ref, 0, bytes(bytearray(data)))
    assert first.data == data and first.data is second.data
    other = VerifiedImage(ref, 0, data[:-1] + b"\x00")
    assert other.data is not first.data


async def test_a_hundred_devices_hold_the_chfs_bytes_and_keep_no_event_per_block_or_wait() -> None:
    profile = load_device(bundled("ppmid")).replace(security="none", max_data_size=64, query_start_jitter=30.0)
    profiles = expand([profile], 100)
    payload = random.Random(2).randbytes(2048)
    image = sign_for_tests(
        build_gb(profile.manufacturer_code, profile.image_type, 2, payload=payload, hw_min=0x1111, hw_max=0x1211)
    )
    held = HeldImage(image, image.serialize(), frozenset(p.ieee for p in profiles))
    chf = load_chf(bundled("chf")).replace(security="none", max_block_size=64, max_concurrent_downloads=4)
    han = Han(chf, profiles, [held], HanOptions())
    await han.start()
    assert await han.settle(DAY)
    summaries = han.summaries.values()
    assert all(s.result == "upgraded" for s in summaries)
    assert all(device.state.running_image is held.data for device in han.devices.values())
    assert sum(s.waits for s in summaries) > 0  # the CHF admitted four at a time: the others were told to wait
    kept = {type(e) for e in han.events}
    assert not kept & {device_events.Progress, device_events.WaitingForData, server_events.WaitForDataSent}
    blocks = sum(transfer.blocks for transfer in han.server.transfers.values())
    assert blocks >= 100 * (len(held.data) // 64) and len(han.events) < 40 * 100
    await han.stop()
