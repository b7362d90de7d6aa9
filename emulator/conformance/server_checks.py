"""Server-side conformance checks S-01…S-18 (SPEC.md §2, §6.2, §9.3; PEERS.md §5.1): scripted probes play an
OTA client's side against an OTA server and the server is judged from the frames it sent back.

Two servers can be probed:

* ``ours`` — the emulator's CHF (`emulator.chf.server.OtaServer`) on the loopback zigpy radio, holding a GB
  Upgrade Image for the probes' EUI-64s (the DeviceIDList). Checks that exercise an optional server feature
  (rate limiting, a concurrent-download limit) run with that setting on; each check's scenario says which.
* ``zigpy`` — zigpy's own OTA server, which only answers OTA frames inside ``device.update_firmware(image)``
  (ZIGPY_BELLOWS.md §1.4, §2.3). Each probe is joined and interviewed by zigpy, and every scenario is played in
  a *window*: ``update_firmware()`` runs, sends its Image Notify, and serves the probe until the probe ends it
  (Upgrade End) or 30 s pass without progress — instant on virtual time. zigpy parses neither GB Upgrade Images
  nor Smart Energy frames (§1.2), so this target gets a standard Zigbee OTA file over the HA profile.

A check judges what the specification leaves to the server (version policy, page support, rate limiting)
against what the target *declares* (`Claims`): our CHF declares its profile, zigpy what its code does. A server
that behaves unlike its declaration fails — which is also how the tests prove each check can fail.

Scenarios (async, they drive probes) and judges (pure, they read recorded bytes) are kept apart: checks that
read the same exchange share one scenario run, and a judge can be fed recorded frames directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zigpy.types as t
from zigpy.ota import OtaImageWithMetadata
from zigpy.ota.image import parse_ota_image
from zigpy.ota.providers import BaseOtaImageMetadata
from zigpy.zcl import foundation

from emulator.chf.events import TransferOutcome
from emulator.chf.node import ChfNode
from emulator.chf.policy import version_allowed
from emulator.chf.store import HeldImage, ImageStore
from emulator.clock import Clock, run
from emulator.conformance.model import Check, CheckResult, FrameRecord, Level, Report, TimelinePoint, Verdict
from emulator.conformance.probe import Exchange, Probe, ProbeIdentity, decode_record, raw, wait_seconds
from emulator.errors import InputError
from emulator.gb.codes import AlertCode, TransferResponse
from emulator.ota import frames
from emulator.ota.frames import UPGRADE_TIME_WAIT, Status
from emulator.ota.image import build_gb, build_zigbee
from emulator.profiles import HOME_AUTOMATION_PROFILE, SMART_ENERGY_PROFILE, ChfProfile
from emulator.radio.air import Air
from emulator.radio.capture import PcapWriter
from emulator.radio.loopback import LoopbackApp, loopback_config

# -- what the probes ask for ---------------------------------------------------------------------------------

MANUFACTURER = 0x121D
IMAGE_TYPE = 0x0084
CURRENT_VERSION = 1
OFFERED_VERSION = 2
HARDWARE_RANGE = (0x1111, 0x1211)
PROBE_HARDWARE = 0x1150
PAYLOAD_SIZE = 300
# A device-specific file (SPEC.md §2.9): client configuration, for the first probe only.
SPECIFIC_IMAGE_TYPE = 0xFFC1
SPECIFIC_VERSION = 5
# The "missing file" of Silicon Labs' test case 9.5.6 (SPEC.md §9.1).
MISSING_FILE = (0xFFF0, 0x0000, 0xFFFFFFF0)
MISSING_FILE_OFFSET = 100
# MaximumDataSize of a download, and a smaller one a server must also respect.
MAX_DATA_SIZE = 64
SMALL_DATA_SIZE = 17
CONCURRENT_DATA_SIZE = 40
# An Image Page Request (SPEC.md §2.5): offset, MaximumDataSize, PageSize, ResponseSpacing (ms).
PAGE = (10, 50, 120, 40)
# Protocol seconds a probe listens where the right answer is silence (or may come late).
LISTEN = 5.0
INTERVIEW_TIMEOUT = 60.0
# zigpy: FINAL_BLOCK_TIMEOUT (60 s) plus its after-upgrade read and re-interview fit well within this.
SESSION_END_TIMEOUT = 600.0
NOTIFY_TIMEOUT = 10.0
QUERY_JITTER = 42
# Frames are dated from a fixed UTC so that two runs of the same checks produce the same bytes.
START_UTC = datetime(2026, 1, 1, tzinfo=UTC)

TARGET_IEEES = tuple(t.EUI64.convert(f"00:db:12:34:56:78:91:0{i}") for i in range(1, 4))
SPARE_IEEE = t.EUI64.convert("00:db:12:34:56:78:91:04")  # in the DeviceIDList of an image that gets discarded
STRANGER_IEEE = t.EUI64.convert("00:db:12:34:56:78:91:ff")  # in no DeviceIDList
FIRST_PROBE_NWK = 0x2001
STRANGER_NWK = 0x20FF

ZCL_HEADER_SIZE = 3
FC_S2C_NO_DEFAULT_RESPONSE = 0x19
DEFAULT_RESPONSE_DISABLED = 0x10
NOTIFY_PAYLOAD_SIZES = (2, 4, 6, 10)
IMAGE_BLOCK = frames.COMMAND_IDS["image_block"]
UPGRADE_END = frames.COMMAND_IDS["upgrade_end"]
FAILED_END_STATUSES = (Status.ABORT, Status.INVALID_IMAGE, Status.REQUIRE_MORE_IMAGE)
MALFORMED_STATUSES = (Status.MALFORMED_COMMAND, Status.INVALID_FIELD)


class UnknownCheckError(InputError):
    """A check ID that is not in the server catalogue."""


class UnknownTargetError(InputError):
    """A server target other than the ones this module can start."""


class ScenarioError(Exception):
    """The bench could not set a scenario up (a probe not interviewed, no window opened): the check is
    inconclusive, not failed."""


# -- the image on offer and what a target declares ------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """An upgrade file the server holds, as the probes know it."""

    data: bytes
    manufacturer_code: int
    image_type: int
    file_version: int

    @property
    def key(self) -> tuple[int, int, int]:
        return self.manufacturer_code, self.image_type, self.file_version

    @property
    def size(self) -> int:
        return len(self.data)


def _offer(image: Any) -> Offer:
    header = image.header
    return Offer(image.serialize(), header.manufacturer_id, header.image_type, header.file_version)


def _payload() -> bytes:
    return bytes((i * 7 + 3) & 0xFF for i in range(PAYLOAD_SIZE))


@dataclass(frozen=True)
class Claims:
    """What a target declares where the specification lets a server choose; checks judge against it."""

    query_policy: str = "upgrade"
    page_requests: bool = True
    query_specific_file: bool = False
    rate_limited: bool = False
    minimum_block_period: int | None = None
    max_concurrent_downloads: int | None = None
    activation: str | None = None


@dataclass
class Transcript:
    """Everything one scenario run produced, in the form judges read."""

    claims: Claims
    offer: Offer
    specific: Offer | None = None
    exchanges: list[Exchange] = field(default_factory=list)
    notifies: list[FrameRecord] = field(default_factory=list)
    outcomes: list[TransferOutcome] | None = None
    expected_outcomes: dict[t.EUI64, set[TransferResponse]] = field(default_factory=dict)
    stray: list[FrameRecord] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)
    unsupported: str = ""
    duration: float = 0.0

    def add(self, exchange: Exchange) -> Exchange:
        self.exchanges.append(exchange)
        return exchange

    def add_all(self, exchanges: Iterable[Exchange]) -> None:
        self.exchanges.extend(exchanges)

    @property
    def frames(self) -> list[FrameRecord]:
        """Every frame of the run: the exchanges and what arrived while nothing was listening."""
        return sorted([*(f for e in self.exchanges for f in e.frames), *self.stray], key=lambda f: f.at)


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
        probe = Probe(self.air, self.clock, self.identity(index), server_endpoint=self.server_endpoint)
        self.probes.append(probe)
        self.air.join(probe)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + INTERVIEW_TIMEOUT
        while loop.time() < deadline:
            device = self.app.devices.get(probe.ieee)
            if device is not None and device.is_initialized:
                return probe
            await asyncio.sleep(0.1)
        raise ScenarioError(f"the server's zigpy app did not finish interviewing probe {probe.ieee}")

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
            self.air.detach(probe)
        await self.stop_server()

    async def stop_server(self) -> None:
        await self.app.shutdown()


class OursBench(Bench):
    def __init__(self, node: ChfNode, held: HeldImage, spare: HeldImage, **kwargs: Any) -> None:
        super().__init__(app=node.app, **kwargs)  # type: ignore[arg-type]
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
        self.node.server.send_upgrade_end_response(probe.ieee, self.held, "+120")
        await asyncio.sleep(0.5)
        self.node.server.send_upgrade_end_response(None, self.held, "now")
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


class OursTarget(ServerTarget):
    """The emulator's CHF. `settings` change the declared profile (what the checks expect); `served` change only
    the profile the server actually runs — a deliberately misconfigured server, to show a check failing."""

    name = "ours"
    description = "the emulator's CHF OTA server (emulator.chf.server) on the loopback zigpy radio, GB Upgrade Image"

    def __init__(self, *, settings: Mapping[str, Any] | None = None, served: Mapping[str, Any] | None = None):
        self.settings = dict(settings or {})
        self.served = dict(served or {})

    def declared(self, scenario: str) -> ChfProfile:
        return ChfProfile().replace(**{**OURS_SCENARIO_SETTINGS.get(scenario, {}), **self.settings})

    async def bench(self, scenario: str, air: Air, clock: Clock) -> Bench:
        declared = self.declared(scenario)
        profile = declared.replace(**self.served)
        image = build_gb(
            MANUFACTURER,
            IMAGE_TYPE,
            OFFERED_VERSION,
            payload=_payload(),
            hw_min=HARDWARE_RANGE[0],
            hw_max=HARDWARE_RANGE[1],
        )
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
        node = ChfNode(profile, ImageStore([held, specific, spare]), clock)
        await node.start_loopback(air)
        claims = Claims(
            query_policy=declared.query_policy,
            page_requests=declared.page_requests,
            query_specific_file=declared.query_specific_file,
            rate_limited=bool(declared.wait_for_data or declared.minimum_block_period),
            minimum_block_period=declared.minimum_block_period or None,
            max_concurrent_downloads=declared.max_concurrent_downloads or None,
            activation=declared.ppmid_activation,
        )
        bench = OursBench(
            node, held, spare, air=air, clock=clock, offer=offer, claims=claims, profile_id=SMART_ENERGY_PROFILE
        )
        bench.specific = _offer(specific_image)
        return bench


class ZigpyTarget(ServerTarget):
    """zigpy's OTA server as ZIGPY_BELLOWS.md §2.3 measured it: block cap 50, page requests served, an Upgrade End
    Response (0, 0) to every Upgrade End Request, no WAIT_FOR_DATA, no Query Device Specific File."""

    name = "zigpy"
    description = (
        f"zigpy {importlib.metadata.version('zigpy')} OTA server (ZigbeeDevice.update_firmware) on the loopback "
        "radio, standard Zigbee OTA file, HA profile"
    )
    claims = Claims(query_policy="upgrade", page_requests=True, activation="now")

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
        image = build_zigbee(
            MANUFACTURER,
            IMAGE_TYPE,
            OFFERED_VERSION,
            payload=_payload(),
            hw_min=HARDWARE_RANGE[0],
            hw_max=HARDWARE_RANGE[1],
        )
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


# -- reading recorded frames ------------------------------------------------------------------------------------


def _status_text(value: int) -> str:
    try:
        return f"{Status(value).name} (0x{value:02X})"
    except ValueError:
        return f"0x{value:02X}"


def _tsn(frame: FrameRecord) -> int:
    return raw(frame)[1]


def _payload_size(frame: FrameRecord) -> int:
    return len(raw(frame)) - ZCL_HEADER_SIZE


def _default_response(frame: FrameRecord) -> tuple[int, int] | None:
    """(command id, status) of a ZCL Default Response; None for any other frame."""
    decoded = decode_record(frame)
    if decoded is None or not decoded.is_general or decoded.name != "Default_Response":
        return None
    return int(decoded.command.command_id), int(decoded.command.status)


def _named(frame: FrameRecord, name: str) -> Any | None:
    """The decoded command if `frame` is the cluster command `name`, else None."""
    decoded = decode_record(frame)
    if decoded is None or decoded.is_general or decoded.name != name:
        return None
    return decoded.command


def describe(frame: FrameRecord) -> str:
    """A frame in a few words, for a reason."""
    decoded = decode_record(frame)
    if decoded is None:
        return f"an undecodable frame [{frame.hex}]"
    command = decoded.command
    if decoded.name == "Default_Response":
        return f"Default Response {_status_text(command.status)} to command 0x{command.command_id:02X}"
    if decoded.name == "image_block_response" and command.status == Status.SUCCESS:
        return f"Image Block Response SUCCESS @{command.file_offset}, {len(command.image_data)} B"
    status = getattr(command, "status", None)
    text = decoded.name.replace("_", " ")
    return f"{text} {_status_text(status)}" if status is not None else text


def _request_command(exchange: Exchange) -> Any:
    return decode_record(exchange.request).command if exchange.request is not None else None


def _first_block(exchange: Exchange) -> Any | None:
    """The Image Block Response that answered `exchange` first, decoded; None if the first answer is another."""
    return _named(exchange.answers[0], "image_block_response") if exchange.answers else None


# -- scenarios --------------------------------------------------------------------------------------------------

Scenario = Callable[[Bench, Transcript], Awaitable[None]]


async def play_query(bench: Bench, tr: Transcript) -> None:
    probe = await bench.join(0)
    async with bench.window(probe):
        tr.add(await probe.query("query, hardware version in range"))


async def play_hardware(bench: Bench, tr: Transcript) -> None:
    probe = await bench.join(0)
    low, high = HARDWARE_RANGE
    for hardware, where in (
        (low - 1, "below min"),
        (low, "= min"),
        ((low + high) // 2, "inside"),
        (high, "= max"),
        (high + 1, "above max"),
    ):
        async with bench.window(probe):
            tr.add(await probe.query(f"hardware 0x{hardware:04X} ({where})", hardware_version=hardware))


async def play_no_hardware(bench: Bench, tr: Transcript) -> None:
    probe = await bench.join(0)
    async with bench.window(probe):
        tr.add(await probe.query("query without hardware version", hardware_version=None))


async def play_versions(bench: Bench, tr: Transcript) -> None:
    probe = await bench.join(0)
    offered = bench.offer.file_version
    for current, what in ((offered - 1, "older"), (offered, "same"), (offered + 1, "newer")):
        async with bench.window(probe):
            tr.add(await probe.query(f"current version 0x{current:08X} ({what})", current_version=current))


async def play_stranger(bench: Bench, tr: Transcript) -> None:
    target = await bench.join(0)
    stranger = await bench.join(-1)
    async with bench.window(target):
        tr.add(await stranger.query("query from a device that is not a target"))
        tr.add(
            await stranger.block("block request from a device that is not a target", bench.offer.key, 0, MAX_DATA_SIZE)
        )


async def play_download(bench: Bench, tr: Transcript) -> None:
    probe = await bench.join(0)
    async with bench.window(probe):
        tr.add(await probe.query("query"))
        tr.add(await probe.block(f"block @0, MaximumDataSize {SMALL_DATA_SIZE}", bench.offer.key, 0, SMALL_DATA_SIZE))
        exchanges = await probe.download(bench.offer.key, bench.offer.size, MAX_DATA_SIZE)
        tr.add_all(exchanges)


async def play_unknown_image(bench: Bench, tr: Transcript) -> None:
    probe = await bench.join(0)
    async with bench.window(probe):
        tr.add(await probe.block("block request for a missing file", MISSING_FILE, MISSING_FILE_OFFSET, 63))


async def play_past_end(bench: Bench, tr: Transcript) -> None:
    probe = await bench.join(0)
    async with bench.window(probe):
        tr.add(await probe.query("query"))
        tr.add(await probe.block("block @ end of file", bench.offer.key, bench.offer.size, MAX_DATA_SIZE))
        tr.add(await probe.block("block @0 afterwards", bench.offer.key, 0, MAX_DATA_SIZE))


async def play_rate_limit(bench: Bench, tr: Transcript) -> None:
    """Advertise MinimumBlockPeriod 0, honour the wait, advertise 0 again (a server with a period of its own
    must insist), then advertise what the server imposed."""
    probe = await bench.join(0)
    key = bench.offer.key
    adopted = 0
    async with bench.window(probe):
        tr.add(await probe.query("query"))
        for label in ("block @0 advertising period 0", "block @0 still advertising period 0"):
            answer = _first_block(tr.add(await probe.block(label, key, 0, MAX_DATA_SIZE, minimum_block_period=0)))
            if answer is not None and answer.status == Status.WAIT_FOR_DATA:
                if answer.minimum_block_period is not None:
                    adopted = int(answer.minimum_block_period)
                await asyncio.sleep(wait_seconds(answer))
        tr.add(
            await probe.block(
                f"block @0 advertising period {adopted}", key, 0, MAX_DATA_SIZE, minimum_block_period=adopted
            )
        )


async def play_concurrency(bench: Bench, tr: Transcript) -> None:
    """Three clients interleave block requests at their own offsets for three rounds; a client told to wait
    honours it and sits out until its wait is over."""
    probes = [await bench.join(i) for i in range(len(TARGET_IEEES))]
    offsets = [i * bench.offer.size // len(probes) for i in range(len(probes))]
    resume_at = [0.0] * len(probes)
    async with bench.window(*probes):
        for index, probe in enumerate(probes):
            tr.add(await probe.query(f"client {index + 1}: query"))
        for _ in range(3):
            for index, probe in enumerate(probes):
                if bench.clock.now() < resume_at[index]:
                    continue
                label = f"client {index + 1}: block @{offsets[index]}"
                answer = _first_block(
                    tr.add(await probe.block(label, bench.offer.key, offsets[index], CONCURRENT_DATA_SIZE))
                )
                if answer is not None and answer.status == Status.SUCCESS:
                    offsets[index] += len(answer.image_data)
                elif answer is not None and answer.status == Status.WAIT_FOR_DATA:
                    resume_at[index] = bench.clock.now() + wait_seconds(answer)


async def play_page(bench: Bench, tr: Transcript) -> None:
    probe = await bench.join(0)
    offset, maximum, page_size, spacing = PAGE
    manufacturer, image_type, version = bench.offer.key
    async with bench.window(probe):
        tr.add(await probe.query("query"))
        tr.add(
            await probe.ask(
                f"page request @{offset}, {page_size} B, MaximumDataSize {maximum}, spacing {spacing} ms",
                "image_page",
                listen=LISTEN,
                field_control=0,
                manufacturer_code=manufacturer,
                image_type=image_type,
                file_version=version,
                file_offset=offset,
                maximum_data_size=maximum,
                page_size=page_size,
                response_spacing=spacing,
            )
        )


async def play_upgrade_end_success(bench: Bench, tr: Transcript) -> None:
    probe = await bench.join(0)
    manufacturer, image_type, version = bench.offer.key
    async with bench.window(probe):
        tr.add(await probe.query("query"))
        exchanges = await probe.download(bench.offer.key, bench.offer.size, MAX_DATA_SIZE)
        tr.add_all(exchanges)
        tr.add(
            await probe.ask(
                "upgrade end SUCCESS",
                "upgrade_end",
                listen=LISTEN,
                status=Status.SUCCESS,
                manufacturer_code=manufacturer,
                image_type=image_type,
                file_version=version,
            )
        )


async def play_upgrade_end_failure(bench: Bench, tr: Transcript) -> None:
    probe = await bench.join(0)
    manufacturer, image_type, version = bench.offer.key
    for status in FAILED_END_STATUSES:
        async with bench.window(probe):
            tr.add(await probe.query("query"))
            tr.add(await probe.block("block @0", bench.offer.key, 0, MAX_DATA_SIZE))
            tr.add(
                await probe.ask(
                    f"upgrade end {status.name}",
                    "upgrade_end",
                    listen=LISTEN,
                    status=status,
                    manufacturer_code=manufacturer,
                    image_type=image_type,
                    file_version=version,
                )
            )


async def play_unsolicited_end(bench: Bench, tr: Transcript) -> None:
    probe = await bench.join(0)
    async with bench.window(probe):
        listening = asyncio.create_task(probe.listen("unsolicited Upgrade End Responses", LISTEN))
        tr.unsupported = await bench.provoke_unsolicited_end(probe)
        tr.add(await listening)


async def play_specific_file(bench: Bench, tr: Transcript) -> None:
    probe = await bench.join(0)
    async with bench.window(probe):
        tr.add(
            await probe.ask(
                "query device specific file (client configuration)",
                "query_specific_file",
                listen=LISTEN,
                request_node_addr=probe.ieee,
                manufacturer_code=MANUFACTURER,
                image_type=SPECIFIC_IMAGE_TYPE,
                file_version=1,
                current_zigbee_stack_version=2,
            )
        )


# Truncated client→server commands (SPEC.md §2): header 01 TSN CMD, then too few payload bytes.
MALFORMED = (
    ("query next image, 1 of 9 payload bytes", 0x01, bytes([0x01])),
    ("image block, 5 of 14 payload bytes", 0x03, bytes(5)),
    ("upgrade end, 3 of 9 payload bytes", 0x06, bytes([0x00, 0x1D, 0x12])),
)


async def play_malformed(bench: Bench, tr: Transcript) -> None:
    probe = await bench.join(0)
    async with bench.window(probe):
        for label, command_id, payload in MALFORMED:
            tr.add(await probe.ask_raw(label, bytes([0x01, probe.next_tsn(), command_id]) + payload, listen=LISTEN))


async def play_notify(bench: Bench, tr: Transcript) -> None:
    probe = await bench.join(0)
    async with bench.window(probe):
        await bench.provoke_notifies(probe)


async def play_transfer_alerts(bench: Bench, tr: Transcript) -> None:
    """A completes, B is refused for its hardware (twice), C aborts (twice), and the image held for D (who
    never asked) is discarded: one CCS08 outcome per target and outcome, whatever repeats."""
    if not isinstance(bench, OursBench):
        raise ScenarioError("the target holds no GB image whose DeviceIDList the scenario can use")
    manufacturer, image_type, version = bench.offer.key
    a, b, c = [await bench.join(i) for i in range(len(TARGET_IEEES))]
    tr.add(await a.query("A: query"))
    exchanges = await a.download(bench.offer.key, bench.offer.size, MAX_DATA_SIZE)
    tr.add_all(exchanges)
    end = {"manufacturer_code": manufacturer, "image_type": image_type, "file_version": version}
    tr.add(await a.ask("A: upgrade end SUCCESS", "upgrade_end", status=Status.SUCCESS, **end))
    for attempt in (1, 2):
        tr.add(await b.query(f"B: query with hardware 0x1000 (#{attempt})", hardware_version=0x1000))
    tr.add(await c.query("C: query"))
    tr.add(await c.block("C: block @0", bench.offer.key, 0, MAX_DATA_SIZE))
    for attempt in (1, 2):
        tr.add(await c.ask(f"C: upgrade end ABORT (#{attempt})", "upgrade_end", status=Status.ABORT, **end))
    bench.discard_spare()
    await bench.settle()
    tr.expected_outcomes = {
        a.ieee: {TransferResponse.SUCCESS},
        b.ieee: {TransferResponse.HARDWARE_VERSION_MISMATCH},
        c.ieee: {TransferResponse.FILE_TRANSFER_FAILURE},
        SPARE_IEEE: {TransferResponse.IMAGE_DISCARDED},
    }


SCENARIOS: dict[str, Scenario] = {
    "query": play_query,
    "hardware": play_hardware,
    "no-hardware": play_no_hardware,
    "versions": play_versions,
    "stranger": play_stranger,
    "download": play_download,
    "unknown-image": play_unknown_image,
    "past-end": play_past_end,
    "rate-limit": play_rate_limit,
    "concurrency": play_concurrency,
    "page": play_page,
    "upgrade-end-success": play_upgrade_end_success,
    "upgrade-end-failure": play_upgrade_end_failure,
    "unsolicited-end": play_unsolicited_end,
    "specific-file": play_specific_file,
    "malformed": play_malformed,
    "notify": play_notify,
    "transfer-alerts": play_transfer_alerts,
}


# -- judging ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """A judge's finding. `evidence` None means every frame of the scenario; `note` names a feature the target
    lacks, for the report's list of deviations even when the check is not applicable."""

    verdict: Verdict
    reason: str
    evidence: list[FrameRecord] | None = None
    timeline: list[TimelinePoint] = field(default_factory=list)
    note: str = ""


