"""What the test CHF plays for each OTA Upgrade client check (SPEC.md §9.3 C-01 … C-21, and the page request
fallback of §2.5), and how each verdict follows from the frames.

Every scenario starts from a fresh DUT (or one reset between checks), learns the DUT's identity from its first
Query Next Image Request, then does one thing to it — a notify, an offer, a transfer the CHF bends at one
point — and judges what the DUT sent back, and when. Times are protocol seconds (cheap on virtual time).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import zigpy.types as t

from emulator.conformance.device import images
from emulator.conformance.device.images import DutIdentity
from emulator.conformance.device.testchf import chf_sent, dut_sent
from emulator.conformance.device.trial import (
    CURRENT_FILE_VERSION,
    IMAGE_TYPE_ID,
    IMAGE_UPGRADE_STATUS,
    MINIMUM_BLOCK_PERIOD,
    REQUESTS,
    UPGRADE_ACTIVATION_POLICY,
    UPGRADE_TIMEOUT_POLICY,
    Download,
    Transfer,
    Trial,
)
from emulator.conformance.interface import Ability, Unable
from emulator.conformance.verdict import (
    FrameRecord,
    Inconclusive,
    Judgement,
    NotApplicable,
    TimelinePoint,
    Verdict,
    evidence,
)
from emulator.ota import frames
from emulator.ota.blocks import encode_block_response
from emulator.ota.frames import Status
from emulator.ota.signing import manufacturer_image_hash
from emulator.profiles import ActivationTime

# A play step that decides as it goes: its finding is the evidence, judged `as_played`.
Scenario = Callable[[Trial], Awaitable[Judgement]]

AT_40_PERCENT = 0.4
BLOCK_CAP = 40  # C-06: the CHF serves shorter blocks than a client usually asks for
WAIT_FOR_DATA = 30  # C-08a: seconds
JITTER_PROBES = 20  # C-03: broadcasts with a low QueryJitter …
LOW_JITTER = 10  # … of this value …
JITTER_LIMIT = 8  # … at most this many may be answered (P(Bin(20, 0.1) > 8) < 1e-4)
NO_IMAGE_LIMIT = 3  # C-10
RESEND_WATCH = 600.0  # C-11: how long to watch an unanswered request
ACTIVATION_DELAY = 120  # C-15: seconds from the Upgrade End Response
HOLD_WATCH = 65 * 60.0  # C-14: a held image must stay held; the client re-asks within 60 min
TIMEOUT_WATCH = 4 * 3600.0  # C-18: time for missed Upgrade End Responses to make a client apply
MS_PERIOD, S_PERIOD = 250, 2  # C-08b: MinimumBlockPeriod imposed, in the DUT's unit
BLOCK_PERIOD_PRESENT = 0x02  # Image Block Request field control bit 1: MinimumBlockPeriod present


def passed(
    reason: str, *frames_: FrameRecord | list[FrameRecord] | None, timeline: list[TimelinePoint] | None = None
) -> Judgement:
    return Judgement(Verdict.PASS, reason, evidence(*frames_), timeline or [])


def failed(
    reason: str, *frames_: FrameRecord | list[FrameRecord] | None, timeline: list[TimelinePoint] | None = None
) -> Judgement:
    return Judgement(Verdict.FAIL, reason, evidence(*frames_), timeline or [])


def inconclusive(reason: str, *frames_: FrameRecord | list[FrameRecord] | None) -> Judgement:
    return Judgement(Verdict.INCONCLUSIVE, reason, evidence(*frames_))


def offset_of(frame: FrameRecord) -> int:
    return int(frame.fields["file_offset"])


def data_length(frame: FrameRecord) -> int:
    return len(frame.fields.get("image_data", "")) // 2


def status_of(frame: FrameRecord) -> int:
    return int(frame.fields["status"])


def _other16(value: int) -> int:
    """A 16-bit code that differs from `value` and is not the wildcard 0xFFFF."""
    other = value ^ 0x0001
    return other if other != 0xFFFF else value ^ 0x0002


# -- Image Notify (SPEC.md §2.1) ------------------------------------------------------------------------


async def _notify_answered(
    trial: Trial, payload_type: int, jitter: int, *, broadcast: bool, **fields: int
) -> tuple[FrameRecord | None, FrameRecord | None]:
    """Send one Image Notify; (the notify, the query it drew or None) after the response window."""
    chf = trial.chf
    mark = chf.mark()
    chf.notify(payload_type, jitter, broadcast=broadcast, **fields)
    notify = await chf.expect(chf_sent("image_notify"), 1.0, mark)
    query = await chf.expect(dut_sent("query_next_image"), trial.timing.response, mark)
    if query is not None:
        await chf.expect(chf_sent("query_next_image_response"), trial.timing.response, chf.after(query))
        await asyncio.sleep(1.0)
    return notify, query


async def c01_unicast_notify(trial: Trial) -> Judgement:
    identity = await trial.learn()
    plain = await _notify_answered(trial, 0, 100, broadcast=False)
    own = await _notify_answered(
        trial,
        3,
        100,
        broadcast=False,
        manufacturer_code=identity.manufacturer_code,
        image_type=identity.image_type,
        new_file_version=identity.file_version,
    )
    missed = [
        label for label, (_, query) in (("payload type 0", plain), ("payload type 3, own version", own)) if not query
    ]
    frames_ = [*plain, *own]
    if missed:
        return failed(f"no Query Next Image Request after a unicast Image Notify ({', '.join(missed)})", *frames_)
    return passed("queried after each unicast Image Notify, including one naming its own version", *frames_)


async def c02a_broadcast_mismatch(trial: Trial) -> Judgement:
    identity = await trial.learn()
    mfr, itype = identity.manufacturer_code, identity.image_type
    wrong_mfr = await _notify_answered(trial, 1, 100, broadcast=True, manufacturer_code=_other16(mfr))
    wrong_type = await _notify_answered(
        trial, 2, 100, broadcast=True, manufacturer_code=mfr, image_type=_other16(itype)
    )
    bad = [
        label
        for label, (_, query) in (("another manufacturer", wrong_mfr), ("another image type", wrong_type))
        if query
    ]
    if bad:
        return failed(f"queried after a broadcast Image Notify for {' and '.join(bad)}", *wrong_mfr, *wrong_type)
    control = await _notify_answered(trial, 2, 100, broadcast=True, manufacturer_code=mfr, image_type=itype)
    if control[1] is None:
        raise Inconclusive(
            "the DUT ignored even a matching broadcast Image Notify (jitter 100), so its silence proves nothing",
            evidence(*wrong_mfr, *wrong_type, *control),
        )
    return passed(
        "ignored broadcast notifies for another manufacturer and image type; queried on a matching one",
        *wrong_mfr,
        *wrong_type,
        *control,
    )


async def c02b_broadcast_own_version(trial: Trial) -> Judgement:
    identity = await trial.learn()
    ids = {"manufacturer_code": identity.manufacturer_code, "image_type": identity.image_type}
    own = await _notify_answered(trial, 3, 100, broadcast=True, new_file_version=identity.file_version, **ids)
    if own[1] is not None:
        return failed(
            f"queried after a broadcast Image Notify naming the version it runs (0x{identity.file_version:08X})", *own
        )
    newer = images.other_version(identity.file_version)
    control = await _notify_answered(trial, 3, 100, broadcast=True, new_file_version=newer, **ids)
    if control[1] is None:
        raise Inconclusive(
            "the DUT ignored a broadcast Image Notify for a new version too, so its silence proves nothing",
            evidence(*own, *control),
        )
    return passed("ignored a broadcast notify naming its own version; queried on one naming another", *own, *control)


async def c03_query_jitter(trial: Trial) -> Judgement:
    await trial.learn()
    always = await _notify_answered(trial, 0, 100, broadcast=True)
    if always[1] is None:
        return failed("no query after a broadcast Image Notify with QueryJitter 100 (must always query)", *always)
    answered: list[FrameRecord] = []
    for _ in range(JITTER_PROBES):
        _, query = await _notify_answered(trial, 0, LOW_JITTER, broadcast=True)
        if query is not None:
            answered.append(query)
    zero = await _notify_answered(trial, 0, 0, broadcast=True)
    shown = [*always, *answered[: JITTER_LIMIT + 1], *zero]
    if len(answered) > JITTER_LIMIT:
        return failed(
            f"queried after {len(answered)} of {JITTER_PROBES} broadcast notifies with QueryJitter {LOW_JITTER} "
            f"(expected about {JITTER_PROBES * LOW_JITTER // 100}, at most {JITTER_LIMIT})",
            *shown,
        )
    if zero[1] is not None:
        return failed("queried after a broadcast Image Notify with QueryJitter 0 (outside 1..100: ignore)", *shown)
    return passed(
        f"QueryJitter 100 drew a query; {len(answered)} of {JITTER_PROBES} notifies with jitter {LOW_JITTER} did; "
        "jitter 0 was ignored",
        *shown,
    )


# -- Query (SPEC.md §2.2, §2.3) ---------------------------------------------------------------------------


async def play_first_query(trial: Trial) -> FrameRecord:
    """C-04: the DUT's first Query Next Image Request."""
    await trial.learn()
    assert trial.first_query is not None
    return trial.first_query


