"""The frames the emulated stack puts on the virtual air, as zigpy `ZigbeePacket`s with zigpy's own field types."""

from __future__ import annotations

import zigpy.types as zt


def nwk_address(nwk: int) -> zt.AddrModeAddress:
    return zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=zt.NWK(nwk))


def air_packet(
    *,
    src: int,
    dst: zt.AddrModeAddress,
    src_ep: int,
    dst_ep: int,
    tsn: int,
    profile: int,
    cluster: int,
    data: bytes,
    tx_options: zt.TransmitOptions = zt.TransmitOptions.NONE,
    radius: int = 0,
) -> zt.ZigbeePacket:
    """A frame from this node's NWK address `src`."""
    return zt.ZigbeePacket(
        src=nwk_address(src),
        src_ep=zt.uint8_t(src_ep),
        dst=dst,
        dst_ep=zt.uint8_t(dst_ep),
        tsn=zt.uint8_t(tsn),
        profile_id=zt.uint16_t(profile),
        cluster_id=zt.uint16_t(cluster),
        data=zt.SerializableBytes(bytes(data)),
        tx_options=tx_options,
        radius=zt.uint8_t(radius),
    )