Judge = Callable[[Transcript], Judgement]


def _pass(reason: str, **kwargs: Any) -> Judgement:
    return Judgement(Verdict.PASS, reason, **kwargs)


def _fail(reason: str, evidence: list[FrameRecord] | None = None, **kwargs: Any) -> Judgement:
    return Judgement(Verdict.FAIL, reason, evidence, **kwargs)


def _only_answer(exchange: Exchange, what: str) -> tuple[FrameRecord | None, str]:
    """The single answer to `exchange`, or why there is not exactly one."""
    if not exchange.answers:
        return None, f"no answer to the {what} within {LISTEN:g} s"
    if len(exchange.answers) > 1:
        return None, f"{len(exchange.answers)} answers to the {what}: " + "; ".join(map(describe, exchange.answers))
    return exchange.answers[0], ""


def _query_answer(exchange: Exchange, expected: int, *, status_byte_only: bool = False) -> str:
    """Problem with a Query Next Image Response to `exchange` expected to carry status `expected` (and, with
    `status_byte_only`, nothing else when that is not SUCCESS, SPEC.md §2.3); "" if none."""
    answer, problem = _only_answer(exchange, f"query ({exchange.label})")
    if answer is None:
        return problem
    command = _named(answer, "query_next_image_response")
    if command is None:
        return f"{exchange.label}: answered with {describe(answer)}, not a Query Next Image Response"
    if command.status != expected:
        return f"{exchange.label}: status {_status_text(command.status)}, expected {_status_text(expected)}"
    size = _payload_size(answer)
    if status_byte_only and expected != Status.SUCCESS and size != 1:
        return (
            f"{exchange.label}: {_status_text(expected)} with a {size}-byte payload (the image fields belong to "
            "SUCCESS only: the status byte alone)"
        )
    return ""