def judge_hardware_version(query: FrameRecord) -> Judgement:
    hardware = DutIdentity.from_query(query).hardware_version
    if hardware is None:
        return failed("Query Next Image Request without a hardware version (field control bit 0 clear)", query)
    return passed(f"hardware version 0x{hardware:04X} in the query", query)


async def c05_same_version_offer(trial: Trial) -> Judgement:
    identity = await trial.learn()
    trial.chf.configure(query_policy="reinstall")
    held = images.for_device(images.synthetic(identity, identity.file_version), trial.dut.ieee, "wait")
    download = await trial.offer(held)
    request = await trial.chf.expect(dut_sent(*REQUESTS), 2 * trial.timing.response, trial.chf.after(download.offer))
    if request is not None:
        return failed(
            f"started downloading version 0x{identity.file_version:08X}, the one it runs", download.offer, request
        )
    return passed(
        f"discarded an offer of the version it runs (0x{identity.file_version:08X}): no block request",
        download.offer,
    )


# -- The block loop (SPEC.md §2.4–§2.6) -------------------------------------------------------------------


async def play_block_loop(trial: Trial) -> Transfer:
    """C-06: a whole transfer with the CHF capping blocks at `BLOCK_CAP` bytes."""
    await trial.learn()
    trial.chf.configure(max_block_size=BLOCK_CAP)
    return trial.transfer(await trial.download(trial.good_image("wait")))


def judge_block_loop(transfer: Transfer) -> Judgement:
    download, timeline = transfer.download, transfer.timeline
    held = download.held
    received = 0
    requests = 0
    last_block: FrameRecord | None = None
    for frame in transfer.frames:
        if frame.src != 0 and frame.name in REQUESTS:
            requests += 1
            ids = (frame.fields["manufacturer_code"], frame.fields["image_type"], frame.fields["file_version"])
            if tuple(int(v) for v in ids) != held.key:
                return failed(f"block request for image {ids}, the offer was {held.key}", frame, timeline=timeline)
            if int(frame.fields.get("maximum_data_size", 1)) == 0:
                return failed(
                    "Image Block Request with MaximumDataSize 0: no block can carry data, so the download cannot "
                    "progress (ZCL r7 §11.13.6: the largest data length the client can receive)",
                    download.offer,
                    frame,
                    timeline=timeline,
                )
            if offset_of(frame) != received:
                return failed(
                    f"requested offset {offset_of(frame)} when the data received ended at {received}",
                    download.offer,
                    last_block,
                    frame,
                    timeline=timeline,
                )
        elif (
            frame.src == 0
            and frame.name == "image_block_response"
            and frame.fields.get("status") == 0
            and offset_of(frame) == received
        ):
            received += data_length(frame)
            last_block = frame
    if received < held.size:
        return inconclusive(f"the transfer stopped at {received} of {held.size} bytes", download.offer)
    return passed(
        f"{requests} requests from offset 0 to {held.size}, each where the data received ended "
        f"(blocks capped at {BLOCK_CAP} bytes)",
        download.offer,
        download.end,
        timeline=timeline,
    )


@dataclass(frozen=True, slots=True)
class Misdelivery:
    """C-07's transfer: where the CHF first answered with a block at the wrong offset (-1: the DUT never got that
    far) and the TSNs of the requests it answered wrongly."""

    transfer: Transfer
    offset: int
    tsns: list[int]


