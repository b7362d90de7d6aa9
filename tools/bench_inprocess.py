"""In-process OTA throughput and scale, on virtual time, 64-byte blocks.

Parts (`--part`, default all):

scale   A table, one row per device count (`--scale 1,10,100,1000,10000`): N PPMIDs download one signed 32 KiB
        image (`--scale-size`) from the CHF, which admits 16 downloads at a time and tells the rest to wait
        (WAIT_FOR_DATA), as a real CHF on one 2.4 GHz channel must. Each row runs in a fresh process, so its peak
        RSS is its own. CPU per block is the whole run's CPU (joins, zigpy's interviews, queries, downloads, waits,
        verification, activation) over the blocks served: every device downloads the same image, so what each
        device costs once weighs the same in every row, and what grows with N shows as a growing figure. A row of
        fewer than 100 devices (`--repeat-to`) repeats its run, each a new HAN, until 100 devices have upgraded,
        so that its figure rests on as many blocks; the columns are per run.
one     One device downloads a 256 KiB image (`--size`): block round trips per CPU-second over the download alone
        (DownloadStarted to ImageVerified), the CPU of the whole process (device, air, zigpy loopback app, server).
zigpy   The same workload served by zigpy's own `update_firmware()` on the same loopback radio, and our ratio.
se      `one` with Smart Energy security (install-code join, CBKE suite 2, every OTA unicast APS-encrypted with
        the CBKE link key) against a floor of 5,000 block round trips per CPU-second, and the CPU one device's
        join and CBKE cost per suite (certificate issue by the run's test CA included).

`--security se` runs the scale rows with Smart Energy security too. Targets are printed beside the figures.

Usage: python tools/bench_inprocess.py [--part scale|one|zigpy|se|all] [--scale 1,10,100] [--scale-size KIB]
       [--size KIB] [--security none|se]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import zigpy.device
import zigpy.ota
import zigpy.ota.image
import zigpy.ota.providers
from zigpy.zcl import foundation

from emulator import clock, keys
from emulator.chf.store import HeldImage
from emulator.device import events as device_events
from emulator.device import security_events
from emulator.han.network import Event, Han, HanOptions, expand
from emulator.ota.image import build_gb, build_zigbee
from emulator.ota.signing import sign_image
from emulator.profiles import ChfProfile, DeviceProfile, bundled, bundled_key, load_chf, load_device

BLOCK = 64
CONCURRENT_DOWNLOADS = 16
START = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_SCALE = "1,10,100,1000,10000"
# Targets (project issue 12).
ONE_DEVICE_RATE = 12_000  # block round trips per CPU-second, one device
SCALE_CPU_RATIO = 1.25  # CPU per block at 1,000 devices over one device's
RSS_LIMITS_MIB = {1000: 150, 10000: 1024}
PROGRESS_EVERY = 3600.0  # protocol seconds between progress lines of a scale row
SECURE_FLOOR = 5_000


def _device(**changes: Any) -> DeviceProfile:
    defaults: dict[str, Any] = {"max_data_size": BLOCK, "query_start_jitter": 1.0, "security": "none"}
    return load_device(bundled("ppmid")).replace(**{**defaults, **changes})


def _chf(**changes: Any) -> ChfProfile:
    return load_chf(bundled("chf")).replace(**{"security": "none", **changes})


def _image(profile: DeviceProfile, size: int, device_ids: Sequence[Any]) -> HeldImage:
    payload = random.Random(size).randbytes(size)
    image = build_gb(profile.manufacturer_code, profile.image_type, 2, payload=payload, hw_min=0x1111, hw_max=0x1211)
    # Signed with the test-only key the bundled devices trust: they refuse an unsigned image (require_signature).
    image = sign_image(image, keys.load_private_key(bundled_key("test-image-signer.key.pem")))
    return HeldImage(image, image.serialize(), frozenset(device_ids))


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- scale: one row per device count, each in a fresh process ---------------------------------------------------


@dataclass(frozen=True)
class Row:
    devices: int
    upgraded: int
    blocks: int
    waits: int
    cpu: float
    wall: float
    protocol_hours: float
    peak_rss_mib: float
    settled: bool

    @property
    def cpu_us_per_block(self) -> float:
        return 1e6 * self.cpu / self.blocks if self.blocks else float("inf")

    @property
    def blocks_per_cpu_second(self) -> float:
        return self.blocks / self.cpu if self.cpu else 0.0


async def _scale_row(devices: int, size: int, security: str) -> Row:
    profiles = expand([_device(query_start_jitter=60.0, security=security)], devices)
    # One 2.4 GHz channel cannot carry 1,000 simultaneous downloads (each 64-byte block round trip costs ~5 ms of
    # airtime): like a real CHF, the server admits a few at a time and tells the rest to wait (WAIT_FOR_DATA).
    chf = _chf(max_block_size=BLOCK, max_concurrent_downloads=CONCURRENT_DOWNLOADS, security=security)
    han = Han(chf, profiles, [_image(profiles[0], size, [p.ieee for p in profiles])], HanOptions(start_utc=START))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await han.start()
    reporter = asyncio.get_running_loop().create_task(_report_progress(han, cpu0))
    settled = await han.settle(30 * 86400)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    reporter.cancel()
    summaries = han.summaries.values()
    row = Row(
        devices=devices,
        upgraded=sum(1 for s in summaries if s.result == "upgraded"),
        blocks=sum(transfer.blocks for transfer in han.server.transfers.values()),
        waits=sum(s.waits for s in summaries),
        cpu=cpu,
        wall=wall,
        protocol_hours=han.clock.now() / 3600,
        peak_rss_mib=0.0,
        settled=settled,
    )
    await han.stop()
    return row


async def _report_progress(han: Han, cpu0: float) -> None:
    """A line on stderr every protocol hour, so a long row shows it is moving."""
    while True:
        await asyncio.sleep(PROGRESS_EVERY)
        summaries = han.summaries.values()
        upgraded = sum(1 for s in summaries if s.result == "upgraded")
        blocks = sum(transfer.blocks for transfer in han.server.transfers.values())
        print(
            f"    ... {han.clock.now() / 3600:.0f} h: {upgraded:,}/{len(summaries):,} upgraded, {blocks:,} blocks, "
            f"{time.process_time() - cpu0:.0f} CPU s, RSS {_peak_rss_mib():.0f} MiB",
            file=sys.stderr,
            flush=True,
        )


def scale_point(devices: int, size_kib: int, security: str, repeat_to: int) -> None:
    """One row, printed as JSON (what `part_scale` runs in a fresh process). A row of fewer than `repeat_to`
    devices repeats its run until that many devices have upgraded, so that its CPU per block is
    measured over as many blocks as the others (one device's 32 KiB are 40 ms of CPU); each run is a new HAN
    with its own CHF, whose start (~3 ms) the row's CPU includes once per run."""
    runs = [
        clock.run(lambda: _scale_row(devices, size_kib * 1024, security), virtual=True)
        for _ in range(max(1, math.ceil(repeat_to / devices)))
    ]
    count = len(runs)
    row = Row(
        devices=devices,
        upgraded=min(run.upgraded for run in runs),
        blocks=sum(run.blocks for run in runs) // count,
        waits=sum(run.waits for run in runs) // count,
        cpu=sum(run.cpu for run in runs) / count,
        wall=sum(run.wall for run in runs) / count,
        protocol_hours=sum(run.protocol_hours for run in runs) / count,
        peak_rss_mib=_peak_rss_mib(),
        settled=all(run.settled for run in runs),
    )
    print(json.dumps(asdict(row)))


def _run_point(devices: int, size_kib: int, security: str, repeat_to: int) -> Row:
    command = [sys.executable, __file__, "--point", str(devices), "--scale-size", str(size_kib)]
    command += ["--repeat-to", str(repeat_to)]
    # stderr passes through: a long row's progress lines show.
    done = subprocess.run([*command, "--security", security], check=True, stdout=subprocess.PIPE, text=True)
    return Row(**json.loads(done.stdout.splitlines()[-1]))


def part_scale(counts: Sequence[int], size_kib: int, security: str, repeat_to: int = 100) -> list[Row]:
    print(
        f"(scale) N devices x {size_kib} KiB, {BLOCK}-byte blocks, security {security}, CHF admits "
        f"{CONCURRENT_DOWNLOADS} downloads at a time; each row in a fresh process"
    )
    header = (
        f"{'devices':>8} {'upgraded':>9} {'blocks':>10} {'waits':>8} {'CPU us/block':>13} {'blocks/CPU-s':>13} "
        f"{'CPU s':>8} {'wall s':>8} {'protocol h':>11} {'peak RSS MiB':>13}"
    )
    print(header)
    rows = []
    for devices in counts:
        row = _run_point(devices, size_kib, security, repeat_to)
        rows.append(row)
        print(
            f"{row.devices:>8,} {f'{row.upgraded}/{row.devices}':>9} {row.blocks:>10,} {row.waits:>8,} "
            f"{row.cpu_us_per_block:>13.1f} {row.blocks_per_cpu_second:>13,.0f} {row.cpu:>8.1f} {row.wall:>8.1f} "
            f"{row.protocol_hours:>11.2f} {row.peak_rss_mib:>13.0f}" + ("" if row.settled else "  NOT all settled"),
            flush=True,
        )
    if security == "none":  # the targets are set for the OTA path without security
        _scale_verdicts(rows)
    return rows


def _scale_verdicts(rows: Sequence[Row]) -> None:
    by_count = {row.devices: row for row in rows}
    one = by_count.get(1)
    if one is not None:
        verdict = "meets" if one.blocks_per_cpu_second >= ONE_DEVICE_RATE else "BELOW"
        print(
            f"  1 device: {one.blocks_per_cpu_second:,.0f} blocks per CPU-second over the whole run ({verdict} "
            f"{ONE_DEVICE_RATE:,})"
        )
    for count in sorted(by_count):
        if count > 1 and one is not None:
            ratio = by_count[count].cpu_us_per_block / one.cpu_us_per_block
            verdict = "meets" if ratio <= SCALE_CPU_RATIO else "ABOVE"
            target = f" ({verdict} {SCALE_CPU_RATIO}x)" if count == 1000 else ""
            print(f"  {count:,} devices: CPU per block {ratio:.2f}x one device's{target}")
        limit = RSS_LIMITS_MIB.get(count)
        if limit is not None:
            row = by_count[count]
            complete = row.upgraded == row.devices
            verdict = "meets" if complete and row.peak_rss_mib <= limit else "MISSES"
            print(
                f"  {count:,} devices: {row.upgraded:,}/{row.devices:,} upgraded, peak RSS {row.peak_rss_mib:.0f} MiB "
                f"({verdict} all upgraded within {limit:,} MiB)"
            )


# -- one device: the block loop alone ----------------------------------------------------------------------------


async def _one(size: int, security: str = "none") -> tuple[int, float, float]:
    device = _device(security=security)
    chf = _chf(max_block_size=BLOCK, security=security)
    han = Han(chf, [device], [_image(device, size, [device.ieee])], HanOptions(start_utc=START))
    marks: dict[str, float] = {}

    def watch(event: Event) -> None:
        if isinstance(event, device_events.DownloadStarted):
            marks["cpu0"] = time.process_time()
        elif isinstance(event, device_events.ImageVerified):
            marks["cpu1"] = time.process_time()

    han.add_listener(watch)
    await han.start()
    wall0 = time.perf_counter()
    await han.settle(86400)
    wall = time.perf_counter() - wall0
    blocks = han.server.transfers[next(iter(han.server.transfers))].blocks
    await han.stop()
    return blocks, marks["cpu1"] - marks["cpu0"], wall


def part_one(size_kib: int) -> float:
    blocks, cpu, wall = clock.run(lambda: _one(size_kib * 1024), virtual=True)
    rate = blocks / cpu
    verdict = "meets" if rate >= ONE_DEVICE_RATE else "BELOW"
    print(f"(one) ours: 1 device x {size_kib} KiB, {BLOCK}-byte blocks: {blocks} block round trips")
    print(
        f"    {rate:,.0f} block round trips per CPU-second, {1e6 * cpu / blocks:.1f} CPU us per block "
        f"({verdict} {ONE_DEVICE_RATE:,}; run wall time {wall:.2f} s)"
    )
    return rate


# -- zigpy's own OTA server on the same radio --------------------------------------------------------------------


async def _zigpys(size: int) -> tuple[int, float, foundation.Status | None]:
    zigpy.device.AFTER_OTA_ATTR_READ_DELAY = 0
    # A Zigbee OTA file carries no signature trailer: this device does not ask for one.
    device = _device(profile_id=0x0104, require_signature=False)
    han = Han(_chf(), [device], [], HanOptions(start_utc=START))
    await han.start()
    han.server.stop()
    while not isinstance(zdev := han.app.devices.get(device.ieee), zigpy.device.Device) or not zdev.is_initialized:
        await asyncio.sleep(1)
    payload = random.Random(size).randbytes(size)
    data = build_zigbee(device.manufacturer_code, device.image_type, 2, payload=payload).serialize()
    firmware, _ = zigpy.ota.image.parse_ota_image(data)
    metadata = zigpy.ota.providers.BaseOtaImageMetadata(
        file_version=2, manufacturer_id=device.manufacturer_code, image_type=device.image_type
    )
    blocks = 0

    def count(event: device_events.DeviceEvent) -> None:
        nonlocal blocks
        if isinstance(event, device_events.Progress):
            blocks += 1

    han.devices[device.ieee].add_listener(count)
    cpu0 = time.process_time()
    status = await zdev.update_firmware(zigpy.ota.OtaImageWithMetadata(metadata, firmware))
    cpu = time.process_time() - cpu0
    await han.stop()
    return blocks, cpu, status


def part_zigpy(size_kib: int, ours: float | None) -> None:
    blocks, cpu, status = clock.run(lambda: _zigpys(size_kib * 1024), virtual=True)
    rate = blocks / cpu
    print(
        f"(zigpy) zigpy update_firmware(): 1 device x {size_kib} KiB ({status.name if status else status}): "
        f"{blocks} block round trips "
        f"(zigpy caps blocks at 50 bytes)"
    )
    print(f"    {rate:,.0f} block round trips per CPU-second, {1e6 * cpu / blocks:.1f} CPU us per block")
    if ours is not None:
        print(f"    ratio ours/zigpy: {ours / rate:.1f}x")


# -- Smart Energy security ---------------------------------------------------------------------------------------


async def _cbke(devices: int, suite: str) -> tuple[int, float]:
    profiles = expand([_device(security="se", cbke_suite=suite)], devices)
    chf = _chf(security="se", cbke_suite=suite)
    han = Han(chf, profiles, [], HanOptions(start_utc=START))
    done: list[float] = []

    def watch(event: Event) -> None:
        if isinstance(event, security_events.KeyEstablished):
            done.append(time.process_time())

    han.add_listener(watch)
    cpu0 = time.process_time()
    await han.start()
    while len(done) < devices:
        await asyncio.sleep(1)
    await han.stop()
    return len(done), done[-1] - cpu0


def part_se(size_kib: int, devices: int = 20) -> float:
    blocks, cpu, _ = clock.run(lambda: _one(size_kib * 1024, "se"), virtual=True)
    rate = blocks / cpu
    verdict = "meets" if rate >= SECURE_FLOOR else "BELOW"
    print(f"(se) ours with SE security (APS-encrypted OTA, CBKE link key): 1 device x {size_kib} KiB: {blocks} blocks")
    print(
        f"    {rate:,.0f} block round trips per CPU-second, {1e6 * cpu / blocks:.1f} CPU us per block "
        f"({verdict} the floor of {SECURE_FLOOR:,})"
    )
    for suite in ("1", "2"):
        count, cbke_cpu = clock.run(lambda suite=suite: _cbke(devices, suite), virtual=True)  # type: ignore[misc]
        print(
            f"    join + CBKE suite {suite}: {1e3 * cbke_cpu / count:.1f} CPU ms per device ({count} devices, "
            "both sides, certificate issue included)"
        )
    return rate


# -- command line ------------------------------------------------------------------------------------------------


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected device counts such as 1,10,100")
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--part", choices=["scale", "one", "zigpy", "se", "all"], default="all")
    parser.add_argument("--scale", type=_counts, default=_counts(DEFAULT_SCALE), help="device counts, e.g. 1,10,100")
    parser.add_argument("--scale-size", type=int, default=32, help="image size for the scale rows, KiB")
    parser.add_argument("--size", type=int, default=256, help="image size for one, zigpy and se, KiB")
    parser.add_argument("--security", choices=["none", "se"], default="none", help="security of the scale rows")
    parser.add_argument(
        "--repeat-to", type=int, default=100, help="a smaller scale row repeats its run until this many devices"
    )
    parser.add_argument("--point", type=int, help=argparse.SUPPRESS)  # one scale row, as JSON (a fresh process)
    args = parser.parse_args(argv)
    if args.point is not None:
        scale_point(args.point, args.scale_size, args.security, args.repeat_to)
        return
    ours = None
    if args.part in ("one", "all"):
        ours = part_one(args.size)
    if args.part in ("zigpy", "all"):
        part_zigpy(args.size, ours)
    if args.part in ("se", "all"):
        part_se(args.size)
    if args.part in ("scale", "all"):
        part_scale(args.scale, args.scale_size, args.security, args.repeat_to)


if __name__ == "__main__":
    main()