def judge_query(tr: Transcript) -> Judgement:
    exchange = tr.exchanges[0]
    answer, problem = _only_answer(exchange, "Query Next Image Request")
    if answer is None:
        return _fail(problem)
    command = _named(answer, "query_next_image_response")
    if command is None:
        return _fail(f"answered with {describe(answer)}, not a Query Next Image Response")
    offer = tr.offer
    problems = []
    if command.status != Status.SUCCESS:
        problems.append(f"status {_status_text(command.status)}, expected SUCCESS")
    else:
        if _payload_size(answer) != 13:
            problems.append(f"{_payload_size(answer)}-byte payload, expected 13")
        if (command.manufacturer_code, command.image_type, command.file_version) != offer.key:
            problems.append("offers another image than the one held")
        if command.image_size != offer.size:
            problems.append(f"ImageSize {command.image_size} but the file is {offer.size} bytes")
    if _tsn(answer) != _tsn(exchange.request):
        problems.append(f"TSN 0x{_tsn(answer):02X} does not echo the request's 0x{_tsn(exchange.request):02X}")
    if problems:
        return _fail("; ".join(problems))
    return _pass(
        f"SUCCESS offering version 0x{offer.file_version:08X}, ImageSize {offer.size} = file size, 13-byte "
        f"payload, TSN 0x{_tsn(answer):02X} echoed"
    )


