"""OTA throughput through bellows and the virtual NCP, beside the in-process loopback radio.

One PPMID downloads one image (64 KiB by default) in 63-byte blocks from the CHF OTA server. Each workload
prints block round trips per second of wall time, the CPU one block costs the whole process (bellows, the NCP,
the air, the OTA server and the device all run in this one process: process CPU time divided by the blocks),
the virtual NCP's share of it, and the EZSP and ASH frames per block as the NCP counted them:

  virtual time  bellows' ControllerApplication <-> the NCP's in-process serial link <-> virtual NCP (EZSP v13),
                all on the virtual clock: no byte waits on the wall clock, so the wall rate is what the CPU allows
                (the default of `ota-emu run --radio ezsp` and `conform device --radio ezsp`)
  real time     the same over tcp://127.0.0.1 on the wall clock, as with an `ota-emu ncp` in another process
  sticks        the CHF on one virtual stick, the device on another (`ota-emu device`: bellows' EZSP layer, the
                NCP in its joining role), both on one air: every block crosses two serial links and two NCPs;
                once more with Smart Energy security as `ota-emu chf` and `ota-emu device` run it (install-code
                join, CBKE on the device's host, both NCPs APS-encrypting the OTA frames, 48-byte blocks)
  loopback      zigpy's loopback radio on the virtual air, for comparison

"no air latency" sets the air's per-hop latency to 0; "4 ms per hop" is about a 2.4 GHz hop with its MAC ACK. On
real time the air's latency and airtime (250 kbit/s) bound the rate: a real 2.4 GHz link carries about 30-60
block round trips per second.

The NCP's share is the CPU spent inside its entry points (bytes from the host, frames from the air, its own
timers and queued callbacks), measured around each outermost call; it includes what the NCP calls synchronously
(putting a frame on the air). Then one cProfile run of the virtual-time, no-latency bellows workload shows where
the time goes, by layer (a built-in's time is booked to the layer that called it).

Last, `ota-emu ncp --device ppmid --count 200` and `ota-emu chf` on it as two processes on real time: how long
200 devices take to join and upgrade through one NCP, and the CPU of both processes.

Usage: python tools/bench_ezsp.py [--size KIB] [--ezsp-version 8|13|14] [--repeat N] [--fleet N] [--no-profile]
                                  [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import functools
import json
import os
import pstats
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from emulator import clock, keys
from emulator.chf import ezsp_security
from emulator.chf.node import ChfNode
from emulator.chf.se_credentials import credentials_for
from emulator.chf.store import HeldImage, ImageStore
from emulator.cli.device import InstallCodeKey, StickKeyEstablishment
from emulator.device import events as device_events
from emulator.device.device import IN_CLUSTERS, OUT_CLUSTERS, EmulatedDevice
from emulator.han.network import Han, HanOptions, expand
from emulator.ncp.ash_protocol import AshNcpLink
from emulator.ncp.counters import NcpCounters
from emulator.ncp.server import VirtualNcp
from emulator.ncp.stack import EmberStack
from emulator.ota.image import build_gb
from emulator.ota.signing import sign_image
from emulator.profiles import DeviceProfile, bundled, load_chf, load_device
from emulator.radio.air import Air, LinkModel
from emulator.radio.kind import RadioKind
from emulator.radio.stick import Endpoint, JoinPlan, Role, StickRadio
from emulator.radio.stick_security import StickSecurity

BLOCK = 63
HOP = LinkModel().latency
START = datetime(2026, 1, 1, tzinfo=UTC)
SETTLE_LIMIT = 3600.0
TOP = 12
FLEET_IMAGE = 1000  # bytes of firmware each device of the two-process run downloads
ROOT = Path(__file__).resolve().parent.parent
TEST_IMAGE_KEY = ROOT / "profiles" / "keys" / "test-image-signer.key.pem"

# Where the virtual NCP is entered: everything it does starts in one of these.
NCP_ENTRY_POINTS: tuple[tuple[type, tuple[str, ...]], ...] = (
    (AshNcpLink, ("data_received", "connection_made", "connection_lost", "_ack_timer", "_host_ready")),
    (AshNcpLink, ("_flush_delayed",)),
    (EmberStack, ("receive", "device_joined", "_emit", "_emit_incoming_later", "flush", "_poll")),
    (EmberStack, ("_associate", "_rejoin")),
)

# Where a function's own time is booked, by the path of its source file (first match wins).
GROUPS = (
    ("/emulator/ncp/", "virtual NCP (ASH, EZSP, stack)"),
    ("/bellows/", "bellows host side (ASH, EZSP, app)"),
    ("/serialx/", "serialx (serial transport)"),
    ("/zigpy/", "zigpy"),
    ("/emulator/chf/", "CHF OTA server"),
    ("/emulator/device/", "emulated device"),
    ("/emulator/ota/", "OTA frame codec"),
    ("/emulator/radio/", "virtual air and host hooks"),
    ("/emulator/clock.py", "asyncio event loop"),
    ("/asyncio/", "asyncio event loop"),
    ("/selectors.py", "asyncio event loop"),
)
OTHER = "other (stdlib, logging, ...)"


@dataclass(frozen=True, slots=True)
class Workload:
    label: str
    radio: str  # ezsp | sticks | loopback
    latency: float
    virtual: bool
    smart_energy: bool = False  # sticks only: install-code join, CBKE on the device's host, APS-encrypted OTA


@dataclass
class Figures:
    label: str
    blocks: int
    wall: float
    cpu: float
    ncp_cpu: float | None
    ezsp_frames: int | None
    ash_frames: int | None

    def row(self) -> str:
        per_block = 1000 / self.blocks
        text = f"{self.label:<64} {self.blocks:5d} {self.blocks / self.wall:8,.0f} {self.cpu * per_block:9.3f}"
        text += f" {self.ncp_cpu * per_block:9.3f}" if self.ncp_cpu is not None else f" {'-':>9}"
        if self.ezsp_frames is not None and self.ash_frames is not None:
            text += f" {self.ezsp_frames / self.blocks:8.2f} {self.ash_frames / self.blocks:8.2f}"
        return text


HEADER = (
    f"{'workload':<64} {'blocks':>5} {'blocks/s':>8} {'CPU ms':>9} {'NCP ms':>9} {'EZSP/bl':>8} {'ASH/bl':>8}\n"
    f"{'':<64} {'':>5} {'(wall)':>8} {'/block':>9} {'/block':>9}"
)


class CpuMeter:
    """Process CPU time spent inside the methods named, counted once per outermost call (a call made from inside
    another metered call is already counted)."""

    def __init__(self, entry_points: tuple[tuple[type, tuple[str, ...]], ...]) -> None:
        self.entry_points = entry_points
        self.seconds = 0.0
        self._inside = False

    @contextmanager
    def installed(self) -> Iterator[CpuMeter]:
        saved = [(cls, name, cls.__dict__.get(name)) for cls, names in self.entry_points for name in names]
        for cls, name, _ in saved:
            setattr(cls, name, self._timed(getattr(cls, name)))
        try:
            yield self
        finally:
            for cls, name, original in saved:
                if original is None:
                    delattr(cls, name)  # it was inherited: the mixin's own method shows through again
                else:
                    setattr(cls, name, original)

    def _timed(self, method: Callable[..., Any]) -> Callable[..., Any]:
        meter = self

        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if meter._inside:
                return method(*args, **kwargs)
            meter._inside = True
            start = time.process_time()
            try:
                return method(*args, **kwargs)
            finally:
                meter.seconds += time.process_time() - start
                meter._inside = False

        return timed


@dataclass
class Marks:
    """CPU, wall and NCP figures at the first block and at the verified image."""

    meter: CpuMeter
    counters: Callable[[], list[NcpCounters]]
    at: dict[str, tuple[float, float, float, int, int]]

    def take(self, name: str) -> None:
        counters = self.counters()
        ezsp = sum(c.ezsp_frames for c in counters)
        ash = sum(sum(c.ash_rx.values()) + sum(c.ash_tx.values()) for c in counters)
        self.at[name] = (time.process_time(), time.perf_counter(), self.meter.seconds, ezsp, ash)

    def watch(self, event: object) -> None:
        if isinstance(event, device_events.DownloadStarted):
            self.take("start")
        elif isinstance(event, device_events.ImageVerified):
            self.take("end")

    def figures(self, label: str, blocks: int, through_ncp: bool) -> Figures:
        if "end" not in self.at:
            raise SystemExit(f"{label}: the download did not finish")
        (cpu0, wall0, ncp0, ezsp0, ash0), (cpu1, wall1, ncp1, ezsp1, ash1) = self.at["start"], self.at["end"]
        return Figures(
            label,
            blocks,
            wall1 - wall0,
            cpu1 - cpu0,
            ncp1 - ncp0 if through_ncp else None,
            ezsp1 - ezsp0 if through_ncp else None,
            ash1 - ash0 if through_ncp else None,
        )


def _image(size: int, profile: DeviceProfile) -> HeldImage:
    payload = random.Random(size).randbytes(size)
    image = build_gb(profile.manufacturer_code, profile.image_type, 2, payload=payload, hw_min=0x1111, hw_max=0x1211)
    return HeldImage(image, image.serialize(), frozenset([profile.ieee]))


def _profiles() -> tuple[DeviceProfile, Any]:
    device = load_device(bundled("ppmid")).replace(max_data_size=BLOCK, query_start_jitter=1.0, security="none")
    chf = load_chf(bundled("chf")).replace(max_block_size=BLOCK, security="none")
    return device, chf


async def _transfer(work: Workload, size: int, ezsp_version: int, meter: CpuMeter) -> Figures:
    """From the device's first block to its verified image, on a `Han` with the loopback radio or bellows."""
    device, chf = _profiles()
    options = HanOptions(
        radio=RadioKind(work.radio), ezsp_version=ezsp_version, link=LinkModel(latency=work.latency), start_utc=START
    )
    han = Han(chf, [device], [_image(size, device)], options)
    marks = Marks(meter, lambda: [han.ncp.counters] if han.ncp is not None else [], {})
    han.add_listener(marks.watch)
    await han.start()
    settled = await han.settle(SETTLE_LIMIT)
    blocks = sum(transfer.blocks for transfer in han.server.transfers.values())
    await han.stop()
    if not settled:
        raise SystemExit(f"{work.label}: the download did not finish: {han.summaries}")
    return marks.figures(work.label, blocks, work.radio == "ezsp")


