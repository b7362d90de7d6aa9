"""The block loop of an OTA download (SPEC.md §2.4–§2.6; C-06 … C-11): ask for the next piece, judge the answer,
count what went wrong, until the image is in or the download has failed.

It is the hot path of the whole emulator — one request, one wait and one answer per block, for thousands of
devices — so it is written for speed where that costs little clarity: the request is packed by `ota.blocks`,
the data written into one preallocated bytearray, the state saved only every few KiB or seconds, the fault
switches read once per download (an enum member lookup costs about 0.2 µs), and the answer kinds are module
constants compared by identity.

Page mode (Image Page Request, SPEC.md §2.5) asks for a whole page at once; blocks of the page that arrive ahead
of FileOffset are kept, and when a page times out after some progress, the missing blocks below its end are
fetched one by one with Image Block Requests ("C-page").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zigpy.zcl import foundation

from emulator.device import events
from emulator.device.faults import DeviceFault
from emulator.device.inbound import BlockIn, OtaIn
from emulator.device.state import ImageRef
from emulator.ota import frames
from emulator.ota.blocks import encode_block_request
from emulator.ota.frames import OtaCommand

if TYPE_CHECKING:
    from emulator.device.client import OtaClient

Status = foundation.Status

WAIT_FOR_DATA_INVALID = 300.0  # RequestTime < CurrentTime: wait 5 min (SPEC.md §10, Silicon Labs)
MAX_WAIT = 3600.0  # longest wait honoured per timer: 60 min
NO_IMAGE_LIMIT = 3  # ZCL7 §11.13.6.5.2: three Default Responses 0x98 end a download
# Save the partial download after this much progress (bytes) or protocol time (s), whichever comes first.
SAVE_EVERY_BYTES = 8192
SAVE_EVERY_SECONDS = 10.0

# Plain ints, compared per answer (an IntEnum member is looked up through a descriptor).
_IMAGE_BLOCK = int(OtaCommand.IMAGE_BLOCK)
_IMAGE_PAGE = int(OtaCommand.IMAGE_PAGE)
_IMAGE_BLOCK_RESPONSE = int(OtaCommand.IMAGE_BLOCK_RESPONSE)


class Answer(enum.Enum):
    """How one request fared."""

    STORED = "stored"  # the data asked for is in: the block, or the whole page
    RETRY = "retry"  # ask again at once, not counted as a failure (after WAIT_FOR_DATA, a 0x98, a page fallback)
    FAILED = "failed"  # an answer that counts as a failed attempt
    TIMEOUT = "timeout"  # no usable answer in time


_STORED = Answer.STORED
_RETRY = Answer.RETRY
_FAILED = Answer.FAILED
_TIMEOUT = Answer.TIMEOUT


@dataclass(frozen=True, slots=True)
class DownloadFailure:
    """Why a download ended without the whole image."""

    reason: str
    send_abort: bool  # tell the server with Upgrade End ABORT
    resumable: bool  # the link failed, not the image: the bytes so far are worth keeping for a later attempt


class BlockLoop:
    """One download of `ref` into the state's partial buffer, from its FileOffset; `run` fills it."""

    __slots__ = (
        "ahead",
        "assume_full_blocks",
        "buf",
        "client",
        "continue_after_abort",
        "deadline",
        "failures",
        "gap_end",
        "host",
        "ignore_min_block_period",
        "ignore_no_image",
        "ignore_offset",
        "ignore_wait_for_data",
        "inbox",
        "loop",
        "max_resends",
        "max_size",
        "no_image",
        "no_page_fallback",
        "no_resend",
        "offset",
        "page_requests",
        "page_size",
        "paging",
        "progress",
        "ref",
        "request_id",
        "response_spacing",
        "send_period",
        "size",
        "state",
        "timeout",
        "window_end",
    )

    def __init__(self, client: OtaClient, ref: ImageRef) -> None:
        self.client = client
        self.inbox = client.inbox
        self.loop = client.loop
        self.host = client.host
        self.state = state = client.state
        assert state.partial is not None, "start_download prepares the buffer"
        self.buf = state.partial
        self.ref = ref
        self.size = ref.image_size
        profile = client.profile
        self.max_size = profile.max_data_size
        self.timeout = profile.response_timeout
        self.max_resends = profile.max_resends
        self.page_requests = profile.page_requests
        self.page_size = profile.page_size
        self.response_spacing = profile.response_spacing
        self.send_period = profile.send_min_block_period
        faults = profile.faults
        self.ignore_offset = DeviceFault.IGNORE_OFFSET in faults
        self.ignore_wait_for_data = DeviceFault.IGNORE_WAIT_FOR_DATA in faults
        self.ignore_min_block_period = DeviceFault.IGNORE_MIN_BLOCK_PERIOD in faults
        self.continue_after_abort = DeviceFault.CONTINUE_AFTER_ABORT in faults
        self.ignore_no_image = DeviceFault.IGNORE_NO_IMAGE_DEFAULT_RESPONSE in faults
        self.no_resend = DeviceFault.NO_RESEND in faults
        self.no_page_fallback = DeviceFault.NO_PAGE_FALLBACK in faults
        self.assume_full_blocks = DeviceFault.ASSUME_FULL_BLOCKS in faults
        self.failures = 0  # unusable answers to the current piece, in a row
        self.no_image = 0  # Default Responses 0x98 in a row (C-10)
        self.ahead: dict[int, int] = {}  # page mode: blocks stored beyond FileOffset, offset -> length
        self.gap_end = 0  # after a page timed out, fetch what is missing below here with block requests
        # The request in flight: FileOffset when it went out, page or block, what a Default Response would name,
        # where its data ends, when its answer is due, and whether a page has brought anything yet.
        self.offset = 0
        self.paging = False
        self.request_id = _IMAGE_BLOCK
        self.window_end = 0
        self.deadline = 0.0
        self.progress = False

    async def run(self) -> DownloadFailure | None:
        """None once the image is in; else why not."""
        state = self.state
        size = self.size
        inbox = self.inbox
        loop = self.loop
        client = self.client
        while state.file_offset < size:
            if state.minimum_block_period and not self.ignore_min_block_period:
                await self._keep_period()
            self._request()
            answer: Answer | DownloadFailure | None = None
            while answer is None:  # what answers the request in flight
                item = await inbox.next(self.deadline - loop.time(), expect=True)
                if item is None:
                    answer = _TIMEOUT
                elif type(item) is BlockIn:
                    answer = self._block(
                        item, item.manufacturer_code, item.image_type, item.file_version, item.file_offset, item.data
                    )
                elif type(item) is OtaIn:
                    answer = await self._frame(item)
            if answer is _STORED:
                self.failures = self.no_image = 0
                if (
                    state.file_offset - client.saved_offset >= SAVE_EVERY_BYTES
                    or loop.time() - client.saved_at >= SAVE_EVERY_SECONDS
                ):
                    client.save(partial=True)
                continue
            failure = answer if isinstance(answer, DownloadFailure) else self._count(answer)
            if failure is not None:
                return failure
        return None

    async def _keep_period(self) -> None:
        """C-08: no request sooner than MinimumBlockPeriod after the previous one."""
        client = self.client
        wait = client.last_request_at + self.state.minimum_block_period * client.period_scale - self.loop.time()
        if wait > 0:
            await self.inbox.pause(wait)

    def _request(self) -> None:
        state = self.state
        client = self.client
        offset = self.offset = state.file_offset
        tsn = client.next_tsn()
        ref = self.ref
        if self.page_requests and not state.page_fallback and offset >= self.gap_end:
            self.paging = True
            self.request_id = _IMAGE_PAGE
            self.window_end = min(offset + self.page_size, self.size)
            self.ahead.clear()
            data = frames.encode(
                "image_page",
                tsn=tsn,
                field_control=0,
                manufacturer_code=ref.manufacturer_code,
                image_type=ref.image_type,
                file_version=ref.file_version,
                file_offset=offset,
                maximum_data_size=self.max_size,
                page_size=self.page_size,
                response_spacing=self.response_spacing,
            )
        else:
            self.paging = False
            self.request_id = _IMAGE_BLOCK
            self.window_end = self.size
            data = encode_block_request(
                tsn,
                ref.manufacturer_code,
                ref.image_type,
                ref.file_version,
                offset,
                self._block_limit(offset) if self.ahead else self.max_size,
                state.minimum_block_period if self.send_period else None,
            )
        self.host.send_ota(data, tsn)
        now = client.last_request_at = self.loop.time()
        self.deadline = now + self.timeout
        self.progress = False

    def _block_limit(self, offset: int) -> int:
        """MaximumDataSize for a block request that fills a gap: no further than the next block already held."""
        beyond = [start for start in self.ahead if start > offset]
        return min(self.max_size, min(beyond) - offset) if beyond else self.max_size

    async def _frame(self, item: OtaIn) -> Answer | DownloadFailure | None:
        """An answer the fast decoder did not take: a block response with another status, or a Default Response."""
        frame = item.frame
        if frame.name == "image_block_response":
            cmd = frame.command
            status = cmd.status
            if status == Status.WAIT_FOR_DATA:
                await self._wait_for_data(cmd)
                return _RETRY
            if status != Status.SUCCESS:  # C-09: ABORT (or any other refusal) ends the transfer
                if self.continue_after_abort:
                    return _FAILED
                reason = f"server ended the transfer (Image Block Response status 0x{int(status):02X})"
                return DownloadFailure(reason, send_abort=False, resumable=False)
            return self._block(
                item, cmd.manufacturer_code, cmd.image_type, cmd.file_version, cmd.file_offset, cmd.image_data
            )
        if frame.name == "Default_Response" and frame.command.command_id == self.request_id:
            return self._refused(frame.command.status)
        return None

    def _refused(self, status: foundation.Status) -> Answer | DownloadFailure | None:
        """A Default Response to the request in flight (C-10, C-page)."""
        if status == Status.NO_IMAGE_AVAILABLE and self.request_id == _IMAGE_BLOCK:
            self.no_image += 1
            if self.ignore_no_image:
                return _FAILED
            if self.no_image >= NO_IMAGE_LIMIT:
                reason = "three Default Responses NO_IMAGE_AVAILABLE to Image Block Requests"
                return DownloadFailure(reason, send_abort=True, resumable=False)
            return _RETRY
        if status == Status.UNSUP_CLUSTER_COMMAND and self.request_id == _IMAGE_PAGE:
            if self.no_page_fallback:
                return _FAILED
            self.state.page_fallback = True
            self.client.save()
            self.host.emit(events.PageFallback)
            return _RETRY
        return None if status == Status.SUCCESS else _FAILED

    def _block(
        self, item: BlockIn | OtaIn, manufacturer: int, image_type: int, version: int, offset: int, data: bytes
    ) -> Answer | None:
        """A SUCCESS block (SPEC.md §2.6 client checks, C-07): None while the request in flight wants more."""
        ref = self.ref
        if manufacturer != ref.manufacturer_code or image_type != ref.image_type or version != ref.file_version:
            self.client.reject(item, _IMAGE_BLOCK_RESPONSE, Status.INVALID_VALUE, "block for another image")
            return None
        length = len(data)
        if not 0 < length <= self.max_size or offset + length > self.size:
            self.client.reject(
                item, _IMAGE_BLOCK_RESPONSE, Status.INVALID_VALUE, f"block of {length} bytes at {offset}"
            )
            return None
        state = self.state
        if offset != state.file_offset:
            return self._elsewhere(offset, data)
        self.buf[offset : offset + length] = data
        state.file_offset = offset + length
        if self.assume_full_blocks and not self.paging:
            state.file_offset = min(self.size, offset + self.max_size)
        ahead = self.ahead
        if ahead:
            while (ahead_length := ahead.pop(state.file_offset, 0)) > 0:
                state.file_offset += ahead_length
        self.host.emit(events.Progress, offset=state.file_offset, size=self.size)
        if not self.paging or state.file_offset >= self.window_end:
            return _STORED
        self.progress = True
        self.deadline = self.loop.time() + self.timeout
        return None

    def _elsewhere(self, offset: int, data: bytes) -> Answer | None:
        """A block not at FileOffset: kept when a page brings it ahead, otherwise ignored (C-07)."""
        state = self.state
        end = offset + len(data)
        if self.ignore_offset and not self.paging:
            self.buf[offset:end] = data
            state.file_offset = end
            return _STORED
        if not self.paging or offset < state.file_offset or offset >= self.window_end or offset in self.ahead:
            return None
        self.buf[offset:end] = data
        self.ahead[offset] = len(data)
        self.progress = True
        self.deadline = self.loop.time() + self.timeout
        return None

    def _count(self, answer: Answer) -> DownloadFailure | None:
        """After an answer that did not store the piece: go on, or give up (C-11)."""
        if answer is _RETRY:
            return None
        if answer is _TIMEOUT and self.paging and (self.progress or self.state.file_offset > self.offset):
            self.gap_end = self.window_end  # C-page: fetch the missing blocks of this page one by one
            self.failures = 0
            return None
        if answer is _TIMEOUT and self.no_resend:
            return DownloadFailure("no answer to the request (no resend)", send_abort=True, resumable=True)
        self.failures += 1
        if self.failures > self.max_resends:
            reason = f"no usable answer after {self.max_resends} resends"
            return DownloadFailure(reason, send_abort=True, resumable=True)
        return None

    async def _wait_for_data(self, cmd: Any) -> None:
        """C-08: WAIT_FOR_DATA (SPEC.md §2.6) waits RequestTime − CurrentTime seconds, or MinimumBlockPeriod when
        they are equal, and adopts a MinimumBlockPeriod the server sends."""
        state = self.state
        if cmd.minimum_block_period is not None:
            state.minimum_block_period = int(cmd.minimum_block_period)
        current, request = int(cmd.current_time), int(cmd.request_time)
        if request < current:
            delay = WAIT_FOR_DATA_INVALID
        elif request == current:
            delay = state.minimum_block_period * self.client.period_scale
        else:
            delay = float(request - current)
        delay = min(delay, MAX_WAIT)
        if self.ignore_wait_for_data:
            delay = 0.0
        self.host.emit(events.WaitingForData, delay=delay, minimum_block_period=state.minimum_block_period)
        if delay > 0:
            await self.inbox.pause(delay)
