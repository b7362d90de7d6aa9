"""The Smart Energy Key Establishment cluster (0x0800) as pure, sans-IO code: typed command payloads and the two
state machines of certificate-based key establishment (Smart Energy 07-5356 Annex C.3.1 cluster, C.4.2 CBKE).

The joining device is the initiator U (`Initiator`), the trust centre / CHF the responder V (`Responder`):

    U → V  Initiate Key Establishment Request   suite, U's generate times, U's certificate
    V → U  Initiate Key Establishment Response  suite, V's generate times, V's certificate
    U → V  Ephemeral Data Request               QEU
    V → U  Ephemeral Data Response              QEV
    U → V  Confirm Key Data Request             MACU
    V → U  Confirm Key Data Response            MACV   (U then acknowledges with a ZCL Default Response)

Each machine takes an inbound command and the current time and returns a `Step`: the commands to send and, at the
end, an outcome: `Established` (KeyData, the new APS link key, and the partner's EUI-64) or `Failed` with the
Terminate Key Establishment command to send. Bad input from the partner never raises: a malformed or
out-of-sequence command ends the exchange with BAD_MESSAGE, an unknown issuer with UNKNOWN_ISSUER, an invalid
suite-2 certificate with INVALID_CERTIFICATE, a MAC mismatch with BAD_KEY_CONFIRM, an unsupported suite with
UNSUPPORTED_SUITE. A partner that stays silent past `deadline()` fails the exchange without a Terminate (Annex
C.3.1: a device that times out does not send Terminate). The deadline of each wait is the generate time the
partner advertised in its Initiate command for the step it is working on, plus a transit allowance for the
network (Annex C.3.1 asks for at least 2 s; Silicon Labs' stack allows 10 s, the default here).

The ZCL header (frame control, sequence number, the Default Response), APS delivery and retries belong to the
driver; this module only sees payloads. EUI-64s are 8 bytes most significant first, as in the certificates.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from emulator.errors import InputError
from emulator.security.cbke import KeyAgreement, agree
from emulator.security.certs import CertificateError, CryptoSuite, DeviceCredentials, parse_certificate
from emulator.security.koblitz import Curve, PointError, PrivateKey

CLUSTER_ID = 0x0800
SMART_ENERGY_PROFILE = 0x0109
KEY_ESTABLISHMENT_SUITE_ATTRIBUTE = 0x0000
MAC_LENGTH = 16
DEFAULT_EPHEMERAL_DATA_GENERATE_TIME = 2
DEFAULT_CONFIRM_KEY_GENERATE_TIME = 2
DEFAULT_TRANSIT_ALLOWANCE = 10.0
DEFAULT_TERMINATE_WAIT_TIME = 30


class TerminateStatus(enum.IntEnum):
    """Status of Terminate Key Establishment (Annex C.3.1)."""

    UNKNOWN_ISSUER = 0x01
    BAD_KEY_CONFIRM = 0x02
    BAD_MESSAGE = 0x03
    NO_RESOURCES = 0x04
    UNSUPPORTED_SUITE = 0x05
    INVALID_CERTIFICATE = 0x06


class ClientCommand(enum.IntEnum):
    """Commands the client (initiator) sends to the server."""

    INITIATE_KEY_ESTABLISHMENT_REQUEST = 0x00
    EPHEMERAL_DATA_REQUEST = 0x01
    CONFIRM_KEY_DATA_REQUEST = 0x02
    TERMINATE_KEY_ESTABLISHMENT = 0x03


class ServerCommand(enum.IntEnum):
    """Commands the server (responder) sends to the client."""

    INITIATE_KEY_ESTABLISHMENT_RESPONSE = 0x00
    EPHEMERAL_DATA_RESPONSE = 0x01
    CONFIRM_KEY_DATA_RESPONSE = 0x02
    TERMINATE_KEY_ESTABLISHMENT = 0x03


class MessageError(InputError):
    """A Key Establishment payload that cannot be decoded; `status` is what to terminate with."""

    def __init__(self, message: str, status: TerminateStatus = TerminateStatus.BAD_MESSAGE) -> None:
        super().__init__(message)
        self.status = status


def suite_of(value: int) -> CryptoSuite:
    """The suite named by a KeyEstablishmentSuite field with exactly one bit set."""
    for suite in CryptoSuite:
        if value == suite.bit:
            return suite
    raise MessageError(
        f"key establishment suite 0x{value:04X} (expected exactly one of "
        + ", ".join(f"0x{s.bit:04X}" for s in CryptoSuite)
        + ")",
        TerminateStatus.UNSUPPORTED_SUITE,
    )


def suite_bits(suites: Iterable[CryptoSuite]) -> int:
    """The KeyEstablishmentSuite attribute value advertising `suites`."""
    bits = 0
    for suite in suites:
        bits |= suite.bit
    return bits


def choose_suite(ours: Iterable[CryptoSuite], partner_attribute: int) -> CryptoSuite | None:
    """The strongest suite both sides support. A partner attribute of 0 (old stacks, the test harness) means
    suite 1, as Silicon Labs' stack reads it."""
    offered = partner_attribute or CryptoSuite.SUITE_1.bit
    common = [suite for suite in ours if offered & suite.bit]
    return max(common) if common else None


