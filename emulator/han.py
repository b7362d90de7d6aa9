"""An in-process GB HAN: the virtual air, the CHF (zigpy loopback app + OTA server) and emulated devices.

This is what `ota-emu run` and `ota-emu demo` drive and what end-to-end tests and the benchmark build on. It
also keeps the one summary a user wants at the end: for each device, where it started, where it ended and why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
from emulator.han_security import HanSecurity
from emulator.ncp.faults import Faults
from emulator.ncp.server import VirtualNcp
from emulator.ota.signing import manufacturer_image_hash
from emulator.profiles import ChfProfile, DeviceProfile
from emulator.radio.air import Air, LinkModel
from emulator.radio.loopback import LoopbackApp

FIRST_DEVICE_NWK = 0x1001
# CCS08 outcomes after which a device cannot get this image: a failed transfer is retried by the device.
FINAL_FAILURES = frozenset({TransferResponse.IMAGE_DISCARDED, TransferResponse.HARDWARE_VERSION_MISMATCH})

Event = server_events.ServerEvent | device_events.DeviceEvent


@dataclass
class DeviceSummary:
    """Where one device stands: `result` is pending, upgraded, held (HCALCS waiting for Activate Firmware),
    failed or no-image (the CHF holds nothing for it)."""

    ieee: t.EUI64
    kind: str
    nwk: int
    start_version: int
    version: int
    result: str = "pending"
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

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["ieee"] = str(self.ieee)
        return data


@dataclass(frozen=True)
class HanOptions:
    seed: int = 0
    link: LinkModel = field(default_factory=LinkModel)
    state_dir: Path | None = None
    start_utc: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))
    activate_hcalcs: bool = False
    activate_after: float | None = None
    radio: str = "loopback"
    ezsp_version: int = 13
    ncp_faults: Faults | None = None


def expand(profiles: Iterable[DeviceProfile], count: int) -> list[DeviceProfile]:
    """`count` devices per profile; copies get consecutive EUI-64s (the last bytes count up)."""
    devices = []
    made_by: dict[t.EUI64, str] = {}
    for profile in profiles:
        base = int.from_bytes(bytes(profile.ieee), "little")
        for index in range(count):
            ieee = t.EUI64(((base + index) & (1 << 64) - 1).to_bytes(8, "little"))
            devices.append(profile if index == 0 else profile.replace(ieee=ieee, nwk=None))
            origin = _origin(profile, index)
            if ieee in made_by:
                fix = "change the ieee of one profile" + (", or use a smaller --count" if count > 1 else "")
                raise ValueError(
                    f"{made_by[ieee]} and {origin} would both be {ieee}, and a HAN needs one EUI-64 per device ({fix})"
                )
            made_by[ieee] = origin
    return devices


def _origin(profile: DeviceProfile, index: int) -> str:
    """Where a device of `expand` comes from, in words: the profile, or which copy of it."""
    if index == 0:
        return f"the {profile.kind.upper()} of {profile.source}"
    return f"{profile.kind.upper()} copy {index + 1} of {profile.source} (--count counts up from {profile.ieee})"


class Han:
    """Build with profiles, `await start()`, `await settle()`, then read `summaries` and `events`."""

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
        self.clock: Clock
        self.app: LoopbackApp
        self.server: OtaServer

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        options = self.options
        self.clock = Clock(options.start_utc)
        self.chf = ChfNode(self.chf_profile, self.store, self.clock)
        if options.radio == "ezsp":
            # bellows over tcp:// to a virtual NCP whose air carries the devices: the real EZSP code path.
            self.ncp = VirtualNcp(
                self.air, ezsp_version=options.ezsp_version, faults=options.ncp_faults, seed=options.seed
            )
            await self.ncp.start()
            await self.chf.start_ezsp(self.ncp.url)
            await self.ncp.wait_for_network()
        else:
            await self.chf.start_loopback(self.security.chf_radio(self.air, self.clock, self._on_event))
        self.app, self.server = self.chf.app, self.chf.server
        self.server.add_listener(self._on_event)
        if options.radio != "ezsp":
            self.security.attach_chf(self.app, self.chf_profile.endpoint, self.clock, self._on_event)
            if self.security.chf_se:
                context = self.security.chf_context
                self.server.awaits_link_key = lambda ieee: context.link_key(ieee) is None
        if options.state_dir is not None:
            options.state_dir.mkdir(parents=True, exist_ok=True)
        for index, profile in enumerate(self.device_profiles):
            nwk = profile.nwk if profile.nwk is not None else FIRST_DEVICE_NWK + index
            radio = self.security.device_radio(profile, self.air) if options.radio != "ezsp" else self.air
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
        """Send the HCALCS Activate Firmware command (CS06); by default with the hash of the image it holds."""
        device = self.devices[ieee]
        if image_hash is None:
            image_hash = self.hash_for(device)
        return await device.activate_firmware(image_hash, at)

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

    def _finish(self, summary: DeviceSummary, result: str, reason: str) -> None:
        if summary.result == "pending":
            self._pending -= 1
        summary.result = result
        summary.reason = reason
        summary.finished_at = self.clock.now()
        self._check_settled()

    def _update_security(self, summary: DeviceSummary, event: Event) -> bool:
        """Fold a Smart Energy security event into the summary; False for any other event."""
        sec = security_events
        if isinstance(event, sec.Admitted):
            summary.joined, summary.link_key = "install code", "install code"
        elif isinstance(event, sec.NotAdmitted):
            self._finish(summary, "not-joined", event.reason)
        elif isinstance(event, sec.KeyEstablished):
            summary.cbke_suite, summary.link_key = event.suite, "CBKE"
        elif isinstance(event, sec.KeyEstablishmentFailed):
            self._finish(summary, "failed", f"CBKE failed: {event.status}")
        else:
            return False
        return True

    def _update(self, summary: DeviceSummary, event: Event) -> None:
        de, se = device_events, server_events
        if self._update_security(summary, event):
            return
        if isinstance(event, de.DownloadStarted):
            summary.size, summary.offset = event.size, event.offset
            if summary.result != "pending":
                summary.result, summary.finished_at = "pending", None
                self._pending += 1
        elif isinstance(event, de.Activated):
            summary.version = event.new_version if event.success else summary.version
            self._finish(
                summary, "upgraded" if event.success else "failed", "" if event.success else "activation failed"
            )
        elif isinstance(event, de.ActivationOutcome):
            summary.version = event.version
            ok = event.response_code == ActivationResponse.SUCCESS
            self._finish(summary, "upgraded" if ok else "failed", "" if ok else event.response_code.name.lower())
        elif isinstance(event, de.WaitingToUpgrade):
            if self.options.activate_hcalcs and summary.kind == "hcalcs":
                if summary.ieee not in self._activation_sent:
                    self._activation_sent.add(summary.ieee)
                    self._schedule_activation(summary.ieee)
            elif self.server.awaiting_kind(summary.ieee):
                summary.reason = "told to wait until the CHF knows the device's kind"
            else:
                self._finish(summary, "held", "waiting for Activate Firmware")
        elif isinstance(event, de.ImageVerified) and not event.ok:
            self._finish(summary, "failed", f"invalid image: {event.reason}")
        elif isinstance(event, de.QueryAnswered) and event.status is not None and summary.result == "pending":
            if summary.size == 0:
                self._finish(summary, "no-image", f"query answered 0x{event.status:02X}")
        elif isinstance(event, se.TransferOutcome) and event.response in FINAL_FAILURES:
            self._finish(summary, "failed", event.reason)
        elif isinstance(event, se.TransferOutcome) and event.response == TransferResponse.FILE_TRANSFER_FAILURE:
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
