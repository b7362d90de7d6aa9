"""What survives a killed or restarted process: no stale temporary files, no forgotten devices, no reused
frame counters."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

import bellows.types as bt
import pytest
import zigpy.types as t
from test_ncp_link import RawHost

from conftest import sign_for_tests
from emulator.chf import events as server_events
from emulator.chf.node import ChfNode
from emulator.chf.store import HeldImage, ImageStore
from emulator.clock import Clock, run
from emulator.device import events as device_events
from emulator.device.device import EmulatedDevice
from emulator.device.state import DeviceState, StateStore
from emulator.ncp.server import VirtualNcp
from emulator.ota.image import build_gb
from emulator.profiles import bundled, load_chf, load_device
from emulator.radio.air import Air

EUI = t.EUI64.convert("00:DB:12:34:56:78:90:A4")
OTHER = t.EUI64.convert("00:DB:12:34:56:78:90:A5")


def killed_mid_write(directory: Path, target: str, size: int) -> Path:
    """What `write_atomic` leaves when the process dies between creating its temporary file and renaming it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target}.", suffix=".tmp", dir=directory)
    with os.fdopen(fd, "wb") as handle:
        handle.write(bytes(size))
    return Path(tmp)


async def test_a_device_removes_the_temporary_files_a_killed_run_left(tmp_path: Path):
    store = StateStore(tmp_path, EUI)
    store.save(DeviceState(running_version=1, running_stack_version=2))
    mine = [
        killed_mid_write(tmp_path, "00DB1234567890A4.download.bin", 40000),
        killed_mid_write(tmp_path, "00DB1234567890A4.json", 300),
    ]
    other = killed_mid_write(tmp_path, "00DB1234567890A5.download.bin", 100)  # another device's, maybe running
    # A reader of the state (a monitor, `ota-emu activate` looking) removes nothing: it may be a running write.
    assert StateStore(tmp_path, EUI).load() is not None
    assert all(path.exists() for path in mine)
    # The device itself, starting, removes what its killed run left, and only its own.
    device = EmulatedDevice(load_device(bundled("ppmid")), Air(), Clock(), state_dir=tmp_path)
    assert device.state.running_version == 1
    assert not any(path.exists() for path in mine)
    assert other.exists() and (tmp_path / "00DB1234567890A4.json").exists()


def send_unicasts(ncp, count: int) -> list[int]:
    """`count` unicasts through the NCP's sendUnicast; the NWK frame counter each one went out with."""
    aps = bt.EmberApsFrame(
        profileId=0x0109,
        clusterId=0x0019,
        sourceEndpoint=1,
        destinationEndpoint=1,
        options=bt.EmberApsOption.APS_OPTION_NONE,
        groupId=0,
        sequence=1,
    )
    used = []
    for tag in range(count):
        used.append(ncp.stack.state.nwk_frame_counter)
        ncp.stack.handle(
            "sendUnicast",
            {
                "type": bt.EmberOutgoingMessageType.OUTGOING_DIRECT,
                "indexOrDestination": 0x7777,
                "apsFrame": aps,
                "messageTag": tag & 0xFF,
                "messageContents": b"\x01\x01\x02",
            },
        )
    return used


def test_a_killed_virtual_ncp_never_reuses_a_nwk_frame_counter(tmp_path: Path):
    """EmberZNet keeps the outgoing NWK frame counter in a token written every few thousand frames and jumps past
    it on boot, so a reset or power cut never sends a counter twice (Zigbee spec §4.3.1: a receiver drops a frame
    whose counter is not above the last it saw). Killed (no stop, no flush) at every point of a cycle, the
    restarted NCP must still send only counters it never sent."""

    async def main() -> None:
        path = tmp_path / "ncp.json"
        sent: list[int] = []
        for burst in (10, 5000, 1, 4095, 4097, 3):
            ncp = VirtualNcp(state_path=path)
            if not ncp.stack.state.formed:  # as formNetwork leaves it: formed, and in flash at once
                ncp.stack.state.formed, ncp.stack.state.channel, ncp.stack.state.pan_id = True, 15, 0x1A62
                ncp.stack.flush()
            ncp.stack.handle("networkInit", {"networkInitBitmask": 0})
            used = send_unicasts(ncp, burst)
            assert not set(used) & set(sent), "a NWK frame counter was used twice"
            sent += used
            # kill -9: the NCP is dropped without stop(); its delayed save never runs (this loop never waits).

    asyncio.run(main())


@pytest.mark.realtime
def test_a_second_chf_on_a_busy_virtual_ncp_gets_one_line_and_exit_2(tmp_path: Path):
    """The first host keeps the NCP; `ota-emu chf` on the same NCP says the port is busy, in one line, exit 2."""
    image = tmp_path / "ppmid.ota"
    image.write_bytes(sign_for_tests(build_gb(0x121D, 0x0084, 2, payload=b"\xa5" * 500)).serialize())

    async def main() -> tuple[int, str]:
        async with VirtualNcp() as ncp:
            first = await RawHost.connect(ncp.url)
            await first.reset()
            await first.handshake()
            second = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "emulator", "chf", "--radio", "ezsp", "--port", ncp.url,
                "--image", str(image), "--target", "00:DB:12:34:56:78:90:A4",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _, err = await asyncio.wait_for(second.communicate(), 60)
            assert ncp.connected  # the first host still has its link
            await first.close()
            return second.returncode or 0, err.decode()

    code, err = asyncio.run(main())
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("ota-emu: error: tcp://127.0.0.1:"), err
    assert "busy" in err and "Traceback" not in err


