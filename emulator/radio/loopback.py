"""The CHF's radio for in-process runs: a zigpy `ControllerApplication` whose "radio" is the virtual air.

Every abstract method of zigpy's radio API is implemented, so zigpy forms the network, admits joins, interviews
devices and runs its own OTA code (`update_firmware`) exactly as it does on a USB stick. The app is the
coordinator node (NWK 0x0000) on an `Air`: `send_packet` puts frames on the air, frames from the air enter
through `packet_received` (where `HostMixin` offers them to the CHF first), and joins on the air become zigpy
`handle_join` calls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from typing import Any

import zigpy.application
import zigpy.config
import zigpy.device
import zigpy.endpoint
import zigpy.exceptions
import zigpy.state
import zigpy.types as t
import zigpy.util
import zigpy.zdo.types as zdo_t
from zigpy.profiles import zha

from emulator.eui64 import Eui64Key, eui64_key
from emulator.radio.air import COORDINATOR_NWK, Air
from emulator.radio.host import ZIGPY_BASE_CONFIG, HostMixin

LOGGER = logging.getLogger(__name__)

# zigpy sets EUI64.UNKNOWN after the class, where a type checker does not see it.
UNKNOWN_IEEE: t.EUI64 = t.EUI64.UNKNOWN  # type: ignore[attr-defined]

COORDINATOR_NODE_DESCRIPTOR = zdo_t.NodeDescriptor(
    logical_type=zdo_t.LogicalType.Coordinator,
    complex_descriptor_available=0,
    user_descriptor_available=0,
    reserved=0,
    aps_flags=0,
    frequency_band=zdo_t.NodeDescriptor.FrequencyBand.Freq2400MHz,
    mac_capability_flags=(
        zdo_t.NodeDescriptor.MACCapabilityFlags.AlternatePanCoordinator
        | zdo_t.NodeDescriptor.MACCapabilityFlags.FullFunctionDevice
        | zdo_t.NodeDescriptor.MACCapabilityFlags.MainsPowered
        | zdo_t.NodeDescriptor.MACCapabilityFlags.RxOnWhenIdle
        | zdo_t.NodeDescriptor.MACCapabilityFlags.AllocateAddress
    ),
    manufacturer_code=0x1234,
    maximum_buffer_size=82,
    maximum_incoming_transfer_size=82,
    server_mask=0x2C41,
    maximum_outgoing_transfer_size=82,
    descriptor_capability_field=zdo_t.NodeDescriptor.DescriptorCapability.NONE,
)


def loopback_config(
    *, ieee: t.EUI64, channel: int, pan_id: int, extended_pan_id: t.EUI64, network_key: bytes, **extra: Any
) -> dict[str, Any]:
    """zigpy config for a loopback CHF network with fixed parameters, so runs are reproducible."""
    config: dict[str, Any] = {
        **ZIGPY_BASE_CONFIG,
        "device": {"path": "/dev/null"},
        "network": {
            "channel": channel,
            "pan_id": pan_id,
            "extended_pan_id": t.ExtendedPanId(bytes(extended_pan_id)),
            "key": t.KeyData(network_key),
            "tc_address": str(ieee),
        },
    }
    config.update(extra)
    return config


def _frozen(value: Any) -> Hashable:
    """A config as a key that tells apart any two configs zigpy's schema could treat differently (types and all);
    TypeError for one holding something unhashable."""
    if type(value) is dict:
        return (dict, tuple((key, _frozen(item)) for key, item in value.items()))
    if isinstance(value, list | tuple):  # zigpy's EUI64, KeyData, ExtendedPanId are lists too
        return (type(value), tuple(_frozen(item) for item in value))
    key = (type(value), value)
    hash(key)
    return key


def _copied(value: Any) -> Any:
    """A validated config with fresh dicts and lists (its leaves are immutable values or zigpy types)."""
    if type(value) is dict:
        return {key: _copied(item) for key, item in value.items()}
    if type(value) is list:
        return [_copied(item) for item in value]
    return value


# Distinct configs a process keeps validated (a run uses one; tests a few dozen).
_MAX_CONFIGS = 64


class _ValidatedOnce:
    """zigpy's config schema, run once per distinct config: a conformance run starts a loopback app for every
    check, with the same config each time, and validating it cost more than the rest of starting the app. Each
    app still gets a config of its own."""

    def __init__(self, schema: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self._schema = schema
        self._validated: dict[Hashable, dict[str, Any]] = {}

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        try:
            key = _frozen(config)
        except TypeError:
            return self._schema(config)
        validated = self._validated.get(key)
        if validated is None:
            if len(self._validated) >= _MAX_CONFIGS:
                self._validated.clear()
            validated = self._validated[key] = self._schema(config)
        copy: dict[str, Any] = _copied(validated)
        return copy


class LoopbackApp(HostMixin, zigpy.application.ControllerApplication):
    """A zigpy coordinator on the virtual air."""

    SCHEMA = _ValidatedOnce(zigpy.config.CONFIG_SCHEMA)  # type: ignore[assignment]  # zigpy only calls it
    rx_on_when_idle = True
    router = True

    def __init__(self, config: dict[str, Any], *, air: Air, ieee: t.EUI64) -> None:
        self._loopback_ieee = ieee
        super().__init__(config)
        self.air = air
        self._stored: tuple[zigpy.state.NetworkInfo, zigpy.state.NodeInfo] | None = None
        # Devices by NWK address, checked at each use (a device may change address or leave).
        self._by_nwk: dict[int, tuple[zigpy.device.BaseDevice, Eui64Key]] = {}

    @classmethod
    async def start_on(cls, air: Air, config: dict[str, Any], ieee: t.EUI64) -> LoopbackApp:
        """Create, form the network and start: the app is joinable and on the air when this returns."""
        app = cls(config, air=air, ieee=ieee)
        await app.startup(auto_form=True)
        return app

    # -- node on the air ----------------------------------------------------------------------------------

    @property
    def nwk(self) -> int:
        return COORDINATOR_NWK

    @property
    def ieee(self) -> t.EUI64:
        return self._loopback_ieee

    def receive(self, packet: t.ZigbeePacket) -> None:
        self.packet_received(packet)

    def device_joined(self, nwk: int, ieee: t.EUI64, parent_nwk: int) -> None:
        self.handle_join(t.NWK(nwk), ieee, t.NWK(parent_nwk))

    def get_device(self, ieee: t.EUI64 | None = None, nwk: t.NWK | int | None = None) -> zigpy.device.BaseDevice:
        """zigpy's look-up, with an index by NWK address: zigpy finds a device by NWK by scanning them all, for
        every frame it handles, and a thousand devices' interviews are tens of thousands of frames."""
        if ieee is not None or nwk is None:
            return super().get_device(ieee=ieee, nwk=nwk)  # type: ignore[arg-type]  # zigpy's defaults are None too
        known = self._by_nwk.get(nwk)
        if known is not None and known[0].nwk == nwk and self.devices.get(known[1]) is known[0]:
            return known[0]
        device = super().get_device(nwk=nwk)
        self._by_nwk[int(nwk)] = (device, eui64_key(device.ieee))
        return device

    # -- zigpy radio API ----------------------------------------------------------------------------------

    async def connect(self) -> None:
        self.air.attach(self)
        self.air.add_join_listener(self)

    async def disconnect(self) -> None:
        self.air.detach(self)

    async def start_network(self) -> None:
        await self.load_network_info()
        node = self.state.node_info
        dev = self.add_device(node.ieee, node.nwk)
        dev.node_desc = COORDINATOR_NODE_DESCRIPTOR
        ep = dev.add_endpoint(1)
        ep.status = zigpy.endpoint.Status.ZDO_INIT
        ep.profile_id = zha.PROFILE_ID
        ep.device_type = zha.DeviceType.IAS_CONTROL
        dev.model = "CHF loopback"
        dev.manufacturer = "ota-emu"

    async def force_remove(self, dev: zigpy.device.Device) -> None:
        return None

    async def add_endpoint(self, descriptor: zdo_t.SimpleDescriptor) -> None:
        return None

    async def permit_ncp(self, time_s: int = 60) -> None:
        return None

    async def permit_with_link_key(self, node: t.EUI64, link_key: t.KeyData, time_s: int = 60) -> None:
        return None

    async def write_network_info(
        self, *, network_info: zigpy.state.NetworkInfo, node_info: zigpy.state.NodeInfo
    ) -> None:
        if node_info.ieee == UNKNOWN_IEEE:
            node_info = node_info.replace(ieee=self._loopback_ieee)
        self._stored = (network_info, node_info.replace(nwk=t.NWK(COORDINATOR_NWK)))

    async def load_network_info(self, *, load_devices: bool = False) -> None:
        if self._stored is None:
            raise zigpy.exceptions.NetworkNotFormed("the loopback radio holds no network")
        self.state.network_info, self.state.node_info = self._stored

    async def reset_network_info(self) -> None:
        self._stored = None

    async def energy_scan(self, channels: t.Channels, duration_exp: int, count: int) -> dict[int, float]:
        # The virtual air is quiet on every channel.
        return dict.fromkeys(channels, 0.0)

    def transmit(self, packet: t.ZigbeePacket) -> None:
        # The air is synchronous to hand a frame to: no task per frame on the OTA hot path.
        self._tap(packet)
        self.air.send(packet)

    async def send_packet(self, packet: t.ZigbeePacket) -> None:
        self._tap(packet)
        dst = packet.dst
        if self.air.send(packet) or dst is None or dst.addr_mode not in (t.AddrMode.NWK, t.AddrMode.IEEE):
            return
        address: Any = dst.address
        known = self.air.node_by_ieee(address) if dst.addr_mode == t.AddrMode.IEEE else self.air.node(address)
        # A lost frame is only reported when the sender asked for an APS ACK; an unknown node always is.
        if known is None or packet.tx_options & t.TransmitOptions.ACK:
            raise zigpy.exceptions.DeliveryError(f"no delivery to {address}")