async def _stick_transfer(work: Workload, size: int, ezsp_version: int, meter: CpuMeter) -> Figures:
    """The CHF on one virtual stick, `ota-emu device`'s radio and device on another, one air between them."""
    profile, chf = _profiles()
    air = Air(seed=1, link=LinkModel(latency=work.latency))
    done = asyncio.Event()
    async with (
        VirtualNcp(air, ezsp_version=ezsp_version, seed=0) as chf_ncp,
        VirtualNcp(air, ezsp_version=ezsp_version, seed=1) as stick,
    ):
        device_profile = profile.replace(ieee=stick.stack.ieee)
        if work.smart_energy:
            chf, device_profile = chf.replace(security="se"), device_profile.replace(security="se")
        node = ChfNode(chf, ImageStore.from_profile(chf, [_image(size, device_profile)]), clock.Clock(START))
        radio = await _stick_network(node, chf_ncp, stick, device_profile, smart_energy=work.smart_energy)
        endpoint = Endpoint(
            profile.endpoint, profile.profile_id, profile.effective_device_id, IN_CLUSTERS, OUT_CLUSTERS,
            profile.manufacturer_code,
        )  # fmt: skip
        joined = await radio.open(endpoint)
        device = EmulatedDevice(device_profile.replace(nwk=joined.nwk), radio, clock.Clock(START), nwk=joined.nwk)
        if radio.security is not None:
            trust_centre = await radio.trust_centre()
            credentials = credentials_for(joined.ieee, device_profile.cbke_suite, None, "<built-in>", "device")
            StickKeyEstablishment(radio, radio.security, trust_centre, credentials).attach(device, say=None)
        marks = Marks(meter, lambda: [chf_ncp.counters, stick.counters], {})

        def watch(event: device_events.DeviceEvent) -> None:
            marks.watch(event)
            if isinstance(event, device_events.ImageVerified):
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
    return marks.figures(work.label, blocks, True)


