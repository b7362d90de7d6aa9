"""The OTA Upgrade client state machine (SPEC.md §6.1) of an emulated PPMID or HCALCS.

One coroutine per device walks the `Phase`s DISCOVERY → QUERY → DOWNLOAD → VERIFY → END (Upgrade End, then
activation); each phase is one method that returns the next phase. The device feeds the client the frames the
server sends (`deliver`, as `inbound` messages) and it answers through its `Host`. Every rule carries the SPEC.md
case it implements (C-xx) and every deliberate deviation a profile can ask for (`DeviceFault`) is consulted at the
one place the conforming behaviour lives, so a conformance check can be proved to fail on it. The block loop of
the download, the emulator's hot path, is `download.BlockLoop`.

Choices where the specification leaves room (see the README):
* responses are matched by command and content, not by TSN, so a late answer to a resent request still counts;
* Image Notify is acted on only while the client is idle between queries or holds a verified image waiting
  for activation (ZBOSS and Silicon Labs ignore it during a transfer too); apart from that, a client holding an
  image does not query; a new version offered then replaces the held image;
* an Image Notify that arrives before the client has found its server (just after joining, during server
  discovery) is kept, not dropped: only an OTA server sends one (ZCL r7 §11.13, Image Notify), and a unicast one
  obliges the client to query, so the client queries as soon as discovery has named the server, instead of
  after its start jitter (Silicon Labs' client likewise starts discovery at once on such a notify);
* an unanswered query (after resends) or NOT_AUTHORIZED sends the client back to server discovery;
* WAIT_FOR_DATA waits RequestTime − CurrentTime seconds, or MinimumBlockPeriod when they are equal, and adopts a
  MinimumBlockPeriod the server sends;
* three Default Responses NO_IMAGE_AVAILABLE to block requests end the download with Upgrade End ABORT (the ZBOSS
  regression RTP_OTA_SRV_04);
* an Upgrade End Response that names another image is answered INVALID_VALUE (Silicon Labs) and otherwise ignored;
* with UpgradeActivationPolicy out-of-band the client never activates on a timeout (SPEC.md §3.1 calls that case
  manufacturer specific); activation then comes only from Activate Firmware.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import zigpy.types as t
from zigpy.zcl import foundation
from zigpy.zcl.clusters.general import Ota, UpgradeActivationPolicy, UpgradeTimeoutPolicy
from zigpy.zdo.types import ZDOCmd

from emulator.clock import Clock
from emulator.device import events, firmware, zdo
from emulator.device.download import MAX_WAIT, BlockLoop, DownloadFailure
from emulator.device.faults import DeviceFault
from emulator.device.inbound import WAKE, BlockIn, Inbound, Inbox, OtaIn, ZdoIn
from emulator.device.state import DeviceState, ImageRef, StateStore
from emulator.gb.codes import ActivateImageResult, ActivationResponse, AlertCode
from emulator.ota import frames
from emulator.ota import image as ota_image
from emulator.ota.frames import OtaCommand
from emulator.profiles import DeviceProfile

LOGGER = logging.getLogger(__name__)

Status = foundation.Status

OTA_CLUSTER = frames.CLUSTER_ID
COORDINATOR = 0x0000

# SPEC.md §6.4 / §10 (Silicon Labs defaults) where no profile key exists.
DISCOVERY_RETRY = 600.0  # Server Discovery Delay: 10 min
UPGRADE_END_MISS_RETRY = 600.0  # Run Upgrade Request Delay: 10 min
JOIN_POLL_WINDOW = 30.0  # a sleepy device fast-polls this long after joining, so the interview reaches it
ANNOUNCE_SPREAD = 1.0  # Device_annce goes out up to this long after joining (s)

# ImageUpgradeStatus (SPEC.md §3.2)
UpgradeStatus = Ota.ImageUpgradeStatus
_HOLDING = (UpgradeStatus.Waiting_to_upgrade, UpgradeStatus.Waiting_to_Upgrade_via_External_Event)


class Phase(enum.Enum):
    """What the client is doing. Each phase but STOPPED is one method of `OtaClient` that returns the next."""

    STOPPED = "stopped"  # not started yet
    STARTING = "starting"  # just joined: announce
    DISCOVERY = "discovery"  # find the OTA server (Match_Desc_req, IEEE_addr_req)
    RESUMING = "resuming"  # at start, with a download under way: continue it after the start jitter
    HOLDING = "holding"  # a verified image waits for activation: entered at start with one held; END shows it too
    IDLE = "idle"  # between queries
    QUERY = "query"  # Query Next Image
    DOWNLOAD = "download"  # the block loop
    VERIFY = "verify"  # check the downloaded image
    END = "end"  # Upgrade End Request, then obey the response until the image is activated

    def __str__(self) -> str:
        return str(self.value)


# A notify is acted on in these phases (in STARTING and DISCOVERY once the server is known).
_NOTIFY_PHASES = frozenset({Phase.IDLE, Phase.HOLDING, Phase.STARTING, Phase.DISCOVERY})


class QueryOutcome(enum.Enum):
    """A query that brought no image to download."""

    NO_IMAGE = "no_image"  # nothing offered, or an offer this client refuses
    NOT_AUTHORIZED = "not_authorized"  # the server refused: look for a server again
    TIMEOUT = "timeout"  # no answer after the resends: look for a server again


class EndOrder(enum.Enum):
    """What an Upgrade End Response orders, short of a countdown (which is a delay in seconds)."""

    WAIT = "wait"  # UpgradeTime 0xFFFFFFFF: hold the image and ask again later (C-14)
    EXTERNAL = "external"  # out-of-band activation policy: hold until Activate Firmware (C-17)


@dataclass(slots=True)
class _EndTimes:
    """The END phase's clock (loop times; None: not planned): when to send Upgrade End Request again, by when
    its response is due, when to activate; and how many requests in a row went unanswered."""

    ask_at: float | None
    reply_by: float | None = None
    activate_at: float | None = None
    misses: int = 0

    def next_deadline(self) -> float:
        return min((d for d in (self.activate_at, self.ask_at, self.reply_by) if d is not None), default=math.inf)


class Host(Protocol):
    """What the state machine needs from the node it runs in."""

    ieee: t.EUI64
    profile: DeviceProfile
    clock: Clock

    def send_ota(self, data: bytes, tsn: int) -> None:
        """Unicast an OTA-cluster frame to the discovered server."""

    def send_zdo(self, cluster_id: int, data: bytes, dst_nwk: int) -> None: ...

    def set_server(self, nwk: int, endpoint: int) -> None: ...

    def poll(self) -> None:
        """Ask the parent for held frames (sleepy devices)."""

    def announce(self) -> None:
        """Broadcast Device_annce (after a reboot into new firmware)."""

    def emit(self, kind: type[events.DeviceEvent], **fields: Any) -> None: ...


class OtaClient:
    """The OTA client of one device: `run` walks the phases until cancelled; the device hands it frames with
    `deliver` and notifies with `on_image_notify`, and asks it to activate with `activate_firmware` (GB CS06)."""

    def __init__(
        self,
        host: Host,
        state: DeviceState,
        store: StateStore | None,
        identity: firmware.Identity,
        rng: random.Random,
        more_image_types: tuple[int, ...] = (),
    ) -> None:
        self.host = host
        self.profile = host.profile
        self.faults = host.profile.faults
        self.state = state
        self.store = store
        self.identity = identity
        self.rng = rng
        self.more_image_types = more_image_types
        self.server_nwk: int | None = None
        self.phase = Phase.STOPPED
        self.loop = asyncio.get_running_loop()
        self.inbox = Inbox(host.poll, sleepy=self.profile.sleepy, poll_period=self.profile.poll_period)
        #: Queue a frame (or a wake-up) for the state machine: the inbox's own `put`, one call less per block.
        self.deliver: Callable[[Inbound], None] = self.inbox.put
        #: Seconds per unit of MinimumBlockPeriod (the profile's block_period_unit).
        self.period_scale = 0.001 if self.profile.block_period_unit == "ms" else 1.0
        #: When the last block or page request went out (MinimumBlockPeriod counts from it, across downloads).
        self.last_request_at = -math.inf
        self._phases: dict[Phase, Callable[[], Awaitable[Phase]]] = {
            Phase.STARTING: self._starting,
            Phase.DISCOVERY: self._discovery,
            Phase.RESUMING: self._resuming,
            Phase.HOLDING: self._holding,
            Phase.IDLE: self._idle,
            Phase.QUERY: self._querying,
            Phase.DOWNLOAD: self._downloading,
            Phase.VERIFY: self._verifying,
            Phase.END: self._ending,
        }
        self._booting = True
        self._start_jitter = 0.0
        self._next_query = 0.0
        self._offer: ImageRef | None = None  # what DOWNLOAD fetches and VERIFY checks
        self._offer_offset = 0  # where DOWNLOAD starts
        self._query_requested = False
        self._rebooted = False
        self._retry_download = False
        self._zcl_tsn = rng.randrange(256)
        self._zdo_tsn = rng.randrange(256)
        #: FileOffset and loop time at the last save (the block loop saves the partial download every so often).
        self.saved_offset = 0
        self.saved_at = 0.0
        self._scheduled: set[asyncio.TimerHandle] = set()

    # == frames in ===================================================================================

    def on_image_notify(self, frame: frames.Frame, broadcast: bool) -> None:
        """SPEC.md §2.1 client rules (C-01, C-02, C-03); validity (payload type, jitter range) is checked by the
        device before it gets here."""
        cmd = frame.command
        payload_type = int(cmd.payload_type)
        jitter = int(cmd.query_jitter)
        queried, reason = self._judge_notify(cmd, payload_type, jitter, broadcast)
        self.host.emit(
            events.NotifyReceived,
            payload_type=payload_type,
            query_jitter=jitter,
            broadcast=broadcast,
            queried=queried,
            reason=reason,
        )
        if queried:
            self._query_requested = True
            self.inbox.put(WAKE)

    def _judge_notify(self, cmd: Any, payload_type: int, jitter: int, broadcast: bool) -> tuple[bool, str]:
        if self.phase not in _NOTIFY_PHASES:
            return False, f"busy ({self.phase})"
        queried, reason = self._judge_notify_fields(cmd, payload_type, jitter, broadcast)
        if queried and self.phase in (Phase.STARTING, Phase.DISCOVERY):
            return True, f"{reason}; query once discovery has found the server"
        return queried, reason

    def _judge_notify_fields(self, cmd: Any, payload_type: int, jitter: int, broadcast: bool) -> tuple[bool, str]:
        if not broadcast:
            if DeviceFault.IGNORE_UNICAST_NOTIFY in self.faults:
                return False, "unicast ignored (fault ignore_unicast_notify)"
            return True, "unicast: always query"
        if DeviceFault.QUERY_ON_ANY_NOTIFY in self.faults:
            return True, "broadcast: queried without checks (fault query_on_any_notify)"
        profile = self.profile
        if payload_type >= 1 and cmd.manufacturer_code not in (profile.manufacturer_code, frames.WILDCARD_MANUFACTURER):
            return False, f"manufacturer 0x{cmd.manufacturer_code:04X} is not ours"
        if payload_type >= 2 and cmd.image_type not in (profile.image_type, frames.WILDCARD_IMAGE_TYPE):
            return False, f"image type 0x{cmd.image_type:04X} is not ours"
        if payload_type >= 3 and cmd.new_file_version in (
            self.state.running_version,
            self.state.downloaded_file_version,
        ):
            return False, f"already have version 0x{cmd.new_file_version:08X}"
        if jitter < 100:
            draw = self.rng.randint(1, 100)
            if draw > jitter:
                return False, f"jitter: drew {draw} > {jitter}"
        return True, "broadcast matches"

    def stay_awake(self, seconds: float) -> None:
        """Poll for `seconds` whatever the state machine waits for (a sleepy device right after joining)."""
        self.inbox.stay_awake(seconds)

    async def _await_ota(self, names: frozenset[str], request_id: int, within: float) -> frames.Frame | None:
        """The first OTA frame named in `names`, or Default Response to command `request_id`, within `within` s."""
        deadline = self.loop.time() + within
        while (left := deadline - self.loop.time()) > 0:
            item = await self.inbox.next(left, expect=True)
            if item is None:
                return None
            if not isinstance(item, OtaIn):
                continue
            frame = item.frame
            if frame.name in names or (frame.name == "Default_Response" and frame.command.command_id == request_id):
                return frame
        return None

    async def _await_zdo(self, cluster_id: int, tsn: int, within: float) -> bytes | None:
        deadline = self.loop.time() + within
        while (left := deadline - self.loop.time()) > 0:
            item = await self.inbox.next(left, expect=True)
            if item is None:
                return None
            if isinstance(item, ZdoIn) and item.cluster_id == cluster_id and item.data[:1] == bytes([tsn]):
                return item.data
        return None

    # == small helpers (the block loop uses the public ones) =========================================

    def next_tsn(self) -> int:
        self._zcl_tsn = (self._zcl_tsn + 1) & 0xFF
        return self._zcl_tsn

    def _zdo_seq(self) -> int:
        self._zdo_tsn = (self._zdo_tsn + 1) & 0xFF
        return self._zdo_tsn

    def save(self, *, partial: bool = False, held: bool = False, running: bool = False) -> None:
        if self.store is not None:
            self.store.save(self.state, partial=partial, held=held, running=running)
        self.saved_offset = self.state.file_offset
        self.saved_at = self.loop.time()

    def reject(self, item: BlockIn | OtaIn, command_id: int, status: Status, reason: str) -> None:
        """An error Default Response to a server frame (ZCL: errors are reported even with DDR set; never to a
        broadcast)."""
        if isinstance(item, BlockIn):
            tsn, broadcast = item.tsn, False
        else:
            tsn, broadcast = item.frame.tsn, item.broadcast
        self.host.emit(
            events.FrameRejected, cluster_id=OTA_CLUSTER, command_id=command_id, status=int(status), reason=reason
        )
        if not broadcast:
            self.host.send_ota(
                frames.default_response(tsn=tsn, command_id=command_id, status=status, direction=frames.C2S), tsn
            )

    def _send_upgrade_end(self, status: Status, ref: ImageRef) -> None:
        tsn = self.next_tsn()
        version = ref.file_version
        if status == Status.SUCCESS and DeviceFault.UPGRADE_END_RUNNING_VERSION in self.faults:
            version = self.state.running_version
        data = frames.encode(
            "upgrade_end",
            tsn=tsn,
            status=status,
            manufacturer_code=ref.manufacturer_code,
            image_type=ref.image_type,
            file_version=version,
        )
        self.host.send_ota(data, tsn)
        self.host.emit(
            events.UpgradeEndSent,
            status=int(status),
            manufacturer_code=ref.manufacturer_code,
            image_type=ref.image_type,
            file_version=version,
        )

    def _held_types(self) -> set[int]:
        return {h.ref.image_type for h in self.state.held}

    def _pending_types(self) -> list[int]:
        """REQUIRE_MORE_IMAGE (C-19): image types still to fetch once the main image is held."""
        held = self._held_types()
        if self.profile.image_type not in held:
            return []
        return [kind for kind in self.more_image_types if kind not in held]

    # == the machine =================================================================================

    async def run(self) -> None:
        phase = Phase.STARTING
        while True:
            self.phase = phase
            phase = await self._phases[phase]()

    def _cycle_done(self) -> Phase:
        """A query cycle is over: plan the next query and go idle."""
        self._next_query = self._after_cycle()
        return Phase.IDLE

    def _after_cycle(self) -> float:
        """When to query next: at once for another image (REQUIRE_MORE_IMAGE), after the start jitter when the
        device rebooted into new firmware, else after the query interval."""
        now = self.loop.time()
        if self._retry_download:
            self._retry_download = False
            return now + self.profile.download_retry
        if self._rebooted:
            self._rebooted = False
            return now + self.rng.uniform(0.0, self.profile.query_start_jitter)
        if self._pending_types():
            self._query_requested = True
        return now + self.profile.query_interval

    async def _starting(self) -> Phase:
        # Joined devices announce within a moment of each other, not all in the same instant: a thousand
        # simultaneous Device_annce broadcasts would put a million deliveries on the air at once.
        await self.inbox.pause(self.rng.uniform(0.0, ANNOUNCE_SPREAD))
        self.host.announce()
        return Phase.DISCOVERY

    async def _discovery(self) -> Phase:
        """SPEC.md §1.2, §6.1 DISCOVER: until a server is found. At start, what the device remembers decides what
        follows, after the start jitter: a download resumes, a held image waits for activation, or a query."""
        while (reason := await self._try_discover()) is not None:
            self.host.emit(events.DiscoveryFailed, reason=reason, retry_in=DISCOVERY_RETRY)
            await self.inbox.pause(DISCOVERY_RETRY)
        if not self._booting:
            return self._cycle_done()
        self._booting = False
        self._start_jitter = self.rng.uniform(0.0, self.profile.query_start_jitter)
        if self.state.download is not None:
            return Phase.RESUMING
        if self.state.held:
            return Phase.HOLDING
        self._next_query = self.loop.time() + self._start_jitter
        return Phase.IDLE

    async def _resuming(self) -> Phase:
        await self.inbox.pause(self._start_jitter)
        state = self.state
        if state.download is None:
            return self._cycle_done()
        self._offer = state.download
        self._offer_offset = 0 if DeviceFault.RESTART_FROM_ZERO in self.faults else state.file_offset
        return Phase.DOWNLOAD

    async def _holding(self) -> Phase:
        await self.inbox.pause(self._start_jitter)
        return self._after_verified(announce_more=False)

    async def _idle(self) -> Phase:
        while True:
            left = self._next_query - self.loop.time()
            if self._query_requested or left <= 0:
                self._query_requested = False
                return Phase.QUERY
            await self.inbox.next(left)

    async def _querying(self) -> Phase:
        outcome = await self._query()
        if isinstance(outcome, ImageRef):
            state = self.state
            restart = DeviceFault.RESTART_FROM_ZERO in self.faults
            resume = state.download == outcome and state.partial is not None and not restart
            self._offer = outcome
            self._offer_offset = state.file_offset if resume else 0
            return Phase.DOWNLOAD
        if outcome is QueryOutcome.NO_IMAGE:
            return self._cycle_done()
        return Phase.DISCOVERY

    # -- discovery (SPEC.md §1.2, §6.1 DISCOVER) -------------------------------------------------------

    async def _try_discover(self) -> str | None:
        """Match_Desc_req to the coordinator for an OTA server cluster; the first answer names the server. Then
        IEEE_addr_req for its EUI-64 (UpgradeServerID). Returns None on success, else why not."""
        profile = self.profile
        response = None
        for _ in range(1 + profile.max_resends):
            seq = self._zdo_seq()
            request = zdo.match_desc_request(seq, COORDINATOR, profile.profile_id, [OTA_CLUSTER])
            self.host.send_zdo(ZDOCmd.Match_Desc_req, request, COORDINATOR)
            response = await self._await_zdo(ZDOCmd.Match_Desc_rsp, seq, profile.response_timeout)
            if response is not None:
                break
        if response is None:
            return "no answer to Match_Desc_req"
        try:
            _, (status, server_nwk, endpoints) = zdo.parse(ZDOCmd.Match_Desc_rsp, response)
        except ValueError as exc:
            return f"unreadable Match_Desc_rsp: {exc}"
        if status != zdo.Status.SUCCESS or not endpoints:
            return f"no OTA server matched (status {int(status)}, {len(endpoints)} endpoints)"
        ieee = await self._server_ieee(server_nwk)
        if ieee is None:
            return f"no IEEE address for server 0x{server_nwk:04X}"
        self.server_nwk = int(server_nwk)
        self.host.set_server(int(server_nwk), int(endpoints[0]))
        self.state.upgrade_server_id = ieee
        self.save()
        self.host.emit(
            events.ServerDiscovered, server_nwk=int(server_nwk), server_endpoint=int(endpoints[0]), server_ieee=ieee
        )
        return None

    async def _server_ieee(self, server_nwk: int) -> t.EUI64 | None:
        """IEEE_addr_req to the server found: its EUI-64, or None after the resends."""
        profile = self.profile
        for _ in range(1 + profile.max_resends):
            seq = self._zdo_seq()
            self.host.send_zdo(ZDOCmd.IEEE_addr_req, zdo.ieee_addr_request(seq, server_nwk), server_nwk)
            answer = await self._await_zdo(ZDOCmd.IEEE_addr_rsp, seq, profile.response_timeout)
            if answer is None:
                continue
            try:
                _, values = zdo.parse(ZDOCmd.IEEE_addr_rsp, answer)
            except ValueError:
                continue
            if values[0] == zdo.Status.SUCCESS and values[2] == server_nwk:
                ieee: t.EUI64 = values[1]
                return ieee
        return None

    # -- query (SPEC.md §2.2, §2.3; C-04, C-05) ---------------------------------------------------------

    def _query_type(self) -> int:
        pending = self._pending_types()
        return pending[0] if pending else self.profile.image_type

    async def _query(self) -> ImageRef | QueryOutcome:
        self.phase = Phase.QUERY
        profile = self.profile
        image_type = self._query_type()
        hardware = None if DeviceFault.NO_HARDWARE_VERSION in self.faults else profile.hardware_version
        fields: dict[str, Any] = {
            "field_control": 0 if hardware is None else 1,
            "manufacturer_code": profile.manufacturer_code,
            "image_type": image_type,
            "current_file_version": self.state.running_version,
        }
        if hardware is not None:
            fields["hardware_version"] = hardware
        response = None
        for _ in range(1 + profile.max_resends):
            tsn = self.next_tsn()
            self.host.send_ota(frames.encode("query_next_image", tsn=tsn, **fields), tsn)
            self.host.emit(
                events.QuerySent,
                image_type=image_type,
                file_version=self.state.running_version,
                hardware_version=hardware,
            )
            response = await self._await_ota(
                frozenset({"query_next_image_response"}), OtaCommand.QUERY_NEXT_IMAGE, profile.response_timeout
            )
            if response is not None:
                break
        if response is None:
            self.host.emit(events.QueryAnswered, status=None)
            return QueryOutcome.TIMEOUT
        status = response.command.status
        if response.name == "query_next_image_response" and status == Status.SUCCESS:
            return self._judge_offer(response.command, image_type)
        self.host.emit(events.QueryAnswered, status=int(status))
        return QueryOutcome.NOT_AUTHORIZED if status == Status.NOT_AUTHORIZED else QueryOutcome.NO_IMAGE

    def _judge_offer(self, cmd: Any, image_type: int) -> ImageRef | QueryOutcome:
        ref = ImageRef(int(cmd.manufacturer_code), int(cmd.image_type), int(cmd.file_version), int(cmd.image_size))
        reason = self._refusal(ref, image_type)
        self.host.emit(
            events.ImageOffered,
            manufacturer_code=ref.manufacturer_code,
            image_type=ref.image_type,
            file_version=ref.file_version,
            image_size=ref.image_size,
            accepted=not reason,
            reason=reason or "accepted",
        )
        return QueryOutcome.NO_IMAGE if reason else ref

    def _refusal(self, ref: ImageRef, image_type: int) -> str:
        """Why the client will not download an offered image (C-05, anti-rollback), or "" to take it."""
        state = self.state
        same = ref.file_version == state.running_version or any(
            h.ref.image_type == ref.image_type and h.ref.file_version == ref.file_version for h in state.held
        )
        if same and DeviceFault.ACCEPT_SAME_VERSION not in self.faults:
            return f"version 0x{ref.file_version:08X} is already running or downloaded"
        if ref.file_version < state.running_version and not self.profile.allow_downgrade:
            return (
                f"version 0x{ref.file_version:08X} is lower than the running 0x{state.running_version:08X} "
                "(anti-rollback; allow_downgrade = true accepts it)"
            )
        if ref.manufacturer_code != self.profile.manufacturer_code:
            return f"manufacturer 0x{ref.manufacturer_code:04X} is not ours"
        if ref.image_type != image_type:
            return f"image type 0x{ref.image_type:04X}, asked for 0x{image_type:04X}"
        if ref.image_size < ota_image.FIXED_HEADER_LENGTH:
            return f"image size {ref.image_size} cannot hold an OTA header"
        return ""

    # -- download and verification (SPEC.md §2.4–§2.7; C-06 … C-12) ---------------------------------------

    def _offered(self) -> ImageRef:
        assert self._offer is not None, "QUERY, RESUMING or END chose the image"
        return self._offer

    async def _downloading(self) -> Phase:
        ref = self._offered()
        state = self.state
        firmware.start_download(state, ref, self._offer_offset)
        self.save(partial=True)
        self.host.emit(
            events.DownloadStarted,
            image_type=ref.image_type,
            version=ref.file_version,
            size=ref.image_size,
            offset=self._offer_offset,
        )
        failure = await BlockLoop(self, ref).run()
        if failure is not None:
            self._abandon(ref, failure)
            return self._cycle_done()
        state.image_upgrade_status = UpgradeStatus.Download_complete
        return Phase.VERIFY

    def _abandon(self, ref: ImageRef, failure: DownloadFailure) -> None:
        state = self.state
        if failure.send_abort:
            self._send_upgrade_end(Status.ABORT, ref)
        self.host.emit(
            events.DownloadAborted, reason=failure.reason, offset=state.file_offset, upgrade_end_sent=failure.send_abort
        )
        if failure.resumable:
            # The link failed, not the image: keep what arrived and try again soon (SPEC.md §2.7 "reinitiate
            # the download process again at a later time"; the client owns FileOffset, §6.1).
            firmware.suspend(state)
            self._retry_download = True
        else:
            firmware.discard(state)
        self.save(partial=True, held=True)

    async def _verifying(self) -> Phase:
        ref = self._offered()
        state = self.state
        data = bytes(state.partial or b"")
        if DeviceFault.SKIP_VERIFICATION in self.faults:
            stack = int.from_bytes(data[18:20], "little")
            verdict = firmware.Verdict(True, "not checked (fault skip_verification)", stack)
        else:
            verdict = firmware.verify(data, ref, self.identity)
        self.host.emit(events.ImageVerified, ok=verdict.ok, reason=verdict.reason, version=ref.file_version)
        if not verdict.ok:
            if DeviceFault.NO_UPGRADE_END_ON_INVALID not in self.faults:
                self._send_upgrade_end(Status.INVALID_IMAGE, ref)
            firmware.discard(state)
            self.save(partial=True, held=True)
            return self._cycle_done()
        firmware.hold(state, verdict, data)
        self.save(partial=True, held=True)
        return self._after_verified(announce_more=True)

    # -- after the download (SPEC.md §2.7, §2.8; C-12 … C-19) -------------------------------------------

    def _after_verified(self, *, announce_more: bool) -> Phase:
        """END, unless more image types are to come first (REQUIRE_MORE_IMAGE, C-19)."""
        if not self._pending_types():
            return Phase.END
        self.state.image_upgrade_status = UpgradeStatus.Wait_for_more
        self.save()
        if announce_more:
            self._send_upgrade_end(Status.REQUIRE_MORE_IMAGE, self.state.held[-1].ref)
        return self._cycle_done()

    async def _ending(self) -> Phase:
        """Upgrade End Request SUCCESS, then obey the Upgrade End Response (now, later, wait) — or, with no
        response, retry and finally apply per UpgradeTimeoutPolicy (C-18). While the image is held, a notify
        makes the client query, and a new version offered replaces the held image."""
        state = self.state
        times = _EndTimes(ask_at=self.loop.time())
        while state.held:
            now = self.loop.time()
            if times.activate_at is not None and now >= times.activate_at:
                self.activate_held()
                break
            if times.ask_at is not None and now >= times.ask_at:
                self._send_upgrade_end(Status.SUCCESS, state.held[-1].ref)
                times.ask_at = None
                times.reply_by = now + self.profile.response_timeout
            holding = times.reply_by is None and state.image_upgrade_status in _HOLDING
            self.phase = Phase.HOLDING if holding else Phase.END
            item = await self.inbox.next(times.next_deadline() - now, expect=times.reply_by is not None)
            if self._query_requested and self.phase is Phase.HOLDING:
                self._query_requested = False
                offer = await self._query()
                if isinstance(offer, ImageRef):
                    self._offer, self._offer_offset = offer, 0
                    return Phase.DOWNLOAD
            elif item is None:
                self._end_unanswered(times)
            elif isinstance(item, OtaIn) and state.held and self._end_answer(item, times):
                break
        return self._cycle_done()

    def _end_unanswered(self, times: _EndTimes) -> None:
        """No Upgrade End Response in time: ask again later or, after enough misses, apply (C-18)."""
        if times.reply_by is None or self.loop.time() < times.reply_by:
            return
        times.reply_by = None
        times.misses += 1
        profile = self.profile
        if times.misses >= profile.upgrade_wait_threshold and self._applies_after_timeouts():
            times.activate_at = self.loop.time()
        else:
            times.ask_at = self.loop.time() + min(profile.upgrade_end_retry, UPGRADE_END_MISS_RETRY)

    def _applies_after_timeouts(self) -> bool:
        """UpgradeTimeoutPolicy 0 (apply after timeouts), and the server may activate at all."""
        profile = self.profile
        timeout_applies = (
            profile.upgrade_timeout_policy == UpgradeTimeoutPolicy.Apply_after_timeout
            or DeviceFault.IGNORE_TIMEOUT_POLICY in self.faults
        )
        return timeout_applies and profile.upgrade_activation_policy == UpgradeActivationPolicy.OTA_server_allowed

    def _end_answer(self, item: OtaIn, times: _EndTimes) -> bool:
        """A frame while END waits; True when it ends the phase (the server refused Upgrade End)."""
        frame = item.frame
        if frame.name == "Default_Response" and frame.command.command_id == OtaCommand.UPGRADE_END:
            if times.reply_by is None or frame.command.status == Status.SUCCESS:
                return False
            self.host.emit(
                events.DownloadAborted,
                reason=f"server refused Upgrade End (Default Response 0x{int(frame.command.status):02X})",
                offset=self.state.file_offset,
                upgrade_end_sent=True,
            )
            firmware.discard(self.state)
            self.save(partial=True, held=True)
            return True
        if frame.name == "upgrade_end_response":
            order = self._upgrade_end_response(item)
            if order is not None:
                times.reply_by = None
                times.misses = 0
                self._obey(order, times)
        return False

    def _obey(self, order: EndOrder | float, times: _EndTimes) -> None:
        """C-14, C-15, C-17: hold the image (told to wait, or activation is out of band), or count down."""
        state = self.state
        version = state.held[-1].ref.file_version
        now = self.loop.time()
        if order is EndOrder.WAIT:
            state.image_upgrade_status = UpgradeStatus.Waiting_to_upgrade
            self.save()
            self.host.emit(events.WaitingToUpgrade, version=version, external=False)
            if DeviceFault.ACTIVATE_WHILE_WAITING in self.faults:
                times.activate_at = now
            else:
                times.activate_at = None
                times.ask_at = now + min(self.profile.upgrade_end_retry, MAX_WAIT)
        elif order is EndOrder.EXTERNAL:
            state.image_upgrade_status = UpgradeStatus.Waiting_to_Upgrade_via_External_Event
            self.save()
            self.host.emit(events.WaitingToUpgrade, version=version, external=True)
            times.activate_at = times.ask_at = None
        else:
            delay = float(order)
            state.image_upgrade_status = UpgradeStatus.Count_down
            self.save()
            self.host.emit(events.CountdownStarted, delay=delay, version=version)
            times.activate_at = now + delay
            times.ask_at = None

    def _upgrade_end_response(self, item: OtaIn) -> EndOrder | float | None:
        """C-14 … C-17: what the response orders — hold, or activate after a delay in seconds — or None when it
        is not for us."""
        cmd = item.frame.command
        ref = self.state.held[-1].ref
        ours = (
            cmd.manufacturer_code in (ref.manufacturer_code, frames.WILDCARD_MANUFACTURER)
            and cmd.image_type in (ref.image_type, frames.WILDCARD_IMAGE_TYPE)
            and cmd.file_version in (ref.file_version, frames.WILDCARD_FILE_VERSION)
        )
        if not ours and DeviceFault.ACCEPT_FOREIGN_UPGRADE_END not in self.faults:
            self.reject(
                item, OtaCommand.UPGRADE_END_RESPONSE, Status.INVALID_VALUE, "Upgrade End Response for another image"
            )
            return None
        current, upgrade = int(cmd.current_time), int(cmd.upgrade_time)
        if upgrade == frames.UPGRADE_TIME_WAIT:
            return EndOrder.WAIT
        out_of_band = self.profile.upgrade_activation_policy == UpgradeActivationPolicy.Out_of_band_allowed
        if out_of_band and DeviceFault.IGNORE_ACTIVATION_POLICY not in self.faults:
            self.reject(item, OtaCommand.UPGRADE_END_RESPONSE, Status.NOT_AUTHORIZED, "activation is out of band only")
            return EndOrder.EXTERNAL
        if DeviceFault.IGNORE_UPGRADE_TIME in self.faults:
            return 0.0
        if current == 0:
            return float(upgrade)
        return float(max(0, upgrade - current))

    # -- activation (C-21, C-22, C-23) --------------------------------------------------------------

    def activate_held(self) -> tuple[int, bool]:
        """Reboot into the held image. Returns (version now running, success)."""
        state = self.state
        old, new, ok = firmware.activate(
            state,
            self.profile.image_type,
            fails=self.profile.activation_fails,
            keep_image_type=DeviceFault.KEEP_IMAGE_TYPE_AFTER_UPGRADE in self.faults,
        )
        self.save(partial=True, held=True, running=ok)
        if DeviceFault.NO_ACTIVATION_ALERT not in self.faults:
            self.host.emit(
                events.Activated,
                old_version=old,
                new_version=new,
                success=ok,
                alert_code=AlertCode.FIRMWARE_VERSION if self.profile.kind == "ppmid" else None,
                activate_image=ActivateImageResult.SUCCESS if ok else ActivateImageResult.FAILURE,
            )
        if ok:
            self._rebooted = True
            self.host.announce()
        self.inbox.put(WAKE)
        return new, ok

    def activate_firmware(self, image_hash: bytes, at: datetime | None) -> events.ActivationReply:
        """Activate Firmware (GBCS CS06): now, or accepted now and executed at `at`."""
        if at is not None and DeviceFault.ACTIVATE_FUTURE_DATED_NOW not in self.faults:
            when = self.host.clock.loop_time_at(at)
            if when > self.loop.time():
                handle = self.loop.call_at(when, self._future_activation, image_hash)
                self._scheduled.add(handle)
                return events.ActivationReply(True, None, self.state.running_version)
        code, version = self._execute_activation(image_hash)
        self.host.emit(
            events.ActivationOutcome, response_code=code, version=version, future_dated=False, alert_code=None
        )
        return events.ActivationReply(False, code, version)

    def _future_activation(self, image_hash: bytes) -> None:
        self._scheduled = {h for h in self._scheduled if not h.cancelled() and h.when() > self.loop.time()}
        code, version = self._execute_activation(image_hash)
        alert = (
            AlertCode.FUTURE_DATED_COMMAND_SUCCESS
            if code == ActivationResponse.SUCCESS
            else AlertCode.FUTURE_DATED_COMMAND_FAILURE
        )
        self.host.emit(
            events.ActivationOutcome, response_code=code, version=version, future_dated=True, alert_code=alert
        )

    def _execute_activation(self, image_hash: bytes) -> tuple[ActivationResponse, int]:
        """GBCS §11.5 processing: no held image ⇒ noImageHeld; hash of the held Manufacturer Image differs ⇒
        hashMismatch; the image does not come up ⇒ activationFailure."""
        state = self.state
        main = next((h for h in state.held if h.ref.image_type == self.profile.image_type), None)
        if main is None:
            if DeviceFault.ACTIVATE_WITHOUT_IMAGE in self.faults:
                return ActivationResponse.SUCCESS, state.running_version
            return ActivationResponse.NO_IMAGE_HELD, state.running_version
        if DeviceFault.SKIP_HASH_CHECK not in self.faults and firmware.manufacturer_image_hash(main.data) != image_hash:
            return ActivationResponse.HASH_MISMATCH, state.running_version
        version, ok = self.activate_held()
        return (ActivationResponse.SUCCESS if ok else ActivationResponse.ACTIVATION_FAILURE), version

    def close(self) -> None:
        """Stop timers that live outside the coroutine."""
        self.inbox.close()
        for handle in self._scheduled:
            handle.cancel()
        self._scheduled.clear()
