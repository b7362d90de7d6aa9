"""The Smart Energy security checks SE-01 … SE-06: the test CHF as trust centre and Key Establishment server.

Each play step puts the DUT on a network of its own whose CHF speaks Smart Energy security (ZSE 07-5356 §5.4:
admission by install code, CBKE with the Key Establishment cluster of Annex C, APS-encrypted OTA): a fresh air,
a CHF on an APS security layer (`radio.secure.SecureRadio`) with the project's trust centre and Key
Establishment server (`han.security.HanSecurity`), and the DUT restarted onto it with the bench's security
(`interface.Link.security`). The CHF then plays the part the check needs:

* SE-01: its Device Log holds another install code for the DUT, so the Transport-Key is under a key the DUT
  cannot derive; the DUT must stay off the network (and join as control with its own code).
* SE-02: a genuine exchange; the DUT must complete CBKE and then send its OTA frames APS-encrypted.
* SE-03 … SE-05: the server is made to lie on its way out (`_KeServerApp`): its Initiate Key Establishment
  Response carries a certificate of another CA or of another EUI-64, or its Confirm Key Data Response a wrong
  MACV; the DUT must send Terminate Key Establishment with UNKNOWN_ISSUER, BAD_MESSAGE or BAD_KEY_CONFIRM.
* SE-06: once the DUT holds a link key, a unicast Image Notify sent past the CHF's APS layer in the clear must
  not draw a query, where the same notify APS-encrypted does.

The evidence is the CHF radio's record, as everywhere on the bench, plus the CHF's security events (frames its
APS layer refused, how CBKE ended). A DUT that does not take the bench's SE security (`security = "none"`, a
harness without it) finds the checks not applicable; on the EZSP path (bellows and an NCP, or a device on a
stick) they are inconclusive: the NCP's own stack does the APS security there, and it cannot be made to play the
faults these checks need (a device on a stick given `--install-code` does join by install code, run CBKE and get
APS-encrypted OTA from the bench's CHF, which the OTA checks then run over).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zigpy.types as t

from emulator.chf import key_establishment as chf_ke
from emulator.chf.events import ServerEvent
from emulator.chf.node import ChfNode
from emulator.conformance.device.testchf import CHF_NWK, TEST_CHF, TestChf, chf_sent, dut_sent
from emulator.conformance.device.trial import Trial
from emulator.conformance.interface import Ability, Link
from emulator.conformance.verdict import FrameRecord, Inconclusive, Judgement, NotApplicable, Verdict, evidence
from emulator.device import security_events as sev
from emulator.han.network import FIRST_DEVICE_NWK
from emulator.han.security import HanSecurity
from emulator.ota import frames
from emulator.profiles import DeviceLogEntry, DeviceProfile, derived_install_code
from emulator.radio.air import Air
from emulator.radio.loopback import LoopbackApp
from emulator.radio.secure import DropReason
from emulator.security import key_establishment as ke
from emulator.security.ca import CertificateAuthority
from emulator.security.certs import CryptoSuite

KE_CLUSTER = ke.CLUSTER_ID
CLUSTER_SPECIFIC = 0x01
TO_CLIENT = 0x08
# How long (protocol seconds) the DUT gets to join and finish (or give up) key establishment: its discovery and
# read of the suite, four exchanges of up to 10 s transit allowance each, and retries.
KE_WAIT = 120.0
# Offset of the certificate in an Initiate Key Establishment Response (ZCL header, suite, two generate times).
CERTIFICATE_AT = 3 + 2 + 1 + 1
# SE-06: clear Image Notifies sent; a conforming DUT may query once in between on its own schedule, never after
# more than one of them.
CLEAR_PROBES = 3


def passed(reason: str, *frames_: FrameRecord | list[FrameRecord] | None) -> Judgement:
    return Judgement(Verdict.PASS, reason, evidence(*frames_))


def failed(reason: str, *frames_: FrameRecord | list[FrameRecord] | None) -> Judgement:
    return Judgement(Verdict.FAIL, reason, evidence(*frames_))


def _frame_bytes(frame: FrameRecord) -> bytes:
    return bytes.fromhex(frame.hex)


def ke_command(frame: FrameRecord, command: int, *, to_client: bool) -> bool:
    """Whether `frame` is the Key Establishment cluster command `command` in the direction given."""
    data = _frame_bytes(frame)
    return (
        frame.cluster_id == KE_CLUSTER
        and len(data) >= 3
        and data[0] & 0x03 == CLUSTER_SPECIFIC
        and bool(data[0] & TO_CLIENT) == to_client
        and data[2] == command
    )


def _waits(predicate: Callable[[FrameRecord], bool], text: str) -> Callable[[FrameRecord], bool]:
    predicate.waits_for = text  # type: ignore[attr-defined]
    return predicate


DUT_TERMINATE = _waits(
    lambda f: f.src != CHF_NWK and ke_command(f, ke.ClientCommand.TERMINATE_KEY_ESTABLISHMENT, to_client=False),
    "Terminate Key Establishment from the DUT",
)
DUT_INITIATE = _waits(
    lambda f: f.src != CHF_NWK and ke_command(f, ke.ClientCommand.INITIATE_KEY_ESTABLISHMENT_REQUEST, to_client=False),
    "Initiate Key Establishment Request from the DUT",
)
DUT_ANY = _waits(lambda f: f.src != CHF_NWK, "any frame from the DUT")


# -- the secured network ------------------------------------------------------------------------------------


Rewrite = Callable[[bytes], bytes | None]


class _KeServerApp:
    """The CHF's app as the Key Establishment server sees it, with `rewrite` applied to every Key Establishment
    frame it sends (None: unchanged): how the test CHF presents another certificate or a wrong MAC while the
    server's own state machine stays the one a CHF runs."""

    def __init__(self, app: Any, rewrite: Rewrite) -> None:
        self.app = app
        self.rewrite = rewrite
        self.rewritten = 0

    @property
    def devices(self) -> Any:
        return self.app.devices

    def get_device(self, *args: Any, **kwargs: Any) -> Any:
        return self.app.get_device(*args, **kwargs)

    def add_ingress_handler(self, handler: Any) -> Callable[[], None]:
        remove: Callable[[], None] = self.app.add_ingress_handler(handler)
        return remove

    def transmit(self, packet: t.ZigbeePacket) -> None:
        if packet.cluster_id == KE_CLUSTER:
            changed = self.rewrite(packet.data.serialize())
            if changed is not None:
                self.rewritten += 1
                packet = packet.replace(data=t.SerializableBytes(changed))
        self.app.transmit(packet)


