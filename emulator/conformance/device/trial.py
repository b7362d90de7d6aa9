"""One check's run: the test CHF, the device under test, and the steps every scenario is built from.

A play step is an async function of a `Trial` that returns the evidence its checks judge — for a scenario that
decides as it goes, its finding (a `Judgement`: verdict, reason, the deciding frames, a transfer timeline) — or
raises `Inconclusive` / `NotApplicable` with the reason. The steps here — learn who the
DUT is, get it to query, offer it an image, wait for the transfer to end, see it reboot into new firmware —
judge only from frames on the CHF radio, so they hold for a real device as well as an emulated one. Where a GB
outcome travels in a GBCS message this bench cannot see, the DUT's harness may report it
(`interface.DeviceUnderTest.alerts`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from emulator.chf.store import HeldImage
from emulator.clock import Clock
from emulator.conformance.device import images
from emulator.conformance.device.images import DutIdentity
from emulator.conformance.device.testchf import Predicate, TestChf, chf_sent, dut_sent
from emulator.conformance.interface import DeviceUnderTest
from emulator.conformance.verdict import FrameRecord, Inconclusive, TimelinePoint, evidence
from emulator.ota.frames import UPGRADE_TIME_WAIT, Status

if TYPE_CHECKING:
    from emulator.chf.ezsp_security import EzspSmartEnergy
    from emulator.han.security import HanSecurity, RunCertificates


class Capture(Protocol):
    """The run's capture (a pcap): takes in a CHF's radio, and with a session's Smart Energy security the keys that
    open its frames (the join's Transport-Keys, the CBKE link keys; on a stick, the CBKE link keys the CHF stores in
    the NCP), so the keys file beside the pcap holds them."""

    def __call__(self, chf: TestChf, security: HanSecurity | EzspSmartEnergy | None = None) -> None: ...


# OTA client attributes (SPEC.md §3.1) the scenarios read.
CURRENT_FILE_VERSION = 0x0002
IMAGE_UPGRADE_STATUS = 0x0006
IMAGE_TYPE_ID = 0x0008
MINIMUM_BLOCK_PERIOD = 0x0009
UPGRADE_ACTIVATION_POLICY = 0x000B
UPGRADE_TIMEOUT_POLICY = 0x000C

REQUESTS = ("image_block", "image_page")
OTA_CLUSTER = 0x0019
# Names the recorder gives frames it could decode as OTA or foundation commands.
KNOWN = frozenset({"query_next_image", "image_block", "image_page", "upgrade_end", "query_device_specific_file"}) | {
    "Default_Response",
    "Read_Attributes_rsp",
}


@dataclass(frozen=True)
class Timing:
    """How long the test CHF gives the DUT, in protocol seconds.

    `quiet`: for a query of its own before the CHF prompts one; `response`: to react to a frame; `spontaneous`:
    for a periodic query (a GB device queries daily: free on virtual time, capped on real time); `stall`:
    without any block request before a transfer counts as stopped; `transfer`: for a whole download."""

    quiet: float = 5.0
    response: float = 30.0
    spontaneous: float = 2 * 86400.0
    stall: float = 120.0
    transfer: float = 6 * 3600.0


VIRTUAL_TIMING = Timing()
REAL_TIMING = Timing(spontaneous=300.0, transfer=3600.0)


@dataclass
class Download:
    """How an offered transfer went, as far as the frames tell: the offer, the DUT's Upgrade End Request (None
    when it stopped without one) and the CHF's Upgrade End Response (if any)."""

    mark: int
    held: HeldImage
    offer: FrameRecord
    end: FrameRecord | None = None
    response: FrameRecord | None = None

    @property
    def end_status(self) -> int | None:
        return None if self.end is None else int(self.end.fields["status"])


