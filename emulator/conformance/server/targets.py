"""The OTA servers the server checks can probe, and how a scenario is played on each.

* ``ours`` — the emulator's CHF (`emulator.chf.server.OtaServer`) on the loopback zigpy radio, holding a GB
  Upgrade Image for the probes' EUI-64s (the DeviceIDList). Checks that exercise an optional server feature
  (rate limiting, a concurrent-download limit) run with that setting on; each check's scenario says which.
* ``zigpy`` — zigpy's own OTA server, which only answers OTA frames inside ``device.update_firmware(image)``
  (ZIGPY_BELLOWS.md §1.4, §2.3). Each probe is joined and interviewed by zigpy, and every scenario is played in
  a *window*: ``update_firmware()`` runs, sends its Image Notify, and serves the probe until the probe ends it
  (Upgrade End) or 30 s pass without progress — instant on virtual time. zigpy parses neither GB Upgrade Images
  nor Smart Energy frames (§1.2), so this target gets a standard Zigbee OTA file over the HA profile.

Each target also declares (`Claims`) what it does where the specification lets a server choose: our CHF its
profile, zigpy what its code does.

The security checks' scenarios (`SECURE_SCENARIOS`) put our CHF on its Smart Energy security as the in-process HAN
does (`han.security.HanSecurity`: trust centre with the probes' install codes in its Device Log, Key Establishment
server, APS layer on its radio), and the probes join through an APS layer of their own (`keys.py`). zigpy has no
Key Establishment server and does not look at the APS security of an OTA frame, so there the probes join with the
network key only.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import zigpy.types as t
from zigpy.device import ZigbeeDevice
from zigpy.ota import OtaImageWithMetadata
from zigpy.ota.image import parse_ota_image
from zigpy.ota.providers import BaseOtaImageMetadata
from zigpy.zcl import foundation

from emulator.chf.events import ServerEvent, TransferOutcome
from emulator.chf.node import ChfNode
from emulator.chf.store import HeldImage, ImageStore
from emulator.clock import Clock
from emulator.conformance.server.keys import BlindKeyServerApp, ServerFault, secure_probe_radio
from emulator.conformance.server.plan import (
    CURRENT_VERSION,
    FIRST_PROBE_NWK,
    HARDWARE_RANGE,
    IMAGE_TYPE,
    LISTEN,
    MANUFACTURER,
    NOTIFY_PAYLOAD_SIZES,
    OFFERED_VERSION,
    PAYLOAD_SIZE,
    PROBE_HARDWARE,
    SPARE_IEEE,
    SPECIFIC_IMAGE_TYPE,
    SPECIFIC_VERSION,
    STRANGER_IEEE,
    STRANGER_NWK,
    TARGET_IEEES,
)
from emulator.conformance.server.probe import Probe, ProbeIdentity
from emulator.conformance.server.transcript import Claims, Offer
from emulator.han.security import SE, HanSecurity
from emulator.ota.image import UpgradeImage, build_gb, build_zigbee
from emulator.profiles import (
    HOME_AUTOMATION_PROFILE,
    SMART_ENERGY_PROFILE,
    ActivationTime,
    ChfProfile,
    DeviceLogEntry,
    derived_install_code,
)
from emulator.radio.air import Air
from emulator.radio.loopback import LoopbackApp, loopback_config
from emulator.security.certs import CryptoSuite, DeviceCredentials

INTERVIEW_TIMEOUT = 60.0
# zigpy: FINAL_BLOCK_TIMEOUT (60 s) plus its after-upgrade read and re-interview fit well within this.
SESSION_END_TIMEOUT = 600.0
NOTIFY_TIMEOUT = 10.0
QUERY_JITTER = 42


class ScenarioError(Exception):
    """The bench could not set a scenario up (a probe not interviewed, no window opened): the check is
    inconclusive, not failed."""


def _offer(image: Any) -> Offer:
    header = image.header
    return Offer(image.serialize(), header.manufacturer_id, header.image_type, header.file_version)


def _payload() -> bytes:
    return bytes((i * 7 + 3) & 0xFF for i in range(PAYLOAD_SIZE))


def _offered_image(build: Callable[..., UpgradeImage]) -> UpgradeImage:
    """The upgrade file on offer, in the format `build` writes: both targets offer the same ids, payload and
    hardware range."""
    return build(
        MANUFACTURER,
        IMAGE_TYPE,
        OFFERED_VERSION,
        payload=_payload(),
        hw_min=HARDWARE_RANGE[0],
        hw_max=HARDWARE_RANGE[1],
    )


# -- benches: a server under test on a fresh virtual air, and its probes --------------------------------------


class Bench:
    """One server on one air for one scenario. Subclasses say how the server starts, how a window onto its OTA
    service opens, and which optional things it can be asked to do."""

    def __init__(self, air: Air, clock: Clock, app: LoopbackApp, offer: Offer, claims: Claims, profile_id: int):
        self.air = air
        self.clock = clock
        self.app = app
        self.offer = offer
        self.claims = claims
        self.profile_id = profile_id
        self.specific: Offer | None = None
        # zigpy serves OTA from its endpoint 1; our CHF from its profile's endpoint.
        self.server_endpoint = 1
        self.probes: list[Probe] = []
        self.sessions: list[str] = []
        # Smart Energy security, when the server speaks it: the run's security (trust centre, test CA).
        self.security: HanSecurity | None = None

    def identity(self, index: int) -> ProbeIdentity:
        ieee, nwk = (STRANGER_IEEE, STRANGER_NWK) if index < 0 else (TARGET_IEEES[index], FIRST_PROBE_NWK + index)
        return ProbeIdentity(
            ieee=ieee,
            nwk=nwk,
            profile_id=self.profile_id,
            manufacturer_code=MANUFACTURER,
            image_type=IMAGE_TYPE,
            file_version=CURRENT_VERSION,
            hardware_version=PROBE_HARDWARE,
        )

    async def join(self, index: int) -> Probe:
        """A probe (index 0..2: a target of the image; -1: a stranger) joined and interviewed by the server's
        zigpy app."""
        probe = Probe(self.radio_for(self.identity(index)), self.clock, self.identity(index))
        probe.server_endpoint = self.server_endpoint
        self.probes.append(probe)
        probe.air.join(probe)
        if probe.air is not self.air and getattr(probe.air, "admitted", True) is False:
            raise ScenarioError(f"probe {probe.ieee} was not admitted: it could not open the Transport-Key")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + INTERVIEW_TIMEOUT
        while loop.time() < deadline:
            device = self.app.devices.get(probe.ieee)
            if device is not None and device.is_initialized:
                return probe
            await asyncio.sleep(0.1)
        raise ScenarioError(f"the server's zigpy app did not finish interviewing probe {probe.ieee}")

    def radio_for(self, identity: ProbeIdentity) -> Any:
        """What a probe sits on: the air, or an APS security layer over it that joins with the probe's install
        code when the server is a Smart Energy trust centre."""
        trust_centre = None if self.security is None else self.security.trust_centre
        if trust_centre is None:
            return self.air
        return secure_probe_radio(self.air, identity.ieee, trust_centre, self.app.ieee)

    def issue(self, ieee: t.EUI64, suite: CryptoSuite) -> DeviceCredentials:
        """A certificate of the server's CA for `ieee`; for a server without one, of a CA of the bench's own
        (the best a probe can present to it)."""
        if self.security is None:
            self.security = HanSecurity(ChfProfile(security="none"), [])  # a CA only: no trust centre, no APS layer
        return self.security.issue(ieee, suite)

    @contextlib.asynccontextmanager
    async def window(self, *probes: Probe) -> AsyncIterator[None]:
        """While inside, the server serves these probes' OTA requests."""
        yield

    async def provoke_notifies(self, probe: Probe) -> None:
        """Make the server send what Image Notify it can (beyond a window's own)."""

    async def provoke_unsolicited_end(self, probe: Probe) -> str:
        """Make the server send unsolicited Upgrade End Responses; returns why it cannot, or ""."""
        return "the server cannot send an unsolicited Upgrade End Response"

    def outcomes(self) -> list[TransferOutcome] | None:
        return None

    async def settle(self) -> None:
        """Wait until the server's own timers could have reported anything more."""

    async def close(self) -> None:
        for probe in self.probes:
            probe.air.detach(probe)
        if self.security is not None:
            self.security.stop()
        await self.stop_server()

    async def stop_server(self) -> None:
        await self.app.shutdown()


