"""The device's ZDO: answers to the descriptor and address requests a coordinator's interview sends, the
Device_annce it sends on joining, and the two requests it uses to find the OTA server.

Pure frame work (bytes in, bytes out) on zigpy's ZDO schemas; `device.py` moves the frames. Every answer carries
the request's sequence number, which is how zigpy matches it (ZIGPY_BELLOWS.md §1.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import zigpy.types as t
import zigpy.zdo.types as zdo_t
from zigpy.zdo.types import ZDOCmd

Status = zdo_t.Status

ZDO_ENDPOINT = 0
ZDO_PROFILE = 0x0000
BROADCAST_ENDPOINT = 0xFF
WILDCARD_PROFILE = 0xFFFF

# An 802.15.4 frame carries at most 127 bytes; 82 is what Silicon Labs end devices report.
MAX_BUFFER_SIZE = 82
MAX_TRANSFER_SIZE = 82
# Server mask bits 9..15: stack compliance revision 22 (R22), as current end-device stacks report.
SERVER_MASK_R22 = 22 << 9


@dataclass(frozen=True)
class NodeInfo:
    """What the device's descriptors say about it."""

    nwk: int
    ieee: t.EUI64
    endpoint: int
    profile_id: int
    device_id: int
    manufacturer_code: int
    sleepy: bool
    in_clusters: tuple[int, ...]
    out_clusters: tuple[int, ...]

    @property
    def capability(self) -> zdo_t.MACCapabilityFlags:
        """An end device that asks for an address; a sleepy one is battery powered with its receiver off."""
        flags = zdo_t.MACCapabilityFlags.AllocateAddress
        if not self.sleepy:
            flags |= zdo_t.MACCapabilityFlags.RxOnWhenIdle | zdo_t.MACCapabilityFlags.MainsPowered
        return flags

    def node_descriptor(self) -> zdo_t.NodeDescriptor:
        return zdo_t.NodeDescriptor(
            logical_type=zdo_t.LogicalType.EndDevice,
            complex_descriptor_available=0,
            user_descriptor_available=0,
            reserved=0,
            aps_flags=0,
            frequency_band=zdo_t.NodeDescriptor.FrequencyBand.Freq2400MHz,
            mac_capability_flags=self.capability,
            manufacturer_code=self.manufacturer_code,
            maximum_buffer_size=MAX_BUFFER_SIZE,
            maximum_incoming_transfer_size=MAX_TRANSFER_SIZE,
            server_mask=SERVER_MASK_R22,
            maximum_outgoing_transfer_size=MAX_TRANSFER_SIZE,
            descriptor_capability_field=zdo_t.NodeDescriptor.DescriptorCapability.NONE,
        )

    @cached_property
    def node_desc_answer(self) -> bytes:
        """Node_Desc_rsp SUCCESS with sequence number 0: the same for every interview, so built once (zigpy's
        descriptor struct costs about 0.1 ms to make and write)."""
        return build(ZDOCmd.Node_Desc_rsp, 0, Status.SUCCESS, self.nwk, self.node_descriptor())

    @cached_property
    def simple_desc_answer(self) -> bytes:
        """Simple_Desc_rsp SUCCESS for our endpoint with sequence number 0, built once."""
        return build(ZDOCmd.Simple_Desc_rsp, 0, Status.SUCCESS, self.nwk, self.simple_descriptor())

    def simple_descriptor(self) -> zdo_t.SizePrefixedSimpleDescriptor:
        return zdo_t.SizePrefixedSimpleDescriptor(
            endpoint=self.endpoint,
            profile=self.profile_id,
            device_type=self.device_id,
            device_version=0,
            input_clusters=list(self.in_clusters),
            output_clusters=list(self.out_clusters),
        )


def _with_tsn(tsn: int, answer: bytes) -> bytes:
    """A cached answer (built with sequence number 0) with the request's sequence number."""
    return bytes((tsn,)) + answer[1:]


def _types(command: ZDOCmd) -> list[Any]:
    return list(zdo_t.CLUSTERS[command][1])


def build(command: ZDOCmd, tsn: int, *values: object) -> bytes:
    """A ZDO frame: sequence number, then the command's fields."""
    fields: bytes = t.serialize(list(values), _types(command))
    return bytes([tsn]) + fields


def parse(command: ZDOCmd, data: bytes) -> tuple[int, list[Any]]:
    """(sequence number, field values) of a ZDO frame; ValueError if it is short or has trailing bytes."""
    if not data:
        raise ValueError(f"{command.name}: empty frame")
    try:
        values, rest = t.deserialize(data[1:], _types(command))
    except (ValueError, IndexError, KeyError) as exc:
        raise ValueError(f"{command.name}: {exc}") from None
    if rest:
        raise ValueError(f"{command.name}: {len(rest)} unexpected trailing byte(s)")
    return data[0], values


def device_annce(tsn: int, node: NodeInfo) -> bytes:
    return build(ZDOCmd.Device_annce, tsn, node.nwk, node.ieee, int(node.capability))


def match_desc_request(tsn: int, nwk_of_interest: int, profile_id: int, in_clusters: list[int]) -> bytes:
    """Who serves these clusters? (SPEC.md §1.2: the OTA client looks for an OTA server cluster, 0x0019.)"""
    return build(ZDOCmd.Match_Desc_req, tsn, nwk_of_interest, profile_id, in_clusters, [])


def ieee_addr_request(tsn: int, nwk: int) -> bytes:
    return build(ZDOCmd.IEEE_addr_req, tsn, nwk, zdo_t.AddrRequestType.Single, 0)