async def play_wrong_block(trial: Trial) -> Misdelivery:
    """C-07: at a quarter of the image the CHF answers once with a block at the wrong offset, then once with a
    block for another file version."""
    await trial.learn()
    chf = trial.chf
    held = trial.good_image("wait")
    manufacturer, image_type, version = held.key
    state: dict[str, int] = {"phase": 0, "offset": -1}
    misdelivered: list[int] = []  # TSNs of the requests answered with a wrong block

    def misdeliver(packet: t.ZigbeePacket, frame: frames.Frame) -> bool:
        if frame.name != "image_block" or state["phase"] >= 2:
            return False
        cmd = frame.command
        offset = int(cmd.file_offset)
        size = min(int(cmd.maximum_data_size), chf.server.profile.max_block_size)
        if state["phase"] == 0 and offset >= held.size // 4 and offset + 2 * size <= held.size:
            wrong = offset + size
            chf.reply(packet, encode_block_response(frame.tsn, *held.key, wrong, held.data[wrong : wrong + size]))
            state.update(phase=1, offset=offset)
            misdelivered.append(frame.tsn)
            return True
        if state["phase"] == 1:
            state["phase"] = 2
            if offset == state["offset"]:
                other = images.other_version(version, 0x100)
                data = held.data[offset : offset + size]
                chf.reply(packet, encode_block_response(frame.tsn, manufacturer, image_type, other, offset, data))
                misdelivered.append(frame.tsn)
                return True
        return False

    chf.rules.append(misdeliver)
    chf.configure(page_requests=False)  # a paging client falls back to the block requests this rule bends
    download = await trial.download(held)
    return Misdelivery(trial.transfer(download), state["offset"], misdelivered)


def judge_wrong_block(misdelivery: Misdelivery) -> Judgement:
    transfer, expected = misdelivery.transfer, misdelivery.offset
    timeline = transfer.timeline
    if expected < 0:
        return inconclusive("the DUT never reached a quarter of the image", transfer.download.offer)
    bad = transfer.since(
        lambda f: f.src == 0 and f.name == "image_block_response" and f.fields.get("tsn") in misdelivery.tsns
    )
    shown: list[FrameRecord] = []
    for block in bad:
        follow = transfer.first(dut_sent(*REQUESTS), after=block)
        shown += [block, *([follow] if follow else [])]
        what = "at the wrong offset" if offset_of(block) != expected else "for another file version"
        if follow is None:
            return failed(f"no block request after a block {what}", *shown, timeline=timeline)
        if offset_of(follow) != expected:
            return failed(
                f"after a block {what} it requested offset {offset_of(follow)}, not {expected} again",
                *shown,
                timeline=timeline,
            )
    return passed(
        f"re-requested offset {expected} after a block at the wrong offset and after one for another version",
        *shown,
        timeline=timeline,
    )


def _wait_for_data(frame: FrameRecord) -> bool:
    """The CHF's Image Block Response WAIT_FOR_DATA."""
    status = frame.fields.get("status")
    return frame.src == 0 and frame.name == "image_block_response" and status == Status.WAIT_FOR_DATA


async def play_wait_for_data(trial: Trial) -> Transfer:
    """C-08a: the CHF answers the first block request with WAIT_FOR_DATA."""
    await trial.learn()
    trial.chf.configure(wait_for_data=WAIT_FOR_DATA, page_requests=False)
    return trial.transfer(await trial.download(trial.good_image("wait")))


def judge_wait_for_data(transfer: Transfer) -> Judgement:
    timeline = transfer.timeline
    wait = transfer.first(_wait_for_data)
    if wait is None:
        return inconclusive("the DUT sent no block request, so no WAIT_FOR_DATA went out", transfer.download.offer)
    delay = int(wait.fields["request_time"]) - int(wait.fields["current_time"])
    follow = transfer.first(dut_sent(*REQUESTS), after=wait)
    if follow is None:
        return failed(f"no block request after WAIT_FOR_DATA {delay} s", wait, timeline=timeline)
    gap = follow.at - wait.at
    if gap < delay - 1.0:
        return failed(
            f"requested again {gap:.2f} s after WAIT_FOR_DATA asked for {delay} s", wait, follow, timeline=timeline
        )
    return passed(f"waited {gap:.1f} s after WAIT_FOR_DATA asked for {delay} s", wait, follow, timeline=timeline)


@dataclass(frozen=True, slots=True)
class RateLimited:
    """C-08b's transfer: the MinimumBlockPeriod imposed (`period`, in the DUT's `unit`) and the DUT's
    MinimumBlockPeriod attribute as read before (None: no answer)."""

    transfer: Transfer
    period: int
    unit: str
    attribute: dict[int, int] | None

    @property
    def seconds(self) -> float:
        return self.period * (0.001 if self.unit == "ms" else 1.0)


async def play_minimum_block_period(trial: Trial) -> RateLimited:
    """C-08b: WAIT_FOR_DATA carrying a MinimumBlockPeriod, then a transfer at that pace."""
    await trial.learn()
    unit = trial.dut.block_period_unit
    period = MS_PERIOD if unit == "ms" else S_PERIOD
    attribute = await trial.read(MINIMUM_BLOCK_PERIOD)
    trial.chf.configure(wait_for_data=1, minimum_block_period=period, block_period_unit=unit, page_requests=False)
    download = await trial.download(trial.good_image("wait"))
    return RateLimited(trial.transfer(download), period, unit, attribute)


