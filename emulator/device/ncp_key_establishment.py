"""A device's Key Establishment client with its EZSP stick's CBKE library doing the cryptography
(`ota-emu device --cbke ncp`): the initiator U, the mirror image of the CHF's `chf.ncp_key_establishment`.

Discovery, frames, resends, retries and events are `KeyEstablishmentDriver`'s; what changes is who holds the keys.
The certificate is the stick's own (`getCertificate` / `getCertificate283k1`, for the suites whose library
`getLibraryStatus` reports present): a Silicon Labs stick with Certicom certificates in its MFG tokens, or the
virtual NCP with the one its bundled test CA issues. One exchange (SE 07-5356 Annex C.4.2):

    Initiate Key Establishment Request with the stick's certificate  →  Response with the server's certificate,
    checked on the host before the library computes anything (issuer = ours, subject = the trust centre, valid);
    `generateCbkeKeys[283k1]` → its handler's ephemeral key  →  Ephemeral Data Request / Response;
    `calculateSmacs[283k1](amInitiator=True, ...)` → its handler's MACU and MACV (initiatorSmac is MACU,
    responderSmac MACV, whatever the role)  →  Confirm Key Data Request (MACU) / Response (MACV);
    MACV matches: `clearTemporaryDataMaybeStoreLinkKey[283k1](True)`: the NCP stores KeyData as its trust-centre
    link key itself (the host never sees it) and may say so in `zigbeeKeyEstablishmentHandler`.

Any other ending clears the library's temporary data (`clear...(False)`) and, where the device ends the exchange,
sends Terminate Key Establishment: BAD_KEY_CONFIRM for a wrong MACV, UNKNOWN_ISSUER / BAD_MESSAGE /
INVALID_CERTIFICATE for the server's certificate, NO_RESOURCES when the library fails to make its keys, BAD_MESSAGE
when it fails to compute the MACs. A library handler that never comes counts as such a failure after
`CALLBACK_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import bellows.types as bt
import zigpy.types as t

from emulator.chf.node import RadioError
from emulator.device.key_establishment import (
    MIN_WAIT,
    RESEND_AFTER,
    KeyEstablishmentDriver,
    Outcome,
)
from emulator.radio.secure import IngressHandler
from emulator.security import key_establishment as ke
from emulator.security.certs import Certificate, CertificateError, CryptoSuite, parse_certificate

SUFFIX = {CryptoSuite.SUITE_1: "", CryptoSuite.SUITE_2: "283k1"}
# EmberLibraryId of each suite's CBKE library, and the EmberLibraryStatus bit saying it is there (SE_SECURITY.md §7;
# a build without it has a stub: 0x00, and its CBKE commands answer LIBRARY_NOT_PRESENT).
CBKE_LIBRARY = {CryptoSuite.SUITE_1: 0x06, CryptoSuite.SUITE_2: 0x0D}
LIBRARY_PRESENT = 0x80
LIBRARY_ERROR = 0xFF
# How long the library may take to report its keys or MACs: an EFR32 computes sect283k1 in about a second.
CALLBACK_TIMEOUT = 10.0
# After storing the key, how long to listen for zigbeeKeyEstablishmentHandler (not every build sends it).
KEY_REPORT_WAIT = 1.0
KEY_ESTABLISHED = (
    bt.EmberKeyStatus.TRUST_CENTER_LINK_KEY_ESTABLISHED,
    bt.EmberKeyStatus.APP_LINK_KEY_ESTABLISHED,
)


Answer = TypeVar("Answer", ke.InitiateKeyEstablishmentResponse, ke.EphemeralDataResponse, ke.ConfirmKeyDataResponse)


class NcpRadio(Protocol):
    """What the client needs of the stick (`StickRadio`): the device's frames, and the NCP's commands and
    callbacks by name."""

    port: str

    def add_ingress_handler(self, handler: IngressHandler) -> Callable[[], None]: ...

    def send(self, packet: t.ZigbeePacket) -> bool: ...

    async def command(self, name: str, **kwargs: Any) -> dict[str, Any]: ...

    def expect(self, name: str) -> asyncio.Future[dict[str, Any]]: ...


class LibraryError(Exception):
    """The stick's CBKE library answered a failure, or its handler never came."""


def _ok(status: Any) -> bool:
    return int(status) == 0  # EmberStatus.SUCCESS and sl_Status.OK alike


def _name(status: Any) -> str:
    return str(getattr(status, "name", f"0x{int(status):02X}"))


