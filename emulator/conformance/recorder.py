"""Recording what crosses the bench's radio as `FrameRecord`s: the evidence every verdict cites.

A record is made from a zigpy `ZigbeePacket` wherever the bench listens — the virtual air (`Air.add_tap`) for
emulated devices, the CHF's radio (`HostMixin.add_tap`) for a real device behind a dongle — and decoded with the
same OTA decoder the server uses, so the evidence names commands and fields exactly as the checks read them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import zigpy.types as t
import zigpy.zdo.types as zdo_t

from emulator.clock import Clock
from emulator.conformance.verdict import FrameRecord
from emulator.ota import frames
from emulator.ota.blocks import decode_block_request, decode_block_success


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, t.EUI64):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value) if not isinstance(value, str | float | bool | type(None)) else value


def _block_fields(data: bytes) -> tuple[str, dict[str, Any]] | None:
    """The plain Image Block Request or SUCCESS Response, which are most of a transfer's frames, read with
    `struct` (zigpy's schemas take ~250 µs a frame); the fields, their order and types are exactly those of the
    general path, `ota_fields` (tests/test_conformance_recorder.py compares them on generated frames). None for
    any other frame."""
    request = decode_block_request(data)
    if request is not None:
        tsn, manufacturer, image_type, version, offset, maximum, period = request
        fields: dict[str, Any] = {
            "field_control": 0 if period is None else 2,
            "manufacturer_code": manufacturer,
            "image_type": image_type,
            "file_version": version,
            "file_offset": offset,
            "maximum_data_size": maximum,
        }
        if period is not None:
            fields["minimum_block_period"] = period
        fields["tsn"] = tsn
        fields["disable_default_response"] = bool(data[0] & _DISABLE_DEFAULT_RESPONSE)
        return "image_block", fields
    response = decode_block_success(data)
    if response is not None:
        fc, tsn, manufacturer, image_type, version, offset, chunk = response
        return "image_block_response", {
            "status": 0,
            "manufacturer_code": manufacturer,
            "image_type": image_type,
            "file_version": version,
            "file_offset": offset,
            "image_data": chunk.hex(),
            "tsn": tsn,
            "disable_default_response": bool(fc & _DISABLE_DEFAULT_RESPONSE),
        }
    return None


# ZCL frame control bit 4 (ZCL r7 §2.4.1.1.5).
_DISABLE_DEFAULT_RESPONSE = 0x10


def ota_fields(data: bytes) -> tuple[str, dict[str, Any]]:
    """(command name, fields) of an OTA-cluster frame, decoded with the OTA decoder the server uses."""
    name, fields = _decoded_ota_fields(data)
    return name, dict(fields)


@functools.lru_cache(maxsize=4096)
def _decoded_ota_fields(data: bytes) -> tuple[str, dict[str, Any]]:
    """`ota_fields`, kept per frame: a pure function of the bytes, and every check restarts the device from the
    same state, so the same queries, notifies and answers recur in every check of a run (the caller copies)."""
    try:
        frame = frames.decode(data)
    except frames.UnsupportedCommand as exc:
        return f"unsupported OTA command 0x{exc.header.command_id:02X}", {}
    except frames.MalformedFrame as exc:
        return "malformed OTA frame", {"error": str(exc)}
    fields = {key: _plain(value) for key, value in frame.command.as_dict().items() if value is not None}
    fields["tsn"] = frame.tsn
    fields["disable_default_response"] = bool(frame.header.frame_control.disable_default_response)
    return frame.name, fields


def describe(packet: t.ZigbeePacket) -> tuple[str, dict[str, Any]]:
    """(command name, fields) of an OTA-cluster or ZDO frame; ("cluster 0xNNNN", {}) for anything else."""
    data = packet.data.serialize()
    if packet.cluster_id == frames.CLUSTER_ID:
        return _block_fields(data) or ota_fields(data)
    if packet.profile_id == 0 and packet.src_ep == 0:
        try:
            return zdo_t.ZDOCmd(packet.cluster_id).name, {}
        except ValueError:
            return f"ZDO 0x{packet.cluster_id:04X}", {}
    return f"cluster 0x{packet.cluster_id:04X}", {}


# NWK addresses from here up are broadcasts (Zigbee spec §3.6.5).
FIRST_BROADCAST_NWK = 0xFFF8


def short_address(address: t.AddrModeAddress | None) -> int | None:
    """The 16-bit address (NWK, group or broadcast) `address` holds; None for an IEEE address, or none."""
    value = None if address is None else address.address
    return int(value) if isinstance(value, int) else None


def is_broadcast(address: t.AddrModeAddress | None) -> bool:
    """Whether a packet to `address` reaches more than one node: a broadcast or group address."""
    if address is None:
        return False
    if address.addr_mode in (t.AddrMode.Broadcast, t.AddrMode.Group):
        return True
    nwk = short_address(address)
    return address.addr_mode == t.AddrMode.NWK and nwk is not None and nwk >= FIRST_BROADCAST_NWK


def record(packet: t.ZigbeePacket, at: float) -> FrameRecord:
    name, fields = describe(packet)
    src, dst = short_address(packet.src), short_address(packet.dst)
    data = packet.data.serialize()
    return FrameRecord(
        at=round(at, 6),
        src=0 if src is None else src,
        dst=-1 if dst is None else dst,
        src_ep=int(packet.src_ep or 0),
        dst_ep=int(packet.dst_ep or 0),
        profile_id=int(packet.profile_id or 0),
        cluster_id=int(packet.cluster_id),
        name=name,
        fields=fields,
        hex=data.hex(),
    )


class Recorder:
    """Collects the frames between the CHF and one device (by NWK address), timed on the run's clock."""

    def __init__(
        self, clock: Clock, nwk: int | None = None, *, keep: Callable[[t.ZigbeePacket], bool] | None = None
    ) -> None:
        self.clock = clock
        self.nwk = nwk
        self.frames: list[FrameRecord] = []
        self._keep = keep

    def __call__(self, packet: t.ZigbeePacket, loop_time: float) -> None:
        if self.nwk is not None:
            broadcast = packet.dst is not None and packet.dst.addr_mode == t.AddrMode.Broadcast
            if self.nwk not in (short_address(packet.src), short_address(packet.dst)) and not broadcast:
                return
        if self._keep is not None and not self._keep(packet):
            return
        self.frames.append(record(packet, self.clock.since_start(loop_time)))

    def named(self, *names: str) -> list[FrameRecord]:
        return [f for f in self.frames if f.name in names]