def judge_response_frame_control(tr: Transcript) -> Judgement:
    exchange = tr.exchanges[0]
    if not exchange.answers:
        return Judgement(Verdict.INCONCLUSIVE, "no Query Next Image Response to judge")
    fc = raw(exchange.answers[0])[0]
    if fc != FC_S2C_NO_DEFAULT_RESPONSE:
        return _fail(f"frame control 0x{fc:02X}, expected 0x19 (server to client, default response disabled)")
    return _pass("frame control 0x19: cluster-specific, server to client, default response disabled")


def judge_hardware(tr: Transcript) -> Judgement:
    low, high = HARDWARE_RANGE
    problems, results = [], []
    for exchange in tr.exchanges:
        hardware = _request_command(exchange).hardware_version
        expected = Status.SUCCESS if low <= hardware <= high else Status.NO_IMAGE_AVAILABLE
        problem = _query_answer(exchange, expected, status_byte_only=True)
        if problem:
            problems.append(problem)
        results.append(f"0x{hardware:04X}→{'SUCCESS' if expected == Status.SUCCESS else '0x98'}")
    if problems:
        padded = all("-byte payload" in p for p in problems)
        note = "non-SUCCESS Query Next Image Responses carry the image fields too (SPEC.md §2.3: status byte alone)"
        return _fail("; ".join(problems), note=note if padded else "")
    return _pass(f"range 0x{low:04X}..0x{high:04X}: " + ", ".join(results))


def judge_no_hardware(tr: Transcript) -> Judgement:
    exchange = tr.exchanges[0]
    if not _query_answer(exchange, Status.SUCCESS):
        return _pass("offered without a hardware version in the query, as the Silicon Labs server policy does")
    if not _query_answer(exchange, Status.NO_IMAGE_AVAILABLE):
        return _fail(
            "refuses (0x98) a query without hardware version for an image with a hardware range; Silicon Labs "
            "offers it (GB may require the version: UNCONFIRMED)"
        )
    return _fail(_query_answer(exchange, Status.SUCCESS))


def judge_versions(tr: Transcript) -> Judgement:
    policy = tr.claims.query_policy
    problems, results = [], []
    for exchange in tr.exchanges:
        current = _request_command(exchange).current_file_version
        allowed = version_allowed(policy, tr.offer.file_version, current)
        expected = Status.SUCCESS if allowed else Status.NO_IMAGE_AVAILABLE
        problem = _query_answer(exchange, expected)
        if problem:
            problems.append(problem)
        results.append(f"current 0x{current:08X}→{'SUCCESS' if allowed else '0x98'}")
    if problems:
        return _fail(f"{policy} policy: " + "; ".join(problems))
    return _pass(f"{policy} policy: " + ", ".join(results))


def judge_stranger(tr: Transcript) -> Judgement:
    query, block = tr.exchanges
    problems = []
    answer, problem = _only_answer(query, "stranger's query")
    if answer is None:
        problems.append(problem)
    else:
        command = _named(answer, "query_next_image_response")
        if command is None or command.status not in (Status.NO_IMAGE_AVAILABLE, Status.NOT_AUTHORIZED):
            problems.append(f"query answered with {describe(answer)}, expected 0x98 or 0x7E")
    if not block.answers:
        problems.append("no answer to the stranger's block request")
    for frame in block.answers:
        command = _named(frame, "image_block_response")
        if command is not None and command.status == Status.SUCCESS:
            problems.append(f"served image data to a device outside the DeviceIDList: {describe(frame)}")
    if problems:
        return _fail("; ".join(problems))
    return _pass(f"query → {describe(query.answers[0])}; block request → {describe(block.answers[0])}: nothing served")


def _block_problems(tr: Transcript, exchange: Exchange, maximum: int) -> tuple[str, Any]:
    """(problem, command) for an exchange that must be answered by one correct Image Block Response SUCCESS."""
    answer, problem = _only_answer(exchange, exchange.label)
    if answer is None:
        return problem, None
    command = _named(answer, "image_block_response")
    if command is None or command.status != Status.SUCCESS:
        return f"{exchange.label}: answered with {describe(answer)}", None
    request = _request_command(exchange)
    data = bytes(command.image_data)
    if _tsn(answer) != _tsn(exchange.request):
        return f"{exchange.label}: TSN not echoed", command
    if command.file_offset != request.file_offset:
        return f"{exchange.label}: offset {command.file_offset} does not echo {request.file_offset}", command
    if (command.manufacturer_code, command.image_type, command.file_version) != tr.offer.key:
        return f"{exchange.label}: names another image", command
    if not 0 < len(data) <= maximum:
        return f"{exchange.label}: {len(data)} bytes for MaximumDataSize {maximum}", command
    if data != tr.offer.data[command.file_offset : command.file_offset + len(data)]:
        return f"{exchange.label}: data differs from the file at that offset", command
    return "", command


def _timeline(exchanges: Iterable[Exchange]) -> list[TimelinePoint]:
    points = []
    for exchange in exchanges:
        for frame in exchange.answers:
            command = _named(frame, "image_block_response")
            if command is None:
                continue
            if command.status == Status.SUCCESS:
                points.append(TimelinePoint(frame.at, command.file_offset + len(command.image_data)))
            elif command.status == Status.WAIT_FOR_DATA:
                points.append(
                    TimelinePoint(frame.at, _request_command(exchange).file_offset, f"wait {wait_seconds(command):g} s")
                )
            else:
                points.append(
                    TimelinePoint(frame.at, _request_command(exchange).file_offset, f"abort: {describe(frame)}")
                )
    return points


def _is_block_request(exchange: Exchange) -> bool:
    return exchange.request is not None and raw(exchange.request)[2] == IMAGE_BLOCK


def judge_download(tr: Transcript) -> Judgement:
    query, small, *blocks = tr.exchanges
    refused = _query_answer(query, Status.SUCCESS)
    if refused:
        return Judgement(Verdict.INCONCLUSIVE, f"the server offered no image: {refused}")
    timeline = _timeline(blocks)
    problem, _ = _block_problems(tr, small, SMALL_DATA_SIZE)
    if problem:
        return _fail(problem, small.frames, timeline=timeline)
    received = bytearray()
    sizes = []
    for exchange in blocks:
        problem, command = _block_problems(tr, exchange, MAX_DATA_SIZE)
        if problem:
            return _fail(problem, exchange.frames, timeline=timeline)
        received += command.image_data
        sizes.append(len(command.image_data))
    if bytes(received) != tr.offer.data:
        return _fail(f"the blocks rebuild {len(received)} of {tr.offer.size} bytes", timeline=timeline)
    last = sizes[-1]
    return _pass(
        f"{len(sizes)} blocks of at most {max(sizes)} B for MaximumDataSize {MAX_DATA_SIZE} (and ≤ {SMALL_DATA_SIZE} "
        f"when asked), offsets echoed, short last block of {last} B, file rebuilt byte for byte",
        timeline=timeline,
    )


def judge_unknown_image(tr: Transcript) -> Judgement:
    exchange = tr.exchanges[0]
    answer, problem = _only_answer(exchange, "block request for a missing file")
    if answer is None:
        return _fail(problem)
    if _default_response(answer) != (IMAGE_BLOCK, Status.NO_IMAGE_AVAILABLE):
        return _fail(f"answered with {describe(answer)}, expected Default Response NO_IMAGE_AVAILABLE (0x98)")
    if _tsn(answer) != _tsn(exchange.request):
        return _fail("Default Response does not echo the request's TSN")
    return _pass("Default Response NO_IMAGE_AVAILABLE (0x98) to command 0x03, TSN echoed")


def _error_answer(frame: FrameRecord) -> bool:
    response = _default_response(frame)
    if response is not None:
        return response[1] != Status.SUCCESS
    command = _named(frame, "image_block_response")
    return command is not None and command.status not in (Status.SUCCESS, Status.WAIT_FOR_DATA)


def judge_past_end(tr: Transcript) -> Judgement:
    _, past, after = tr.exchanges
    if not past.answers:
        return _fail(f"no answer to a block request at offset {tr.offer.size} (end of file)")
    if not all(_error_answer(frame) for frame in past.answers):
        return _fail("answered a block request past the end with " + "; ".join(map(describe, past.answers)))
    if not after.answers:
        return _fail("answers nothing after the request past the end (the next valid block request went unanswered)")
    return _pass(
        f"error {describe(past.answers[0])}; the next request was still answered ({describe(after.answers[0])})"
    )