@dataclass
class SecureSession:
    """The DUT on a network whose CHF speaks SE security: the CHF's record (`chf`), its APS layer (`radio`),
    its security events, and the DUT's own security events when its harness reports them."""

    chf: TestChf
    radio: Any = None  # the CHF's `radio.secure.SecureRadio`, once started
    server_app: _KeServerApp | None = None
    events: list[ServerEvent] = field(default_factory=list)
    dut_events: list[Any] = field(default_factory=list)
    secured_from_dut: int = 0
    key_done: asyncio.Event = field(default_factory=asyncio.Event)

    def on_event(self, event: ServerEvent) -> None:
        self.events.append(event)
        if isinstance(event, chf_ke.KeyEstablished | chf_ke.KeyEstablishmentFailed):
            self.key_done.set()

    def observe(self, packet: t.ZigbeePacket) -> bool:
        """CHF ingress (after its APS layer): count the OTA frames from the DUT that came APS-encrypted."""
        if packet.cluster_id == frames.CLUSTER_ID and packet.tx_options & t.TransmitOptions.APS_Encryption:
            self.secured_from_dut += 1
        return False

    async def key_outcome(self, within: float) -> ServerEvent | None:
        """How CBKE ended on the CHF's side (`KeyEstablished` / `KeyEstablishmentFailed`), None if it did not."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self.key_done.wait()
        ended = (chf_ke.KeyEstablished, chf_ke.KeyEstablishmentFailed)
        return next((e for e in self.events if isinstance(e, ended)), None)

    def clear_ota_dropped(self) -> list[chf_ke.FrameDropped]:
        """OTA frames from the DUT the CHF's APS layer refused for coming without APS encryption."""
        return [
            e
            for e in self.events
            if isinstance(e, chf_ke.FrameDropped)
            and e.cluster_id == frames.CLUSTER_ID
            and e.reason == DropReason.UNENCRYPTED.value
        ]

    def send_clear(self, data: bytes) -> FrameRecord | None:
        """An OTA frame to the DUT past the CHF's APS layer, in the clear, recorded as the CHF radio would."""
        packet = self.chf.unicast(data)
        self.radio.inner.send(packet)
        mark = self.chf.mark()
        self.chf.log(packet, asyncio.get_running_loop().time())
        recorded = self.chf.since(mark)
        return recorded[0] if recorded else None


