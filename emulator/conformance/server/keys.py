"""Smart Energy security on the server bench: a probe that joins with its install-code key and runs the client side
of Key Establishment (SE 07-5356 Annex C.4.2) against the server, and the deliberate server faults that show the
security checks failing.

`KeyProbe` drives the sans-IO `security.key_establishment.Initiator` over ZCL on the probe's radio and keeps every
Key Establishment frame as an `Exchange`, so judges read the server's answers (Initiate Key Establishment Response,
Terminate Key Establishment and its status) from the bytes. The certificate the probe presents is the scenario's
choice (`Presented`): a genuine one of the server's CA, one of a CA the server does not know, or a genuine one that
names another EUI-64. On a server without a Key Establishment server (zigpy's) the probe simply hears nothing.

`ServerFault` breaks our CHF on purpose, around it and not inside it: the APS layer of its radio let clear OTA frames
through (`SecureRadio.refuse_clear`, the switch a deliberately faulty node turns off), or its Key Establishment
server shown each certificate with the issuer (or subject) it expects, as a server that never checks it would act.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import zigpy.types as t

from emulator.chf.trust_centre import TrustCentre, open_transport_key
from emulator.conformance.server.probe import ANSWER_TIMEOUT, LINGER, Exchange, Probe, server_frame
from emulator.conformance.verdict import FrameRecord
from emulator.profiles import SMART_ENERGY_PROFILE, derived_install_code
from emulator.radio.secure import SecureRadio
from emulator.security import key_establishment as ke
from emulator.security.ca import CertificateAuthority
from emulator.security.ccm import FrameSecurityError
from emulator.security.certs import CertificateError, CryptoSuite, DeviceCredentials, parse_certificate
from emulator.security.install_code import InstallCode
from emulator.security.keystore import KeyOrigin, SecurityContext

CLUSTER_SPECIFIC = 0x01
TO_CLIENT = 0x08
DISABLE_DEFAULT_RESPONSE = 0x10
READ_ATTRIBUTES = 0x00
READ_ATTRIBUTES_RESPONSE = 0x01
DEFAULT_RESPONSE = 0x0B
# The issuer of the certificates of a CA no server on the bench knows ("TEST-CA2").
FOREIGN_ISSUER = b"TEST-CA2"


class Presented(enum.Enum):
    """The certificate the probe presents in its Initiate Key Establishment Request."""

    GENUINE = "a genuine certificate of the server's CA for the probe's EUI-64"
    UNKNOWN_ISSUER = "a certificate from a CA the server does not know"
    OTHER_SUBJECT = "a genuine certificate of the server's CA for another EUI-64"


class ServerFault(enum.Enum):
    """A deliberately broken CHF for the security checks (never a profile setting)."""

    ACCEPT_CLEAR_OTA = "its APS layer lets OTA frames without APS encryption through from a device with a link key"
    IGNORE_ISSUER = "its Key Establishment server does not check the certificate's issuer"
    IGNORE_SUBJECT = "its Key Establishment server does not check that the certificate names the sender"


def other_eui(ieee: t.EUI64) -> t.EUI64:
    """The EUI-64 one bit away from `ieee`: whom an OTHER_SUBJECT certificate names."""
    return t.EUI64((int.from_bytes(bytes(ieee), "little") ^ 0x01).to_bytes(8, "little"))


def secure_probe_radio(air: Any, ieee: t.EUI64, trust_centre: TrustCentre, server_ieee: t.EUI64) -> SecureRadio:
    """The radio of a probe that joins as a Smart Energy device: admitted only if it opens the Transport-Key with
    its install code (the test code of its EUI-64, which the bench logs for it)."""
    context = SecurityContext(ieee)

    def admit(node: Any) -> bool:
        transport = trust_centre.admit(ieee)
        if transport is None:
            return False
        try:
            open_transport_key(context, server_ieee, InstallCode.parse(derived_install_code(ieee)), transport.frame)
        except FrameSecurityError:
            return False
        return True

    return SecureRadio(air, context, admission=admit)


@contextlib.contextmanager
def in_clear(probe: Probe) -> Iterator[None]:
    """The probe's frames leave without APS encryption while inside (it keeps its link key)."""
    radio = probe.air
    if not isinstance(radio, SecureRadio):
        yield
        return
    radio.encrypt_outgoing = False
    try:
        yield
    finally:
        radio.encrypt_outgoing = True