class OursBench(Bench):
    def __init__(self, node: ChfNode, held: HeldImage, spare: HeldImage, **kwargs: Any) -> None:
        super().__init__(app=node.app, **kwargs)
        self.node = node
        self.server_endpoint = node.profile.endpoint
        self.held = held
        self.spare = spare

    async def provoke_notifies(self, probe: Probe) -> None:
        server = self.node.server
        for payload_type in range(len(NOTIFY_PAYLOAD_SIZES)):
            server.notify(probe.ieee, self.held, payload_type=payload_type, query_jitter=QUERY_JITTER)
            await asyncio.sleep(0.5)
        server.notify(None, self.held, payload_type=3, query_jitter=QUERY_JITTER)
        await asyncio.sleep(0.5)

    async def provoke_unsolicited_end(self, probe: Probe) -> str:
        self.node.server.send_upgrade_end_response(probe.ieee, self.held, ActivationTime.after(120))
        await asyncio.sleep(0.5)
        self.node.server.send_upgrade_end_response(None, self.held, ActivationTime.NOW)
        return ""

    def outcomes(self) -> list[TransferOutcome] | None:
        return list(self.node.server.outcomes)

    def discard_spare(self) -> None:
        self.node.server.discard(self.spare)

    async def settle(self) -> None:
        await asyncio.sleep(self.node.profile.transfer_timeout + LISTEN)

    async def stop_server(self) -> None:
        await self.node.stop()


