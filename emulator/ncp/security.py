"""The emulated stack's security: transient (install-code) keys, the link key table commands `tables` lacks, the
trust centre's join decision and its Transport-Key, and APS encryption of the frames it sends and receives.

EmberZNet semantics, as UG100 and the EmberZNet API reference give them:

* **Transient keys** (v8 `addTransientLinkKey`/`getTransientLinkKey`; v13+ `importTransientKey`,
  `exportTransientKeyByEui`/`ByIndex`; all versions `clearTransientLinkKeys`) are the keys a joiner will use,
  an install-code key above all (bellows' `permit_with_link_key`). They live in RAM: a reset clears them, and each
  times out `CONFIG_TRANSIENT_KEY_TIMEOUT_S` seconds after it was added. The EUI-64 FF:FF:FF:FF:FF:FF:FF:FF is a
  wildcard (bellows' `pre_permit` adds the well-known key under it).
* **The trust centre's decision** on a joiner follows `TRUST_CENTER_POLICY` (EzspDecisionBitmask, v8+): no join
  without ALLOW_JOINS; with JOINS_USE_INSTALL_CODE_KEY only a transient key admits a joiner; otherwise also its
  key-table entry, the TC link key, and the well-known key when the network allows a global link key. The network
  key goes to the joiner in an APS Transport-Key secured with the key-transport key of the key chosen (Zigbee
  05-3474 §4.4.1.1, key id 2), built with `emulator.security.aps` as the in-process trust centre builds it.
* **APS encryption**: `sendUnicast` with `APS_OPTION_ENCRYPTION` secures the APS frame with the link key the
  stack shares with the destination (key id "data key", extended nonce, the stack's APS frame counter) and sends
  it as a `SecuredApsFrame`, the form `emulator.radio.secure` gives it, so captures and devices read it alike;
  without a key the unicast fails with APS_ENCRYPTION_ERROR. A secured frame from the air is opened with the
  sender's key (a bad MIC, an unknown sender or a replayed frame counter drop it, as the stack would) and reaches
  the host with `APS_OPTION_ENCRYPTION` set in its apsFrame options, which bellows turns into zigpy's
  `TransmitOptions.APS_Encryption`. The stack does not apply the Smart Energy rule of which clusters need it:
  that is the host application's job (Silicon Labs' framework does it on the host too).
* **The key shared with a partner** is its key-table entry. A joined node also shares its TC link key with its
  trust centre (the coordinator whose Transport-Key admitted it, kept in `NetworkState.trust_centre_eui64` and
  named by getCurrentSecurityState's trustCenterLongAddress): with no key-table entry for the trust centre, frames
  to and from it use the TC link key, which after an install-code join is the install-code key, with its own
  incoming frame counter. The trust centre itself only ever uses key-table entries for its partners.

How a joined node's host installs the TC link key after host-side CBKE (nothing here has been tried on hardware):

* EZSP v13/v14: `importKey` (secManImportKey, 0x0115) with core_key_type TC_LINK. Silicon Labs documents
  sl_zb_sec_man_import_key and its key types, and its source stores TC_LINK as the TC (preconfigured) link key and
  answers INVALID_PARAMETER for a type it does not store; that a joined node then uses that key with its trust
  centre, and that the import restarts the key's incoming frame counter, is our reading (SE_SECURITY.md §10
  question 4). `exportKey` TC_LINK reads it back. APP_LINK writes the key table (documented); other types are
  refused with INVALID_PARAMETER.
* EZSP v8: there is no documented command that sets a joined node's TC link key. `addOrUpdateKeyTableEntry(TC
  EUI-64, linkKey=True, key)` writes a key-table entry for the trust centre (documented), and that the stack then
  prefers the entry to the TC link key for frames with the trust centre is our reading.

Transient keys are not moved into the key table after a join (Silicon Labs documents no such move for an SE
trust centre; SE_SECURITY.md §10 question 5): the host installs the link key CBKE gives it.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import bellows.types as bt
import zigpy.types as zt

from emulator.chf.trust_centre import KeyTransport
from emulator.ncp.counters import NcpCounters
from emulator.ncp.joining import WELL_KNOWN_LINK_KEY
from emulator.ncp.state import LinkKeyEntry, NetworkState
from emulator.radio.secure import SecuredApsFrame
from emulator.security import aps
from emulator.security.ccm import AuxHeader, FrameSecurityError, KeyId

OK = bt.sl_Status.OK
NO_INDEX = 0xFF
WILDCARD_EUI64 = zt.EUI64(b"\xff" * 8)
# How many transient keys the stack holds at once; the index of exportTransientKeyByIndex is one byte.
TRANSIENT_KEY_TABLE_SIZE = 255
DEFAULT_TRANSIENT_KEY_TIMEOUT_S = 300
# What the stack's trust centre does before the host sets TRUST_CENTER_POLICY (EmberZNet's default decision).
DEFAULT_TRUST_CENTER_POLICY = bt.EzspDecisionBitmask.ALLOW_JOINS | bt.EzspDecisionBitmask.ALLOW_UNSECURED_REJOINS
_APS_HEADER = struct.Struct("<BBHHBB")  # frame control, dst endpoint, cluster, profile, src endpoint, APS counter
_APS_ACK_REQUEST = 0x40
_APS = bt.EmberApsOption
_BITS = bt.EmberKeyStructBitmask
_POLICY = bt.EzspDecisionBitmask


@dataclass(slots=True)
class TransientKey:
    """A key the trust centre holds for a joiner until `expires` (loop time)."""

    eui64: zt.EUI64
    key: bytes
    expires: float


@dataclass(frozen=True, slots=True)
class TransportKeySent:
    """The trust centre sent the network key to the joiner at NWK `nwk` (a capture writes it)."""

    nwk: int
    transport: KeyTransport


SecurityListener = Callable[[TransportKeySent], None]


def eui64_of(text: str) -> zt.EUI64:
    """An EUI-64 from the state file's hex text (most significant byte first)."""
    return zt.EUI64(bytes.fromhex(text)[::-1])