def _not_on_ezsp(trial: Trial) -> str:
    """Why the SE checks cannot be played through an EZSP coordinator: its CHF has no Smart Energy security, or
    (a device on a stick with --install-code) has it in the NCP's own stack, which cannot play their faults."""
    faults = (
        "these checks need the bench's in-process APS layer (the loopback radio) to play their faults (another "
        "install code, a CHF certificate of another CA or EUI-64, a wrong MAC, an Image Notify in the clear)"
    )
    if getattr(trial.chf.app, "aps_security", None) is not None:
        return (
            "on the stick the NCP's own stack does the APS security (the device joined by install code and ran CBKE, "
            f"and the OTA checks run APS-encrypted), but {faults}"
        )
    return (
        "Smart Energy security is not available on this path: the bench's EZSP coordinator joins a device with the "
        "network key only (no install-code Transport-Key, no Key Establishment server; --install-code gives a "
        f"device on a stick both), and {faults}"
    )


def _dut_profile(trial: Trial, *, cbke: bool = True) -> DeviceProfile:
    """The DUT's profile, which the bench's SE side issues its certificate and logs its install code from; a DUT
    without one cannot show these checks. With `cbke`, the check needs a CHF certificate the DUT accepts, which the
    bench can give only when its test CA issued the DUT's own (no `cbke_credentials` file of another CA)."""
    dut = trial.dut
    if dut.port is not None or not isinstance(trial.chf.app, LoopbackApp):
        raise Inconclusive(_not_on_ezsp(trial))
    if not dut.can(Ability.SMART_ENERGY):
        raise NotApplicable(dut.unable(Ability.SMART_ENERGY))
    profile = getattr(dut, "profile", None)
    if not isinstance(profile, DeviceProfile):
        raise NotApplicable(f"{dut.description} has no device profile the bench's Smart Energy side can serve")
    if cbke and profile.cbke_credentials is not None:
        raise Inconclusive(
            f"the DUT's CBKE certificate comes from its own credentials file ({profile.cbke_credentials}), whose CA "
            "the bench does not hold: the test CHF cannot present a certificate of that CA"
        )
    return profile


@contextlib.asynccontextmanager
async def secure_session(
    trial: Trial, *, install_code: str | None = None, lie: Lie | None = None, cbke: bool = True
) -> AsyncIterator[SecureSession]:
    """The DUT restarted onto a fresh network whose CHF is its trust centre (Device Log entry with
    `install_code`, by default the DUT's own) and Key Establishment server (telling `lie`, if given); `cbke`:
    the check needs key establishment to be able to succeed."""
    profile = _dut_profile(trial, cbke=cbke)
    dut, clock = trial.dut, trial.clock
    log = () if install_code is None else (DeviceLogEntry(profile.ieee, install_code),)
    chf_profile = TEST_CHF.replace(security="se", device_log=log)
    security = HanSecurity(chf_profile, [profile], trial.certificates)
    chf = TestChf(clock, dut.ieee, FIRST_DEVICE_NWK)
    chf.on_wait = trial.chf.on_wait
    node = ChfNode(chf_profile, chf.store, clock, observers=[chf.intercept])
    session = SecureSession(chf)
    await dut.stop()
    with tempfile.TemporaryDirectory(prefix="ota-emu-conform-se-") as state:
        session.radio = security.chf_radio(Air(seed=0), clock, session.on_event)
        await node.start_loopback(session.radio)
        try:
            chf.attach(node)
            if trial.capture is not None:
                trial.capture(chf, security)
            app: Any = node.app
            if lie is not None:
                app = session.server_app = _KeServerApp(node.app, _liar(lie, security, chf_profile.ieee))
            security.attach_chf(app, chf_profile.endpoint, clock, session.on_event)
            context = security.chf_context
            node.server.awaits_link_key = lambda ieee: context.link_key(ieee) is None
            session.radio.add_ingress_handler(session.observe)
            await dut.start(Link(session.radio.inner, clock, FIRST_DEVICE_NWK, Path(state), security))
            device = getattr(dut, "device", None)
            if device is not None:
                device.add_listener(session.dut_events.append)
            yield session
        finally:
            await dut.stop()
            chf.detach()
            security.stop()
            await node.stop()


