"""The stack's tables and the address lookups built on them.

Flash (kept in `NetworkState`, so they survive resets): the link key table and the child table. RAM (gone at
every reset, rebuilt by the host): the address table, the multicast table and per-device extended timeouts.
bellows asks `getExtendedTimeout` before every unicast and only writes when the answer differs, so keeping the
flag per EUI64 saves it two commands per packet (ZIGPY_BELLOWS.md §3.4).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bellows.types as bt
import zigpy.types as zt

from emulator.ncp.command import Args, Values
from emulator.ncp.state import KEY_TABLE_SIZE, LinkKeyEntry, NetworkState
from emulator.radio.air import Air

OK = bt.sl_Status.OK
NULL_NODE_ID = 0xFFFF  # also EMBER_TABLE_ENTRY_UNUSED_NODE_ID
NO_INDEX = 0xFF
ZERO_EUI64 = bt.EUI64.convert("00:00:00:00:00:00:00:00")
_C = bt.EzspConfigId


class StackTables:
    """Table commands of `EmberStack` (mixed into it); the attributes below are the stack's."""

    nwk: int
    ieee: zt.EUI64
    version: int
    air: Air
    state: NetworkState
    config: dict[bt.EzspConfigId, int]
    address_table: dict[int, tuple[zt.EUI64, int]]
    multicast: dict[int, bt.EmberMulticastTableEntry]
    extended_timeout: dict[zt.EUI64, bool]
    _known: dict[zt.EUI64, int]

    flush: Callable[[], None]
    _persist_soon: Callable[[], None]

    def _v14(self) -> bool:
        return self.version >= 14

    # -- key table (flash) --------------------------------------------------------------------------------------

    @property
    def _key_table_size(self) -> int:
        return min(self.config.get(_C.CONFIG_KEY_TABLE_SIZE, 0), KEY_TABLE_SIZE)

    def _key_entry(self, index: int) -> LinkKeyEntry | None:
        return self.state.key_table[index] if index < self._key_table_size else None

    def _cmd_importLinkKey(self, a: Args) -> Values:
        index = a["index"]
        if index >= self._key_table_size:
            return {"status": bt.sl_Status.INVALID_INDEX}
        self.state.key_table[index] = LinkKeyEntry(NetworkState.ieee_text(a["address"]), bytes(a["key"]).hex())
        self.flush()
        return {"status": OK}

    def _cmd_exportLinkKeyByIndex(self, a: Args) -> Values:
        index = a["index"]
        entry = self._key_entry(index)
        if entry is None:
            return {"status": bt.sl_Status.NOT_FOUND}
        bits = bt.EmberKeyStructBitmask
        eui64 = bt.EUI64(bytes.fromhex(entry.eui64)[::-1])
        metadata = bt.SecurityManagerAPSKeyMetadata(
            bitmask=bits.KEY_HAS_OUTGOING_FRAME_COUNTER | bits.KEY_HAS_INCOMING_FRAME_COUNTER,
            outgoing_frame_counter=entry.tx_counter,
            incoming_frame_counter=entry.rx_counter,
            ttl_in_seconds=0,
        )
        values: dict[str, Any] = {
            "status": OK,
            "plaintext_key": bt.KeyData(bytes.fromhex(entry.key)),
            "key_data": metadata,
        }
        if self._v14():
            values["context"] = bt.SecurityManagerContextV13(
                core_key_type=bt.SecurityManagerKeyType.APP_LINK,
                key_index=index,
                derived_type=bt.SecurityManagerDerivedKeyTypeV13.NONE,
                eui64=eui64,
                multi_network_index=0,
                flags=bt.SecurityManagerContextFlags.NONE,
                psa_key_alg_permission=0,
            )
        else:
            values["eui64"] = eui64
        return values

    def _cmd_getKeyTableEntry(self, a: Args) -> Values:
        index = a["index"]
        if index >= self._key_table_size:
            return {"status": bt.sl_Status.INVALID_INDEX}
        entry = self._key_entry(index)
        if entry is None:
            return {"status": bt.sl_Status.NOT_FOUND}
        bits = bt.EmberKeyStructBitmask
        key = bt.EmberKeyStruct(
            bitmask=bits.KEY_HAS_OUTGOING_FRAME_COUNTER
            | bits.KEY_HAS_INCOMING_FRAME_COUNTER
            | bits.KEY_HAS_PARTNER_EUI64,
            type=bt.EmberKeyType.APPLICATION_LINK_KEY,
            key=bt.KeyData(bytes.fromhex(entry.key)),
            outgoingFrameCounter=entry.tx_counter,
            incomingFrameCounter=entry.rx_counter,
            sequenceNumber=0,
            partnerEUI64=bt.EUI64(bytes.fromhex(entry.eui64)[::-1]),
        )
        return {"status": OK, "keyStruct": key}

    def _find_key(self, ieee: zt.EUI64) -> int:
        text = NetworkState.ieee_text(ieee)
        for index in range(self._key_table_size):
            entry = self.state.key_table[index]
            if entry is not None and entry.eui64 == text:
                return index
        return NO_INDEX

    def _cmd_addOrUpdateKeyTableEntry(self, a: Args) -> Values:
        index = self._find_key(a["address"])
        if index == NO_INDEX:
            free = [i for i in range(self._key_table_size) if self.state.key_table[i] is None]
            if not free:
                return {"status": bt.sl_Status.FULL}
            index = free[0]
        self.state.key_table[index] = LinkKeyEntry(NetworkState.ieee_text(a["address"]), bytes(a["keyData"]).hex())
        self.flush()
        return {"status": OK}

    def _cmd_findKeyTableEntry(self, a: Args) -> Values:
        return {"index": self._find_key(a["address"])}

    def _cmd_eraseKeyTableEntry(self, a: Args) -> Values:
        index = a["index"]
        if index >= self._key_table_size:
            return {"status": bt.sl_Status.INVALID_INDEX}
        self.state.key_table[index] = None
        self.flush()
        return {"status": OK}

    def _cmd_clearKeyTable(self, a: Args) -> Values:
        self.state.key_table = [None] * KEY_TABLE_SIZE
        self.flush()
        return {"status": OK}

    # -- child, address and multicast tables ----------------------------------------------------------------------

    def _cmd_getChildData(self, a: Args) -> Values:
        children = list(self.state.children.items())
        index = a["index"]
        if index >= len(children):
            return {"status": bt.sl_Status.NOT_JOINED}
        text, nwk = children[index]
        node = self.air.node(nwk)
        sleepy = node is None or not node.rx_on_when_idle
        fields = {
            "eui64": bt.EUI64(bytes.fromhex(text)[::-1]),
            "type": bt.EmberNodeType.SLEEPY_END_DEVICE if sleepy else bt.EmberNodeType.END_DEVICE,
            "id": nwk,
            "phy": 0,
            "power": 0,
            "timeout": 0,
        }
        if self.version >= 13:
            return {"status": OK, "child_data": bt.EmberChildDataV10(**fields, timeout_remaining=0)}
        return {"status": OK, "childData": bt.EmberChildDataV7(**fields)}

    def _cmd_setChildData(self, a: Args) -> Values:
        child = a["child_data"]
        self.state.children[NetworkState.ieee_text(child.eui64)] = child.id
        self._persist_soon()
        return {"status": OK}

    @property
    def _address_table_size(self) -> int:
        return self.config.get(_C.CONFIG_ADDRESS_TABLE_SIZE, 0)

    def _cmd_replaceAddressTableEntry(self, a: Args) -> Values:
        index = a["addressTableIndex"]
        if index >= self._address_table_size:
            return {"status": bt.sl_Status.INVALID_INDEX}
        old_ieee, old_nwk = self.address_table.get(index, (ZERO_EUI64, NULL_NODE_ID))
        old_ext = self.extended_timeout.get(old_ieee, False)
        self.address_table[index] = (a["newEui64"], a["newId"])
        self.extended_timeout[a["newEui64"]] = bool(a["newExtendedTimeout"])
        return {"status": OK, "oldEui64": old_ieee, "oldId": old_nwk, "oldExtendedTimeout": old_ext}

    def _cmd_getAddressTableRemoteNodeId(self, a: Args) -> Values:
        return {"nodeId": self.address_table.get(a["addressTableIndex"], (ZERO_EUI64, NULL_NODE_ID))[1]}

    def _cmd_getAddressTableRemoteEui64(self, a: Args) -> Values:
        return {"eui64": self.address_table.get(a["addressTableIndex"], (ZERO_EUI64, NULL_NODE_ID))[0]}

    def _cmd_getAddressTableInfo(self, a: Args) -> Values:
        index = a["index"]
        if index >= self._address_table_size:
            return {"status": bt.sl_Status.INVALID_INDEX}
        ieee, nwk = self.address_table.get(index, (ZERO_EUI64, NULL_NODE_ID))
        return {"status": OK, "nwk": nwk, "eui64": ieee}

    def _cmd_setExtendedTimeout(self, a: Args) -> Values:
        self.extended_timeout[a["remoteEui64"]] = bool(a["extendedTimeout"])
        return {"status": OK} if self._v14() else {}

    def _cmd_getExtendedTimeout(self, a: Args) -> Values:
        extended = self.extended_timeout.get(a["remoteEui64"], False)
        if self._v14():
            return {"status": OK if extended else bt.sl_Status.FAIL}
        return {"extendedTimeout": extended}

    def node_id_of(self, ieee: zt.EUI64) -> int | None:
        if ieee == self.ieee:
            return self.nwk
        for entry_ieee, nwk in self.address_table.values():
            if entry_ieee == ieee:
                return nwk
        text = NetworkState.ieee_text(ieee)
        if text in self.state.children:
            return self.state.children[text]
        if ieee in self._known:
            return self._known[ieee]
        node = self.air.node_by_ieee(ieee)
        return None if node is None else node.nwk

    def ieee_of(self, nwk: int) -> zt.EUI64 | None:
        if nwk == self.nwk:
            return self.ieee
        for entry_ieee, entry_nwk in self.address_table.values():
            if entry_nwk == nwk:
                return entry_ieee
        for text, child_nwk in self.state.children.items():
            if child_nwk == nwk:
                return zt.EUI64(bytes.fromhex(text)[::-1])
        for ieee, known_nwk in self._known.items():
            if known_nwk == nwk:
                return ieee
        node = self.air.node(nwk)
        return None if node is None else node.ieee

    def _cmd_lookupNodeIdByEui64(self, a: Args) -> Values:
        nwk = self.node_id_of(a["eui64"])
        if self._v14():
            return {
                "status": bt.sl_Status.NOT_FOUND if nwk is None else OK,
                "nodeId": NULL_NODE_ID if nwk is None else nwk,
            }
        return {"nodeId": NULL_NODE_ID if nwk is None else nwk}

    def _cmd_lookupEui64ByNodeId(self, a: Args) -> Values:
        ieee = self.ieee_of(a["nodeId"])
        if ieee is None:
            return {"status": bt.sl_Status.NOT_FOUND}
        return {"status": OK, "eui64": ieee}

    @property
    def _multicast_table_size(self) -> int:
        return self.config.get(_C.CONFIG_MULTICAST_TABLE_SIZE, 0)

    def _cmd_getMulticastTableEntry(self, a: Args) -> Values:
        index = a["index"]
        if index >= self._multicast_table_size:
            return {"status": bt.sl_Status.INVALID_INDEX}
        entry = self.multicast.get(index) or bt.EmberMulticastTableEntry(multicastId=0, endpoint=0, networkIndex=0)
        return {"status": OK, "value": entry}

    def _cmd_setMulticastTableEntry(self, a: Args) -> Values:
        index = a["index"]
        if index >= self._multicast_table_size:
            return {"status": bt.sl_Status.INVALID_INDEX}
        self.multicast[index] = a["value"]
        return {"status": OK}