def judge_minimum_block_period(rated: RateLimited) -> Judgement:
    transfer, period, unit = rated.transfer, rated.period, rated.unit
    wait = transfer.first(_wait_for_data)
    if wait is None:
        return inconclusive(
            "the DUT sent no block request, so no MinimumBlockPeriod was imposed", transfer.download.offer
        )
    first = transfer.since(dut_sent(*REQUESTS))[:1]
    advertised = bool(first) and int(first[0].fields.get("field_control", 0)) & BLOCK_PERIOD_PRESENT
    if not advertised and (rated.attribute is None or MINIMUM_BLOCK_PERIOD not in rated.attribute):
        return Judgement(
            Verdict.NOT_APPLICABLE,
            "the DUT does not support rate limiting: its Image Block Requests carry no MinimumBlockPeriod (field "
            "control bit 1) and it has no MinimumBlockPeriod attribute; the server may change the period only when "
            "both sides support it (ZCL r7 §11.13.6, §11.10 MinimumBlockPeriod)",
            evidence(first),
        )
    requests = transfer.since(dut_sent(*REQUESTS), after=wait)
    gaps = [(b.at - a.at, a, b) for a, b in itertools.pairwise(requests)]
    if len(gaps) < 3:
        return inconclusive(f"only {len(requests)} block requests after the period was imposed", wait, requests)
    short = [g for g in gaps if g[0] < rated.seconds * 0.95]
    if short:
        gap, a, b = short[0]
        return failed(
            f"{len(short)} of {len(gaps)} block requests came sooner than MinimumBlockPeriod {period} {unit} "
            f"(first: {gap * 1000:.0f} ms apart)",
            wait,
            a,
            b,
            timeline=transfer.timeline,
        )
    fastest = min(g[0] for g in gaps)
    return passed(
        f"{len(gaps) + 1} block requests at least {fastest:.3f} s apart after MinimumBlockPeriod {period} {unit}",
        wait,
        requests[:3],
        timeline=transfer.timeline,
    )


def _from_40_percent(held_size: int, frame: frames.Frame) -> bool:
    return frame.name in REQUESTS and int(frame.command.file_offset) >= held_size * AT_40_PERCENT


async def c09_abort(trial: Trial) -> Judgement:
    await trial.learn()
    chf = trial.chf
    held = trial.good_image("wait")
    state = {"done": False}

    def abort(packet: t.ZigbeePacket, frame: frames.Frame) -> bool:
        if state["done"] or not _from_40_percent(held.size, frame):
            return False
        state["done"] = True
        chf.reply(packet, frames.encode("image_block_response", tsn=frame.tsn, status=Status.ABORT))
        return True

    chf.rules.append(abort)
    download = await trial.offer(held)
    sent = await chf.expect(
        lambda f: f.src == 0 and f.name == "image_block_response" and f.fields.get("status") == Status.ABORT,
        trial.timing.transfer,
        download.mark,
    )
    if sent is None:
        raise Inconclusive("the transfer never reached 40 %", evidence(download.offer))
    after = chf.after(sent)
    more = await chf.expect(dut_sent(*REQUESTS), 2 * trial.timing.response, after)
    timeline = trial.timeline(download.mark)
    ended = chf.since(after, dut_sent("upgrade_end", "query_next_image"))
    if more is not None:
        requery = chf.since(after, lambda f: f.src != 0 and f.name == "query_next_image" and f.at <= more.at)
        if requery:  # back to querying, as the rule asks; a new offer starts a new download
            return passed(
                f"stopped the aborted download and queried again (a new download followed at offset {offset_of(more)})",
                sent,
                requery[0],
                timeline=timeline,
            )
        return failed(f"requested offset {offset_of(more)} after the ABORT", sent, more, timeline=timeline)
    return passed("stopped requesting blocks after Image Block Response ABORT", sent, ended[:1], timeline=timeline)


async def c10_no_image_default_responses(trial: Trial) -> Judgement:
    await trial.learn()
    chf = trial.chf
    held = trial.good_image("wait")
    state = {"active": False}

    def no_image(packet: t.ZigbeePacket, frame: frames.Frame) -> bool:
        if frame.name != "image_block" or not (state["active"] or _from_40_percent(held.size, frame)):
            return False
        state["active"] = True
        reply = frames.default_response(
            tsn=frame.tsn, command_id=frame.header.command_id, status=Status.NO_IMAGE_AVAILABLE, direction=frames.S2C
        )
        chf.reply(packet, reply)
        return True

    chf.rules.append(no_image)
    chf.configure(page_requests=False)
    download = await trial.offer(held)
    refusals: list[FrameRecord] = []
    index = download.mark
    window = trial.timing.transfer
    while True:
        refusal = await chf.expect(
            lambda f: (
                f.src == 0 and f.name == "Default_Response" and f.fields.get("status") == Status.NO_IMAGE_AVAILABLE
            ),
            window,
            index,
        )
        if refusal is None:
            break
        refusals.append(refusal)
        if len(refusals) > NO_IMAGE_LIMIT:
            break  # one past the limit decides; a DUT that never stops would keep the scenario going
        index = chf.after(refusal)
        window = 2 * trial.timing.response
    timeline = trial.timeline(download.mark)
    if not refusals:
        raise Inconclusive("the transfer never reached 40 %", evidence(download.offer))
    requery = chf.since(chf.after(refusals[0]), dut_sent("query_next_image"))
    if requery:  # refusals after the DUT went back to querying belong to a new download
        refusals = [r for r in refusals if r.at < requery[0].at]
    if len(refusals) > NO_IMAGE_LIMIT:
        fourth = refusals[NO_IMAGE_LIMIT]
        request = chf.since(download.mark, lambda f: f.src != 0 and f.name == "image_block" and f.at <= fourth.at)[-1]
        return failed(
            f"kept requesting blocks after {NO_IMAGE_LIMIT} Default Responses NO_IMAGE_AVAILABLE "
            "(a fourth was refused too)",
            refusals[:NO_IMAGE_LIMIT],
            request,
            timeline=timeline,
        )
    return passed(
        f"stopped requesting blocks after {len(refusals)} Default Response(s) NO_IMAGE_AVAILABLE",
        refusals,
        timeline=timeline,
    )