def judge_past_end_form(tr: Transcript) -> Judgement:
    past = tr.exchanges[1]
    if not past.answers:
        return Judgement(Verdict.INCONCLUSIVE, "no answer to judge")
    frame = past.answers[0]
    command = _named(frame, "image_block_response")
    if _default_response(frame) == (IMAGE_BLOCK, Status.NO_IMAGE_AVAILABLE) or (
        command is not None and command.status == Status.ABORT and _payload_size(frame) == 1
    ):
        return _pass(describe(frame))
    return _fail(
        f"{describe(frame)}: expected Default Response 0x98 or an Image Block Response ABORT "
        "(an Image Block Response carries SUCCESS, WAIT_FOR_DATA or ABORT only, SPEC.md §2.6)",
        past.frames,
    )


def _wait_problem(frame: FrameRecord, command: Any) -> str:
    if _payload_size(frame) not in (9, 11):
        return f"WAIT_FOR_DATA with a {_payload_size(frame)}-byte payload (expected 9 or 11)"
    if command.current_time != 0 and command.request_time < command.current_time:
        return f"RequestTime {command.request_time} before CurrentTime {command.current_time}"
    return ""


def judge_rate_limit(tr: Transcript) -> Judgement:
    claims = tr.claims
    blocks = [e for e in tr.exchanges if _is_block_request(e)]
    timeline = _timeline(blocks)
    waits = [
        (e, f, c)
        for e in blocks
        for f in e.answers
        if (c := _named(f, "image_block_response")) is not None and c.status == Status.WAIT_FOR_DATA
    ]
    if not waits:
        if claims.rate_limited:
            return _fail("declares rate limiting but never sent WAIT_FOR_DATA", timeline=timeline)
        served = sum(1 for e in blocks for f in e.answers if _named(f, "image_block_response") is not None)
        return Judgement(
            Verdict.NOT_APPLICABLE,
            f"the server does not rate-limit: {served} of {len(blocks)} block requests advertising MinimumBlockPeriod "
            "0 answered with a block, none with WAIT_FOR_DATA",
            timeline=timeline,
            note="never sends WAIT_FOR_DATA and ignores the client's MinimumBlockPeriod (no rate limiting)",
        )
    for exchange, frame, command in waits:
        problem = _wait_problem(frame, command)
        if problem:
            return _fail(problem, exchange.frames, timeline=timeline)
    second = blocks[1]
    if claims.minimum_block_period is not None:
        answer = _named(second.answers[0], "image_block_response") if second.answers else None
        if (
            answer is None
            or answer.status != Status.WAIT_FOR_DATA
            or answer.minimum_block_period != claims.minimum_block_period
        ):
            got = describe(second.answers[0]) if second.answers else "no answer"
            return _fail(
                f"client advertised period 0, the server's is {claims.minimum_block_period}: expected WAIT_FOR_DATA "
                f"carrying {claims.minimum_block_period}, got {got}",
                second.frames,
                timeline=timeline,
            )
    final = blocks[-1]
    problem, _ = _block_problems(tr, final, MAX_DATA_SIZE)
    if problem:
        return _fail(f"after the client honoured every wait: {problem}", final.frames, timeline=timeline)
    first = waits[0][2]
    period = f", MinimumBlockPeriod {first.minimum_block_period}" if first.minimum_block_period is not None else ""
    return _pass(
        f"{len(waits)} WAIT_FOR_DATA (first: wait {wait_seconds(first):g} s{period}); the server's period was "
        f"insisted on and the block served once the client honoured it",
        timeline=timeline,
    )


def judge_concurrency(tr: Transcript) -> Judgement:
    """Each answer is the asking client's own data or WAIT_FOR_DATA; WAIT_FOR_DATA only for a client beyond the
    declared limit — a client already being served must go on being served."""
    limit = tr.claims.max_concurrent_downloads
    in_progress: set[int] = set()
    waited: set[int] = set()
    blocks = 0
    for exchange in (e for e in tr.exchanges if _is_block_request(e)):
        client = exchange.request.src
        answer = exchange.answers[0] if len(exchange.answers) == 1 else None
        command = _named(answer, "image_block_response") if answer is not None else None
        if command is not None and command.status == Status.WAIT_FOR_DATA:
            problem = _wait_problem(answer, command)
            if not problem and client in in_progress:
                problem = "told to wait in the middle of its download"
            if not problem and (limit is None or len(in_progress) < limit):
                problem = f"told to wait with {len(in_progress)} download(s) in progress, limit {limit or 'none'}"
            if problem:
                return _fail(f"{exchange.label}: {problem}", exchange.frames, note=f"concurrent downloads: {problem}")
            waited.add(client)
            continue
        problem, _ = _block_problems(tr, exchange, CONCURRENT_DATA_SIZE)
        if problem:
            return _fail(problem, exchange.frames)
        in_progress.add(client)
        blocks += 1
        if limit is not None and len(in_progress) > limit:
            return _fail(f"{len(in_progress)} clients served at once, the declared limit is {limit}", exchange.frames)
    waits = f"{len(waited)} beyond the limit of {limit} told to wait" if waited else "none told to wait"
    return _pass(f"{len(in_progress)} clients each served their own offsets ({blocks} blocks checked); {waits}")


def judge_page(tr: Transcript) -> Judgement:
    exchange = tr.exchanges[-1]
    offset, maximum, page_size, spacing = PAGE
    claims = tr.claims
    if not exchange.answers:
        return _fail("no answer to the Image Page Request (expected blocks, or Default Response 0x81)")
    first = exchange.answers[0]
    response = _default_response(first)
    if response is not None:
        if response == (frames.COMMAND_IDS["image_page"], Status.UNSUP_CLUSTER_COMMAND) and not claims.page_requests:
            return _pass("page requests unsupported, refused with Default Response UNSUP_CLUSTER_COMMAND (0x81)")
        wanted = "blocks (page requests are declared supported)" if claims.page_requests else "0x81"
        return _fail(f"answered with {describe(first)}, expected {wanted}", exchange.frames)
    if not claims.page_requests:
        return _fail("serves page requests although it declares them unsupported", exchange.frames)
    end = min(offset + page_size, tr.offer.size)
    expected_offset = offset
    previous_at: float | None = None
    for frame in exchange.answers:
        command = _named(frame, "image_block_response")
        if command is None or command.status != Status.SUCCESS:
            return _fail(f"a page answered with {describe(frame)}", exchange.frames)
        data = bytes(command.image_data)
        if expected_offset >= end:
            return _fail(f"sent past the page end ({end}): {describe(frame)}", exchange.frames)
        if command.file_offset != expected_offset:
            return _fail(f"block @{command.file_offset}, expected @{expected_offset}", exchange.frames)
        if not 0 < len(data) <= maximum or data != tr.offer.data[expected_offset : expected_offset + len(data)]:
            return _fail(f"block @{command.file_offset}: {len(data)} B, wrong size or data", exchange.frames)
        if previous_at is not None and frame.at - previous_at < spacing / 1000 - 0.001:
            return _fail(
                f"block @{command.file_offset} {1000 * (frame.at - previous_at):.0f} ms after the previous one, "
                f"ResponseSpacing is {spacing} ms",
                exchange.frames,
            )
        previous_at = frame.at
        expected_offset += len(data)
    if expected_offset != end:
        return _fail(f"the page stopped at {expected_offset}, expected {end}", exchange.frames)
    return _pass(
        f"{len(exchange.answers)} Image Block Responses covering {offset}..{end} (≤ {maximum} B each), spaced ≥ "
        f"{spacing} ms, nothing after the page end"
    )


def _end_times_problem(command: Any) -> str:
    current, upgrade = int(command.current_time), int(command.upgrade_time)
    if upgrade == UPGRADE_TIME_WAIT or current == 0 or upgrade >= current:
        return ""
    return f"UpgradeTime {upgrade} before CurrentTime {current}"


def _activation_problem(activation: str | None, command: Any) -> str:
    current, upgrade = int(command.current_time), int(command.upgrade_time)
    if activation == "now" and not (upgrade == current or (current == 0 and upgrade == 0)):
        return f"declared activation 'now' but CurrentTime {current}, UpgradeTime {upgrade}"
    if activation == "wait" and upgrade != UPGRADE_TIME_WAIT:
        return f"declared activation 'wait' but UpgradeTime 0x{upgrade:08X}"
    if activation is not None and activation.startswith("+") and (current, upgrade) != (0, int(activation[1:])):
        return f"declared activation '{activation}' but CurrentTime {current}, UpgradeTime {upgrade}"
    return ""


def _end_response_problem(frame: FrameRecord, command: Any, ids: tuple[int, int, int]) -> str:
    if _payload_size(frame) != 16:
        return f"{_payload_size(frame)}-byte Upgrade End Response (expected 16)"
    got = (command.manufacturer_code, command.image_type, command.file_version)
    wildcards = (frames.WILDCARD_MANUFACTURER, frames.WILDCARD_IMAGE_TYPE, frames.WILDCARD_FILE_VERSION)
    if any(g not in (i, w) for g, i, w in zip(got, ids, wildcards, strict=True)):
        return "Upgrade End Response names another image"
    return _end_times_problem(command)


