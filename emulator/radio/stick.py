"""An emulated device's radio on an EZSP stick: the host side of a Silicon Labs NCP in its joining role.

bellows' `ControllerApplication` only forms and coordinates networks, so this drives bellows' EZSP protocol layer
(`bellows.ezsp.EZSP`: the same ASH link, version negotiation and per-version command tables, and its
version-independent `send_unicast` / `send_broadcast` / `initialize_network` wrappers) directly, for what a
joining node needs (UG100): configuration, endpoint registration, networkInit (resume from the stick's tokens),
setInitialSecurityState + joinNetwork, pollForData for a sleepy device, sendUnicast / sendBroadcast /
sendMulticast, and incomingMessageHandler. It implements `DeviceRadio`, so `EmulatedDevice` runs on it unchanged.

The stick answers Node_Desc and the address requests itself (as every EmberZNet NCP does); the emulated device
answers the endpoint requests (APP_HANDLES_ZDO_ENDPOINT_REQUESTS) and unsupported ones, with the same bytes as
on the virtual air.

Security: by default the stick joins with the Zigbee 3.0 well-known trust-centre link key. A Smart Energy device
joins with the key derived from its install code instead (`JoinPlan.link_key`, given as a function of the stick's
EUI-64 when the install code is derived from it); after its CBKE the host installs the new link key in the NCP
(`install_link_key`), or the stick's own CBKE library computes and stores it (the host runs its commands with
`command` and awaits their callbacks with `expect`); `StickSecurity` decides which frames go APS-encrypted and
which received ones are refused.

One stick is one node (one EUI-64, one NWK address): it carries one emulated device.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import bellows.ezsp
import bellows.types as bt
import serialx
import zigpy.config
import zigpy.exceptions
import zigpy.types as t

from emulator.chf.node import RadioError, _check_port, _reason, waited
from emulator.ncp.joining import WELL_KNOWN_LINK_KEY
from emulator.radio.air import Node
from emulator.radio.secure import IngressHandler
from emulator.radio.stick_security import StickSecurity

LOGGER = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 5.0
JOIN_ATTEMPT_TIMEOUT = 5.0
JOIN_RETRY_DELAY = 1.0
RECONNECT_DELAYS = (0.2, 1.0, 2.0, 5.0)
NULL_NWK = 0xFFFF
_ZDO_FLAGS = bt.EmberZdoConfigurationFlags
# The device answers endpoint requests (and unsupported ones) itself, byte for byte as on the virtual air.
ZDO_FLAGS = _ZDO_FLAGS.APP_HANDLES_ZDO_ENDPOINT_REQUESTS | _ZDO_FLAGS.APP_HANDLES_UNSUPPORTED_ZDO_REQUESTS

Tap = Callable[[t.ZigbeePacket, float], None]
Listener = Callable[[str], None]
#: The preconfigured link key the stick joins with: the key itself, or how to make it from the stick's EUI-64.
JoinKey = bytes | Callable[[t.EUI64], bytes]


class KeyRefusedError(RadioError):
    """A network answered the join, but its trust centre sent no network key the stick's link key opens: it does
    not hold that key (a Smart Energy trust centre: not the device's install code)."""


class Role(enum.Enum):
    """How the stick joins: the node type it asks its parent for (UG100 EmberNodeType)."""

    END_DEVICE = "end-device"
    SLEEPY = "sleepy"
    ROUTER = "router"

    @property
    def node_type(self) -> bt.EmberNodeType:
        return {
            Role.END_DEVICE: bt.EmberNodeType.END_DEVICE,
            Role.SLEEPY: bt.EmberNodeType.SLEEPY_END_DEVICE,
            Role.ROUTER: bt.EmberNodeType.ROUTER,
        }[self]


@dataclass(frozen=True, slots=True)
class JoinPlan:
    """Which network to join and how; None leaves the choice to the stick's scan (any network open for joining)."""

    role: Role
    channel: int | None = None
    pan_id: int | None = None
    extended_pan_id: t.EUI64 | None = None
    join_timeout: float = 60.0
    link_key: JoinKey = WELL_KNOWN_LINK_KEY

    def parameters(self) -> bt.EmberNetworkParameters:
        channel = self.channel or 0
        return bt.EmberNetworkParameters(
            extendedPanId=bt.ExtendedPanId(bytes(self.extended_pan_id) if self.extended_pan_id else bytes(8)),
            panId=self.pan_id if self.pan_id is not None else 0xFFFF,
            radioTxPower=8,
            radioChannel=channel,
            joinMethod=bt.EmberJoinMethod.USE_MAC_ASSOCIATION,
            nwkManagerId=0,
            nwkUpdateId=0,
            channels=bt.Channels.from_channel_list([channel] if channel else range(11, 27)),
        )

    def key_for(self, ieee: t.EUI64) -> bytes:
        """The preconfigured link key of the stick whose EUI-64 is `ieee`."""
        return self.link_key if isinstance(self.link_key, bytes) else self.link_key(ieee)

    def security(self, ieee: t.EUI64) -> bt.EmberInitialSecurityState:
        """The join's security (UG100 setInitialSecurityState): a preconfigured key, and the network key only under
        it (a key sent in the clear is refused)."""
        bits = bt.EmberInitialSecurityBitmask
        return bt.EmberInitialSecurityState(
            bitmask=bits.HAVE_PRECONFIGURED_KEY | bits.REQUIRE_ENCRYPTED_KEY,
            preconfiguredKey=bt.KeyData(self.key_for(ieee)),
            networkKey=bt.KeyData(bytes(16)),
            networkKeySequenceNumber=0,
            preconfiguredTrustCenterEui64=bt.EUI64.convert("00:00:00:00:00:00:00:00"),
        )


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The device's application endpoint, registered with the stick."""

    endpoint: int
    profile_id: int
    device_id: int
    in_clusters: tuple[int, ...]
    out_clusters: tuple[int, ...]
    manufacturer_code: int


@dataclass(frozen=True, slots=True)
class Joined:
    """Where the stick is on the network."""

    nwk: int
    ieee: t.EUI64
    pan_id: int
    channel: int
    resumed: bool


def _ok(status: Any) -> bool:
    return bool(bt.sl_Status.from_ember_status(status) == bt.sl_Status.OK)


class StickRadio:
    """One emulated device's radio on an EZSP stick at `port` (a serial device or tcp://HOST:PORT)."""

    def __init__(
        self,
        port: str,
        plan: JoinPlan,
        *,
        baudrate: int = 115200,
        flow_control: str = "software",
        security: StickSecurity | None = None,
    ) -> None:
        self.port = port
        self.plan = plan
        self.security = security
        self.baudrate = baudrate
        self.flow_control = flow_control
        self.joined: Joined | None = None
        self.stats: dict[str, int] = {"sent": 0, "received": 0, "send_failures": 0, "polls": 0, "reconnects": 0}
        self._ezsp: bellows.ezsp.EZSP | None = None
        self._endpoint: Endpoint | None = None
        self._node: Node | None = None
        self._taps: list[Tap] = []
        self._ingress: list[IngressHandler] = []
        self._listeners: list[Listener] = []
        self._queue: asyncio.Queue[t.ZigbeePacket | None] = asyncio.Queue()
        self._queued = self._handled = 0  # frames (and polls) handed to the send loop, and those it is done with
        self._handled_one = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._closing = False
        self._open = False  # set once `open` has succeeded: only then does a lost link mean "reconnect"
        self._tag = 0
        self._incoming_fields: list[str] = []
        self._expected: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}  # callbacks awaited by name (`expect`)

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def open(self, endpoint: Endpoint) -> Joined:
        """Connect, configure, and resume the stick's network or join one; RadioError (one line) when the port
        cannot be used or no network opens for joining within the plan's join timeout."""
        _check_port(self.port)
        self._endpoint = endpoint
        await self._connect()
        try:
            self.joined = await self._bring_up(first=True)
        except BaseException:
            await self._disconnect()
            raise
        self._worker = asyncio.get_running_loop().create_task(self._send_loop(), name=f"stick {self.port}")
        self._open = True
        return self.joined

    async def close(self) -> None:
        self._closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting
        if self._worker is not None:
            self._queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(COMMAND_TIMEOUT):
                    await self._worker
            self._worker.cancel()
        await self._disconnect()

    def add_listener(self, listener: Listener) -> None:
        """`listener(text)` hears what happens to the stick (a reset, a rejoin), one line each."""
        self._listeners.append(listener)

    def add_tap(self, tap: Tap) -> None:
        """`tap(packet, loop_time)` sees every frame this radio sends and receives (for --pcap)."""
        self._taps.append(tap)

    def add_ingress_handler(self, handler: IngressHandler) -> Callable[[], None]:
        """Offer every accepted frame to `handler` before the device; True takes it (the Key Establishment client
        takes its cluster there). Returns the remover."""
        self._ingress.append(handler)
        return lambda: self._ingress.remove(handler)

    # -- Smart Energy security ------------------------------------------------------------------------------------

    async def trust_centre(self) -> t.EUI64:
        """The EUI-64 of the network's trust centre, as the NCP learnt it while joining (getCurrentSecurityState);
        the security state keeps it too (it names the sender of a refused frame)."""
        status, state = await self._command("getCurrentSecurityState")
        if not _ok(status):
            raise RadioError(f"{self.port}: the stick did not give its security state ({status!r})")
        trust_centre = t.EUI64(state.trustCenterLongAddress)
        if self.security is not None:
            self.security.trust_centre = trust_centre
        return trust_centre

    async def install_link_key(self, trust_centre: t.EUI64, key: bytes) -> None:
        """Make `key` the link key the NCP uses with the trust centre: `addOrUpdateKeyTableEntry` where the EZSP
        version has it (v4 to v12), else the security manager's `importKey` with the TC_LINK context (v13 on,
        which dropped the key-table commands; bellows reads the TC link key back the same way). RadioError when
        the NCP refuses it."""
        if self.has_command("addOrUpdateKeyTableEntry"):
            (status,) = await self._command(
                "addOrUpdateKeyTableEntry", address=trust_centre, linkKey=True, keyData=bt.KeyData(key)
            )
        else:
            context = bt.SecurityManagerContextV13(
                core_key_type=bt.SecurityManagerKeyType.TC_LINK,
                key_index=0,
                derived_type=bt.SecurityManagerDerivedKeyTypeV13.NONE,
                eui64=trust_centre,
                multi_network_index=0,
                flags=bt.SecurityManagerContextFlags.EUI_IS_VALID,
                psa_key_alg_permission=0,
            )
            status, *_ = await self._command("importKey", context=context, key=bt.KeyData(key))
        if not _ok(status):
            raise RadioError(f"{self.port}: the stick refused the trust centre's link key ({status!r})")
        if self.security is not None:
            self.security.link_key_in_use = True

    # -- EZSP, for what runs in the NCP (its CBKE library) ------------------------------------------------------

    def has_command(self, name: str) -> bool:
        """Does the stick's EZSP version have the command (or callback) `name`, as bellows' tables name it?"""
        return self._ezsp is not None and name in self._ezsp._protocol.COMMANDS

    async def command(self, name: str, **kwargs: Any) -> dict[str, Any]:
        """The EZSP command `name` (bellows' name and parameter names), its answer by field name (the order of
        fields changes between protocol versions). RadioError when the stick is away or does not answer."""
        ezsp = self._ezsp
        if ezsp is None or not self.has_command(name):
            raise RadioError(f"{self.port}: the stick cannot run {name} (not connected, or not in its EZSP version)")
        fields = list(ezsp._protocol.COMMANDS[name][2])
        try:
            values = await self._command(name, **kwargs)
        except (TimeoutError, bellows.ezsp.EzspError, zigpy.exceptions.ZigbeeException) as exc:
            raise RadioError(f"{self.port}: {name} got no answer ({_reason(exc) or type(exc).__name__})") from None
        return dict(zip(fields, values, strict=True))

    def expect(self, name: str) -> asyncio.Future[dict[str, Any]]:
        """The next EZSP callback `name`, its values by field name. Ask before sending the command that causes it
        (the callback may come right behind the command's answer); cancel the future to stop waiting."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._expected.setdefault(name, []).append(future)
        return future

    # -- DeviceRadio --------------------------------------------------------------------------------------------

    def join(self, node: Node, parent_nwk: int = 0) -> None:
        self._node = node

    def detach(self, node: Node) -> None:
        if self._node is node:
            self._node = None

    def send(self, packet: t.ZigbeePacket) -> bool:
        self._queued += 1
        self._queue.put_nowait(packet)
        return True

    def poll(self, nwk: int) -> int:
        if self.plan.role == Role.SLEEPY and not self._closing:
            self._queued += 1
            self._queue.put_nowait(_POLL)
        return 0

    async def sent(self, within: float) -> bool:
        """Wait until everything handed to `send` so far has gone to the stick (sent or failed), for at most
        `within` seconds: a run that ends on its outcome lets its last frames go out, and no longer than that
        takes. True when all did."""
        target = self._queued
        try:
            async with asyncio.timeout(within):
                while self._handled < target:
                    self._handled_one.clear()
                    await self._handled_one.wait()
        except TimeoutError:
            return False
        return True

    def node(self, nwk: int) -> Node | None:
        node = self._node
        return node if node is not None and node.nwk == nwk else None

    # -- bellows' EZSP object calls these -----------------------------------------------------------------------

    def connection_lost(self, exc: Exception | None) -> None:
        """The stick reset or the link failed: reconnect, resume the network from the stick's tokens, and carry
        on (the device's OTA client resumes its download from its offset)."""
        if not self._open or self._closing or (self._reconnecting is not None and not self._reconnecting.done()):
            return
        self.stats["reconnects"] += 1
        self._tell(f"Stick on {self.port} lost ({_reason(exc) if exc else 'closed'}); reconnecting")
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    # -- internals: connection ----------------------------------------------------------------------------------

    async def _connect(self) -> None:
        config = zigpy.config.SCHEMA_DEVICE(
            {
                "path": self.port,
                "baudrate": self.baudrate,
                "flow_control": None if self.flow_control == "none" else self.flow_control,
            }
        )
        ezsp = bellows.ezsp.EZSP(config, application=self)
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT) as deadline:
                await ezsp.connect(use_thread=False)
        except TimeoutError:
            await _quietly(ezsp.disconnect())
            tried = waited(deadline, CONNECT_TIMEOUT, started)
            raise RadioError(
                f"{self.port}: no EZSP answer within {tried:g} s (tried ASH reset and EZSP version at "
                f"{self.baudrate} baud, flow control {self.flow_control}; is it a Silicon Labs NCP?)"
            ) from None
        except (OSError, serialx.SerialException, zigpy.exceptions.ZigbeeException) as exc:
            await _quietly(ezsp.disconnect())
            raise RadioError(f"{self.port}: cannot open the EZSP port ({_reason(exc)})") from None
        self._ezsp = ezsp
        _, _, rx_schema = ezsp._protocol.COMMANDS["incomingMessageHandler"]
        self._incoming_fields = list(rx_schema)
        ezsp.add_callback(self._callback)

    async def _disconnect(self) -> None:
        ezsp, self._ezsp = self._ezsp, None
        if ezsp is not None:
            await _quietly(ezsp.disconnect())

    async def _reconnect(self) -> None:
        attempt = 0
        while not self._closing:
            await self._disconnect()
            try:
                await self._connect()
                self.joined = await self._bring_up(first=False)
            except (RadioError, TimeoutError, bellows.ezsp.EzspError, zigpy.exceptions.ZigbeeException) as exc:
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                LOGGER.warning("stick %s: reconnect failed (%s); next try in %g s", self.port, exc, delay)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            self._tell(f"Stick on {self.port} back: NWK 0x{self.joined.nwk:04X} on PAN 0x{self.joined.pan_id:04X}")
            return

    async def _command(self, name: str, **kwargs: Any) -> Any:
        assert self._ezsp is not None
        async with asyncio.timeout(COMMAND_TIMEOUT):
            return await getattr(self._ezsp, name)(**kwargs)

    async def _configure(self) -> None:
        """What an NCP forgets at every reset (UG100): configuration, ZDO handling, the endpoint."""
        assert self._ezsp is not None and self._endpoint is not None
        await self._ezsp.write_config({"CONFIG_APPLICATION_ZDO_FLAGS": int(ZDO_FLAGS)})
        ep = self._endpoint
        await self._command("setManufacturerCode", code=ep.manufacturer_code)
        (status,) = await self._command(
            "addEndpoint",
            endpoint=ep.endpoint,
            profileId=ep.profile_id,
            deviceId=ep.device_id,
            deviceVersion=0,
            inputClusterCount=len(ep.in_clusters),
            outputClusterCount=len(ep.out_clusters),
            inputClusterList=list(ep.in_clusters),
            outputClusterList=list(ep.out_clusters),
        )
        if int(status) != 0:
            LOGGER.warning("stick %s: addEndpoint %d answered %r", self.port, ep.endpoint, status)

    async def _bring_up(self, *, first: bool) -> Joined:
        await self._configure()
        (ieee,) = await self._command("getEui64")
        resumed = await self._resume()
        if not resumed:
            if not first:
                raise RadioError(f"{self.port}: the stick lost its network")
            await self._join(t.EUI64(ieee))
        (nwk,) = await self._command("getNodeId")
        _, _, params = await self._command("getNetworkParameters")
        return Joined(nwk=nwk, ieee=t.EUI64(ieee), pan_id=params.panId, channel=params.radioChannel, resumed=resumed)

    async def _resume(self) -> bool:
        """networkInit: True when the stick is back in a network this plan accepts (same role and network)."""
        assert self._ezsp is not None
        with self._ezsp.wait_for_stack_status(bt.sl_Status.NETWORK_UP) as up:
            status = await self._ezsp.initialize_network()
            if status != bt.sl_Status.OK:
                return False
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await up
        _, node_type, params = await self._command("getNetworkParameters")
        if node_type == bt.EmberNodeType.COORDINATOR:
            raise RadioError(
                f"{self.port}: the stick is the coordinator of its own network (PAN 0x{params.panId:04X}); expected "
                "a stick that can join one (leave that network first, e.g. with bellows' `leave`)"
            )
        plan = self.plan
        same = node_type == plan.role.node_type and (
            plan.extended_pan_id is None or bytes(params.extendedPanId) == bytes(plan.extended_pan_id)
        )
        if not same:
            await self._ezsp.leaveNetwork()
        return same

    async def _join(self, ieee: t.EUI64) -> None:
        """setInitialSecurityState + joinNetwork until a network admits us or the join timeout passes."""
        assert self._ezsp is not None
        ezsp = self._ezsp
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.plan.join_timeout
        last = "no answer"
        while loop.time() < deadline:
            (status,) = await self._command("setInitialSecurityState", state=self.plan.security(ieee))
            if not _ok(status):
                raise RadioError(f"{self.port}: the stick refused the join security settings ({status!r})")
            outcome: asyncio.Future[Any] = loop.create_future()

            def heard(name: str, args: list[Any], outcome: asyncio.Future[Any] = outcome) -> None:
                if name == "stackStatusHandler" and not outcome.done():
                    outcome.set_result(bt.sl_Status.from_ember_status(args[0]))

            callback = ezsp.add_callback(heard)
            try:
                (status,) = await self._command(
                    "joinNetwork", nodeType=self.plan.role.node_type, parameters=self.plan.parameters()
                )
                if _ok(status):
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(min(JOIN_ATTEMPT_TIMEOUT, max(0.1, deadline - loop.time()))):
                            result = await outcome
                            if result == bt.sl_Status.NETWORK_UP:
                                return
                            last = result.name
                else:
                    last = repr(status)
            finally:
                ezsp.remove_callback(callback)
            await asyncio.sleep(min(JOIN_RETRY_DELAY, max(0.0, deadline - loop.time())))
        if last == bt.sl_Status.ZIGBEE_NO_NETWORK_KEY_RECEIVED.name:
            raise KeyRefusedError(
                f"{self.port}: no network let the stick join within {self.plan.join_timeout:g} s (last answer: "
                f"{last}: the trust centre sent no network key under the stick's link key)"
            )
        raise RadioError(
            f"{self.port}: no network let the stick join within {self.plan.join_timeout:g} s (last answer: {last}; "
            "permit joining on the network's coordinator, and check the channel / PAN ID options)"
        )

    def _tell(self, text: str) -> None:
        LOGGER.info("%s", text)
        for listener in self._listeners:
            listener(text)

    # -- internals: frames ---------------------------------------------------------------------------------------

    def _callback(self, name: str, args: list[Any]) -> None:
        if name in self._expected:
            self._fulfil(name, args)
        if name == "incomingMessageHandler":
            self._incoming(dict(zip(self._incoming_fields, args, strict=False)))
        elif name == "stackStatusHandler":
            status = bt.sl_Status.from_ember_status(args[0])
            if status == bt.sl_Status.NETWORK_DOWN and not self._closing:
                # Said, not mended: a stick that loses its parent without resetting is not rejoined here (a
                # reset, the common case, is: `connection_lost`).
                self._tell(f"Stick on {self.port}: network down")

    def _fulfil(self, name: str, args: list[Any]) -> None:
        """Hand callback `name` to the oldest `expect` still waiting for it."""
        waiting = [future for future in self._expected.pop(name) if not future.done()]
        if self._ezsp is not None and waiting:
            fields = list(self._ezsp._protocol.COMMANDS[name][2])
            waiting.pop(0).set_result(dict(zip(fields, args, strict=False)))
        if waiting:
            self._expected[name] = waiting

    def _incoming(self, values: dict[str, Any]) -> None:
        aps: bt.EmberApsFrame = values.get("aps_frame", values.get("apsFrame"))
        kind = values.get("message_type", values.get("type"))
        sender = values.get("nwk", values.get("sender"))
        message = bytes(values.get("message", values.get("messageContents", b"")))
        lqi = values.get("lqi", values.get("lastHopLqi"))
        rssi = values.get("rssi", values.get("lastHopRssi"))
        me = self.joined.nwk if self.joined is not None else NULL_NWK
        if kind == bt.EmberIncomingMessageType.INCOMING_MULTICAST:
            dst = t.AddrModeAddress(addr_mode=t.AddrMode.Group, address=aps.groupId)
        elif kind in (
            bt.EmberIncomingMessageType.INCOMING_BROADCAST,
            bt.EmberIncomingMessageType.INCOMING_BROADCAST_LOOPBACK,
        ):
            dst = t.AddrModeAddress(addr_mode=t.AddrMode.Broadcast, address=t.BroadcastAddress.RX_ON_WHEN_IDLE)
        else:
            dst = t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(me))
        encrypted = bool(aps.options & bt.EmberApsOption.APS_OPTION_ENCRYPTION)
        packet = t.ZigbeePacket(
            src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=sender),
            src_ep=aps.sourceEndpoint,
            dst=dst,
            dst_ep=aps.destinationEndpoint,
            tsn=aps.sequence,
            profile_id=aps.profileId,
            cluster_id=aps.clusterId,
            data=t.SerializableBytes(message),
            lqi=lqi,
            rssi=rssi,
            tx_options=t.TransmitOptions.APS_Encryption if encrypted else t.TransmitOptions.NONE,
        )
        self.stats["received"] += 1
        self._tap(packet)
        if self.security is not None and not self.security.admit(packet, encrypted):
            return
        for handler in self._ingress:
            if handler(packet):
                return
        node = self._node
        if node is not None:
            try:
                node.receive(packet)
            except Exception:  # a device bug must not take the radio down with it
                LOGGER.exception("device failed on a frame from 0x%04X", sender)

    def _tap(self, packet: t.ZigbeePacket) -> None:
        now = asyncio.get_running_loop().time()
        for tap in self._taps:
            tap(packet, now)

    async def _send_loop(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            try:
                await self._handle(item)
            finally:
                self._handled += 1
                self._handled_one.set()

    async def _handle(self, item: t.ZigbeePacket) -> None:
        if self._ezsp is None or not self._ezsp.is_ezsp_running or self._reconnecting_now():
            self.stats["send_failures"] += 1
            return  # the stick is away: the frame is lost, as on a link that drops it
        try:
            if item is _POLL:
                await self._poll_once()
            else:
                await self._send_one(item)
        except (TimeoutError, bellows.ezsp.EzspError, zigpy.exceptions.ZigbeeException) as exc:
            self.stats["send_failures"] += 1
            LOGGER.debug("stick %s: send failed (%s)", self.port, exc)

    def _reconnecting_now(self) -> bool:
        return self._reconnecting is not None and not self._reconnecting.done()

    async def _poll_once(self) -> None:
        self.stats["polls"] += 1
        with contextlib.suppress(Exception):  # bellows raises on MAC_NO_DATA: nothing was held, which is fine
            await self._command("pollForData", interval=0, units=bt.EmberEventUnits.EVENT_MS_TIME, failureLimit=0)

    async def _send_one(self, packet: t.ZigbeePacket) -> None:
        assert self._ezsp is not None
        options = bt.EmberApsOption.APS_OPTION_NONE
        if packet.tx_options & t.TransmitOptions.ACK:
            options |= bt.EmberApsOption.APS_OPTION_RETRY | bt.EmberApsOption.APS_OPTION_ENABLE_ROUTE_DISCOVERY
        if self.security is not None and self.security.encrypt(packet):
            options |= bt.EmberApsOption.APS_OPTION_ENCRYPTION
        dst = packet.dst
        assert dst is not None, "a device always addresses its frames"
        aps = bt.EmberApsFrame(
            profileId=packet.profile_id,
            clusterId=packet.cluster_id,
            sourceEndpoint=packet.src_ep or 0,
            destinationEndpoint=packet.dst_ep or 0,
            options=options,
            groupId=dst.address if dst.addr_mode == t.AddrMode.Group else 0,
            sequence=packet.tsn or 0,
        )
        data = packet.data.serialize()
        self._tag = (self._tag + 1) & 0xFF
        self._tap(packet)
        if dst.addr_mode == t.AddrMode.Group:
            status, _ = await self._command(
                "send_multicast", aps_frame=aps, radius=0, non_member_radius=3, message_tag=self._tag, data=data
            )
        elif dst.addr_mode == t.AddrMode.Broadcast or (
            dst.addr_mode == t.AddrMode.NWK and isinstance(dst.address, int) and dst.address >= 0xFFF8
        ):
            status, _ = await self._command(
                "send_broadcast",
                address=t.BroadcastAddress(dst.address),
                aps_frame=aps,
                radius=0,
                message_tag=self._tag,
                aps_sequence=packet.tsn or 0,
                data=data,
            )
        else:
            status, _ = await self._command(
                "send_unicast", nwk=t.NWK(dst.address), aps_frame=aps, message_tag=self._tag, data=data
            )
        if _ok(status):
            self.stats["sent"] += 1
        else:
            self.stats["send_failures"] += 1


# A queued poll request (sleepy devices) among the queued frames, so polls and sends keep their order.
_POLL: Any = object()


async def _quietly(coroutine: Any) -> None:
    try:
        await coroutine
    except Exception:  # cleaning up after a failure that is already being reported
        return
