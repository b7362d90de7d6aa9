"""The virtual air: moves zigpy `ZigbeePacket`s between nodes by NWK address.

Everything on the HAN — the CHF's radio (a loopback zigpy app, or the virtual NCP) and every emulated device —
is a node on one `Air`. A frame's fate is decided when it is sent: per-link latency, loss, duplication and
reordering, plus airtime from the frame's length at 250 kbit/s on one shared channel, so a thousand devices
contend for the medium the way they would on 2.4 GHz: a frame waits for the frames before it, and one that would
wait longer than `channel_wait` is lost, as a radio gives up after its CSMA-CA backoffs and retries rather than
queueing without end (an unbounded queue turned a burst of thousands of joins into minutes of stale frames that
every node still answered). Sleepy end devices (rx off when idle) only receive what
their parent holds for them when they poll; frames older than the indirect-transmission timeout are dropped,
as a real parent drops them. All randomness comes from one seeded generator and all delays from the event
loop's clock, so a run is deterministic for a given seed (and fast on virtual time).

What the air costs must not grow with the number of nodes per frame: a broadcast is one timer per arrival time
for all its receivers (not one per receiver), and a Device_annce goes only to the nodes that act on one (the
coordinator, routers, a host's NCP) — an emulated end device sets `hears_announcements = False`. A thousand
devices joining at once then cost a thousand deliveries to the coordinator, not a million to each other.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import zigpy.types as t

LOGGER = logging.getLogger(__name__)

COORDINATOR_NWK = 0x0000
BROADCAST_ALL = 0xFFFF
BROADCAST_RX_ON_WHEN_IDLE = 0xFFFD
BROADCAST_ROUTERS = 0xFFFC

# 2.4 GHz O-QPSK PHY
DATA_RATE_BPS = 250_000
# PHY preamble/SFD/length (6) + MAC header and FCS (11) + NWK header (8) + APS header (8): what a ZCL payload
# costs on top of itself when it crosses the air unfragmented and without security overhead.
FRAME_OVERHEAD_BYTES = 33
# bellows configures CONFIG_INDIRECT_TRANSMISSION_TIMEOUT = 7680 ms; real parents use the same order.
INDIRECT_TRANSMISSION_TIMEOUT = 7.68
# The longest a frame waits for the channel before it is lost (s). 802.15.4 CSMA-CA gives up after four backoffs
# of at most 31 unit periods (~40 ms) and the MAC retries three times, so a radio abandons a frame within a few
# tenths of a second; a second leaves room for a coordinator's transmit queue too.
CHANNEL_WAIT = 1.0
# zigpy enum members looked up once (each look-up on the class is a call): the air reads them for every frame.
_BROADCAST = t.AddrMode.Broadcast
_GROUP = t.AddrMode.Group
_IEEE = t.AddrMode.IEEE
_NWK = t.AddrMode.NWK

# ZDO Device_annce (Zigbee 05-3474 §2.4.3.1.11): the broadcast every node sends when it joins or reboots.
ZDO_PROFILE = 0x0000
DEVICE_ANNCE = 0x0013


@dataclass(frozen=True)
class LinkModel:
    """How one link treats a frame. Probabilities are per frame, after the MAC's own retries."""

    latency: float = 0.004
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in 0..1, got {value}")
        if self.latency < 0:
            raise ValueError(f"latency must be >= 0 s, got {self.latency}")


class Node(Protocol):
    """Anything that can sit on the air. A node may also say `router = True` (it gets 0xFFFC broadcasts) and
    `hears_announcements = False` (it ignores other nodes' Device_annce, so the air does not deliver them)."""

    @property
    def nwk(self) -> int: ...

    @property
    def ieee(self) -> t.EUI64: ...

    @property
    def rx_on_when_idle(self) -> bool: ...

    def receive(self, packet: t.ZigbeePacket) -> None:
        """Called on the event loop when a frame arrives; must not block."""


def hears_announcements(node: Node) -> bool:
    return bool(getattr(node, "hears_announcements", True))


def is_announcement(packet: t.ZigbeePacket) -> bool:
    return packet.profile_id == ZDO_PROFILE and packet.cluster_id == DEVICE_ANNCE and packet.dst_ep == 0


class JoinListener(Protocol):
    """The coordinator side (a zigpy app or the virtual NCP) learns of joins through this."""

    def device_joined(self, nwk: int, ieee: t.EUI64, parent_nwk: int) -> None: ...


Tap = Callable[[t.ZigbeePacket, float], None]


@dataclass
class _Held:
    packet: t.ZigbeePacket
    expires: float