def _status_only(command: ZDOCmd, tsn: int, status: Status, nwk: int) -> bytes:
    """An error answer: status and NWKAddrOfInterest; a Simple_Desc_rsp says length 0, list answers count 0, a
    Node_Desc_rsp carries no descriptor."""
    head = bytes([tsn, status]) + t.NWK(nwk).serialize()
    if command == ZDOCmd.Node_Desc_rsp:
        return head
    return head + b"\x00"


def answer(node: NodeInfo, cluster_id: int, data: bytes, *, broadcast: bool) -> tuple[int, bytes] | None:
    """The (response cluster, frame) the device sends for a ZDO request, or None when it stays silent.

    Silent for responses, notifications, broadcasts that do not concern it, and anything it cannot even read a
    sequence number from. A unicast request the device does not implement gets NOT_SUPPORTED; a unicast request
    that does not parse gets INV_REQUESTTYPE.
    """
    if not data or cluster_id & 0x8000:
        return None
    try:
        command = ZDOCmd(cluster_id)
    except ValueError:
        command = None
    if command is None or command not in _HANDLERS:
        if broadcast or command in (ZDOCmd.Device_annce, ZDOCmd.Mgmt_Permit_Joining_req):
            return None
        return cluster_id | 0x8000, bytes([data[0], Status.NOT_SUPPORTED])
    response = ZDOCmd(cluster_id | 0x8000)
    try:
        tsn, values = parse(command, data)
    except ValueError:
        if broadcast:
            return None
        return int(response), bytes([data[0], Status.INV_REQUESTTYPE])
    frame = _HANDLERS[command](node, tsn, values, broadcast)
    return None if frame is None else (int(response), frame)


def _nwk_addr(node: NodeInfo, tsn: int, values: list[Any], broadcast: bool) -> bytes | None:
    ieee, request_type, _start = values
    if ieee != node.ieee:
        return None if broadcast else build(ZDOCmd.NWK_addr_rsp, tsn, Status.DEVICE_NOT_FOUND, ieee, node.nwk)
    return _addr_rsp(ZDOCmd.NWK_addr_rsp, node, tsn, request_type)


def _ieee_addr(node: NodeInfo, tsn: int, values: list[Any], broadcast: bool) -> bytes | None:
    nwk, request_type, _start = values
    if nwk != node.nwk:
        return None if broadcast else build(ZDOCmd.IEEE_addr_rsp, tsn, Status.DEVICE_NOT_FOUND, node.ieee, nwk)
    return _addr_rsp(ZDOCmd.IEEE_addr_rsp, node, tsn, request_type)


def _addr_rsp(command: ZDOCmd, node: NodeInfo, tsn: int, request_type: int) -> bytes:
    if request_type == zdo_t.AddrRequestType.Extended:
        # An end device has no associated devices: count 0, start index 0, empty list.
        return build(command, tsn, Status.SUCCESS, node.ieee, node.nwk, 0, 0, [])
    return build(command, tsn, Status.SUCCESS, node.ieee, node.nwk)


def _node_desc(node: NodeInfo, tsn: int, values: list[Any], broadcast: bool) -> bytes | None:
    (nwk,) = values
    if nwk != node.nwk:
        return None if broadcast else _status_only(ZDOCmd.Node_Desc_rsp, tsn, Status.DEVICE_NOT_FOUND, nwk)
    return _with_tsn(tsn, node.node_desc_answer)


def _active_ep(node: NodeInfo, tsn: int, values: list[Any], broadcast: bool) -> bytes | None:
    (nwk,) = values
    if nwk != node.nwk:
        return None if broadcast else _status_only(ZDOCmd.Active_EP_rsp, tsn, Status.DEVICE_NOT_FOUND, nwk)
    return build(ZDOCmd.Active_EP_rsp, tsn, Status.SUCCESS, node.nwk, [node.endpoint])


def _simple_desc(node: NodeInfo, tsn: int, values: list[Any], broadcast: bool) -> bytes | None:
    nwk, endpoint = values
    if nwk != node.nwk:
        return None if broadcast else _status_only(ZDOCmd.Simple_Desc_rsp, tsn, Status.DEVICE_NOT_FOUND, nwk)
    if not 1 <= endpoint <= 240:
        return _status_only(ZDOCmd.Simple_Desc_rsp, tsn, Status.INVALID_EP, nwk)
    if endpoint != node.endpoint:
        return _status_only(ZDOCmd.Simple_Desc_rsp, tsn, Status.NOT_ACTIVE, nwk)
    return _with_tsn(tsn, node.simple_desc_answer)


def _match_desc(node: NodeInfo, tsn: int, values: list[Any], broadcast: bool) -> bytes | None:
    """Match when the profile agrees (or is the wildcard) and a wanted server cluster is one of our inputs or a
    wanted client cluster one of our outputs; a broadcast without a match gets no answer."""
    nwk, profile_id, in_clusters, out_clusters = values
    matched = profile_id in (node.profile_id, WILDCARD_PROFILE) and (
        any(c in node.in_clusters for c in in_clusters) or any(c in node.out_clusters for c in out_clusters)
    )
    if broadcast and not matched:
        return None
    addressed = nwk == node.nwk or nwk >= 0xFFFC
    if not addressed:
        return None if broadcast else _status_only(ZDOCmd.Match_Desc_rsp, tsn, Status.DEVICE_NOT_FOUND, nwk)
    return build(ZDOCmd.Match_Desc_rsp, tsn, Status.SUCCESS, node.nwk, [node.endpoint] if matched else [])


_HANDLERS = {
    ZDOCmd.NWK_addr_req: _nwk_addr,
    ZDOCmd.IEEE_addr_req: _ieee_addr,
    ZDOCmd.Node_Desc_req: _node_desc,
    ZDOCmd.Active_EP_req: _active_ep,
    ZDOCmd.Simple_Desc_req: _simple_desc,
    ZDOCmd.Match_Desc_req: _match_desc,
}
