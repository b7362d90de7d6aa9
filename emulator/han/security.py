"""Smart Energy security for an in-process HAN: who may join, which keys each node holds, CBKE on both sides.

`HanSecurity` is what `Han` asks for the radios of the CHF and of each device, and what it attaches to them:

* A CHF profile with `security = "se"` makes the CHF the trust centre: a joiner gets the network key only in an
  APS Transport-Key under the install-code key of its Device Log entry (`chf.trust_centre`). The Device Log is
  the profile's `[[device_log]]`; without one the run stands in for the DCC and logs every SE device of the run
  with its profile's install code.
* The CHF runs the Key Establishment server (`chf.key_establishment`); a device with `security = "se"` runs the
  client (`device.key_establishment`) after joining and before its OTA client starts, and leaves when it fails.
* Both ends get a `SecureRadio`: OTA frames between a device and the CHF are APS-encrypted once they share a
  link key, and frames that should have been are dropped and reported.
* CBKE credentials come from the profiles' `cbke_credentials` files (`ota-emu certs issue`); a node without one
  gets a certificate from the emulator's test CA (one per suite, made when the process first needs it), issued
  when the node first starts and kept for the process's life (`TEST_CERTIFICATES`).

Listeners (a capture) learn of every Transport-Key sent and every link key established.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zigpy.types as t

from emulator.chf import events as server_events
from emulator.chf.key_establishment import FrameDropped as ServerFrameDropped
from emulator.chf.key_establishment import KeyEstablished as ServerKeyEstablished
from emulator.chf.key_establishment import KeyEstablishmentServer
from emulator.chf.trust_centre import KeyTransport, TrustCentre, open_transport_key
from emulator.device import security_events as sev
from emulator.device.faults import DeviceFault
from emulator.device.key_establishment import KeyEstablishmentClient
from emulator.errors import InputError
from emulator.profiles import ChfProfile, DeviceProfile, derived_install_code
from emulator.radio.air import COORDINATOR_NWK
from emulator.radio.capture import PcapWriter
from emulator.radio.secure import DroppedFrame, SecureRadio
from emulator.security import credentials as credential_files
from emulator.security.ca import CertificateAuthority
from emulator.security.ccm import FrameSecurityError
from emulator.security.certs import CryptoSuite, DeviceCredentials
from emulator.security.install_code import InstallCode
from emulator.security.keystore import SecurityContext

SE = "se"


@dataclass(frozen=True, slots=True)
class TransportKeySent:
    """The trust centre sent `transport` to the device at NWK `nwk`."""

    nwk: int
    transport: KeyTransport


@dataclass(frozen=True, slots=True)
class LinkKeyEstablished:
    """The CHF and `device` now share `key` (CBKE KeyData)."""

    chf: t.EUI64
    device: t.EUI64
    key: bytes


Notice = TransportKeySent | LinkKeyEstablished
NoticeListener = Callable[[Notice], None]


def suites_of(setting: str) -> tuple[CryptoSuite, ...]:
    return {"1": (CryptoSuite.SUITE_1,), "2": (CryptoSuite.SUITE_2,)}.get(
        setting, (CryptoSuite.SUITE_2, CryptoSuite.SUITE_1)
    )


def install_code_of(profile: DeviceProfile) -> InstallCode:
    return InstallCode.parse(profile.install_code or derived_install_code(profile.ieee))


def load_credentials(path: str, source: str, what: str) -> dict[CryptoSuite, DeviceCredentials]:
    """One suite's credentials from an `ota-emu certs issue` file (relative to the profile that names it)."""
    base = Path(source).parent if source != "<built-in>" else Path.cwd()
    file = Path(path) if Path(path).is_absolute() else base / path
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{what} cbke_credentials {file}: cannot read ({exc.strerror})") from None
    credentials = credential_files.parse_device(text, str(file))
    return {credentials.suite: credentials}


def drop_reporter(device: Any) -> Callable[[DroppedFrame], None]:
    """What a device's secure radio calls for a frame it drops: a `FrameDropped` event in the device's own
    events, wherever the device runs (the in-process HAN, or inside `ota-emu ncp`)."""

    def dropped(frame: DroppedFrame) -> None:
        device.emit(
            sev.FrameDropped,
            cluster_id=frame.cluster_id,
            command_id=frame.command_id,
            reason=frame.reason.value,
            detail=frame.detail,
        )

    return dropped


class IssuedOnDemand(Mapping[CryptoSuite, DeviceCredentials]):
    """A node's credentials for the suites it offers, each issued when first looked up: a node offers both
    suites, a key establishment uses one, and a certificate costs milliseconds of CPU to issue (~7 ms suite 1,
    ~14 ms suite 2). Iterating gives the suites without issuing anything (what `suite_bits` and `choose_suite`
    need); copying it into a dict issues them all."""

    __slots__ = ("_issue", "_suites")

    def __init__(self, suites: tuple[CryptoSuite, ...], issue: Callable[[CryptoSuite], DeviceCredentials]) -> None:
        self._suites = suites
        self._issue = issue

    def __getitem__(self, suite: CryptoSuite) -> DeviceCredentials:
        if suite not in self._suites:
            raise KeyError(suite)
        return self._issue(suite)

    def __iter__(self) -> Iterator[CryptoSuite]:
        return iter(self._suites)

    def __len__(self) -> int:
        return len(self._suites)


