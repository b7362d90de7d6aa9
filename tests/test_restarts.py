"""What survives a killed or restarted process: no stale temporary files, no forgotten devices, no reused
frame counters."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

import bellows.types as bt
import zigpy.types as t
from test_ncp_link import RawHost

from conftest import sign_for_tests
from emulator.device.state import DeviceState, StateStore
from emulator.ncp.server import VirtualNcp
from emulator.ota.image import build_gb

EUI = t.EUI64.convert("00:DB:12:34:56:78:90:A4")
OTHER = t.EUI64.convert("00:DB:12:34:56:78:90:A5")


def killed_mid_write(directory: Path, target: str, size: int) -> Path:
    """What `write_atomic` leaves when the process dies between creating its temporary file and renaming it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target}.", suffix=".tmp", dir=directory)
    with os.fdopen(fd, "wb") as handle:
        handle.write(bytes(size))
    return Path(tmp)


def test_a_device_removes_the_temporary_files_a_killed_run_left(tmp_path: Path):
    store = StateStore(tmp_path, EUI)
    store.save(DeviceState(running_version=1, running_stack_version=2))
    mine = [
        killed_mid_write(tmp_path, "00DB1234567890A4.download.bin", 40000),
        killed_mid_write(tmp_path, "00DB1234567890A4.json", 300),
    ]
    other = killed_mid_write(tmp_path, "00DB1234567890A5.download.bin", 100)  # another device's, maybe running
    assert StateStore(tmp_path, EUI).load() is not None
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
                sys.executable, "-m", "emulator", "chf", "--radio", "ezsp", "--device", ncp.url,
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
