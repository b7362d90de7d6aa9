"""Persistence (C-20 and what a device keeps across restarts), state-file errors, and sleepy end devices."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import pytest
from test_device_harness import EventLog, bench, gb_image, hcalcs_profile, notify, ppmid_profile, vrun

from emulator.device import events
from emulator.device.client import JOIN_POLL_WINDOW
from emulator.device.device import EmulatedDevice
from emulator.device.download import SAVE_EVERY_BYTES
from emulator.device.state import StateError, StateStore
from emulator.errors import InputError
from emulator.profiles import DeviceProfile
from emulator.radio.air import INDIRECT_TRANSMISSION_TIMEOUT

EUI = "00DB1234567890A4"


async def _stop_mid_download(b, offset: int) -> None:
    """Let the download pass `offset`, then stop the device as a power cut would (stop persists)."""
    await b.log.wait(events.Progress, where=lambda e: e.offset >= offset)
    await b.device.stop()


def _restart(b, profile: DeviceProfile, state_dir: Path) -> tuple[EmulatedDevice, EventLog]:
    device = EmulatedDevice(profile, b.air, b.clock, nwk=0x1234, state_dir=state_dir)
    return device, EventLog(device)


def test_c20_restart_resumes_at_the_persisted_offset(tmp_path: Path) -> None:
    async def main() -> None:
        image = gb_image(size=32 * 1024)
        profile = ppmid_profile()
        b = await bench(profile, image=image, state_dir=tmp_path)
        await _stop_mid_download(b, 10_000)
        saved = json.loads((tmp_path / f"{EUI}.json").read_text())
        offset = saved["file_offset"]
        assert offset > 10_000 and saved["image_upgrade_status"] == 1 and saved["download"]["image_size"] == len(image)
        assert (tmp_path / f"{EUI}.download.bin").read_bytes() == image[:offset]
        requests_before = len(b.server.sent("image_block"))
        queries_before = len(b.server.sent("query_next_image"))

        device, log = _restart(b, profile, tmp_path)
        assert device.attributes[0x0001] == offset and device.attributes[0x0006] == 1
        await device.start()
        (resumed,) = await log.wait(events.DownloadStarted)
        assert resumed.offset == offset
        (activated,) = await log.wait(events.Activated)
        after = b.server.sent("image_block")[requests_before:]
        assert after[0].frame.command.file_offset == offset
        assert len(b.server.sent("query_next_image")) == queries_before  # resumed without asking again
        assert activated.success and device.state.running_image == image
        assert not (tmp_path / f"{EUI}.download.bin").exists()
        await device.stop()

        again, _ = _restart(b, profile, tmp_path)  # the new firmware survives a restart too
        assert again.running_version == 2 and again.state.running_image == image

    vrun(main)


def test_progress_is_saved_while_downloading_not_only_at_stop(tmp_path: Path) -> None:
    async def main() -> None:
        image = gb_image(size=40 * 1024)
        b = await bench(image=image, state_dir=tmp_path)
        writes: list[int] = []
        await b.log.wait(events.DownloadStarted)
        while b.device.state.file_offset < 30_000:
            await asyncio.sleep(0.25)
            on_disk = json.loads((tmp_path / f"{EUI}.json").read_text())["file_offset"]
            if not writes or writes[-1] != on_disk:
                writes.append(on_disk)
            assert b.device.state.file_offset - on_disk < SAVE_EVERY_BYTES + 63
        assert 3 <= len(writes) <= 30_000 // SAVE_EVERY_BYTES + 2  # saved every few KiB, not every block
        await b.device.stop()

    vrun(main)


def test_held_image_survives_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        profile = hcalcs_profile()
        image = gb_image(3, image_type=0x0085, size=500)
        b = await bench(profile, image=image, state_dir=tmp_path)
        b.server.upgrade_time = "wait"
        await b.log.wait(events.WaitingToUpgrade)
        await b.device.stop()
        assert (tmp_path / f"{EUI[:-1]}5.held-0085.bin").read_bytes() == image

        device, log = _restart(b, profile, tmp_path)
        assert device.downloaded_image == image and device.attributes[0x0004] == 3
        await device.start()
        await log.wait(events.WaitingToUpgrade)  # asks again, told to wait again
        assert len(b.server.sent("image_block")) == (len(image) + 62) // 63  # nothing downloaded twice
        await device.stop()

    vrun(main)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not a readable device state file"),
        ('{"format": 1, "ieee": "00:00:00:00:00:00:00:01"}', "belongs to device"),
        ('{"format": 2}', "format 2, expected 1"),
        ('{"format": 1, "ieee": "00:db:12:34:56:78:90:a4", "running_version": -1}', "key 'running_version'"),
    ],
)
def test_unusable_state_file_is_a_one_line_input_error(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / f"{EUI}.json").write_text(content)
    store = StateStore(tmp_path, ppmid_profile().ieee)
    with pytest.raises(StateError) as caught:
        store.load()
    assert isinstance(caught.value, InputError)
    text = str(caught.value)
    assert message in text and str(tmp_path / f"{EUI}.json") in text and "\n" not in text


# -- sleepy end devices -------------------------------------------------------------------------------------


def test_sleepy_device_polls_for_its_answers() -> None:
    async def main() -> None:
        profile = ppmid_profile(sleepy=True, poll_period=0.5)
        b = await bench(profile, image=gb_image(size=300))
        polls: list[float] = []
        air_poll = b.air.poll

        def counting_poll(nwk: int) -> int:
            polls.append(b.clock.now())
            return air_poll(nwk)

        b.air.poll = counting_poll
        (activated,) = await b.log.wait(events.Activated)
        blocks = b.server.sent("image_block")
        gaps = [r2.at - r1.at for r1, r2 in itertools.pairwise(blocks)]
        # Each answer waits at the parent until the device's next poll, poll_period after its request.
        assert all(gap == pytest.approx(0.5, abs=0.01) for gap in gaps)
        assert activated.success and b.air.stats["held"] > len(blocks)
        assert b.device.rx_on_when_idle is False
        await b.device.stop()

    vrun(main)


def test_sleepy_device_misses_what_its_parent_drops() -> None:
    async def main() -> None:
        profile = ppmid_profile(sleepy=True, poll_period=0.5, query_interval=600)
        b = await bench(profile)
        first = (await b.server.wait_for("query_next_image"))[0]
        await asyncio.sleep(max(0.0, JOIN_POLL_WINDOW - b.clock.now()) + 1)
        notify(b.server, 0, 100)  # idle and not polling: held, then dropped
        await asyncio.sleep(first.at + 600 - b.clock.now() - 2)
        notify(b.server, 0, 100)  # still held when the device polls after its next query
        await b.server.wait_for("query_next_image", 2)
        await asyncio.sleep(3)
        seen = b.log.of(events.NotifyReceived)
        assert len(seen) == 1 and b.air.stats["expired"] == 1
        assert INDIRECT_TRANSMISSION_TIMEOUT < 600
        await b.device.stop()

    vrun(main)