class RunCertificates:
    """A test CA (one per suite) and the certificates it issued: each node gets its certificate once, as a real
    node carries one for life. What is shared is only that: every key establishment still draws its own
    ephemeral keys, so no two CBKEs agree the same link key."""

    def __init__(self) -> None:
        self._authorities: dict[CryptoSuite, CertificateAuthority] = {}
        self._issued: dict[tuple[CryptoSuite, t.EUI64], DeviceCredentials] = {}

    def issue(self, ieee: t.EUI64, suites: tuple[CryptoSuite, ...]) -> IssuedOnDemand:
        """The credentials of `ieee` for each of `suites`, each issued when first looked up."""
        return IssuedOnDemand(suites, lambda suite: self._one(suite, ieee))

    def _one(self, suite: CryptoSuite, ieee: t.EUI64) -> DeviceCredentials:
        credentials = self._issued.get((suite, ieee))
        if credentials is None:
            authority = self._authorities.get(suite)
            if authority is None:
                authority = self._authorities[suite] = CertificateAuthority.generate(suite)
            credentials = self._issued[suite, ieee] = authority.issue(bytes(ieee)[::-1])
        return credentials


# The test CA of the HANs a process runs without one of their own. A node keeps its certificate from run to run,
# as a real node carries one for life: a process that runs many HANs (the conformance bench, a benchmark's repeated
# rows, a test suite) issues each node's certificates once (a suite-2 issue costs ~25 ms of CPU, a suite-1 ~9 ms).
TEST_CERTIFICATES = RunCertificates()


