"""The stack's radio side: what the host sends goes on the air, what the air brings goes to the host.

sendUnicast/sendBroadcast/sendMulticast become `ZigbeePacket`s on the `Air` and a messageSentHandler per frame
(DELIVERY_FAILED when the air finds no receiver or a delivery fault is injected); frames for the coordinator
become incomingMessageHandler callbacks; joins become trustCenterJoinHandler callbacks. ZDO requests addressed
to the coordinator are served by the stack (`zdo.answer`), whether they come from the air or from the host
itself, and copies go to the host as APPLICATION_ZDO_FLAGS asks. The NCP never sends APS fragments: bellows
v14+ reassembly reads the pre-v14 layout (ZIGPY_BELLOWS.md §3.5).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import bellows.types as bt
import zigpy.types as zt
import zigpy.zdo.types as zdo_t

from emulator.ncp import zdo
from emulator.ncp.command import Args, Handler, Values
from emulator.ncp.counters import NcpCounters
from emulator.ncp.faults import Faults
from emulator.ncp.fields import ApsFrame
from emulator.ncp.packets import air_packet, nwk_address
from emulator.ncp.state import FRAME_COUNTER_TOKEN_STEP, NetworkState
from emulator.ncp.tables import NO_INDEX, OK, ZERO_EUI64
from emulator.radio.air import Air

# The largest APS payload of an unfragmented frame under NWK security (emberMaximumApsPayloadLength); APS
# encryption costs an auxiliary header and a 4-byte MIC more: 5 + 4 bytes, and 8 more for the sender's IEEE
# address, which this stack's APS-secured frames carry (extended nonce, `security`).
MAX_APS_PAYLOAD = 82
APS_SECURITY_OVERHEAD = 17
LAST_HOP_LQI = 255
LAST_HOP_RSSI = -40

_C = bt.EzspConfigId
_ZDO_FLAGS = bt.EmberZdoConfigurationFlags
_APS = bt.EmberApsOption
_IN = bt.EmberIncomingMessageType
_OUT = bt.EmberOutgoingMessageType


class StackMessaging:
    """Messaging commands and air callbacks of `EmberStack` (mixed into it); the attributes below are the stack's."""

    nwk: int
    ieee: zt.EUI64
    air: Air
    state: NetworkState
    faults: Faults
    counters: NcpCounters
    network_up: bool
    config: dict[bt.EzspConfigId, int]
    policies: dict[bt.EzspPolicyId, int]
    endpoints: dict[int, zdo_t.SimpleDescriptor]
    multicast: dict[int, bt.EmberMulticastTableEntry]
    address_table: dict[int, tuple[bt.EUI64, int]]
    manufacturer_code: int
    _rng: random.Random
    _generation: int
    _attached: bool
    _aps_counter: int
    _known: dict[zt.EUI64, int]
    _stack_counters: Counter[bt.EmberCounterType]

    _v14: Callable[[], bool]
    _emit: Callable[[int, str, dict[str, Any]], None]
    _emit_soon: Callable[[str, dict[str, Any]], None]
    _persist_soon: Callable[[], None]
    flush: Callable[[], None]
    _cmd_permitJoining: Handler
    node_id_of: Callable[[zt.EUI64], int | None]
    is_trust_centre: bool
    router: bool
    node_type: bt.EmberNodeType
    child_joined: Callable[[int, zt.EUI64], None]
    ieee_of: Callable[[int], zt.EUI64 | None]
    can_secure: Callable[[int], bool]
    secure_unicast: Callable[[zt.ZigbeePacket, bt.EmberApsFrame, int], zt.ZigbeePacket]
    open_secured: Callable[[zt.ZigbeePacket, int], zt.ZigbeePacket | None]

    # -- messaging: host -> air -----------------------------------------------------------------------------------

    def _max_payload(self, aps: ApsFrame) -> int:
        return MAX_APS_PAYLOAD - (APS_SECURITY_OVERHEAD if _APS.APS_OPTION_ENCRYPTION in aps.options else 0)

    def _packet(self, dst: zt.AddrModeAddress, aps: ApsFrame, message: bytes, radius: int = 0) -> zt.ZigbeePacket:
        tx_options = zt.TransmitOptions.NONE
        if _APS.APS_OPTION_RETRY in aps.options:
            tx_options |= zt.TransmitOptions.ACK
        if _APS.APS_OPTION_ENCRYPTION in aps.options:
            tx_options |= zt.TransmitOptions.APS_Encryption
        return air_packet(
            src=self.nwk,
            dst=dst,
            src_ep=aps.sourceEndpoint,
            dst_ep=aps.destinationEndpoint,
            tsn=aps.sequence,
            profile=aps.profileId,
            cluster=aps.clusterId,
            data=message,
            tx_options=tx_options,
            radius=radius,
        )

    def _count_transmission(self, aps: ApsFrame) -> None:
        """Advance the frame counters; at each token step they are saved before the frame goes out (EmberZNet's
        counter token), so the boot jump (`NetworkState.boot_frame_counters`) is always past any counter sent."""
        state = self.state
        state.nwk_frame_counter += 1
        step = state.nwk_frame_counter % FRAME_COUNTER_TOKEN_STEP == 0
        if _APS.APS_OPTION_ENCRYPTION in aps.options:
            state.aps_frame_counter += 1
            step = step or state.aps_frame_counter % FRAME_COUNTER_TOKEN_STEP == 0
        if step:
            self.flush()
        else:
            self._persist_soon()

    def _message_sent(
        self,
        kind: bt.EmberOutgoingMessageType,
        destination: int,
        aps: ApsFrame,
        tag: int,
        status: bt.sl_Status,
        message: bytes,
    ) -> None:
        with_contents = (
            self.policies.get(bt.EzspPolicyId.MESSAGE_CONTENTS_IN_CALLBACK_POLICY)
            == bt.EzspDecisionId.MESSAGE_TAG_AND_CONTENTS_IN_CALLBACK
        )
        contents = bytes(message) if with_contents else b""
        if self._v14():
            values = {
                "status": status,
                "message_type": kind,
                "nwk": destination,
                "aps_frame": aps,
                "message_tag": tag,
                "message": contents,
            }
        else:
            values = {
                "type": kind,
                "indexOrDestination": destination,
                "apsFrame": aps,
                "messageTag": tag,
                "status": status,
                "messageContents": contents,
            }
        self._emit_soon("messageSentHandler", values)

    def _delivery_fails(self) -> bool:
        faults = self.faults
        if faults.fail_next_sends > 0:
            faults.fail_next_sends -= 1
            return True
        return bool(faults.delivery_failure) and self._rng.random() < faults.delivery_failure

    def _cmd_sendUnicast(self, a: Args) -> Values:
        if self._v14():
            kind, dst, aps, tag, message = a["message_type"], a["nwk"], a["aps_frame"], a["message_tag"], a["message"]
        else:
            kind, dst, aps, tag, message = (
                a["type"],
                a["indexOrDestination"],
                a["apsFrame"],
                a["messageTag"],
                a["messageContents"],
            )
        if not self.network_up:
            return {"status": bt.sl_Status.NETWORK_DOWN, "sequence": 0}
        if kind == _OUT.OUTGOING_VIA_ADDRESS_TABLE:
            if dst not in self.address_table:
                return {"status": bt.sl_Status.INVALID_PARAMETER, "sequence": 0}
            nwk = self.address_table[dst][1]
        elif kind == _OUT.OUTGOING_DIRECT:
            nwk = dst
        else:
            return {"status": bt.sl_Status.INVALID_PARAMETER, "sequence": 0}
        if len(message) > self._max_payload(aps):
            return {"status": bt.sl_Status.MESSAGE_TOO_LONG, "sequence": 0}
        encrypt = _APS.APS_OPTION_ENCRYPTION in aps.options and nwk != self.nwk
        if encrypt and not self.can_secure(nwk):
            return {"status": bt.sl_Status.ZIGBEE_APS_ENCRYPTION_ERROR, "sequence": 0}  # no link key (`security`)

        self.counters.air["unicast_requests"] += 1
        if nwk == self.nwk:
            self._message_sent(kind, dst, aps, tag, OK, message)
            self._deliver_to_self(aps, bytes(message))
        else:
            packet = self._packet(nwk_address(nwk), aps, message)
            if encrypt:
                packet = self.secure_unicast(packet, aps, nwk)
            if self._delivery_fails():
                self.counters.air["delivery_failures_injected"] += 1
                delivered = False
            else:
                delivered = self.air.send(packet)
                self._count_transmission(aps)
            kind_counter = bt.EmberCounterType
            if delivered:
                self.counters.air["unicast_delivered"] += 1
                self._stack_counters[kind_counter.COUNTER_APS_DATA_TX_UNICAST_SUCCESS] += 1
            else:
                self.counters.air["unicast_failed"] += 1
                self._stack_counters[kind_counter.COUNTER_APS_DATA_TX_UNICAST_FAILED] += 1
            self._message_sent(kind, dst, aps, tag, OK if delivered else bt.sl_Status.ZIGBEE_DELIVERY_FAILED, message)
        return {"status": OK, "sequence": aps.sequence}

    def _deliver_to_self(self, aps: ApsFrame, message: bytes) -> None:
        """A unicast to the coordinator's own address: ZDO is answered by the stack, anything else loops back."""
        if aps.profileId == 0 and aps.clusterId < 0x8000:
            reply = self._zdo_reply(aps.clusterId, message, broadcast=False)
            if reply is None:
                return
            cluster, payload = reply
            rsp_aps = ApsFrame(0, cluster, 0, 0, _APS.APS_OPTION_NONE, 0, self._next_aps_counter())
            asyncio.get_running_loop().call_soon(
                self._emit_incoming_later, self._generation, _IN.INCOMING_UNICAST, rsp_aps, self.nwk, payload
            )
        else:
            asyncio.get_running_loop().call_soon(
                self._emit_incoming_later, self._generation, _IN.INCOMING_UNICAST, aps, self.nwk, message
            )

    def _emit_incoming_later(
        self, generation: int, kind: bt.EmberIncomingMessageType, aps: ApsFrame, sender: int, message: bytes
    ) -> None:
        if generation == self._generation:
            self._incoming(kind, aps, sender, message, LAST_HOP_LQI, LAST_HOP_RSSI)

    def _next_aps_counter(self) -> int:
        self._aps_counter = (self._aps_counter + 1) & 0xFF
        return self._aps_counter

    def _cmd_sendBroadcast(self, a: Args) -> Values:
        if self._v14():
            dst, aps, radius, tag, message = (
                a["destination"],
                a["aps_frame"],
                a["radius"],
                a["message_tag"],
                a["message"],
            )
        else:
            dst, aps, radius, tag, message = (
                a["destination"],
                a["apsFrame"],
                a["radius"],
                a["messageTag"],
                a["messageContents"],
            )
        if not self.network_up:
            return {"status": bt.sl_Status.NETWORK_DOWN, "sequence": 0}
        if dst < 0xFFF8:
            return {"status": bt.sl_Status.INVALID_PARAMETER, "sequence": 0}
        if len(message) > self._max_payload(aps):
            return {"status": bt.sl_Status.MESSAGE_TOO_LONG, "sequence": 0}
        broadcast = zt.AddrModeAddress(addr_mode=zt.AddrMode.Broadcast, address=zt.BroadcastAddress(dst))
        packet = self._packet(broadcast, aps, message, radius)
        self.air.send(packet)
        self._count_transmission(aps)
        self.counters.air["broadcasts"] += 1
        self._stack_counters[bt.EmberCounterType.COUNTER_APS_DATA_TX_BROADCAST] += 1
        if aps.profileId == 0 and aps.clusterId == zdo_t.ZDOCmd.Mgmt_Permit_Joining_req and len(message) >= 2:
            self._cmd_permitJoining({"duration": message[1]})  # the coordinator obeys its own broadcast
        self._message_sent(_OUT.OUTGOING_BROADCAST, dst, aps, tag, OK, message)
        return {"status": OK, "sequence": aps.sequence}

    def _cmd_sendMulticast(self, a: Args) -> Values:
        if self._v14():
            aps, radius, tag, message = a["aps_frame"], a["hops"], a["message_tag"], a["message"]
        else:
            aps, radius, tag, message = a["apsFrame"], a["hops"], a["messageTag"], a["messageContents"]
        if not self.network_up:
            return {"status": bt.sl_Status.NETWORK_DOWN, "sequence": 0}
        if len(message) > self._max_payload(aps):
            return {"status": bt.sl_Status.MESSAGE_TOO_LONG, "sequence": 0}
        group = zt.AddrModeAddress(addr_mode=zt.AddrMode.Group, address=zt.Group(aps.groupId))
        packet = self._packet(group, aps, message, radius)
        self.air.send(packet)
        self._count_transmission(aps)
        self.counters.air["multicasts"] += 1
        self._message_sent(_OUT.OUTGOING_MULTICAST, aps.groupId, aps, tag, OK, message)
        return {"status": OK, "sequence": aps.sequence}

    # -- messaging: air -> host -----------------------------------------------------------------------------------

    def receive(self, packet: zt.ZigbeePacket) -> None:
        """A frame from the air for the coordinator (unicast, broadcast or multicast)."""
        if not self.network_up:
            self.counters.air["received_while_down"] += 1
            return
        sender = self._sender(packet)
        if sender is None:
            self.counters.air["received_from_unknown"] += 1
            return
        opened = self.open_secured(packet, sender)  # APS security (`security`): None drops the frame
        if opened is None:
            return
        packet = opened
        dst = packet.dst
        assert dst is not None, "a frame on the air has a destination"
        kind = self._incoming_kind(dst)
        if kind is None:
            self.counters.air["multicast_not_member"] += 1
            return
        self.counters.air["received"] += 1
        options = _APS.APS_OPTION_NONE
        if packet.tx_options & zt.TransmitOptions.APS_Encryption:
            options |= _APS.APS_OPTION_ENCRYPTION
        aps = ApsFrame(
            profileId=packet.profile_id,
            clusterId=packet.cluster_id,
            sourceEndpoint=packet.src_ep or 0,
            destinationEndpoint=packet.dst_ep or 0,
            options=options,
            groupId=dst.address if isinstance(dst.address, int) and dst.addr_mode == zt.AddrMode.Group else 0,
            sequence=packet.tsn or 0,
        )
        message = packet.data.serialize()
        lqi = packet.lqi if packet.lqi is not None else LAST_HOP_LQI
        rssi = packet.rssi if packet.rssi is not None else LAST_HOP_RSSI
        is_zdo_request = packet.profile_id == 0 and packet.dst_ep == 0 and packet.cluster_id < 0x8000
        if is_zdo_request and not self._zdo_request(packet, sender, aps, message, kind != _IN.INCOMING_UNICAST):
            return
        self._incoming(kind, aps, sender, message, lqi, rssi)

    def _sender(self, packet: zt.ZigbeePacket) -> int | None:
        """The sender's NWK address (a frame may name it by EUI64), remembered with its EUI64."""
        src = packet.src
        assert src is not None, "a frame on the air has a source"
        address = src.address
        if isinstance(address, zt.EUI64):
            sender = self.node_id_of(address)
        else:
            sender = int(address) if address is not None else None
        if sender is not None:
            node = self.air.node(sender)
            if node is not None:
                self._known[node.ieee] = sender
        return sender

    def _incoming_kind(self, dst: zt.AddrModeAddress) -> bt.EmberIncomingMessageType | None:
        """Unicast, broadcast or multicast, counted as the stack counts them; None for a multicast to a group this
        node is not a member of."""
        mode, address = dst.addr_mode, dst.address
        to_all = mode == zt.AddrMode.NWK and isinstance(address, int) and address >= 0xFFF8
        if mode == zt.AddrMode.Broadcast or to_all:
            self._stack_counters[bt.EmberCounterType.COUNTER_APS_DATA_RX_BROADCAST] += 1
            return _IN.INCOMING_BROADCAST
        if mode == zt.AddrMode.Group:
            if not any(e.multicastId == address and e.endpoint for e in self.multicast.values()):
                return None
            return _IN.INCOMING_MULTICAST
        self._stack_counters[bt.EmberCounterType.COUNTER_APS_DATA_RX_UNICAST] += 1
        return _IN.INCOMING_UNICAST

    def _zdo_request(
        self, packet: zt.ZigbeePacket, sender: int, aps: ApsFrame, message: bytes, broadcast: bool
    ) -> bool:
        """Serve a ZDO request from the air; True if the host should get a copy (per APPLICATION_ZDO_FLAGS)."""
        flags = _ZDO_FLAGS(self.config.get(_C.CONFIG_APPLICATION_ZDO_FLAGS, 0))
        cluster = packet.cluster_id
        if cluster == zdo_t.ZDOCmd.Mgmt_Permit_Joining_req and len(message) >= 2 and self.router:
            self._cmd_permitJoining({"duration": message[1]})  # routers obey it (Zigbee spec §2.4.3.3.7)
        if cluster == zdo_t.ZDOCmd.Device_annce and len(message) >= 11:
            ieee, _ = zt.EUI64.deserialize(message[3:11])
            self._known[ieee] = int.from_bytes(message[1:3], "little")
            return True  # announcements always reach the application
        supported = cluster in zdo.SUPPORTED and not (
            cluster in zdo.ENDPOINT_REQUESTS and _ZDO_FLAGS.APP_HANDLES_ZDO_ENDPOINT_REQUESTS in flags
        )
        if supported:
            reply = self._zdo_reply(cluster, message, broadcast=broadcast)
            if reply is not None:
                self._zdo_send(sender, *reply)
            return _ZDO_FLAGS.APP_RECEIVES_SUPPORTED_ZDO_REQUESTS in flags
        if _ZDO_FLAGS.APP_HANDLES_UNSUPPORTED_ZDO_REQUESTS in flags:
            if not broadcast:
                aps.options |= _APS.APS_OPTION_ZDO_RESPONSE_REQUIRED
            return True
        if not broadcast:
            self._zdo_send(sender, *zdo.not_supported(cluster, message))
        return False

    def _zdo_reply(self, cluster: int, message: bytes, *, broadcast: bool) -> tuple[int, bytes] | None:
        me = zdo.Coordinator(
            nwk=self.nwk, ieee=self.ieee, manufacturer_code=self.manufacturer_code, endpoints=self.endpoints
        )
        if not self.is_trust_centre:
            me = zdo.joined_node(me, self.node_type)
        try:
            reply = zdo.answer(cluster, message, me, broadcast=broadcast)
        except ValueError:
            self.counters.air["zdo_malformed"] += 1
            return None
        if reply is None and not broadcast and cluster not in zdo.SUPPORTED:
            return zdo.not_supported(cluster, message)
        return reply

    def _zdo_send(self, dst: int, cluster: int, payload: bytes) -> None:
        packet = air_packet(
            src=self.nwk,
            dst=nwk_address(dst),
            src_ep=0,
            dst_ep=0,
            tsn=self._next_aps_counter(),
            profile=0,
            cluster=cluster,
            data=payload,
        )
        self.air.send(packet)
        self.counters.air["zdo_answers"] += 1

    def _address_index(self, sender: int) -> int:
        for index, (_, nwk) in self.address_table.items():
            if nwk == sender:
                return index
        return NO_INDEX

    def _incoming(
        self, kind: bt.EmberIncomingMessageType, aps: ApsFrame, sender: int, message: bytes, lqi: int, rssi: int
    ) -> None:
        if self._v14():
            values = {
                "message_type": kind,
                "aps_frame": aps,
                "nwk": sender,
                "eui64": self.ieee_of(sender) or ZERO_EUI64,
                "binding_index": NO_INDEX,
                "address_index": self._address_index(sender),
                "lqi": lqi,
                "rssi": rssi,
                "timestamp": int(asyncio.get_running_loop().time() * 1000) & 0xFFFFFFFF,
                "message": message,
            }
        else:
            values = {
                "type": kind,
                "apsFrame": aps,
                "lastHopLqi": lqi,
                "lastHopRssi": rssi,
                "sender": sender,
                "bindingIndex": NO_INDEX,
                "addressIndex": self._address_index(sender),
                "messageContents": message,
            }
        self._emit(self._generation, "incomingMessageHandler", values)

    # -- joins ----------------------------------------------------------------------------------------------------

    def device_joined(self, nwk: int, ieee: zt.EUI64, parent_nwk: int) -> None:
        """The air reports a join through this coordinator's network: tell the host (trust centre decision)."""
        if not self._attached:
            return  # a stopped NCP stays registered with the air, which has no way to unregister a listener
        if ieee == self.ieee:
            return  # our own join (joining.py)
        if not self.is_trust_centre:
            if parent_nwk == self.nwk and self.network_up:
                self.child_joined(nwk, ieee)
            return
        self._known[ieee] = nwk
        node = self.air.node(nwk)
        if parent_nwk == self.nwk and node is not None and not getattr(node, "router", False):
            self.state.children[NetworkState.ieee_text(ieee)] = nwk
            self._persist_soon()
        if not self.network_up:
            self.counters.air["joins_while_down"] += 1
            return
        self.counters.air["joins"] += 1
        self._stack_counters[bt.EmberCounterType.COUNTER_JOIN_INDICATION] += 1
        self._emit(
            self._generation,
            "trustCenterJoinHandler",
            {
                "newNodeId": nwk,
                "newNodeEui64": ieee,
                "status": bt.EmberDeviceUpdate.STANDARD_SECURITY_UNSECURED_JOIN,
                "policyDecision": bt.EmberJoinDecision.USE_PRECONFIGURED_KEY,
                "parentOfNewNodeId": parent_nwk,
            },
        )
