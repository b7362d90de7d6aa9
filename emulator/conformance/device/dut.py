"""Where the device under test lives, and how each check gets a session with it.

Two implementations of the public DUT interface (`interface.DeviceUnderTest`) ship with the bench:

* `EmulatedDut`: an emulated PPMID/HCALCS from a profile, with power cycles and its events standing in for
  the GBCS messages it would send;
* `RadioDut`: a device reached through an EZSP coordinator (a real dongle, or a virtual NCP's URL), named by
  its EUI-64.

And two worlds run the checks on a DUT:

* `EmulatedWorld`: any DUT that joins the bench's virtual air. Every check gets a fresh HAN — a new air, CHF
  and a restarted DUT with empty state — so no verdict depends on an earlier check (what the run keeps is the
  certificates of its test CA, which a real node carries for life too). On the loopback radio this
  runs on virtual time; on `radio="ezsp"` the CHF is bellows talking ASH/EZSP to a virtual NCP in process, on
  virtual time too (or both on real time, when the bench runs on a real-time loop).
* `RadioWorld`: a DUT behind a coordinator `port`. The bench opens joining and waits for it; checks then run
  one after another on the same device, which cannot be reset in between (the report says so). With
  `DutSecurity` (the DUT's install code) its test CHF speaks Smart Energy security as `ota-emu chf` does
  (`chf.ezsp_security`): the DUT joins with its install-code key only, runs CBKE with the CHF, and the OTA frames
  are APS-encrypted by the NCP; a DUT whose CBKE fails leaves every check inconclusive with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import zigpy.device
import zigpy.exceptions
import zigpy.types as t

from emulator.chf import ezsp_security
from emulator.chf.events import ServerEvent
from emulator.chf.ezsp_security import EzspSmartEnergy
from emulator.chf.key_establishment import FrameDropped, KeyEstablished, KeyEstablishmentFailed
from emulator.chf.node import ChfNode
from emulator.chf.store import HeldImage
from emulator.clock import Clock
from emulator.conformance.device.catalogue import HCALCS, PPMID
from emulator.conformance.device.testchf import TEST_CHF, TestChf
from emulator.conformance.device.trial import REAL_TIMING, VIRTUAL_TIMING, Capture, Timing, Trial
from emulator.conformance.interface import Ability, ActivationReply, DeviceUnderTest, FirmwareAlert, Link
from emulator.conformance.verdict import Inconclusive
from emulator.device import events as device_events
from emulator.device.device import EmulatedDevice
from emulator.errors import InputError
from emulator.han.network import FIRST_DEVICE_NWK
from emulator.han.security import TEST_CERTIFICATES, RunCertificates
from emulator.ncp.server import VirtualNcp
from emulator.profiles import DEFAULT_DEVICE_IDS, ChfProfile, DeviceProfile
from emulator.radio.air import Air
from emulator.security import credentials as credential_files
from emulator.security.certs import DeviceCredentials
from emulator.security.install_code import InstallCode

Notice = Callable[[str], None]

# zigpy accepts at most this many seconds per permit-joining call; longer windows are renewed.
MAX_PERMIT = 254
PERMIT_TIMEOUT = 10.0
# How long a device that joined gets to complete key establishment (CBKE) with the test CHF under Smart Energy
# security before its checks are given up as inconclusive.
CBKE_WAIT = 120.0
# How long the EZSP path gets to finish sending before its session shuts down.
DRAIN = 0.5
KIND_BY_DEVICE_ID = {device_id: kind for kind, device_id in DEFAULT_DEVICE_IDS.items()}


def _quiet(_: str) -> None:
    return None


class EmulatedDut(DeviceUnderTest):
    """The project's emulated PPMID/HCALCS as a DUT: it joins the bench's air, can be power-cycled (state kept
    in the link's directory), and its events stand in for the GBCS alerts and Activate Firmware."""

    def __init__(self, profile: DeviceProfile, *, seed: int = 0) -> None:
        super().__init__()
        self.profile = profile
        self.ieee = profile.ieee
        self.kind = profile.kind
        self.block_period_unit = profile.block_period_unit
        self.description = f"emulated {profile.kind.upper()} ({profile.source})"
        self.seed = seed
        self.device: EmulatedDevice | None = None
        self._link: Link | None = None
        self._generation = 0

    @property
    def abilities(self) -> frozenset[Ability]:
        secure = {Ability.SMART_ENERGY} if self.profile.security == "se" else set()
        return frozenset({Ability.POWER_CYCLE, Ability.GBCS, *secure})

    def unable(self, ability: Ability) -> str:
        if ability is Ability.SMART_ENERGY:
            return f'{self.description} has security = "none": it joins with the network key only and runs no CBKE'
        return super().unable(ability)

    async def start(self, link: Link) -> None:
        self._link = link
        self._generation = 0
        await self._boot()

    async def stop(self) -> None:
        device, self.device = self.device, None
        if device is not None:
            await device.stop()

    async def power_cycle(self) -> None:
        await self.stop()
        self._generation += 1
        await self._boot()

    async def activate_firmware(self, image_hash: bytes, at: datetime | None = None) -> ActivationReply:
        assert self.device is not None, "start() first"
        reply = await self.device.activate_firmware(image_hash, at)
        code = None if reply.response_code is None else int(reply.response_code)
        return ActivationReply(reply.accepted, code, reply.firmware_version)

    async def _boot(self) -> None:
        link = self._link
        assert link is not None
        security = link.security
        radio = security.device_radio(self.profile, link.air) if security is not None else link.air
        device = EmulatedDevice(
            self.profile,
            radio,
            link.clock,
            nwk=link.nwk,
            state_dir=link.state_dir,
            seed=self.seed * 7919 + self._generation,
        )
        if security is not None:
            security.attach_device(device, radio)
        device.add_listener(self._on_event)
        await device.start()
        self.device = device

    def _on_event(self, event: device_events.DeviceEvent) -> None:
        """CS09 (activation reported) and 0x00CA (a future-dated activation executed) as the GBCS alerts."""
        if isinstance(event, device_events.Activated):
            alert = None if event.alert_code is None else int(event.alert_code)
            self.alerts.append(
                FirmwareAlert(event.at, alert, event.new_version, activate_image=int(event.activate_image))
            )
        elif isinstance(event, device_events.ActivationOutcome):
            alert = None if event.alert_code is None else int(event.alert_code)
            self.alerts.append(
                FirmwareAlert(
                    event.at,
                    alert,
                    event.version,
                    response_code=int(event.response_code),
                    future_dated=event.future_dated,
                )
            )


class RadioDut(DeviceUnderTest):
    """A device on an EZSP coordinator's network (a real one behind a stick), named by its EUI-64. The bench
    cannot restart it or see its GBCS messages."""

    def __init__(
        self,
        port: str,
        ieee: t.EUI64,
        *,
        kind: str | None = None,
        block_period_unit: str = "ms",
    ) -> None:
        super().__init__()
        self.port = port
        self.ieee = ieee
        self.kind = kind
        self.block_period_unit = block_period_unit
        self.description = f"device {ieee} on {port}"


@dataclass(frozen=True, slots=True)
class DutSecurity:
    """Smart Energy security for the test CHF on a coordinator stick: the DUT's `install_code` (its Device Log
    entry), where CBKE's cryptography runs (`cbke`: the CHF's host, or the stick's CBKE library), and the CHF's
    CBKE `credentials` file (an `ota-emu certs issue` file for the stick's EUI-64; None: a certificate from the
    bundled TEST-ONLY CA, which the emulated devices trust and a real device does not)."""

    install_code: InstallCode
    cbke: str = ezsp_security.HOST
    credentials: str | None = None

    def describe(self) -> str:
        where = "the CHF's host" if self.cbke == ezsp_security.HOST else "the stick's CBKE library"
        issuer = f"certificate {self.credentials}" if self.credentials else "a certificate of the bundled test CA"
        return f"install code {self.install_code.with_crc.hex().upper()}, CBKE on {where} with {issuer}"

    def chf_profile(self) -> ChfProfile:
        """The test CHF with its CBKE credentials."""
        return TEST_CHF.replace(security="se", cbke_credentials=self.credentials)

    def check_credentials(self, coordinator: t.EUI64) -> None:
        """The credentials file must certify the stick's EUI-64 (the subject a DUT checks in CBKE)."""
        if self.credentials is None or self.cbke != ezsp_security.HOST:
            return
        subject = read_credentials(self.credentials).certificate.subject
        if subject != bytes(coordinator)[::-1]:
            raise InputError(
                f"--chf-credentials {self.credentials}: the certificate is for {subject.hex(':').upper()}, expected "
                f"{str(coordinator).upper()} (the EUI-64 of the coordinator stick, which the device checks in CBKE)"
            )


def read_credentials(path: str) -> DeviceCredentials:
    """The CBKE credentials of an `ota-emu certs issue` file (an `InputError` naming it when unreadable)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--chf-credentials {path}: cannot read ({exc.strerror})") from None
    try:
        return credential_files.parse_device(text, path)
    except InputError as exc:
        raise InputError(f"--chf-credentials {exc}") from None


class EmulatedWorld:
    """A fresh in-process HAN per check around a DUT that joins the bench's virtual air."""

    def __init__(
        self,
        dut: DeviceUnderTest,
        *,
        radio: str = "loopback",
        seed: int = 0,
        capture: Capture | None = None,
        start_utc: datetime | None = None,
        image: HeldImage | None = None,
    ) -> None:
        self.dut = dut
        self.radio = radio
        self.seed = seed
        self.capture = capture
        self.image = image
        self.start_utc = start_utc or datetime.now(UTC).replace(microsecond=0)
        self.timing: Timing = VIRTUAL_TIMING  # set for each session by the clock it runs on
        self.absent: str | None = None
        self.shared = False
        self.notes: list[str] = []
        # The process's test CA: the DUT and the CHF keep their certificates from check to check (and from run
        # to run), as real nodes do; every check still joins and runs CBKE afresh.
        self.certificates: RunCertificates = TEST_CERTIFICATES
        # The DUT's state directory: one for the run, emptied after every check, so each check starts with none
        # (making and removing a directory per check cost more than many a check's protocol work).
        self._state: tempfile.TemporaryDirectory[str] | None = None

    @property
    def kind(self) -> str | None:
        return self.dut.kind

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        state, self._state = self._state, None
        if state is not None:
            state.cleanup()

    def _state_dir(self) -> Path:
        if self._state is None:
            self._state = tempfile.TemporaryDirectory(prefix="ota-emu-conform-")
        return Path(self._state.name)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Trial]:
        dut = self.dut
        air = Air(seed=self.seed)
        clock = Clock(self.start_utc)
        self.timing = VIRTUAL_TIMING if clock.virtual else REAL_TIMING
        chf = TestChf(clock, dut.ieee, FIRST_DEVICE_NWK)
        node = ChfNode(TEST_CHF, chf.store, clock, observers=[chf.intercept])
        ncp: VirtualNcp | None = None
        state = self._state_dir()
        started = dut_started = False
        try:
            if self.radio == "ezsp":
                ncp = VirtualNcp(air, seed=self.seed)
                await ncp.start()
                assert ncp.url is not None
                await node.start_ezsp(ncp.url)
                await ncp.wait_for_network()
            else:
                await node.start_loopback(air)
            started = True
            chf.attach(node)
            if self.capture is not None:
                self.capture(chf)
            dut.alerts.clear()
            dut_started = True
            await dut.start(Link(air, clock, FIRST_DEVICE_NWK, state))
            trial = Trial(chf, dut, clock, self.timing, self.image)
            trial.capture = self.capture
            trial.certificates = self.certificates
            yield trial
        finally:
            if dut_started:
                await dut.stop()
            chf.detach()
            if ncp is not None:
                await asyncio.sleep(DRAIN)  # frames bellows still has in flight, so shutting down fails none
            if started:
                await node.stop()
            if ncp is not None:
                await ncp.stop()
            _empty(state)


