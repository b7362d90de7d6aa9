"""A node's APS security state and the Smart Energy rule for which frames must be APS-encrypted.

`SecurityContext` is what one node keeps (Zigbee specification 05-3474 §4.4.1, the AIB key-pair set): its own
IEEE address, its outgoing frame counter, the link key it shares with each partner (and where that key came from:
a preconfigured key, an install code, CBKE or a Transport-Key) and, per partner, the next incoming frame counter
it will accept. A frame counter below that is a replay or a stale frame and is rejected (§4.4.1.2); the counter
only moves forward once the MIC has verified, so a forged frame cannot push it.

The outgoing counter is one per node and never goes back. The specification allows one per key pair; a single
increasing counter is always fresh for every partner, including after a key is replaced, when the partner's
incoming counter for the new key starts again at 0.

`requires_aps_encryption` is the Smart Energy rule (ZSE 07-5356 §5.4.6): unicast frames of the SE profile on the
listed clusters use APS encryption with the link key; Key Establishment (0x0800) does not (it runs before there is
a link key to use), ZDO and other profiles do not, and a broadcast never does (a link key is shared by two nodes
only), which covers the one OTA exception, the broadcast Image Notify.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import zigpy.types as t

from emulator.security import aps, ccm
from emulator.security.ccm import (
    AuxHeader,
    FrameCounterExhaustedError,
    KeyId,
    StaleFrameCounterError,
    UnknownKeyError,
)

SE_PROFILE = 0x0109
WILDCARD_PROFILE = 0xFFFF
OTA_UPGRADE = 0x0019
KEY_ESTABLISHMENT = 0x0800
IMAGE_NOTIFY = 0x00

#: Clusters whose SE-profile unicasts are APS-encrypted (ZSE 07-5356 §5.4.6, as Silicon Labs' application framework
#: encodes the list: `emberAfDetermineIfLinkSecurityIsRequired`), besides OTA Upgrade.
SE_SECURED_CLUSTERS: frozenset[int] = frozenset(
    {
        0x000A,  # Time
        0x0015,  # Commissioning
        0x0025,  # Keep-Alive
        0x0600,  # Generic Tunnel
        0x0700,  # Price
        0x0701,  # Demand Response and Load Control
        0x0702,  # Metering
        0x0703,  # Messaging
        0x0704,  # Tunneling
        0x0705,  # Prepayment
        0x0706,  # Energy Management
        0x0707,  # Calendar
        0x0708,  # Device Management
        0x0709,  # Events
        0x070A,  # MDU Pairing
        0x070B,  # Sub-GHz
    }
)


def requires_aps_encryption(
    profile_id: int, cluster_id: int, *, broadcast: bool, command_id: int | None = None
) -> bool:
    """Must a frame of `profile_id`/`cluster_id` travel APS-encrypted under the SE rules (ZSE §5.4.6)?

    `command_id` matters only for OTA Upgrade, whose broadcast Image Notify (0x00) is exempt; since no broadcast
    is APS-encrypted that exemption holds whatever the command.
    """
    if broadcast or profile_id not in (SE_PROFILE, WILDCARD_PROFILE):
        return False
    if cluster_id == OTA_UPGRADE:
        return True
    return cluster_id in SE_SECURED_CLUSTERS


class KeyOrigin(IntEnum):
    """Where a link key came from."""

    PRECONFIGURED = 0
    INSTALL_CODE = 1
    CBKE = 2
    TRANSPORTED = 3


@dataclass(frozen=True, slots=True)
class LinkKey:
    key: bytes
    origin: KeyOrigin

    def __post_init__(self) -> None:
        if len(self.key) != ccm.KEY_SIZE:
            raise ValueError(f"a link key is {ccm.KEY_SIZE} bytes, got {len(self.key)}")


@dataclass(frozen=True, slots=True)
class Opened:
    """A secured APS frame accepted from `sender`: the frame in clear and the key it was protected with."""

    frame: bytes
    aux: AuxHeader
    sender: t.EUI64
    origin: KeyOrigin


class SecurityContext:
    """One node's APS security state. Pure: no I/O, no clock; the caller hands frames in and out."""

    __slots__ = ("_eui_bytes", "_incoming", "_link_keys", "eui", "outgoing_frame_counter")

    def __init__(self, eui: t.EUI64, *, outgoing_frame_counter: int = 0) -> None:
        self.eui = eui
        self.outgoing_frame_counter = outgoing_frame_counter
        # Keyed by the IEEE address as sent (bytes hash fast; zigpy's EUI64 hashes its text form).
        self._eui_bytes = bytes(eui)
        self._link_keys: dict[bytes, tuple[t.EUI64, LinkKey]] = {}
        self._incoming: dict[bytes, int] = {}

    # -- keys ---------------------------------------------------------------------------------------------

    def set_link_key(self, partner: t.EUI64, key: bytes, origin: KeyOrigin) -> None:
        """Install (or replace) the link key shared with `partner`; frames under it count from 0 again."""
        address = bytes(partner)
        self._link_keys[address] = (partner, LinkKey(bytes(key), origin))
        self._incoming.pop(address, None)

    def remove_link_key(self, partner: t.EUI64) -> None:
        address = bytes(partner)
        self._link_keys.pop(address, None)
        self._incoming.pop(address, None)

    def link_key(self, partner: t.EUI64) -> LinkKey | None:
        entry = self._link_keys.get(bytes(partner))
        return None if entry is None else entry[1]

    def partners(self) -> dict[t.EUI64, LinkKey]:
        return dict(self._link_keys.values())

    def incoming_frame_counter(self, partner: t.EUI64) -> int:
        """The lowest frame counter still accepted from `partner`."""
        return self._incoming.get(bytes(partner), 0)

    # -- frames -------------------------------------------------------------------------------------------

    def next_frame_counter(self) -> int:
        counter = self.outgoing_frame_counter
        if counter >= ccm.MAX_FRAME_COUNTER:
            raise FrameCounterExhaustedError(f"node {self.eui}: outgoing frame counter exhausted")
        self.outgoing_frame_counter = counter + 1
        return counter

    def secure(self, frame: bytes, partner: t.EUI64, key_id: KeyId = KeyId.DATA) -> bytes:
        """Secure the unsecured APS frame `frame` for `partner` with their link key (or one derived from it),
        carrying this node's IEEE address (extended nonce) and its next frame counter."""
        entry = self._link_keys.get(bytes(partner))
        if entry is None:
            raise UnknownKeyError(f"node {self.eui}: no link key for {partner}")
        if key_id == KeyId.NETWORK:
            raise ValueError("APS frames here are secured with a link key or a key derived from it, not key id 1")
        aux = AuxHeader(key_id, self.next_frame_counter(), self._eui_bytes)
        return aps.secure(frame, entry[1].key, aux)

    def unsecure(self, frame: bytes, sender: t.EUI64 | None = None) -> Opened:
        """Open a secured APS frame from the air.

        The sender is the IEEE address in the auxiliary header or, when the frame does not carry it, `sender`
        (which a receiver knows from its NWK address map). Raises `UnknownKeyError` for a sender without a link
        key, `BadMicError` if the frame does not verify, `StaleFrameCounterError` for a replayed or old frame and
        `MalformedFrameError` for a frame that cannot be read.
        """
        length, aux = aps.parse_secured(frame)
        if aux.source is not None:
            address = aux.source
        elif sender is not None:
            address = bytes(sender)
        else:
            raise UnknownKeyError(f"node {self.eui}: a secured frame without a source IEEE address, sender unknown")
        if aux.key_id == KeyId.NETWORK:
            raise UnknownKeyError(f"node {self.eui}: APS security with the network key (key id 1) is not accepted")
        entry = self._link_keys.get(address)
        if entry is None:
            raise UnknownKeyError(f"node {self.eui}: no link key for {t.EUI64(address)}")
        partner, link_key = entry
        expected = self._incoming.get(address, 0)
        if aux.frame_counter < expected:
            raise StaleFrameCounterError(
                f"node {self.eui}: frame counter {aux.frame_counter} from {partner} is below {expected}"
            )
        opened = aps.unsecure_parsed(frame, length, aux, link_key.key, address)
        self._incoming[address] = aux.frame_counter + 1
        return Opened(opened.frame, opened.aux, partner, link_key.origin)