@dataclass(frozen=True, slots=True)
class Transfer:
    """A download as a play step leaves it for a judge: how it went (`download`), every frame from its offer on,
    and whether the image was the operator's own (`supplied`: a DUT may rightly reject the bench's unsigned
    synthetic one). What is said about it here is read from those frames alone."""

    download: Download
    frames: list[FrameRecord]
    supplied: bool

    def first(self, predicate: Predicate, after: FrameRecord | None = None) -> FrameRecord | None:
        """The first frame (after `after`, when given) that matches."""
        return next(iter(self.since(predicate, after)), None)

    def since(self, predicate: Predicate, after: FrameRecord | None = None) -> list[FrameRecord]:
        """Every frame (after `after`, when given) that matches."""
        start = 0 if after is None else next(i for i, f in enumerate(self.frames) if f is after) + 1
        return [f for f in self.frames[start:] if predicate(f)]

    @property
    def timeline(self) -> list[TimelinePoint]:
        return transfer_timeline(self.frames)

    @property
    def progress(self) -> str:
        """How far the CHF served the image: the end of the furthest block it sent."""
        ends = [
            int(f.fields["file_offset"]) + len(f.fields.get("image_data", "")) // 2
            for f in self.frames
            if f.src == 0 and f.name == "image_block_response" and f.fields.get("status") == 0
        ]
        return f"{max(ends, default=0)} of {self.download.held.size} bytes served"

    @property
    def served_whole(self) -> bool:
        return self.progress.startswith(f"{self.download.held.size} of")

    def rejection(self) -> str:
        """Why a download that should have ended in Upgrade End SUCCESS did not (for the reason of a verdict)."""
        download = self.download
        if download.end is None:
            return f"the DUT did not complete the download ({self.progress})"
        if download.end_status == Status.INVALID_IMAGE and not self.supplied:
            return (
                "the DUT rejected the bench's unsigned synthetic image (Upgrade End INVALID_IMAGE); give an image "
                "it accepts (--image) to run this check"
            )
        if download.response is None:
            return f"the DUT's Upgrade End Request (status 0x{download.end_status:02X}) got no Upgrade End Response"
        return f"the download ended with Upgrade End status 0x{download.end_status:02X}"

    def ended_early(self) -> str | None:
        """Why a download that ended before the whole image was served says nothing about the image itself: the
        DUT may give up with Upgrade End ABORT at any time (OTA spec 09-5264 r23 §6.10.9), or stop requesting."""
        if self.served_whole:
            return None
        if self.download.end is None:
            return f"the download stopped early ({self.progress})"
        if self.download.end_status == Status.ABORT:
            return (
                f"the DUT ended the download early with Upgrade End ABORT ({self.progress}), as a client may on a "
                "bad link, so it never had the whole image to judge"
            )
        return None


def transfer_timeline(frames: list[FrameRecord]) -> list[TimelinePoint]:
    """The transfer as the DUT drove it: each block request's offset, and marks where the CHF made it wait,
    aborted it, or the DUT ended it."""
    points: list[TimelinePoint] = []
    for frame in frames:
        offset = points[-1].offset if points else 0
        if frame.src != 0 and frame.name in REQUESTS:
            points.append(TimelinePoint(frame.at, int(frame.fields["file_offset"])))
        elif (mark := _mark(frame)) is not None:
            points.append(TimelinePoint(frame.at, offset, mark))
    return points


def _mark(frame: FrameRecord) -> str | None:
    """What a frame other than a block request marks on the timeline, if anything."""
    fields = frame.fields
    if frame.src != 0 and frame.name == "upgrade_end":
        status = int(fields["status"])
        return "abort" if status == Status.ABORT else f"Upgrade End 0x{status:02X}"
    if frame.src == 0 and frame.name == "image_block_response" and fields.get("status") != 0:
        status = int(fields["status"])
        if status == Status.WAIT_FOR_DATA:
            delay = int(fields["request_time"]) - int(fields["current_time"])
            return f"wait {delay} s (WAIT_FOR_DATA)"
        return f"abort (Image Block Response 0x{status:02X})"
    if frame.src == 0 and frame.name == "Default_Response" and fields.get("status") != 0:
        return f"Default Response 0x{int(fields['status']):02X}"
    return None