def _need(data: bytes, length: int, what: str) -> None:
    if len(data) != length:
        raise MessageError(f"{what}: {len(data)} bytes (expected {length})")


# --- payloads ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Initiate:
    suite: int  # KeyEstablishmentSuite bit as sent
    ephemeral_data_generate_time: int
    confirm_key_generate_time: int
    certificate: bytes

    NAME: ClassVar[str] = "Initiate Key Establishment"
    COMMAND_ID: ClassVar[int] = 0x00

    def to_bytes(self) -> bytes:
        return (
            self.suite.to_bytes(2, "little")
            + bytes([self.ephemeral_data_generate_time, self.confirm_key_generate_time])
            + self.certificate
        )

    @classmethod
    def _decode(cls, data: bytes) -> tuple[int, int, int, bytes]:
        if len(data) < 4:
            raise MessageError(f"{cls.NAME}: {len(data)} bytes (expected 52 or 78)")
        suite = suite_of(int.from_bytes(data[0:2], "little"))
        _need(data, 4 + suite.certificate_length, f"{cls.NAME} for suite {suite.value}")
        return suite.bit, data[2], data[3], bytes(data[4:])


@dataclass(frozen=True, slots=True)
class InitiateKeyEstablishmentRequest(_Initiate):
    """Client → server 0x00: the initiator's suite, generate times (seconds) and certificate (52/78 bytes)."""

    NAME: ClassVar[str] = "Initiate Key Establishment Request"

    @classmethod
    def from_bytes(cls, data: bytes) -> InitiateKeyEstablishmentRequest:
        return cls(*cls._decode(data))


@dataclass(frozen=True, slots=True)
class InitiateKeyEstablishmentResponse(_Initiate):
    """Server → client 0x00: the responder's suite, generate times and certificate (52/78 bytes)."""

    NAME: ClassVar[str] = "Initiate Key Establishment Response"

    @classmethod
    def from_bytes(cls, data: bytes) -> InitiateKeyEstablishmentResponse:
        return cls(*cls._decode(data))


@dataclass(frozen=True, slots=True)
class _Ephemeral:
    ephemeral: bytes  # compressed ephemeral public key, 22 or 37 bytes

    NAME: ClassVar[str] = "Ephemeral Data"
    COMMAND_ID: ClassVar[int] = 0x01

    def to_bytes(self) -> bytes:
        return self.ephemeral


@dataclass(frozen=True, slots=True)
class EphemeralDataRequest(_Ephemeral):
    """Client → server 0x01: QEU (22/37 bytes)."""

    NAME: ClassVar[str] = "Ephemeral Data Request"

    @classmethod
    def from_bytes(cls, data: bytes, suite: CryptoSuite) -> EphemeralDataRequest:
        _need(data, suite.curve.point_bytes, f"{cls.NAME} for suite {suite.value}")
        return cls(bytes(data))


@dataclass(frozen=True, slots=True)
class EphemeralDataResponse(_Ephemeral):
    """Server → client 0x01: QEV (22/37 bytes)."""

    NAME: ClassVar[str] = "Ephemeral Data Response"

    @classmethod
    def from_bytes(cls, data: bytes, suite: CryptoSuite) -> EphemeralDataResponse:
        _need(data, suite.curve.point_bytes, f"{cls.NAME} for suite {suite.value}")
        return cls(bytes(data))