async def _stick_network(
    node: ChfNode, chf_ncp: VirtualNcp, stick: VirtualNcp, device: DeviceProfile, *, smart_energy: bool
) -> StickRadio:
    """The CHF up on its stick and open for joining, and the device's stick radio to join with: with Smart Energy
    security as `ota-emu chf` and `ota-emu device` run it, or with the network key only."""
    plan = JoinPlan(Role.END_DEVICE, join_timeout=30)
    if not smart_energy:
        await node.start_ezsp(chf_ncp.url or "")
        await node.app.permit(60)
        return StickRadio(stick.url or "", plan)
    await node.start_ezsp(chf_ncp.url or "", ezsp_extra=ezsp_security.bellows_config())
    guard = await ezsp_security.start(node, ezsp_security.device_log_of(node.profile, [stick.stack.ieee]))
    await guard.permit(60)
    plan = dataclasses.replace(plan, link_key=InstallCodeKey(device))
    return StickRadio(stick.url or "", plan, security=StickSecurity())


def measure(work: Workload, *, size: int, ezsp_version: int) -> Figures:
    meter = CpuMeter(NCP_ENTRY_POINTS)
    transfer = _stick_transfer if work.radio == "sticks" else _transfer
    with meter.installed():
        return clock.run(lambda: transfer(work, size, ezsp_version, meter), virtual=work.virtual)


