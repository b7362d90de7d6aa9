"""APS frame security on the OTA hot path: secure + unsecure of an Image Block Response per CPU-second.

Every OTA block round trip carries two APS-encrypted frames (the client's Image Block Request and the server's
Image Block Response), each secured by its sender and opened by its receiver. This prints, per CPU-second:

  raw       emulator.security.aps.secure + unsecure of an APS data frame with a 64-byte ZCL payload
  context   the same through two SecurityContexts (link key lookup, frame counters, replay check)
  request   a 20-byte Image Block Request the same way, for comparison
  capture   emulator.radio.capture's FrameEncoder writing the block response, NWK-encrypted, without and with
            APS encryption

and the APS share of the project's floor of 5,000 block round trips per CPU-second (200 us per round trip).

Usage: python tools/bench_aps.py [--frames N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import zigpy.types as t

from emulator.radio.capture import FrameEncoder
from emulator.security import aps
from emulator.security.ccm import AuxHeader, KeyId
from emulator.security.keystore import KeyOrigin, SecurityContext

CHF = t.EUI64.convert("00:db:12:34:56:78:90:a2")
PPMID = t.EUI64.convert("00:db:12:34:56:78:90:a4")
KEY = bytes.fromhex("3d9a0c71e85b24f6a1c3907e5d2b48f1")
APS_HEADER = bytes.fromhex("40 01 1900 0901 01 07")
# Image Block Response: ZCL header, status, manufacturer, image type, version, offset, length, 47 bytes of data.
BLOCK_RESPONSE = bytes.fromhex("19 07 05 00 1d12 8400 02000000 40000000 2f") + bytes(range(47))
# Image Block Request: ZCL header, control, manufacturer, image type, version, offset, maximum data size.
BLOCK_REQUEST = bytes.fromhex("01 07 03 00 1d12 8400 01000000 40000000 3f")
FLOOR_ROUND_TRIPS = 5000


def per_cpu_second(work: Callable[[], None], frames: int) -> float:
    start = time.process_time()
    for _ in range(frames):
        work()
    return frames / (time.process_time() - start)


def raw(payload: bytes) -> Callable[[], None]:
    frame = APS_HEADER + payload
    counter = iter(range(1 << 32))

    def work() -> None:
        secured = aps.secure(frame, KEY, AuxHeader(KeyId.DATA, next(counter), bytes(CHF)))
        assert aps.unsecure(secured, KEY).frame == frame

    return work


def context(payload: bytes) -> Callable[[], None]:
    frame = APS_HEADER + payload
    chf, ppmid = SecurityContext(CHF), SecurityContext(PPMID)
    chf.set_link_key(PPMID, KEY, KeyOrigin.CBKE)
    ppmid.set_link_key(CHF, KEY, KeyOrigin.CBKE)

    def work() -> None:
        assert ppmid.unsecure(chf.secure(frame, PPMID)).frame == frame

    return work


def capture(aps_encrypted: bool) -> Callable[[], None]:
    encoder = FrameEncoder(pan_id=0x1A62, network_key=bytes(16), link_keys={(CHF, PPMID): KEY})
    encoder.add_node(0x0000, CHF)
    encoder.add_node(0x1001, PPMID)
    packet = t.ZigbeePacket(
        src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(0x0000)),
        src_ep=t.uint8_t(1),
        dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(0x1001)),
        dst_ep=t.uint8_t(1),
        tsn=t.uint8_t(7),
        profile_id=t.uint16_t(0x0109),
        cluster_id=t.uint16_t(0x0019),
        data=t.SerializableBytes(BLOCK_RESPONSE),
        tx_options=t.TransmitOptions.ACK,
        radius=t.uint8_t(0),
    )

    def work() -> None:
        encoder.encode(packet, aps_encrypted=aps_encrypted)

    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50_000)
    frames = parser.parse_args().frames
    print(f"{frames} frames per row, CPU time (raw and context: secure + unsecure; capture: one frame encoded)")
    rates = {
        "raw (64-byte block response)": per_cpu_second(raw(BLOCK_RESPONSE), frames),
        "context (64-byte block response)": per_cpu_second(context(BLOCK_RESPONSE), frames),
        "context (20-byte block request)": per_cpu_second(context(BLOCK_REQUEST), frames),
        "capture, NWK only": per_cpu_second(capture(False), frames),
        "capture, NWK + APS": per_cpu_second(capture(True), frames),
    }
    for name, rate in rates.items():
        print(f"  {name:34} {rate:10,.0f} frames/CPU-s  {1e6 / rate:6.1f} us/frame")
    per_round_trip = 1 / rates["context (64-byte block response)"] + 1 / rates["context (20-byte block request)"]
    budget = 1 / FLOOR_ROUND_TRIPS
    print(
        f"APS per block round trip: {per_round_trip * 1e6:.1f} us = {100 * per_round_trip / budget:.1f}% of the "
        f"{budget * 1e6:.0f} us a round trip may take at {FLOOR_ROUND_TRIPS:,} round trips per CPU-second"
    )


if __name__ == "__main__":
    main()
