"""What the probes play for each server check: a scenario joins probes to a target's bench, sends the requests the
check names and records every answer in the transcript, judging nothing. Checks that read the same exchange share
one scenario (by name in `SCENARIOS`), so a run plays it once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from emulator.conformance.server.answers import first_block
from emulator.conformance.server.keys import KeyProbe, Presented, holds_link_key, in_clear, presented_credentials
from emulator.conformance.server.plan import (
    CONCURRENT_DATA_SIZE,
    FAILED_END_STATUSES,
    HARDWARE_RANGE,
    LISTEN,
    MANUFACTURER,
    MAX_DATA_SIZE,
    MISSING_FILE,
    MISSING_FILE_OFFSET,
    PAGE,
    SMALL_DATA_SIZE,
    SPARE_IEEE,
    SPECIFIC_IMAGE_TYPE,
    TARGET_IEEES,
)
from emulator.conformance.server.probe import Exchange, Probe, wait_seconds
from emulator.conformance.server.targets import Bench, OursBench, ScenarioError
from emulator.conformance.server.transcript import KeyRecord, OtaAttempt, Transcript
from emulator.gb.codes import TransferResponse
from emulator.ota.frames import Status
from emulator.security import key_establishment as ke

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
            answer = first_block(tr.add(await probe.block(label, key, 0, MAX_DATA_SIZE, minimum_block_period=0)))
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
                answer = first_block(
                    tr.add(await probe.block(label, bench.offer.key, offsets[index], CONCURRENT_DATA_SIZE))
                )
                if answer is not None and answer.status == Status.SUCCESS:
                    offsets[index] += len(answer.image_data)
                elif answer is not None and answer.status == Status.WAIT_FOR_DATA:
                    resume_at[index] = bench.clock.now() + wait_seconds(answer)


async def play_page(bench: Bench, tr: Transcript) -> None:
    probe = await bench.join(0)
    offset, maximum, page_size, spacing = PAGE
    async with bench.window(probe):
        tr.add(await probe.query("query"))
        tr.add(
            await probe.ask(
                f"page request @{offset}, {page_size} B, MaximumDataSize {maximum}, spacing {spacing} ms",
                "image_page",
                listen=LISTEN,
                field_control=0,
                **bench.offer.command_fields,
                file_offset=offset,
                maximum_data_size=maximum,
                page_size=page_size,
                response_spacing=spacing,
            )
        )


async def play_upgrade_end_success(bench: Bench, tr: Transcript) -> None:
    probe = await bench.join(0)
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
                **bench.offer.command_fields,
            )
        )


async def play_upgrade_end_failure(bench: Bench, tr: Transcript) -> None:
    probe = await bench.join(0)
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
                    **bench.offer.command_fields,
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
    a, b, c = [await bench.join(i) for i in range(len(TARGET_IEEES))]
    tr.add(await a.query("A: query"))
    exchanges = await a.download(bench.offer.key, bench.offer.size, MAX_DATA_SIZE)
    tr.add_all(exchanges)
    end = bench.offer.command_fields
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


def _outcome_text(outcome: ke.Outcome | None) -> str:
    if outcome is None:
        return "the server did not answer key establishment"
    if isinstance(outcome, ke.Established):
        return f"CBKE completed with suite {outcome.suite.value}"
    status = outcome.status.name if outcome.status is not None else "TIMEOUT"
    return f"key establishment ended {status}: {outcome.reason}"


async def _establish(bench: Bench, probe: Probe, keys: KeyProbe, record: KeyRecord, presented: Presented) -> str:
    """Read the server's suites, then CBKE presenting `presented`; the attempt goes into `record`."""
    read, suites = await keys.read_suites()
    credentials = presented_credentials(presented, probe.ieee, bench.issue)
    exchanges, outcome = await keys.establish(presented.name.lower().replace("_", " "), credentials, suites)
    record.attempts[presented.name] = [read, *exchanges]
    return _outcome_text(outcome)


async def play_se_clear_ota(bench: Bench, tr: Transcript) -> None:
    """Join with the install-code key, complete CBKE, then ask for the image in the clear and APS-encrypted."""
    probe = await bench.join(0)
    keys = KeyProbe(probe, bench.app.ieee)
    record = tr.keys = KeyRecord()
    record.outcome = await _establish(bench, probe, keys, record, Presented.GENUINE)
    record.link_key = holds_link_key(probe, bench.app.ieee)
    key = bench.offer.key

    async def requests(how: str) -> list[Exchange]:
        return [
            tr.add(await probe.query(f"query {how}")),
            tr.add(await probe.block(f"block @0 {how}", key, 0, MAX_DATA_SIZE)),
        ]

    async with bench.window(probe):
        with in_clear(probe):
            record.requests += [OtaAttempt(e, False) for e in await requests("without APS encryption")]
        if record.link_key:
            record.requests += [OtaAttempt(e, True) for e in await requests("APS-encrypted with the link key")]


async def play_se_certificate(bench: Bench, tr: Transcript) -> None:
    """Initiate Key Establishment with a certificate of an unknown issuer, then with one naming another EUI-64,
    then (control) with a genuine one."""
    probe = await bench.join(0)
    keys = KeyProbe(probe, bench.app.ieee)
    record = tr.keys = KeyRecord()
    for presented in (Presented.UNKNOWN_ISSUER, Presented.OTHER_SUBJECT, Presented.GENUINE):
        record.outcome = await _establish(bench, probe, keys, record, presented)
    record.link_key = holds_link_key(probe, bench.app.ieee)


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
    "se-clear-ota": play_se_clear_ota,
    "se-certificate": play_se_certificate,
}
