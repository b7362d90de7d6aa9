"""OTA throughput through bellows and the virtual NCP, beside the in-process loopback radio.

One PPMID downloads one image (64 KiB by default) in 63-byte blocks from the CHF OTA server. Each workload
prints block round trips per second of wall time, CPU per block (the process CPU time — host, NCP, air and
device all run in this one process — divided by the blocks) and, through bellows, EZSP frames per block
(commands, their responses and callbacks, as the virtual NCP counted them):

  ezsp      bellows' ControllerApplication <-> ASH/EZSP over tcp://127.0.0.1 <-> virtual NCP (EZSP v13), real time
  sticks    the same CHF on one virtual stick, the device on another (`ota-emu device`: bellows' EZSP layer,
            the NCP in its joining role), both on one air: every block crosses two serial links and two NCPs
  loopback  zigpy's loopback radio on the virtual air, real time and virtual time

The air's per-hop latency (default 4 ms, about a 2.4 GHz hop with its MAC ACK) bounds real-time runs; the
`latency 0` rows show what the software alone manages. A real 2.4 GHz link carries about 30-60 block round trips
per second; the target through bellows is at least 50, and stick to stick at least 30 at 4 ms per hop. Then one
cProfile run of the bellows workload shows where the time goes, grouped by layer.

Usage: python tools/bench_ezsp.py [--size KIB] [--latency SECONDS] [--ezsp-version 8|13|14] [--no-profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from emulator import clock
from emulator.chf.node import ChfNode
from emulator.chf.store import HeldImage, ImageStore
from emulator.device import events as device_events
from emulator.device.device import IN_CLUSTERS, OUT_CLUSTERS, EmulatedDevice
from emulator.han.network import Han, HanOptions
from emulator.ncp.server import VirtualNcp
from emulator.ota.image import build_gb
from emulator.profiles import bundled, load_chf, load_device
from emulator.radio.air import Air, LinkModel
from emulator.radio.stick import Endpoint, JoinPlan, Role, StickRadio

BLOCK = 63
START = datetime(2026, 1, 1, tzinfo=UTC)
SETTLE_LIMIT = 3600.0
TOP = 12

# Where a function's own time is booked, by the path of its source file (first match wins).
GROUPS = (
    ("/emulator/ncp/", "virtual NCP (ASH, EZSP, stack)"),
    ("/bellows/", "bellows host side (ASH, EZSP, app)"),
    ("/serialx/", "serialx (serial/TCP transport)"),
    ("/zigpy/", "zigpy"),
    ("/emulator/chf/", "CHF OTA server"),
    ("/emulator/device/", "emulated device"),
    ("/emulator/ota/", "OTA frame codec"),
    ("/emulator/radio/", "virtual air and host hooks"),
    ("/asyncio/", "asyncio"),
    ("~", "C built-ins (socket I/O, select, struct, ...)"),
)


@dataclass
class Figures:
    label: str
    blocks: int
    wall: float
    cpu: float
    ezsp_frames: int | None
    ash_frames: int | None

    def line(self) -> str:
        text = (
            f"{self.label:<46} {self.blocks:5d} blocks  {self.blocks / self.wall:8,.0f} /s wall  "
            f"{1e6 * self.cpu / self.blocks:7,.0f} CPU us/block"
        )
        if self.ezsp_frames is not None and self.ash_frames is not None:
            text += (
                f"  {self.ezsp_frames / self.blocks:5.2f} EZSP frames/block"
                f"  {self.ash_frames / self.blocks:5.2f} ASH frames/block"
            )
        return text


def _image(size: int, profile) -> HeldImage:
    payload = random.Random(size).randbytes(size)
    image = build_gb(profile.manufacturer_code, profile.image_type, 2, payload=payload, hw_min=0x1111, hw_max=0x1211)
    return HeldImage(image, image.serialize(), frozenset([profile.ieee]))


async def _transfer(label: str, radio: str, size: int, latency: float, ezsp_version: int) -> Figures:
    """From the device's first block to its verified image: wall time, CPU time and the NCP's frame counts."""
    device = load_device(bundled("ppmid")).replace(max_data_size=BLOCK, query_start_jitter=1.0)
    chf = load_chf(bundled("chf")).replace(max_block_size=BLOCK)
    options = HanOptions(radio=radio, ezsp_version=ezsp_version, link=LinkModel(latency=latency), start_utc=START)
    han = Han(chf, [device], [_image(size, device)], options)
    marks: dict[str, float] = {}

    def frames() -> tuple[float, float]:
        if han.ncp is None:
            return 0.0, 0.0
        counters = han.ncp.counters
        return float(counters.ezsp_frames), float(sum(counters.ash_rx.values()) + sum(counters.ash_tx.values()))

    def watch(event) -> None:
        if isinstance(event, device_events.DownloadStarted):
            marks["ezsp0"], marks["ash0"] = frames()
            marks["cpu0"], marks["wall0"] = time.process_time(), time.perf_counter()
        elif isinstance(event, device_events.ImageVerified):
            marks["cpu1"], marks["wall1"] = time.process_time(), time.perf_counter()
            marks["ezsp1"], marks["ash1"] = frames()

    han.add_listener(watch)
    await han.start()
    settled = await han.settle(SETTLE_LIMIT)
    blocks = sum(transfer.blocks for transfer in han.server.transfers.values())
    await han.stop()
    if not settled or "wall1" not in marks:
        raise SystemExit(f"{label}: the download did not finish: {han.summaries}")
    through_ncp = radio == "ezsp"
    return Figures(
        label,
        blocks,
        marks["wall1"] - marks["wall0"],
        marks["cpu1"] - marks["cpu0"],
        int(marks["ezsp1"] - marks["ezsp0"]) if through_ncp else None,
        int(marks["ash1"] - marks["ash0"]) if through_ncp else None,
    )


async def _stick_transfer(label: str, size: int, latency: float, ezsp_version: int) -> Figures:
    """The CHF on one virtual stick, `ota-emu device`'s radio and device on another, one air between them."""
    profile = load_device(bundled("ppmid")).replace(max_data_size=BLOCK, query_start_jitter=1.0)
    chf = load_chf(bundled("chf")).replace(max_block_size=BLOCK)
    air = Air(seed=1, link=LinkModel(latency=latency))
    marks: dict[str, float] = {}
    done = asyncio.Event()
    async with (
        VirtualNcp(air, ezsp_version=ezsp_version, seed=0) as chf_ncp,
        VirtualNcp(air, ezsp_version=ezsp_version, seed=1) as stick,
    ):
        device_profile = profile.replace(ieee=stick.stack.ieee)
        node = ChfNode(chf, ImageStore.from_profile(chf, [_image(size, device_profile)]), clock.Clock(START))
        await node.start_ezsp(chf_ncp.url or "")
        await node.app.permit(60)
        radio = StickRadio(stick.url or "", JoinPlan(Role.END_DEVICE, join_timeout=30))
        endpoint = Endpoint(
            profile.endpoint, profile.profile_id, profile.effective_device_id, IN_CLUSTERS, OUT_CLUSTERS,
            profile.manufacturer_code,
        )  # fmt: skip
        joined = await radio.open(endpoint)
        device = EmulatedDevice(device_profile.replace(nwk=joined.nwk), radio, clock.Clock(START), nwk=joined.nwk)

        def frames() -> tuple[float, float]:
            ncps = (chf_ncp.counters, stick.counters)
            ash = sum(sum(c.ash_rx.values()) + sum(c.ash_tx.values()) for c in ncps)
            return float(sum(c.ezsp_frames for c in ncps)), float(ash)

        def watch(event: device_events.DeviceEvent) -> None:
            if isinstance(event, device_events.DownloadStarted):
                marks["ezsp0"], marks["ash0"] = frames()
                marks["cpu0"], marks["wall0"] = time.process_time(), time.perf_counter()
            elif isinstance(event, device_events.ImageVerified):
                marks["cpu1"], marks["wall1"] = time.process_time(), time.perf_counter()
                marks["ezsp1"], marks["ash1"] = frames()
                done.set()

        device.add_listener(watch)
        await device.start()
        try:
            await asyncio.wait_for(done.wait(), SETTLE_LIMIT)
        finally:
            blocks = sum(transfer.blocks for transfer in node.server.transfers.values())
            await device.stop()
            await radio.close()
            await node.stop()
    return Figures(
        label,
        blocks,
        marks["wall1"] - marks["wall0"],
        marks["cpu1"] - marks["cpu0"],
        int(marks["ezsp1"] - marks["ezsp0"]),
        int(marks["ash1"] - marks["ash0"]),
    )


