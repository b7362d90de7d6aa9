"""The emulated EmberZNet stack behind the virtual NCP: command semantics and network state.

It is the coordinator (NWK 0x0000) on an `Air`; its radio side is in `messaging`, its tables in `tables`.

What is RAM and what is flash follows the chip: a reset (RST, or the NCP's own reboot) forgets configuration,
policies, endpoints, the address and multicast tables and extended timeouts, and takes the network down until
the host calls networkInit; the network tokens, key table and child table live in `NetworkState`.

Handlers receive the parameters by their names in the active version's command table and return values by the
same names (`command`); statuses are `sl_Status` and the codec puts them in the version's own status type.
Commands the stack does not know are answered with invalidCommand by the caller. The stack's own handlers are
its methods `_cmd_<ezspName>` (names as in bellows' tables); they and any added with `add_command` form one
table, `commands`, so a module that brings more commands (keys, security) adds entries to it.
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
from emulator.ncp.cbke import StackCbke
from emulator.ncp.command import Args, Handler, Values
from emulator.ncp.counters import NcpCounters
from emulator.ncp.ezsp import STACK_RELEASES, stack_version_word
from emulator.ncp.faults import Faults
from emulator.ncp.joining import StackJoining, beacons
from emulator.ncp.messaging import MAX_APS_PAYLOAD, StackMessaging
from emulator.ncp.security import SecurityListener, StackSecurity, TransientKey
from emulator.ncp.state import KEY_TABLE_SIZE, NetworkState
from emulator.ncp.tables import NULL_NODE_ID, OK, ZERO_EUI64, StackTables
from emulator.radio.air import COORDINATOR_NWK, Air

STACK_TYPE_MESH = 2
DEFAULT_MANUFACTURER_CODE = 0x1049  # Silicon Laboratories
FREE_BUFFERS = 0xF0
PERSIST_DELAY = 1.0

_C = bt.EzspConfigId
# Values an EmberZNet NCP image holds before the host configures it.
DEFAULT_CONFIG: dict[bt.EzspConfigId, int] = {
    _C.CONFIG_PACKET_BUFFER_COUNT: 75,
    _C.CONFIG_NEIGHBOR_TABLE_SIZE: 16,
    _C.CONFIG_APS_UNICAST_MESSAGE_COUNT: 10,
    _C.CONFIG_BINDING_TABLE_SIZE: 2,
    _C.CONFIG_ADDRESS_TABLE_SIZE: 8,
    _C.CONFIG_MULTICAST_TABLE_SIZE: 8,
    _C.CONFIG_ROUTE_TABLE_SIZE: 16,
    _C.CONFIG_DISCOVERY_TABLE_SIZE: 8,
    _C.CONFIG_STACK_PROFILE: 2,
    _C.CONFIG_SECURITY_LEVEL: 5,
    _C.CONFIG_MAX_HOPS: 30,
    _C.CONFIG_MAX_END_DEVICE_CHILDREN: 6,
    _C.CONFIG_INDIRECT_TRANSMISSION_TIMEOUT: 3000,
    _C.CONFIG_END_DEVICE_POLL_TIMEOUT: 8,
    _C.CONFIG_TRUST_CENTER_ADDRESS_CACHE_SIZE: 2,
    _C.CONFIG_SOURCE_ROUTE_TABLE_SIZE: 7,
    _C.CONFIG_FRAGMENT_WINDOW_SIZE: 1,
    _C.CONFIG_KEY_TABLE_SIZE: 4,
    _C.CONFIG_APS_ACK_TIMEOUT: 1600,
    _C.CONFIG_PAN_ID_CONFLICT_REPORT_THRESHOLD: 1,
    _C.CONFIG_REQUEST_KEY_TIMEOUT: 0,
    _C.CONFIG_APPLICATION_ZDO_FLAGS: 0,
    _C.CONFIG_BROADCAST_TABLE_SIZE: 15,
    _C.CONFIG_SUPPORTED_NETWORKS: 1,
    _C.CONFIG_MTORR_FLOW_CONTROL: 1,
    _C.CONFIG_RETRY_QUEUE_SIZE: 16,
    _C.CONFIG_NEW_BROADCAST_ENTRY_THRESHOLD: 10,
    _C.CONFIG_TRANSIENT_KEY_TIMEOUT_S: 300,
    _C.CONFIG_BROADCAST_MIN_ACKS_NEEDED: 255,
    _C.CONFIG_TC_REJOINS_USING_WELL_KNOWN_KEY_TIMEOUT_S: 300,
    _C.CONFIG_GP_PROXY_TABLE_SIZE: 5,
}

# Commands a real NCP accepts and that change nothing this emulation models: answered OK with zero values.
ACCEPTED_AS_IS = frozenset(
    {
        "setConcentrator",
        "setSourceRoute",
        "setSourceRouteDiscoveryMode",
        "gpSinkTableClearAll",
        "removeDevice",
    }
)

Sink = Callable[[str, dict[str, Any]], None]


class EmberStack(StackTables, StackMessaging, StackJoining, StackSecurity, StackCbke):
    """Coordinator (or, once joined, end device or router: `joining`) on the air and command processor behind
    the EZSP layer."""

    nwk = COORDINATOR_NWK
    rx_on_when_idle = True
    router = True

    def __init__(
        self,
        *,
        version: int,
        air: Air,
        state: NetworkState,
        faults: Faults,
        rng: random.Random,
        counters: NcpCounters,
        persist: Callable[[], None],
    ) -> None:
        self.version = version
        self.air = air
        self.state = state
        self.faults = faults
        self.counters = counters
        self.sink: Sink | None = None
        self._rng = rng
        self._persist_now = persist
        self._persist_handle: asyncio.TimerHandle | None = None
        self._generation = 0
        self._attached = False
        self._listening = False
        self._known: dict[zt.EUI64, int] = {}  # neighbours and joiners: IEEE -> NWK
        self._stack_counters: Counter[bt.EmberCounterType] = Counter()
        self.ieee = self._boot_ieee()
        self.commands: dict[str, Handler] = {
            name.removeprefix("_cmd_"): getattr(self, name) for name in dir(type(self)) if name.startswith("_cmd_")
        }
        self.network_ready = asyncio.Event()
        self.joining_permitted = asyncio.Event()  # set by permitJoining with a duration; `permit_until` ends it
        self.security_listeners: list[SecurityListener] = []  # the trust centre's Transport-Keys (`security`)
        self.reboot()
        self._take_role()

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def attach(self) -> None:
        self._place_on_air()
        if not self._listening:
            self.air.add_join_listener(self)
            self._listening = True
        self._attached = True

    def detach(self) -> None:
        if self._attached:
            self._leave_air()
            self._attached = False

    def reboot(self) -> None:
        """What a chip reset does: RAM is gone, flash stays, the network is down until networkInit."""
        self._generation += 1
        self._set_network_up(False)
        self.config = dict(DEFAULT_CONFIG)
        self.values: dict[bt.EzspValueId, bytes] = {}
        self.policies: dict[bt.EzspPolicyId, int] = {}
        self.endpoints: dict[int, zdo_t.SimpleDescriptor] = {}
        self.multicast: dict[int, bt.EmberMulticastTableEntry] = {}
        self.address_table: dict[int, tuple[bt.EUI64, int]] = {}
        self.extended_timeout: dict[bt.EUI64, bool] = {}
        self.manufacturer_code = DEFAULT_MANUFACTURER_CODE
        self.pending_security: bt.EmberInitialSecurityState | None = None
        self.transient_keys: dict[bytes, TransientKey] = {}
        self._cbke_temporary = None  # the CBKE library's temporary data (`cbke`)
        self.permit_until = 0.0
        self.joining_permitted.clear()
        self._aps_counter = 0
        ieee = self._boot_ieee()
        if ieee != self.ieee:
            attached = self._attached
            self.detach()
            self.ieee = ieee
            if attached:
                self.attach()

    def _boot_ieee(self) -> zt.EUI64:
        custom = self.state.custom_eui64
        return zt.EUI64(bytes.fromhex(custom)[::-1]) if custom else self.state.ieee

    def flush(self) -> None:
        if self._persist_handle is not None:
            self._persist_handle.cancel()
            self._persist_handle = None
        self._persist_now()

    def _persist_soon(self) -> None:
        """Frame counters and the child table change often; write them once things settle (and at stop)."""
        if self._persist_handle is None:
            self._persist_handle = asyncio.get_running_loop().call_later(PERSIST_DELAY, self.flush)

    # -- command dispatch -----------------------------------------------------------------------------------------

    def version_info(self) -> dict[str, Any]:
        return {"protocolVersion": self.version, "stackType": STACK_TYPE_MESH, "stackVersion": self.stack_version}

    @property
    def stack_version(self) -> int:
        return stack_version_word(self.version)

    def add_command(self, name: str, handler: Handler) -> None:
        """Serve the EZSP command `name` (as bellows' tables name it) with `handler`, in place of any before."""
        self.commands[name] = handler

    def handle(self, name: str, args: Args) -> tuple[str, Values] | None:
        """(response frame name, values) for a command, or None when this NCP does not implement it."""
        if name == "callback":
            return "noCallbacks", {}  # over UART callbacks are asynchronous; none is ever waiting
        handler = self.commands.get(name)
        if handler is not None:
            return name, handler(args)
        if name in ACCEPTED_AS_IS:
            return name, {}
        return None

    def _emit(self, generation: int, name: str, values: dict[str, Any]) -> None:
        if generation != self._generation:
            return  # queued before a reset: the chip that would have sent it is gone
        if self.sink is None:
            self.counters.air["callbacks_without_host"] += 1
            return
        self.sink(name, values)

    def _emit_soon(self, name: str, values: dict[str, Any]) -> None:
        """Callbacks caused by a command follow its response, as on the chip."""
        asyncio.get_running_loop().call_soon(self._emit, self._generation, name, values)

    # -- identity, configuration, values, tokens ---------------------------------------------------------------

    def _cmd_nop(self, a: Args) -> Values:
        return {}

    def _cmd_getEui64(self, a: Args) -> Values:
        return {"eui64": self.ieee}

    def _cmd_getNodeId(self, a: Args) -> Values:
        return {"nodeId": self.nwk if self.network_up else NULL_NODE_ID}

    def _cmd_getMfgToken(self, a: Args) -> Values:
        token = a["tokenId"]
        texts = {bt.EzspMfgTokenId.MFG_STRING: b"ota-emu", bt.EzspMfgTokenId.MFG_BOARD_NAME: b"virtual-ncp"}
        if token in texts:
            return {"tokenData": texts[token].ljust(16, b"\xff")}
        if token == bt.EzspMfgTokenId.MFG_CUSTOM_EUI_64:
            custom = self.state.custom_eui64
            return {"tokenData": bytes.fromhex(custom)[::-1] if custom else b"\xff" * 8}
        if token == bt.EzspMfgTokenId.MFG_MANUF_ID:
            return {"tokenData": DEFAULT_MANUFACTURER_CODE.to_bytes(2, "little")}
        sizes = {bt.EzspMfgTokenId.MFG_CUSTOM_VERSION: 2, bt.EzspMfgTokenId.MFG_PHY_CONFIG: 2}
        return {"tokenData": b"\xff" * sizes.get(token, 0)}

    def _cmd_setMfgToken(self, a: Args) -> Values:
        """Manufacturing tokens are write-once; this NCP only lets the host set its custom EUI64."""
        if a["tokenId"] != bt.EzspMfgTokenId.MFG_CUSTOM_EUI_64 or self.state.custom_eui64 is not None:
            return {"status": bt.sl_Status.FAIL}
        data = bytes(a["tokenData"])
        if len(data) != 8:
            return {"status": bt.sl_Status.INVALID_PARAMETER}
        self.state.custom_eui64 = data[::-1].hex()
        self.flush()
        return {"status": OK}

    def _cmd_getTokenData(self, a: Args) -> Values:
        return {"status": bt.sl_Status.NOT_FOUND}  # no NV3 token access: bellows falls back to MFG tokens

    def _cmd_setTokenData(self, a: Args) -> Values:
        return {"status": bt.sl_Status.NOT_FOUND}

    def _cmd_customFrame(self, a: Args) -> Values:
        return {"status": bt.sl_Status.INVALID_STATE, "reply": b""}  # a stock image: no XNCP extensions

    def _value(self, value_id: bt.EzspValueId) -> bytes | None:
        vid = bt.EzspValueId
        major, minor, patch, special = STACK_RELEASES[self.version]
        computed = {
            vid.VALUE_VERSION_INFO: bytes([0, 0, major, minor, patch, special]),
            vid.VALUE_FREE_BUFFERS: bytes([FREE_BUFFERS]),
            vid.VALUE_NWK_FRAME_COUNTER: self.state.nwk_frame_counter.to_bytes(4, "little"),
            vid.VALUE_APS_FRAME_COUNTER: self.state.aps_frame_counter.to_bytes(4, "little"),
            vid.VALUE_NODE_SHORT_ID: (self.nwk if self.network_up else NULL_NODE_ID).to_bytes(2, "little"),
            vid.VALUE_MAXIMUM_INCOMING_TRANSFER_SIZE: zdo.MAX_TRANSFER_SIZE.to_bytes(2, "little"),
            vid.VALUE_MAXIMUM_OUTGOING_TRANSFER_SIZE: zdo.MAX_TRANSFER_SIZE.to_bytes(2, "little"),
            vid.VALUE_STACK_TOKEN_WRITING: b"\x01",
            vid.VALUE_FORCE_TX_AFTER_FAILED_CCA_ATTEMPTS: b"\x00",
        }
        if value_id in self.values:
            return self.values[value_id]
        return computed.get(value_id)

    def _cmd_getValue(self, a: Args) -> Values:
        value = self._value(a["valueId"])
        if value is None:
            return {"status": bt.sl_Status.INVALID_PARAMETER, "value": b""}
        return {"status": OK, "value": value}

    def _cmd_setValue(self, a: Args) -> Values:
        value_id, value = a["valueId"], bytes(a["value"])
        counters = {
            bt.EzspValueId.VALUE_NWK_FRAME_COUNTER: "nwk_frame_counter",
            bt.EzspValueId.VALUE_APS_FRAME_COUNTER: "aps_frame_counter",
        }
        if value_id in counters:
            if self.network_up:
                return {"status": bt.sl_Status.INVALID_STATE}  # only before forming or joining
            if len(value) != 4:
                return {"status": bt.sl_Status.INVALID_PARAMETER}
            setattr(self.state, counters[value_id], int.from_bytes(value, "little"))
            return {"status": OK}
        if value_id in (bt.EzspValueId.VALUE_VERSION_INFO, bt.EzspValueId.VALUE_FREE_BUFFERS):
            return {"status": bt.sl_Status.INVALID_PARAMETER}  # read-only
        self.values[value_id] = value
        return {"status": OK}

    def _cmd_getConfigurationValue(self, a: Args) -> Values:
        config_id = a["configId"]
        if config_id not in set(bt.EzspConfigId):
            return {"status": bt.sl_Status.INVALID_PARAMETER, "value": 0}
        return {"status": OK, "value": self.config.get(config_id, 0)}

    def _cmd_setConfigurationValue(self, a: Args) -> Values:
        config_id, value = a["configId"], a["value"]
        if config_id not in set(bt.EzspConfigId):
            return {"status": bt.sl_Status.INVALID_PARAMETER}
        if self.network_up:
            return {"status": bt.sl_Status.INVALID_STATE}  # the stack sizes its tables once, at init
        if config_id == _C.CONFIG_KEY_TABLE_SIZE and value > KEY_TABLE_SIZE:
            return {"status": bt.sl_Status.FAIL}
        self.config[config_id] = value
        return {"status": OK}

    def _cmd_setPolicy(self, a: Args) -> Values:
        self.policies[a["policyId"]] = int(a["decisionId"])
        return {"status": OK}

    def _cmd_getPolicy(self, a: Args) -> Values:
        return {"status": OK, "decisionId": self.policies.get(a["policyId"], 0)}

    def _cmd_addEndpoint(self, a: Args) -> Values:
        endpoint = a["endpoint"]
        if self.network_up or endpoint in self.endpoints or not 1 <= endpoint <= 254:
            return {"status": bt.sl_Status.INVALID_STATE}
        # bellows' table gives the cluster lists as one run of u16s; the counts say where they split.
        clusters = list(a["inputClusterList"]) + list(a["outputClusterList"])
        n_in, n_out = a["inputClusterCount"], a["outputClusterCount"]
        if len(clusters) != n_in + n_out:
            return {"status": bt.sl_Status.INVALID_PARAMETER}
        self.endpoints[endpoint] = zdo_t.SimpleDescriptor(
            endpoint=endpoint,
            profile=a["profileId"],
            device_type=a["deviceId"],
            device_version=a["deviceVersion"],
            input_clusters=clusters[:n_in],
            output_clusters=clusters[n_in:],
        )
        return {"status": OK}

    def _cmd_setManufacturerCode(self, a: Args) -> Values:
        self.manufacturer_code = a["code"]
        return {"status": OK} if self._v14() else {}

    def _cmd_setRadioPower(self, a: Args) -> Values:
        self.state.tx_power = a["power"] & 0xFF
        self._persist_soon()
        return {"status": OK}

    def _counter_values(self) -> list[int]:
        return [min(self._stack_counters[kind], 0xFFFF) for kind in bt.EmberCounterType]

    def _cmd_readCounters(self, a: Args) -> Values:
        return {"values": self._counter_values()}

    def _cmd_readAndClearCounters(self, a: Args) -> Values:
        values = self._counter_values()
        self._stack_counters.clear()
        return {"values": values}

    def _cmd_maximumPayloadLength(self, a: Args) -> Values:
        return {"apsLength": MAX_APS_PAYLOAD}

    def _cmd_permitJoining(self, a: Args) -> Values:
        duration = a["duration"]
        loop = asyncio.get_running_loop()
        self.permit_until = loop.time() + (float("inf") if duration == 0xFF else duration)
        if duration:
            self.joining_permitted.set()
        else:
            self.joining_permitted.clear()
        return {"status": OK}

    def _cmd_tokenFactoryReset(self, a: Args) -> Values:
        """Erases the network tokens; the chip keeps running until the reset the host sends next."""
        self.state.forget_network(keep_frame_counters=bool(a["excludeOutgoingFC"]))
        self._set_network_up(False)
        self.flush()
        return {}

    # -- network ----------------------------------------------------------------------------------------------

    def _cmd_networkState(self, a: Args) -> Values:
        status = bt.EmberNetworkStatus
        return {"status": status.JOINED_NETWORK if self.network_up else status.NO_NETWORK}

    def _set_network_up(self, up: bool) -> None:
        self.network_up = up
        if up:
            self.network_ready.set()
        else:
            self.network_ready.clear()

    def _network_up(self) -> None:
        self._set_network_up(True)
        self._emit_soon("stackStatusHandler", {"status": bt.sl_Status.NETWORK_UP})

    def _cmd_networkInit(self, a: Args) -> Values:
        if self.network_up:
            return {"status": bt.sl_Status.INVALID_STATE}
        if not self.state.formed:
            return {"status": bt.sl_Status.NOT_JOINED}
        self._network_up()
        return {"status": OK}

    def _cmd_formNetwork(self, a: Args) -> Values:
        params: bt.EmberNetworkParameters = a["parameters"]
        security = self.pending_security
        if self.network_up or security is None:
            return {"status": bt.sl_Status.INVALID_STATE}
        if not 11 <= params.radioChannel <= 26:
            return {"status": bt.sl_Status.INVALID_PARAMETER}
        if self.air.node(COORDINATOR_NWK) not in (None, self):
            return {"status": bt.sl_Status.FAIL}  # one air, one NWK address space: another network owns 0x0000
        state = self.state
        self._leave_air()
        state.node_type = int(bt.EmberNodeType.COORDINATOR)
        state.formed = True
        state.channel = params.radioChannel
        state.pan_id = params.panId
        state.extended_pan_id = NetworkState.ieee_text(zt.EUI64(params.extendedPanId))
        state.tx_power = params.radioTxPower
        state.nwk_update_id = 0  # EmberZNet ignores nwkUpdateId when forming
        state.nwk_manager_id = self.nwk
        state.channel_mask = int(params.channels) or (1 << params.radioChannel)
        state.network_key = bytes(security.networkKey).hex()
        state.network_key_seq = security.networkKeySequenceNumber
        state.tc_link_key = bytes(security.preconfiguredKey).hex()
        state.tc_link_rx_counter = 0
        state.trust_centre_eui64 = None  # this node is the trust centre
        state.security_bitmask = int(security.bitmask)
        self.flush()
        self._place_on_air()
        self._network_up()
        return {"status": OK}

    def _cmd_leaveNetwork(self, a: Args) -> Values:
        if not self.network_up:
            return {"status": bt.sl_Status.INVALID_STATE}
        self._set_network_up(False)
        joined = not self.is_trust_centre
        self.state.forget_network()
        self.flush()
        if joined:
            self._leave_air()
            self._place_on_air()
        self._emit_soon("stackStatusHandler", {"status": bt.sl_Status.NETWORK_DOWN})
        return {"status": OK}

    def network_parameters(self) -> bt.EmberNetworkParameters:
        state = self.state
        return bt.EmberNetworkParameters(
            extendedPanId=bt.ExtendedPanId(bytes.fromhex(state.extended_pan_id)[::-1]),
            panId=state.pan_id,
            radioTxPower=state.tx_power,
            radioChannel=state.channel,
            joinMethod=bt.EmberJoinMethod.USE_MAC_ASSOCIATION,
            nwkManagerId=state.nwk_manager_id,
            nwkUpdateId=state.nwk_update_id,
            channels=bt.Channels(state.channel_mask),
        )

    def _cmd_getNetworkParameters(self, a: Args) -> Values:
        if not self.network_up:
            return {"status": bt.sl_Status.NOT_JOINED, "nodeType": bt.EmberNodeType.UNKNOWN_DEVICE}
        return {"status": OK, "nodeType": self.node_type, "parameters": self.network_parameters()}

    def _cmd_setInitialSecurityState(self, a: Args) -> Values:
        if self.network_up:
            return {"status": bt.sl_Status.INVALID_STATE}
        self.pending_security = a["state"]
        return {"status": OK}

    def _cmd_getCurrentSecurityState(self, a: Args) -> Values:
        if not self.network_up:
            return {"status": bt.sl_Status.NOT_JOINED}
        initial = bt.EmberInitialSecurityBitmask(self.state.security_bitmask)
        current = bt.EmberCurrentSecurityBitmask
        bitmask = current.HAVE_TRUST_CENTER_LINK_KEY
        if bt.EmberInitialSecurityBitmask.TRUST_CENTER_GLOBAL_LINK_KEY in initial:
            bitmask |= current.GLOBAL_LINK_KEY
        if bt.EmberInitialSecurityBitmask.TRUST_CENTER_USES_HASHED_LINK_KEY in initial:
            bitmask |= current.TRUST_CENTER_USES_HASHED_LINK_KEY
        trust_centre = self.state.trust_centre or self.ieee  # a joined node names its TC, the TC itself
        state = bt.EmberCurrentSecurityState(bitmask=bitmask, trustCenterLongAddress=trust_centre)
        return {"status": OK, "state": state}

    def _key_bytes(self, key_type: bt.SecurityManagerKeyType) -> bytes | None:
        if key_type == bt.SecurityManagerKeyType.NETWORK:
            return bytes.fromhex(self.state.network_key)
        if key_type == bt.SecurityManagerKeyType.TC_LINK:
            return bytes.fromhex(self.state.tc_link_key)
        return None

    def _cmd_exportKey(self, a: Args) -> Values:
        context = a["context"]
        key = self._key_bytes(context.core_key_type)
        status = OK if key is not None else bt.sl_Status.NOT_FOUND
        values = {"status": status, "key": bt.KeyData(key or bytes(16))}
        if self._v14():
            values["context"] = context
        return values

    def _cmd_getNetworkKeyInfo(self, a: Args) -> Values:
        info = bt.SecurityManagerNetworkKeyInfo(
            network_key_set=bt.Bool(self.network_up),
            alternate_network_key_set=bt.Bool.false,
            network_key_sequence_number=self.state.network_key_seq,
            alt_network_key_sequence_number=0,
            network_key_frame_counter=self.state.nwk_frame_counter,
        )
        return {"status": OK, "network_key_info": info}

    def _cmd_getKey(self, a: Args) -> Values:
        key_type, bits = a["keyType"], bt.EmberKeyStructBitmask
        if key_type == bt.EmberKeyType.CURRENT_NETWORK_KEY:
            key = bt.EmberKeyStruct(
                bitmask=bits.KEY_HAS_SEQUENCE_NUMBER | bits.KEY_HAS_OUTGOING_FRAME_COUNTER,
                type=key_type,
                key=bt.KeyData(bytes.fromhex(self.state.network_key)),
                outgoingFrameCounter=self.state.nwk_frame_counter,
                incomingFrameCounter=0,
                sequenceNumber=self.state.network_key_seq,
                partnerEUI64=ZERO_EUI64,
            )
        elif key_type == bt.EmberKeyType.TRUST_CENTER_LINK_KEY:
            key = bt.EmberKeyStruct(
                bitmask=bits.KEY_HAS_OUTGOING_FRAME_COUNTER | bits.KEY_HAS_PARTNER_EUI64,
                type=key_type,
                key=bt.KeyData(bytes.fromhex(self.state.tc_link_key)),
                outgoingFrameCounter=self.state.aps_frame_counter,
                incomingFrameCounter=self.state.tc_link_rx_counter,
                sequenceNumber=0,
                partnerEUI64=self.state.trust_centre or self.ieee,
            )
        else:
            return {"status": bt.sl_Status.NOT_FOUND}
        return {"status": OK, "keyStruct": key}

    # -- scanning -----------------------------------------------------------------------------------------------

    def _cmd_startScan(self, a: Args) -> Values:
        """An energy scan reports a quiet channel everywhere (the air has no interference model); an active scan
        reports the beacons of the networks on the air (`joining`)."""
        scan_type = a["scanType"]
        if scan_type == bt.EzspNetworkScanType.ENERGY_SCAN:
            for channel in a["channelMask"]:
                rssi = self._rng.randint(-95, -80)
                self._emit_soon("energyScanResultHandler", {"channel": channel, "maxRssiValue": rssi})
        elif scan_type == bt.EzspNetworkScanType.ACTIVE_SCAN:
            for beacon in beacons(self.air, exclude=self):
                if beacon.channel in a["channelMask"]:
                    values = {"networkFound": beacon.network(), "lastHopLqi": 255, "lastHopRssi": -40}
                    self._emit_soon("networkFoundHandler", values)
        else:
            return {"status": bt.sl_Status.INVALID_PARAMETER}
        self._emit_soon("scanCompleteHandler", {"channel": 0, "status": OK})
        return {"status": OK}
