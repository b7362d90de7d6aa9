"""The ZDO requests an EmberZNet coordinator answers by itself: bytes of a request in, bytes of a response out.

The stack serves its own descriptors and addresses (Node, Active EP, Simple and Match descriptors; IEEE and NWK
address), whether the request came over the air or from the host addressed to the coordinator's own NWK
address — bellows' coordinator self-interview depends on the latter (ZIGPY_BELLOWS.md §3.4 step 6).
Frames are built with zigpy's ZDO schemas (`zigpy.zdo.types.CLUSTERS`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import bellows.types as bt
import zigpy.types as zt
import zigpy.zdo.types as zdo_t

from emulator.ncp.joining import mac_capability

BROADCASTS = frozenset({0xFFFF, 0xFFFD, 0xFFFC})
WILDCARD_PROFILE = 0xFFFF

ENDPOINT_REQUESTS = frozenset({zdo_t.ZDOCmd.Active_EP_req, zdo_t.ZDOCmd.Simple_Desc_req, zdo_t.ZDOCmd.Match_Desc_req})

# EmberZNet coordinator, 2.4 GHz: alternate PAN coordinator, FFD, mains, rx-on-when-idle, allocates addresses;
# server mask = primary trust centre | network manager | stack compliance revision 22.
COORDINATOR_MAC_CAPABILITY = 0x8F
COORDINATOR_SERVER_MASK = 0x2C41
R22_SERVER_MASK = 0x2C00
MAX_BUFFER_SIZE = 82
MAX_TRANSFER_SIZE = 128


@dataclass
class Coordinator:
    """Everything the responder needs to know about the node it answers for."""

    nwk: int
    ieee: zt.EUI64
    manufacturer_code: int
    endpoints: dict[int, zdo_t.SimpleDescriptor] = field(default_factory=dict)
    logical_type: zdo_t.LogicalType = zdo_t.LogicalType.Coordinator
    mac_capability: int = COORDINATOR_MAC_CAPABILITY
    server_mask: int = COORDINATOR_SERVER_MASK

    def node_descriptor(self) -> zdo_t.NodeDescriptor:
        return zdo_t.NodeDescriptor(
            logical_type=self.logical_type,
            complex_descriptor_available=0,
            user_descriptor_available=0,
            reserved=0,
            aps_flags=0,
            frequency_band=zdo_t.NodeDescriptor.FrequencyBand.Freq2400MHz,
            mac_capability_flags=zdo_t.NodeDescriptor.MACCapabilityFlags(self.mac_capability),
            manufacturer_code=self.manufacturer_code,
            maximum_buffer_size=MAX_BUFFER_SIZE,
            maximum_incoming_transfer_size=MAX_TRANSFER_SIZE,
            server_mask=self.server_mask,
            maximum_outgoing_transfer_size=MAX_TRANSFER_SIZE,
            descriptor_capability_field=zdo_t.NodeDescriptor.DescriptorCapability(0),
        )


def joined_node(me: Coordinator, node_type: bt.EmberNodeType) -> Coordinator:
    """The same node once it has joined someone else's network as a router or (sleepy) end device: its logical
    type and MAC capability (`joining.mac_capability`), and a server mask with only the stack compliance
    revision (R22), since it is neither trust centre nor network manager."""
    logical = zdo_t.LogicalType.Router if node_type == bt.EmberNodeType.ROUTER else zdo_t.LogicalType.EndDevice
    return Coordinator(
        nwk=me.nwk,
        ieee=me.ieee,
        manufacturer_code=me.manufacturer_code,
        endpoints=me.endpoints,
        logical_type=logical,
        mac_capability=mac_capability(node_type),
        server_mask=R22_SERVER_MASK,
    )


def _frame(tsn: int, command: zdo_t.ZDOCmd, values: list[Any]) -> tuple[int, bytes]:
    return int(command), bytes([tsn]) + zt.serialize(values, zdo_t.CLUSTERS[command][1])


def _address_values(me: Coordinator, request_type: int) -> list[Any]:
    """A single-device response stops after the NWK address; an extended one lists no associated devices
    (the coordinator's children answer for themselves)."""
    values = [zdo_t.Status.SUCCESS, me.ieee, me.nwk]
    if request_type == zdo_t.AddrRequestType.Extended:
        values += [0, 0, []]
    return values


def not_supported(cluster: int, payload: bytes) -> tuple[int, bytes]:
    """The reply to a request the stack does not serve and no application takes."""
    return (cluster | 0x8000), bytes([payload[0] if payload else 0, zdo_t.Status.NOT_SUPPORTED])


Reply = tuple[int, bytes] | None


def answer(cluster: int, payload: bytes, me: Coordinator, *, broadcast: bool = False) -> Reply:
    """The response cluster and frame for a request the coordinator serves, or None if it sends nothing.

    Broadcast requests are answered only when the answer is about this node (Match_Desc with a match,
    address requests that name it), as ZDO requires so a broadcast does not draw a reply from every node.
    Raises ValueError for a request frame that does not parse.
    """
    try:
        command = zdo_t.ZDOCmd(cluster)
    except ValueError:
        return None
    respond = _ANSWERS.get(command)
    if respond is None:
        return None
    if not payload:
        raise ValueError(f"ZDO {command.name} without a transaction sequence number")
    values, _ = zt.deserialize(payload[1:], zdo_t.CLUSTERS[command][1])
    return respond(payload[0], values, me, broadcast)


def _not_found(response: zdo_t.ZDOCmd, tsn: int, nwk: int, broadcast: bool) -> Reply:
    """A request about another node: DEVICE_NOT_FOUND, unless it was broadcast (then nothing)."""
    if broadcast:
        return None
    return int(response), bytes([tsn, zdo_t.Status.DEVICE_NOT_FOUND]) + zt.NWK(nwk).serialize()


def _nwk_addr(tsn: int, values: list[Any], me: Coordinator, broadcast: bool) -> Reply:
    ieee, request_type = values[0], values[1]
    if ieee != me.ieee:
        return None
    return _frame(tsn, zdo_t.ZDOCmd.NWK_addr_rsp, _address_values(me, request_type))


def _ieee_addr(tsn: int, values: list[Any], me: Coordinator, broadcast: bool) -> Reply:
    nwk, request_type = values[0], values[1]
    if nwk != me.nwk and nwk not in BROADCASTS:
        return None
    return _frame(tsn, zdo_t.ZDOCmd.IEEE_addr_rsp, _address_values(me, request_type))


def _node_desc(tsn: int, values: list[Any], me: Coordinator, broadcast: bool) -> Reply:
    if values[0] != me.nwk:
        return _not_found(zdo_t.ZDOCmd.Node_Desc_rsp, tsn, values[0], broadcast)
    return _frame(tsn, zdo_t.ZDOCmd.Node_Desc_rsp, [zdo_t.Status.SUCCESS, me.nwk, me.node_descriptor()])


def _active_ep(tsn: int, values: list[Any], me: Coordinator, broadcast: bool) -> Reply:
    if values[0] != me.nwk:
        return _not_found(zdo_t.ZDOCmd.Active_EP_rsp, tsn, values[0], broadcast)
    return _frame(tsn, zdo_t.ZDOCmd.Active_EP_rsp, [zdo_t.Status.SUCCESS, me.nwk, sorted(me.endpoints)])


def _simple_desc(tsn: int, values: list[Any], me: Coordinator, broadcast: bool) -> Reply:
    rsp, status = zdo_t.ZDOCmd.Simple_Desc_rsp, zdo_t.Status
    nwk, endpoint = values[0], values[1]
    if nwk != me.nwk:
        return _not_found(rsp, tsn, nwk, broadcast)
    if not 1 <= endpoint <= 240:
        return int(rsp), bytes([tsn, status.INVALID_EP]) + zt.NWK(me.nwk).serialize()
    descriptor = me.endpoints.get(endpoint)
    if descriptor is None:
        return int(rsp), bytes([tsn, status.NOT_ACTIVE]) + zt.NWK(me.nwk).serialize()
    sized = zdo_t.SizePrefixedSimpleDescriptor(**descriptor.as_dict())
    return _frame(tsn, rsp, [status.SUCCESS, me.nwk, sized])


def _match_desc(tsn: int, values: list[Any], me: Coordinator, broadcast: bool) -> Reply:
    nwk, profile, in_clusters, out_clusters = values
    if nwk != me.nwk and nwk not in BROADCASTS:
        return _not_found(zdo_t.ZDOCmd.Match_Desc_rsp, tsn, nwk, broadcast)
    matches = sorted(
        ep
        for ep, desc in me.endpoints.items()
        if (profile in (desc.profile, WILDCARD_PROFILE))
        and (set(in_clusters) & set(desc.input_clusters) or set(out_clusters) & set(desc.output_clusters))
    )
    if broadcast and not matches:
        return None
    return _frame(tsn, zdo_t.ZDOCmd.Match_Desc_rsp, [zdo_t.Status.SUCCESS, me.nwk, matches])


_ANSWERS: dict[zdo_t.ZDOCmd, Callable[[int, list[Any], Coordinator, bool], Reply]] = {
    zdo_t.ZDOCmd.Node_Desc_req: _node_desc,
    zdo_t.ZDOCmd.Active_EP_req: _active_ep,
    zdo_t.ZDOCmd.Simple_Desc_req: _simple_desc,
    zdo_t.ZDOCmd.Match_Desc_req: _match_desc,
    zdo_t.ZDOCmd.IEEE_addr_req: _ieee_addr,
    zdo_t.ZDOCmd.NWK_addr_req: _nwk_addr,
}
SUPPORTED = frozenset(_ANSWERS)