async def c11_resend(trial: Trial) -> Judgement:
    await trial.learn()
    chf = trial.chf
    held = trial.good_image("wait")
    state = {"active": False}

    def silence(packet: t.ZigbeePacket, frame: frames.Frame) -> bool:
        if frame.name not in REQUESTS or not (state["active"] or _from_40_percent(held.size, frame)):
            return False
        state["active"] = True
        return True

    chf.rules.append(silence)
    download = await trial.offer(held)
    first = await chf.expect(
        lambda f: f.src != 0 and f.name in REQUESTS and offset_of(f) >= held.size * AT_40_PERCENT,
        trial.timing.transfer,
        download.mark,
    )
    if first is None:
        raise Inconclusive("the transfer never reached 40 %", evidence(download.offer))
    after = chf.after(first)
    gave_up = await chf.expect(dut_sent("upgrade_end", "query_next_image"), RESEND_WATCH, after)
    until = gave_up.at if gave_up is not None else float("inf")
    resent = chf.since(
        after, lambda f: f.src != 0 and f.name in REQUESTS and offset_of(f) == offset_of(first) and f.at < until
    )
    timeline = trial.timeline(download.mark)
    if not resent:
        how = "before giving up" if gave_up is not None else f"within {RESEND_WATCH:g} s"
        return failed(
            f"never re-sent the unanswered request for offset {offset_of(first)} {how}",
            first,
            gave_up,
            timeline=timeline,
        )
    if gave_up is not None and gave_up.name == "upgrade_end":
        ending = f"then Upgrade End status 0x{status_of(gave_up):02X}"
    else:
        ending = "then queried again" if gave_up is not None else f"still trying after {RESEND_WATCH:g} s"
    return passed(
        f"re-sent the unanswered request {len(resent)} time(s), {ending}", first, resent, gave_up, timeline=timeline
    )


# -- After the download (SPEC.md §2.7, §2.8) ------------------------------------------------------------------


async def _judge_invalid(trial: Trial, download: Download, what: str) -> Judgement:
    timeline = trial.timeline(download.mark)
    end = download.end
    early = trial.ended_early(download)
    if early is not None:
        raise Inconclusive(f"{early}; the scenario needs {what} downloaded whole", evidence(download.offer, end))
    if end is None:
        return failed(
            f"no Upgrade End Request after {what} was downloaded (expected INVALID_IMAGE)",
            download.offer,
            timeline=timeline,
        )
    if download.end_status != Status.INVALID_IMAGE:
        return failed(
            f"Upgrade End status 0x{download.end_status:02X} for {what} (expected INVALID_IMAGE 0x96)",
            end,
            download.response,
            timeline=timeline,
        )
    rebooted = await trial.reboot(trial.chf.after(end), trial.timing.response)
    if rebooted is not None:
        return failed(f"rebooted after rejecting {what}", end, rebooted, timeline=timeline)
    status = await trial.read(IMAGE_UPGRADE_STATUS)
    if status is not None and status.get(IMAGE_UPGRADE_STATUS, 0) != 0:
        return failed(
            f"sent INVALID_IMAGE but ImageUpgradeStatus reads {status[IMAGE_UPGRADE_STATUS]}, not 0 (image kept?)",
            end,
            timeline=timeline,
        )
    read = "" if status is None else "; ImageUpgradeStatus back to 0"
    return passed(f"Upgrade End INVALID_IMAGE for {what}{read}", end, timeline=timeline)


async def c12a_corrupted_image(trial: Trial) -> Judgement:
    await trial.learn()
    held = images.one_byte_changed(trial.good_image("wait"))
    return await _judge_invalid(trial, await trial.download(held), "an image with one byte changed")


async def c12b_other_hardware(trial: Trial) -> Judgement:
    identity = await trial.learn()
    if identity.hardware_version is None:
        raise Inconclusive("the DUT's query carries no hardware version, so no image can be made to exclude it")
    chf = trial.chf
    held = images.excluding_hardware(trial.good_image("wait"), identity.hardware_version)
    manufacturer, image_type, version = held.key

    def offer_anyway(packet: t.ZigbeePacket, frame: frames.Frame) -> bool:
        """The server would not offer this image (its policy checks hardware): the test CHF does."""
        if frame.name != "query_next_image":
            return False
        reply = frames.encode(
            "query_next_image_response",
            tsn=frame.tsn,
            status=Status.SUCCESS,
            manufacturer_code=manufacturer,
            image_type=image_type,
            file_version=version,
            image_size=held.size,
        )
        chf.reply(packet, reply)
        return True

    chf.rules.append(offer_anyway)
    hardware = held.image.header
    what = (
        f"an image for hardware 0x{int(hardware.minimum_hardware_version):04X}..0x"
        f"{int(hardware.maximum_hardware_version):04X} (the DUT is 0x{identity.hardware_version:04X})"
    )
    return await _judge_invalid(trial, await trial.download(held), what)


async def play_good_image(trial: Trial) -> Transfer:
    """C-13 (and C-PAGE, with page requests refused): a whole transfer of a good image."""
    await trial.learn()
    return trial.transfer(await trial.download(trial.good_image("wait")))


def judge_good_image(transfer: Transfer) -> Judgement:
    download, timeline = transfer.download, transfer.timeline
    end = download.end
    early = transfer.ended_early()
    if early is not None:
        return inconclusive(early, download.offer, end)
    if end is None:
        return failed("no Upgrade End Request after the whole image was downloaded", download.offer, timeline=timeline)
    if download.end_status == Status.INVALID_IMAGE and not transfer.supplied:
        return inconclusive(transfer.rejection(), end)
    if download.end_status != Status.SUCCESS:
        return failed(
            f"Upgrade End status 0x{download.end_status:02X} for a good image (expected SUCCESS)",
            end,
            timeline=timeline,
        )
    named = tuple(int(end.fields[k]) for k in ("manufacturer_code", "image_type", "file_version"))
    if named != download.held.key:
        mfr, itype, ver = named
        return failed(
            f"Upgrade End SUCCESS names 0x{mfr:04X}/0x{itype:04X}/0x{ver:08X}; the image downloaded is "
            "0x{:04X}/0x{:04X}/0x{:08X}".format(*download.held.key),
            download.offer,
            end,
            timeline=timeline,
        )
    if not transfer.served_whole:
        return failed(f"Upgrade End SUCCESS before the whole image was served ({transfer.progress})", end)
    return passed(
        "Upgrade End SUCCESS with the ids of the downloaded image, after its last block", end, timeline=timeline
    )


