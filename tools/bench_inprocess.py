"""In-process OTA throughput and scale, on virtual time, 64-byte blocks.

(a) one device downloads a 256 KiB image from the CHF OTA server: block round trips per CPU-second and CPU µs
    per block (the CPU the whole process spends: device, air, zigpy loopback app and server);
(b) 1,000 devices download a 32 KiB image at once: wall time and peak RSS (run in a fresh process so the
    figure is this workload's alone);
(c) workload (a) served by zigpy's own `update_firmware()` on the same loopback radio, and the ratio;
(s) workload (a) with Smart Energy security (install-code join, CBKE suite 2, every OTA unicast APS-encrypted
    with the CBKE link key) against a floor of 5,000 block round trips per CPU-second, and the CPU one device's
    join and CBKE cost per suite (certificate issue by the run's test CA included).

Usage: python tools/bench_inprocess.py [--part a|b|c|s|all] [--devices N] [--size KIB]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime

import zigpy.device
import zigpy.ota
import zigpy.ota.image
import zigpy.ota.providers
from zigpy.zcl import foundation

from emulator import clock, keys
from emulator.chf.store import HeldImage
from emulator.device import events as device_events
from emulator.device import security_events
from emulator.han import Han, HanOptions, expand
from emulator.ota.image import build_gb, build_zigbee
from emulator.ota.signing import sign_image
from emulator.profiles import bundled, bundled_key, load_chf, load_device

BLOCK = 64
CONCURRENT_DOWNLOADS = 16
START = datetime(2026, 1, 1, tzinfo=UTC)


def _device(**changes):
    # (a), (b) and (c) measure the OTA path itself, without Smart Energy security; (s) adds it.
    defaults = {"max_data_size": BLOCK, "query_start_jitter": 1.0, "security": "none"}
    return load_device(bundled("ppmid")).replace(**{**defaults, **changes})


def _chf(**changes):
    return load_chf(bundled("chf")).replace(**{"security": "none", **changes})


def _image(profile, size: int, device_ids) -> HeldImage:
    payload = random.Random(size).randbytes(size)
    image = build_gb(profile.manufacturer_code, profile.image_type, 2, payload=payload, hw_min=0x1111, hw_max=0x1211)
    # Signed with the test-only key the bundled devices trust: they refuse an unsigned image (require_signature).
    image = sign_image(image, keys.load_private_key(bundled_key("test-image-signer.key.pem")))
    return HeldImage(image, image.serialize(), frozenset(device_ids))


async def _ours(size: int, security: str = "none") -> tuple[int, float, float]:
    device = _device(security=security)
    chf = _chf(max_block_size=BLOCK, security=security)
    han = Han(chf, [device], [_image(device, size, [device.ieee])], HanOptions(start_utc=START))
    marks: dict[str, float] = {}

    def watch(event) -> None:
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


async def _zigpys(size: int) -> tuple[int, float, foundation.Status]:
    zigpy.device.AFTER_OTA_ATTR_READ_DELAY = 0
    # A Zigbee OTA file carries no signature trailer: this device does not ask for one.
    device = _device(profile_id=0x0104, require_signature=False)
    han = Han(_chf(), [device], [], HanOptions(start_utc=START))
    await han.start()
    han.server.stop()
    while not (zdev := han.app.devices.get(device.ieee)) or not zdev.is_initialized:
        await asyncio.sleep(1)
    payload = random.Random(size).randbytes(size)
    data = build_zigbee(device.manufacturer_code, device.image_type, 2, payload=payload).serialize()
    firmware, _ = zigpy.ota.image.parse_ota_image(data)
    metadata = zigpy.ota.providers.BaseOtaImageMetadata(
        file_version=2, manufacturer_id=device.manufacturer_code, image_type=device.image_type
    )
    blocks = 0

    def count(event) -> None:
        nonlocal blocks
        if isinstance(event, device_events.Progress):
            blocks += 1

    han.devices[device.ieee].add_listener(count)
    cpu0 = time.process_time()
    status = await zdev.update_firmware(zigpy.ota.OtaImageWithMetadata(metadata, firmware))
    cpu = time.process_time() - cpu0
    await han.stop()
    return blocks, cpu, status


async def _scale(devices: int, size: int) -> tuple[int, float, float, str]:
    profiles = expand([_device(query_start_jitter=60.0)], devices)
    # One 2.4 GHz channel cannot carry 1,000 simultaneous downloads (each 64-byte block round trip costs ~6 ms of
    # airtime): like a real CHF, the server admits a few at a time and tells the rest to wait (WAIT_FOR_DATA).
    chf = _chf(max_block_size=BLOCK, max_concurrent_downloads=CONCURRENT_DOWNLOADS)
    han = Han(
        chf,
        profiles,
        [_image(profiles[0], size, [p.ieee for p in profiles])],
        HanOptions(start_utc=START),
    )
    wall0 = time.perf_counter()
    await han.start()
    settled = await han.settle(7 * 86400)
    wall = time.perf_counter() - wall0
    upgraded = sum(1 for s in han.summaries.values() if s.result == "upgraded")
    protocol = han.clock.now()
    await han.stop()
    return upgraded, wall, protocol, "all settled" if settled else "NOT all settled"


def part_a(size_kib: int) -> float:
    blocks, cpu, wall = clock.run(lambda: _ours(size_kib * 1024), virtual=True)
    rate = blocks / cpu
    print(f"(a) ours: 1 device x {size_kib} KiB, {BLOCK}-byte blocks: {blocks} block round trips")
    print(
        f"    {rate:,.0f} block round trips per CPU-second, {1e6 * cpu / blocks:.1f} CPU us per block "
        f"(run wall time {wall:.2f} s)"
    )
    return rate


SECURE_FLOOR = 5_000


async def _cbke(devices: int, suite: str) -> tuple[int, float]:
    profiles = expand([_device(security="se", cbke_suite=suite)], devices)
    chf = _chf(security="se", cbke_suite=suite)
    han = Han(chf, profiles, [], HanOptions(start_utc=START))
    done: list[float] = []

    def watch(event) -> None:
        if isinstance(event, security_events.KeyEstablished):
            done.append(time.process_time())

    han.add_listener(watch)
    cpu0 = time.process_time()
    await han.start()
    while len(done) < devices:
        await asyncio.sleep(1)
    await han.stop()
    return len(done), done[-1] - cpu0


def part_s(size_kib: int, devices: int = 20) -> float:
    blocks, cpu, _ = clock.run(lambda: _ours(size_kib * 1024, "se"), virtual=True)
    rate = blocks / cpu
    verdict = "meets" if rate >= SECURE_FLOOR else "BELOW"
    print(f"(s) ours with SE security (APS-encrypted OTA, CBKE link key): 1 device x {size_kib} KiB: {blocks} blocks")
    print(
        f"    {rate:,.0f} block round trips per CPU-second, {1e6 * cpu / blocks:.1f} CPU us per block "
        f"({verdict} the floor of {SECURE_FLOOR:,})"
    )
    for suite in ("1", "2"):
        count, cbke_cpu = clock.run(lambda suite=suite: _cbke(devices, suite), virtual=True)
        print(
            f"    join + CBKE suite {suite}: {1e3 * cbke_cpu / count:.1f} CPU ms per device ({count} devices, "
            "both sides, certificate issue included)"
        )
    return rate


def part_b(devices: int, size_kib: int) -> None:
    upgraded, wall, protocol, settled = clock.run(lambda: _scale(devices, size_kib * 1024), virtual=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"(b) {devices} devices x {size_kib} KiB at once (CHF admits {CONCURRENT_DOWNLOADS} downloads at a time): "
        f"{upgraded}/{devices} upgraded ({settled})"
    )
    print(f"    wall time {wall:.1f} s for {protocol / 3600:.1f} h of protocol time, peak RSS {peak:.0f} MiB")


def part_c(size_kib: int, ours: float | None) -> None:
    blocks, cpu, status = clock.run(lambda: _zigpys(size_kib * 1024), virtual=True)
    rate = blocks / cpu
    print(
        f"(c) zigpy update_firmware(): 1 device x {size_kib} KiB ({status.name}): {blocks} block round trips "
        f"(zigpy caps blocks at 50 bytes)"
    )
    print(f"    {rate:,.0f} block round trips per CPU-second, {1e6 * cpu / blocks:.1f} CPU us per block")
    if ours is not None:
        print(f"    ratio ours/zigpy: {ours / rate:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["a", "b", "c", "s", "all"], default="all")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--size", type=int, default=256, help="image size for (a) and (c), KiB")
    parser.add_argument("--scale-size", type=int, default=32, help="image size for (b), KiB")
    args = parser.parse_args()
    ours = None
    if args.part in ("a", "all"):
        ours = part_a(args.size)
    if args.part in ("c", "all"):
        part_c(args.size, ours)
    if args.part in ("s", "all"):
        part_s(args.size)
    if args.part == "b":
        part_b(args.devices, args.scale_size)
    elif args.part == "all":
        # A fresh interpreter, so the peak RSS is the 1,000-device workload's own.
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--part",
                "b",
                "--devices",
                str(args.devices),
                "--scale-size",
                str(args.scale_size),
            ],
            check=True,
        )


if __name__ == "__main__":
    main()
