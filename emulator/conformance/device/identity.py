"""Who the device under test is, as it says itself: ZCL Read Attributes over the air through the test CHF.

A report a vendor files names the device it judged, so the bench asks the device rather than trusting the
command line: Basic cluster (ZCL §3.2.2.2) ManufacturerName 0x0004, ModelIdentifier 0x0005, HWVersion 0x0003,
SWBuildID 0x4000; OTA Upgrade cluster client (ZCL §11.10) CurrentFileVersion 0x0002, ManufacturerID 0x0007,
ImageTypeID 0x0008. The request is a raw ZCL frame sent from the CHF and the answer is read from the frames
the CHF radio recorded, so it works the same for an emulated device and a real one behind a dongle, whether or
not the coordinator's stack has interviewed the device. What the device does not answer stays None (the
reports say "not readable").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import zigpy.types as t
from zigpy.zcl import foundation

from emulator.conformance.device.testchf import CHF_NWK, TestChf
from emulator.conformance.results import DutInfo
from emulator.conformance.verdict import FrameRecord

BASIC_CLUSTER = 0x0000
OTA_CLUSTER = 0x0019
READ_ATTRIBUTES = 0x00
READ_ATTRIBUTES_RESPONSE = 0x01
# ZCL frame control (ZCL §2.4.1.1): global command; bit 3 direction server→client; bit 4 no default response.
TO_SERVER = 0x10
TO_CLIENT = 0x18

BASIC_ATTRIBUTES = {
    0x0004: "manufacturer_name",
    0x0005: "model_identifier",
    0x0003: "hw_version",
    0x4000: "sw_build_id",
}
OTA_ATTRIBUTES = {0x0002: "current_file_version", 0x0007: "manufacturer_id", 0x0008: "image_type_id"}
HEX_WIDTH = {"current_file_version": 8, "manufacturer_id": 4, "image_type_id": 4}

# zigpy's integer types, as typed callables.
_U8: Callable[[int], Any] = t.uint8_t
_U16: Callable[[int], Any] = t.uint16_t
_NWK: Callable[[int], Any] = t.NWK


def read_request(tsn: int, attribute_ids: list[int], *, to_client: bool) -> bytes:
    """ZCL Read Attributes (ZCL §2.5.1): to a server cluster (Basic) or, `to_client`, a client one (OTA)."""
    header = bytes([TO_CLIENT if to_client else TO_SERVER, tsn & 0xFF, READ_ATTRIBUTES])
    return header + b"".join(a.to_bytes(2, "little") for a in attribute_ids)


def parse_response(data: bytes, tsn: int) -> dict[int, Any] | None:
    """The attributes a Read Attributes Response with `tsn` reports as read (SUCCESS); None if `data` is not
    that response."""
    try:
        header, rest = foundation.ZCLHeader.deserialize(data)
    except (ValueError, KeyError):
        return None
    if (
        header.frame_control.frame_type != foundation.FrameType.GLOBAL_COMMAND
        or header.command_id != READ_ATTRIBUTES_RESPONSE
        or header.tsn != tsn & 0xFF
    ):
        return None
    try:
        response, _ = foundation.ReadAttributesResponse.deserialize(rest)
    except (ValueError, KeyError):
        return None
    return {
        int(record.attrid): record.value.value
        for record in response.status_records
        if record.status == foundation.Status.SUCCESS and record.value is not None
    }


def field_value(name: str, value: Any) -> str:
    if name in HEX_WIDTH:
        return f"0x{int(value):0{HEX_WIDTH[name]}X}"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value if not isinstance(value, int) else int(value))


async def read_attributes(chf: TestChf, cluster: int, attribute_ids: list[int], within: float) -> dict[int, Any]:
    """Send one Read Attributes to the DUT's endpoint and wait `within` protocol seconds for its answer."""
    if chf.nwk is None:
        return {}
    tsn = chf.next_tsn()
    profile = chf.server.profile
    packet = t.ZigbeePacket(
        src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=_NWK(CHF_NWK)),
        src_ep=_U8(profile.endpoint),
        dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=_NWK(chf.nwk)),
        dst_ep=_U8(chf.endpoint),
        tsn=_U8(tsn),
        profile_id=_U16(profile.profile_id),
        cluster_id=_U16(cluster),
        data=t.SerializableBytes(read_request(tsn, attribute_ids, to_client=cluster == OTA_CLUSTER)),
        tx_options=t.TransmitOptions.ACK,
        radius=_U8(0),
    )
    mark = chf.mark()
    chf.app.transmit(packet)

    def answers(frame: FrameRecord) -> bool:
        return frame.src != CHF_NWK and frame.cluster_id == cluster and _parsed(frame, tsn) is not None

    frame = await chf.expect(answers, within, mark)
    return {} if frame is None else _parsed(frame, tsn) or {}


def _parsed(frame: FrameRecord, tsn: int) -> dict[int, Any] | None:
    return parse_response(bytes.fromhex(frame.hex), tsn)


async def read_identity(chf: TestChf, within: float) -> DutInfo:
    """The DUT's identity attributes; each one it does not answer is None."""
    values: dict[str, str] = {}
    for cluster, attributes in ((BASIC_CLUSTER, BASIC_ATTRIBUTES), (OTA_CLUSTER, OTA_ATTRIBUTES)):
        read = await read_attributes(chf, cluster, list(attributes), within)
        values.update({attributes[a]: field_value(attributes[a], v) for a, v in read.items() if a in attributes})
    return DutInfo(ieee=str(chf.ieee), **values)