@dataclass(frozen=True, slots=True)
class _Confirm:
    mac: bytes

    NAME: ClassVar[str] = "Confirm Key Data"
    COMMAND_ID: ClassVar[int] = 0x02

    def to_bytes(self) -> bytes:
        return self.mac


@dataclass(frozen=True, slots=True)
class ConfirmKeyDataRequest(_Confirm):
    """Client → server 0x02: MACU (16 bytes)."""

    NAME: ClassVar[str] = "Confirm Key Data Request"

    @classmethod
    def from_bytes(cls, data: bytes) -> ConfirmKeyDataRequest:
        _need(data, MAC_LENGTH, cls.NAME)
        return cls(bytes(data))


@dataclass(frozen=True, slots=True)
class ConfirmKeyDataResponse(_Confirm):
    """Server → client 0x02: MACV (16 bytes)."""

    NAME: ClassVar[str] = "Confirm Key Data Response"

    @classmethod
    def from_bytes(cls, data: bytes) -> ConfirmKeyDataResponse:
        _need(data, MAC_LENGTH, cls.NAME)
        return cls(bytes(data))


@dataclass(frozen=True, slots=True)
class TerminateKeyEstablishment:
    """0x03, either direction: status, the time (seconds) to wait before trying again, and a suite value."""

    status: int
    wait_time: int
    suite: int

    NAME: ClassVar[str] = "Terminate Key Establishment"
    COMMAND_ID: ClassVar[int] = 0x03

    def to_bytes(self) -> bytes:
        return bytes([self.status, self.wait_time]) + self.suite.to_bytes(2, "little")

    @classmethod
    def from_bytes(cls, data: bytes) -> TerminateKeyEstablishment:
        _need(data, 4, cls.NAME)
        return cls(data[0], data[1], int.from_bytes(data[2:4], "little"))


ClientMessage = (
    InitiateKeyEstablishmentRequest | EphemeralDataRequest | ConfirmKeyDataRequest | TerminateKeyEstablishment
)
ServerMessage = (
    InitiateKeyEstablishmentResponse | EphemeralDataResponse | ConfirmKeyDataResponse | TerminateKeyEstablishment
)
Message = ClientMessage | ServerMessage


def decode_client_command(command_id: int, payload: bytes, suite: CryptoSuite | None) -> ClientMessage:
    """A client → server payload; `suite` (the exchange's, once known) sizes the Ephemeral Data Request."""
    if command_id == ClientCommand.INITIATE_KEY_ESTABLISHMENT_REQUEST:
        return InitiateKeyEstablishmentRequest.from_bytes(payload)
    if command_id == ClientCommand.EPHEMERAL_DATA_REQUEST:
        return EphemeralDataRequest.from_bytes(payload, _suite_for(suite, EphemeralDataRequest.NAME))
    if command_id == ClientCommand.CONFIRM_KEY_DATA_REQUEST:
        return ConfirmKeyDataRequest.from_bytes(payload)
    if command_id == ClientCommand.TERMINATE_KEY_ESTABLISHMENT:
        return TerminateKeyEstablishment.from_bytes(payload)
    raise MessageError(f"Key Establishment client command 0x{command_id:02X} (expected 0x00..0x03)")


def decode_server_command(command_id: int, payload: bytes, suite: CryptoSuite | None) -> ServerMessage:
    """A server → client payload; `suite` sizes the Ephemeral Data Response."""
    if command_id == ServerCommand.INITIATE_KEY_ESTABLISHMENT_RESPONSE:
        return InitiateKeyEstablishmentResponse.from_bytes(payload)
    if command_id == ServerCommand.EPHEMERAL_DATA_RESPONSE:
        return EphemeralDataResponse.from_bytes(payload, _suite_for(suite, EphemeralDataResponse.NAME))
    if command_id == ServerCommand.CONFIRM_KEY_DATA_RESPONSE:
        return ConfirmKeyDataResponse.from_bytes(payload)
    if command_id == ServerCommand.TERMINATE_KEY_ESTABLISHMENT:
        return TerminateKeyEstablishment.from_bytes(payload)
    raise MessageError(f"Key Establishment server command 0x{command_id:02X} (expected 0x00..0x03)")


