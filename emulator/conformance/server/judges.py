"""The judges of the server checks: pure functions from a scenario's transcript to a verdict, reading only the
recorded bytes, so that recorded frames (or frames altered byte by byte) can be judged without a server.

A judge holds the server to what the specification requires and, where it lets a server choose (version policy,
page support, rate limiting), to what the target declared in its `Claims`: a server that behaves unlike its
declaration fails.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import zigpy.types as t

from emulator.chf.policy import version_allowed
from emulator.conformance.server.answers import (
    default_response,
    describe,
    named,
    payload_size,
    request_command,
    status_text,
    tsn,
)
from emulator.conformance.server.plan import (
    CONCURRENT_DATA_SIZE,
    HARDWARE_RANGE,
    LISTEN,
    MAX_DATA_SIZE,
    NOTIFY_PAYLOAD_SIZES,
    PAGE,
    SMALL_DATA_SIZE,
)
from emulator.conformance.server.probe import Exchange, raw, wait_seconds
from emulator.conformance.server.transcript import Transcript
from emulator.conformance.verdict import FrameRecord, Judgement, TimelinePoint, Verdict
from emulator.gb.codes import AlertCode, TransferResponse
from emulator.ota import frames
from emulator.ota.frames import UPGRADE_TIME_WAIT, OtaCommand, Status
from emulator.profiles import ActivationKind, ActivationTime

FC_S2C_NO_DEFAULT_RESPONSE = 0x19
DEFAULT_RESPONSE_DISABLED = 0x10
MALFORMED_STATUSES = (Status.MALFORMED_COMMAND, Status.INVALID_FIELD)


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
    command = named(answer, "query_next_image_response")
    if command is None:
        return f"{exchange.label}: answered with {describe(answer)}, not a Query Next Image Response"
    if command.status != expected:
        return f"{exchange.label}: status {status_text(command.status)}, expected {status_text(expected)}"
    size = payload_size(answer)
    if status_byte_only and expected != Status.SUCCESS and size != 1:
        return (
            f"{exchange.label}: {status_text(expected)} with a {size}-byte payload (the image fields belong to "
            "SUCCESS only: the status byte alone)"
        )
    return ""


def judge_query(tr: Transcript) -> Judgement:
    exchange = tr.exchanges[0]
    answer, problem = _only_answer(exchange, "Query Next Image Request")
    if answer is None:
        return _fail(problem)
    command = named(answer, "query_next_image_response")
    if command is None:
        return _fail(f"answered with {describe(answer)}, not a Query Next Image Response")
    offer = tr.offer
    problems = []
    if command.status != Status.SUCCESS:
        problems.append(f"status {status_text(command.status)}, expected SUCCESS")
    else:
        if payload_size(answer) != 13:
            problems.append(f"{payload_size(answer)}-byte payload, expected 13")
        if (command.manufacturer_code, command.image_type, command.file_version) != offer.key:
            problems.append("offers another image than the one held")
        if command.image_size != offer.size:
            problems.append(f"ImageSize {command.image_size} but the file is {offer.size} bytes")
    if tsn(answer) != tsn(exchange.sent):
        problems.append(f"TSN 0x{tsn(answer):02X} does not echo the request's 0x{tsn(exchange.sent):02X}")
    if problems:
        return _fail("; ".join(problems))
    return _pass(
        f"SUCCESS offering version 0x{offer.file_version:08X}, ImageSize {offer.size} = file size, 13-byte "
        f"payload, TSN 0x{tsn(answer):02X} echoed"
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
        hardware = request_command(exchange).hardware_version
        expected = Status.SUCCESS if low <= hardware <= high else Status.NO_IMAGE_AVAILABLE
        problem = _query_answer(exchange, expected, status_byte_only=True)
        if problem:
            problems.append(problem)
        results.append(f"0x{hardware:04X}→{'SUCCESS' if expected == Status.SUCCESS else '0x98'}")
    if problems:
        padded = all("-byte payload" in p for p in problems)
        note = "non-SUCCESS Query Next Image Responses carry the image fields too (ZCL r7 §11.13.5: status byte alone)"
        return _fail("; ".join(problems), note=note if padded else "")
    return _pass(f"range 0x{low:04X}..0x{high:04X}: " + ", ".join(results))


def judge_no_hardware(tr: Transcript) -> Judgement:
    exchange = tr.exchanges[0]
    if not _query_answer(exchange, Status.SUCCESS):
        return _pass("offered without a hardware version in the query, as the Silicon Labs server policy does")
    if not _query_answer(exchange, Status.NO_IMAGE_AVAILABLE):
        return _fail(
            "refuses (0x98) a query without hardware version for an image with a hardware range; Silicon Labs "
            "offers it (whether GB requires the hardware version is not published)"
        )
    return _fail(_query_answer(exchange, Status.SUCCESS))


def judge_versions(tr: Transcript) -> Judgement:
    policy = tr.claims.query_policy
    problems, results = [], []
    for exchange in tr.exchanges:
        current = request_command(exchange).current_file_version
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
        command = named(answer, "query_next_image_response")
        if command is None or command.status not in (Status.NO_IMAGE_AVAILABLE, Status.NOT_AUTHORIZED):
            problems.append(f"query answered with {describe(answer)}, expected 0x98 or 0x7E")
    if not block.answers:
        problems.append("no answer to the stranger's block request")
    for frame in block.answers:
        command = named(frame, "image_block_response")
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
    command = named(answer, "image_block_response")
    if command is None or command.status != Status.SUCCESS:
        return f"{exchange.label}: answered with {describe(answer)}", None
    request = request_command(exchange)
    data = bytes(command.image_data)
    if tsn(answer) != tsn(exchange.sent):
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
            command = named(frame, "image_block_response")
            if command is None:
                continue
            if command.status == Status.SUCCESS:
                points.append(TimelinePoint(frame.at, command.file_offset + len(command.image_data)))
            elif command.status == Status.WAIT_FOR_DATA:
                points.append(
                    TimelinePoint(frame.at, request_command(exchange).file_offset, f"wait {wait_seconds(command):g} s")
                )
            else:
                points.append(
                    TimelinePoint(frame.at, request_command(exchange).file_offset, f"abort: {describe(frame)}")
                )
    return points


def _is_block_request(exchange: Exchange) -> bool:
    return exchange.request is not None and raw(exchange.request)[2] == OtaCommand.IMAGE_BLOCK


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
    if default_response(answer) != (OtaCommand.IMAGE_BLOCK, Status.NO_IMAGE_AVAILABLE):
        return _fail(f"answered with {describe(answer)}, expected Default Response NO_IMAGE_AVAILABLE (0x98)")
    if tsn(answer) != tsn(exchange.sent):
        return _fail("Default Response does not echo the request's TSN")
    return _pass("Default Response NO_IMAGE_AVAILABLE (0x98) to command 0x03, TSN echoed")


def _error_answer(frame: FrameRecord) -> bool:
    response = default_response(frame)
    if response is not None:
        return response[1] != Status.SUCCESS
    command = named(frame, "image_block_response")
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
    command = named(frame, "image_block_response")
    if default_response(frame) == (OtaCommand.IMAGE_BLOCK, Status.NO_IMAGE_AVAILABLE) or (
        command is not None and command.status == Status.ABORT and payload_size(frame) == 1
    ):
        return _pass(describe(frame))
    return _fail(
        f"{describe(frame)}: expected Default Response 0x98 or an Image Block Response ABORT "
        "(an Image Block Response carries SUCCESS, WAIT_FOR_DATA or ABORT only, ZCL r7 §11.13.8)",
        past.frames,
    )


def _wait_problem(frame: FrameRecord, command: Any) -> str:
    if payload_size(frame) not in (9, 11):
        return f"WAIT_FOR_DATA with a {payload_size(frame)}-byte payload (expected 9 or 11)"
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
        if (c := named(f, "image_block_response")) is not None and c.status == Status.WAIT_FOR_DATA
    ]
    if not waits:
        if claims.rate_limited:
            return _fail("declares rate limiting but never sent WAIT_FOR_DATA", timeline=timeline)
        served = sum(1 for e in blocks for f in e.answers if named(f, "image_block_response") is not None)
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
        answer = named(second.answers[0], "image_block_response") if second.answers else None
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
        client = exchange.sent.src
        answer = exchange.answers[0] if len(exchange.answers) == 1 else None
        command = named(answer, "image_block_response") if answer is not None else None
        if answer is not None and command is not None and command.status == Status.WAIT_FOR_DATA:
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
    response = default_response(first)
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
        command = named(frame, "image_block_response")
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


def _activation_problem(activation: ActivationTime | None, command: Any) -> str:
    current, upgrade = int(command.current_time), int(command.upgrade_time)
    kind = None if activation is None else activation.kind
    if kind is ActivationKind.NOW and not (upgrade == current or (current == 0 and upgrade == 0)):
        return f"declared activation 'now' but CurrentTime {current}, UpgradeTime {upgrade}"
    if kind is ActivationKind.WAIT and upgrade != UPGRADE_TIME_WAIT:
        return f"declared activation 'wait' but UpgradeTime 0x{upgrade:08X}"
    if activation is not None and kind is ActivationKind.AFTER and (current, upgrade) != (0, activation.seconds):
        return f"declared activation '{activation}' but CurrentTime {current}, UpgradeTime {upgrade}"
    return ""


def _end_response_problem(frame: FrameRecord, command: Any, ids: tuple[int, int, int]) -> str:
    if payload_size(frame) != 16:
        return f"{payload_size(frame)}-byte Upgrade End Response (expected 16)"
    got = (command.manufacturer_code, command.image_type, command.file_version)
    wildcards = (frames.WILDCARD_MANUFACTURER, frames.WILDCARD_IMAGE_TYPE, frames.WILDCARD_FILE_VERSION)
    if any(g not in (i, w) for g, i, w in zip(got, ids, wildcards, strict=True)):
        return "Upgrade End Response names another image"
    return _end_times_problem(command)


def judge_upgrade_end_success(tr: Transcript) -> Judgement:
    exchange = tr.exchanges[-1]
    timeline = _timeline(e for e in tr.exchanges if _is_block_request(e))
    responses = [f for f in exchange.answers if named(f, "upgrade_end_response") is not None]
    if len(responses) != 1:
        got = "; ".join(map(describe, exchange.answers)) or "nothing"
        return _fail(f"expected one Upgrade End Response, got {got}", exchange.frames, timeline=timeline)
    frame = responses[0]
    command = named(frame, "upgrade_end_response")
    assert command is not None  # one of `responses`
    request = request_command(exchange)
    ids = (request.manufacturer_code, request.image_type, request.file_version)
    problem = _end_response_problem(frame, command, ids) or _activation_problem(tr.claims.activation, command)
    if not problem and tsn(frame) != tsn(exchange.sent):
        problem = "Upgrade End Response does not echo the request's TSN"
    if problem:
        return _fail(problem, exchange.frames, timeline=timeline)
    return _pass(
        f"16-byte Upgrade End Response, ids and TSN echoed, CurrentTime {command.current_time}, UpgradeTime "
        f"0x{command.upgrade_time:08X} (activation '{tr.claims.activation}')",
        timeline=timeline,
    )


def _failed_ends(tr: Transcript) -> list[Exchange]:
    return [e for e in tr.exchanges if e.request is not None and raw(e.request)[2] == OtaCommand.UPGRADE_END]


def judge_upgrade_end_failure(tr: Transcript) -> Judgement:
    answered: list[str] = []
    evidence: list[FrameRecord] = []
    for exchange in _failed_ends(tr):
        responses = [f for f in exchange.answers if named(f, "upgrade_end_response") is not None]
        if responses:
            command = named(responses[0], "upgrade_end_response")
            assert command is not None  # one of `responses`
            answered.append(
                f"{request_command(exchange).status.name} (CurrentTime {command.current_time}, UpgradeTime "
                f"{command.upgrade_time})"
            )
            evidence += [exchange.sent, *responses]
    if answered:
        text = "Upgrade End Response to " + ", ".join(answered)
        return _fail(f"{text}: after a non-SUCCESS status the server shall do nothing more", evidence, note=text)
    return _pass("no Upgrade End Response to ABORT, INVALID_IMAGE or REQUIRE_MORE_IMAGE")


def judge_upgrade_end_failure_default_response(tr: Transcript) -> Judgement:
    missing: list[str] = []
    got: set[str] = set()
    for exchange in _failed_ends(tr):
        if (OtaCommand.UPGRADE_END, Status.SUCCESS) not in [default_response(f) for f in exchange.answers]:
            missing.append(request_command(exchange).status.name)
            got.update(map(describe, exchange.answers))
    if missing:
        text = f"no Default Response SUCCESS to {', '.join(missing)} (got: {'; '.join(sorted(got)) or 'nothing'})"
        return _fail(text, [f for e in _failed_ends(tr) for f in e.frames])
    return _pass("Default Response SUCCESS to each failed Upgrade End Request")


def judge_unsolicited_end(tr: Transcript) -> Judgement:
    if tr.unsupported:
        return Judgement(Verdict.NOT_APPLICABLE, tr.unsupported, note="no unsolicited Upgrade End Response")
    responses = [f for e in tr.exchanges for f in e.answers if named(f, "upgrade_end_response") is not None]
    if not responses:
        return _fail("asked to schedule activation, the server sent no Upgrade End Response")
    for frame in responses:
        problem = _end_response_problem(frame, named(frame, "upgrade_end_response"), tr.offer.key)
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
    response = default_response(answer)
    if response is not None:
        if (
            response == (frames.COMMAND_IDS["query_specific_file"], Status.UNSUP_CLUSTER_COMMAND)
            and not claims.query_specific_file
        ):
            return _pass("unsupported, refused with Default Response UNSUP_CLUSTER_COMMAND (0x81)")
        return _fail(f"answered with {describe(answer)}")
    command = named(answer, "query_specific_file_response")
    if command is None:
        return _fail(f"answered with {describe(answer)}, not a Query Device Specific File Response")
    if not claims.query_specific_file:
        return _fail("answers Query Device Specific File although it declares it unsupported")
    if tsn(answer) != tsn(exchange.sent):
        return _fail("response does not echo the request's TSN")
    specific = tr.specific
    if command.status == Status.SUCCESS:
        if specific is None or payload_size(answer) != 13:
            return _fail(f"SUCCESS with a {payload_size(answer)}-byte payload or for a file the server does not hold")
        if (command.manufacturer_code, command.image_type, command.file_version, command.image_size) != (
            *specific.key,
            specific.size,
        ):
            return _fail("SUCCESS names another file than the one held for this device")
        return _pass(f"SUCCESS: the device's file, version 0x{specific.file_version:08X}, {specific.size} bytes")
    if specific is not None:
        return _fail(f"{status_text(command.status)} although a file is held for this device")
    return _pass(f"{status_text(command.status)}: no file held for this device")


def judge_malformed(tr: Transcript) -> Judgement:
    problems = []
    for exchange in tr.exchanges:
        request = raw(exchange.sent)
        responses = [r for f in exchange.answers if (r := default_response(f)) is not None]
        ok = [
            f
            for f in exchange.answers
            if (r := default_response(f)) is not None
            and r[0] == request[2]
            and r[1] in MALFORMED_STATUSES
            and tsn(f) == request[1]
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
        command = named(frame, "image_notify")
        broadcast = frame.dst >= 0xFFF8
        if command is None:
            problems.append(f"undecodable Image Notify [{frame.hex}]")
            continue
        payload_type = int(command.payload_type)
        if payload_type >= len(NOTIFY_PAYLOAD_SIZES) or payload_size(frame) != NOTIFY_PAYLOAD_SIZES[payload_type]:
            problems.append(f"payload type {payload_type} with {payload_size(frame)} payload bytes")
        if not 1 <= command.query_jitter <= 100:
            problems.append(f"QueryJitter {command.query_jitter} outside 1..100")
        ids = (
            (command.manufacturer_code, offer.manufacturer_code, frames.WILDCARD_MANUFACTURER),
            (command.image_type, offer.image_type, frames.WILDCARD_IMAGE_TYPE),
            (command.new_file_version, offer.file_version, frames.WILDCARD_FILE_VERSION),
        )[:payload_type]
        if any(value not in (own, wildcard) for value, own, wildcard in ids):
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
    tsns = [tsn(f) for f in tr.notifies]
    reused = sorted({x for x in tsns if tsns.count(x) > 1})
    listed = ", ".join(f"0x{x:02X}" for x in tsns)
    if reused:
        text = f"Image Notify TSNs reused ({', '.join(f'0x{x:02X}' for x in reused)} in {listed})"
        return _fail(text, tr.notifies, note=text)
    return _pass(f"a fresh TSN on each Image Notify ({listed})", evidence=tr.notifies)


def judge_transfer_alerts(tr: Transcript) -> Judgement:
    if tr.outcomes is None:
        return Judgement(Verdict.NOT_APPLICABLE, "the server raises no CCS08 alerts")
    seen: dict[t.EUI64 | None, list[TransferResponse]] = {}
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
    for stranger in seen.keys() - tr.expected_outcomes.keys():
        problems.append(f"{stranger}: an outcome for a device that is no target")
    if problems:
        return _fail("CCS08 outcomes: " + "; ".join(problems))
    listed = "; ".join(f"{o.ieee}: {int(o.response)} {o.response.name} (0x{o.alert_code:04X})" for o in tr.outcomes)
    return _pass(f"one CCS08 outcome per target and outcome: {listed}")
