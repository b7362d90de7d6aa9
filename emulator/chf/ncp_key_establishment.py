"""The CHF's Key Establishment server with the NCP's CBKE library doing the cryptography (`ota-emu chf --cbke ncp`).

The frames, the discovery answers (Match_Desc_req, the KeyEstablishmentSuite attribute) and the events are those
of `chf.key_establishment`; what changes is who holds the keys. The certificate is the NCP's own
(`getCertificate` / `getCertificate283k1`); the ephemeral key comes from `generateCbkeKeys[283k1]` and its
handler; MACU and MACV from `calculateSmacs[283k1]` (as responder) and its handler; when MACU matches,
`clearTemporaryDataMaybeStoreLinkKey[283k1](True)` makes the NCP store KeyData as the device's link key, before the
Confirm Key Data Response leaves. The host never sees the private keys; it reads the new link key back from the
key table (`export`) only to decide which frames to ask the NCP to encrypt and to label a capture.

The host checks the initiator's certificate as a Silicon Labs trust centre does (issuer, subject = the sender's
EUI-64, suite-2 type/curve/hash/key usage) before the NCP computes anything. The library holds one exchange at a
time, so a second initiator is told to come back later (Terminate NO_RESOURCES) until the first ends or times out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import zigpy.types as t

from emulator.chf.key_establishment import (
    CLUSTER_SPECIFIC,
    DIRECTION_TO_CLIENT,
    DISABLE_DEFAULT_RESPONSE,
    KeyEstablished,
    KeyEstablishmentFailed,
    KeyEstablishmentServer,
    zcl_frame,
)
from emulator.security import key_establishment as ke
from emulator.security.certs import Certificate, CryptoSuite, parse_certificate
from emulator.security.keystore import KeyOrigin

LOGGER = logging.getLogger(__name__)

SUFFIX = {CryptoSuite.SUITE_1: "", CryptoSuite.SUITE_2: "283k1"}
# How long the library's one exchange may stay unfinished before another initiator may have it.
EXCHANGE_TIMEOUT = 2 * (ke.DEFAULT_TRANSIT_ALLOWANCE + ke.DEFAULT_CONFIRM_KEY_GENERATE_TIME)
CALLBACK_TIMEOUT = 10.0

Exporter = Callable[[t.EUI64], Awaitable[bytes | None]]


class NcpCbkeError(Exception):
    """The NCP's CBKE library answered with a failure status."""


@dataclass(slots=True)
class _Exchange:
    nwk: int
    ieee: t.EUI64
    suite: CryptoSuite
    certificate: bytes
    expires: float
    macs: tuple[bytes, bytes] | None = None


def _ok(status: Any) -> bool:
    return int(status) == 0