def _suite_for(suite: CryptoSuite | None, what: str) -> CryptoSuite:
    if suite is None:
        raise MessageError(f"{what} before Initiate Key Establishment (expected the exchange to have started)")
    return suite


def partner_certificate_problem(
    data: bytes, suite: CryptoSuite, issuer: bytes, partner: bytes
) -> tuple[TerminateStatus, str] | None:
    """What is wrong with the partner's certificate `data`, checked in Silicon Labs' order (issuer, subject,
    validity) against the issuer of our own certificate and the partner's EUI-64 (most significant first), as the
    status to terminate with and why; None when it may be used. Shared by the sans-IO machines and by drivers
    whose cryptography runs elsewhere (an NCP's CBKE library), which must check before any computation."""
    try:
        certificate = parse_certificate(data, suite, "partner certificate")
    except CertificateError as exc:
        return TerminateStatus.BAD_MESSAGE, str(exc)
    if certificate.issuer != issuer:
        return (
            TerminateStatus.UNKNOWN_ISSUER,
            f"partner certificate issuer {certificate.issuer.hex().upper()} (expected {issuer.hex().upper()})",
        )
    if certificate.subject != partner:
        return (
            TerminateStatus.BAD_MESSAGE,
            f"partner certificate subject {certificate.subject.hex().upper()} (expected the partner's EUI-64 "
            f"{partner.hex().upper()})",
        )
    problems = certificate.problems()
    if problems:
        return TerminateStatus.INVALID_CERTIFICATE, f"partner certificate: {problems[0].value}"
    return None


# --- outcomes ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Established:
    """Key establishment succeeded: `key_data` is the new APS link key shared with `partner`."""

    suite: CryptoSuite
    partner: bytes
    key_data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Failed:
    """Key establishment failed. `status` is why (None for a timeout); `terminate` is the command to send to the
    partner, None when nothing is to be sent (a timeout, or the partner terminated)."""

    status: TerminateStatus | None
    reason: str
    terminate: TerminateKeyEstablishment | None


Outcome = Established | Failed


@dataclass(frozen=True, slots=True)
class Step:
    """What a machine asks its driver to do: send `outbound` (in order) and, when set, act on `outcome`."""

    outbound: tuple[Message, ...] = ()
    outcome: Outcome | None = None


class _State(enum.Enum):
    IDLE = "idle"
    WAIT_INITIATE = "waiting for Initiate Key Establishment"
    WAIT_EPHEMERAL = "waiting for Ephemeral Data"
    WAIT_CONFIRM = "waiting for Confirm Key Data"
    DONE = "done"


EphemeralSource = Callable[[Curve], PrivateKey]


