"""The emulated stack in a joining role: end device, sleepy end device or router on another node's network.

EmberZNet semantics (UG100 `joinNetwork`, `findAndRejoinNetwork`, `pollForData`, `leaveNetwork`; the Zigbee
PRO association and rejoin procedures of Zigbee spec 05-3474 §3.6.1.4 and §3.6.1.4.2), on the virtual air:

* **Beacons.** Every stack with a network up that can take children (the coordinator, joined routers) answers an
  active scan with a `Beacon`: PAN, extended PAN, channel, whether it permits joining and its depth. There is
  one channel on the air, so the channel a joiner asks for must be the network's.
* **Association.** `joinNetwork` answers OK at once; the outcome follows as callbacks, as on the chip: parent
  selection (permit-join open, matching PAN / extended PAN / channel when the host names them, lowest depth
  first), a NWK address from the parent, the network key from the trust centre (the Transport-Key step), then
  stackStatusHandler NETWORK_UP and the node's own Device_annce. No parent: NO_BEACONS. The trust centre
  refuses a joiner whose preconfigured link key it does not hold (neither its global TC link key nor a key-table
  entry for the joiner's EUI-64): NO_NETWORK_KEY_RECEIVED. That key-table lookup is the seam for install-code
  keys and CBKE (Smart Energy security): nothing else here knows about them.
* **Parents.** The trust centre's host hears trustCenterJoinHandler (as for any join); a joined router that is
  the parent also tells its own host with childJoinHandler.
* **Sleepy end devices** have their receiver off: the parent holds frames for them (the air's indirect queue)
  until they poll; `pollForData` with interval 0 polls once, a non-zero interval polls periodically, and each
  poll ends with pollCompleteHandler (OK when frames came, MAC_NO_DATA when none).
* **Flash.** The node type, NWK address and parent are network tokens (`NetworkState`), and so are the trust
  centre's EUI-64 and the preconfigured key the node joined with, which becomes its TC link key (`security`);
  `networkInit` after a reset or a new host connection resumes on the same address without asking anyone;
  `findAndRejoinNetwork` finds a parent again (no permit-join needed: the node has the network key) and keeps
  its address.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import bellows.types as bt
import zigpy.types as zt
import zigpy.zdo.types as zdo_t

from emulator.ncp.command import Args, Values
from emulator.ncp.packets import air_packet
from emulator.ncp.state import NetworkState
from emulator.radio.air import BROADCAST_RX_ON_WHEN_IDLE, COORDINATOR_NWK, Air

_NODE = bt.EmberNodeType
JOINING_TYPES = frozenset({_NODE.ROUTER, _NODE.END_DEVICE, _NODE.SLEEPY_END_DEVICE})
END_DEVICE_TYPES = frozenset({_NODE.END_DEVICE, _NODE.SLEEPY_END_DEVICE})
HIGHEST_NWK = 0xFFF7
STACK_PROFILE_PRO = 2
# How long association takes on the chip (beacon request, association, transport key): the NETWORK_UP callback
# comes this much after the joinNetwork response.
ASSOCIATION_TIME = 0.05
# EmberEventUnits: the time unit of a pollForData interval, in seconds.
EVENT_UNIT_SECONDS = {
    bt.EmberEventUnits.EVENT_MS_TIME: 0.001,
    bt.EmberEventUnits.EVENT_QS_TIME: 0.25,
    bt.EmberEventUnits.EVENT_MINUTE_TIME: 60.0,
}
DEVICE_ANNCE = zdo_t.ZDOCmd.Device_annce
# The global trust-centre link key of Zigbee 3.0 / BDB (Zigbee Base Device Behavior 13-0402 §6.3.2).
WELL_KNOWN_LINK_KEY = b"ZigBeeAlliance09"
# MAC capability flags (802.15.4 §5.3.1.2): allocate address 0x80, rx on when idle 0x08, mains 0x04, FFD 0x02.
_CAP_ALLOCATE, _CAP_RX_ON, _CAP_MAINS, _CAP_FFD = 0x80, 0x08, 0x04, 0x02


def mac_capability(node_type: bt.EmberNodeType) -> int:
    """What a node of this type says of itself in its association request and Device_annce."""
    if node_type == _NODE.SLEEPY_END_DEVICE:
        return _CAP_ALLOCATE
    if node_type == _NODE.END_DEVICE:
        return _CAP_ALLOCATE | _CAP_RX_ON | _CAP_MAINS
    return _CAP_ALLOCATE | _CAP_RX_ON | _CAP_MAINS | _CAP_FFD


@dataclass(frozen=True, slots=True)
class Beacon:
    """What a router or coordinator says in its beacon (Zigbee spec 05-3474 Table 3-67, reduced to what parent
    selection uses)."""

    nwk: int
    pan_id: int
    extended_pan_id: zt.EUI64
    channel: int
    permit_joining: bool
    depth: int
    nwk_update_id: int

    def network(self) -> bt.EmberZigbeeNetwork:
        return bt.EmberZigbeeNetwork(
            channel=self.channel,
            panId=self.pan_id,
            extendedPanId=bt.ExtendedPanId(bytes(self.extended_pan_id)),
            allowingJoin=bt.Bool(self.permit_joining),
            stackProfile=STACK_PROFILE_PRO,
            nwkUpdateId=self.nwk_update_id,
        )


@dataclass(frozen=True, slots=True)
class NetworkKey:
    """What the trust centre's Transport-Key gives a joiner it admits."""

    key: str
    sequence: int