# -- SE-01: install-code join -------------------------------------------------------------------------------


def _other_install_code(profile: DeviceProfile) -> str:
    """An install code the DUT does not hold: the test code of the EUI-64 one above its own."""
    other = t.EUI64((int.from_bytes(bytes(profile.ieee), "little") + 1).to_bytes(8, "little"))
    return derived_install_code(other)


async def se01_install_code_join(trial: Trial) -> Judgement:
    profile = _dut_profile(trial, cbke=False)
    async with secure_session(trial, install_code=_other_install_code(profile), cbke=False) as session:
        heard = await session.chf.expect(DUT_ANY, trial.timing.response)
        if heard is not None:
            return failed(
                f"the DUT joined and sent {heard.name} although the CHF sent the network key under another install "
                "code's key (its own cannot open it)",
                heard,
            )
    async with secure_session(trial, cbke=False) as session:
        control = await session.chf.expect(DUT_ANY, trial.timing.response)
        if control is None:
            raise Inconclusive(
                f"the DUT did not join even when its Device Log entry held its own install code (waited "
                f"{trial.timing.response:g} s), so its silence under another key says nothing"
            )
    return passed(
        "stayed off the network when the Transport-Key was under another install code's key; joined (and sent "
        f"{control.name}) when it was under its own",
        control,
    )


# -- SE-02: CBKE, then APS-encrypted OTA --------------------------------------------------------------------


async def se02_cbke_then_encrypted_ota(trial: Trial) -> Judgement:
    async with secure_session(trial) as session:
        chf = session.chf
        outcome = await session.key_outcome(KE_WAIT)
        ke_frames = chf.since(0, lambda f: f.cluster_id == KE_CLUSTER)
        if outcome is None:
            return failed(f"no key establishment completed within {KE_WAIT:g} s of joining", ke_frames)
        chf_terminated = [f for f in ke_frames if f.src == CHF_NWK and ke_command(f, 0x03, to_client=True)]
        if chf_terminated and _frame_bytes(chf_terminated[0])[3] == ke.TerminateStatus.UNKNOWN_ISSUER:
            raise Inconclusive(
                "the bench's CHF terminated with UNKNOWN_ISSUER: the DUT's certificate is not from the CA that issues "
                "the CHF's (a device with cbke_credentials of its own needs a CHF certificate of that CA)",
                evidence(ke_frames),
            )
        if isinstance(outcome, chf_ke.KeyEstablishmentFailed):
            return failed(f"CBKE with a valid CHF certificate failed: {outcome.status} ({outcome.reason})", ke_frames)
        mark = chf.mark()
        chf.notify(0, 100)
        query = await chf.expect(dut_sent("query_next_image"), trial.timing.response, mark)
        dropped = session.clear_ota_dropped()
        if dropped:
            return failed(
                f"completed CBKE, then sent {len(dropped)} OTA frame(s) without APS encryption although it holds the "
                "link key (the CHF's APS layer refused them)",
                ke_frames,
            )
        if query is None:
            raise Inconclusive(
                "the DUT completed CBKE but sent no Query Next Image Request after an APS-encrypted unicast Image "
                "Notify, so its use of the link key could not be seen",
                evidence(ke_frames),
            )
        if session.secured_from_dut == 0:
            return failed("completed CBKE, but its Query Next Image Request came without APS encryption", query)
        suite = getattr(outcome, "suite", "?")
        return passed(
            f"completed CBKE (suite {suite}) and sent its Query Next Image Request APS-encrypted under the new "
            "link key",
            ke_frames,
            query,
        )


