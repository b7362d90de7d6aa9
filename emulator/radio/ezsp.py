"""The CHF's radio on an EZSP coordinator: bellows' own `ControllerApplication` plus `HostMixin`.

Nothing in bellows is replaced: the same app drives a Silicon Labs USB stick or the virtual NCP, and the CHF
server attaches to it exactly as it does to the loopback app.
"""

from __future__ import annotations

from typing import Any

import bellows.zigbee.application
import zigpy.types as t

from emulator.radio.host import ZIGPY_BASE_CONFIG, HostMixin

FLOW_CONTROL = ("hardware", "software", "none")


class EzspApp(HostMixin, bellows.zigbee.application.ControllerApplication):  # type: ignore[misc]  # bellows is untyped
    """bellows' EZSP coordinator with the CHF ingress hook and the SE-profile fix."""

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
