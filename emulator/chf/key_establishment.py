"""The CHF's Key Establishment cluster (0x0800) server: CBKE responder V for every device that asks.

An ingress handler on the CHF's zigpy app (beside the OTA server's) takes the cluster's frames on the SE profile
before zigpy sees them. It answers Match_Desc_req for 0x0800 and Read Attributes of KeyEstablishmentSuite
(0x0000), and drives one sans-IO `Responder` per initiating device (SE 07-5356 Annex C.3.1, C.4.2). When an
exchange ends, KeyData becomes the APS link key the CHF shares with that device (`SecurityContext`, origin CBKE),
so from then on its OTA frames are APS-encrypted; a failure sends the Terminate the responder chose. Both outcomes
are server events. Key Establishment itself travels with NWK security only (ZSE §5.4.6; its cluster is not in the
APS-encrypted list).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import zigpy.types as t
import zigpy.zdo.types as zdo_t

from emulator.chf.events import ServerEvent
from emulator.clock import Clock
from emulator.radio.secure import unicast
from emulator.security import key_establishment as ke
from emulator.security.certs import CryptoSuite, DeviceCredentials
from emulator.security.keystore import KeyOrigin, SecurityContext

ZDO_PROFILE = 0x0000
CLUSTER_SPECIFIC = 0x01
DIRECTION_TO_CLIENT = 0x08
DISABLE_DEFAULT_RESPONSE = 0x10
MANUFACTURER_SPECIFIC = 0x04
READ_ATTRIBUTES = 0x00
READ_ATTRIBUTES_RESPONSE = 0x01
DEFAULT_RESPONSE = 0x0B
ENUM16 = 0x31  # KeyEstablishmentSuite is a 16-bit enumeration (Annex C.3.1.1.1)
UNSUPPORTED_ATTRIBUTE = 0x86


@dataclass(frozen=True)
class KeyEstablished(ServerEvent):
    """CBKE with the device `ieee` succeeded; the CHF now holds the new link key for it."""

    suite: int


@dataclass(frozen=True)
class KeyEstablishmentFailed(ServerEvent):
    """CBKE with the device failed; `status` is the Terminate status name (TIMEOUT when the device went quiet)."""

    status: str
    reason: str


@dataclass(frozen=True)
class FrameDropped(ServerEvent):
    """The CHF's APS layer refused a frame from the device (e.g. an OTA request without APS encryption)."""

    cluster_id: int
    reason: str
    detail: str


Listener = Callable[[ServerEvent], None]


def _nwk_of(packet: t.ZigbeePacket) -> int:
    address: Any = packet.src.address if packet.src is not None else 0
    return int(address)


def zcl_frame(control: int, tsn: int, command_id: int, payload: bytes) -> bytes:
    return bytes([control, tsn & 0xFF, command_id]) + payload