# -- SE-03 … SE-05: Terminate Key Establishment -------------------------------------------------------------


class Lie(enum.Enum):
    """What the test CHF's Key Establishment server gets wrong, and the status a DUT must terminate with."""

    UNKNOWN_ISSUER = "a certificate from another certificate authority"
    OTHER_SUBJECT = "a genuine certificate of another EUI-64"
    WRONG_MACV = "a wrong MACV in its Confirm Key Data Response"

    @property
    def status(self) -> ke.TerminateStatus:
        return {
            Lie.UNKNOWN_ISSUER: ke.TerminateStatus.UNKNOWN_ISSUER,
            Lie.OTHER_SUBJECT: ke.TerminateStatus.BAD_MESSAGE,
            Lie.WRONG_MACV: ke.TerminateStatus.BAD_KEY_CONFIRM,
        }[self]


def _liar(lie: Lie, security: HanSecurity, chf_ieee: t.EUI64) -> Rewrite:
    """The rewrite of the server's frames that tells `lie`."""
    foreign: dict[CryptoSuite, bytes] = {}

    def certificate(suite: CryptoSuite) -> bytes:
        if suite not in foreign:
            if lie is Lie.UNKNOWN_ISSUER:
                issued = CertificateAuthority.generate(suite, issuer=b"\x54\x45\x53\x54\x2d\x43\x41\x32").issue(
                    bytes(chf_ieee)[::-1]
                )
            else:
                other = t.EUI64((int.from_bytes(bytes(chf_ieee), "little") ^ 0x01).to_bytes(8, "little"))
                issued = security.issue(other, suite)
            foreign[suite] = issued.certificate.to_bytes()
        return foreign[suite]

    def rewrite(data: bytes) -> bytes | None:
        if len(data) < 3 or data[0] & 0x03 != CLUSTER_SPECIFIC or not data[0] & TO_CLIENT:
            return None
        command = data[2]
        if lie is Lie.WRONG_MACV and command == ke.ServerCommand.CONFIRM_KEY_DATA_RESPONSE:
            return data[:-1] + bytes([data[-1] ^ 0xFF])
        if lie is not Lie.WRONG_MACV and command == ke.ServerCommand.INITIATE_KEY_ESTABLISHMENT_RESPONSE:
            suite = next((s for s in CryptoSuite if s.bit == int.from_bytes(data[3:5], "little")), None)
            if suite is not None:
                return data[:CERTIFICATE_AT] + certificate(suite)
        return None

    return rewrite


def _status_name(value: int) -> str:
    try:
        return f"{ke.TerminateStatus(value).name} (0x{value:02X})"
    except ValueError:
        return f"0x{value:02X}"


async def _terminates(trial: Trial, lie: Lie) -> Judgement:
    """Key establishment with a CHF that tells `lie`: the DUT must terminate with `lie.status` and go no further."""
    expected = lie.status
    async with secure_session(trial, lie=lie) as session:
        chf = session.chf
        initiate = await chf.expect(DUT_INITIATE, KE_WAIT)
        if initiate is None:
            raise Inconclusive(f"the DUT did not start key establishment within {KE_WAIT:g} s of joining")
        terminate = await chf.expect(DUT_TERMINATE, KE_WAIT, chf.after(initiate))
        ke_frames = chf.since(0, lambda f: f.cluster_id == KE_CLUSTER)
        told = session.server_app is not None and session.server_app.rewritten > 0
        if not told:
            raise Inconclusive(f"the exchange ended before the CHF could present {lie.value}", evidence(ke_frames))
        if terminate is None:
            ota = chf.since(chf.after(initiate), dut_sent("query_next_image"))
            went_on = " and went on to query for an image" if ota else ""
            return failed(
                f"sent no Terminate Key Establishment after the CHF presented {lie.value}{went_on} (expected status "
                f"{_status_name(expected)})",
                ke_frames,
                ota,
            )
        status = _frame_bytes(terminate)[3]
        if status != expected:
            return failed(
                f"terminated key establishment with status {_status_name(status)} after the CHF presented "
                f"{lie.value} (expected {_status_name(expected)})",
                ke_frames,
            )
        later = await chf.expect(dut_sent("query_next_image"), trial.timing.response, chf.after(terminate))
        if later is not None:
            return failed(
                f"terminated with {_status_name(status)}, then queried for an image without a link key",
                ke_frames,
                later,
            )
        return passed(
            f"terminated key establishment with {_status_name(status)} after the CHF presented {lie.value}, and "
            "went no further",
            ke_frames,
        )