async def stick_certificates(radio: NcpRadio, ieee: t.EUI64) -> dict[CryptoSuite, Certificate]:
    """The stick's CBKE certificates, for each suite whose library it has and whose certificate names `ieee` (the
    EUI-64 the server checks). RadioError, one line naming the stick, when there is none: `--cbke ncp` cannot run
    there."""
    found: dict[CryptoSuite, Certificate] = {}
    missing: list[str] = []
    for suite in CryptoSuite:
        library = CBKE_LIBRARY[suite]
        status = int((await radio.command("getLibraryStatus", libraryId=library))["status"])
        if status == LIBRARY_ERROR or not status & LIBRARY_PRESENT:
            missing.append(f"suite {suite.value}: getLibraryStatus(0x{library:02X}) answered 0x{status:02X}")
            continue
        command = f"getCertificate{SUFFIX[suite]}"
        values = await radio.command(command)
        if not _ok(values["status"]):
            missing.append(f"suite {suite.value}: {command} answered {_name(values['status'])}")
            continue
        try:
            certificate = parse_certificate(bytes(values["localCert"]), suite, f"{command}'s certificate")
        except CertificateError as exc:
            missing.append(f"suite {suite.value}: {exc}")
            continue
        if certificate.subject != bytes(ieee)[::-1]:
            missing.append(f"suite {suite.value}: the certificate is for {certificate.subject.hex().upper()}")
            continue
        found[suite] = certificate
    if not found:
        raise RadioError(
            f"--cbke ncp: the stick on {radio.port} ({ieee}) has no CBKE library with a certificate of its own "
            f"({'; '.join(missing)}); expected Smart Energy firmware with Certicom certificates in its MFG tokens, "
            "or use --cbke host"
        )
    return found


