"""The OTA Upgrade client state machine (SPEC.md §6.1) of an emulated PPMID or HCALCS.

One coroutine per device walks DISCOVER → QUERY → DOWNLOAD → VERIFY → WAIT_END_RSP → APPLY; the device feeds it
the frames the server sends (`deliver`) and it answers through its `Host`. Every rule carries the SPEC.md case it
implements (C-xx) and every deliberate deviation a profile can ask for (`DeviceFault`) is consulted at
the one place the conforming behaviour lives, so a conformance check can be proved to fail on it.

The block loop is the hot path of the whole emulator: one future and one timer per block, the request packed by
`blocks.py`, the data written into one preallocated bytearray, state saved only every few KiB or seconds.

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
import logging
import math
import random
from collections import deque
from datetime import datetime
from typing import Any, Protocol

import zigpy.types as t
from zigpy.zcl import foundation
from zigpy.zcl.clusters.general import Ota, UpgradeActivationPolicy, UpgradeTimeoutPolicy
from zigpy.zdo.types import ZDOCmd

from emulator.clock import Clock
from emulator.device import events, firmware, zdo
from emulator.device.faults import DeviceFault
from emulator.device.state import DeviceState, ImageRef, StateStore
from emulator.gb.codes import ActivateImageResult, ActivationResponse, AlertCode
from emulator.ota import frames
from emulator.ota.blocks import encode_block_request
from emulator.ota.frames import OtaCommand
from emulator.profiles import DeviceProfile

LOGGER = logging.getLogger(__name__)

Status = foundation.Status

OTA_CLUSTER = frames.CLUSTER_ID
COORDINATOR = 0x0000

# SPEC.md §6.4 / §10 (Silicon Labs defaults) where no profile key exists.
DISCOVERY_RETRY = 600.0  # Server Discovery Delay: 10 min
WAIT_FOR_DATA_INVALID = 300.0  # RequestTime < CurrentTime: wait 5 min
MAX_WAIT = 3600.0  # longest wait honoured per timer: 60 min
UPGRADE_END_MISS_RETRY = 600.0  # Run Upgrade Request Delay: 10 min
NO_IMAGE_LIMIT = 3  # ZCL7 §11.13.6.5.2: three Default Responses 0x98 end a download
JOIN_POLL_WINDOW = 30.0  # a sleepy device fast-polls this long after joining, so the interview reaches it
ANNOUNCE_SPREAD = 1.0  # Device_annce goes out up to this long after joining (s)
# Save the partial download after this much progress (bytes) or protocol time (s), whichever comes first.
SAVE_EVERY_BYTES = 8192
SAVE_EVERY_SECONDS = 10.0

# ImageUpgradeStatus (SPEC.md §3.2)
UpgradeStatus = Ota.ImageUpgradeStatus
_HOLDING = (UpgradeStatus.Waiting_to_upgrade, UpgradeStatus.Waiting_to_Upgrade_via_External_Event)

Item = tuple[Any, ...]


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
        self.phase = "stopped"
        self._loop = asyncio.get_running_loop()
        self._items: deque[Item] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._query_requested = False
        self._rebooted = False
        self._retry_download = False
        self._zcl_tsn = rng.randrange(256)
        self._zdo_tsn = rng.randrange(256)
        self._last_request_at = -math.inf
        self._saved_offset = 0
        self._saved_at = 0.0
        self._poll_handle: asyncio.TimerHandle | None = None
        self._poll_until = 0.0
        self._awake_until = 0.0
        self._scheduled: set[asyncio.TimerHandle] = set()
        self._period_scale = 0.001 if self.profile.block_period_unit == "ms" else 1.0

    # == frames in ===================================================================================

    def deliver(self, item: Item) -> None:
        """Queue something for the state machine: ("zdo", cluster, data), ("block", fc, tsn, mfr, type,
        version, offset, data), ("ota", frame, broadcast) or ("wake",)."""
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

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
            self.deliver(("wake",))

    def _judge_notify(self, cmd: Any, payload_type: int, jitter: int, broadcast: bool) -> tuple[bool, str]:
        if self.phase not in ("idle", "holding", "starting", "discovery"):
            return False, f"busy ({self.phase})"
        queried, reason = self._judge_notify_fields(cmd, payload_type, jitter, broadcast)
        if queried and self.phase in ("starting", "discovery"):
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

    # == waiting =====================================================================================

    async def _next(self, within: float, *, expect: bool = False) -> Item | None:
        """The next queued item, or None after `within` seconds. `expect` marks a wait for an answer: a sleepy
        device polls its parent meanwhile.

        One lazily re-armed timer serves all waits: a block answered in milliseconds leaves the timer in place
        for the next wait instead of cancelling it, so the loop's timer heap does not churn once per block."""
        items = self._items
        if items:
            return items.popleft()
        if within <= 0:
            return None
        loop = self._loop
        waiter = loop.create_future()
        self._waiter = waiter
        self._deadline = loop.time() + within
        if within != math.inf and (self._timer is None or self._timer.when() > self._deadline):
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(self._deadline, self._on_timer)
        if expect and self.profile.sleepy:
            self._poll_for(within)
        try:
            await waiter
        finally:
            self._waiter = None
            if expect:
                self._poll_until = max(loop.time(), self._awake_until)
        return items.popleft() if items else None

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done() or self._deadline == math.inf:
            return
        if self._loop.time() >= self._deadline:
            waiter.set_result(None)
        else:
            self._timer = self._loop.call_at(self._deadline, self._on_timer)

    async def _pause(self, seconds: float) -> None:
        """Sleep, discarding whatever arrives meanwhile (it is stale by the time the pause ends)."""
        deadline = self._loop.time() + seconds
        while (left := deadline - self._loop.time()) > 0:
            await self._next(left)

    def stay_awake(self, seconds: float) -> None:
        """Poll for `seconds` whatever the state machine waits for (a sleepy device right after joining)."""
        self._awake_until = self._loop.time() + seconds
        if self.profile.sleepy:
            self._poll_for(seconds)

    def _poll_for(self, seconds: float) -> None:
        self._poll_until = max(self._poll_until, self._loop.time() + seconds)
        if self._poll_handle is None:
            self._poll_handle = self._loop.call_later(self.profile.poll_period, self._poll_tick)

    def _poll_tick(self) -> None:
        self._poll_handle = None
        if self._loop.time() > self._poll_until:
            return
        self.host.poll()
        self._poll_handle = self._loop.call_later(self.profile.poll_period, self._poll_tick)

    async def _await_ota(self, names: frozenset[str], request_id: int, within: float) -> frames.Frame | None:
        """The first OTA frame named in `names`, or Default Response to command `request_id`, within `within` s."""
        deadline = self._loop.time() + within
        while (left := deadline - self._loop.time()) > 0:
            item = await self._next(left, expect=True)
            if item is None:
                return None
            if item[0] != "ota":
                continue
            frame = item[1]
            if frame.name in names or (frame.name == "Default_Response" and frame.command.command_id == request_id):
                return frame
        return None

    async def _await_zdo(self, cluster_id: int, tsn: int, within: float) -> bytes | None:
        deadline = self._loop.time() + within
        while (left := deadline - self._loop.time()) > 0:
            item = await self._next(left, expect=True)
            if item is None:
                return None
            if item[0] == "zdo" and item[1] == cluster_id and item[2][:1] == bytes([tsn]):
                return item[2]
        return None

    # == small helpers ===============================================================================

    def _tsn(self) -> int:
        self._zcl_tsn = (self._zcl_tsn + 1) & 0xFF
        return self._zcl_tsn

    def _zdo_seq(self) -> int:
        self._zdo_tsn = (self._zdo_tsn + 1) & 0xFF
        return self._zdo_tsn

    def save(self, *, partial: bool = False, held: bool = False, running: bool = False) -> None:
        if self.store is not None:
            self.store.save(self.state, partial=partial, held=held, running=running)
        self._saved_offset = self.state.file_offset
        self._saved_at = self._loop.time()

    def _reject(self, item: Item, command_id: int, status: Status, reason: str) -> None:
        """An error Default Response to a server frame (ZCL: errors are reported even with DDR set; never to a
        broadcast)."""
        if item[0] == "block":
            tsn, broadcast = item[2], False
        else:
            tsn, broadcast = item[1].tsn, item[2]
        self.host.emit(
            events.FrameRejected, cluster_id=OTA_CLUSTER, command_id=command_id, status=int(status), reason=reason
        )
        if not broadcast:
            self.host.send_ota(
                frames.default_response(tsn=tsn, command_id=command_id, status=status, direction=frames.C2S), tsn
            )

    def _send_upgrade_end(self, status: Status, ref: ImageRef) -> None:
        tsn = self._tsn()
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
        # Joined devices announce within a moment of each other, not all in the same instant: a thousand
        # simultaneous Device_annce broadcasts would put a million deliveries on the air at once.
        self.phase = "starting"
        await self._pause(self.rng.uniform(0.0, ANNOUNCE_SPREAD))
        self.host.announce()
        await self._discover()
        jitter = self.rng.uniform(0.0, self.profile.query_start_jitter)
        state = self.state
        if state.download is not None:
            self.phase = "resuming"
            await self._pause(jitter)
            offset = 0 if DeviceFault.RESTART_FROM_ZERO in self.faults else state.file_offset
            await self._download(state.download, offset)
            next_query = self._after_cycle()
        elif state.held:
            self.phase = "holding"
            await self._pause(jitter)
            await self._after_verified(announce_more=False)
            next_query = self._after_cycle()
        else:
            next_query = self._loop.time() + jitter
        while True:
            left = next_query - self._loop.time()
            if self._query_requested or left <= 0:
                self._query_requested = False
                next_query = await self._query_cycle()
                continue
            self.phase = "idle"
            await self._next(left)
            self.phase = "waking"

    def _after_cycle(self) -> float:
        """When to query next: at once for another image (REQUIRE_MORE_IMAGE), after the start jitter when the
        device rebooted into new firmware, else after the query interval."""
        now = self._loop.time()
        if self._retry_download:
            self._retry_download = False
            return now + self.profile.download_retry
        if self._rebooted:
            self._rebooted = False
            return now + self.rng.uniform(0.0, self.profile.query_start_jitter)
        if self._pending_types():
            self._query_requested = True
        return now + self.profile.query_interval

    async def _query_cycle(self) -> float:
        outcome = await self._query()
        if isinstance(outcome, ImageRef):
            state = self.state
            restart = DeviceFault.RESTART_FROM_ZERO in self.faults
            resume = state.download == outcome and state.partial is not None and not restart
            await self._download(outcome, state.file_offset if resume else 0)
        elif outcome in ("not_authorized", "timeout"):
            await self._discover()
        return self._after_cycle()

    # -- discovery (SPEC.md §1.2, §6.1 DISCOVER) -------------------------------------------------------

    async def _discover(self) -> None:
        while True:
            self.phase = "discovery"
            reason = await self._try_discover()
            if reason is None:
                return
            self.host.emit(events.DiscoveryFailed, reason=reason, retry_in=DISCOVERY_RETRY)
            await self._pause(DISCOVERY_RETRY)

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
        ieee = None
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
                ieee = values[1]
                break
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

    # -- query (SPEC.md §2.2, §2.3; C-04, C-05) ---------------------------------------------------------

    def _query_type(self) -> int:
        pending = self._pending_types()
        return pending[0] if pending else self.profile.image_type

    async def _query(self) -> ImageRef | str:
        self.phase = "query"
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
            tsn = self._tsn()
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
            return "timeout"
        status = response.command.status
        if response.name == "query_next_image_response" and status == Status.SUCCESS:
            return self._judge_offer(response.command, image_type)
        self.host.emit(events.QueryAnswered, status=int(status))
        return "not_authorized" if status == Status.NOT_AUTHORIZED else "no_image"

    def _judge_offer(self, cmd: Any, image_type: int) -> ImageRef | str:
        ref = ImageRef(int(cmd.manufacturer_code), int(cmd.image_type), int(cmd.file_version), int(cmd.image_size))
        reason = ""
        same = ref.file_version == self.state.running_version or any(
            h.ref.image_type == ref.image_type and h.ref.file_version == ref.file_version for h in self.state.held
        )
        if same and DeviceFault.ACCEPT_SAME_VERSION not in self.faults:
            reason = f"version 0x{ref.file_version:08X} is already running or downloaded"
        elif ref.file_version < self.state.running_version and not self.profile.allow_downgrade:
            reason = (
                f"version 0x{ref.file_version:08X} is lower than the running 0x{self.state.running_version:08X} "
                "(anti-rollback; allow_downgrade = true accepts it)"
            )
        elif ref.manufacturer_code != self.profile.manufacturer_code:
            reason = f"manufacturer 0x{ref.manufacturer_code:04X} is not ours"
        elif ref.image_type != image_type:
            reason = f"image type 0x{ref.image_type:04X}, asked for 0x{image_type:04X}"
        elif ref.image_size < firmware.ota_image.FIXED_HEADER_LENGTH:
            reason = f"image size {ref.image_size} cannot hold an OTA header"
        self.host.emit(
            events.ImageOffered,
            manufacturer_code=ref.manufacturer_code,
            image_type=ref.image_type,
            file_version=ref.file_version,
            image_size=ref.image_size,
            accepted=not reason,
            reason=reason or "accepted",
        )
        return "no_image" if reason else ref

    # -- download (SPEC.md §2.4–§2.6; C-06 … C-11) ------------------------------------------------------

    async def _download(self, ref: ImageRef, offset: int) -> None:
        self.phase = "download"
        state = self.state
        firmware.start_download(state, ref, offset)
        self.save(partial=True)
        self.host.emit(
            events.DownloadStarted,
            image_type=ref.image_type,
            version=ref.file_version,
            size=ref.image_size,
            offset=offset,
        )
        failure = await self._fetch(ref)
        if failure is not None:
            reason, send_end, resumable = failure
            if send_end:
                self._send_upgrade_end(Status.ABORT, ref)
            self.host.emit(events.DownloadAborted, reason=reason, offset=state.file_offset, upgrade_end_sent=send_end)
            if resumable:
                # The link failed, not the image: keep what arrived and try again soon (SPEC.md §2.7 "reinitiate
                # the download process again at a later time"; the client owns FileOffset, §6.1).
                firmware.suspend(state)
                self._retry_download = True
            else:
                firmware.discard(state)
            self.save(partial=True, held=True)
            return
        state.image_upgrade_status = UpgradeStatus.Download_complete
        self.phase = "verify"
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
            return
        firmware.hold(state, verdict, data)
        self.save(partial=True, held=True)
        await self._after_verified(announce_more=True)

    async def _fetch(self, ref: ImageRef) -> tuple[str, bool, bool] | None:
        """Fill the download buffer. None when complete; else (reason, whether to send Upgrade End ABORT, whether
        the bytes received so far are worth keeping for a later attempt)."""
        state = self.state
        profile = self.profile
        faults = self.faults
        buf = state.partial
        assert buf is not None
        size = ref.image_size
        host = self.host
        loop = self._loop
        mfr, itype, version = ref.manufacturer_code, ref.image_type, ref.file_version
        max_size = profile.max_data_size
        failures = 0
        no_image = 0
        got: dict[int, int] = {}  # blocks stored beyond FileOffset (page mode): offset -> length
        gap_end = 0  # after a page timed out, fetch what is missing below here with block requests
        while state.file_offset < size:
            offset = state.file_offset
            paging = profile.page_requests and not state.page_fallback and offset >= gap_end
            period = state.minimum_block_period * self._period_scale
            if period and DeviceFault.IGNORE_MIN_BLOCK_PERIOD not in faults:
                wait = self._last_request_at + period - loop.time()
                if wait > 0:
                    await self._pause(wait)
            tsn = self._tsn()
            if paging:
                request_id = OtaCommand.IMAGE_PAGE
                window_end = min(offset + profile.page_size, size)
                got.clear()
                data = frames.encode(
                    "image_page",
                    tsn=tsn,
                    field_control=0,
                    manufacturer_code=mfr,
                    image_type=itype,
                    file_version=version,
                    file_offset=offset,
                    maximum_data_size=max_size,
                    page_size=profile.page_size,
                    response_spacing=profile.response_spacing,
                )
            else:
                request_id = OtaCommand.IMAGE_BLOCK
                window_end = size
                limit = max_size
                if got:
                    ahead = [k for k in got if k > offset]
                    if ahead:
                        limit = min(limit, min(ahead) - offset)
                data = encode_block_request(
                    tsn,
                    mfr,
                    itype,
                    version,
                    offset,
                    limit,
                    state.minimum_block_period if profile.send_min_block_period else None,
                )
            host.send_ota(data, tsn)
            now = self._last_request_at = loop.time()
            deadline = now + profile.response_timeout
            page_progress = False
            verdict = "timeout"
            while True:
                item = await self._next(deadline - loop.time(), expect=True)
                if item is None:
                    break
                kind = item[0]
                if kind == "block":
                    _, _fc, _tsn, b_mfr, b_type, b_version, b_offset, b_data = item
                elif kind == "ota" and item[1].name == "image_block_response":
                    cmd = item[1].command
                    status = cmd.status
                    if status == Status.WAIT_FOR_DATA:
                        await self._wait_for_data(cmd)
                        verdict = "retry"
                        break
                    if status != Status.SUCCESS:
                        if DeviceFault.CONTINUE_AFTER_ABORT in faults:
                            verdict = "failed"
                            break
                        return (
                            f"server ended the transfer (Image Block Response status 0x{int(status):02X})",
                            False,
                            False,
                        )
                    b_mfr, b_type, b_version = cmd.manufacturer_code, cmd.image_type, cmd.file_version
                    b_offset, b_data = cmd.file_offset, cmd.image_data
                elif kind == "ota" and item[1].name == "Default_Response" and item[1].command.command_id == request_id:
                    status = item[1].command.status
                    if status == Status.NO_IMAGE_AVAILABLE and request_id == OtaCommand.IMAGE_BLOCK:
                        no_image += 1
                        if DeviceFault.IGNORE_NO_IMAGE_DEFAULT_RESPONSE in faults:
                            verdict = "failed"
                        elif no_image >= NO_IMAGE_LIMIT:
                            return "three Default Responses NO_IMAGE_AVAILABLE to Image Block Requests", True, False
                        else:
                            verdict = "retry"
                        break
                    if status == Status.UNSUP_CLUSTER_COMMAND and request_id == OtaCommand.IMAGE_PAGE:
                        if DeviceFault.NO_PAGE_FALLBACK in faults:
                            verdict = "failed"
                        else:
                            state.page_fallback = True
                            self.save()
                            host.emit(events.PageFallback)
                            verdict = "retry"
                        break
                    if status != Status.SUCCESS:
                        verdict = "failed"
                        break
                    continue
                else:
                    continue
                # A SUCCESS block (SPEC.md §2.6 client checks, C-07).
                if b_mfr != mfr or b_type != itype or b_version != version:
                    self._reject(item, 0x05, Status.INVALID_VALUE, "block for another image")
                    continue
                length = len(b_data)
                if not 0 < length <= max_size or b_offset + length > size:
                    self._reject(item, 0x05, Status.INVALID_VALUE, f"block of {length} bytes at {b_offset}")
                    continue
                if b_offset != state.file_offset:
                    if DeviceFault.IGNORE_OFFSET in faults and not paging:
                        buf[b_offset : b_offset + length] = b_data
                        state.file_offset = b_offset + length
                        verdict = "stored"
                        break
                    if not paging or b_offset < state.file_offset or b_offset >= window_end or b_offset in got:
                        continue
                    buf[b_offset : b_offset + length] = b_data
                    got[b_offset] = length
                    page_progress = True
                    deadline = loop.time() + profile.response_timeout
                    continue
                buf[b_offset : b_offset + length] = b_data
                state.file_offset = b_offset + length
                if DeviceFault.ASSUME_FULL_BLOCKS in faults and not paging:
                    state.file_offset = min(size, b_offset + max_size)
                if got:
                    while (ahead_len := got.pop(state.file_offset, 0)) > 0:
                        state.file_offset += ahead_len
                host.emit(events.Progress, offset=state.file_offset, size=size)
                if not paging or state.file_offset >= window_end:
                    verdict = "stored"
                    break
                page_progress = True
                deadline = loop.time() + profile.response_timeout
            if verdict == "stored":
                failures = no_image = 0
                if (
                    state.file_offset - self._saved_offset >= SAVE_EVERY_BYTES
                    or loop.time() - self._saved_at >= SAVE_EVERY_SECONDS
                ):
                    self.save(partial=True)
                continue
            if verdict == "retry":
                continue
            if verdict == "timeout" and paging and (page_progress or state.file_offset > offset):
                gap_end = window_end  # C-page: fetch the missing blocks of this page one by one
                failures = 0
                continue
            if verdict == "timeout" and DeviceFault.NO_RESEND in faults:
                return "no answer to the request (no resend)", True, True
            failures += 1
            if failures > profile.max_resends:
                return f"no usable answer after {profile.max_resends} resends", True, True
        return None

    async def _wait_for_data(self, cmd: Any) -> None:
        """C-08: WAIT_FOR_DATA (SPEC.md §2.6)."""
        state = self.state
        if cmd.minimum_block_period is not None:
            state.minimum_block_period = int(cmd.minimum_block_period)
        current, request = int(cmd.current_time), int(cmd.request_time)
        if request < current:
            delay = WAIT_FOR_DATA_INVALID
        elif request == current:
            delay = state.minimum_block_period * self._period_scale
        else:
            delay = float(request - current)
        delay = min(delay, MAX_WAIT)
        if DeviceFault.IGNORE_WAIT_FOR_DATA in self.faults:
            delay = 0.0
        self.host.emit(events.WaitingForData, delay=delay, minimum_block_period=state.minimum_block_period)
        if delay > 0:
            await self._pause(delay)

    # -- after the download (SPEC.md §2.7, §2.8; C-12 … C-19) -------------------------------------------

    async def _after_verified(self, *, announce_more: bool) -> None:
        pending = self._pending_types()
        if pending:
            self.state.image_upgrade_status = UpgradeStatus.Wait_for_more
            self.save()
            if announce_more:
                self._send_upgrade_end(Status.REQUIRE_MORE_IMAGE, self.state.held[-1].ref)
            return
        await self._end_phase()

    async def _end_phase(self) -> None:
        """Upgrade End Request SUCCESS, then obey the Upgrade End Response (now, later, wait) — or, with no
        response, retry and finally apply per UpgradeTimeoutPolicy (C-18)."""
        self.phase = "end"
        state = self.state
        profile = self.profile
        loop = self._loop
        misses = 0
        ask_at: float | None = loop.time()
        activate_at: float | None = None
        reply_by: float | None = None
        while state.held:
            now = loop.time()
            if activate_at is not None and now >= activate_at:
                self.activate_held()
                return
            if ask_at is not None and now >= ask_at:
                self._send_upgrade_end(Status.SUCCESS, state.held[-1].ref)
                ask_at = None
                reply_by = now + profile.response_timeout
            deadline = min((d for d in (activate_at, ask_at, reply_by) if d is not None), default=math.inf)
            holding = reply_by is None and state.image_upgrade_status in _HOLDING
            self.phase = "holding" if holding else "end"
            item = await self._next(deadline - now, expect=reply_by is not None)
            if self._query_requested and self.phase == "holding":
                # A notify while the image is held: query, and replace the held image if a new one is offered.
                self._query_requested = False
                offer = await self._query()
                if isinstance(offer, ImageRef):
                    await self._download(offer, 0)
                    return
                continue
            if item is None:
                if reply_by is not None and loop.time() >= reply_by:
                    reply_by = None
                    misses += 1
                    if (
                        misses >= profile.upgrade_wait_threshold
                        and (
                            profile.upgrade_timeout_policy == UpgradeTimeoutPolicy.Apply_after_timeout
                            or DeviceFault.IGNORE_TIMEOUT_POLICY in self.faults
                        )
                        and profile.upgrade_activation_policy == UpgradeActivationPolicy.OTA_server_allowed
                    ):
                        activate_at = loop.time()
                    else:
                        ask_at = loop.time() + min(profile.upgrade_end_retry, UPGRADE_END_MISS_RETRY)
                continue
            if item[0] != "ota" or not state.held:
                continue
            frame = item[1]
            if (
                frame.name == "Default_Response"
                and frame.command.command_id == OtaCommand.UPGRADE_END
                and reply_by is not None
            ):
                if frame.command.status == Status.SUCCESS:
                    continue
                self.host.emit(
                    events.DownloadAborted,
                    reason=f"server refused Upgrade End (Default Response 0x{int(frame.command.status):02X})",
                    offset=state.file_offset,
                    upgrade_end_sent=True,
                )
                firmware.discard(state)
                self.save(partial=True, held=True)
                return
            if frame.name != "upgrade_end_response":
                continue
            decision = self._upgrade_end_response(item)
            if decision is None:
                continue
            reply_by = None
            misses = 0
            version = state.held[-1].ref.file_version
            if decision == "wait":
                state.image_upgrade_status = UpgradeStatus.Waiting_to_upgrade
                self.save()
                self.host.emit(events.WaitingToUpgrade, version=version, external=False)
                if DeviceFault.ACTIVATE_WHILE_WAITING in self.faults:
                    activate_at = loop.time()
                else:
                    activate_at = None
                    ask_at = loop.time() + min(profile.upgrade_end_retry, MAX_WAIT)
            elif decision == "external":
                state.image_upgrade_status = UpgradeStatus.Waiting_to_Upgrade_via_External_Event
                self.save()
                self.host.emit(events.WaitingToUpgrade, version=version, external=True)
                activate_at = ask_at = None
            else:
                delay = float(decision)
                state.image_upgrade_status = UpgradeStatus.Count_down
                self.save()
                self.host.emit(events.CountdownStarted, delay=delay, version=version)
                activate_at = loop.time() + delay
                ask_at = None

    def _upgrade_end_response(self, item: Item) -> str | float | None:
        """C-14 … C-17: "wait", "external", a delay in seconds, or None when the response is not for us."""
        cmd = item[1].command
        ref = self.state.held[-1].ref
        ours = (
            cmd.manufacturer_code in (ref.manufacturer_code, frames.WILDCARD_MANUFACTURER)
            and cmd.image_type in (ref.image_type, frames.WILDCARD_IMAGE_TYPE)
            and cmd.file_version in (ref.file_version, frames.WILDCARD_FILE_VERSION)
        )
        if not ours and DeviceFault.ACCEPT_FOREIGN_UPGRADE_END not in self.faults:
            self._reject(item, 0x07, Status.INVALID_VALUE, "Upgrade End Response for another image")
            return None
        current, upgrade = int(cmd.current_time), int(cmd.upgrade_time)
        if upgrade == frames.UPGRADE_TIME_WAIT:
            return "wait"
        out_of_band = self.profile.upgrade_activation_policy == UpgradeActivationPolicy.Out_of_band_allowed
        if out_of_band and DeviceFault.IGNORE_ACTIVATION_POLICY not in self.faults:
            self._reject(item, 0x07, Status.NOT_AUTHORIZED, "activation is out of band only")
            return "external"
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
        self.deliver(("wake",))
        return new, ok

    def activate_firmware(self, image_hash: bytes, at: datetime | None) -> events.ActivationReply:
        """Activate Firmware (GBCS CS06): now, or accepted now and executed at `at`."""
        if at is not None and DeviceFault.ACTIVATE_FUTURE_DATED_NOW not in self.faults:
            when = self.host.clock.loop_time_at(at)
            if when > self._loop.time():
                handle = self._loop.call_at(when, self._future_activation, image_hash)
                self._scheduled.add(handle)
                return events.ActivationReply(True, None, self.state.running_version)
        code, version = self._execute_activation(image_hash)
        self.host.emit(
            events.ActivationOutcome, response_code=code, version=version, future_dated=False, alert_code=None
        )
        return events.ActivationReply(False, code, version)

    def _future_activation(self, image_hash: bytes) -> None:
        self._scheduled = {h for h in self._scheduled if not h.cancelled() and h.when() > self._loop.time()}
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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._poll_handle is not None:
            self._poll_handle.cancel()
            self._poll_handle = None
        for handle in self._scheduled:
            handle.cancel()
        self._scheduled.clear()