def judge_upgrade_end_success(tr: Transcript) -> Judgement:
    exchange = tr.exchanges[-1]
    timeline = _timeline(e for e in tr.exchanges if _is_block_request(e))
    responses = [f for f in exchange.answers if _named(f, "upgrade_end_response") is not None]
    if len(responses) != 1:
        got = "; ".join(map(describe, exchange.answers)) or "nothing"
        return _fail(f"expected one Upgrade End Response, got {got}", exchange.frames, timeline=timeline)
    frame = responses[0]
    command = _named(frame, "upgrade_end_response")
    request = _request_command(exchange)
    ids = (request.manufacturer_code, request.image_type, request.file_version)
    problem = _end_response_problem(frame, command, ids) or _activation_problem(tr.claims.activation, command)
    if not problem and _tsn(frame) != _tsn(exchange.request):
        problem = "Upgrade End Response does not echo the request's TSN"
    if problem:
        return _fail(problem, exchange.frames, timeline=timeline)
    return _pass(
        f"16-byte Upgrade End Response, ids and TSN echoed, CurrentTime {command.current_time}, UpgradeTime "
        f"0x{command.upgrade_time:08X} (activation '{tr.claims.activation}')",
        timeline=timeline,
    )


def _failed_ends(tr: Transcript) -> list[Exchange]:
    return [e for e in tr.exchanges if e.request is not None and raw(e.request)[2] == UPGRADE_END]


def judge_upgrade_end_failure(tr: Transcript) -> Judgement:
    answered, evidence = [], []
    for exchange in _failed_ends(tr):
        responses = [f for f in exchange.answers if _named(f, "upgrade_end_response") is not None]
        if responses:
            command = _named(responses[0], "upgrade_end_response")
            answered.append(
                f"{_request_command(exchange).status.name} (CurrentTime {command.current_time}, UpgradeTime "
                f"{command.upgrade_time})"
            )
            evidence += [exchange.request, *responses]
    if answered:
        text = "Upgrade End Response to " + ", ".join(answered)
        return _fail(f"{text}: after a non-SUCCESS status the server shall do nothing more", evidence, note=text)
    return _pass("no Upgrade End Response to ABORT, INVALID_IMAGE or REQUIRE_MORE_IMAGE")


def judge_upgrade_end_failure_default_response(tr: Transcript) -> Judgement:
    missing, got = [], set()
    for exchange in _failed_ends(tr):
        if (UPGRADE_END, Status.SUCCESS) not in [_default_response(f) for f in exchange.answers]:
            missing.append(_request_command(exchange).status.name)
            got.update(map(describe, exchange.answers))
    if missing:
        text = f"no Default Response SUCCESS to {', '.join(missing)} (got: {'; '.join(sorted(got)) or 'nothing'})"
        return _fail(text, [f for e in _failed_ends(tr) for f in e.frames])
    return _pass("Default Response SUCCESS to each failed Upgrade End Request")


def judge_unsolicited_end(tr: Transcript) -> Judgement:
    if tr.unsupported:
        return Judgement(Verdict.NOT_APPLICABLE, tr.unsupported, note="no unsolicited Upgrade End Response")
    responses = [f for e in tr.exchanges for f in e.answers if _named(f, "upgrade_end_response") is not None]
    if not responses:
        return _fail("asked to schedule activation, the server sent no Upgrade End Response")
    for frame in responses:
        problem = _end_response_problem(frame, _named(frame, "upgrade_end_response"), tr.offer.key)
        if problem:
            return _fail(problem, [frame])
    broadcast = sum(1 for f in responses if f.dst >= 0xFFF8)
    return _pass(
        f"{len(responses)} unsolicited Upgrade End Responses ({broadcast} broadcast), 16 bytes, ids and times valid"
    )


def judge_specific_file(tr: Transcript) -> Judgement:
    exchange = tr.exchanges[0]
    claims = tr.claims
    answer, problem = _only_answer(exchange, "Query Device Specific File Request")
    if answer is None:
        expected = "a response" if claims.query_specific_file else "Default Response UNSUP_CLUSTER_COMMAND (0x81)"
        return _fail(f"{problem}; expected {expected}")
    response = _default_response(answer)
    if response is not None:
        if (
            response == (frames.COMMAND_IDS["query_specific_file"], Status.UNSUP_CLUSTER_COMMAND)
            and not claims.query_specific_file
        ):
            return _pass("unsupported, refused with Default Response UNSUP_CLUSTER_COMMAND (0x81)")
        return _fail(f"answered with {describe(answer)}")
    command = _named(answer, "query_specific_file_response")
    if command is None:
        return _fail(f"answered with {describe(answer)}, not a Query Device Specific File Response")
    if not claims.query_specific_file:
        return _fail("answers Query Device Specific File although it declares it unsupported")
    if _tsn(answer) != _tsn(exchange.request):
        return _fail("response does not echo the request's TSN")
    specific = tr.specific
    if command.status == Status.SUCCESS:
        if specific is None or _payload_size(answer) != 13:
            return _fail(f"SUCCESS with a {_payload_size(answer)}-byte payload or for a file the server does not hold")
        if (command.manufacturer_code, command.image_type, command.file_version, command.image_size) != (
            *specific.key,
            specific.size,
        ):
            return _fail("SUCCESS names another file than the one held for this device")
        return _pass(f"SUCCESS: the device's file, version 0x{specific.file_version:08X}, {specific.size} bytes")
    if specific is not None:
        return _fail(f"{_status_text(command.status)} although a file is held for this device")
    return _pass(f"{_status_text(command.status)}: no file held for this device")


def judge_malformed(tr: Transcript) -> Judgement:
    problems = []
    for exchange in tr.exchanges:
        request = raw(exchange.request)
        responses = [r for f in exchange.answers if (r := _default_response(f)) is not None]
        ok = [
            f
            for f in exchange.answers
            if (r := _default_response(f)) is not None
            and r[0] == request[2]
            and r[1] in MALFORMED_STATUSES
            and _tsn(f) == request[1]
        ]
        if not ok:
            got = "; ".join(map(describe, exchange.answers)) or "no answer"
            problems.append(f"{exchange.label}: {got}")
        elif len(responses) != len(exchange.answers):
            problems.append(f"{exchange.label}: answered besides the Default Response")
    if problems:
        return _fail(
            "expected Default Response MALFORMED_COMMAND (0x80) or INVALID_FIELD (0x85): " + "; ".join(problems),
            note="truncated OTA commands: " + "; ".join(problems),
        )
    return _pass("every truncated command answered with Default Response 0x80/0x85 naming it, TSN echoed")


def judge_notify(tr: Transcript) -> Judgement:
    notifies = tr.notifies
    if not notifies:
        return Judgement(Verdict.NOT_APPLICABLE, "the server sent no Image Notify (sending one is optional)")
    offer = tr.offer
    problems, kinds = [], []
    for frame in notifies:
        data = raw(frame)
        command = _named(frame, "image_notify")
        broadcast = frame.dst >= 0xFFF8
        if command is None:
            problems.append(f"undecodable Image Notify [{frame.hex}]")
            continue
        payload_type = int(command.payload_type)
        if (
            payload_type >= len(NOTIFY_PAYLOAD_SIZES)
            or len(data) - ZCL_HEADER_SIZE != NOTIFY_PAYLOAD_SIZES[payload_type]
        ):
            problems.append(f"payload type {payload_type} with {len(data) - ZCL_HEADER_SIZE} payload bytes")
        if not 1 <= command.query_jitter <= 100:
            problems.append(f"QueryJitter {command.query_jitter} outside 1..100")
        named = (
            (command.manufacturer_code, offer.manufacturer_code, frames.WILDCARD_MANUFACTURER),
            (command.image_type, offer.image_type, frames.WILDCARD_IMAGE_TYPE),
            (command.new_file_version, offer.file_version, frames.WILDCARD_FILE_VERSION),
        )[:payload_type]
        if any(value not in (own, wildcard) for value, own, wildcard in named):
            problems.append(f"payload type {payload_type} names another image than the one held")
        if broadcast and not data[0] & DEFAULT_RESPONSE_DISABLED:
            problems.append("broadcast Image Notify without disable-default-response")
        kinds.append(f"type {payload_type}/jitter {command.query_jitter}{' broadcast' if broadcast else ''}")
    if problems:
        return _fail("; ".join(problems), notifies)
    return _pass(f"{len(notifies)} Image Notify, each well formed: " + ", ".join(kinds), evidence=notifies)


def judge_notify_tsn(tr: Transcript) -> Judgement:
    if not tr.notifies:
        return Judgement(Verdict.NOT_APPLICABLE, "the server sent no Image Notify")
    tsns = [_tsn(f) for f in tr.notifies]
    reused = sorted({x for x in tsns if tsns.count(x) > 1})
    listed = ", ".join(f"0x{x:02X}" for x in tsns)
    if reused:
        text = f"Image Notify TSNs reused ({', '.join(f'0x{x:02X}' for x in reused)} in {listed})"
        return _fail(text, tr.notifies, note=text)
    return _pass(f"a fresh TSN on each Image Notify ({listed})", evidence=tr.notifies)