async def se03_unknown_issuer(trial: Trial) -> Judgement:
    return await _terminates(trial, Lie.UNKNOWN_ISSUER)


async def se04_other_subject(trial: Trial) -> Judgement:
    return await _terminates(trial, Lie.OTHER_SUBJECT)


async def se05_wrong_key_confirm(trial: Trial) -> Judgement:
    return await _terminates(trial, Lie.WRONG_MACV)


# -- SE-06: OTA commands without APS encryption are refused -------------------------------------------------


async def se06_clear_ota_refused(trial: Trial) -> Judgement:
    async with secure_session(trial) as session:
        chf = session.chf
        outcome = await session.key_outcome(KE_WAIT)
        if not isinstance(outcome, chf_ke.KeyEstablished):
            raise Inconclusive("the DUT holds no link key (CBKE did not complete; SE-02 judges that)")
        is_query = dut_sent("query_next_image")
        mark = chf.mark()
        chf.notify(0, 100)
        control = await chf.expect(is_query, trial.timing.response, mark)
        if control is None:
            raise Inconclusive(
                "the DUT did not query after an APS-encrypted unicast Image Notify, so ignoring a clear one would "
                "say nothing"
            )
        await chf.expect(chf_sent("query_next_image_response"), trial.timing.response, chf.after(control))
        await asyncio.sleep(1.0)
        probes: list[tuple[FrameRecord | None, FrameRecord | None]] = []
        for _ in range(CLEAR_PROBES):
            mark = chf.mark()
            notify = frames.encode("image_notify", tsn=chf.next_tsn(), payload_type=0, query_jitter=100)
            clear = session.send_clear(notify)
            query = await chf.expect(is_query, trial.timing.response, mark)
            probes.append((clear, query))
            if query is not None:
                await chf.expect(chf_sent("query_next_image_response"), trial.timing.response, chf.after(query))
                await asyncio.sleep(1.0)
        drawn = [(clear, query) for clear, query in probes if query is not None]
        sent = [frame for pair in probes for frame in pair if frame is not None]
        if len(drawn) > 1:
            return failed(
                f"queried after {len(drawn)} of {CLEAR_PROBES} unicast Image Notifies sent without APS encryption "
                "although it holds a link key with the CHF",
                [frame for pair in drawn for frame in pair if frame is not None],
            )
        said = [e for e in session.dut_events if isinstance(e, sev.FrameDropped) and e.cluster_id == frames.CLUSTER_ID]
        note = f" (and reported dropping them: {said[0].reason})" if said else ""
        once = "; its one query in between is the periodic one a client may send at any time" if drawn else ""
        return passed(
            f"ignored {CLEAR_PROBES} unicast Image Notifies sent without APS encryption{note}{once}; queried after "
            "the same notify APS-encrypted",
            control,
            sent,
        )


Scenario = Callable[[Trial], Awaitable[Judgement]]

SECURITY_SCENARIOS: dict[str, Scenario] = {
    "SE-01": se01_install_code_join,
    "SE-02": se02_cbke_then_encrypted_ota,
    "SE-03": se03_unknown_issuer,
    "SE-04": se04_other_subject,
    "SE-05": se05_wrong_key_confirm,
    "SE-06": se06_clear_ota_refused,
}
