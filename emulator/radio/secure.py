"""APS security between a node and its radio: the Smart Energy rule applied to every frame a node sends and gets.

`SecureRadio` wraps whatever carries a node's frames (the virtual `Air`, or any radio with the same `join`,
`detach`, `send`, `poll` and `node` methods) and is itself such a radio, so a device or the CHF's loopback app
is built with it in place of the air and never knows. It holds the node's `SecurityContext`:

* Outgoing: a unicast that Smart Energy says must be APS-encrypted (ZSE 07-5356 §5.4.6,
  `keystore.requires_aps_encryption`) is secured when the node holds a link key for the destination. The APS
  frame is built here (frame control, endpoints, cluster, profile, this node's APS counter), secured with the
  link key (Zigbee 05-3474 §4.4.1.1: key id "data key", extended nonce, the node's frame counter) and handed on
  as the packet's data, typed `SecuredApsFrame`, with `TransmitOptions.APS_Encryption` set. The capture writes
  such data as it is; nothing encrypts it twice.
* Incoming: a secured frame is opened with the context (§4.4.1.2) before the node sees it; a bad MIC, a sender
  without a link key, a replayed frame counter or an unreadable frame drop it. A frame that should have been
  encrypted but was not, from a sender this node shares a link key with, is dropped too (the SE rule works both
  ways). Every drop is reported through `on_drop`.
* Before key establishment: a device sets `application_ready` False and takes no frame of the APS-encrypted
  clusters until CBKE has given it the link key (SE 07-5356 Annex C.4.2: CBKE precedes application traffic).
* Admission: `join` first asks `admission(node)` (the Smart Energy join: did the node get the network key?) and
  does not put a refused node on the air at all.

Ingress handlers see every accepted frame before the node (the device's Key Establishment client takes its
cluster there, as the CHF's servers do on the app).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import zigpy.types as t

from emulator.radio.packets import nwk_address, replaced, zigbee_packet
from emulator.security import aps
from emulator.security.ccm import BadMicError, FrameSecurityError, StaleFrameCounterError, UnknownKeyError
from emulator.security.keystore import SecurityContext, requires_aps_encryption

COORDINATOR_NWK = 0x0000
FIRST_BROADCAST = 0xFFF8
# APS frame control of a unicast data frame and its ack-request bit (05-3474 §2.2.5.1.1).
_APS_UNICAST = 0x00
_APS_ACK_REQUEST = 0x40
_APS_ENCRYPTION = t.TransmitOptions.APS_Encryption
_APS_HEADER = struct.Struct("<BBHHBB")  # frame control, dst endpoint, cluster, profile, src endpoint, APS counter


class SecuredApsFrame(t.SerializableBytes):
    """A packet's data when the sender secured it: the whole secured APS frame (header, auxiliary header,
    encrypted payload and MIC) rather than the ZCL/ZDP payload."""


class NodeLike(Protocol):
    nwk: int
    ieee: t.EUI64
    rx_on_when_idle: bool

    def receive(self, packet: t.ZigbeePacket) -> None: ...


class DropReason(enum.Enum):
    UNENCRYPTED = "frame without APS encryption"
    BAD_MIC = "APS MIC does not verify"
    UNKNOWN_KEY = "no link key for the sender"
    REPLAY = "replayed or stale APS frame counter"
    MALFORMED = "unreadable secured APS frame"


@dataclass(frozen=True, slots=True)
class DroppedFrame:
    """A frame the APS security layer refused before the node saw it."""

    sender_nwk: int
    sender: t.EUI64 | None
    profile_id: int
    cluster_id: int
    command_id: int | None
    reason: DropReason
    detail: str


_REASONS: dict[type[FrameSecurityError], DropReason] = {
    BadMicError: DropReason.BAD_MIC,
    UnknownKeyError: DropReason.UNKNOWN_KEY,
    StaleFrameCounterError: DropReason.REPLAY,
}

DropListener = Callable[[DroppedFrame], None]
Admission = Callable[[Any], bool]
IngressHandler = Callable[[t.ZigbeePacket], bool]


def is_broadcast(address: t.AddrModeAddress | None) -> bool:
    if address is None:
        return False
    if address.addr_mode in (t.AddrMode.Broadcast, t.AddrMode.Group):
        return True
    return address.addr_mode == t.AddrMode.NWK and cast(int, address.address) >= FIRST_BROADCAST


def _short(address: t.AddrModeAddress | None) -> int | None:
    """The NWK address of `address`, None when it is given by IEEE address (or missing)."""
    if address is None or address.addr_mode == t.AddrMode.IEEE:
        return None
    return int(cast(int, address.address))


def unicast(
    src: int, src_ep: int, dst: int, dst_ep: int, profile_id: int, cluster_id: int, data: bytes
) -> t.ZigbeePacket:
    """A unicast between NWK addresses asking for an APS ACK."""
    return zigbee_packet(
        src=nwk_address(src),
        src_ep=src_ep,
        dst=nwk_address(dst),
        dst_ep=dst_ep,
        tsn=data[1] if profile_id and len(data) > 1 else data[0] if data else 0,
        profile_id=profile_id,
        cluster_id=cluster_id,
        data=data,
        ack=True,
    )


class _Guarded:
    """What the inner radio holds in place of the node: the node's identity, and a `receive` that passes the
    security layer first."""

    __slots__ = ("node", "radio")

    def __init__(self, node: Any, radio: SecureRadio) -> None:
        self.node = node
        self.radio = radio

    @property
    def nwk(self) -> int:
        return int(self.node.nwk)

    @property
    def ieee(self) -> t.EUI64:
        return self.node.ieee  # type: ignore[no-any-return]

    @property
    def rx_on_when_idle(self) -> bool:
        return bool(self.node.rx_on_when_idle)

    @property
    def router(self) -> bool:
        return bool(getattr(self.node, "router", self.node.nwk == COORDINATOR_NWK))

    @property
    def hears_announcements(self) -> bool:
        return bool(getattr(self.node, "hears_announcements", True))

    def receive(self, packet: t.ZigbeePacket) -> None:
        self.radio.deliver(self.node, packet)


class SecureRadio:
    """A radio that applies `context` (one node's APS security state) to the frames of the node it carries."""

    def __init__(
        self,
        inner: Any,
        context: SecurityContext,
        *,
        on_drop: DropListener | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.inner = inner
        self.context = context
        self.on_drop = on_drop
        self.admission = admission
        self.admitted: bool | None = None
        #: False while the node is not ready for APS-secured application traffic (a device before CBKE): frames
        #: of the APS-encrypted clusters are then ignored, whichever key they came under.
        self.application_ready = True
        #: The SE rule in each direction (ZSE 07-5356 §5.4.6): secure outgoing frames of the APS-encrypted
        #: clusters, and refuse clear ones from a partner that shares a link key. A device with a deliberate
        #: fault turns one off (`EmulatedDevice`); nothing else does.
        self.encrypt_outgoing = True
        self.refuse_clear = True
        self.stats = {"secured": 0, "opened": 0, "dropped": 0}
        self._guards: dict[int, _Guarded] = {}
        self._ingress: list[IngressHandler] = []
        self._aps_counter = 0

    # -- the radio interface ------------------------------------------------------------------------------

    def join(self, node: Any, parent_nwk: int = COORDINATOR_NWK) -> None:
        """Join `node` through the inner radio once `admission` lets it (a refused node stays off the air)."""
        self.admitted = self.admission(node) if self.admission is not None else True
        if self.admitted:
            self.inner.join(self._guard(node), parent_nwk)

    def attach(self, node: Any) -> None:
        self.inner.attach(self._guard(node))

    def detach(self, node: Any) -> None:
        guard = self._guards.pop(id(node), None)
        if guard is not None:
            self.inner.detach(guard)

    def poll(self, nwk: int) -> int:
        return int(self.inner.poll(nwk))

    def node(self, nwk: int) -> Any:
        found = self.inner.node(nwk)
        return found.node if isinstance(found, _Guarded) else found

    def node_by_ieee(self, ieee: t.EUI64) -> Any:
        found = self.inner.node_by_ieee(ieee)
        return found.node if isinstance(found, _Guarded) else found

    def add_join_listener(self, listener: Any) -> None:
        self.inner.add_join_listener(listener)

    def add_ingress_handler(self, handler: IngressHandler) -> Callable[[], None]:
        """Offer every accepted frame to `handler` before the node; True takes it. Returns the remover."""
        self._ingress.append(handler)
        return lambda: self._ingress.remove(handler)

    def send(self, packet: t.ZigbeePacket) -> bool:
        dst = packet.dst
        if (
            dst is not None
            and self.encrypt_outgoing
            and not isinstance(packet.data, SecuredApsFrame)
            and requires_aps_encryption(packet.profile_id or 0, packet.cluster_id, broadcast=is_broadcast(dst))
        ):
            partner = self._ieee_of(dst)
            if partner is not None and self.context.link_key(partner) is not None:
                packet = self.secure(packet, partner)
        return bool(self.inner.send(packet))

    # -- security -----------------------------------------------------------------------------------------

    def secure(self, packet: t.ZigbeePacket, partner: t.EUI64) -> t.ZigbeePacket:
        """`packet` with its APS frame secured for `partner` (who must have a link key in the context)."""
        control = _APS_UNICAST | (_APS_ACK_REQUEST if packet.tx_options & t.TransmitOptions.ACK else 0)
        header = _APS_HEADER.pack(
            control,
            packet.dst_ep or 0,
            packet.cluster_id,
            packet.profile_id or 0,
            packet.src_ep or 0,
            self._aps_counter,
        )
        self._aps_counter = (self._aps_counter + 1) & 0xFF
        secured = self.context.secure(header + packet.data.serialize(), partner)
        self.stats["secured"] += 1
        return replaced(packet, data=SecuredApsFrame(secured), tx_options=packet.tx_options | _APS_ENCRYPTION)

    def deliver(self, node: Any, packet: t.ZigbeePacket) -> None:
        """A frame from the inner radio for `node`: open or check it, offer it to the ingress handlers, then
        hand it to the node."""
        data = packet.data
        if not self.application_ready and requires_aps_encryption(
            packet.profile_id or 0, packet.cluster_id, broadcast=False
        ):
            self.stats["ignored"] = self.stats.get("ignored", 0) + 1
            return
        if isinstance(data, SecuredApsFrame):
            opened = self._open(packet, data.serialize())
            if opened is None:
                return
            packet = opened
        elif self.refuse_clear and requires_aps_encryption(
            packet.profile_id or 0, packet.cluster_id, broadcast=is_broadcast(packet.dst)
        ):
            sender = self._ieee_of(packet.src)
            if sender is not None and self.context.link_key(sender) is not None:
                self._drop(packet, sender, data.serialize(), DropReason.UNENCRYPTED, "sent in clear")
                return
        for handler in self._ingress:
            if handler(packet):
                return
        node.receive(packet)

    def _open(self, packet: t.ZigbeePacket, frame: bytes) -> t.ZigbeePacket | None:
        sender = self._ieee_of(packet.src)
        try:
            plain = self.context.unsecure(frame, sender).frame
            length = aps.header_length(plain)
        except FrameSecurityError as exc:
            self._drop(packet, sender, b"", _REASONS.get(type(exc), DropReason.MALFORMED), str(exc))
            return None
        if length != _APS_HEADER.size or _APS_HEADER.unpack_from(plain)[1:5] != (
            packet.dst_ep,
            packet.cluster_id,
            packet.profile_id,
            packet.src_ep,
        ):
            self._drop(packet, sender, b"", DropReason.MALFORMED, "APS header does not match the frame")
            return None
        self.stats["opened"] += 1
        return replaced(packet, data=t.SerializableBytes(plain[length:]))

    def _drop(
        self, packet: t.ZigbeePacket, sender: t.EUI64 | None, payload: bytes, reason: DropReason, detail: str
    ) -> None:
        self.stats["dropped"] += 1
        if self.on_drop is not None:
            command = payload[2] if len(payload) >= 3 and not payload[0] & 0x04 else None
            self.on_drop(
                DroppedFrame(
                    -1 if (nwk := _short(packet.src)) is None else nwk,
                    sender,
                    packet.profile_id or 0,
                    packet.cluster_id,
                    command,
                    reason,
                    detail,
                )
            )

    # -- internals ----------------------------------------------------------------------------------------

    def _guard(self, node: Any) -> _Guarded:
        guard = self._guards.get(id(node))
        if guard is None:
            guard = self._guards[id(node)] = _Guarded(node, self)
        return guard

    def _ieee_of(self, address: t.AddrModeAddress | None) -> t.EUI64 | None:
        if address is None:
            return None
        if address.addr_mode == t.AddrMode.IEEE:
            return cast(t.EUI64, address.address)
        node = self.inner.node(_short(address))
        return None if node is None else cast(t.EUI64, node.ieee)