class Air:
    """A single-channel virtual 802.15.4 network."""

    def __init__(
        self,
        *,
        seed: int = 0,
        link: LinkModel | None = None,
        indirect_timeout: float = INDIRECT_TRANSMISSION_TIMEOUT,
        airtime: bool = True,
        channel_wait: float = CHANNEL_WAIT,
    ) -> None:
        self.rng = random.Random(seed)
        self.default_link = link or LinkModel()
        self.indirect_timeout = indirect_timeout
        self.airtime = airtime
        self.channel_wait = channel_wait
        self.stats: Counter[str] = Counter()
        self._nodes: dict[int, Node] = {}
        self._by_ieee: dict[t.EUI64, Node] = {}
        # The nodes a Device_annce goes to, kept as nodes come and go (a join storm must not scan every node).
        self._announce_listeners: dict[int, Node] = {}
        self._links: dict[tuple[int, int], LinkModel] = {}
        self._held: dict[int, deque[_Held]] = {}
        self._taps: list[Tap] = []
        self._join_listeners: list[JoinListener] = []
        self._channel_free_at = 0.0

    # -- membership -------------------------------------------------------------------------------------

    def attach(self, node: Node) -> None:
        if node.nwk in self._nodes and self._nodes[node.nwk] is not node:
            raise ValueError(f"NWK 0x{node.nwk:04X} is already taken on the air")
        self._nodes[node.nwk] = node
        self._by_ieee[node.ieee] = node
        if hears_announcements(node):
            self._announce_listeners[node.nwk] = node

    def detach(self, node: Node) -> None:
        if self._nodes.get(node.nwk) is node:
            del self._nodes[node.nwk]
            self._by_ieee.pop(node.ieee, None)
            self._held.pop(node.nwk, None)
            self._announce_listeners.pop(node.nwk, None)

    def join(self, node: Node, parent_nwk: int = COORDINATOR_NWK) -> None:
        """Attach `node` and tell the trust centre, as a join through the coordinator would."""
        self.attach(node)
        for listener in self._join_listeners:
            listener.device_joined(node.nwk, node.ieee, parent_nwk)

    def add_join_listener(self, listener: JoinListener) -> None:
        self._join_listeners.append(listener)

    def node(self, nwk: int) -> Node | None:
        return self._nodes.get(nwk)

    def node_by_ieee(self, ieee: t.EUI64) -> Node | None:
        return self._by_ieee.get(ieee)

    @property
    def nodes(self) -> list[Node]:
        return list(self._nodes.values())

    # -- link models and taps -----------------------------------------------------------------------------

    def set_link(self, a: int, b: int, model: LinkModel) -> None:
        """Model for frames between NWK `a` and `b`, both directions."""
        self._links[(a, b)] = model
        self._links[(b, a)] = model

    def link(self, src: int, dst: int) -> LinkModel:
        return self._links.get((src, dst), self.default_link)

    def add_tap(self, tap: Tap) -> None:
        """`tap(packet, loop_time)` sees every transmission, as a sniffer on the channel would."""
        self._taps.append(tap)

    def remove_tap(self, tap: Tap) -> None:
        self._taps.remove(tap)

    # -- traffic ------------------------------------------------------------------------------------------

    def send(self, packet: t.ZigbeePacket) -> bool:
        """Put `packet` on the channel. Returns False when no node can receive it (unknown destination or the
        frame was lost on a unicast link), which the sender's stack reports as a delivery failure."""
        loop = asyncio.get_running_loop()
        on_air = self._occupy_channel(loop.time(), packet)
        if on_air is None:
            return False
        src: int = cast(int, packet.src.address) if packet.src is not None else COORDINATOR_NWK
        dst = packet.dst
        if dst is None:
            raise ValueError("a packet on the air needs a destination")
        mode = dst.addr_mode
        address: Any = dst.address  # an NWK address, a group, a broadcast address or an EUI-64, by mode
        if mode == _BROADCAST or (mode == _NWK and address >= BROADCAST_ROUTERS):
            targets = self._broadcast_targets(int(address), src, packet)
            self._transmit_all(loop, packet, src, targets, on_air)
            return bool(targets)
        if mode == _GROUP:
            # No group tables on the emulated HAN: a multicast reaches every other node, as a broadcast would.
            targets = self._broadcast_targets(BROADCAST_RX_ON_WHEN_IDLE, src, packet)
            self._transmit_all(loop, packet, src, targets, on_air)
            return True
        node = self._by_ieee.get(address) if mode == _IEEE else self._nodes.get(address)
        if node is None:
            self.stats["no_route"] += 1
            return False
        arrivals = self._fate(src, node, on_air)
        for when in arrivals:
            loop.call_at(when, self._deliver_if_attached if node.rx_on_when_idle else self._hold, node, packet)
        return bool(arrivals)

    def _occupy_channel(self, now: float, packet: t.ZigbeePacket) -> float | None:
        """Queue `packet` on the one channel after the frames before it; when its transmission ends (the taps
        see it then), or None when it would wait longer than `channel_wait` (lost: channel access failure)."""
        start = max(now, self._channel_free_at)
        if start - now > self.channel_wait:
            self.stats["channel_busy"] += 1
            return None
        if self.airtime:
            start += (len(packet.data.serialize()) + FRAME_OVERHEAD_BYTES) * 8 / DATA_RATE_BPS
        self._channel_free_at = start
        self.stats["sent"] += 1
        for tap in self._taps:
            tap(packet, start)
        return start

    def poll(self, nwk: int) -> int:
        """A sleepy node polls its parent: deliver what is held for it (in order). Returns how many."""
        node = self._nodes.get(nwk)
        held = self._held.get(nwk)
        if node is None or not held:
            return 0
        loop = asyncio.get_running_loop()
        now = loop.time()
        delivered = 0
        while held:
            item = held.popleft()
            if item.expires < now:
                self.stats["expired"] += 1
                continue
            loop.call_soon(self._deliver, node, item.packet)
            delivered += 1
        return delivered

    def held_for(self, nwk: int) -> int:
        return len(self._held.get(nwk, ()))

    # -- internals ----------------------------------------------------------------------------------------

    def _broadcast_targets(self, address: int, src: int, packet: t.ZigbeePacket) -> list[Node]:
        candidates = self._announce_listeners if is_announcement(packet) else self._nodes
        nodes = [n for n in candidates.values() if n.nwk != src]
        if address == BROADCAST_ALL:
            return nodes
        if address == BROADCAST_ROUTERS:
            return [n for n in nodes if getattr(n, "router", n.nwk == COORDINATOR_NWK)]
        return [n for n in nodes if n.rx_on_when_idle]

    def _fate(self, src: int, node: Node, on_air: float) -> list[float]:
        """When the frame arrives at `node`: no time when it is lost, two when it is duplicated."""
        model = self.link(src, node.nwk)
        rng = self.rng
        if model.loss and rng.random() < model.loss:
            self.stats["lost"] += 1
            return []
        arrival = on_air + model.latency
        if model.reorder and rng.random() < model.reorder:
            self.stats["reordered"] += 1
            arrival += 3 * model.latency + 0.01
        if model.duplicate and rng.random() < model.duplicate:
            self.stats["duplicated"] += 1
            return [arrival, arrival + model.latency + 0.001]
        return [arrival]

    def _transmit_all(
        self, loop: asyncio.AbstractEventLoop, packet: t.ZigbeePacket, src: int, nodes: list[Node], on_air: float
    ) -> None:
        """One broadcast to `nodes`: each node's fate drawn in turn, then one timer per arrival time."""
        awake: dict[float, list[Node]] = {}
        asleep: dict[float, list[Node]] = {}
        for node in nodes:
            for when in self._fate(src, node, on_air):
                (awake if node.rx_on_when_idle else asleep).setdefault(when, []).append(node)
        for when, group in awake.items():
            loop.call_at(when, self._deliver_to, group, packet)
        for when, group in asleep.items():
            loop.call_at(when, self._hold_for, group, packet)

    def _deliver_to(self, nodes: list[Node], packet: t.ZigbeePacket) -> None:
        for node in nodes:
            self._deliver_if_attached(node, packet)

    def _hold_for(self, nodes: list[Node], packet: t.ZigbeePacket) -> None:
        for node in nodes:
            self._hold(node, packet)

    def _hold(self, node: Node, packet: t.ZigbeePacket) -> None:
        if self._nodes.get(node.nwk) is not node:
            self.stats["lost"] += 1
            return
        loop = asyncio.get_running_loop()
        self._held.setdefault(node.nwk, deque()).append(_Held(packet, loop.time() + self.indirect_timeout))
        self.stats["held"] += 1

    def _deliver_if_attached(self, node: Node, packet: t.ZigbeePacket) -> None:
        if self._nodes.get(node.nwk) is not node:
            self.stats["lost"] += 1
            return
        self._deliver(node, packet)

    def _deliver(self, node: Node, packet: t.ZigbeePacket) -> None:
        self.stats["delivered"] += 1
        try:
            node.receive(packet)
        except Exception:
            # A node that crashes on a frame is a bug in that node; the air (and every other node) carries on.
            self.stats["receiver_errors"] += 1
            LOGGER.exception("node 0x%04X failed to handle a frame", node.nwk)