class NcpKeyEstablishmentClient(KeyEstablishmentDriver):
    """CBKE for `device` with the trust centre `server_ieee`, computed by the CBKE library of the stick `radio`
    whose certificates are `certificates` (`stick_certificates`). On success the NCP holds the new link key."""

    def __init__(
        self,
        device: Any,
        radio: NcpRadio,
        server_ieee: t.EUI64,
        certificates: Mapping[CryptoSuite, Certificate],
        **options: Any,
    ) -> None:
        super().__init__(device, radio, server_ieee, **options)
        self.stick = radio
        self.certificates = dict(certificates)

    async def _establish(self, suites: int) -> Outcome:
        suite = ke.choose_suite(self.certificates, suites)
        if suite is None:
            ours = ke.suite_bits(self.certificates)
            reason = f"partner supports suites 0x{suites:04X} (expected one of 0x{ours:04X})"
            return Outcome(False, None, ke.TerminateStatus.UNSUPPORTED_SUITE.name, reason)
        answer = await self._ask(
            ke.InitiateKeyEstablishmentRequest(
                suite.bit,
                ke.DEFAULT_EPHEMERAL_DATA_GENERATE_TIME,
                ke.DEFAULT_CONFIRM_KEY_GENERATE_TIME,
                self.certificates[suite].to_bytes(),
            ),
            ke.InitiateKeyEstablishmentResponse,
            suite,
            0,
        )
        if isinstance(answer, Outcome):
            return answer
        if answer.suite != suite.bit:
            return self._terminate(
                ke.TerminateStatus.UNSUPPORTED_SUITE,
                f"responder chose suite 0x{answer.suite:04X} (expected 0x{suite.bit:04X}, as requested)",
                suite,
            )
        problem = ke.partner_certificate_problem(
            answer.certificate, suite, self.certificates[suite].issuer, self.partner
        )
        if problem is not None:
            return self._terminate(*problem, suite)
        outcome = await self._compute(suite, answer)
        if not outcome.ok:
            await self._clear(suite, store=False)
        return outcome

    async def _compute(self, suite: CryptoSuite, initiate: ke.InitiateKeyEstablishmentResponse) -> Outcome:
        """The exchange from the ephemeral keys on, with the library's temporary data in use."""
        suffix = SUFFIX[suite]
        try:
            generated = await self._library(f"generateCbkeKeys{suffix}", f"generateCbkeKeysHandler{suffix}")
        except LibraryError as exc:
            return self._terminate(ke.TerminateStatus.NO_RESOURCES, str(exc), suite)
        ephemeral = await self._ask(
            ke.EphemeralDataRequest(bytes(generated["ephemeralPublicKey"])),
            ke.EphemeralDataResponse,
            suite,
            initiate.ephemeral_data_generate_time,
        )
        if isinstance(ephemeral, Outcome):
            return ephemeral
        try:
            smacs = await self._library(
                f"calculateSmacs{suffix}",
                f"calculateSmacsHandler{suffix}",
                amInitiator=True,
                partnerCertificate=initiate.certificate,
                partnerEphemeralPublicKey=ephemeral.ephemeral,
            )
        except LibraryError as exc:
            return self._terminate(ke.TerminateStatus.BAD_MESSAGE, str(exc), suite)
        mac_u, mac_v = bytes(smacs["initiatorSmac"]), bytes(smacs["responderSmac"])
        confirm = await self._ask(
            ke.ConfirmKeyDataRequest(mac_u), ke.ConfirmKeyDataResponse, suite, initiate.confirm_key_generate_time
        )
        if isinstance(confirm, Outcome):
            return confirm
        if confirm.mac != mac_v:
            return self._terminate(ke.TerminateStatus.BAD_KEY_CONFIRM, "MACV from the responder does not match", suite)
        return await self._store(suite)

    async def _store(self, suite: CryptoSuite) -> Outcome:
        """The NCP keeps KeyData as its trust-centre link key; its report, when one comes, must say so."""
        report = self.stick.expect("zigbeeKeyEstablishmentHandler")
        try:
            stored = await self._clear(suite, store=True)
            if stored is not None:
                return Outcome(False, None, "NOT_STORED", stored)
            try:
                async with asyncio.timeout(KEY_REPORT_WAIT):
                    said = await report
            except TimeoutError:
                said = None
        finally:
            report.cancel()
        if said is not None and said["status"] not in KEY_ESTABLISHED:
            return Outcome(False, None, "NOT_STORED", f"zigbeeKeyEstablishmentHandler: {_name(said['status'])}")
        return Outcome(True, suite.value, "SUCCESS", "")

    # -- the library --------------------------------------------------------------------------------------

    async def _library(self, command: str, callback: str, **args: Any) -> dict[str, Any]:
        """Run `command` and wait for its handler `callback`; its values (status first checked)."""
        handler = self.stick.expect(callback)
        try:
            answer = await self.stick.command(command, **args)
            if not _ok(answer["status"]):
                raise LibraryError(f"the stick's CBKE library: {command} answered {_name(answer['status'])}")
            async with asyncio.timeout(CALLBACK_TIMEOUT):
                values = await handler
        except TimeoutError:
            raise LibraryError(f"the stick's CBKE library: no {callback} within {CALLBACK_TIMEOUT:g} s") from None
        except RadioError as exc:
            raise LibraryError(str(exc)) from None
        finally:
            handler.cancel()
        if not _ok(values["status"]):
            raise LibraryError(f"the stick's CBKE library: {callback} reported {_name(values['status'])}")
        return values

    async def _clear(self, suite: CryptoSuite, *, store: bool) -> str | None:
        """clearTemporaryDataMaybeStoreLinkKey[283k1](store); None when done, else why not."""
        command = f"clearTemporaryDataMaybeStoreLinkKey{SUFFIX[suite]}"
        try:
            answer = await self.stick.command(command, storeLinkKey=store)
        except RadioError as exc:
            return str(exc)
        return None if _ok(answer["status"]) else f"{command} answered {_name(answer['status'])}"

    # -- frames -------------------------------------------------------------------------------------------

    async def _ask(
        self, message: ke.ClientMessage, expected: type[Answer], suite: CryptoSuite, generate_time: int
    ) -> Answer | Outcome:
        """Send `message` and wait for the server's `expected` answer: the server's generate time for it plus the
        transit allowance (Annex C.3.1), resending meanwhile as the host client does. A Terminate, another
        command or an undecodable one ends the exchange (an Outcome)."""
        sent = self._send_message(message)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + generate_time + ke.DEFAULT_TRANSIT_ALLOWANCE
        while True:
            frame = await self._receive(min(deadline - loop.time(), RESEND_AFTER), cluster=True)
            if frame is None:
                if loop.time() >= deadline - MIN_WAIT:
                    return Outcome(False, None, "TIMEOUT", f"timed out waiting for {expected.NAME}")
                self._send_frame(sent)
                continue
            control, tsn, command_id, payload = frame
            self._acknowledge(control, tsn, command_id)
            try:
                answer = ke.decode_server_command(command_id, payload, suite)
            except ke.MessageError as exc:
                return self._terminate(exc.status, str(exc), suite)
            if isinstance(answer, expected):
                return answer
            if isinstance(answer, ke.TerminateKeyEstablishment):
                return self._terminated(answer)
            return self._terminate(
                ke.TerminateStatus.BAD_MESSAGE, f"{answer.NAME} while waiting for {expected.NAME}", suite
            )

    def _terminate(self, status: ke.TerminateStatus, reason: str, suite: CryptoSuite) -> Outcome:
        """End the exchange with Terminate Key Establishment (`status`), as the device's faults let it."""
        terminate = self._as_sent(ke.TerminateKeyEstablishment(status, ke.DEFAULT_TERMINATE_WAIT_TIME, suite.bit))
        if terminate is not None:
            self._send_message(terminate)
        return Outcome(False, None, status.name, reason)

    @staticmethod
    def _terminated(message: ke.TerminateKeyEstablishment) -> Outcome:
        try:
            name = ke.TerminateStatus(message.status).name
        except ValueError:
            name = f"status 0x{message.status:02X}"
        return Outcome(False, None, name, f"partner terminated: {name}, wait {message.wait_time} s")