async def c14_told_to_wait(trial: Trial) -> Judgement:
    await trial.learn()
    download = await trial.verified_download("wait")
    timeline = trial.timeline(download.mark)
    assert download.response is not None and download.end is not None
    after = trial.chf.after(download.response)
    await asyncio.sleep(5.0)
    status = await trial.read(IMAGE_UPGRADE_STATUS)
    rebooted = await trial.reboot(after, HOLD_WATCH)
    asked = trial.chf.since(after, dut_sent("upgrade_end"))
    if rebooted is not None:
        return failed(
            f"rebooted {rebooted.at - download.response.at:.1f} s after being told to wait (UpgradeTime 0xFFFFFFFF)",
            download.response,
            rebooted,
            timeline=timeline,
        )
    version = await trial.running_version()
    if version == download.held.file_version:
        return failed("runs the new version although told to wait", download.response, timeline=timeline)
    if status is not None and status.get(IMAGE_UPGRADE_STATUS) != 3:
        return failed(
            f"ImageUpgradeStatus {status.get(IMAGE_UPGRADE_STATUS)} while told to wait (expected 3)",
            download.response,
            timeline=timeline,
        )
    again = f"asked again after {asked[0].at - download.response.at:.0f} s" if asked else "did not ask again"
    read = "ImageUpgradeStatus 3; " if status is not None else ""
    return passed(
        f"held the image {HOLD_WATCH / 60:.0f} min without activating; {read}{again}",
        download.end,
        download.response,
        asked[:1],
        timeline=timeline,
    )


async def _judge_activation_time(trial: Trial, download: Download, timeline: list[TimelinePoint]) -> Judgement:
    response = download.response
    assert response is not None
    current, upgrade = int(response.fields["current_time"]), int(response.fields["upgrade_time"])
    delay = upgrade if current == 0 else upgrade - current
    form = "relative, CurrentTime 0" if current == 0 else "absolute UTC"
    rebooted = await trial.reboot(trial.chf.after(response), delay + 2 * trial.timing.response)
    if rebooted is None:
        version = await trial.running_version()
        if version == download.held.file_version:
            raise Inconclusive("activated, but no Device_annce showed when", evidence(response))
        return failed(f"did not activate within {delay + 60} s of an UpgradeTime ({form}) {delay} s ahead", response)
    elapsed = rebooted.at - response.at
    tolerance = max(3.0, 0.05 * delay)
    if abs(elapsed - delay) > tolerance:
        return failed(
            f"rebooted {elapsed:.1f} s after an Upgrade End Response with {form} UpgradeTime {delay} s ahead",
            response,
            rebooted,
            timeline=timeline,
        )
    return passed(
        f"rebooted {elapsed:.1f} s after an UpgradeTime ({form}) {delay} s ahead", response, rebooted, timeline=timeline
    )


async def _server_may_activate(trial: Trial) -> None:
    """The UpgradeTime checks need a DUT that lets the OTA server activate it."""
    if await trial.activation_policy() == 1:
        raise NotApplicable(
            "UpgradeActivationPolicy is 1 (out-of-band activation only): the DUT must refuse the server's "
            "UpgradeTime (SE 1.2b 15-0324-02 §11.10.12, judged by C-17), so there is no time to keep"
        )


async def c15a_relative_upgrade_time(trial: Trial) -> Judgement:
    await trial.learn()
    await _server_may_activate(trial)
    download = await trial.verified_download(f"+{ACTIVATION_DELAY}")
    return await _judge_activation_time(trial, download, trial.timeline(download.mark))


async def c15b_absolute_upgrade_time(trial: Trial) -> Judgement:
    await trial.learn()
    await _server_may_activate(trial)
    held = trial.good_image("wait")

    def schedule(packet: t.ZigbeePacket, frame: frames.Frame) -> bool:
        """Just before the server answers Upgrade End: activation at an absolute time 120 s ahead."""
        if frame.name == "upgrade_end" and frame.command.status == Status.SUCCESS:
            held.activation = ActivationTime.at(trial.clock.utc() + timedelta(seconds=ACTIVATION_DELAY))
        return False

    trial.chf.rules.append(schedule)
    download = await trial.download(held)
    if download.end_status != Status.SUCCESS or download.response is None:
        raise Inconclusive(trial.rejection(download), evidence(download.end))
    return await _judge_activation_time(trial, download, trial.timeline(download.mark))


async def c16_foreign_upgrade_end(trial: Trial) -> Judgement:
    await trial.learn()
    chf = trial.chf
    download = await trial.verified_download("wait")
    timeline = trial.timeline(download.mark)
    manufacturer, image_type, version = download.held.key
    assert download.response is not None
    early = await trial.reboot(chf.after(download.response), 5.0)
    if early is not None:
        raise Inconclusive(
            "the DUT activated although told to wait (judged by C-14), so it held no image for an Upgrade End "
            "Response naming another one to be tried on",
            evidence(download.response, early),
        )
    mark = chf.mark()
    now = trial.clock.zcl_utc()
    foreign = images.other_version(version, 0x10)
    chf.upgrade_end_response(manufacturer, image_type, foreign, now, now)
    sent = await chf.expect(chf_sent("upgrade_end_response"), 1.0, mark)
    rebooted = await trial.reboot(mark, 2 * trial.timing.response)
    if rebooted is not None:
        return failed(
            f"activated on an Upgrade End Response for version 0x{foreign:08X} (it holds 0x{version:08X})",
            sent,
            rebooted,
            timeline=timeline,
        )
    answer = chf.since(mark, dut_sent("Default_Response"))
    policy = await trial.read(UPGRADE_ACTIVATION_POLICY)
    if policy is not None and policy.get(UPGRADE_ACTIVATION_POLICY) == 1:
        return passed(
            "ignored an Upgrade End Response for another image (wildcards not tried: out-of-band activation)",
            sent,
            answer,
        )
    mark = chf.mark()
    now = trial.clock.zcl_utc()
    chf.upgrade_end_response(
        frames.WILDCARD_MANUFACTURER, frames.WILDCARD_IMAGE_TYPE, frames.WILDCARD_FILE_VERSION, now, now
    )
    wildcard = await chf.expect(chf_sent("upgrade_end_response"), 1.0, mark)
    rebooted = await trial.reboot(mark, 2 * trial.timing.response)
    if rebooted is None and await trial.running_version() != version:
        return failed(
            "ignored an Upgrade End Response with wildcard ids (0xFFFF/0xFFFF/0xFFFFFFFF, now)", sent, wildcard
        )
    return passed(
        "ignored an Upgrade End Response for another image; activated on one with wildcard ids",
        sent,
        answer,
        wildcard,
        rebooted,
    )