class NcpKeyEstablishmentServer(KeyEstablishmentServer):
    """CBKE responder on `app` (bellows' EZSP app) whose cryptography runs in the NCP; `export(ieee)` reads the
    link key the NCP stored for a device."""

    def __init__(self, *args: Any, export: Exporter, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.export = export
        self.certificates: dict[CryptoSuite, Certificate] = {}
        self._exchange: _Exchange | None = None
        self._queue: asyncio.Queue[tuple[t.ZigbeePacket, int, int, bytes]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._waiting: dict[str, asyncio.Future[list[Any]]] = {}
        self._callback_id: int | None = None

    @property
    def suites(self) -> int:
        return ke.suite_bits(self.certificates)

    @property
    def _ezsp(self) -> Any:
        return self.app._ezsp  # type: ignore[attr-defined]

    async def load(self) -> None:
        """Read the NCP's certificates: the suites it answers for are the ones this server offers."""
        for suite in CryptoSuite:
            values = await self._command(f"getCertificate{SUFFIX[suite]}")
            if _ok(values["status"]):
                self.certificates[suite] = parse_certificate(bytes(values["localCert"]), suite, "NCP certificate")

    def start(self) -> None:
        super().start()
        self._callback_id = self._ezsp.add_callback(self._on_callback)
        self._worker = asyncio.get_running_loop().create_task(self._work())

    def stop(self) -> None:
        super().stop()
        if self._callback_id is not None:
            self._ezsp.remove_callback(self._callback_id)
            self._callback_id = None
        if self._worker is not None:
            self._worker.cancel()

    # -- EZSP --------------------------------------------------------------------------------------------

    async def _command(self, name: str, **args: Any) -> dict[str, Any]:
        """An EZSP command's answer by field name (the order changes between protocol versions)."""
        names = list(self._ezsp.COMMANDS[name][2])
        return dict(zip(names, await getattr(self._ezsp, name)(**args), strict=True))

    def _on_callback(self, name: str, args: list[Any]) -> None:
        future = self._waiting.pop(name, None)
        if future is not None and not future.done():
            future.set_result(list(args))

    async def _call_and_wait(self, name: str, callback: str, **args: Any) -> list[Any]:
        """Send `name` and wait for its asynchronous handler `callback` (its arguments, status first)."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiting[callback] = future
        answer = await self._command(name, **args)
        if not _ok(answer["status"]):
            self._waiting.pop(callback, None)
            raise NcpCbkeError(f"{name}: {answer['status']!r}")
        async with asyncio.timeout(CALLBACK_TIMEOUT):
            result = await future
        if not _ok(result[0]):
            raise NcpCbkeError(f"{callback}: {result[0]!r}")
        return result

    # -- frames ------------------------------------------------------------------------------------------

    def _on_command(self, packet: t.ZigbeePacket, tsn: int, command_id: int, payload: bytes) -> None:
        self._queue.put_nowait((packet, tsn, command_id, payload))

    async def _work(self) -> None:
        while True:
            packet, tsn, command_id, payload = await self._queue.get()
            try:
                await self._handle(packet, tsn, command_id, payload)
            except Exception:  # a stick that went away mid-exchange: the device times out and tries again
                LOGGER.exception("key establishment with the NCP's CBKE library failed")
                self._exchange = None

    async def _handle(self, packet: t.ZigbeePacket, tsn: int, command_id: int, payload: bytes) -> None:
        nwk = int(packet.src.address) if packet.src is not None else 0  # type: ignore[arg-type]
        ieee = self.ieee_of(nwk)
        if ieee is None:
            return
        now = asyncio.get_running_loop().time()
        exchange = self._exchange
        if exchange is not None and exchange.expires <= now:
            await self._command(f"clearTemporaryDataMaybeStoreLinkKey{SUFFIX[exchange.suite]}", storeLinkKey=False)
            exchange = self._exchange = None
        if command_id == ke.ClientCommand.INITIATE_KEY_ESTABLISHMENT_REQUEST:
            if exchange is not None and exchange.nwk != nwk:
                self._reply(packet, tsn, ke.Responder.busy(suite=self.suites))
                return
            await self._initiate(packet, tsn, nwk, ieee, payload, now)
        elif exchange is None or exchange.nwk != nwk:
            return  # not in an exchange with this device: nothing to answer
        elif command_id == ke.ClientCommand.EPHEMERAL_DATA_REQUEST and exchange.macs is None:
            await self._ephemeral(packet, tsn, exchange, payload)
        elif command_id == ke.ClientCommand.CONFIRM_KEY_DATA_REQUEST and exchange.macs is not None:
            await self._confirm(packet, tsn, exchange, payload)
        elif command_id == ke.ClientCommand.TERMINATE_KEY_ESTABLISHMENT:
            await self._end(packet, tsn, exchange, None, "the device terminated")
        else:
            await self._end(
                packet, tsn, exchange, ke.TerminateStatus.BAD_MESSAGE, f"command 0x{command_id:02X} out of turn"
            )

    async def _initiate(
        self, packet: t.ZigbeePacket, tsn: int, nwk: int, ieee: t.EUI64, payload: bytes, now: float
    ) -> None:
        try:
            request = ke.InitiateKeyEstablishmentRequest.from_bytes(payload)
            suite = ke.suite_of(request.suite)
        except ke.MessageError as exc:
            self._fail(packet, tsn, ieee, exc.status, str(exc), self.suites)
            return
        ours = self.certificates.get(suite)
        if ours is None:
            self._fail(packet, tsn, ieee, ke.TerminateStatus.UNSUPPORTED_SUITE, f"suite {suite.value}", self.suites)
            return
        problem = ke.partner_certificate_problem(request.certificate, suite, ours.issuer, bytes(ieee)[::-1])
        if problem is not None:
            self._fail(packet, tsn, ieee, problem[0], problem[1], suite.bit)
            return
        self._exchange = _Exchange(nwk, ieee, suite, request.certificate, now + EXCHANGE_TIMEOUT)
        self._reply(
            packet,
            tsn,
            ke.InitiateKeyEstablishmentResponse(
                suite.bit,
                ke.DEFAULT_EPHEMERAL_DATA_GENERATE_TIME,
                ke.DEFAULT_CONFIRM_KEY_GENERATE_TIME,
                ours.to_bytes(),
            ),
        )

    async def _ephemeral(self, packet: t.ZigbeePacket, tsn: int, exchange: _Exchange, payload: bytes) -> None:
        suffix = SUFFIX[exchange.suite]
        try:
            request = ke.EphemeralDataRequest.from_bytes(payload, exchange.suite)
        except ke.MessageError as exc:
            await self._end(packet, tsn, exchange, exc.status, str(exc))
            return
        try:
            _, public = await self._call_and_wait(f"generateCbkeKeys{suffix}", f"generateCbkeKeysHandler{suffix}")
        except (NcpCbkeError, TimeoutError) as exc:
            await self._end(packet, tsn, exchange, ke.TerminateStatus.NO_RESOURCES, str(exc))
            return
        self._reply(packet, tsn, ke.EphemeralDataResponse(bytes(public)))
        try:
            _, mac_u, mac_v = await self._call_and_wait(
                f"calculateSmacs{suffix}",
                f"calculateSmacsHandler{suffix}",
                amInitiator=False,
                partnerCertificate=exchange.certificate,
                partnerEphemeralPublicKey=request.ephemeral,
            )
        except (NcpCbkeError, TimeoutError) as exc:
            await self._end(packet, tsn, exchange, ke.TerminateStatus.BAD_MESSAGE, str(exc))
            return
        exchange.macs = (bytes(mac_u), bytes(mac_v))

    async def _confirm(self, packet: t.ZigbeePacket, tsn: int, exchange: _Exchange, payload: bytes) -> None:
        assert exchange.macs is not None
        try:
            request = ke.ConfirmKeyDataRequest.from_bytes(payload)
        except ke.MessageError as exc:
            await self._end(packet, tsn, exchange, exc.status, str(exc))
            return
        if request.mac != exchange.macs[0]:
            await self._end(packet, tsn, exchange, ke.TerminateStatus.BAD_KEY_CONFIRM, "MACU does not match")
            return
        stored = await self._command(f"clearTemporaryDataMaybeStoreLinkKey{SUFFIX[exchange.suite]}", storeLinkKey=True)
        self._exchange = None
        key = await self.export(exchange.ieee) if _ok(stored["status"]) else None
        if key is None:
            self._fail(
                packet, tsn, exchange.ieee, ke.TerminateStatus.NO_RESOURCES, "the NCP stored no key", exchange.suite.bit
            )
            return
        self.context.set_link_key(exchange.ieee, key, KeyOrigin.CBKE)
        self._reply(packet, tsn, ke.ConfirmKeyDataResponse(exchange.macs[1]))
        self._emit(KeyEstablished(exchange.ieee, self.clock.now(), exchange.suite.value))

    async def _end(
        self, packet: t.ZigbeePacket, tsn: int, exchange: _Exchange, status: ke.TerminateStatus | None, reason: str
    ) -> None:
        """End the exchange: the NCP forgets it; a Terminate goes out unless the device ended it."""
        self._exchange = None
        await self._command(f"clearTemporaryDataMaybeStoreLinkKey{SUFFIX[exchange.suite]}", storeLinkKey=False)
        if status is None:
            self._emit(KeyEstablishmentFailed(exchange.ieee, self.clock.now(), "TERMINATED", reason))
        else:
            self._fail(packet, tsn, exchange.ieee, status, reason, exchange.suite.bit)

    def _fail(
        self, packet: t.ZigbeePacket, tsn: int, ieee: t.EUI64, status: ke.TerminateStatus, reason: str, suite: int
    ) -> None:
        self._reply(packet, tsn, ke.TerminateKeyEstablishment(status, ke.DEFAULT_TERMINATE_WAIT_TIME, suite))
        self._emit(KeyEstablishmentFailed(ieee, self.clock.now(), status.name, reason))

    def _reply(self, packet: t.ZigbeePacket, tsn: int, message: ke.ServerMessage) -> None:
        # Confirm Key Data Response is acknowledged by a Default Response (Annex C.4.2.2.4); the others not.
        confirm = isinstance(message, ke.ConfirmKeyDataResponse)
        control = CLUSTER_SPECIFIC | DIRECTION_TO_CLIENT | (0 if confirm else DISABLE_DEFAULT_RESPONSE)
        self._send(packet, zcl_frame(control, tsn, message.COMMAND_ID, message.to_bytes()))