class _Party:
    """What initiator and responder share: credentials per suite, timing, and how an exchange ends."""

    def __init__(
        self,
        credentials: DeviceCredentials | Mapping[CryptoSuite, DeviceCredentials],
        partner: bytes,
        *,
        ephemeral_data_generate_time: int,
        confirm_key_generate_time: int,
        transit_allowance: float,
        terminate_wait_time: int,
        ephemeral_key: EphemeralSource,
    ) -> None:
        # Looked up, never copied: credentials issued on demand are issued only for the suite the exchange uses.
        self.credentials: Mapping[CryptoSuite, DeviceCredentials] = (
            {credentials.suite: credentials} if isinstance(credentials, DeviceCredentials) else credentials
        )
        if not self.credentials:
            raise ValueError("key establishment needs credentials for at least one suite")
        if len(partner) != 8:
            raise ValueError(f"partner EUI-64: {len(partner)} bytes (expected 8, most significant first)")
        for value in (ephemeral_data_generate_time, confirm_key_generate_time, terminate_wait_time):
            if not 0 <= value <= 0xFE:
                raise ValueError(f"generate/wait time {value} s (expected 0..254)")
        self.partner = bytes(partner)
        self.ephemeral_data_generate_time = ephemeral_data_generate_time
        self.confirm_key_generate_time = confirm_key_generate_time
        self.transit_allowance = transit_allowance
        self.terminate_wait_time = terminate_wait_time
        self._ephemeral_source = ephemeral_key
        self.suite: CryptoSuite | None = None
        self.state = _State.IDLE
        self.outcome: Outcome | None = None
        self._deadline: float | None = None
        self._partner_times = (0, 0)
        self._partner_certificate: bytes = b""
        self._ephemeral: PrivateKey | None = None
        self._ephemeral_public = b""
        self._agreement: KeyAgreement | None = None

    @property
    def supported_suites(self) -> int:
        """This side's KeyEstablishmentSuite attribute value."""
        return suite_bits(self.credentials)

    def deadline(self) -> float | None:
        """When the partner's next command is due (same clock as `now`); None when nothing is awaited."""
        return self._deadline

    def timeout(self, now: float) -> Step:
        """Call at or after `deadline()`: fails the exchange without a Terminate (Annex C.3.1)."""
        if self._deadline is None or now < self._deadline:
            return Step()
        return self._finish(Failed(None, f"timed out {self.state.value}", None))

    def _wait(self, state: _State, now: float, generate_time: int) -> None:
        self.state = state
        self._deadline = now + generate_time + self.transit_allowance

    def _finish(self, outcome: Outcome, *outbound: Message) -> Step:
        self.state = _State.DONE
        self._deadline = None
        self.outcome = outcome
        self._ephemeral = None
        return Step(tuple(outbound), outcome)

    def _fail(self, status: TerminateStatus, reason: str, *, suite: int | None = None) -> Step:
        value = suite if suite is not None else (self.suite.bit if self.suite else self.supported_suites)
        terminate = TerminateKeyEstablishment(status, self.terminate_wait_time, value)
        return self._finish(Failed(status, reason, terminate), terminate)

    def _terminated(self, message: TerminateKeyEstablishment) -> Step:
        status: TerminateStatus | None
        try:
            status = TerminateStatus(message.status)
            name = status.name
        except ValueError:
            status, name = None, f"status 0x{message.status:02X}"
        return self._finish(Failed(status, f"partner terminated: {name}, wait {message.wait_time} s", None))

    def _initiate_fields(self, suite: CryptoSuite) -> tuple[int, int, int, bytes]:
        return (
            suite.bit,
            self.ephemeral_data_generate_time,
            self.confirm_key_generate_time,
            self.credentials[suite].certificate.to_bytes(),
        )

    def _check_partner_initiate(self, message: _Initiate) -> Step | None:
        assert self.suite is not None
        ours = self.credentials[self.suite]
        problem = partner_certificate_problem(message.certificate, self.suite, ours.certificate.issuer, self.partner)
        if problem is not None:
            return self._fail(*problem)
        self._partner_certificate = message.certificate
        self._partner_times = (message.ephemeral_data_generate_time, message.confirm_key_generate_time)
        return None

    def _new_ephemeral(self) -> bytes:
        assert self.suite is not None
        self._ephemeral = self._ephemeral_source(self.suite.curve)
        self._ephemeral_public = self._ephemeral.public_key().to_bytes()
        return self._ephemeral_public

    def _agree(self, partner_ephemeral: bytes, *, initiator: bool) -> KeyAgreement | Step:
        assert self.suite is not None and self._ephemeral is not None
        try:
            return agree(
                self.credentials[self.suite],
                self._ephemeral,
                self._ephemeral_public,
                parse_certificate(self._partner_certificate, self.suite),
                partner_ephemeral,
                initiator=initiator,
            )
        except (CertificateError, PointError) as exc:
            return self._fail(TerminateStatus.BAD_MESSAGE, str(exc))

    def _unexpected(self, message: Message) -> Step:
        if self.state is _State.DONE:
            return Step()
        if isinstance(message, TerminateKeyEstablishment):
            return self._terminated(message)
        return self._fail(TerminateStatus.BAD_MESSAGE, f"{message.NAME} while {self.state.value}")

    def _late(self, now: float) -> bool:
        return self._deadline is not None and now >= self._deadline


