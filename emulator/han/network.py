"""An in-process GB HAN: the virtual air, the CHF (zigpy loopback app + OTA server) and emulated devices.

This is what `ota-emu run` and `ota-emu demo` drive and what end-to-end tests and the benchmark build on. It
also keeps the one summary a user wants at the end: for each device, where it started, where it ended and why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import zigpy.types as t

from emulator.chf import events as server_events
from emulator.chf.key_establishment import KeyEstablished as ServerKeyEstablished
from emulator.chf.node import ChfNode
from emulator.chf.server import OtaServer
from emulator.chf.store import HeldImage, ImageStore
from emulator.clock import Clock
from emulator.device import events as device_events
from emulator.device import security_events
from emulator.device.device import EmulatedDevice
from emulator.gb.codes import ActivationResponse, TransferResponse
from emulator.han.security import HanSecurity
from emulator.ncp.faults import Faults
from emulator.ncp.server import VirtualNcp
from emulator.ota.signing import manufacturer_image_hash
from emulator.profiles import FIRST_DEVICE_NWK as FIRST_DEVICE_NWK  # noqa: PLC0414 - still importable from here
from emulator.profiles import ChfProfile, DeviceProfile
from emulator.profiles import expand as expand  # noqa: PLC0414 - still importable from here
from emulator.radio.air import Air, LinkModel
from emulator.radio.kind import RadioKind
from emulator.radio.loopback import LoopbackApp

# CCS08 outcomes after which a device cannot get this image: a failed transfer is retried by the device.
FINAL_FAILURES = frozenset({TransferResponse.IMAGE_DISCARDED, TransferResponse.HARDWARE_VERSION_MISMATCH})

Event = server_events.ServerEvent | device_events.DeviceEvent
#: Sends Activate Firmware (CS06) to a device: its EUI-64, the Manufacturer Image Hash, the execution time.
Activator = Callable[[t.EUI64, bytes, datetime | None], Awaitable[device_events.ActivationReply]]


class DeviceResult(StrEnum):
    """Where a device's upgrade stands; the value is what the outcome table and the JSON `result` say."""

    PENDING = "pending"
    UPGRADED = "upgraded"
    HELD = "held"  # an HCALCS holding its image, waiting for Activate Firmware
    FAILED = "failed"
    NO_IMAGE = "no-image"  # the CHF holds nothing for it
    NOT_JOINED = "not-joined"  # the trust centre did not admit it

    @property
    def ok(self) -> bool:
        """A result a run counts as success (exit 0): upgraded, held, or nothing was meant for the device."""
        return self in (DeviceResult.UPGRADED, DeviceResult.HELD, DeviceResult.NO_IMAGE)


@dataclass
class DeviceSummary:
    """Where one device stands (`result`), from which version to which, and why it ended as it did."""

    ieee: t.EUI64
    kind: str
    nwk: int
    start_version: int
    version: int
    result: DeviceResult = DeviceResult.PENDING
    reason: str = ""
    offset: int = 0
    size: int = 0
    finished_at: float | None = None
    #: How often the device obeyed WAIT_FOR_DATA (the CHF's admission control, rate limiting).
    waits: int = 0
    #: Smart Energy security: how it joined ("install code"), the CBKE suite, where its link key came from.
    joined: str = ""
    cbke_suite: int | None = None
    link_key: str = ""

    @property
    def security(self) -> str:
        """Smart Energy security in a few words ("install code, CBKE suite 2, link key CBKE"); empty without."""
        parts = [f"joined with {self.joined}" if self.joined else ""]
        parts.append(f"CBKE suite {self.cbke_suite}" if self.cbke_suite is not None else "")
        parts.append(f"link key {self.link_key}" if self.link_key else "")
        return ", ".join(part for part in parts if part)

    def follow(self, event: device_events.DeviceEvent) -> tuple[DeviceResult, str] | None:
        """Fold the device's own progress into the summary (offset and size, the version it runs after an
        activation); returns the final result the event settles, and why. None for an event that settles nothing
        by itself: whether a held image or a query without an answer ends a run depends on who runs the device."""
        de = device_events
        if isinstance(event, de.Progress):
            self.offset, self.size = event.offset, event.size
        elif isinstance(event, de.DownloadStarted):
            self.size, self.offset = event.size, event.offset
            self.result, self.finished_at = DeviceResult.PENDING, None  # a new download reopens a settled device
        elif isinstance(event, de.Activated):
            if not event.success:
                return DeviceResult.FAILED, "activation failed"
            self.version = event.new_version
            return DeviceResult.UPGRADED, ""
        elif isinstance(event, de.ActivationOutcome):
            self.version = event.version
            if event.response_code != ActivationResponse.SUCCESS:
                return DeviceResult.FAILED, event.response_code.name.lower()
            return DeviceResult.UPGRADED, ""
        elif isinstance(event, de.ImageVerified) and not event.ok:
            return DeviceResult.FAILED, f"invalid image: {event.reason}"
        return None

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["ieee"], data["result"] = str(self.ieee), self.result.value
        return data