def holds_link_key(probe: Probe, server: t.EUI64) -> bool:
    radio = probe.air
    return isinstance(radio, SecureRadio) and radio.context.link_key(server) is not None


class KeyProbe:
    """The Key Establishment client side of `probe`, against the server `server_ieee`."""

    def __init__(self, probe: Probe, server_ieee: t.EUI64) -> None:
        self.probe = probe
        self.server_ieee = server_ieee
        self._inbox: asyncio.Queue[FrameRecord] = asyncio.Queue()
        probe.taps.append(self._tap)

    def _tap(self, packet: t.ZigbeePacket) -> bool:
        if packet.cluster_id != ke.CLUSTER_ID:
            return False
        self._inbox.put_nowait(server_frame(packet, self.probe.clock.now()))
        return True

    async def ask(self, label: str, data: bytes, *, wait: bool = True) -> Exchange:
        """Send a Key Establishment frame; collect the first answer and what follows within `LINGER` (nothing
        for a frame that expects none)."""
        while not self._inbox.empty():
            self._inbox.get_nowait()
        exchange = Exchange(label, self.probe.send_raw(data, cluster_id=ke.CLUSTER_ID, profile_id=SMART_ENERGY_PROFILE))
        if wait:
            timeout = ANSWER_TIMEOUT
            with contextlib.suppress(TimeoutError):
                while True:
                    exchange.answers.append(await asyncio.wait_for(self._inbox.get(), timeout))
                    timeout = LINGER
        return exchange

    async def read_suites(self) -> tuple[Exchange, int]:
        """Read the server's KeyEstablishmentSuite attribute (0x0000); 0 when it does not answer."""
        frame = bytes([0x00, self.probe.next_tsn(), READ_ATTRIBUTES]) + struct.pack("<H", 0)
        exchange = await self.ask("read KeyEstablishmentSuite", frame)
        for answer in exchange.answers:
            data = bytes.fromhex(answer.hex)
            if len(data) >= 8 and data[2] == READ_ATTRIBUTES_RESPONSE and data[5] == 0:
                return exchange, int.from_bytes(data[7:9], "little")
        return exchange, 0

    async def establish(
        self, label: str, credentials: Mapping[CryptoSuite, DeviceCredentials], suites: int
    ) -> tuple[list[Exchange], ke.Outcome | None]:
        """Run CBKE presenting `credentials`; every exchange, and how it ended (None: the server fell silent).
        On success the probe's radio holds the new link key."""
        initiator = ke.Initiator(credentials, bytes(self.server_ieee)[::-1])
        loop = asyncio.get_running_loop()
        step = initiator.start(loop.time(), suites)
        exchanges: list[Exchange] = []
        answer: FrameRecord | None = None
        while step.outbound:
            message = step.outbound[0]
            data = bytes([CLUSTER_SPECIFIC | DISABLE_DEFAULT_RESPONSE, self.probe.next_tsn(), message.COMMAND_ID])
            exchange = await self.ask(f"{label}: {message.NAME}", data + message.to_bytes(), wait=step.outcome is None)
            exchanges.append(exchange)
            if step.outcome is not None:
                break
            answer = next((a for a in exchange.answers if _to_client(a)), None)
            if answer is None:
                return exchanges, None
            raw = bytes.fromhex(answer.hex)
            step = initiator.receive_payload(raw[2], raw[3:], loop.time())
        outcome = step.outcome
        if isinstance(outcome, ke.Established):
            # The initiator acknowledges the Confirm Key Data Response with a Default Response (Annex C.4.2.2.4).
            confirm = b"" if answer is None else bytes.fromhex(answer.hex)
            if confirm and not confirm[0] & DISABLE_DEFAULT_RESPONSE:
                acknowledged = bytes([DISABLE_DEFAULT_RESPONSE, confirm[1], DEFAULT_RESPONSE, confirm[2], 0x00])
                exchanges.append(await self.ask(f"{label}: Default Response SUCCESS", acknowledged, wait=False))
            if isinstance(self.probe.air, SecureRadio):
                self.probe.air.context.set_link_key(self.server_ieee, outcome.key_data, KeyOrigin.CBKE)
        return exchanges, outcome