class Initiator(_Party):
    """The initiator U: the joining device (Annex C.4.2). `start` sends the Initiate Key Establishment Request."""

    def __init__(
        self,
        credentials: DeviceCredentials | Mapping[CryptoSuite, DeviceCredentials],
        partner: bytes,
        *,
        ephemeral_data_generate_time: int = DEFAULT_EPHEMERAL_DATA_GENERATE_TIME,
        confirm_key_generate_time: int = DEFAULT_CONFIRM_KEY_GENERATE_TIME,
        transit_allowance: float = DEFAULT_TRANSIT_ALLOWANCE,
        terminate_wait_time: int = DEFAULT_TERMINATE_WAIT_TIME,
        ephemeral_key: EphemeralSource = PrivateKey.generate,
    ) -> None:
        super().__init__(
            credentials,
            partner,
            ephemeral_data_generate_time=ephemeral_data_generate_time,
            confirm_key_generate_time=confirm_key_generate_time,
            transit_allowance=transit_allowance,
            terminate_wait_time=terminate_wait_time,
            ephemeral_key=ephemeral_key,
        )

    def start(self, now: float, partner_suites: int = 0) -> Step:
        """Begin with the strongest suite in the partner's KeyEstablishmentSuite attribute (0: suite 1). No
        common suite fails at once, with nothing to send."""
        if self.state is not _State.IDLE:
            raise RuntimeError("key establishment already started")
        suite = choose_suite(self.credentials, partner_suites)
        if suite is None:
            return self._finish(
                Failed(
                    TerminateStatus.UNSUPPORTED_SUITE,
                    f"partner supports suites 0x{partner_suites:04X} (expected one of 0x{self.supported_suites:04X})",
                    None,
                )
            )
        self.suite = suite
        self._wait(_State.WAIT_INITIATE, now, 0)
        return Step((InitiateKeyEstablishmentRequest(*self._initiate_fields(suite)),))

    def receive_payload(self, command_id: int, payload: bytes, now: float) -> Step:
        """`receive` for a raw server → client payload; undecodable payloads end the exchange with BAD_MESSAGE."""
        if self.state is _State.DONE:
            return Step()
        try:
            message = decode_server_command(command_id, payload, self.suite)
        except MessageError as exc:
            return self._fail(exc.status, str(exc))
        return self.receive(message, now)

    def receive(self, message: ServerMessage, now: float) -> Step:
        if self.state is _State.DONE:
            return Step()
        if self._late(now):
            return self.timeout(now)
        if isinstance(message, InitiateKeyEstablishmentResponse) and self.state is _State.WAIT_INITIATE:
            return self._on_initiate_response(message, now)
        if isinstance(message, EphemeralDataResponse) and self.state is _State.WAIT_EPHEMERAL:
            return self._on_ephemeral_response(message, now)
        if isinstance(message, ConfirmKeyDataResponse) and self.state is _State.WAIT_CONFIRM:
            return self._on_confirm_response(message)
        return self._unexpected(message)

    def _on_initiate_response(self, message: InitiateKeyEstablishmentResponse, now: float) -> Step:
        assert self.suite is not None
        if message.suite != self.suite.bit:
            return self._fail(
                TerminateStatus.UNSUPPORTED_SUITE,
                f"responder chose suite 0x{message.suite:04X} (expected 0x{self.suite.bit:04X}, as requested)",
            )
        failed = self._check_partner_initiate(message)
        if failed is not None:
            return failed
        ephemeral = self._new_ephemeral()
        self._wait(_State.WAIT_EPHEMERAL, now, self._partner_times[0])
        return Step((EphemeralDataRequest(ephemeral),))

    def _on_ephemeral_response(self, message: EphemeralDataResponse, now: float) -> Step:
        agreement = self._agree(message.ephemeral, initiator=True)
        if isinstance(agreement, Step):
            return agreement
        self._agreement = agreement
        self._wait(_State.WAIT_CONFIRM, now, self._partner_times[1])
        return Step((ConfirmKeyDataRequest(agreement.mac_u),))

    def _on_confirm_response(self, message: ConfirmKeyDataResponse) -> Step:
        assert self._agreement is not None and self.suite is not None
        if message.mac != self._agreement.mac_v:
            return self._fail(TerminateStatus.BAD_KEY_CONFIRM, "MACV from the responder does not match")
        return self._finish(Established(self.suite, self.partner, self._agreement.key_data))