class HanSecurity:
    """The security of one HAN run; `enabled` is False when no profile asks for Smart Energy security.
    `certificates` is the test CA the run issues from (default `TEST_CERTIFICATES`)."""

    def __init__(
        self, chf: ChfProfile, devices: Iterable[DeviceProfile], certificates: RunCertificates | None = None
    ) -> None:
        self.chf_profile = chf
        self.device_profiles = list(devices)
        self.chf_se = chf.security == SE
        self.enabled = self.chf_se or any(p.security == SE for p in self.device_profiles)
        self.chf_context = SecurityContext(chf.ieee)
        self.device_contexts: dict[t.EUI64, SecurityContext] = {}
        self.listeners: list[NoticeListener] = []
        self.certificates = certificates if certificates is not None else TEST_CERTIFICATES
        self._chf_credentials: Mapping[CryptoSuite, DeviceCredentials] | None = None
        self.key_server: KeyEstablishmentServer | None = None
        self.trust_centre: TrustCentre | None = None
        if self.chf_se:
            if chf.device_log:
                log = {entry.ieee: InstallCode.parse(entry.install_code) for entry in chf.device_log}
            else:
                log = {p.ieee: install_code_of(p) for p in self.device_profiles if p.security == SE}
            network_key = bytes.fromhex(chf.network_key.replace(":", ""))
            self.trust_centre = TrustCentre(self.chf_context, network_key, log)
        # Load the named credential files now, so a bad file is a one-line error before anything runs.
        if chf.cbke_credentials is not None and self.chf_se:
            self._chf_credentials = load_credentials(chf.cbke_credentials, chf.source, "CHF profile")
        self._device_files = {
            p.ieee: load_credentials(p.cbke_credentials, p.source, f"device {p.ieee}")
            for p in self.device_profiles
            if p.security == SE and p.cbke_credentials is not None
        }

    def add_listener(self, listener: NoticeListener) -> None:
        self.listeners.append(listener)

    def _notify(self, notice: Notice) -> None:
        for listener in self.listeners:
            listener(notice)

    # -- credentials --------------------------------------------------------------------------------------

    def _issue(self, ieee: t.EUI64, suites: tuple[CryptoSuite, ...]) -> Mapping[CryptoSuite, DeviceCredentials]:
        return self.certificates.issue(ieee, suites)

    def issue(self, ieee: t.EUI64, suite: CryptoSuite) -> DeviceCredentials:
        """Credentials of the run's test CA for `ieee`: what a conformance bench presents as a CHF that is not the
        device's trust centre (a genuine certificate of another EUI-64)."""
        return self._issue(ieee, (suite,))[suite]

    def chf_credentials(self) -> Mapping[CryptoSuite, DeviceCredentials]:
        if self._chf_credentials is None:
            self._chf_credentials = self._issue(self.chf_profile.ieee, suites_of(self.chf_profile.cbke_suite))
        return self._chf_credentials

    def device_credentials(self, profile: DeviceProfile) -> Mapping[CryptoSuite, DeviceCredentials]:
        return self._device_files.get(profile.ieee) or self._issue(profile.ieee, suites_of(profile.cbke_suite))

    # -- the CHF ------------------------------------------------------------------------------------------

    def chf_radio(self, air: Any, clock: Any, listener: Callable[[Any], None]) -> Any:
        """What the CHF's loopback app sits on: `air` itself without SE security."""
        if not self.chf_se:
            return air

        def dropped(frame: DroppedFrame) -> None:
            event = ServerFrameDropped(frame.sender, clock.now(), frame.cluster_id, frame.reason.value, frame.detail)
            listener(event)

        return SecureRadio(air, self.chf_context, on_drop=dropped)

    def attach_chf(self, app: Any, endpoint: int, clock: Any, listener: Callable[[Any], None]) -> None:
        """Start the Key Establishment server on the CHF's app."""
        if not self.chf_se:
            return

        def ieee_of(nwk: int) -> t.EUI64 | None:
            try:
                ieee: t.EUI64 = app.get_device(nwk=nwk).ieee  # the loopback app indexes devices by NWK address
                return ieee
            except KeyError:
                return None

        def relay(event: server_events.ServerEvent) -> None:
            if isinstance(event, ServerKeyEstablished) and event.ieee is not None:
                key = self.chf_context.link_key(event.ieee)
                if key is not None:
                    self._notify(LinkKeyEstablished(self.chf_profile.ieee, event.ieee, key.key))
            listener(event)

        self.key_server = KeyEstablishmentServer(
            app, endpoint, self.chf_context, self.chf_credentials(), clock, ieee_of=ieee_of, listener=relay
        )
        self.key_server.start()

    def stop(self) -> None:
        if self.key_server is not None:
            self.key_server.stop()

    # -- devices ------------------------------------------------------------------------------------------

    def device_radio(self, profile: DeviceProfile, air: Any) -> Any:
        """What a device sits on: `air` itself when neither it nor the CHF uses SE security."""
        if not self.enabled or (profile.security != SE and not self.chf_se):
            return air
        context = self.device_contexts.setdefault(profile.ieee, SecurityContext(profile.ieee))
        return SecureRadio(air, context)

    def attach_device(self, device: Any, radio: Any) -> None:
        """Wire the device's admission, drop reports and (for an SE device) CBKE before its OTA client."""
        if not isinstance(radio, SecureRadio):
            return
        profile: DeviceProfile = device.profile

        radio.on_drop = drop_reporter(device)
        if self.trust_centre is not None:
            radio.admission = lambda node: self._admit(device, radio)
        if profile.security == SE:

            async def before_ota() -> bool:
                if radio.admitted is False:
                    return False
                radio.application_ready = False
                client = KeyEstablishmentClient(
                    device, radio, radio.context, self.device_credentials(profile), self.chf_profile.ieee
                )
                outcome = await client.run()
                radio.application_ready = outcome.ok
                return outcome.ok

            device.before_ota = before_ota
        elif self.trust_centre is not None:

            async def not_joined() -> bool:
                return radio.admitted is not False

            device.before_ota = not_joined

    def _admit(self, device: Any, radio: SecureRadio) -> bool:
        assert self.trust_centre is not None
        profile: DeviceProfile = device.profile
        transport = self.trust_centre.admit(profile.ieee)
        if transport is None:
            device.emit(sev.NotAdmitted, reason="not in the CHF's Device Log")
            return False
        self._notify(TransportKeySent(device.nwk, transport))
        if profile.security != SE:
            device.emit(sev.NotAdmitted, reason="no install code (device security is none)")
            return False
        try:
            open_transport_key(radio.context, self.chf_profile.ieee, install_code_of(profile), transport.frame)
        except FrameSecurityError as exc:
            if DeviceFault.JOIN_WITH_FOREIGN_KEY not in profile.faults:
                device.emit(sev.NotAdmitted, reason=f"Transport-Key not opened with its install code ({exc})")
                return False
        device.emit(sev.Admitted, trust_centre=self.chf_profile.ieee)
        return True


def attach_capture(security: HanSecurity, capture: PcapWriter) -> None:
    """Feed a `PcapWriter` the join's Transport-Keys and the CBKE link keys, so readers can open every frame."""

    def on_notice(notice: Notice) -> None:
        if isinstance(notice, TransportKeySent):
            transport = notice.transport
            capture.add_node(notice.nwk, transport.joiner)
            capture.write_transport_key(
                COORDINATOR_NWK,
                notice.nwk,
                transport.command,
                transport.link_key,
                label=f"install-code link key {transport.joiner}",
            )
        else:
            capture.set_link_key(notice.chf, notice.device, notice.key, label=f"CBKE link key {notice.device}")

    security.add_listener(on_notice)