class StackSecurity:
    """Security commands and APS security of `EmberStack` (mixed into it); the attributes below are the stack's."""

    version: int
    ieee: zt.EUI64
    nwk: int
    state: NetworkState
    network_up: bool
    permit_until: float
    config: dict[bt.EzspConfigId, int]
    policies: dict[bt.EzspPolicyId, int]
    counters: NcpCounters
    transient_keys: dict[bytes, TransientKey]
    security_listeners: list[SecurityListener]

    flush: Callable[[], None]
    _persist_soon: Callable[[], None]
    _next_aps_counter: Callable[[], int]
    _find_key: Callable[[zt.EUI64], int]
    _key_entry: Callable[[int], LinkKeyEntry | None]
    ieee_of: Callable[[int], zt.EUI64 | None]
    if TYPE_CHECKING:  # the stack's (`tables.StackTables`), from the config

        @property
        def _key_table_size(self) -> int: ...

    _v14: Callable[[], bool]

    # -- transient keys (RAM) -------------------------------------------------------------------------------

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _transient(self, eui64: zt.EUI64) -> TransientKey | None:
        entry = self.transient_keys.get(bytes(eui64))
        if entry is not None and entry.expires <= self._now():
            del self.transient_keys[bytes(eui64)]
            return None
        return entry

    def _live_transient_keys(self) -> list[TransientKey]:
        now = self._now()
        for address in [a for a, entry in self.transient_keys.items() if entry.expires <= now]:
            del self.transient_keys[address]
        return list(self.transient_keys.values())

    def add_transient_key(self, eui64: zt.EUI64, key: bytes) -> bt.sl_Status:
        """emberAddTransientLinkKey: a new key for `eui64` replaces its old one; FULL when the table is."""
        address = bytes(eui64)
        if address not in self.transient_keys and len(self._live_transient_keys()) >= TRANSIENT_KEY_TABLE_SIZE:
            return bt.sl_Status.FULL
        timeout = self.config.get(bt.EzspConfigId.CONFIG_TRANSIENT_KEY_TIMEOUT_S, DEFAULT_TRANSIENT_KEY_TIMEOUT_S)
        self.transient_keys[address] = TransientKey(eui64, bytes(key), self._now() + timeout)
        return OK

    def _remaining(self, entry: TransientKey) -> int:
        return max(0, min(0xFFFF, int(entry.expires - self._now())))

    def _cmd_addTransientLinkKey(self, a: dict[str, Any]) -> dict[str, Any]:
        return {"status": self.add_transient_key(a["partner"], bytes(a["transientKey"]))}

    def _cmd_importTransientKey(self, a: dict[str, Any]) -> dict[str, Any]:
        return {"status": self.add_transient_key(a["eui64"], bytes(a["plaintext_key"]))}

    def _cmd_clearTransientLinkKeys(self, a: dict[str, Any]) -> dict[str, Any]:
        self.transient_keys.clear()
        return {}

    def _cmd_getTransientLinkKey(self, a: dict[str, Any]) -> dict[str, Any]:
        entry = self._transient(a["eui64"])
        if entry is None:
            return {"status": bt.sl_Status.NOT_FOUND}
        data = bt.EmberTransientKeyDataV8(
            eui64=entry.eui64,
            keyData=bt.KeyData(entry.key),
            bitmask=_BITS.KEY_HAS_PARTNER_EUI64,
            remainingTimeSeconds=self._remaining(entry),
        )
        return {"status": OK, "transient_key_data": data}

    def _transient_export(self, entry: TransientKey | None, index: int) -> dict[str, Any]:
        """exportTransientKeyBy*: the key with its Security Manager context (key type TC_LINK_WITH_TIMEOUT, as
        sl_zb_sec_man_import_transient_key stores it) and metadata (time to live)."""
        if entry is None:
            return {"status": bt.sl_Status.NOT_FOUND}
        context = bt.SecurityManagerContextV13(
            core_key_type=bt.SecurityManagerKeyType.TC_LINK_WITH_TIMEOUT,
            key_index=index,
            derived_type=bt.SecurityManagerDerivedKeyTypeV13.NONE,
            eui64=entry.eui64,
            multi_network_index=0,
            flags=bt.SecurityManagerContextFlags.KEY_INDEX_IS_VALID | bt.SecurityManagerContextFlags.EUI_IS_VALID,
            psa_key_alg_permission=0,
        )
        metadata = bt.SecurityManagerAPSKeyMetadata(
            bitmask=_BITS.KEY_HAS_PARTNER_EUI64,
            outgoing_frame_counter=0,
            incoming_frame_counter=0,
            ttl_in_seconds=self._remaining(entry),
        )
        return {"status": OK, "context": context, "plaintext_key": bt.KeyData(entry.key), "key_data": metadata}

    def _cmd_exportTransientKeyByEui(self, a: dict[str, Any]) -> dict[str, Any]:
        live = self._live_transient_keys()
        index = next((i for i, e in enumerate(live) if e.eui64 == a["eui64"]), None)
        return self._transient_export(None if index is None else live[index], index or 0)

    def _cmd_exportTransientKeyByIndex(self, a: dict[str, Any]) -> dict[str, Any]:
        live = self._live_transient_keys()
        index = a["index"]
        return self._transient_export(live[index] if index < len(live) else None, index)

    # -- the link key table: what `tables` does not have ------------------------------------------------------

    def _cmd_setKeyTableEntry(self, a: dict[str, Any]) -> dict[str, Any]:
        """v8: write entry `index`. Only link keys: master keys went with Zigbee 2006 (linkKey False is refused)."""
        index = a["index"]
        if index >= self._key_table_size:
            return {"status": bt.sl_Status.INVALID_INDEX}
        if not a["linkKey"]:
            return {"status": bt.sl_Status.INVALID_PARAMETER}
        self.state.key_table[index] = LinkKeyEntry(NetworkState.ieee_text(a["address"]), bytes(a["keyData"]).hex())
        self.flush()
        return {"status": OK}

    def _cmd_exportLinkKeyByEui(self, a: dict[str, Any]) -> dict[str, Any]:
        index = self._find_key(a["eui64"])
        entry = self._key_entry(index) if index < self._key_table_size else None
        if entry is None:
            return {"status": bt.sl_Status.NOT_FOUND}
        metadata = bt.SecurityManagerAPSKeyMetadata(
            bitmask=_BITS.KEY_HAS_OUTGOING_FRAME_COUNTER | _BITS.KEY_HAS_INCOMING_FRAME_COUNTER,
            outgoing_frame_counter=self.state.aps_frame_counter,
            incoming_frame_counter=entry.rx_counter,
            ttl_in_seconds=0,
        )
        key = bt.KeyData(bytes.fromhex(entry.key))
        values: dict[str, Any] = {"status": OK, "plaintext_key": key, "key_data": metadata}
        if self._v14():
            values["context"] = bt.SecurityManagerContextV13(
                core_key_type=bt.SecurityManagerKeyType.APP_LINK,
                key_index=index,
                derived_type=bt.SecurityManagerDerivedKeyTypeV13.NONE,
                eui64=a["eui64"],
                multi_network_index=0,
                flags=bt.SecurityManagerContextFlags.KEY_INDEX_IS_VALID | bt.SecurityManagerContextFlags.EUI_IS_VALID,
                psa_key_alg_permission=0,
            )
        else:
            values["index"] = index
        return values

    def link_key_for(self, partner: zt.EUI64) -> bytes | None:
        """The link key the stack shares with `partner`: its key-table key; on a joined node without a key-table
        entry for its trust centre, the TC link key for the trust centre. None without either."""
        shared = self._shared_key(partner)
        return None if shared is None else shared[0]

    def _shared_key(self, partner: zt.EUI64) -> tuple[bytes, int] | None:
        """(key, incoming frame counter) of the link key shared with `partner` (`link_key_for`)."""
        index = self._find_key(partner)
        entry = self._key_entry(index) if index < self._key_table_size else None
        if entry is not None:
            return bytes.fromhex(entry.key), entry.rx_counter
        if partner == self.state.trust_centre:  # never on the trust centre itself (no trust_centre there)
            return bytes.fromhex(self.state.tc_link_key), self.state.tc_link_rx_counter
        return None

    def _heard_from(self, partner: zt.EUI64, frame_counter: int) -> None:
        """A frame secured with the key shared with `partner` was opened: later ones must count past it."""
        index = self._find_key(partner)
        entry = self._key_entry(index) if index < self._key_table_size else None
        if entry is not None:
            entry.rx_counter = frame_counter + 1
        else:
            self.state.tc_link_rx_counter = frame_counter + 1
        self._persist_soon()

    # -- the trust-centre link key of a joined node ---------------------------------------------------------------

    def _cmd_importKey(self, a: dict[str, Any]) -> dict[str, Any]:
        """v13+ secManImportKey (sl_zb_sec_man_import_key). TC_LINK sets the TC link key (a joined node's key with
        its trust centre, the trust centre's own preconfigured key on the TC) and restarts its incoming frame
        counter; APP_LINK writes key-table entry `key_index` for `eui64` (0xFF: the partner's entry or a free
        one, and the answer's context says which). A derived key type or any other key type is refused with
        INVALID_PARAMETER and changes nothing, as Silicon Labs' implementation answers what it does not store."""
        context: bt.SecurityManagerContextV13 = a["context"]
        key = bytes(a["key"])
        status = bt.sl_Status.INVALID_PARAMETER
        kind = context.core_key_type if context.derived_type == bt.SecurityManagerDerivedKeyTypeV13.NONE else None
        if kind == bt.SecurityManagerKeyType.TC_LINK:
            self.state.tc_link_key = key.hex()
            self.state.tc_link_rx_counter = 0
            self.flush()
            status = OK
        elif kind == bt.SecurityManagerKeyType.APP_LINK:
            status, context = self._import_app_link_key(context, key)
        values: dict[str, Any] = {"status": status}
        if self._v14():
            values["context"] = context
        return values

    def _import_app_link_key(
        self, context: bt.SecurityManagerContextV13, key: bytes
    ) -> tuple[bt.sl_Status, bt.SecurityManagerContextV13]:
        index = context.key_index
        if index == NO_INDEX:
            index = self._find_key(context.eui64)
        if index == NO_INDEX:
            index = next((i for i in range(self._key_table_size) if self.state.key_table[i] is None), NO_INDEX)
            if index == NO_INDEX:
                return bt.sl_Status.FULL, context
        if index >= self._key_table_size:
            return bt.sl_Status.INVALID_INDEX, context
        self.state.key_table[index] = LinkKeyEntry(NetworkState.ieee_text(context.eui64), key.hex())
        self.flush()
        return OK, context.replace(key_index=index)

    # -- trust centre ------------------------------------------------------------------------------------

    @property
    def trust_centre_policy(self) -> bt.EzspDecisionBitmask:
        value = self.policies.get(bt.EzspPolicyId.TRUST_CENTER_POLICY)
        return _POLICY(value & 0xFF) if value is not None else DEFAULT_TRUST_CENTER_POLICY

    def join_keys(self, joiner: zt.EUI64) -> list[bytes]:
        """The link keys the trust centre would send `joiner` the network key under, first choice first:
        its transient key (or the wildcard one), and unless the policy asks for install-code keys only, its
        key-table entry, the TC link key and, on a network that allows a global link key, the well-known key.
        Empty when the policy allows no joins."""
        policy = self.trust_centre_policy
        if _POLICY.ALLOW_JOINS not in policy:
            return []
        keys = [entry.key for entry in (self._transient(joiner), self._transient(WILDCARD_EUI64)) if entry]
        if _POLICY.JOINS_USE_INSTALL_CODE_KEY in policy:
            return keys
        own = self.link_key_for(joiner)
        if own is not None:
            keys.append(own)
        keys.append(bytes.fromhex(self.state.tc_link_key))
        initial = bt.EmberInitialSecurityBitmask(self.state.security_bitmask)
        if bt.EmberInitialSecurityBitmask.TRUST_CENTER_GLOBAL_LINK_KEY in initial:
            keys.append(WELL_KNOWN_LINK_KEY)  # a hashed-key TC keeps the seed in tc_link_key, joiners use this
        return list(dict.fromkeys(keys))

    def transport_network_key(self, joiner: zt.EUI64, nwk: int, *, held: bytes | None = None) -> KeyTransport | None:
        """The trust centre admits `joiner` (joining at NWK `nwk` while joining is permitted): the APS
        Transport-Key of the network key, secured with the key-transport key of the first key `join_keys`
        gives, or of `held` (the joiner's own key, the well-known one) when that is among them, as for a joining
        stick (`joining`). None when the network is down, joining is closed, or no key admits the joiner."""
        keys = self.join_keys(joiner)
        if held is not None:
            keys = [held] if held in keys else []
        if not keys or not self.network_up or self.permit_until <= self._now():
            return None
        state = self.state
        command = aps.NetworkKeyTransport(
            bytes.fromhex(state.network_key), state.network_key_seq, bytes(joiner), bytes(self.ieee)
        )
        frame = aps.command_frame(self._next_aps_counter(), aps.build_transport_key(command))
        aux = AuxHeader(KeyId.KEY_TRANSPORT, self._next_aps_frame_counter(), bytes(self.ieee))
        secured = aps.secure(frame, keys[0], aux)
        transport = KeyTransport(joiner, command, keys[0], secured)
        for listener in list(self.security_listeners):
            listener(TransportKeySent(nwk, transport))
        return transport

    def _next_aps_frame_counter(self) -> int:
        counter = self.state.aps_frame_counter
        self.state.aps_frame_counter = counter + 1
        self._persist_soon()
        return counter

    # -- APS security of frames ---------------------------------------------------------------------------

    def can_secure(self, nwk: int) -> bool:
        partner = self.ieee_of(nwk)
        return partner is not None and self.link_key_for(partner) is not None

    def secure_unicast(self, packet: zt.ZigbeePacket, aps_frame: bt.EmberApsFrame, nwk: int) -> zt.ZigbeePacket:
        """`packet` (asked for with APS_OPTION_ENCRYPTION) with its APS frame secured under the destination's
        key-table key; `can_secure(nwk)` must hold. The frame counter is the one `_count_transmission` advances
        once the frame is on the air."""
        partner = self.ieee_of(nwk)
        key = self.link_key_for(partner) if partner is not None else None
        if key is None:
            raise ValueError(f"no link key for NWK 0x{nwk:04X}")
        control = _APS_ACK_REQUEST if _APS.APS_OPTION_RETRY in aps_frame.options else 0
        header = _APS_HEADER.pack(
            control,
            aps_frame.destinationEndpoint,
            aps_frame.clusterId,
            aps_frame.profileId,
            aps_frame.sourceEndpoint,
            aps_frame.sequence,
        )
        aux = AuxHeader(KeyId.DATA, self.state.aps_frame_counter, bytes(self.ieee))
        secured = aps.secure(header + packet.data.serialize(), key, aux)
        return packet.replace(data=SecuredApsFrame(secured))

    def open_secured(self, packet: zt.ZigbeePacket, sender: int) -> zt.ZigbeePacket | None:
        """A frame from the air: as it is when not APS-secured; opened (its payload in clear, APS_Encryption in
        its transmit options) when secured under a key-table key; None (dropped, counted) otherwise."""
        data = packet.data
        if not isinstance(data, SecuredApsFrame):
            return packet
        frame = data.serialize()
        try:
            length, aux = aps.parse_secured(frame)
            source = zt.EUI64(aux.source) if aux.source is not None else self.ieee_of(sender)
            shared = self._shared_key(source) if source is not None else None
            if aux.key_id != KeyId.DATA or source is None or shared is None:
                self.counters.air["aps_no_key"] += 1
                return None
            key, rx_counter = shared
            if aux.frame_counter < rx_counter:
                self.counters.air["aps_replayed"] += 1
                return None
            plain = aps.unsecure_parsed(frame, length, aux, key, bytes(source)).frame
        except FrameSecurityError:
            self.counters.air["aps_not_opened"] += 1
            return None
        fields = _APS_HEADER.unpack_from(plain) if len(plain) >= _APS_HEADER.size else None
        if fields is None or fields[1:5] != (packet.dst_ep, packet.cluster_id, packet.profile_id, packet.src_ep):
            self.counters.air["aps_not_opened"] += 1
            return None
        self._heard_from(source, aux.frame_counter)
        options = packet.tx_options | zt.TransmitOptions.APS_Encryption
        return packet.replace(data=zt.SerializableBytes(plain[length:]), tx_options=options)