class Trial:
    def __init__(
        self,
        chf: TestChf,
        dut: DeviceUnderTest,
        clock: Clock,
        timing: Timing,
        image: HeldImage | None,
        version_step: int = 1,
    ) -> None:
        self.chf = chf
        self.dut = dut
        self.clock = clock
        self.timing = timing
        self.supplied = image
        # How far above the running version a synthetic image is: checks in sequence on one device each offer
        # a version of their own, so an image an earlier check left held is never offered again.
        self.version_step = version_step
        self.identity: DutIdentity | None = None
        self.first_query: FrameRecord | None = None
        # The run's capture (a pcap), for a play step that brings up a CHF radio of its own (the security checks).
        self.capture: Capture | None = None
        # The run's test CA and the certificates it issued, for the same.
        self.certificates: RunCertificates | None = None

    # -- getting the DUT to talk ----------------------------------------------------------------------

    async def prompt_query(self, *, quiet: float | None = None) -> FrameRecord | None:
        """The DUT's next Query Next Image Request: one of its own within `quiet` s, else one a unicast Image
        Notify asks for, else (a DUT that ignores the notify) its next periodic one."""
        timing = self.timing
        is_query = dut_sent("query_next_image")
        mark = self.chf.mark()
        query = await self.chf.expect(is_query, timing.quiet if quiet is None else quiet, mark)
        if query is None and self.chf.nwk is not None:
            self.chf.notify(0, 100)
            query = await self.chf.expect(is_query, timing.response, mark)
        if query is None:
            query = await self.chf.expect(is_query, timing.spontaneous, mark)
        return query

    async def learn(self) -> DutIdentity:
        """Who the DUT is, from its first query (answered NO_IMAGE_AVAILABLE: the store is still empty)."""
        query = await self.prompt_query()
        if query is None:
            unread = self.chf.since(0, lambda f: f.src != 0 and f.cluster_id == OTA_CLUSTER and f.name not in KNOWN)
            if unread:
                first = unread[0]
                raise Inconclusive(
                    f"the DUT sent {len(unread)} OTA cluster frame(s) but no readable Query Next Image Request (first: "
                    f"{first.name}, frame control 0x{first.hex[:2]}; the ZCL checks Z-02 and Z-05 judge the header)",
                    evidence(unread[:2]),
                )
            raise Inconclusive(
                f"the DUT sent no Query Next Image Request, not even after a unicast Image Notify "
                f"(waited {self.timing.spontaneous:g} s)"
            )
        self.first_query = query
        self.identity = DutIdentity.from_query(query)
        # Let the answer arrive and the DUT return to idle before the scenario goes on.
        await self.chf.expect(chf_sent("query_next_image_response"), self.timing.response, self.chf.after(query))
        await asyncio.sleep(1.0)
        return self.identity

    # -- images ---------------------------------------------------------------------------------------

    def good_image(self, activation: str | None = None) -> HeldImage:
        """The operator's image if one was given, else a synthetic one a version above the running one."""
        identity = self._identity()
        version = images.other_version(identity.file_version, self.version_step)
        base = self.supplied or images.synthetic(identity, version)
        return images.for_device(base, self.dut.ieee, activation)

    def _identity(self) -> DutIdentity:
        assert self.identity is not None, "learn() first"
        return self.identity

    def hold(self, held: HeldImage) -> HeldImage:
        self.chf.store.add(held)
        return held

    async def offer(self, held: HeldImage) -> Download:
        """Hold `held` for the DUT and get it offered: a query the CHF answers with SUCCESS."""
        mark = self.chf.mark()
        self.hold(held)
        query = await self.prompt_query(quiet=0)
        if query is None:
            raise Inconclusive("the DUT did not query again, so the image could not be offered")
        offer = await self.chf.expect(
            lambda f: f.src == 0 and f.name == "query_next_image_response" and f.fields.get("status") == 0,
            self.timing.response,
            mark,
        )
        if offer is None:
            answers = self.chf.since(mark, chf_sent("query_next_image_response"))
            raise Inconclusive("the CHF could not offer the image to the DUT's query", evidence(query, answers))
        return Download(mark, held, offer)

    async def finish(self, download: Download) -> Download:
        """Wait until the DUT ends the transfer with an Upgrade End Request, or stops requesting blocks."""
        chf = self.chf
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timing.transfer
        moving = dut_sent("upgrade_end", *REQUESTS)
        index = download.mark
        while (left := deadline - loop.time()) > 0:
            frame = await chf.expect(moving, min(left, self.timing.stall), index)
            if frame is None:
                break
            index = chf.after(frame)
            if frame.name == "upgrade_end":
                download.end = frame
                download.response = await chf.expect(chf_sent("upgrade_end_response"), self.timing.response, index)
                break
        return download

    async def download(self, held: HeldImage) -> Download:
        return await self.finish(await self.offer(held))

    async def verified_download(self, activation: str) -> Download:
        """A good image downloaded and reported SUCCESS: the precondition of every activation check."""
        download = await self.download(self.good_image(activation))
        if download.end_status == Status.SUCCESS and download.response is not None:
            return download
        raise Inconclusive(self.rejection(download), evidence(download.offer, download.end, download.response))

    def transfer(self, download: Download) -> Transfer:
        """`download` with the frames it has drawn so far, for a judge."""
        return Transfer(download, self.chf.since(download.mark), self.supplied is not None)

    def rejection(self, download: Download) -> str:
        """Why a download that should have ended in Upgrade End SUCCESS did not (for the reason of a verdict)."""
        return self.transfer(download).rejection()

    def progress(self, download: Download) -> str:
        return self.transfer(download).progress

    # -- activation -----------------------------------------------------------------------------------

    async def reboot(self, since: int, within: float) -> FrameRecord | None:
        """The DUT's Device_annce after `since`: how a device shows it restarted into new firmware."""
        return await self.chf.expect(dut_sent("Device_annce"), within, since)

    async def read(self, *attribute_ids: int) -> dict[int, int] | None:
        values = await self.chf.read(*attribute_ids, within=self.timing.response)
        return None if values is None else {k: int(v) for k, v in values.items()}

    async def running_version(self) -> int | None:
        """The version the DUT runs: its CurrentFileVersion, or — that attribute is optional (ZCL r7 §11.10) —
        the current file version of the Query Next Image Request a unicast Image Notify draws (§11.13.3 makes
        that query mandatory). None when neither shows it."""
        values = await self.read(CURRENT_FILE_VERSION)
        if values is not None and CURRENT_FILE_VERSION in values:
            return values[CURRENT_FILE_VERSION]
        query = await self.queried_version()
        return None if query is None else int(query.fields["current_file_version"])

    async def queried_version(self) -> FrameRecord | None:
        """The DUT's next Query Next Image Request within the response window (a unicast notify asks for one)."""
        is_query = dut_sent("query_next_image")
        mark = self.chf.mark()
        query = await self.chf.expect(is_query, self.timing.quiet, mark)
        if query is None and self.chf.nwk is not None:
            self.chf.notify(0, 100)
            query = await self.chf.expect(is_query, self.timing.response, mark)
        if query is not None:
            await self.chf.expect(chf_sent("query_next_image_response"), self.timing.response, self.chf.after(query))
        return query

    async def activation_policy(self) -> int:
        """UpgradeActivationPolicy (0x000B): 1 when the DUT allows out-of-band activation only (SE 1.2b
        15-0324-02 §11.10.12); an optional attribute, so an unreadable one is its default, 0."""
        values = await self.read(UPGRADE_ACTIVATION_POLICY)
        return 0 if values is None else int(values.get(UPGRADE_ACTIVATION_POLICY, 0))

    def ended_early(self, download: Download) -> str | None:
        return self.transfer(download).ended_early()

    def waiting_response(self, download: Download) -> bool:
        response = download.response
        return response is not None and int(response.fields["upgrade_time"]) == UPGRADE_TIME_WAIT

    # -- evidence -------------------------------------------------------------------------------------

    def timeline(self, since: int) -> list[TimelinePoint]:
        """The transfer timeline of the frames from `since` on."""
        return transfer_timeline(self.chf.since(since))