class KeyEstablishmentServer:
    """CBKE responder on `app` (a zigpy app with `add_ingress_handler` and `transmit`) at `endpoint`."""

    def __init__(
        self,
        app: object,
        endpoint: int,
        context: SecurityContext,
        credentials: Mapping[CryptoSuite, DeviceCredentials],
        clock: Clock,
        *,
        ieee_of: Callable[[int], t.EUI64 | None],
        listener: Listener | None = None,
    ) -> None:
        self.app = app
        self.endpoint = endpoint
        self.context = context
        self.credentials = credentials  # looked up, never copied: a suite no device asks for is never issued
        self.clock = clock
        self.ieee_of = ieee_of
        self.listener = listener
        self.exchanges: dict[int, ke.Responder] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._last: dict[int, bytes] = {}
        self._answers: dict[int, list[t.ZigbeePacket]] = {}
        self._tsn = 0
        self._remove: Callable[[], None] | None = None

    @property
    def suites(self) -> int:
        return ke.suite_bits(self.credentials)

    def start(self) -> None:
        self._remove = self.app.add_ingress_handler(self._ingress)  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self._remove is not None:
            self._remove()
            self._remove = None
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    # -- ingress ------------------------------------------------------------------------------------------

    def _ingress(self, packet: t.ZigbeePacket) -> bool:
        if packet.profile_id == ZDO_PROFILE and packet.dst_ep == 0:
            return packet.cluster_id == zdo_t.ZDOCmd.Match_Desc_req and self._on_match_desc(packet)
        if packet.cluster_id != ke.CLUSTER_ID or packet.dst_ep != self.endpoint:
            return False
        data = packet.data.serialize()
        if len(data) < 3 or data[0] & (MANUFACTURER_SPECIFIC | DIRECTION_TO_CLIENT):
            return True  # not for the server side of this cluster: nothing to answer
        control, tsn, command_id = data[0], data[1], data[2]
        sender = _nwk_of(packet)
        if self._last.get(sender) == data:
            # The same frame again (sequence number and payload): a repeat, not a new command. The initiator
            # repeats when our answer did not reach it, so it gets that answer again.
            for answer in self._answers.get(sender, ()):
                self.app.transmit(answer)  # type: ignore[attr-defined]
            return True
        self._last[sender] = data
        self._answers[sender] = []
        if control & 0x03 == CLUSTER_SPECIFIC:
            self._on_command(packet, tsn, command_id, data[3:])
        elif command_id == READ_ATTRIBUTES:
            self._on_read(packet, tsn, data[3:])
        return True

    def _on_match_desc(self, packet: t.ZigbeePacket) -> bool:
        data = packet.data.serialize()
        types: Any = t
        try:
            tsn, rest = data[0], data[1:]
            (_, profile_id, in_clusters, _), _ = types.deserialize(rest, zdo_t.CLUSTERS[zdo_t.ZDOCmd.Match_Desc_req][1])
        except (ValueError, KeyError, IndexError):
            return False
        if ke.CLUSTER_ID not in in_clusters or profile_id not in (ke.SMART_ENERGY_PROFILE, 0xFFFF):
            return False
        payload = types.serialize(
            [zdo_t.Status.SUCCESS, types.NWK(0x0000), [types.uint8_t(self.endpoint)]],
            zdo_t.CLUSTERS[zdo_t.ZDOCmd.Match_Desc_rsp][1],
        )
        self._send(packet, bytes([tsn]) + payload, zdo=True)
        return True

    def _on_read(self, packet: t.ZigbeePacket, tsn: int, payload: bytes) -> None:
        records = b""
        for index in range(0, len(payload) - 1, 2):
            attribute = int.from_bytes(payload[index : index + 2], "little")
            if attribute == ke.KEY_ESTABLISHMENT_SUITE_ATTRIBUTE:
                records += struct.pack("<HBBH", attribute, 0, ENUM16, self.suites)
            else:
                records += struct.pack("<HB", attribute, UNSUPPORTED_ATTRIBUTE)
        control = DIRECTION_TO_CLIENT | DISABLE_DEFAULT_RESPONSE
        self._send(packet, zcl_frame(control, tsn, READ_ATTRIBUTES_RESPONSE, records))

    def _on_command(self, packet: t.ZigbeePacket, tsn: int, command_id: int, payload: bytes) -> None:
        nwk = _nwk_of(packet)
        ieee = self.ieee_of(nwk)
        if ieee is None:
            return
        now = asyncio.get_running_loop().time()
        responder = self.exchanges.get(nwk)
        if command_id == ke.ClientCommand.INITIATE_KEY_ESTABLISHMENT_REQUEST and (
            responder is None or responder.outcome is not None or responder.suite is not None
        ):
            # A new exchange replaces any earlier one with this device (it restarted, or tries again).
            responder = self.exchanges[nwk] = ke.Responder(self.credentials, bytes(ieee)[::-1])
        if responder is None:
            return
        step = responder.receive_payload(command_id, payload, now)
        self._act(packet, tsn, ieee, nwk, responder, step)

    def _act(
        self, packet: t.ZigbeePacket, tsn: int, ieee: t.EUI64, nwk: int, responder: ke.Responder, step: ke.Step
    ) -> None:
        for message in step.outbound:
            confirm = isinstance(message, ke.ConfirmKeyDataResponse)
            # Confirm Key Data Response is acknowledged by a Default Response (Annex C.4.2.2.4); the others not.
            control = CLUSTER_SPECIFIC | DIRECTION_TO_CLIENT | (0 if confirm else DISABLE_DEFAULT_RESPONSE)
            self._send(packet, zcl_frame(control, tsn, message.COMMAND_ID, message.to_bytes()))
        timer = self._timers.pop(nwk, None)
        if timer is not None:
            timer.cancel()
        outcome = step.outcome
        if outcome is None:
            deadline = responder.deadline()
            if deadline is not None:
                loop = asyncio.get_running_loop()
                self._timers[nwk] = loop.call_at(deadline, self._timeout, packet, ieee, nwk, responder)
            return
        self.exchanges.pop(nwk, None)
        if isinstance(outcome, ke.Established):
            self.context.set_link_key(ieee, outcome.key_data, KeyOrigin.CBKE)
            self._emit(KeyEstablished(ieee, self.clock.now(), outcome.suite.value))
        else:
            status = outcome.status.name if outcome.status is not None else "TIMEOUT"
            self._emit(KeyEstablishmentFailed(ieee, self.clock.now(), status, outcome.reason))

    def _timeout(self, packet: t.ZigbeePacket, ieee: t.EUI64, nwk: int, responder: ke.Responder) -> None:
        self._timers.pop(nwk, None)
        step = responder.timeout(asyncio.get_running_loop().time())
        if step.outcome is not None:
            self._act(packet, 0, ieee, nwk, responder, step)

    def _send(self, request: t.ZigbeePacket, data: bytes, *, zdo: bool = False) -> None:
        requester = _nwk_of(request)
        if zdo:
            packet = unicast(0x0000, 0, requester, 0, ZDO_PROFILE, zdo_t.ZDOCmd.Match_Desc_rsp, data)
        else:
            endpoint = int(request.src_ep or 0)
            packet = unicast(0x0000, self.endpoint, requester, endpoint, ke.SMART_ENERGY_PROFILE, ke.CLUSTER_ID, data)
            self._answers.setdefault(requester, []).append(packet)
        self.app.transmit(packet)  # type: ignore[attr-defined]

    def _emit(self, event: ServerEvent) -> None:
        if self.listener is not None:
            self.listener(event)