def _to_client(frame: FrameRecord) -> bool:
    data = bytes.fromhex(frame.hex)
    return len(data) >= 3 and data[0] & 0x03 == CLUSTER_SPECIFIC and bool(data[0] & TO_CLIENT)


def presented_credentials(
    presented: Presented, ieee: t.EUI64, issue: Callable[[t.EUI64, CryptoSuite], DeviceCredentials]
) -> dict[CryptoSuite, DeviceCredentials]:
    """The probe's credentials for each suite: `issue` is the server's test CA (our CHF's), whose certificate a
    GENUINE or OTHER_SUBJECT presentation carries; UNKNOWN_ISSUER comes from a CA of the probe's own."""
    issued = {}
    for suite in CryptoSuite:
        if presented is Presented.UNKNOWN_ISSUER:
            issued[suite] = CertificateAuthority.generate(suite, issuer=FOREIGN_ISSUER).issue(bytes(ieee)[::-1])
        else:
            issued[suite] = issue(other_eui(ieee) if presented is Presented.OTHER_SUBJECT else ieee, suite)
    return issued


class BlindKeyServerApp:
    """The CHF's app as its Key Establishment server sees it under an IGNORE_ISSUER or IGNORE_SUBJECT fault: every
    certificate in an Initiate Key Establishment Request arrives with the issuer (or the subject) the server
    expects, so the server goes on as one that never checks it would."""

    def __init__(self, app: Any, faults: Iterable[ServerFault], issuer: bytes) -> None:
        self.app = app
        self.faults = frozenset(faults)
        self.issuer = issuer

    @property
    def devices(self) -> Any:
        return self.app.devices

    def get_device(self, *args: Any, **kwargs: Any) -> Any:
        return self.app.get_device(*args, **kwargs)

    def transmit(self, packet: t.ZigbeePacket) -> None:
        self.app.transmit(packet)

    def add_ingress_handler(self, handler: Callable[[t.ZigbeePacket], bool]) -> Callable[[], None]:
        def blind(packet: t.ZigbeePacket) -> bool:
            return handler(self._rewritten(packet))

        remove: Callable[[], None] = self.app.add_ingress_handler(blind)
        return remove

    def _rewritten(self, packet: t.ZigbeePacket) -> t.ZigbeePacket:
        data = packet.data.serialize()
        initiate = ke.ClientCommand.INITIATE_KEY_ESTABLISHMENT_REQUEST
        if packet.cluster_id != ke.CLUSTER_ID or len(data) < 10 or data[0] & 0x0B != CLUSTER_SPECIFIC:
            return packet
        suite = next((s for s in CryptoSuite if s.bit == int.from_bytes(data[3:5], "little")), None)
        if data[2] != initiate or suite is None or packet.src is None:
            return packet
        try:
            certificate = parse_certificate(data[7:], suite, "certificate")
            sender = self.app.get_device(nwk=packet.src.address).ieee
        except (CertificateError, KeyError):
            return packet
        if ServerFault.IGNORE_ISSUER in self.faults:
            certificate = dataclasses.replace(certificate, issuer=self.issuer)
        if ServerFault.IGNORE_SUBJECT in self.faults:
            certificate = dataclasses.replace(certificate, subject=bytes(sender)[::-1])
        return packet.replace(data=t.SerializableBytes(data[:7] + certificate.to_bytes()))