def _cbke_hint(failed: KeyEstablishmentFailed) -> str:
    """What an UNKNOWN_ISSUER means for the bench: the device and the CHF's certificate come from different CAs."""
    if failed.status != "UNKNOWN_ISSUER":
        return ""
    side = (
        "the device does not trust the CHF's certificate"
        if failed.reason.startswith("partner terminated")
        else "the CHF does not trust the device's certificate"
    )
    return f": {side} (--chf-credentials: a certificate for the coordinator stick from the CA the device trusts)"


def _empty(directory: Path) -> None:
    """Remove everything in `directory`, keeping it."""
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


class _JoinWatch:
    """zigpy listener: set when the device under test joins (or is interviewed)."""

    def __init__(self, ieee: t.EUI64) -> None:
        self.ieee = ieee
        self.seen = asyncio.Event()

    def device_joined(self, device: zigpy.device.Device) -> None:
        if device.ieee == self.ieee:
            self.seen.set()

    def device_initialized(self, device: zigpy.device.Device) -> None:
        self.device_joined(device)


class RadioWorld:
    """A device on an EZSP coordinator's network: one CHF for the whole run, checks in sequence. With `security`
    the CHF is a Smart Energy trust centre and Key Establishment server for the DUT (`DutSecurity`)."""

    def __init__(
        self,
        dut: DeviceUnderTest,
        *,
        image: HeldImage | None = None,
        join_timeout: float = 300.0,
        notice: Notice | None = None,
        capture: Capture | None = None,
        security: DutSecurity | None = None,
    ) -> None:
        assert dut.port is not None, "a RadioWorld DUT is reached through a coordinator port"
        self.port = dut.port
        self.ieee = dut.ieee
        self.image = image
        self.join_timeout = join_timeout
        self.notice = notice or _quiet
        self.capture = capture
        self.security = security
        self.timing = REAL_TIMING
        self.dut = dut
        self.absent: str | None = None
        self.shared = True
        self.notes: list[str] = []
        self._clock: Clock | None = None
        self._chf: TestChf | None = None
        self._node: ChfNode | None = None
        self._smart_energy: EzspSmartEnergy | None = None
        self._cbke: KeyEstablished | KeyEstablishmentFailed | None = None
        self._keyed = asyncio.Event()
        self._dropped = 0
        self._sessions = 0

    @property
    def kind(self) -> str | None:
        """As given, else as zigpy's interview of the device shows (once it has got that far)."""
        if self.dut.kind is None and self.absent is None and self._node is not None:
            self.dut.kind = self._kind_from_interview()
        return self.dut.kind

    async def start(self) -> None:
        """Connect to the coordinator (an `InputError` if the port is unusable), then wait for the DUT (and under
        Smart Energy security for its key establishment)."""
        self._clock = Clock()
        chf = self._chf = TestChf(self._clock, self.ieee)
        security = self.security
        profile = TEST_CHF if security is None else security.chf_profile()
        node = ChfNode(profile, chf.store, self._clock, observers=[chf.intercept])
        await node.start_ezsp(self.port, ezsp_extra=None if security is None else ezsp_security.bellows_config())
        self._node = node
        chf.attach(node)
        if security is not None:
            self._smart_energy = await self._start_security(node, security)
            chf.base = TEST_CHF.replace(max_block_size=node.server.profile.max_block_size)
        else:
            self.notice(
                f"No --install-code: the test CHF admits device {self.ieee} with the network key only (the "
                "well-known link key) and runs no key establishment; a GB device (Smart Energy security) will not "
                "join it."
            )
        if self.capture is not None:
            self.capture(chf, self._smart_energy)
        self.absent = await self._wait_for_device()
        if self.absent is None and self._smart_energy is not None:
            self.absent = await self._wait_for_key()

    async def _start_security(self, node: ChfNode, security: DutSecurity) -> EzspSmartEnergy:
        """The CHF's Smart Energy security on the stick, admitting the DUT by its install code only."""
        security.check_credentials(node.app.state.node_info.ieee)
        self.notice(f"Smart Energy security for device {self.ieee}: {security.describe()}.")
        return await ezsp_security.start(
            node, {self.ieee: security.install_code}, listener=self._on_security, cbke=security.cbke
        )

    def _on_security(self, event: ServerEvent) -> None:
        """The DUT's key establishment outcome (the first one decides), and the frames the CHF refused."""
        if event.ieee != self.ieee:
            return
        if isinstance(event, (KeyEstablished, KeyEstablishmentFailed)) and self._cbke is None:
            self._cbke = event
            self._keyed.set()
        elif isinstance(event, FrameDropped):
            self._dropped += 1

    async def _wait_for_key(self) -> str | None:
        """None once the DUT has a CBKE link key with the CHF; else why its OTA cannot be checked."""
        if self._cbke is None:
            self.notice(f"Waiting up to {CBKE_WAIT:g} s for device {self.ieee} to run key establishment (CBKE).")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CBKE_WAIT):
                    await self._keyed.wait()
        outcome = self._cbke
        if isinstance(outcome, KeyEstablished):
            self.notes.append(
                f"Smart Energy security: device {self.ieee} joined with its install code and established a link "
                f"key with the test CHF by CBKE (suite {outcome.suite}); the NCP APS-encrypts the OTA frames under it"
            )
            self.notice(f"Device {self.ieee} completed key establishment (CBKE suite {outcome.suite}).")
            return None
        if outcome is None:
            reason = (
                f"device {self.ieee} joined but did not run key establishment (CBKE) with the test CHF within "
                f"{CBKE_WAIT:g} s, so it holds no link key for the APS-encrypted OTA (a device already on the "
                "network keeps its old key: reset it so it joins again)"
            )
        else:
            reason = (
                f"device {self.ieee} joined but key establishment (CBKE) with the test CHF failed with "
                f"{outcome.status} ({outcome.reason}){_cbke_hint(outcome)}; without a link key its APS-encrypted OTA "
                "cannot be checked"
            )
        self.notes.append(f"Smart Energy security: {reason}")
        return reason

    async def stop(self) -> None:
        if self._chf is not None:
            self._chf.detach()
        if self._smart_energy is not None:
            self._smart_energy.stop()
            if self._dropped:
                self.notes.append(
                    f"Smart Energy security: the test CHF dropped {self._dropped} frame(s) from device {self.ieee} "
                    "that came without the APS encryption its link key calls for"
                )
        if self._node is not None:
            await asyncio.sleep(DRAIN)
            await self._node.stop()

    async def _wait_for_device(self) -> str | None:
        assert self._chf is not None and self._node is not None
        app = self._node.app
        watch = _JoinWatch(self.ieee)
        app.add_listener(watch)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.join_timeout
        self.notice(
            f"Joining is open for {self.join_timeout:g} s: power on device {self.ieee} (or reset it to join the "
            "network); the checks start when it has joined."
        )
        try:
            while not self._present(watch):
                left = deadline - loop.time()
                if left <= 0:
                    return self._not_joined()
                window = min(MAX_PERMIT, max(1, math.ceil(left)))
                await self._permit(window)
                closes = min(loop.time() + window, deadline)
                while not self._present(watch) and (wait := closes - loop.time()) > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(min(wait, 1.0)):
                            await watch.seen.wait()
        finally:
            app.remove_listener(watch)
            await self._permit(0)
        self.notice(f"Device {self.ieee} is on the network; running the checks.")
        return None

    def _not_joined(self) -> str:
        """Why the DUT is absent: it never joined while joining was open (to its install-code key only, under
        Smart Energy security)."""
        waited = f"device {self.ieee} did not join within {self.join_timeout:g} s"
        if self.security is not None:
            code = self.security.install_code.with_crc.hex().upper()
            return (
                f"{waited} (joining was open to install code {code} only: is that the device's install code, and "
                "is it powered, in range and allowed to join?)"
            )
        return (
            f"{waited} (joining was open with the network key only: a GB device joins only with its install code, "
            "--install-code; else is it powered, in range and allowed to join?)"
        )

    async def _permit(self, seconds: int) -> None:
        """Open (or with 0 close) joining; a coordinator that does not manage it is noted, not waited for."""
        assert self._node is not None
        # Under Smart Energy security the CHF's own permit: bellows' would admit the well-known key too.
        permit = self._smart_energy.permit if self._smart_energy is not None else self._node.app.permit
        try:
            async with asyncio.timeout(PERMIT_TIMEOUT):
                await permit(seconds)
        except (TimeoutError, zigpy.exceptions.ZigbeeException) as exc:
            self.notice(f"Could not {'open' if seconds else 'close'} joining on the coordinator ({exc!r})")

    def _present(self, watch: _JoinWatch) -> bool:
        """Joined now, or already on the network and heard from."""
        assert self._chf is not None
        return watch.seen.is_set() or bool(self._chf.frames)

    def _kind_from_interview(self) -> str | None:
        """PPMID or HCALCS from the SE device id zigpy's interview read (SPEC.md §7: the mapping is a
        profile default, UNCONFIRMED for real devices)."""
        assert self._node is not None
        device = self._node.app.devices.get(self.ieee)
        if not isinstance(device, zigpy.device.Device):
            return None
        for endpoint_id, endpoint in device.endpoints.items():
            kind = KIND_BY_DEVICE_ID.get(getattr(endpoint, "device_type", -1)) if endpoint_id else None
            if kind in (PPMID, HCALCS):
                return kind
        return None

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Trial]:
        if self.absent is not None:
            raise Inconclusive(self.absent)
        assert self._chf is not None and self._clock is not None
        self._chf.reset()
        self._sessions += 1
        try:
            yield Trial(self._chf, self.dut, self._clock, self.timing, self.image, self._sessions)
        finally:
            self._chf.reset()