class Responder(_Party):
    """The responder V: the trust centre / CHF side of one exchange with the initiator `partner`.

    A driver that is busy with another exchange answers a new initiator with `busy(...)` (NO_RESOURCES)."""

    def __init__(
        self,
        credentials: DeviceCredentials | Mapping[CryptoSuite, DeviceCredentials],
        partner: bytes,
        *,
        ephemeral_data_generate_time: int = DEFAULT_EPHEMERAL_DATA_GENERATE_TIME,
        confirm_key_generate_time: int = DEFAULT_CONFIRM_KEY_GENERATE_TIME,
        transit_allowance: float = DEFAULT_TRANSIT_ALLOWANCE,
        terminate_wait_time: int = DEFAULT_TERMINATE_WAIT_TIME,
        ephemeral_key: EphemeralSource = PrivateKey.generate,
    ) -> None:
        super().__init__(
            credentials,
            partner,
            ephemeral_data_generate_time=ephemeral_data_generate_time,
            confirm_key_generate_time=confirm_key_generate_time,
            transit_allowance=transit_allowance,
            terminate_wait_time=terminate_wait_time,
            ephemeral_key=ephemeral_key,
        )
        self.state = _State.WAIT_INITIATE

    @staticmethod
    def busy(wait_time: int = DEFAULT_TERMINATE_WAIT_TIME, suite: int = 0) -> TerminateKeyEstablishment:
        """The Terminate for an initiator that arrives while another exchange is running."""
        return TerminateKeyEstablishment(TerminateStatus.NO_RESOURCES, wait_time, suite)

    def receive_payload(self, command_id: int, payload: bytes, now: float) -> Step:
        """`receive` for a raw client → server payload; undecodable payloads end the exchange (BAD_MESSAGE, or
        UNSUPPORTED_SUITE for an Initiate naming no single known suite)."""
        if self.state is _State.DONE:
            return Step()
        try:
            message = decode_client_command(command_id, payload, self.suite)
        except MessageError as exc:
            return self._fail(exc.status, str(exc))
        return self.receive(message, now)

    def receive(self, message: ClientMessage, now: float) -> Step:
        if self.state is _State.DONE:
            return Step()
        if self._late(now):
            return self.timeout(now)
        if isinstance(message, InitiateKeyEstablishmentRequest) and self.state is _State.WAIT_INITIATE:
            return self._on_initiate_request(message, now)
        if isinstance(message, EphemeralDataRequest) and self.state is _State.WAIT_EPHEMERAL:
            return self._on_ephemeral_request(message, now)
        if isinstance(message, ConfirmKeyDataRequest) and self.state is _State.WAIT_CONFIRM:
            return self._on_confirm_request(message)
        return self._unexpected(message)

    def _on_initiate_request(self, message: InitiateKeyEstablishmentRequest, now: float) -> Step:
        try:
            suite = suite_of(message.suite)
        except MessageError as exc:
            return self._fail(TerminateStatus.UNSUPPORTED_SUITE, str(exc), suite=self.supported_suites)
        if suite not in self.credentials:
            return self._fail(
                TerminateStatus.UNSUPPORTED_SUITE,
                f"initiator asked for suite {suite.value} (expected one of 0x{self.supported_suites:04X})",
                suite=self.supported_suites,
            )
        self.suite = suite
        failed = self._check_partner_initiate(message)
        if failed is not None:
            return failed
        self._wait(_State.WAIT_EPHEMERAL, now, self._partner_times[0])
        return Step((InitiateKeyEstablishmentResponse(*self._initiate_fields(suite)),))

    def _on_ephemeral_request(self, message: EphemeralDataRequest, now: float) -> Step:
        ephemeral = self._new_ephemeral()
        agreement = self._agree(message.ephemeral, initiator=False)
        if isinstance(agreement, Step):
            return agreement
        self._agreement = agreement
        self._wait(_State.WAIT_CONFIRM, now, self._partner_times[1])
        return Step((EphemeralDataResponse(ephemeral),))

    def _on_confirm_request(self, message: ConfirmKeyDataRequest) -> Step:
        assert self._agreement is not None and self.suite is not None
        if message.mac != self._agreement.mac_u:
            return self._fail(TerminateStatus.BAD_KEY_CONFIRM, "MACU from the initiator does not match")
        return self._finish(
            Established(self.suite, self.partner, self._agreement.key_data),
            ConfirmKeyDataResponse(self._agreement.mac_v),
        )