def judge_transfer_alerts(tr: Transcript) -> Judgement:
    if tr.outcomes is None:
        return Judgement(Verdict.NOT_APPLICABLE, "the server raises no CCS08 alerts")
    seen: dict[t.EUI64, list[TransferResponse]] = {}
    problems = []
    for outcome in tr.outcomes:
        seen.setdefault(outcome.ieee, []).append(outcome.response)
        wanted = AlertCode.FIRMWARE_TRANSFER_SUCCESS if outcome.response == 0 else AlertCode.FIRMWARE_TRANSFER_FAILURE
        if outcome.alert_code != wanted:
            problems.append(f"{outcome.ieee}: response {outcome.response} with alert 0x{outcome.alert_code:04X}")
    for ieee, expected in tr.expected_outcomes.items():
        got = seen.get(ieee, [])
        if sorted(got) != sorted(expected):
            names = ", ".join(f"{int(r)} {r.name}" for r in got) or "none"
            problems.append(f"{ieee}: {names}; expected {', '.join(f'{int(r)} {r.name}' for r in expected)}")
    for ieee in seen.keys() - tr.expected_outcomes.keys():
        problems.append(f"{ieee}: an outcome for a device that is no target")
    if problems:
        return _fail("CCS08 outcomes: " + "; ".join(problems))
    listed = "; ".join(f"{o.ieee}: {int(o.response)} {o.response.name} (0x{o.alert_code:04X})" for o in tr.outcomes)
    return _pass(f"one CCS08 outcome per target and outcome: {listed}")


# -- the catalogue ----------------------------------------------------------------------------------------------

BOTH = ("ours", "zigpy")
OURS_ONLY = ("ours",)


@dataclass(frozen=True)
class _Entry:
    check: Check
    scenario: str
    judge: Judge
    # Why the check does not apply to the targets outside `check.applies_to`.
    elsewhere: str = ""


def _entry(
    id: str,
    title: str,
    reference: str,
    level: Level,
    scenario: str,
    judge: Judge,
    text: str,
    applies_to: tuple[str, ...] = BOTH,
    elsewhere: str = "",
) -> _Entry:
    return _Entry(Check(id, title, reference, level, applies_to, text), scenario, judge, elsewhere)


_MUST, _SHOULD = Level.MUST, Level.SHOULD
_CATALOGUE = [
    _entry(
        "S-01",
        "Query Next Image offers the held image",
        "SPEC.md §2.3, §9.3 S-01",
        _MUST,
        "query",
        judge_query,
        "A target probe (current version 1, hardware 0x1150 inside the image's range) sends Query Next Image; the "
        "one answer must be SUCCESS with a 13-byte payload naming the held image, ImageSize = file length, TSN "
        "echoed.",
    ),
    _entry(
        "S-01.FC",
        "Responses disable default responses (FC 0x19)",
        "SPEC.md §1.1, §9.3 S-01",
        _SHOULD,
        "query",
        judge_response_frame_control,
        "The Query Next Image Response of S-01 should carry frame control 0x19.",
    ),
    _entry(
        "S-02",
        "Hardware version checked against the image's range",
        "SPEC.md §2.2, §9.3 S-02",
        _MUST,
        "hardware",
        judge_hardware,
        "Five queries with hardware version min−1, min, inside, max, max+1 (range 0x1111..0x1211; on zigpy one "
        "update_firmware() each): SUCCESS inside the range, NO_IMAGE_AVAILABLE (status byte only) outside.",
    ),
    _entry(
        "S-03",
        "Query without hardware version is offered",
        "SPEC.md §2.2, §9.3 S-03",
        _SHOULD,
        "no-hardware",
        judge_no_hardware,
        "A query without the hardware version field for an image that has a hardware range should be offered "
        "(Silicon Labs policy); GB may require the field (UNCONFIRMED).",
    ),
    _entry(
        "S-04",
        "Version policy of the query",
        "SPEC.md §2.2, §9.3 S-04",
        _MUST,
        "versions",
        judge_versions,
        "Queries with current version older than, equal to and newer than the held one; the answers must follow "
        "the target's declared policy (both declare upgrade-if-newer: only the older one is offered).",
    ),
    _entry(
        "S-05",
        "Nothing for a device outside the DeviceIDList",
        "SPEC.md §8.6, §9.3 S-05",
        _SHOULD,
        "stranger",
        judge_stranger,
        "A joined device that is not a target of the image (on zigpy: not the device being updated) queries and "
        "asks for a block: NO_IMAGE_AVAILABLE or NOT_AUTHORIZED, and no image data.",
    ),
    _entry(
        "S-06",
        "Image blocks: size, offset echo, short last block",
        "SPEC.md §2.6, §6.2, §9.3 S-06",
        _MUST,
        "download",
        judge_download,
        f"After the query, a block at offset 0 with MaximumDataSize {SMALL_DATA_SIZE}, then the whole file with "
        f"MaximumDataSize {MAX_DATA_SIZE}, each offset the previous plus the data received: every answer one "
        "SUCCESS block, TSN and offset echoed, 0 < N ≤ MaximumDataSize, data equal to the file, last block short.",
    ),
    _entry(
        "S-07",
        "Missing file: Default Response 0x98",
        "SPEC.md §6.2, §9.1 (test case 9.5.6), §9.3 S-07",
        _MUST,
        "unknown-image",
        judge_unknown_image,
        "Image Block Request for manufacturer 0xFFF0, image type 0x0000, version 0xFFFFFFF0 at offset 100: the "
        "answer must be Default Response NO_IMAGE_AVAILABLE (0x98).",
    ),
    _entry(
        "S-08",
        "Offset past the end: an error, and the server carries on",
        "SPEC.md §9.3 S-08",
        _MUST,
        "past-end",
        judge_past_end,
        "A block request at offset = file size must get an error answer (no data), and the next valid block "
        "request must still be answered.",
    ),
    _entry(
        "S-08.FORM",
        "Offset past the end: Default Response 0x98 or ABORT",
        "SPEC.md §2.6, §9.3 S-08",
        _SHOULD,
        "past-end",
        judge_past_end_form,
        "The error of S-08 should be Default Response NO_IMAGE_AVAILABLE or an Image Block Response ABORT.",
    ),
    _entry(
        "S-09",
        "Rate limiting: WAIT_FOR_DATA and MinimumBlockPeriod",
        "SPEC.md §2.6, §6.3, §9.3 S-09",
        _MUST,
        "rate-limit",
        judge_rate_limit,
        "Block requests advertising MinimumBlockPeriod 0, twice (honouring each wait), then advertising the "
        "period the server imposed. Our CHF runs with wait_for_data = 30 s and minimum_block_period = 250: every "
        "WAIT_FOR_DATA must have RequestTime ≥ CurrentTime (or CurrentTime 0), the second must carry the "
        "server's period, the last request must be served. Not applicable to a server that never rate-limits "
        "(rate limiting is optional, SPEC.md §6.2).",
    ),
    _entry(
        "S-10",
        "Concurrent clients served independently",
        "SPEC.md §6.2, §6.3, §9.3 S-10",
        _MUST,
        "concurrency",
        judge_concurrency,
        "Three target probes interleave block requests at their own offsets for three rounds, a client told to "
        "wait sitting out its wait (on zigpy: three update_firmware() at once); our CHF runs with "
        "max_concurrent_downloads = 2. Each answer must be that client's data at its offset, or WAIT_FOR_DATA for "
        "a client beyond the limit only: a client being served goes on being served.",
    ),
    _entry(
        "S-11",
        "Image Page Request served or refused",
        "SPEC.md §2.5, §9.3 S-11",
        _MUST,
        "page",
        judge_page,
        "Image Page Request at offset 10, PageSize 120, MaximumDataSize 50, ResponseSpacing 40 ms. A server that "
        "declares page support must send blocks covering exactly the page, each ≤ 50 B, spaced ≥ 40 ms; one that "
        "does not must answer Default Response UNSUP_CLUSTER_COMMAND (0x81).",
    ),
    _entry(
        "S-12",
        "Upgrade End SUCCESS answered with the activation time",
        "SPEC.md §2.8, §8.6, §9.3 S-12",
        _MUST,
        "upgrade-end-success",
        judge_upgrade_end_success,
        "Query, whole download, Upgrade End Request SUCCESS: exactly one 16-byte Upgrade End Response, ids and "
        "TSN echoed, times consistent (0xFFFFFFFF wait, CurrentTime 0 relative, or UpgradeTime ≥ CurrentTime) "
        "and as the target declares (our CHF for a PPMID: now).",
    ),
    _entry(
        "S-13",
        "No Upgrade End Response to a failed Upgrade End",
        "SPEC.md §2.8, §6.2, §9.3 S-13",
        _MUST,
        "upgrade-end-failure",
        judge_upgrade_end_failure,
        "Query, one block, then Upgrade End Request ABORT, INVALID_IMAGE and REQUIRE_MORE_IMAGE in turn (on "
        "zigpy one update_firmware() each): the server must not send an Upgrade End Response to any of them.",
    ),
    _entry(
        "S-13.DR",
        "Failed Upgrade End acknowledged by Default Response",
        "SPEC.md §2.8, §9.3 S-13",
        _SHOULD,
        "upgrade-end-failure",
        judge_upgrade_end_failure_default_response,
        "The failed Upgrade End Requests of S-13 ask for a default response; each should get Default Response "
        "SUCCESS (ZBOSS and Silicon Labs do).",
    ),
    _entry(
        "S-14",
        "Unsolicited Upgrade End Response",
        "SPEC.md §2.8, §9.3 S-14",
        _MUST,
        "unsolicited-end",
        judge_unsolicited_end,
        "The server is asked to schedule activation (unicast in 120 s, then broadcast now): each Upgrade End "
        "Response must be 16 bytes naming the held image (or wildcards) with consistent times. Not applicable to "
        "a server that cannot send one.",
    ),
    _entry(
        "S-15",
        "Query Device Specific File answered or refused",
        "SPEC.md §2.9, §9.3 S-15",
        _MUST,
        "specific-file",
        judge_specific_file,
        "Query Device Specific File for the probe's client configuration (0xFFC1; our CHF holds one for it): a "
        "server that declares support answers with that file; one that does not answers Default Response "
        "UNSUP_CLUSTER_COMMAND (0x81).",
    ),
    _entry(
        "S-16",
        "Malformed commands: Default Response 0x80",
        "SPEC.md §4, §9.3 S-16",
        _MUST,
        "malformed",
        judge_malformed,
        "Truncated Query Next Image, Image Block and Upgrade End Requests (default response enabled): each must "
        "get Default Response MALFORMED_COMMAND (0x80), or INVALID_FIELD (0x85) as Silicon Labs sends.",
    ),
    _entry(
        "S-17",
        "Image Notify payloads",
        "SPEC.md §2.1, §9.3 S-17",
        _MUST,
        "notify",
        judge_notify,
        "Every Image Notify the server sends while a probe joins and is notified (our CHF: payload types 0–3 "
        "unicast and type 3 broadcast; zigpy: its interview and update_firmware() notifies and "
        "broadcast_notify()): payload length matching the type, QueryJitter 1..100, ids of the held image, "
        "default response disabled on broadcasts.",
    ),
    _entry(
        "S-17.TSN",
        "Image Notify: a fresh TSN each",
        "SPEC.md §1.1, §9.3 S-17",
        _SHOULD,
        "notify",
        judge_notify_tsn,
        "The Image Notifies of S-17 should each carry a new transaction sequence number (Silicon Labs does): a "
        "client that drops repeated TSNs as duplicates would miss one.",
    ),
    _entry(
        "S-18",
        "GB CCS08 outcome once per target",
        "SPEC.md §8.3, §8.6, §9.3 S-18",
        _MUST,
        "transfer-alerts",
        judge_transfer_alerts,
        "Target A completes (SUCCESS), B queries twice with hardware 0x1000 (mismatch), C aborts twice, and the "
        "image held for D is discarded; after the transfer timeout the CHF must have raised exactly one CCS08 "
        "outcome each: 0 (0x8F8A), 2, 3 and 1 (0x8F89).",
        OURS_ONLY,
        "a GB CHF duty: zigpy's OTA server raises no CCS08 Firmware Transfer Alerts",
    ),
]
_ENTRIES = {entry.check.id: entry for entry in _CATALOGUE}
CHECKS: dict[str, Check] = {entry.check.id: entry.check for entry in _CATALOGUE}