@dataclass(frozen=True)
class HanOptions:
    seed: int = 0
    link: LinkModel = field(default_factory=LinkModel)
    state_dir: Path | None = None
    start_utc: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))
    activate_hcalcs: bool = False
    activate_after: float | None = None
    radio: RadioKind = RadioKind.LOOPBACK
    ezsp_version: int = 13
    ncp_faults: Faults | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "radio", RadioKind(self.radio))  # "ezsp" as written, or a bad name refused


class Han:
    """Build with profiles, `await start()`, `await settle()`, then read `summaries` and `events`.

    Listeners (`add_listener`) see every event of the run. Activate Firmware goes through `activator`: straight
    to the device unless a listener that speaks GBCS (`emulator.han.gbcs.HanGbcs`) takes it over."""

    def __init__(
        self,
        chf: ChfProfile,
        devices: list[DeviceProfile],
        images: Iterable[HeldImage] = (),
        options: HanOptions | None = None,
    ) -> None:
        self.chf_profile = chf
        self.device_profiles = devices
        self.options = options or HanOptions()
        self.store = ImageStore.from_profile(chf, images)
        self.events: list[Event] = []
        self.summaries: dict[t.EUI64, DeviceSummary] = {}
        self.devices: dict[t.EUI64, EmulatedDevice] = {}
        self._listeners: list[Callable[[Event], None]] = []
        self._settled = asyncio.Event()
        self._pending = 0  # summaries whose result is "pending": settled at 0, without scanning every device
        self.ncp: VirtualNcp | None = None
        self._activation_sent: set[t.EUI64] = set()
        # Made here, not in start(), so a capture can listen from the first frame.
        self.air = Air(seed=self.options.seed, link=self.options.link)
        self.security = HanSecurity(chf, devices)
        self.activator: Activator = self._activate_directly
        self.clock: Clock
        self.app: LoopbackApp
        self.server: OtaServer

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        options = self.options
        self.clock = Clock(options.start_utc)
        self.chf = ChfNode(self.chf_profile, self.store, self.clock)
        if options.radio == RadioKind.EZSP:
            # bellows over tcp:// to a virtual NCP whose air carries the devices: the real EZSP code path.
            self.ncp = VirtualNcp(
                self.air, ezsp_version=options.ezsp_version, faults=options.ncp_faults, seed=options.seed
            )
            await self.ncp.start()
            assert self.ncp.url is not None  # set once the NCP listens
            await self.chf.start_ezsp(self.ncp.url)
            await self.ncp.wait_for_network()
        else:
            await self.chf.start_loopback(self.security.chf_radio(self.air, self.clock, self._on_event))
        self.app, self.server = self.chf.app, self.chf.server
        self.server.add_listener(self._on_event)
        if options.radio == RadioKind.LOOPBACK:
            self.security.attach_chf(self.app, self.chf_profile.endpoint, self.clock, self._on_event)
            if self.security.chf_se:
                context = self.security.chf_context
                self.server.awaits_link_key = lambda ieee: context.link_key(ieee) is None
        if options.state_dir is not None:
            options.state_dir.mkdir(parents=True, exist_ok=True)
        for index, profile in enumerate(self.device_profiles):
            nwk = profile.nwk if profile.nwk is not None else FIRST_DEVICE_NWK + index
            radio = self.security.device_radio(profile, self.air) if options.radio == RadioKind.LOOPBACK else self.air
            device = EmulatedDevice(
                profile, radio, self.clock, nwk=nwk, state_dir=options.state_dir, seed=options.seed * 7919 + index
            )
            self.security.attach_device(device, radio)
            summary = DeviceSummary(profile.ieee, profile.kind, nwk, device.running_version, device.running_version)
            # Bound to its summary: a device's events (one per block) need no look-up by EUI-64.
            device.add_listener(functools.partial(self._on_device_event, summary))
            self.devices[profile.ieee] = device
            self.summaries[profile.ieee] = summary
            self._pending += 1
        for device in self.devices.values():
            await device.start()

    async def stop(self) -> None:
        for device in self.devices.values():
            await device.stop()
        self.security.stop()
        await self.chf.stop()
        if self.ncp is not None:
            await self.ncp.stop()

    async def settle(self, limit: float) -> bool:
        """Run until every device has a final result or `limit` protocol seconds pass; True when all settled."""
        self._check_settled()
        try:
            await asyncio.wait_for(self._settled.wait(), limit)
        except TimeoutError:
            return False
        return True

    async def activate(
        self, ieee: t.EUI64, image_hash: bytes | None = None, at: datetime | None = None
    ) -> device_events.ActivationReply:
        """Send the HCALCS Activate Firmware command (CS06) through `activator`; by default with the hash of the
        image the CHF holds for it."""
        if image_hash is None:
            image_hash = self.hash_for(self.devices[ieee])
        return await self.activator(ieee, image_hash, at)

    async def _activate_directly(
        self, ieee: t.EUI64, image_hash: bytes, at: datetime | None
    ) -> device_events.ActivationReply:
        return await self.devices[ieee].activate_firmware(image_hash, at)

    def fail(self, ieee: t.EUI64, reason: str) -> None:
        """End the run of a device that is still pending as failed (an activation it waited for was refused)."""
        summary = self.summaries.get(ieee)
        if summary is not None and summary.result == DeviceResult.PENDING:
            self._finish(summary, DeviceResult.FAILED, reason)

    def hash_for(self, device: EmulatedDevice) -> bytes:
        """The Manufacturer Image Hash a supplier would send: that of the image the CHF holds for the device."""
        profile = device.profile
        held = [
            h
            for h in self.store
            if h.manufacturer_id == profile.manufacturer_code
            and h.image_type == profile.image_type
            and h.targets(profile.ieee)
        ]
        if not held:
            return bytes(32)
        return manufacturer_image_hash(max(held, key=lambda h: h.file_version).image)

    # -- bookkeeping --------------------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ServerKeyEstablished) and event.ieee is not None:
            self.server.link_key_ready(event.ieee)
        summary = self.summaries.get(event.ieee) if event.ieee is not None else None
        self._on_device_event(summary, event)

    def _on_device_event(self, summary: DeviceSummary | None, event: Event) -> None:
        # What recurs per block or per request is folded into the summary, not kept: a thousand downloads are
        # half a million blocks, and a busy CHF tells each device it cannot admit yet to come back, again and again.
        if isinstance(event, device_events.Progress):
            if summary is not None:
                summary.offset, summary.size = event.offset, event.size
        elif isinstance(event, device_events.WaitingForData):
            if summary is not None:
                summary.waits += 1
        elif not isinstance(event, server_events.WaitForDataSent):
            self.events.append(event)
            if summary is not None:
                self._update(summary, event)
        for listener in self._listeners:
            listener(event)

    def _finish(self, summary: DeviceSummary, result: DeviceResult, reason: str) -> None:
        if summary.result == DeviceResult.PENDING:
            self._pending -= 1
        summary.result = result
        summary.reason = reason
        summary.finished_at = self.clock.now()
        self._check_settled()

    def _update(self, summary: DeviceSummary, event: Event) -> None:
        if isinstance(event, server_events.ServerEvent):
            self._follow_server(summary, event)
        elif not self._follow_security(summary, event):
            self._follow_device(summary, event)

    def _follow_security(self, summary: DeviceSummary, event: device_events.DeviceEvent) -> bool:
        """Joining and key establishment; False for an event that is not about them."""
        sec = security_events
        if isinstance(event, sec.Admitted):
            summary.joined, summary.link_key = "install code", "install code"
        elif isinstance(event, sec.NotAdmitted):
            self._finish(summary, DeviceResult.NOT_JOINED, event.reason)
        elif isinstance(event, sec.KeyEstablished):
            summary.cbke_suite, summary.link_key = event.suite, "CBKE"
        elif isinstance(event, sec.KeyEstablishmentFailed):
            self._finish(summary, DeviceResult.FAILED, f"CBKE failed: {event.status}")
        else:
            return False
        return True

    def _follow_device(self, summary: DeviceSummary, event: device_events.DeviceEvent) -> None:
        if isinstance(event, device_events.DownloadStarted) and summary.result != DeviceResult.PENDING:
            self._pending += 1  # `follow` reopens the settled device
        verdict = summary.follow(event)
        if verdict is not None:
            self._finish(summary, *verdict)
        elif isinstance(event, device_events.WaitingToUpgrade):
            self._held(summary)
        elif isinstance(event, device_events.QueryAnswered) and self._nothing_offered(summary, event):
            self._finish(summary, DeviceResult.NO_IMAGE, f"query answered 0x{event.status:02X}")

    @staticmethod
    def _nothing_offered(summary: DeviceSummary, event: device_events.QueryAnswered) -> bool:
        """A pending device that downloaded nothing was answered without an image: it would only ask again."""
        return event.status is not None and summary.size == 0 and summary.result == DeviceResult.PENDING

    def _held(self, summary: DeviceSummary) -> None:
        """The device holds its image and waits: activate it (`activate_hcalcs`), wait for the CHF to learn the
        device's kind, or end as held."""
        if self.options.activate_hcalcs and summary.kind == "hcalcs":
            if summary.ieee not in self._activation_sent:
                self._activation_sent.add(summary.ieee)
                self._schedule_activation(summary.ieee)
        elif self.server.awaiting_kind(summary.ieee):
            summary.reason = "told to wait until the CHF knows the device's kind"
        else:
            self._finish(summary, DeviceResult.HELD, "waiting for Activate Firmware")

    def _follow_server(self, summary: DeviceSummary, event: server_events.ServerEvent) -> None:
        if isinstance(event, server_events.TransferOutcome):
            if event.response in FINAL_FAILURES:
                self._finish(summary, DeviceResult.FAILED, event.reason)
            elif event.response == TransferResponse.FILE_TRANSFER_FAILURE:
                summary.reason = f"retrying after: {event.reason}"

    def _schedule_activation(self, ieee: t.EUI64) -> None:
        after = self.options.activate_after
        at = None if after is None else self.clock.utc() + timedelta(seconds=after)
        task = asyncio.get_running_loop().create_task(self.activate(ieee, at=at))
        task.add_done_callback(lambda done: done.exception())

    def _check_settled(self) -> None:
        if self.summaries and not self._pending:
            self._settled.set()
        else:
            self._settled.clear()
