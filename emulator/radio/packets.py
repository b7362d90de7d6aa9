"""Building and reading zigpy `ZigbeePacket`s with the types they really take, at the cost the hot path can bear.

zigpy annotates a packet's fields with its own integer types (`uint8_t` endpoints, `uint16_t` profile, `NWK`
address) although plain ints work and are what every caller has, and types an address as the union of what any
addressing mode holds. These helpers state what they build and read, so the modules that send frames are checked
by mypy without a cast at every call. `replaced` copies a packet with some fields changed far more cheaply than
`packet.replace` (which re-runs the dataclass constructor and its default factories).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import zigpy.types as t

_NWK = t.AddrMode.NWK
_ACK = t.TransmitOptions.ACK
_NONE = t.TransmitOptions.NONE
# A packet's timestamp defaults to the wall-clock time of its making, which nothing reads on a packet this program
# sends (zigpy reads it on packets it receives); giving one saves a datetime.now() per frame.
SENT = datetime.min.replace(tzinfo=UTC)


def nwk_address(nwk: int) -> t.AddrModeAddress:
    """A NWK-mode address (zigpy's constructor converts `nwk` to its NWK type)."""
    types: Any = t
    return cast(t.AddrModeAddress, types.AddrModeAddress(addr_mode=_NWK, address=nwk))


def address_value(address: t.AddrModeAddress) -> Any:
    """What an address holds, by its mode: an NWK address, a group, a broadcast address or an EUI-64."""
    return address.address


def zigbee_packet(
    *,
    src: t.AddrModeAddress,
    src_ep: int,
    dst: t.AddrModeAddress,
    dst_ep: int,
    tsn: int,
    profile_id: int,
    cluster_id: int,
    data: bytes,
    ack: bool,
    radius: int = 0,
) -> t.ZigbeePacket:
    """A packet to send: `ack` asks for an APS acknowledgement."""
    types: Any = t
    return cast(
        t.ZigbeePacket,
        types.ZigbeePacket(
            src=src,
            src_ep=src_ep,
            dst=dst,
            dst_ep=dst_ep,
            tsn=tsn,
            profile_id=profile_id,
            cluster_id=cluster_id,
            data=types.SerializableBytes(data),
            tx_options=_ACK if ack else _NONE,
            radius=radius,
            timestamp=SENT,
        ),
    )


def replaced(packet: t.ZigbeePacket, **changes: Any) -> t.ZigbeePacket:
    """`packet.replace(**changes)` at a fraction of the cost: a shallow copy with the changed fields set."""
    copy: t.ZigbeePacket = object.__new__(type(packet))
    copy.__dict__.update(packet.__dict__, **changes)
    return copy