def best_of(repeat: int, work: Workload, *, size: int, ezsp_version: int) -> Figures:
    """The run that cost the least CPU: on a shared machine the others measured their neighbours too."""
    runs = [measure(work, size=size, ezsp_version=ezsp_version) for _ in range(repeat)]
    return min(runs, key=lambda figures: figures.cpu)


# -- where the CPU goes ------------------------------------------------------------------------------------------


def _group(filename: str) -> str:
    for marker, name in GROUPS:
        if marker in filename:
            return name
    return OTHER


def _where(key: tuple[str, int, str]) -> str:
    filename, line, function = key
    if filename == "~":
        return function
    short = filename.split("site-packages/")[-1].split("/emulator/", 1)[-1].split("/lib/python3.11/")[-1]
    return f"{short}:{line} {function}"


def _by_layer(entries: dict[Any, Any]) -> dict[str, float]:
    """Own time per layer; a built-in's time goes to the layers of its callers, in the shares they called it."""
    by_group: dict[str, float] = defaultdict(float)
    for (filename, _, _), (_, _, own, _, callers) in entries.items():
        if filename != "~" or not callers:
            by_group[_group(filename)] += own
            continue
        for caller, (_, _, from_caller, _) in callers.items():
            by_group[_group(caller[0])] += from_caller
    return by_group


def profile(size: int, ezsp_version: int) -> None:
    work = Workload("profiled", "ezsp", 0.0, True)
    profiler = cProfile.Profile(time.process_time)  # CPU, not wall
    profiler.enable()
    figures = measure(work, size=size, ezsp_version=ezsp_version)
    profiler.disable()
    entries = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(tt for _, _, tt, _, _ in entries.values())
    print(
        f"\nWhere the CPU goes: cProfile of the bellows run on virtual time, no air latency ({figures.blocks} blocks; "
        f"the whole run with startup, {total:.2f} CPU s under the profiler, which inflates every call)"
    )
    print("  own time by layer:")
    for name, own in sorted(_by_layer(entries).items(), key=lambda item: -item[1]):
        print(f"    {100 * own / total:5.1f} %  {own:6.2f} s  {name}")
    print(f"  top {TOP} functions by own time:")
    for key, (_, calls, own, _, _) in sorted(entries.items(), key=lambda item: -item[1][2])[:TOP]:
        print(f"    {own:6.2f} s  {calls:8d} calls  [{_group(key[0])}]  {_where(key)}")
    print(f"  top {TOP} functions of the virtual NCP by cumulative time:")
    ours = [(key, value) for key, value in entries.items() if "/emulator/ncp/" in key[0]]
    for key, (_, calls, _, cumulative, _) in sorted(ours, key=lambda item: -item[1][3])[:TOP]:
        print(f"    {cumulative:6.2f} s  {calls:8d} calls  {_where(key)}")


