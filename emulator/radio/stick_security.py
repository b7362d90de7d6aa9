"""The Smart Energy rule on an EZSP stick, as the host applies it: which of a device's frames the host asks the NCP
to APS-encrypt, and which received frames it refuses.

On a stick the APS layer is the NCP's. It secures a unicast sent with `APS_OPTION_ENCRYPTION` (0x0020) under the
link key it shares with the destination (for the trust centre: its trust-centre link key), and says that a frame
it received was APS-decrypted by the same bit in the apsFrame options of `incomingMessageHandler` (EZSP UG100;
bellows turns it into zigpy's `TransmitOptions.APS_Encryption`). Which clusters need it is the application's
decision (ZSE 07-5356 §5.4.6), which Silicon Labs' application framework also takes on the host. Here it is
`keystore.requires_aps_encryption`, the same rule `SecureRadio` applies to an in-process device, so a device behaves
alike on both radios:

* **Before key establishment** (`application_ready` False) no frame of the APS-encrypted clusters is taken: CBKE
  precedes application traffic (SE 07-5356 Annex C.4.2).
* **Once the CBKE link key is in the NCP** (`link_key_in_use`): the device's unicasts of those clusters to the trust
  centre go out with APS encryption, and such a frame that arrives without it is dropped and reported (`on_drop`),
  as a device that holds a link key must do.

A Smart Energy device on a stick has one link partner, the trust centre, which is also the OTA server.
"""

from __future__ import annotations

from typing import cast

import zigpy.types as t

from emulator.radio.secure import DropListener, DroppedFrame, DropReason, is_broadcast
from emulator.security.keystore import requires_aps_encryption

TRUST_CENTRE_NWK = 0x0000


class StickSecurity:
    """The host-side Smart Energy state of one device on a stick: its trust centre and whether the link key CBKE gave
    it is in use. `on_drop` hears every frame refused."""

    def __init__(self, on_drop: DropListener | None = None) -> None:
        self.on_drop = on_drop
        self.trust_centre: t.EUI64 | None = None
        self.application_ready = True
        self.link_key_in_use = False
        self.stats = {"encrypted_out": 0, "encrypted_in": 0, "dropped": 0, "ignored": 0}

    def encrypt(self, packet: t.ZigbeePacket) -> bool:
        """Should the NCP APS-encrypt `packet`? A unicast to the trust centre of a cluster the SE rule names, once the
        link key is in use."""
        dst = packet.dst
        if not self.link_key_in_use or dst is None or is_broadcast(dst) or not _to_trust_centre(dst):
            return False
        if not requires_aps_encryption(packet.profile_id or 0, packet.cluster_id, broadcast=False):
            return False
        self.stats["encrypted_out"] += 1
        return True

    def admit(self, packet: t.ZigbeePacket, encrypted: bool) -> bool:
        """Take a frame the NCP delivered (`encrypted`: it came APS-decrypted)? False drops it."""
        if encrypted:
            self.stats["encrypted_in"] += 1
            return True
        secured_cluster = requires_aps_encryption(
            packet.profile_id or 0, packet.cluster_id, broadcast=is_broadcast(packet.dst)
        )
        if not secured_cluster:
            return True
        if not self.application_ready:
            self.stats["ignored"] += 1
            return False
        if self.link_key_in_use and _sender_nwk(packet) == TRUST_CENTRE_NWK:
            self._drop(packet)
            return False
        return True

    def _drop(self, packet: t.ZigbeePacket) -> None:
        self.stats["dropped"] += 1
        if self.on_drop is None:
            return
        payload = packet.data.serialize()
        command = payload[2] if len(payload) >= 3 and not payload[0] & 0x04 else None
        self.on_drop(
            DroppedFrame(
                _sender_nwk(packet),
                self.trust_centre,
                packet.profile_id or 0,
                packet.cluster_id,
                command,
                DropReason.UNENCRYPTED,
                "sent in clear",
            )
        )


def _to_trust_centre(dst: t.AddrModeAddress) -> bool:
    return dst.addr_mode == t.AddrMode.NWK and int(cast(int, dst.address)) == TRUST_CENTRE_NWK


def _sender_nwk(packet: t.ZigbeePacket) -> int:
    src = packet.src
    if src is None or src.addr_mode != t.AddrMode.NWK:
        return -1
    return int(cast(int, src.address))
