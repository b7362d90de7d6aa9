"""What the CHF needs from any zigpy `ControllerApplication`, whichever radio sits below it.

Mixed into the loopback app and into bellows' EZSP app, so the CHF server is written once against zigpy's
radio API (ZIGPY_BELLOWS.md §2.4):

* **One ingress hook.** Every received packet is offered to the registered handlers first (the OTA server);
  a handler that takes the packet returns True and zigpy never sees it. This is what stops zigpy's own `Ota`
  cluster from answering NO_IMAGE_AVAILABLE to a device's Query Next Image, and zigpy's ZDO from answering
  an SE Match_Desc_req with "no match".
* **The Smart Energy fix.** zigpy parses ZCL only for the HA and ZLL profiles and silently drops 0x0109 frames
  (§1.2), so an SE device's interview times out and SE responses never resolve a request. The fix is applied
  here, at the one ingress point, by presenting SE ZCL frames to zigpy as HA ones: the ZCL bytes are identical,
  and unlike a `ZigbeeDevice` subclass created in `add_device` it also covers the shadow devices zigpy builds
  for re-interviews and clones. Handlers registered above see the packet with its real profile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import zigpy.exceptions
import zigpy.types as t
import zigpy.zdo.types as zdo_t
from zigpy.profiles import zha

from emulator.profiles import SMART_ENERGY_PROFILE

LOGGER = logging.getLogger(__name__)

IngressHandler = Callable[[t.ZigbeePacket], bool]
Tap = Callable[[t.ZigbeePacket, float], None]

# Endpoints zigpy registers on every coordinator (HA 1, ZLL 2, Green Power 242).
ZIGPY_ENDPOINTS = frozenset({1, 2, 242})

# Settings every emulator-hosted zigpy app needs: no database, no network fetches for OTA providers, no
# background jobs that would send unexpected frames during a test or a conformance run.
ZIGPY_BASE_CONFIG = {
    "database_path": None,
    "backup_enabled": False,
    "topology_scan_enabled": False,
    "watchdog_enabled": False,
    "ota": {"providers": [], "extra_providers": [], "broadcast_enabled": False},
}


class HostMixin:
    """Ingress hooks and the SE-profile fix for a zigpy `ControllerApplication` subclass."""

    # The CHF's own endpoint. On a real stick the NCP answers Match_Desc_req itself from the endpoints the host
    # registered, so the CHF's Smart Energy endpoint (with the OTA server cluster) must be registered there: it
    # takes the place of the zigpy endpoint of the same number, or is added beside them.
    chf_endpoint: zdo_t.SimpleDescriptor | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._ingress: list[IngressHandler] = []
        self._taps: list[Tap] = []
        self._sending: set[asyncio.Task[None]] = set()  # frames handed to `transmit` and not yet sent
        super().__init__(*args, **kwargs)

    async def add_endpoint(self, descriptor: zdo_t.SimpleDescriptor) -> None:
        chf = self.chf_endpoint
        if chf is not None and descriptor.endpoint == chf.endpoint:
            descriptor = chf
        await super().add_endpoint(descriptor)  # type: ignore[misc]

    async def register_endpoints(self) -> None:
        await super().register_endpoints()  # type: ignore[misc]
        chf = self.chf_endpoint
        if chf is not None and chf.endpoint not in ZIGPY_ENDPOINTS:
            await self.add_endpoint(chf)

    def add_tap(self, tap: Tap) -> Callable[[], None]:
        """`tap(packet, loop_time)` sees every frame the CHF's radio sends or receives (a capture on a real stick,
        where there is no virtual air to listen to); returns a function that removes it."""
        self._taps.append(tap)
        return lambda: self._taps.remove(tap)

    def _tap(self, packet: t.ZigbeePacket) -> None:
        taps = self._taps
        if taps:
            now = asyncio.get_running_loop().time()
            for tap in taps:
                tap(packet, now)

    async def send_packet(self, packet: t.ZigbeePacket) -> None:
        self._tap(packet)
        await super().send_packet(packet)  # type: ignore[misc]

    def add_ingress_handler(self, handler: IngressHandler) -> Callable[[], None]:
        """Offer every received packet to `handler` before zigpy; returns a function that removes it."""
        self._ingress.append(handler)
        return lambda: self._ingress.remove(handler)

    def transmit(self, packet: t.ZigbeePacket) -> None:
        """Send without waiting: the CHF answers from a synchronous ingress handler. A delivery failure is
        logged, not raised — the OTA client owns retries (it re-requests what it did not get)."""
        task = asyncio.get_running_loop().create_task(self.send_packet(packet))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        task.add_done_callback(_log_delivery_failure)

    async def sent(self, within: float) -> bool:
        """Wait until every frame handed to `transmit` so far has left the radio (delivered or failed), for at
        most `within` seconds: a run that ends on an outcome lets its last answer go out, and no longer than
        that takes. True when all did."""
        pending = set(self._sending)
        if not pending:
            return True
        _, late = await asyncio.wait(pending, timeout=within)
        return not late

    def packet_received(self, packet: t.ZigbeePacket) -> None:
        self._tap(packet)
        for handler in self._ingress:
            if handler(packet):
                return
        if packet.profile_id == SMART_ENERGY_PROFILE and packet.src_ep != 0 and packet.dst_ep != 0:
            packet = packet.replace(profile_id=zha.PROFILE_ID)
        super().packet_received(packet)  # type: ignore[misc]


def _log_delivery_failure(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if isinstance(exc, zigpy.exceptions.DeliveryError):
        LOGGER.debug("delivery failed: %s", exc)
    elif exc is not None:
        LOGGER.error("sending a frame failed", exc_info=exc)