def select_checks(checks: Sequence[str] | None) -> list[Check]:
    """The checks to run, in catalogue order; unknown IDs are an input error naming the valid ones."""
    if checks is None:
        return list(CHECKS.values())
    wanted = {c.strip().upper() for c in checks}
    unknown = sorted(wanted - CHECKS.keys())
    if unknown:
        raise UnknownCheckError(f"unknown server check {', '.join(unknown)}: expected one of {', '.join(CHECKS)}")
    return [check for check in CHECKS.values() if check.id in wanted]


# -- running ----------------------------------------------------------------------------------------------------


async def run_checks(target: ServerTarget, checks: Sequence[Check], *, pcap: Path | None = None) -> Report:
    """Run `checks` against `target`, one fresh bench per scenario; checks sharing a scenario share its run."""
    clock = Clock(START_UTC)
    network = target.network()
    writer = None
    if pcap is not None:
        writer = PcapWriter(
            pcap, network_key=bytes.fromhex(network.network_key.replace(":", "")), pan_id=network.pan_id, clock=clock
        )
    results: list[CheckResult] = []
    notes: list[str] = []
    transcripts: dict[str, Transcript | str] = {}
    try:
        for check in checks:
            entry = _ENTRIES[check.id]
            if target.name not in check.applies_to:
                reason = f"applies to {', '.join(check.applies_to)} only: {entry.elsewhere}"
                results.append(CheckResult(check, Verdict.NOT_APPLICABLE, reason))
                continue
            if entry.scenario not in transcripts:
                transcripts[entry.scenario] = await _play(target, entry.scenario, clock, writer)
            played = transcripts[entry.scenario]
            if isinstance(played, str):
                results.append(CheckResult(check, Verdict.INCONCLUSIVE, played))
                continue
            judgement = entry.judge(played)
            evidence = played.frames if judgement.evidence is None else sorted(judgement.evidence, key=lambda f: f.at)
            reason = judgement.reason
            if played.sessions:
                reason += f" [{'; '.join(sorted(set(played.sessions)))}]"
            results.append(CheckResult(check, judgement.verdict, reason, evidence, judgement.timeline, played.duration))
            if judgement.verdict == Verdict.FAIL:
                notes.append(f"{check.id} ({check.level.value}): {judgement.note or judgement.reason}")
            elif judgement.note:
                notes.append(f"{check.id} ({judgement.verdict.value}): {judgement.note}")
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    if writer is not None:
        writer.close()
    return Report(
        target=target.name,
        description=target.description,
        results=results,
        protocol_time=clock.now(),
        wall_time=clock.wall_elapsed(),
        pcap=str(pcap) if pcap is not None else None,
        notes=notes,
    )


async def _play(target: ServerTarget, scenario: str, clock: Clock, writer: PcapWriter | None) -> Transcript | str:
    """Run one scenario on a fresh air; a scenario that could not be set up returns why (a string)."""
    air = Air()
    if writer is not None:
        air.add_tap(writer.write)
    started = clock.now()
    bench = await target.bench(scenario, air, clock)
    if writer is not None:
        writer.add_node(bench.app.nwk, bench.app.ieee)
        for index in (*range(len(TARGET_IEEES)), -1):
            identity = bench.identity(index)
            writer.add_node(identity.nwk, identity.ieee)
    transcript = Transcript(bench.claims, bench.offer, bench.specific)
    try:
        await SCENARIOS[scenario](bench, transcript)
    except (ScenarioError, TimeoutError) as exc:
        return f"scenario could not be played: {exc or type(exc).__name__}"
    finally:
        transcript.notifies = [f for probe in bench.probes for f in probe.notifies]
        transcript.stray = [f for probe in bench.probes for f in probe.late()]
        transcript.outcomes = bench.outcomes()
        transcript.sessions = list(bench.sessions)
        await bench.close()
        if writer is not None:
            air.remove_tap(writer.write)
    transcript.duration = clock.now() - started
    return transcript


def play_check(target: ServerTarget, check_id: str) -> Transcript:
    """The transcript of one check's scenario against `target`, to judge (or re-judge) recorded frames."""
    entry = _ENTRIES[select_checks([check_id])[0].id]

    async def main() -> Transcript:
        played = await _play(target, entry.scenario, Clock(START_UTC), None)
        if isinstance(played, str):
            raise ScenarioError(played)
        return played

    return run(main, virtual=True)


def judge_check(check_id: str, transcript: Transcript) -> Judgement:
    """Judge `transcript` by the rule of check `check_id`."""
    return _ENTRIES[select_checks([check_id])[0].id].judge(transcript)


def run_target(target: ServerTarget, checks: Sequence[str] | None, *, pcap: Path | None = None) -> Report:
    """`run_server_checks` for a target object (e.g. a deliberately misconfigured CHF)."""
    selected = select_checks(checks)
    return run(lambda: run_checks(target, selected, pcap=pcap), virtual=True)


def run_server_checks(target: str, checks: Sequence[str] | None, *, pcap: Path | None = None) -> Report:
    """Probe the OTA server `target` ("ours" or "zigpy") with `checks` (None: all) on virtual time; with `pcap`,
    capture the air of every scenario into that file."""
    if target not in TARGETS:
        raise UnknownTargetError(f"unknown server target {target!r}: expected one of {', '.join(TARGETS)}")
    return run_target(TARGETS[target](), checks, pcap=pcap)


__all__ = [
    "CHECKS",
    "Claims",
    "OursTarget",
    "ServerTarget",
    "Transcript",
    "UnknownCheckError",
    "UnknownTargetError",
    "ZigpyTarget",
    "judge_check",
    "play_check",
    "run_server_checks",
    "run_target",
    "select_checks",
]
