"""An emulated device's Key Establishment cluster (0x0800) client: CBKE initiator U after joining.

Before its OTA client starts, a Smart Energy device finds the Key Establishment server (Match_Desc_req for 0x0800
to the trust centre, SE 07-5356 Annex C.4.2.1), reads its KeyEstablishmentSuite attribute (0x0000) to pick the
strongest common suite, and runs the sans-IO `Initiator` over ZCL. KeyData becomes the APS link key it shares
with the trust centre (`SecurityContext`, origin CBKE); from then on its OTA frames are APS-encrypted. The frames
travel with NWK security only (the cluster is not in the APS-encrypted list of ZSE §5.4.6).

`KeyEstablishmentDriver` holds what does not depend on who computes (discovery, frames, resends, retries, events);
`KeyEstablishmentClient` computes on the host, `device.ncp_key_establishment` in an EZSP stick's CBKE library.

The client takes its frames from the device's radio before the device sees them (the ingress handlers of a
`SecureRadio` in process, or of a `StickRadio` on an EZSP stick), and polls the parent while it waits, so a sleepy
device gets its answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import zigpy.types as t
from zigpy.zdo.types import ZDOCmd

from emulator.device import zdo
from emulator.device.faults import DeviceFault
from emulator.device.security_events import KeyEstablished, KeyEstablishmentFailed
from emulator.radio.secure import IngressHandler, unicast
from emulator.security import key_establishment as ke
from emulator.security.certs import CryptoSuite, DeviceCredentials
from emulator.security.keystore import KeyOrigin, SecurityContext

COORDINATOR = 0x0000
CLUSTER_SPECIFIC = 0x01
DIRECTION_TO_CLIENT = 0x08
DISABLE_DEFAULT_RESPONSE = 0x10
READ_ATTRIBUTES = 0x00
READ_ATTRIBUTES_RESPONSE = 0x01
DEFAULT_RESPONSE = 0x0B
POLL_INTERVAL = 0.25
MIN_WAIT = 1e-6
# Outcomes another attempt can change: a lost frame (timeout), no server yet, a busy server. The others (an
# unknown issuer, an invalid certificate, no common suite, a bad key confirmation) would fail again.
RETRYABLE = frozenset({"TIMEOUT", "NO_SERVER", "NO_RESOURCES"})
RETRY_DELAY = 5.0
RESEND_AFTER = 2.5


class KeyEstablishmentRadio(Protocol):
    """What the client needs of the device's radio: its frames first, and a way to send."""

    def add_ingress_handler(self, handler: IngressHandler) -> Callable[[], None]: ...

    def send(self, packet: t.ZigbeePacket) -> bool: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """How key establishment ended for the device: `suite` on success, else the status name and why."""

    ok: bool
    suite: int | None
    status: str
    reason: str