async def c17_out_of_band_policy(trial: Trial) -> Judgement:
    await trial.learn()
    chf = trial.chf
    policy = await trial.read(UPGRADE_ACTIVATION_POLICY)
    if policy is None:
        raise Inconclusive("the DUT did not answer a Read Attributes of UpgradeActivationPolicy (0x000B)")
    if policy.get(UPGRADE_ACTIVATION_POLICY, 0) != 1:
        raise NotApplicable(
            f"UpgradeActivationPolicy is {policy.get(UPGRADE_ACTIVATION_POLICY, 'unsupported (default 0)')}: "
            "the OTA server may activate, so there is nothing to refuse"
        )
    download = await trial.verified_download("now")
    assert download.response is not None
    after = chf.after(download.response)
    refusal = await chf.expect(
        lambda f: f.src != 0 and f.name == "Default_Response" and int(f.fields.get("command_id", -1)) == 0x07,
        trial.timing.response,
        after,
    )
    rebooted = await trial.reboot(after, 2 * trial.timing.response)
    if rebooted is not None:
        return failed(
            "activated on the server's UpgradeTime despite out-of-band activation policy", download.response, rebooted
        )
    if refusal is None or status_of(refusal) != Status.NOT_AUTHORIZED:
        got = "no Default Response" if refusal is None else f"Default Response 0x{status_of(refusal):02X}"
        return failed(
            f"{got} to an Upgrade End Response with UpgradeTime now (expected NOT_AUTHORIZED 0x7E)",
            download.response,
            refusal,
        )
    return passed(
        "refused the server's UpgradeTime with NOT_AUTHORIZED and did not activate", download.response, refusal
    )


async def c18_upgrade_timeout_policy(trial: Trial) -> Judgement:
    await trial.learn()
    chf = trial.chf
    policies = await trial.read(UPGRADE_ACTIVATION_POLICY, UPGRADE_TIMEOUT_POLICY)
    if policies is None:
        raise Inconclusive("the DUT did not answer a Read Attributes of UpgradeTimeoutPolicy (0x000C)")
    activation = policies.get(UPGRADE_ACTIVATION_POLICY, 0)
    timeout = policies.get(UPGRADE_TIMEOUT_POLICY, 0)
    if activation == 1 and timeout == 0:
        raise NotApplicable(
            "UpgradeActivationPolicy 1 with UpgradeTimeoutPolicy 0 is manufacturer specific (SE 1.2b 15-0324-02 "
            "§11.10.13), so there is no rule to hold the DUT to"
        )

    def unanswered(packet: t.ZigbeePacket, frame: frames.Frame) -> bool:
        return frame.name == "upgrade_end" and frame.command.status == Status.SUCCESS

    chf.rules.append(unanswered)
    download = await trial.download(trial.good_image("now"))
    end = download.end
    if end is None or download.end_status != Status.SUCCESS:
        raise Inconclusive(trial.rejection(download), evidence(end))
    timeline = trial.timeline(download.mark)
    after = chf.after(end)
    rebooted = await trial.reboot(after, TIMEOUT_WATCH)
    asked = chf.since(after, dut_sent("upgrade_end"))
    hours = TIMEOUT_WATCH / 3600
    if timeout == 0:
        if rebooted is None:
            return failed(
                f"UpgradeTimeoutPolicy 0 but never applied in {hours:g} h of unanswered Upgrade End Requests "
                f"({len(asked) + 1} sent)",
                end,
                asked[-1:],
                timeline=timeline,
            )
        return passed(
            f"UpgradeTimeoutPolicy 0: applied {rebooted.at - end.at:.0f} s after {len(asked) + 1} unanswered "
            "Upgrade End Requests",
            end,
            asked[-1:],
            rebooted,
            timeline=timeline,
        )
    if rebooted is not None:
        return failed(
            f"UpgradeTimeoutPolicy 1 but applied {rebooted.at - end.at:.0f} s after unanswered Upgrade End Requests",
            end,
            rebooted,
            timeline=timeline,
        )
    return passed(
        f"UpgradeTimeoutPolicy 1: did not apply in {hours:g} h without an Upgrade End Response", end, timeline=timeline
    )


async def c20_resume_after_restart(trial: Trial) -> Judgement:
    if not trial.dut.can(Ability.POWER_CYCLE):
        raise Inconclusive(trial.dut.unable(Ability.POWER_CYCLE))
    await trial.learn()
    chf = trial.chf
    held = trial.good_image("wait")
    half = held.size // 2
    tasks: list[asyncio.Task[None]] = []

    def power_cycle(packet: t.ZigbeePacket, frame: frames.Frame) -> bool:
        if tasks or frame.name not in REQUESTS or int(frame.command.file_offset) < half:
            return False
        tasks.append(asyncio.get_running_loop().create_task(trial.dut.power_cycle()))
        return True

    chf.rules.append(power_cycle)
    download = await trial.offer(held)
    stopped = await chf.expect(
        lambda f: f.src != 0 and f.name in REQUESTS and offset_of(f) >= half, trial.timing.transfer, download.mark
    )
    if stopped is None:
        raise Inconclusive("the transfer never reached half way", evidence(download.offer))
    await asyncio.gather(*tasks)
    had = offset_of(stopped)
    resumed = await chf.expect(dut_sent(*REQUESTS), trial.timing.spontaneous, chf.after(stopped))
    timeline = trial.timeline(download.mark)
    rebooted = chf.since(chf.after(stopped), dut_sent("Device_annce"))[:1]
    if resumed is None:
        raise Inconclusive("the DUT did not request blocks again after the restart", evidence(stopped, rebooted))
    offset = offset_of(resumed)
    if offset == 0:
        return failed(
            f"restarted the download from offset 0 (it had received {had} bytes)",
            stopped,
            rebooted,
            resumed,
            timeline=timeline,
        )
    if offset > had:
        return failed(
            f"resumed at offset {offset}, beyond the {had} bytes it had received", stopped, resumed, timeline=timeline
        )
    return passed(
        f"resumed at offset {offset} after a restart (it had received {had} bytes)",
        stopped,
        rebooted,
        resumed,
        timeline=timeline,
    )