def beacons(air: Air, *, exclude: object = None) -> list[Beacon]:
    """Every beacon an active scan on the air hears."""
    found = []
    for node in air.nodes:
        make = getattr(node, "beacon", None)
        if node is exclude or make is None:
            continue
        beacon = make()
        if beacon is not None:
            found.append(beacon)
    return found


def _matches(beacon: Beacon, params: bt.EmberNetworkParameters) -> bool:
    wanted_ext = bytes(params.extendedPanId)
    if any(wanted_ext) and wanted_ext != bytes(beacon.extended_pan_id):
        return False
    if params.panId not in (0, 0xFFFF) and params.panId != beacon.pan_id:
        return False
    return not (11 <= params.radioChannel <= 26 and params.radioChannel != beacon.channel)


def choose_parent(found: list[Beacon], params: bt.EmberNetworkParameters, *, rejoin: bool) -> Beacon | None:
    """Zigbee spec §3.6.1.4.1.1: a parent of the wanted network that permits joining (a rejoin does not need
    that), lowest depth first; ties go to the lower NWK address so that a run is deterministic."""
    candidates = [b for b in found if _matches(b, params) and (rejoin or b.permit_joining)]
    if not candidates:
        return None
    return min(candidates, key=lambda b: (b.depth, b.nwk))


