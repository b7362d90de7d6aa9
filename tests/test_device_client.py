"""The OTA client state machine against a scripted server on the air: SPEC.md §9.3 C-01 … C-21 (C-20 is in
test_device_state.py, C-22/C-23 in test_device_gb.py)."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from test_device_harness import (
    MFR,
    PPMID_TYPE,
    Received,
    Status,
    bench,
    gb_image,
    notify,
    ppmid_profile,
    vrun,
)

from emulator.device import events
from emulator.device.client import DISCOVERY_RETRY
from emulator.ota import frames

WAIT = frames.UPGRADE_TIME_WAIT


async def settle(seconds: float = 2.0) -> None:
    await asyncio.sleep(seconds)


# -- C-01 / C-02 / C-03: Image Notify ------------------------------------------------------------------------


@pytest.mark.parametrize("payload_type", [0, 1, 2, 3])
def test_c01_unicast_notify_always_queries(payload_type: int) -> None:
    async def main() -> None:
        b = await bench()
        await b.server.wait_for("query_next_image")
        # Fields that would disqualify a broadcast: another manufacturer, another type, the running version.
        fields = {"manufacturer_code": 0x9999, "image_type": 0x7777, "new_file_version": 1}
        present = list(fields)[:payload_type]
        notify(b.server, payload_type, 1, **{k: fields[k] for k in present})
        await settle()
        assert len(b.server.sent("query_next_image")) == 2
        assert b.log.of(events.NotifyReceived)[0].queried
        await b.device.stop()

    vrun(main)


@pytest.mark.parametrize(
    ("fields", "queries", "reason"),
    [
        ({"payload_type": 1, "manufacturer_code": 0x9999}, False, "manufacturer"),
        ({"payload_type": 2, "manufacturer_code": MFR, "image_type": 0x7777}, False, "image type"),
        (
            {"payload_type": 3, "manufacturer_code": MFR, "image_type": PPMID_TYPE, "new_file_version": 1},
            False,
            "already have",
        ),
        (
            {"payload_type": 3, "manufacturer_code": MFR, "image_type": PPMID_TYPE, "new_file_version": 5},
            True,
            "matches",
        ),
        (
            {"payload_type": 3, "manufacturer_code": 0xFFFF, "image_type": 0xFFFF, "new_file_version": 0},
            True,
            "matches",
        ),
        ({"payload_type": 0}, True, "matches"),
    ],
)
def test_c02_broadcast_notify_is_checked_against_own_values(fields: dict, queries: bool, reason: str) -> None:
    async def main() -> None:
        b = await bench()
        await b.server.wait_for("query_next_image")
        notify(b.server, jitter=100, broadcast=True, **fields)
        await settle()
        assert len(b.server.sent("query_next_image")) == (2 if queries else 1)
        seen = b.log.of(events.NotifyReceived)[0]
        assert seen.broadcast and seen.queried == queries and reason in seen.reason
        await b.device.stop()

    vrun(main)


def test_c02_broadcast_notify_gets_no_default_response_even_without_ddr() -> None:
    async def main() -> None:
        b = await bench()
        await b.server.wait_for("query_next_image")
        data = frames.encode(
            "image_notify",
            tsn=5,
            payload_type=1,
            query_jitter=100,
            manufacturer_code=0x9999,
            disable_default_response=False,
        )
        b.server.send(data, broadcast=0xFFFF, dst_ep=0xFF)
        b.server.send(data, dst=0x1234)  # the same frame unicast: Default Response SUCCESS (ZCL, DDR clear)
        await settle()
        replies = b.server.sent("Default_Response")
        assert [r.data for r in replies] == [
            frames.default_response(tsn=5, command_id=0, status=Status.SUCCESS, direction=frames.C2S)
        ]
        await b.device.stop()

    vrun(main)


def test_c03_query_jitter_is_honoured_statistically() -> None:
    async def main() -> None:
        b = await bench(ppmid_profile(query_interval=10**6))
        await b.server.wait_for("query_next_image")
        rounds = 500
        for _ in range(rounds):
            notify(b.server, 0, 50, broadcast=True)
            await settle(0.5)
        seen = b.log.of(events.NotifyReceived)
        assert len(seen) == rounds
        queried = sum(n.queried for n in seen)
        assert 0.40 * rounds <= queried <= 0.60 * rounds
        assert len(b.server.sent("query_next_image")) == 1 + queried
        assert all("jitter" in n.reason for n in seen if not n.queried)
        await b.device.stop()

    vrun(main)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x00\x00", "jitter 0"),
        (b"\x00\x65", "jitter 101"),
        (b"\x04\x32", "reserved payload type 4"),
        (b"\x07\x64\x1d\x12\x84\x00\x02\x00\x00\x00", "payload type 7"),
    ],
)
def test_c03_invalid_jitter_or_payload_type_is_ignored_silently(payload: bytes, reason: str) -> None:
    async def main() -> None:
        b = await bench()
        await b.server.wait_for("query_next_image")
        b.server.send(bytes([0x09, 0x33, 0x00]) + payload, dst=0x1234)  # unicast, default response wanted
        await settle()
        assert len(b.server.sent("query_next_image")) == 1
        assert b.server.sent("Default_Response") == []
        seen = b.log.of(events.NotifyReceived)
        assert len(seen) == 1 and not seen[0].queried and reason.rsplit(maxsplit=1)[-1] in seen[0].reason
        await b.device.stop()

    vrun(main)


# -- C-04 / C-05: queries ------------------------------------------------------------------------------------


def test_c04_query_carries_the_hardware_version() -> None:
    async def main() -> None:
        b = await bench(ppmid_profile(hardware_version=0x1105, file_version=0x01020304))
        (query,) = await b.server.wait_for("query_next_image")
        tsn = query.frame.tsn
        assert query.data == bytes([0x01, tsn, 0x01, 0x01]) + bytes.fromhex("1d128400040302010511")
        await b.device.stop()

    vrun(main)


def test_c04_query_without_hardware_version_has_field_control_zero() -> None:
    async def main() -> None:
        b = await bench(ppmid_profile(hardware_version=None))
        (query,) = await b.server.wait_for("query_next_image")
        assert query.data[3:] == bytes.fromhex("001d12840001000000")
        await b.device.stop()

    vrun(main)


def test_c05_no_image_means_the_next_query_after_the_interval() -> None:
    async def main() -> None:
        b = await bench(ppmid_profile(query_interval=1800))
        queries = await b.server.wait_for("query_next_image", 3)
        assert queries[1].at - queries[0].at == pytest.approx(1800, abs=0.1)
        assert queries[2].at - queries[1].at == pytest.approx(1800, abs=0.1)
        assert [a.status for a in b.log.of(events.QueryAnswered)][:2] == [Status.NO_IMAGE_AVAILABLE] * 2
        await b.device.stop()

    vrun(main)


def test_c05_not_authorized_sends_the_client_back_to_discovery() -> None:
    async def main() -> None:
        b = await bench()
        b.server.on["query_next_image"] = lambda r: frames.encode(
            "query_next_image_response", tsn=r.frame.tsn, status=Status.NOT_AUTHORIZED
        )
        await b.server.wait_for("query_next_image")
        matches = await b.server.wait_for("zdo:0006", 2, within=60)
        assert matches[1].at > b.server.sent("query_next_image")[0].at
        await b.device.stop()

    vrun(main)


@pytest.mark.parametrize("version", [1, 2])
def test_c05_offer_of_running_or_downloaded_version_is_discarded(version: int) -> None:
    """Version 1 is running. Version 2 is downloaded and held (the server said wait) when it is offered again
    after a unicast Image Notify."""

    async def main() -> None:
        image = gb_image(2, size=100)
        b = await bench(ppmid_profile(), image=image)

        def offer(r: Received) -> bytes:
            return frames.encode(
                "query_next_image_response",
                tsn=r.frame.tsn,
                status=Status.SUCCESS,
                manufacturer_code=MFR,
                image_type=PPMID_TYPE,
                file_version=version,
                image_size=len(image),
            )

        if version == 2:
            b.server.upgrade_time = "wait"
            await b.log.wait(events.WaitingToUpgrade)
            b.server.on["query_next_image"] = offer
            blocks_before = len(b.server.sent("image_block"))
            notify(b.server, 0, 100)
        else:
            b.server.on["query_next_image"] = offer
            blocks_before = 0
        (offered,) = await b.log.wait(events.ImageOffered, accepted=False)
        await settle()
        assert "already running or downloaded" in offered.reason
        assert len(b.server.sent("image_block")) == blocks_before
        assert b.device.attributes[0x0006] == (3 if version == 2 else 0)
        await b.device.stop()

    vrun(main)


def test_c05_newer_offer_while_holding_replaces_the_held_image() -> None:
    async def main() -> None:
        b = await bench(ppmid_profile(), image=gb_image(2, size=100))
        b.server.upgrade_time = "wait"
        await b.log.wait(events.WaitingToUpgrade)
        newer = gb_image(3, size=120)
        b.server.image = newer
        b.server.upgrade_time = "now"
        notify(b.server, 0, 100)
        (activated,) = await b.log.wait(events.Activated)
        assert activated.new_version == 3 and b.device.state.running_image == newer
        await b.device.stop()

    vrun(main)


# -- C-06 … C-11: the block loop ------------------------------------------------------------------------------


def test_c06_offsets_are_contiguous_and_file_offset_tracks_them() -> None:
    async def main() -> None:
        image = gb_image(size=500)
        b = await bench(image=image)
        seen: list[tuple[int, int, int]] = []

        def block(r: Received) -> bytes:
            attrs = b.device.attributes
            seen.append((r.frame.command.file_offset, attrs[0x0001], attrs[0x0006]))
            return b.server.block(r)

        b.server.on["image_block"] = block
        before = b.device.attributes[0x0006]
        await b.log.wait(events.ImageVerified)
        offsets = [s[0] for s in seen]
        assert before == 0
        assert offsets == list(range(0, len(image), 63))
        assert all(file_offset == offset and status == 1 for offset, file_offset, status in seen)
        assert [p.offset for p in b.log.of(events.Progress)] == [min(o + 63, len(image)) for o in offsets]
        await b.device.stop()

    vrun(main)


def test_c07_block_at_the_wrong_offset_is_ignored_and_the_offset_requested_again() -> None:
    async def main() -> None:
        image = gb_image(size=300)
        b = await bench(image=image)
        answered: list[int] = []

        def block(r: Received) -> bytes:
            offset = r.frame.command.file_offset
            if offset == 63 and 63 not in answered:
                answered.append(63)
                return b.server.block(r, offset=126)
            return b.server.block(r)

        b.server.on["image_block"] = block
        await b.log.wait(events.ImageVerified)
        offsets = [r.frame.command.file_offset for r in b.server.sent("image_block")]
        assert offsets[:3] == [0, 63, 63]
        first, again = b.server.sent("image_block")[1:3]
        assert again.at - first.at == pytest.approx(5.0, abs=0.05)  # after response_timeout, not at once
        assert b.log.of(events.ImageVerified)[0].ok
        await b.device.stop()

    vrun(main)


def test_c07_block_for_another_image_is_rejected_with_invalid_value() -> None:
    async def main() -> None:
        image = gb_image(size=300)
        b = await bench(image=image)
        bad: list[int] = []

        def block(r: Received) -> bytes:
            if not bad:
                bad.append(r.frame.tsn)
                return b.server.block(r, file_version=9)
            return b.server.block(r)

        b.server.on["image_block"] = block
        await b.log.wait(events.ImageVerified)
        (reply,) = b.server.sent("Default_Response")
        assert reply.data == frames.default_response(
            tsn=bad[0], command_id=0x05, status=Status.INVALID_VALUE, direction=frames.C2S
        )
        assert [r.frame.command.file_offset for r in b.server.sent("image_block")][:2] == [0, 0]
        await b.device.stop()

    vrun(main)


def test_c08_wait_for_data_waits_the_requested_time() -> None:
    async def main() -> None:
        b = await bench(image=gb_image(size=200))
        calls: list[int] = []

        def block(r: Received) -> bytes:
            calls.append(1)
            if len(calls) == 1:
                return frames.encode(
                    "image_block_response",
                    tsn=r.frame.tsn,
                    status=Status.WAIT_FOR_DATA,
                    current_time=1000,
                    request_time=1090,
                )
            return b.server.block(r)

        b.server.on["image_block"] = block
        await b.log.wait(events.ImageVerified)
        first, second = b.server.sent("image_block")[:2]
        assert second.at - first.at == pytest.approx(90, abs=0.1)
        assert second.frame.command.file_offset == 0
        assert b.log.of(events.WaitingForData)[0].delay == 90
        await b.device.stop()

    vrun(main)


@pytest.mark.parametrize(("current", "requested", "delay"), [(500, 100, 300), (0, 7200, 3600)])
def test_c08_invalid_or_long_waits_are_bounded(current: int, requested: int, delay: float) -> None:
    async def main() -> None:
        b = await bench(image=gb_image(size=100))
        b.server.on["image_block"] = lambda r: (
            frames.encode(
                "image_block_response",
                tsn=r.frame.tsn,
                status=Status.WAIT_FOR_DATA,
                current_time=current,
                request_time=requested,
            )
            if len(b.server.sent("image_block")) == 1
            else b.server.block(r)
        )
        await b.server.wait_for("image_block", 2)
        first, second = b.server.sent("image_block")[:2]
        assert second.at - first.at == pytest.approx(delay, abs=0.1)
        await b.device.stop()

    vrun(main)


def test_c08_minimum_block_period_is_adopted_and_spaces_requests() -> None:
    async def main() -> None:
        b = await bench(ppmid_profile(block_period_unit="ms"), image=gb_image(size=400))

        def block(r: Received) -> bytes:
            if len(b.server.sent("image_block")) == 1:
                return frames.encode(
                    "image_block_response",
                    tsn=r.frame.tsn,
                    status=Status.WAIT_FOR_DATA,
                    current_time=1000,
                    request_time=1000,
                    minimum_block_period=1500,
                )
            return b.server.block(r)

        b.server.on["image_block"] = block
        await b.log.wait(events.ImageVerified)
        reqs = b.server.sent("image_block")
        assert reqs[0].frame.command.minimum_block_period == 0
        assert reqs[1].at - reqs[0].at == pytest.approx(1.5, abs=0.05)  # RequestTime == CurrentTime: the period
        assert all(r.frame.command.minimum_block_period == 1500 for r in reqs[1:])
        gaps = [b2.at - b1.at for b1, b2 in itertools.pairwise(reqs[1:])]
        assert gaps and min(gaps) >= 1.5 - 1e-9
        assert b.device.attributes[0x0009] == 1500
        await b.device.stop()

    vrun(main)


def test_c08_minimum_block_period_in_seconds() -> None:
    async def main() -> None:
        b = await bench(ppmid_profile(block_period_unit="s", minimum_block_period=3), image=gb_image(size=200))
        await b.log.wait(events.ImageVerified)
        reqs = b.server.sent("image_block")
        gaps = [b2.at - b1.at for b1, b2 in itertools.pairwise(reqs)]
        assert len(gaps) == 4 and min(gaps) >= 3.0 - 1e-9
        assert reqs[0].data[3] == 0x02 and reqs[0].frame.command.minimum_block_period == 3
        await b.device.stop()

    vrun(main)


@pytest.mark.parametrize("status", [Status.ABORT, Status.NO_IMAGE_AVAILABLE])
def test_c09_block_response_abort_stops_without_upgrade_end(status: Status) -> None:
    async def main() -> None:
        b = await bench(ppmid_profile(query_interval=1000), image=gb_image(size=300))
        b.server.on["image_block"] = lambda r: (
            frames.encode("image_block_response", tsn=r.frame.tsn, status=status)
            if r.frame.command.file_offset == 126
            else b.server.block(r)
        )
        aborted = await b.log.wait(events.DownloadAborted)
        queries = await b.server.wait_for("query_next_image", 2)
        await b.server.wait_for("image_block", 6)
        assert not aborted[0].upgrade_end_sent and aborted[0].offset == 126
        assert b.server.sent("upgrade_end") == []
        assert [r.frame.command.file_offset for r in b.server.sent("image_block")] == [0, 63, 126, 0, 63, 126]
        assert queries[1].at - b.server.sent("image_block")[2].at == pytest.approx(1000, abs=0.1)
        assert b.device.attributes[0x0006] in (0, 1)
        await b.device.stop()

    vrun(main)


def test_c10_three_no_image_default_responses_end_the_download() -> None:
    async def main() -> None:
        b = await bench(ppmid_profile(query_interval=1000), image=gb_image(size=300))
        b.server.on["image_block"] = lambda r: (
            frames.default_response(
                tsn=r.frame.tsn, command_id=3, status=Status.NO_IMAGE_AVAILABLE, direction=frames.S2C
            )
            if r.frame.command.file_offset >= 63
            else b.server.block(r)
        )
        (end,) = await b.server.wait_for("upgrade_end")
        assert end.frame.command.status == Status.ABORT
        assert [r.frame.command.file_offset for r in b.server.sent("image_block")] == [0, 63, 63, 63]
        assert b.log.of(events.DownloadAborted)[0].upgrade_end_sent
        assert b.device.attributes[0x0006] == 0
        await b.device.stop()

    vrun(main)


def test_c11_unanswered_requests_are_resent_then_aborted() -> None:
    async def main() -> None:
        b = await bench(ppmid_profile(max_resends=3, response_timeout=4), image=gb_image(size=300))
        b.server.on["image_block"] = lambda r: None if r.frame.command.file_offset == 63 else b.server.block(r)
        (end,) = await b.server.wait_for("upgrade_end")
        reqs = b.server.sent("image_block")
        assert [r.frame.command.file_offset for r in reqs] == [0, 63, 63, 63, 63]
        gaps = [r2.at - r1.at for r1, r2 in itertools.pairwise(reqs[1:])]
        assert gaps == pytest.approx([4.0, 4.0, 4.0], abs=0.01)
        assert end.frame.command.status == Status.ABORT and end.at - reqs[-1].at == pytest.approx(4.0, abs=0.01)
        assert end.data[3:] == bytes([0x95]) + bytes.fromhex("1d12840002000000")
        await b.device.stop()

    vrun(main)


def test_c11_query_that_gets_no_answer_is_resent() -> None:
    async def main() -> None:
        b = await bench(ppmid_profile(max_resends=2, response_timeout=5))
        b.server.on["query_next_image"] = lambda r: None
        queries = await b.server.wait_for("query_next_image", 3)
        assert [q.at - queries[0].at for q in queries] == pytest.approx([0, 5, 10], abs=0.01)
        matches = await b.server.wait_for("zdo:0006", 2)
        assert matches[1].at == pytest.approx(queries[2].at + 5, abs=0.01)
        await b.device.stop()

    vrun(main)


# -- C-12 … C-19: after the download --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_args", "reason"),
    [
        ({"hw_min": 0x1200, "hw_max": 0x1300}, "hardware version"),
        ({"destination": "00:11:22:33:44:55:66:77"}, "device-specific"),
        ({"manufacturer": 0x1234}, "manufacturer"),
    ],
)
def test_c12_image_not_for_this_device_is_invalid(image_args: dict, reason: str) -> None:
    async def main() -> None:
        manufacturer = image_args.pop("manufacturer", MFR)
        image = gb_image(size=200, manufacturer=manufacturer, **image_args)
        b = await bench(image=image)
        if manufacturer != MFR:  # the server claims our manufacturer; the header says otherwise
            b.server.on["query_next_image"] = lambda r: frames.encode(
                "query_next_image_response",
                tsn=r.frame.tsn,
                status=Status.SUCCESS,
                manufacturer_code=MFR,
                image_type=PPMID_TYPE,
                file_version=2,
                image_size=len(image),
            )
            b.server.on["image_block"] = lambda r: b.server.block(r, manufacturer_code=MFR)
        (end,) = await b.server.wait_for("upgrade_end")
        verdict = b.log.of(events.ImageVerified)[0]
        assert end.frame.command.status == Status.INVALID_IMAGE and not verdict.ok and reason in verdict.reason
        assert b.device.attributes[0x0006] == 0 and b.device.attributes[0x0004] == 0xFFFFFFFF
        assert b.device.downloaded_image is None
        await b.device.stop()

    vrun(main)


def test_c13_good_image_gives_status_2_and_upgrade_end_success() -> None:
    async def main() -> None:
        image = gb_image(7, size=200)
        b = await bench(image=image)
        status_at_end: list[int] = []

        def end(r: Received) -> None:
            status_at_end.append(b.device.attributes[0x0006])

        b.server.on["upgrade_end"] = end
        (request,) = await b.server.wait_for("upgrade_end")
        assert request.data[3:] == bytes.fromhex("001d12840007000000")
        assert status_at_end == [2]
        assert b.device.downloaded_image == image
        assert b.device.attributes[0x0004] == 7
        await b.device.stop()

    vrun(main)


def test_c14_told_to_wait_the_client_holds_and_asks_again() -> None:
    async def main() -> None:
        b = await bench(ppmid_profile(upgrade_end_retry=1200), image=gb_image(size=200))
        b.server.upgrade_time = "wait"
        ends = await b.server.wait_for("upgrade_end", 3)
        assert [e.at - ends[0].at for e in ends] == pytest.approx([0, 1200, 2400], abs=0.05)
        assert b.device.attributes[0x0006] == 3
        assert b.device.running_version == 1 and b.log.of(events.Activated) == []
        await b.device.stop()

    vrun(main)


def test_c15_relative_upgrade_time_counts_down() -> None:
    async def main() -> None:
        b = await bench(image=gb_image(size=200))
        b.server.upgrade_time = 120  # CurrentTime 0: relative
        (end,) = await b.server.wait_for("upgrade_end")
        await b.log.wait(events.CountdownStarted)
        assert b.device.attributes[0x0006] == 4
        (activated,) = await b.log.wait(events.Activated)
        assert activated.at - end.at == pytest.approx(120, abs=0.05)
        assert b.device.running_version == 2
        await b.device.stop()

    vrun(main)


def test_c15_absolute_upgrade_time_applies_then() -> None:
    async def main() -> None:
        b = await bench(image=gb_image(size=200))
        b.server.on["upgrade_end"] = lambda r: b.server.upgrade_end_response(
            r.frame.tsn, current=b.clock.zcl_utc(), upgrade=b.clock.zcl_utc() + 7200
        )
        (end,) = await b.server.wait_for("upgrade_end")
        (activated,) = await b.log.wait(events.Activated)
        assert activated.at - end.at == pytest.approx(7200, abs=1.0)
        await b.device.stop()

    vrun(main)


@pytest.mark.parametrize(
    ("ids", "activates"),
    [
        ({"file_version": 3}, False),
        ({"image_type": 0x0001}, False),
        ({"manufacturer_code": 0x0001}, False),
        ({"manufacturer_code": 0xFFFF, "image_type": 0xFFFF, "file_version": 0xFFFFFFFF}, True),
        ({"file_version": 0xFFFFFFFF}, True),
    ],
)
def test_c16_upgrade_end_response_for_another_image_is_ignored(ids: dict, activates: bool) -> None:
    async def main() -> None:
        b = await bench(image=gb_image(size=200))
        b.server.on["upgrade_end"] = lambda r: b.server.upgrade_end_response(r.frame.tsn, current=0, upgrade=0, **ids)
        await b.server.wait_for("upgrade_end")
        await settle(3)
        assert bool(b.log.of(events.Activated)) == activates
        assert b.device.running_version == (2 if activates else 1)
        rejected = b.server.sent("Default_Response")
        assert [r.frame.command.status for r in rejected] == ([] if activates else [Status.INVALID_VALUE])
        await b.device.stop()

    vrun(main)


def test_c17_out_of_band_policy_refuses_server_activation() -> None:
    async def main() -> None:
        b = await bench(ppmid_profile(upgrade_activation_policy=1), image=gb_image(size=200))
        (end,) = await b.server.wait_for("upgrade_end")
        (reply,) = await b.server.wait_for("Default_Response")
        assert reply.data == frames.default_response(
            tsn=end.frame.tsn, command_id=0x07, status=Status.NOT_AUTHORIZED, direction=frames.C2S
        )
        await settle(7200)
        assert b.log.of(events.Activated) == [] and b.device.attributes[0x0006] == 6
        assert b.log.of(events.WaitingToUpgrade)[0].external
        await b.device.stop()

    vrun(main)


@pytest.mark.parametrize("policy", [0, 1])
def test_c18_no_upgrade_end_response_applies_per_timeout_policy(policy: int) -> None:
    async def main() -> None:
        profile = ppmid_profile(upgrade_timeout_policy=policy, upgrade_wait_threshold=3, upgrade_end_retry=900)
        b = await bench(profile, image=gb_image(size=200))
        b.server.on["upgrade_end"] = lambda r: None
        ends = await b.server.wait_for("upgrade_end", 3)
        assert [e.at - ends[0].at for e in ends] == pytest.approx([0, 605, 1210], abs=0.05)  # timeout 5 + retry 600
        await settle(5 * 3600)
        if policy == 0:
            (activated,) = b.log.of(events.Activated)
            assert activated.at == pytest.approx(ends[2].at + 5, abs=0.05) and b.device.running_version == 2
            assert len(b.server.sent("upgrade_end")) == 3
        else:
            assert b.log.of(events.Activated) == [] and b.device.running_version == 1
            assert len(b.server.sent("upgrade_end")) > 10
        await b.device.stop()

    vrun(main)


def test_c19_require_more_image_fetches_the_next_image_type() -> None:
    async def main() -> None:
        main_image = gb_image(2, size=150)
        extra = gb_image(2, image_type=0x0090, size=100)
        b = await bench(image=main_image, more_image_types=(0x0090,))
        images = {PPMID_TYPE: main_image, 0x0090: extra}

        def query(r: Received) -> bytes:
            kind = r.frame.command.image_type
            b.server.image = images[kind]
            return b.server._default_query_next_image(r)

        b.server.on["query_next_image"] = query
        (more,) = await b.server.wait_for("upgrade_end")
        assert more.frame.command.status == Status.REQUIRE_MORE_IMAGE
        status_then = b.device.attributes[0x0006]
        queries = await b.server.wait_for("query_next_image", 2)
        assert status_then == 5 and queries[1].frame.command.image_type == 0x0090
        ends = await b.server.wait_for("upgrade_end", 2)
        assert ends[1].frame.command.status == Status.SUCCESS and ends[1].frame.command.image_type == 0x0090
        (activated,) = await b.log.wait(events.Activated)
        assert activated.success and b.device.running_version == 2
        await b.device.stop()

    vrun(main)


def test_c21_after_activation_the_attributes_describe_the_new_firmware() -> None:
    async def main() -> None:
        b = await bench(image=gb_image(0x00020003, size=200))
        await b.log.wait(events.Activated)
        attrs = b.device.attributes
        assert attrs[0x0002] == 0x00020003 and attrs[0x0008] == 0xFFFF and attrs[0x0006] == 0
        assert attrs[0x0001] == 0xFFFFFFFF and attrs[0x0004] == 0xFFFFFFFF and attrs[0x0005] == 0xFFFF
        assert len(b.log.of(events.Announced)) == 2  # joined, then rebooted into the new firmware
        await b.device.stop()

    vrun(main)


def test_s14_unsolicited_upgrade_end_response_activates_a_waiting_device() -> None:
    async def main() -> None:
        b = await bench(image=gb_image(size=200))
        b.server.upgrade_time = "wait"
        await b.log.wait(events.WaitingToUpgrade)
        now = b.clock.zcl_utc()
        data = b.server.upgrade_end_response(
            b.server.next_tsn(),
            current=now,
            upgrade=now + 60,
            manufacturer_code=0xFFFF,
            image_type=0xFFFF,
            file_version=0xFFFFFFFF,
        )
        b.server.send(data, broadcast=0xFFFF, dst_ep=0xFF)
        sent_at = b.clock.now()
        (activated,) = await b.log.wait(events.Activated)
        assert activated.at - sent_at == pytest.approx(60, abs=0.1) and b.device.running_version == 2
        await b.device.stop()

    vrun(main)


# -- page requests -----------------------------------------------------------------------------------------


def test_page_request_unsupported_falls_back_to_blocks_for_good() -> None:
    async def main() -> None:
        b = await bench(ppmid_profile(page_requests=True, page_size=256), image=gb_image(size=600))
        await b.log.wait(events.ImageVerified)
        assert len(b.server.sent("image_page")) == 1
        assert [r.frame.command.file_offset for r in b.server.sent("image_block")][:2] == [0, 63]
        assert len(b.log.of(events.PageFallback)) == 1 and b.device.state.page_fallback
        await b.device.stop()

    vrun(main)


def test_page_request_collects_the_page_and_fetches_missed_blocks() -> None:
    async def main() -> None:
        image = gb_image(size=600)
        b = await bench(ppmid_profile(page_requests=True, page_size=256, max_data_size=50), image=image)
        loop = asyncio.get_running_loop()

        def page(r: Received) -> None:
            cmd = r.frame.command
            end = min(cmd.file_offset + cmd.page_size, len(image))
            for index, offset in enumerate(range(cmd.file_offset, end, cmd.maximum_data_size)):
                if offset in (100, 356):  # lost on the air
                    continue
                size = min(cmd.maximum_data_size, end - offset)
                data = frames.encode(
                    "image_block_response",
                    tsn=r.frame.tsn,
                    status=Status.SUCCESS,
                    manufacturer_code=cmd.manufacturer_code,
                    image_type=cmd.image_type,
                    file_version=cmd.file_version,
                    file_offset=offset,
                    image_data=image[offset : offset + size],
                )
                loop.call_later(index * cmd.response_spacing / 1000, b.server.reply, r, data)

        b.server.on["image_page"] = page
        (verified,) = await b.log.wait(events.ImageVerified)
        assert verified.ok
        pages = [r.frame.command.file_offset for r in b.server.sent("image_page")]
        blocks = [
            (r.frame.command.file_offset, r.frame.command.maximum_data_size) for r in b.server.sent("image_block")
        ]
        assert pages == [0, 256, 512]
        assert blocks == [(100, 50), (356, 50)]  # exactly the missing pieces
        assert b.device.downloaded_image == image
        await b.device.stop()

    vrun(main)


def test_discovery_retries_later_when_no_server_matches() -> None:
    async def main() -> None:
        b = await bench(start=False)
        b.server.match = False
        await b.device.start()
        failed = await b.log.wait(events.DiscoveryFailed)
        b.server.match = True
        (found,) = await b.log.wait(events.ServerDiscovered)
        assert "no OTA server" in failed[0].reason
        assert found.at - failed[0].at == pytest.approx(DISCOVERY_RETRY, abs=0.1)
        assert b.device.attributes[0x0000] == b.server.ieee
        await b.device.stop()

    vrun(main)