def fleet(count: int, size: int) -> None:
    """`ota-emu ncp --device ppmid --count N` in one process and `ota-emu chf` on its URL in another, on real
    time over TCP, as a lab runs them: how long N devices take to upgrade through one NCP, and the CPU of both."""
    profiles = expand([load_device(bundled("ppmid"))], count)
    first = profiles[0]
    payload = random.Random(count).randbytes(size)
    image = build_gb(first.manufacturer_code, first.image_type, 2, payload=payload, hw_min=0x1111, hw_max=0x1211)
    signed = sign_image(image, keys.load_private_key(TEST_IMAGE_KEY))
    with tempfile.TemporaryDirectory(prefix="bench-ezsp-") as folder:
        path = Path(folder) / "ppmid.ota"
        path.write_bytes(signed.serialize())
        env = {**os.environ, "PYTHONPATH": str(ROOT)}  # both processes run this checkout, as the bench does
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        ncp = subprocess.Popen(
            [sys.executable, "-m", "emulator", "ncp", "--device", "ppmid", "--count", str(count), "--json"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert ncp.stdout is not None
            url = json.loads(ncp.stdout.readline())["url"]
            targets = [arg for p in profiles for arg in ("--target", str(p.ieee))]
            started = time.perf_counter()
            chf = subprocess.run(
                [sys.executable, "-m", "emulator", "chf", "--port", url, "--image", str(path), *targets, "--json"],
                capture_output=True,
                text=True,
                check=False,
                env=env,
            )
            wall = time.perf_counter() - started
        finally:
            ncp.send_signal(signal.SIGTERM)
            ncp.communicate(timeout=60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if chf.returncode not in (0, 1):
        raise SystemExit(f"ota-emu chf failed: {chf.stderr.strip()}")
    outcomes = [device["outcome"] for device in json.loads(chf.stdout)["devices"]]
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(
        f"\nota-emu ncp --device ppmid --count {count} and ota-emu chf on it, real time over TCP, {size}-byte "
        f"image: {outcomes.count('success')}/{count} upgraded in {wall:.1f} s wall (joins, interviews and "
        f"transfers), {cpu:.1f} CPU s for both processes ({1000 * cpu / count:.0f} ms per device)"
    )


def workloads(version: int, quick: bool) -> list[Workload]:
    ncp = f"bellows + virtual NCP v{version}"
    sticks = f"stick to stick, 2 virtual NCPs v{version}"
    runs = [
        Workload(f"{ncp}, virtual time, no air latency", "ezsp", 0.0, True),
        Workload(f"{ncp}, virtual time, 4 ms per hop", "ezsp", HOP, True),
        Workload(f"{sticks}, virtual time, 4 ms per hop", "sticks", HOP, True),
        Workload(f"sticks with SE (CBKE, APS) v{version}, virtual time, 4 ms per hop", "sticks", HOP, True, True),
        Workload("loopback, virtual time, no air latency", "loopback", 0.0, True),
    ]
    if not quick:
        runs[3:3] = [
            Workload(f"{ncp} over TCP, real time, no air latency", "ezsp", 0.0, False),
            Workload(f"{ncp} over TCP, real time, 4 ms per hop", "ezsp", HOP, False),
            Workload(f"{sticks} over TCP, real time, 4 ms per hop", "sticks", HOP, False),
        ]
        runs.append(Workload("loopback, real time, 4 ms per hop", "loopback", HOP, False))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image size, KiB")
    parser.add_argument("--ezsp-version", type=int, choices=[8, 13, 14], default=13)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--quick", action="store_true", help="virtual-time workloads only")
    parser.add_argument("--repeat", type=int, default=3, help="runs per workload; the least CPU one is shown")
    parser.add_argument("--fleet", type=int, default=200, help="devices on one NCP for the two-process run (0: none)")
    args = parser.parse_args()
    size, version = args.size * 1024, args.ezsp_version
    print(
        f"1 PPMID x {args.size} KiB image, {BLOCK}-byte blocks (CPU: the whole process; NCP: its share; "
        f"best of {args.repeat} runs)\n"
    )
    print(HEADER)
    for work in workloads(version, args.quick):
        print(best_of(args.repeat, work, size=size, ezsp_version=version).row(), flush=True)
    if args.fleet and not args.quick:
        fleet(args.fleet, FLEET_IMAGE)
    if not args.no_profile:
        profile(size, version)


if __name__ == "__main__":
    main()