class StackJoining:
    """Joining-role commands of `EmberStack` (mixed into it); the attributes below are the stack's."""

    nwk: int
    ieee: zt.EUI64
    air: Air
    state: NetworkState
    network_up: bool
    rx_on_when_idle: bool
    router: bool
    permit_until: float
    pending_security: bt.EmberInitialSecurityState | None
    _rng: random.Random
    _generation: int
    _attached: bool

    _emit: Callable[[int, str, dict[str, Any]], None]
    _emit_soon: Callable[[str, dict[str, Any]], None]
    _set_network_up: Callable[[bool], None]
    _next_aps_counter: Callable[[], int]
    flush: Callable[[], None]
    join_keys: Callable[[zt.EUI64], list[bytes]]

    _poll_handle: asyncio.TimerHandle | None = None
    _on_air = False

    # -- role and place on the air --------------------------------------------------------------------------

    @property
    def node_type(self) -> bt.EmberNodeType:
        return _NODE(self.state.node_type) if self.state.formed else _NODE.COORDINATOR

    @property
    def is_trust_centre(self) -> bool:
        return bool(self.node_type == _NODE.COORDINATOR)

    def _take_role(self) -> None:
        """Address and receiver from the network tokens: a coordinator is 0x0000; a joined node keeps the address
        its parent gave it, and a sleepy end device has its receiver off."""
        node_type = self.node_type
        self.nwk = COORDINATOR_NWK if node_type == _NODE.COORDINATOR else self.state.node_id
        self.rx_on_when_idle = node_type != _NODE.SLEEPY_END_DEVICE
        self.router = node_type in (_NODE.COORDINATOR, _NODE.ROUTER)

    def _place_on_air(self) -> bool:
        """Put this node on the air at its address; False when another node holds it (a second stick on the same
        air, not yet in a network, stays off the air until it joins)."""
        self._take_role()
        if self._held_by_another(self.nwk):
            return False
        self.air.attach(self)  # type: ignore[arg-type]
        self._on_air = True
        return True

    def _held_by_another(self, nwk: int) -> bool:
        holder: object = self.air.node(nwk)
        return holder is not None and holder is not self

    def _leave_air(self) -> None:
        if self._on_air:
            self.air.detach(self)  # type: ignore[arg-type]
            self._on_air = False

    def beacon(self) -> Beacon | None:
        """This node's beacon, or None when it sends none (network down, or an end device)."""
        if not self.network_up or not self.router:
            return None
        state = self.state
        loop = asyncio.get_running_loop()
        return Beacon(
            nwk=self.nwk,
            pan_id=state.pan_id,
            extended_pan_id=zt.EUI64(bytes.fromhex(state.extended_pan_id)[::-1]),
            channel=state.channel,
            permit_joining=self.permit_until > loop.time(),
            depth=0 if self.is_trust_centre else 1,
            nwk_update_id=state.nwk_update_id,
        )

    def admit(self, joiner: zt.EUI64, link_key: bytes) -> NetworkKey | None:
        """The trust centre's decision on a joiner that holds `link_key` (Zigbee spec §4.6.3.2): it sends the
        network key under a link key both sides have, its global TC link key or the joiner's own key-table entry
        (where install-code derived keys live), or the well-known key when its security allows a global link key.
        None: the joiner never gets a Transport-Key it can decrypt."""
        if link_key not in self.join_keys(joiner):  # the trust centre policy and the keys it holds (`security`)
            return None
        return NetworkKey(key=self.state.network_key, sequence=self.state.network_key_seq)

    def _trust_centre(self) -> StackJoining | None:
        node = self.air.node(COORDINATOR_NWK)
        return node if isinstance(node, StackJoining) and node is not self and node.network_up else None

    def _free_address(self) -> int:
        while True:
            candidate = self._rng.randint(0x0001, HIGHEST_NWK)
            if self.air.node(candidate) is None:
                return candidate

    # -- commands -------------------------------------------------------------------------------------------

    def _cmd_joinNetwork(self, a: Args) -> Values:
        node_type = a["nodeType"]
        if self.network_up:
            return {"status": bt.sl_Status.INVALID_STATE}
        if node_type not in JOINING_TYPES or self.pending_security is None:
            return {"status": bt.sl_Status.INVALID_PARAMETER}
        loop = asyncio.get_running_loop()
        loop.call_later(ASSOCIATION_TIME, self._associate, self._generation, node_type, a["parameters"])
        return {"status": bt.sl_Status.OK}

    def _associate(self, generation: int, node_type: bt.EmberNodeType, params: bt.EmberNetworkParameters) -> None:
        if generation != self._generation or self.network_up:
            return
        parent = choose_parent(beacons(self.air, exclude=self), params, rejoin=False)
        trust_centre = self._trust_centre()
        if parent is None or trust_centre is None:
            self._emit(generation, "stackStatusHandler", {"status": bt.sl_Status.NO_BEACONS})
            return
        security = self.pending_security
        assert security is not None
        network_key = trust_centre.admit(self.ieee, bytes(security.preconfiguredKey))
        if network_key is None:
            self._emit(generation, "stackStatusHandler", {"status": bt.sl_Status.ZIGBEE_NO_NETWORK_KEY_RECEIVED})
            return
        self._leave_air()
        state = self.state
        state.formed = True
        state.node_type = int(node_type)
        state.node_id = self._free_address()
        state.parent_nwk = parent.nwk
        state.channel = parent.channel
        state.pan_id = parent.pan_id
        state.extended_pan_id = NetworkState.ieee_text(parent.extended_pan_id)
        state.nwk_update_id = parent.nwk_update_id
        state.nwk_manager_id = COORDINATOR_NWK
        state.channel_mask = 1 << parent.channel
        state.network_key = network_key.key
        state.network_key_seq = network_key.sequence
        state.tc_link_key = bytes(security.preconfiguredKey).hex()
        state.tc_link_rx_counter = 0
        state.trust_centre_eui64 = NetworkState.ieee_text(trust_centre.ieee)
        state.security_bitmask = int(security.bitmask)
        self.flush()
        self._take_role()
        self.air.join(self, parent.nwk)  # type: ignore[arg-type]
        self._on_air = True
        self._set_network_up(True)
        self._emit(generation, "stackStatusHandler", {"status": bt.sl_Status.NETWORK_UP})
        self._announce()

    def _cmd_findAndRejoinNetwork(self, a: Args) -> Values:
        if self.network_up or not self.state.formed or self.is_trust_centre:
            return {"status": bt.sl_Status.INVALID_STATE}
        loop = asyncio.get_running_loop()
        loop.call_later(ASSOCIATION_TIME, self._rejoin, self._generation)
        return {"status": bt.sl_Status.OK}

    def _rejoin(self, generation: int) -> None:
        """Zigbee spec §3.6.1.4.2: find a parent of our own network and keep our address."""
        if generation != self._generation or self.network_up:
            return
        state = self.state
        wanted = bt.EmberNetworkParameters(
            extendedPanId=bt.ExtendedPanId(bytes.fromhex(state.extended_pan_id)[::-1]),
            panId=state.pan_id,
            radioTxPower=state.tx_power,
            radioChannel=state.channel,
            joinMethod=bt.EmberJoinMethod.USE_NWK_REJOIN,
            nwkManagerId=0,
            nwkUpdateId=0,
            channels=bt.Channels(0),
        )
        parent = choose_parent(beacons(self.air, exclude=self), wanted, rejoin=True)
        if parent is None or self._held_by_another(state.node_id):
            self._emit(generation, "stackStatusHandler", {"status": bt.sl_Status.NO_BEACONS})
            return
        self._leave_air()
        state.parent_nwk = parent.nwk
        self.flush()
        self._take_role()
        self.air.join(self, parent.nwk)  # type: ignore[arg-type]
        self._on_air = True
        self._set_network_up(True)
        self._emit(generation, "stackStatusHandler", {"status": bt.sl_Status.NETWORK_UP})
        self._announce()

    def _cmd_pollForData(self, a: Args) -> Values:
        if not self.network_up or self.node_type not in END_DEVICE_TYPES:
            return {"status": bt.sl_Status.INVALID_STATE}
        if self._poll_handle is not None:
            self._poll_handle.cancel()
            self._poll_handle = None
        unit = EVENT_UNIT_SECONDS.get(a["units"])
        loop = asyncio.get_running_loop()
        if a["interval"] == 0 or unit is None:
            loop.call_soon(self._poll, self._generation, None)
        else:
            loop.call_soon(self._poll, self._generation, a["interval"] * unit)
        return {"status": bt.sl_Status.OK}

    def _poll(self, generation: int, every: float | None) -> None:
        self._poll_handle = None
        if generation != self._generation or not self.network_up:
            return
        delivered = self.air.poll(self.nwk)
        status = bt.sl_Status.OK if delivered else bt.sl_Status.MAC_NO_DATA
        self._emit(generation, "pollCompleteHandler", {"status": status})
        if every is not None:
            self._poll_handle = asyncio.get_running_loop().call_later(every, self._poll, generation, every)

    def _cmd_getParentChildParameters(self, a: Args) -> Values:
        parent = self.state.parent_nwk if not self.is_trust_centre else 0xFFFF
        node = self.air.node(parent)
        eui64 = node.ieee if node is not None else bt.EUI64.convert("00:00:00:00:00:00:00:00")
        return {"childCount": len(self.state.children), "parentEui64": eui64, "parentNodeId": parent}

    # -- callbacks on this node's side ------------------------------------------------------------------------

    def child_joined(self, nwk: int, ieee: zt.EUI64) -> None:
        """A joined router is the parent of a new node: its host hears childJoinHandler."""
        node = self.air.node(nwk)
        router = bool(getattr(node, "router", False))
        if router:
            return  # routers are not children (they keep their own neighbour entry)
        kind = _NODE.END_DEVICE if getattr(node, "rx_on_when_idle", True) else _NODE.SLEEPY_END_DEVICE
        self.state.children[NetworkState.ieee_text(ieee)] = nwk
        index = list(self.state.children).index(NetworkState.ieee_text(ieee))
        self._emit(
            self._generation,
            "childJoinHandler",
            {"index": index, "joining": bt.Bool.true, "childId": nwk, "childEui64": ieee, "childType": kind},
        )

    def _announce(self) -> None:
        """Device_annce (Zigbee spec §2.4.3.1.11), which the stack sends by itself after a join or rejoin."""
        tsn = self._next_aps_counter()
        payload = bytes([tsn]) + zt.serialize(
            [zt.NWK(self.nwk), self.ieee, zt.uint8_t(mac_capability(self.node_type))],
            zdo_t.CLUSTERS[DEVICE_ANNCE][1],
        )
        packet = air_packet(
            src=self.nwk,
            dst=zt.AddrModeAddress(
                addr_mode=zt.AddrMode.Broadcast, address=zt.BroadcastAddress(BROADCAST_RX_ON_WHEN_IDLE)
            ),
            src_ep=0,
            dst_ep=0,
            tsn=tsn,
            profile=0,
            cluster=DEVICE_ANNCE,
            data=payload,
        )
        self.air.send(packet)
