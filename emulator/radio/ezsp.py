"""The CHF's radio on an EZSP coordinator: bellows' own `ControllerApplication` plus `HostMixin`.

Nothing in bellows is replaced: the same app drives a Silicon Labs USB stick or the virtual NCP, and the CHF
server attaches to it exactly as it does to the loopback app.
"""

from __future__ import annotations

from typing import Any, Protocol

import bellows.zigbee.application
import zigpy.types as t

from emulator.radio.host import ZIGPY_BASE_CONFIG, HostMixin

FLOW_CONTROL = ("hardware", "software", "none")


class ApsSecurity(Protocol):
    """Smart Energy APS security on the host (`chf.ezsp_security`): which frames ask the NCP for APS encryption,
    which received ones are refused."""

    def outgoing(self, packet: t.ZigbeePacket) -> t.ZigbeePacket: ...

    def accept(self, packet: t.ZigbeePacket) -> bool: ...


class EzspApp(HostMixin, bellows.zigbee.application.ControllerApplication):  # type: ignore[misc]  # bellows is untyped
    """bellows' EZSP coordinator with the CHF ingress hook and the SE-profile fix."""

    aps_security: ApsSecurity | None = None

    async def send_packet(self, packet: t.ZigbeePacket) -> None:
        if self.aps_security is not None:
            packet = self.aps_security.outgoing(packet)
        await super().send_packet(packet)

    def packet_received(self, packet: t.ZigbeePacket) -> None:
        if self.aps_security is not None and not self.aps_security.accept(packet):
            self._tap(packet)  # refused by the APS security rule, but it was received: a capture shows it
            return
        super().packet_received(packet)

    async def _reset(self) -> None:
        """bellows registers endpoints once, at connect; forming a network resets the NCP, and an NCP forgets
        its endpoints on reset (UG100 addEndpoint). Without this the freshly formed CHF answers Match_Desc for
        its OTA server with no endpoint until the next restart. Endpoints can be added while the network is down,
        which it is right after a reset."""
        await super()._reset()
        self._created_device_endpoints.clear()
        await self.register_endpoints()


def ezsp_config(
    *,
    path: str,
    baudrate: int = 115200,
    flow_control: str = "software",
    channel: int,
    pan_id: int,
    extended_pan_id: t.EUI64,
    network_key: bytes,
    **extra: Any,
) -> dict[str, Any]:
    """bellows config for the CHF: one event loop (no serial thread), no database, fixed network parameters
    used when the stick has to form a network."""
    config: dict[str, Any] = {
        **ZIGPY_BASE_CONFIG,
        "device": {
            "path": path,
            "baudrate": baudrate,
            "flow_control": None if flow_control == "none" else flow_control,
        },
        "use_thread": False,
        "network": {
            "channel": channel,
            "pan_id": pan_id,
            "extended_pan_id": t.ExtendedPanId(bytes(extended_pan_id)),
            "key": t.KeyData(network_key),
        },
    }
    config.update(extra)
    return config