class ZigpyBench(Bench):
    def __init__(self, image: OtaImageWithMetadata, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.image = image

    @contextlib.asynccontextmanager
    async def window(self, *probes: Probe) -> AsyncIterator[None]:
        """``update_firmware()`` per probe; inside once each probe has its Image Notify, and left only when
        every update has returned (its stall timers end an update the probe does not finish)."""
        tasks = []
        for probe in probes:
            seen = len(probe.notifies)
            device = self.app.get_device(ieee=probe.ieee)
            assert isinstance(device, ZigbeeDevice), f"zigpy knows {probe.ieee} as {type(device).__name__}"
            tasks.append(asyncio.create_task(device.update_firmware(self.image)))
            if await probe.next_notify(seen, NOTIFY_TIMEOUT) is None:
                for task in tasks:
                    task.cancel()
                raise ScenarioError(f"update_firmware() sent probe {probe.ieee} no Image Notify")
        try:
            yield
        finally:
            done, pending = await asyncio.wait(tasks, timeout=SESSION_END_TIMEOUT)
            for task in pending:
                task.cancel()
                self.sessions.append("update_firmware() still running: cancelled")
            for task in done:
                self.sessions.append(_session_result(task))

    async def provoke_notifies(self, probe: Probe) -> None:
        await self.app.ota.broadcast_notify()
        await asyncio.sleep(0.5)

    async def provoke_unsolicited_end(self, probe: Probe) -> str:
        return "zigpy's OTA server has no unsolicited Upgrade End Response (activation is always 'now', §2.3)"


def _session_result(task: asyncio.Task[Any]) -> str:
    exc = task.exception()
    if exc is not None:
        return f"update_firmware() raised {type(exc).__name__}"
    status = task.result()
    return f"update_firmware() returned {status.name if isinstance(status, foundation.Status) else status}"


# -- targets --------------------------------------------------------------------------------------------------


class ServerTarget:
    """A kind of OTA server the checks can start on a fresh air for each scenario."""

    name = ""
    description = ""

    async def bench(self, scenario: str, air: Air, clock: Clock) -> Bench:
        raise NotImplementedError

    def network(self) -> ChfProfile:
        """The network every bench of this target forms (and a capture decrypts with)."""
        return ChfProfile()


# Profile settings our CHF runs a scenario with, where the check is about an optional feature.
OURS_SCENARIO_SETTINGS: dict[str, dict[str, Any]] = {
    "rate-limit": {"wait_for_data": 30.0, "minimum_block_period": 250},
    "concurrency": {"max_concurrent_downloads": 2},
}
# The scenarios of the security checks: only they put our CHF on its Smart Energy security (trust centre, Key
# Establishment server, APS layer). The OTA checks judge the OTA server itself, on a network without APS security.
SECURE_SCENARIOS = frozenset({"se-clear-ota", "se-certificate"})


class OursTarget(ServerTarget):
    """The emulator's CHF. `settings` change the declared profile (what the checks expect); `served` change only
    the profile the server actually runs — a deliberately misconfigured server, to show a check failing; `faults`
    break its Smart Energy security from outside (`keys.ServerFault`), for the checks no profile setting reaches."""

    name = "ours"
    description = "the emulator's CHF OTA server (emulator.chf.server) on the loopback zigpy radio, GB Upgrade Image"

    def __init__(
        self,
        *,
        settings: Mapping[str, Any] | None = None,
        served: Mapping[str, Any] | None = None,
        faults: Iterable[ServerFault] = (),
    ):
        self.settings = dict(settings or {})
        self.served = dict(served or {})
        self.faults = frozenset(faults)

    def declared(self, scenario: str) -> ChfProfile:
        return ChfProfile().replace(**{**OURS_SCENARIO_SETTINGS.get(scenario, {}), **self.settings})

    async def bench(self, scenario: str, air: Air, clock: Clock) -> Bench:
        declared = self.declared(scenario)
        profile = declared.replace(**self.served)
        image = _offered_image(build_gb)
        offer = _offer(image)
        held = HeldImage.from_bytes(offer.data, device_ids=TARGET_IEEES)
        specific_image = build_zigbee(
            MANUFACTURER,
            SPECIFIC_IMAGE_TYPE,
            SPECIFIC_VERSION,
            payload=b"client configuration",
            destination=TARGET_IEEES[0],
        )
        specific = HeldImage.from_bytes(specific_image.serialize())
        spare_image = build_gb(MANUFACTURER, IMAGE_TYPE + 1, OFFERED_VERSION, payload=_payload())
        spare = HeldImage.from_bytes(spare_image.serialize(), device_ids=(SPARE_IEEE,))
        security = None
        if profile.security == SE and scenario in SECURE_SCENARIOS:
            # The CHF is the probes' trust centre: its Device Log holds each probe's (test) install code.
            log = tuple(DeviceLogEntry(ieee, derived_install_code(ieee)) for ieee in TARGET_IEEES)
            profile = profile.replace(device_log=log)
            security = HanSecurity(profile, [])
        node = ChfNode(profile, ImageStore([held, specific, spare]), clock)
        await self._start(node, security, air, clock)
        claims = Claims(
            query_policy=declared.query_policy,
            page_requests=declared.page_requests,
            query_specific_file=declared.query_specific_file,
            rate_limited=bool(declared.wait_for_data or declared.minimum_block_period),
            minimum_block_period=declared.minimum_block_period or None,
            max_concurrent_downloads=declared.max_concurrent_downloads or None,
            activation=declared.ppmid_activation,
            se_security=declared.security == SE,
        )
        bench = OursBench(
            node, held, spare, air=air, clock=clock, offer=offer, claims=claims, profile_id=SMART_ENERGY_PROFILE
        )
        bench.specific = _offer(specific_image)
        bench.security = security
        return bench

    async def _start(self, node: ChfNode, security: HanSecurity | None, air: Air, clock: Clock) -> None:
        """Start the CHF on `air`; with `security`, on its APS layer and with its Key Establishment server (as
        the in-process HAN does), broken by `faults` where asked."""
        if security is None:
            await node.start_loopback(air)
            return
        events: list[ServerEvent] = []
        radio = security.chf_radio(air, clock, events.append)
        radio.refuse_clear = ServerFault.ACCEPT_CLEAR_OTA not in self.faults
        await node.start_loopback(radio)
        app: Any = node.app
        blind = self.faults & {ServerFault.IGNORE_ISSUER, ServerFault.IGNORE_SUBJECT}
        if blind:
            issuer = next(iter(security.chf_credentials().values())).certificate.issuer
            app = BlindKeyServerApp(node.app, blind, issuer)
        security.attach_chf(app, node.profile.endpoint, clock, events.append)
        context = security.chf_context
        node.server.awaits_link_key = lambda ieee: context.link_key(ieee) is None


class ZigpyTarget(ServerTarget):
    """zigpy's OTA server as ZIGPY_BELLOWS.md §2.3 measured it: block cap 50, page requests served, an Upgrade End
    Response (0, 0) to every Upgrade End Request, no WAIT_FOR_DATA, no Query Device Specific File."""

    name = "zigpy"
    description = (
        f"zigpy {importlib.metadata.version('zigpy')} OTA server (ZigbeeDevice.update_firmware) on the loopback "
        "radio, standard Zigbee OTA file, HA profile"
    )
    claims = Claims(query_policy="upgrade", page_requests=True, activation=ActivationTime.NOW)

    async def bench(self, scenario: str, air: Air, clock: Clock) -> Bench:
        network = self.network()
        config = loopback_config(
            ieee=network.ieee,
            channel=network.channel,
            pan_id=network.pan_id,
            extended_pan_id=network.extended_pan_id,
            network_key=bytes.fromhex(network.network_key.replace(":", "")),
        )
        app = await LoopbackApp.start_on(air, config, network.ieee)
        image = _offered_image(build_zigbee)
        offer = _offer(image)
        firmware, _ = parse_ota_image(offer.data)
        metadata = BaseOtaImageMetadata(
            file_version=offer.file_version,
            manufacturer_id=offer.manufacturer_code,
            image_type=offer.image_type,
            file_size=offer.size,
        )
        return ZigpyBench(
            OtaImageWithMetadata(metadata=metadata, firmware=firmware),
            air=air,
            clock=clock,
            app=app,
            offer=offer,
            claims=self.claims,
            profile_id=HOME_AUTOMATION_PROFILE,
        )


TARGETS: dict[str, Callable[[], ServerTarget]] = {"ours": OursTarget, "zigpy": ZigpyTarget}