async def _activated(trial: Trial) -> tuple[Download, int, str]:
    """A good image downloaded and activated the way the DUT allows: by the Upgrade End Response saying now, or
    — UpgradeActivationPolicy 1 — out of band (GB: Activate Firmware, CS06). (download, mark, how)."""
    if await trial.activation_policy() == 1:
        if not trial.dut.can(Ability.GBCS):
            raise Inconclusive(
                "UpgradeActivationPolicy is 1: only an out-of-band activation (GB: Activate Firmware, CS06) switches "
                f"its firmware, and {trial.dut.unable(Ability.GBCS)}"
            )
        download = await trial.verified_download("wait")
        await asyncio.sleep(5.0)
        mark = trial.chf.mark()
        try:
            await trial.dut.activate_firmware(manufacturer_image_hash(download.held.image))
        except Unable as exc:
            raise Inconclusive(exc.reason) from None
        return download, mark, "Activate Firmware (CS06, out-of-band activation)"
    download = await trial.verified_download("now")
    assert download.response is not None
    return download, trial.chf.after(download.response), "an Upgrade End Response saying now"


async def c21_attributes_after_upgrade(trial: Trial) -> Judgement:
    await trial.learn()
    download, mark, how = await _activated(trial)
    timeline = trial.timeline(download.mark)
    rebooted = await trial.reboot(mark, 2 * trial.timing.response)
    await asyncio.sleep(5.0)
    values = await trial.read(CURRENT_FILE_VERSION, IMAGE_TYPE_ID, IMAGE_UPGRADE_STATUS)
    if values is None:
        raise Inconclusive("the DUT did not answer a Read Attributes of its OTA client attributes", evidence(rebooted))
    new = download.held.file_version
    reads = trial.chf.since(mark, dut_sent("Read_Attributes_rsp"))[-1:]
    shown = [download.response, rebooted, *reads]
    if CURRENT_FILE_VERSION in values:
        running: int | None = values[CURRENT_FILE_VERSION]
        source = "CurrentFileVersion"
    else:
        query = await trial.queried_version()
        running = None if query is None else int(query.fields["current_file_version"])
        source = "its Query Next Image Request (CurrentFileVersion is optional and not supported)"
        shown.append(query)
    if running is None:
        raise Inconclusive(
            "CurrentFileVersion is not supported and the DUT sent no Query Next Image Request after "
            f"{how}, so the version it runs is not known",
            evidence(*shown),
        )
    if running != new:
        raise Inconclusive(
            f"the DUT still runs 0x{running:08X} (per {source}) after {how}: it did not activate 0x{new:08X}, "
            "so there are no after-activation attributes to judge (C-15, C-22a, C-23b judge activation)",
            evidence(*shown),
        )
    expected = {IMAGE_TYPE_ID: 0xFFFF, IMAGE_UPGRADE_STATUS: 0}
    wrong = {k: values[k] for k, v in expected.items() if k in values and values[k] != v}
    if wrong:
        text = ", ".join(f"0x{k:04X} = 0x{v:X} (expected 0x{expected[k]:X})" for k, v in wrong.items())
        return failed(f"after activating 0x{new:08X}: {text}", *shown, timeline=timeline)
    told = ", ".join(
        text
        for key, text in (
            (CURRENT_FILE_VERSION, f"CurrentFileVersion 0x{new:08X}"),
            (IMAGE_TYPE_ID, "ImageTypeID 0xFFFF"),
            (IMAGE_UPGRADE_STATUS, "ImageUpgradeStatus 0"),
        )
        if key in values
    )
    if CURRENT_FILE_VERSION not in values:
        told = f"runs 0x{new:08X} (per {source}); {told}"
    return passed(f"{told} after {how}", *shown, timeline=timeline)


async def play_page_fallback(trial: Trial) -> Transfer:
    """C-PAGE: a whole transfer from a CHF that refuses Image Page Requests."""
    await trial.learn()
    trial.chf.configure(page_requests=False)
    return trial.transfer(await trial.download(trial.good_image("wait")))


def judge_page_fallback(transfer: Transfer) -> Judgement:
    timeline = transfer.timeline
    pages = transfer.since(dut_sent("image_page"))
    if not pages:
        return Judgement(
            Verdict.NOT_APPLICABLE,
            "the DUT fetched with Image Block Requests only; the fallback rule applies to clients that send "
            "Image Page Requests",
            [],
        )
    refused = transfer.first(
        lambda f: f.src == 0 and f.name == "Default_Response" and f.fields.get("status") == Status.UNSUP_CLUSTER_COMMAND
    )
    if refused is None:
        return inconclusive("the CHF's refusal of the page request is not in the record", pages[0])
    more_pages = transfer.since(dut_sent("image_page"), after=refused)
    blocks = transfer.since(dut_sent("image_block"), after=refused)
    if more_pages:
        return failed(
            f"sent {len(more_pages)} more Image Page Request(s) after the CHF refused them (0x81)",
            pages[0],
            refused,
            more_pages[:2],
            timeline=timeline,
        )
    if not blocks:
        return failed(
            "did not go on with Image Block Requests after page requests were refused",
            pages[0],
            refused,
            timeline=timeline,
        )
    return passed(
        f"fell back to Image Block Requests after 0x81 ({len(blocks)} block requests)",
        pages[0],
        refused,
        blocks[0],
        transfer.download.end,
        timeline=timeline,
    )


SCENARIOS: dict[str, Scenario] = {
    "C-01": c01_unicast_notify,
    "C-02a": c02a_broadcast_mismatch,
    "C-02b": c02b_broadcast_own_version,
    "C-03": c03_query_jitter,
    "C-05": c05_same_version_offer,
    "C-09": c09_abort,
    "C-10": c10_no_image_default_responses,
    "C-11": c11_resend,
    "C-12a": c12a_corrupted_image,
    "C-12b": c12b_other_hardware,
    "C-14": c14_told_to_wait,
    "C-15a": c15a_relative_upgrade_time,
    "C-15b": c15b_absolute_upgrade_time,
    "C-16": c16_foreign_upgrade_end,
    "C-17": c17_out_of_band_policy,
    "C-18": c18_upgrade_timeout_policy,
    "C-20": c20_resume_after_restart,
    "C-21": c21_attributes_after_upgrade,
}

# Play steps that record evidence for a pure judge (the `judge_…` functions above), by name.
EVIDENCE_PLAYS: dict[str, Callable[[Trial], Awaitable[Any]]] = {
    "first-query": play_first_query,
    "block-loop": play_block_loop,
    "wrong-block": play_wrong_block,
    "wait-for-data": play_wait_for_data,
    "minimum-block-period": play_minimum_block_period,
    "good-image": play_good_image,
    "page-fallback": play_page_fallback,
}