class KeyEstablishmentDriver:
    """What every Key Establishment client of a device shares, whoever does the cryptography: finding the server
    (Match_Desc_req, its KeyEstablishmentSuite attribute), the ZCL frames, resends, retries of a failed exchange
    and the outcome event. A subclass runs one exchange in `_establish` (`KeyEstablishmentClient` on the host,
    `device.ncp_key_establishment.NcpKeyEstablishmentClient` in an EZSP stick's CBKE library)."""

    def __init__(
        self,
        device: Any,
        radio: KeyEstablishmentRadio,
        server_ieee: t.EUI64,
        *,
        response_timeout: float = 5.0,
        attempts: int = 3,
        exchanges: int = 8,
    ) -> None:
        self.device = device
        self.radio = radio
        self.server_ieee = server_ieee
        self.response_timeout = response_timeout
        self.attempts = attempts
        self.exchanges = exchanges
        self._last: bytes = b""
        self._inbox: asyncio.Queue[tuple[int, int, bytes]] = asyncio.Queue()
        self._server_endpoint: int | None = None
        self._tsn: int = device.rng.randrange(256)

    async def run(self) -> Outcome:
        """Find the server, run CBKE and keep its key; the outcome is also reported as a device event."""
        remove = self.radio.add_ingress_handler(self._ingress)
        try:
            for _ in range(self.exchanges):
                outcome = await self._run()
                if outcome.ok or outcome.status not in RETRYABLE:
                    break
                await self._receive(RETRY_DELAY)  # polls meanwhile; a late answer of the failed exchange is dropped
        finally:
            remove()
        if outcome.ok:
            self.device.emit(KeyEstablished, suite=outcome.suite, partner=self.server_ieee)
        else:
            self.device.emit(KeyEstablishmentFailed, status=outcome.status, reason=outcome.reason)
        return outcome

    async def _run(self) -> Outcome:
        endpoint = await self._find_server()
        if endpoint is None:
            return Outcome(False, None, "NO_SERVER", "no Key Establishment server answered Match_Desc_req")
        self._server_endpoint = endpoint
        return await self._establish(await self._read_suites())

    async def _establish(self, suites: int) -> Outcome:
        """One exchange with the server, whose KeyEstablishmentSuite attribute is `suites`."""
        raise NotImplementedError

    @property
    def partner(self) -> bytes:
        """The server's EUI-64 as certificates carry it (most significant byte first)."""
        return bytes(self.server_ieee)[::-1]

    def _as_sent(self, message: ke.Message) -> ke.Message | None:
        """`message` as the device sends it: a Terminate is kept back, or always says BAD_MESSAGE, by a device
        with the deliberate fault (SE 07-5356 Annex C.3.1 gives each failure its own status)."""
        if not isinstance(message, ke.TerminateKeyEstablishment):
            return message
        faults: frozenset[DeviceFault] = getattr(self.device.profile, "faults", frozenset())
        if DeviceFault.KE_NO_TERMINATE in faults:
            return None
        if DeviceFault.KE_TERMINATE_BAD_MESSAGE in faults:
            return dataclasses.replace(message, status=ke.TerminateStatus.BAD_MESSAGE)
        return message

    # -- discovery ----------------------------------------------------------------------------------------

    async def _find_server(self) -> int | None:
        for _ in range(self.attempts):
            tsn = self._next_tsn()
            request = zdo.match_desc_request(tsn, COORDINATOR, ke.SMART_ENERGY_PROFILE, [ke.CLUSTER_ID])
            self.device.send_zdo(ZDOCmd.Match_Desc_req, request, COORDINATOR)
            answer = await self._receive(self.response_timeout, zdo_tsn=tsn)
            if answer is None:
                continue
            with contextlib.suppress(ValueError, KeyError, IndexError):
                _, (status, _, endpoints) = zdo.parse(ZDOCmd.Match_Desc_rsp, answer[3])
                if status == zdo.Status.SUCCESS and endpoints:
                    return int(endpoints[0])
        return None

    async def _read_suites(self) -> int:
        """The server's KeyEstablishmentSuite attribute; 0 (suite 1, as old stacks mean it) when unreadable."""
        answer = None
        for _ in range(self.attempts):
            tsn = self._next_tsn()
            self._send_zcl(DISABLE_DEFAULT_RESPONSE, tsn, READ_ATTRIBUTES, struct.pack("<H", 0x0000))
            answer = await self._receive(self.response_timeout, read_tsn=tsn)
            if answer is not None:
                break
        if answer is None:
            return 0
        records = answer[3]
        if len(records) >= 5 and records[:3] == b"\x00\x00\x00":
            return int.from_bytes(records[4:6], "little")
        return 0

    # -- frames -------------------------------------------------------------------------------------------

    def _ingress(self, packet: t.ZigbeePacket) -> bool:
        data = packet.data.serialize()
        if packet.profile_id == 0 and packet.cluster_id == ZDOCmd.Match_Desc_rsp and data:
            self._inbox.put_nowait((-1, data[0], data))
            return False  # the OTA client may be waiting for its own Match_Desc_rsp
        if packet.cluster_id != ke.CLUSTER_ID or packet.dst_ep != self.device.endpoint or len(data) < 3:
            return False
        if data[0] & DIRECTION_TO_CLIENT and data != self._last:  # an identical frame again is a duplicate
            self._last = data
            self._inbox.put_nowait((data[0], data[1], data))
        return True

    async def _receive(
        self, within: float | None, *, cluster: bool = False, zdo_tsn: int | None = None, read_tsn: int | None = None
    ) -> tuple[int, int, int, bytes] | None:
        """The next frame of the kind asked for within `within` seconds (polling the parent meanwhile)."""
        loop = asyncio.get_running_loop()
        end = None if within is None else loop.time() + max(within, 0.0)
        while True:
            self.device.poll()
            wait = POLL_INTERVAL if end is None else min(POLL_INTERVAL, end - loop.time())
            if wait < MIN_WAIT:  # float time: a sliver of a wait would never move the clock
                return None
            try:
                control, tsn, data = await asyncio.wait_for(self._inbox.get(), wait)
            except TimeoutError:
                continue
            if zdo_tsn is not None and control == -1 and tsn == zdo_tsn:
                return control, tsn, 0, data
            if control == -1:
                continue
            general = control & 0x03 != CLUSTER_SPECIFIC
            if read_tsn is not None and general and tsn == read_tsn and data[2] == READ_ATTRIBUTES_RESPONSE:
                return control, tsn, data[2], data[3:]
            if cluster and not general:
                return control, tsn, data[2], data[3:]

    def _send_message(self, message: ke.Message) -> bytes:
        """`message` to the server in a new ZCL frame (no Default Response asked); the frame, for resending."""
        control = CLUSTER_SPECIFIC | DISABLE_DEFAULT_RESPONSE
        return self._send_zcl(control, self._next_tsn(), message.COMMAND_ID, message.to_bytes())

    def _acknowledge(self, control: int, tsn: int, command_id: int) -> None:
        """The Default Response a server frame asks for: the Confirm Key Data Response does (Annex C.4.2.2.4)."""
        if not control & DISABLE_DEFAULT_RESPONSE:
            self._send_zcl(DISABLE_DEFAULT_RESPONSE, tsn, DEFAULT_RESPONSE, bytes([command_id, 0x00]))

    def _send_zcl(self, control: int, tsn: int, command_id: int, payload: bytes) -> bytes:
        data = bytes([control, tsn & 0xFF, command_id]) + payload
        self._send_frame(data)
        return data

    def _send_frame(self, data: bytes) -> None:
        assert self._server_endpoint is not None
        device = self.device
        self.radio.send(
            unicast(device.nwk, device.endpoint, COORDINATOR, self._server_endpoint, ke.SMART_ENERGY_PROFILE,
                    ke.CLUSTER_ID, data)
        )  # fmt: skip

    def _next_tsn(self) -> int:
        self._tsn = (self._tsn + 1) & 0xFF
        return self._tsn