@pytest.mark.realtime
def test_a_restarted_chf_with_a_state_dir_serves_a_device_from_its_offset_without_a_rejoin(tmp_path: Path):
    """`ota-emu chf --state-dir` keeps zigpy's device database: the CHF stopped mid-transfer and started again on
    the same (virtual) NCP knows the device by its NWK address and serves its next block; the device never
    rejoins. On real time: zigpy's database works in aiosqlite's own thread, which the virtual clock cannot see
    (it waits only for work handed to the loop's executor), so protocol time could run ahead of it."""
    # The block request the stopped CHF never answers is re-sent after 1 s, not the profile's 5 s of wall clock
    # (with resends enough to outlast the restart); the CHF is stopped once a quarter of the image is through.
    ppmid = load_device(bundled("ppmid")).replace(query_start_jitter=0, response_timeout=1.0, max_resends=8)
    image = sign_for_tests(build_gb(ppmid.manufacturer_code, ppmid.image_type, 2, payload=b"\x5a" * 3000))
    held = HeldImage(image, image.serialize(), frozenset({ppmid.ieee}))
    chf_profile = load_chf(bundled("chf")).replace(notify="unicast")

    async def main() -> tuple[list, list]:
        air = Air(seed=1)
        clock = Clock()
        seen: list = []
        async with VirtualNcp(air, state_path=tmp_path / "ncp.json") as ncp:
            first = ChfNode(chf_profile, ImageStore([held]), clock)
            await first.start_ezsp(ncp.url, state_dir=tmp_path / "chf")
            await ncp.wait_for_network()
            device = EmulatedDevice(ppmid, air, clock, nwk=0x1001)
            device.add_listener(seen.append)
            await device.start()
            while not any(isinstance(e, device_events.Progress) and e.offset > 800 for e in seen):
                await asyncio.sleep(0.05)
            await first.stop()
            second = ChfNode(chf_profile, ImageStore([held]), clock)
            served: list = []
            await second.start_ezsp(ncp.url, state_dir=tmp_path / "chf")
            second.server.add_listener(served.append)
            async with asyncio.timeout(60):
                while not any(isinstance(e, device_events.Activated) for e in seen):
                    await asyncio.sleep(0.05)
            await device.stop()
            await second.stop()
        return seen, served

    seen, served = run(main, virtual=False)
    started = [e for e in served if isinstance(e, server_events.TransferStarted)]
    assert started and started[0].offset > 800  # the restarted CHF picked the transfer up mid-file
    assert sum(isinstance(e, device_events.Announced) for e in seen) == 2  # the join, and the reboot after activation
    assert [e.new_version for e in seen if isinstance(e, device_events.Activated)] == [2]


def test_a_transfer_resumes_after_the_virtual_ncp_is_stopped_and_started_again(tmp_path: Path):
    """The NCP goes away mid-transfer and comes back on the same port with its saved network: bellows reconnects,
    the CHF resumes the network and the device carries on from its offset to activation."""
    ppmid = load_device(bundled("ppmid")).replace(query_start_jitter=0)
    image = sign_for_tests(build_gb(ppmid.manufacturer_code, ppmid.image_type, 2, payload=b"\x5a" * 6000))
    held = HeldImage(image, image.serialize(), frozenset({ppmid.ieee}))

    async def main() -> tuple[list, int, int]:
        air, clock, seen = Air(seed=1), Clock(), []
        ncp = VirtualNcp(air, state_path=tmp_path / "ncp.json")
        await ncp.start()
        node = ChfNode(load_chf(bundled("chf")), ImageStore([held]), clock)
        await node.start_ezsp(ncp.url)
        await ncp.wait_for_network()
        device = EmulatedDevice(ppmid, air, clock, nwk=0x1001)
        device.add_listener(seen.append)
        await device.start()
        while not any(isinstance(e, device_events.Progress) and e.offset > 1500 for e in seen):
            await asyncio.sleep(0.05)
        await ncp.stop()
        stopped_at = max(e.offset for e in seen if isinstance(e, device_events.Progress))
        again = VirtualNcp(air, state_path=tmp_path / "ncp.json", listen=ncp.url)
        await again.start()
        async with asyncio.timeout(60):
            while not any(isinstance(e, device_events.Activated) for e in seen):
                await asyncio.sleep(0.05)
        await device.stop()
        await node.stop()
        await again.stop()
        return seen, stopped_at, node.reconnects

    seen, stopped_at, reconnects = run(main, virtual=True)
    assert reconnects == 1
    starts = [e for e in seen if isinstance(e, device_events.DownloadStarted)]
    assert len(starts) == 1 or all(e.offset >= stopped_at - 63 for e in starts[1:])  # never back to offset 0
    assert [e.new_version for e in seen if isinstance(e, device_events.Activated)] == [2]