def measure(label: str, radio: str, *, size: int, latency: float, virtual: bool, ezsp_version: int) -> Figures:
    if radio == "sticks":
        return clock.run(lambda: _stick_transfer(label, size, latency, ezsp_version), virtual=False)
    return clock.run(lambda: _transfer(label, radio, size, latency, ezsp_version), virtual=virtual)


def _group(filename: str) -> str:
    for marker, name in GROUPS:
        if marker in filename:
            return name
    return "other (stdlib, logging, ...)"


def _where(key: tuple[str, int, str]) -> str:
    filename, line, function = key
    if filename == "~":
        return function
    short = filename.split("site-packages/")[-1].split("/work/main/")[-1].split("/lib/python3.11/")[-1]
    return f"{short}:{line} {function}"


def profile(size: int, latency: float, ezsp_version: int) -> None:
    profiler = cProfile.Profile(time.process_time)  # CPU, not wall: a loop waiting in epoll costs nothing
    profiler.enable()
    figures = measure("profiled", "ezsp", size=size, latency=latency, virtual=False, ezsp_version=ezsp_version)
    profiler.disable()
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for _, _, tt, _, _ in entries.values())
    by_group: dict[str, float] = defaultdict(float)
    for (filename, _, _), (_, _, own, _, _) in entries.items():
        by_group[_group(filename)] += own
    print(
        f"\nWhere the CPU goes: cProfile of the bellows run ({figures.blocks} blocks, whole run with startup; "
        f"{total:.2f} CPU s under the profiler, which inflates every call)"
    )
    print("  own time by layer:")
    for name, own in sorted(by_group.items(), key=lambda item: -item[1]):
        print(f"    {100 * own / total:5.1f} %  {own:6.2f} s  {name}")
    print(f"  top {TOP} functions by own time:")
    for key, (_, calls, own, _, _) in sorted(entries.items(), key=lambda item: -item[1][2])[:TOP]:
        print(f"    {own:6.2f} s  {calls:8d} calls  [{_group(key[0])}]  {_where(key)}")
    print(f"  top {TOP} functions of the layers above by cumulative time:")
    layers = {name for _, name in GROUPS[:-2]}
    ours = [(key, value) for key, value in entries.items() if _group(key[0]) in layers]
    for key, (_, calls, _, cumulative, _) in sorted(ours, key=lambda item: -item[1][3])[:TOP]:
        print(f"    {cumulative:6.2f} s  {calls:8d} calls  [{_group(key[0])}]  {_where(key)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image size, KiB")
    parser.add_argument("--latency", type=float, default=LinkModel().latency, help="air latency per hop, s")
    parser.add_argument("--ezsp-version", type=int, choices=[8, 13, 14], default=13)
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    size, latency, version = args.size * 1024, args.latency, args.ezsp_version
    print(f"1 PPMID x {args.size} KiB image, {BLOCK}-byte blocks; air latency {latency * 1000:g} ms per hop")
    runs = [
        (f"bellows + virtual NCP v{version}, real time", "ezsp", latency, False),
        (f"bellows + virtual NCP v{version}, latency 0", "ezsp", 0.0, False),
        (f"stick to stick, 2 virtual NCPs v{version}, real time", "sticks", latency, False),
        ("loopback, real time", "loopback", latency, False),
        ("loopback, real time, latency 0", "loopback", 0.0, False),
        ("loopback, virtual time", "loopback", latency, True),
    ]
    for label, radio, hop, virtual in runs:
        figures = measure(label, radio, size=size, latency=hop, virtual=virtual, ezsp_version=version)
        print(figures.line())
    print(
        "(virtual time: the wall rate is the CPU-bound ceiling of the in-process stack; CPU us/block counts the "
        "whole process: host, NCP, air and device)"
    )
    if not args.no_profile:
        profile(size, latency, version)


if __name__ == "__main__":
    main()