class KeyEstablishmentClient(KeyEstablishmentDriver):
    """CBKE for `device` (an `EmulatedDevice`) with the trust centre `server_ieee`, over `radio`, with the
    cryptography on the host (the sans-IO `Initiator` and `credentials`); KeyData goes into `context`."""

    def __init__(
        self,
        device: Any,
        radio: KeyEstablishmentRadio,
        context: SecurityContext,
        credentials: Mapping[CryptoSuite, DeviceCredentials],
        server_ieee: t.EUI64,
        **options: Any,
    ) -> None:
        super().__init__(device, radio, server_ieee, **options)
        self.context = context
        self.credentials = credentials  # looked up, not copied: a suite no exchange uses is never issued

    async def _establish(self, suites: int) -> Outcome:
        initiator = ke.Initiator(self.credentials, self.partner)
        loop = asyncio.get_running_loop()
        step = initiator.start(loop.time(), suites)
        sent: list[bytes] = []
        while True:
            if step.outbound:
                sent = [self._send_message(m) for m in map(self._as_sent, step.outbound) if m is not None]
            result = step.outcome
            if isinstance(result, ke.Established):
                self.context.set_link_key(self.server_ieee, result.key_data, KeyOrigin.CBKE)
                return Outcome(True, result.suite.value, "SUCCESS", "")
            if isinstance(result, ke.Failed):
                status = result.status.name if result.status is not None else "TIMEOUT"
                return Outcome(False, None, status, result.reason)
            deadline = initiator.deadline()
            left = None if deadline is None else deadline - loop.time()
            frame = await self._receive(RESEND_AFTER if left is None else min(left, RESEND_AFTER), cluster=True)
            if frame is None:
                if deadline is not None and loop.time() >= deadline - MIN_WAIT:
                    step = initiator.timeout(max(loop.time(), deadline))
                else:
                    # No answer yet: send the same frame again, as the APS layer retries an unacknowledged unicast
                    # (05-3474 §2.2.8.4.4); the server answers a repeat with its answer again.
                    for data in sent:
                        self._send_frame(data)
                    step = ke.Step()
                continue
            control, tsn, command_id, payload = frame
            self._acknowledge(control, tsn, command_id)
            step = initiator.receive_payload(command_id, payload, loop.time())
