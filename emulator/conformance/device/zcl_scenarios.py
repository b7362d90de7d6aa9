"""ZCL hygiene of the device under test: how its OTA client answers the foundation rules every ZCL frame obeys
(ZCL r7 §2.4 frame format, §2.5.12 Default Response), judged from its own frames on the CHF radio.

One play step, the exchange (`exchange`), serves all five checks and runs once per bench run: the test CHF reads
the DUT's mandatory ImageUpgradeStatus (Read Attributes, chosen TSN), sends an OTA command id the cluster does
not define, an undefined general command, a manufacturer-specific OTA command, a unicast Image Notify that
disables the Default Response, the same unknown command broadcast, and a Default Response of its own. Each
check's judge (pure: z01 … z05) then reads the part of the record its rule is about, so a DUT that breaks the
rules fails here — with the frame — instead of confusing a later check.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from zigpy.zcl import foundation

from emulator.conformance.device.scenarios import failed, passed
from emulator.conformance.device.trial import IMAGE_UPGRADE_STATUS, Trial
from emulator.conformance.verdict import FrameRecord, Inconclusive, Judgement, Verdict, evidence
from emulator.ota import frames
from emulator.ota.frames import Status

# The name of the exchange's play step, which all five checks share.
EXCHANGE = "zcl-exchange"
FC_MANUFACTURER_SPECIFIC = 0x04
FC_DIRECTION_S2C = 0x08
FC_DISABLE_DEFAULT_RESPONSE = 0x10
UNDEFINED_OTA_COMMAND = 0x0A  # the OTA cluster defines server→client commands 0x00..0x09 only
UNDEFINED_GENERAL_COMMAND = 0x1F  # no ZCL r7 general command has this id
TEST_MANUFACTURER = 0x1234
READ_TSN, UNKNOWN_TSN, GENERAL_TSN, MANUFACTURER_TSN, NOTIFY_TSN, BROADCAST_TSN, DEFAULT_TSN = range(0xA1, 0xA8)
UNSUPPORTED = {Status.UNSUP_CLUSTER_COMMAND}
UNSUPPORTED_GENERAL = {Status.UNSUP_CLUSTER_COMMAND, Status.UNSUP_GENERAL_COMMAND}  # ZCL r8 merged them into 0x81
UNSUPPORTED_MANUFACTURER = {Status.UNSUP_CLUSTER_COMMAND, Status.UNSUP_MANUF_CLUSTER_COMMAND}


def _header(general: bool, command_id: int, tsn: int, *, ddr: bool, manufacturer: int | None = None) -> bytes:
    build = foundation.ZCLHeader.general if general else foundation.ZCLHeader.cluster
    header = build(tsn, command_id, manufacturer, frames.S2C)
    data = bytearray(header.serialize())
    data[0] = data[0] | FC_DISABLE_DEFAULT_RESPONSE if ddr else data[0] & ~FC_DISABLE_DEFAULT_RESPONSE
    return bytes(data)


def frame_control(frame: FrameRecord) -> int:
    return int(frame.hex[:2], 16)


def frame_command_id(frame: FrameRecord) -> int:
    at = 8 if frame_control(frame) & FC_MANUFACTURER_SPECIFIC else 4
    return int(frame.hex[at : at + 2], 16)


def frame_tsn(frame: FrameRecord) -> int:
    """The TSN of a recorded ZCL frame (after a manufacturer code when the frame carries one)."""
    at = 6 if frame_control(frame) & FC_MANUFACTURER_SPECIFIC else 2
    return int(frame.hex[at : at + 2], 16)


@dataclass
class Exchange:
    """What the DUT sent in answer to each probe (None: nothing within the response window)."""

    mark: int
    query: FrameRecord | None
    read: FrameRecord | None
    unknown: FrameRecord | None
    general: FrameRecord | None
    manufacturer: FrameRecord | None
    notify_query: FrameRecord | None
    notify_default: FrameRecord | None
    broadcast: FrameRecord | None
    to_default: FrameRecord | None
    probes: list[FrameRecord]
    own: list[FrameRecord]  # every OTA cluster frame the DUT sent in the session (its queries included)


async def _probe(trial: Trial, data: bytes, *, broadcast: bool = False) -> list[FrameRecord]:
    """Send one raw frame to the DUT's OTA endpoint; the OTA-cluster frames the DUT sent within the window."""
    mark = trial.chf.mark()
    trial.chf.send(data, broadcast=broadcast)
    await asyncio.sleep(trial.timing.response / 3)
    return trial.chf.since(mark, lambda f: f.src != 0 and f.cluster_id == frames.CLUSTER_ID)


def _answer(sent: list[FrameRecord], tsn: int | None = None, name: str | None = None) -> FrameRecord | None:
    for frame in sent:
        if (name is None or frame.name == name) and (tsn is None or frame_tsn(frame) == tsn):
            return frame
    return None


async def exchange(trial: Trial) -> Exchange:
    """Run the probes. A DUT whose queries the bench cannot read (a wrong header bit) is probed all the same:
    its header is what these checks judge."""
    chf = trial.chf
    try:
        await trial.learn()
    except Inconclusive:
        if chf.nwk is None:
            raise
    mark = chf.mark()
    read_data = _header(True, foundation.GeneralCommand.Read_Attributes, READ_TSN, ddr=False)
    read_data += IMAGE_UPGRADE_STATUS.to_bytes(2, "little")
    read = await _probe(trial, read_data)
    unknown = await _probe(trial, _header(False, UNDEFINED_OTA_COMMAND, UNKNOWN_TSN, ddr=True))
    general = await _probe(trial, _header(True, UNDEFINED_GENERAL_COMMAND, GENERAL_TSN, ddr=True))
    manufacturer = await _probe(
        trial, _header(False, 0x00, MANUFACTURER_TSN, ddr=False, manufacturer=TEST_MANUFACTURER) + bytes([0, 100])
    )
    notify = await _probe(trial, _header(False, 0x00, NOTIFY_TSN, ddr=True) + bytes([0, 100]))
    broadcast = await _probe(trial, _header(False, UNDEFINED_OTA_COMMAND, BROADCAST_TSN, ddr=False), broadcast=True)
    default = frames.default_response(tsn=DEFAULT_TSN, command_id=0x01, status=Status.SUCCESS, direction=frames.S2C)
    to_default = await _probe(trial, default)
    probes = chf.since(mark, lambda f: f.src == 0 and f.cluster_id == frames.CLUSTER_ID)
    own = chf.since(0, lambda f: f.src != 0 and f.cluster_id == frames.CLUSTER_ID)
    return Exchange(
        mark,
        trial.first_query,
        _answer(read, name="Read_Attributes_rsp") or _answer(read, READ_TSN),
        _answer(unknown, name="Default_Response"),
        _answer(general, name="Default_Response"),
        _answer(manufacturer, name="Default_Response") or _answer(manufacturer, MANUFACTURER_TSN),
        _answer(notify, name="query_next_image"),
        _answer(notify, name="Default_Response"),
        _answer(broadcast, name="Default_Response"),
        _answer(to_default),
        probes,
        own,
    )


def _probe_for(ex: Exchange, tsn: int) -> FrameRecord | None:
    return next((p for p in ex.probes if frame_tsn(p) == tsn), None)


def z01_tsn_echoed(ex: Exchange) -> Judgement:
    if ex.read is None:
        return Judgement(
            Verdict.INCONCLUSIVE,
            "the DUT did not answer a Read Attributes of ImageUpgradeStatus (0x0006, a mandatory attribute)",
            evidence(_probe_for(ex, READ_TSN)),
        )
    pairs = [(READ_TSN, ex.read), (UNKNOWN_TSN, ex.unknown), (GENERAL_TSN, ex.general)]
    for tsn, answer in pairs:
        if answer is not None and frame_tsn(answer) != tsn:
            return failed(
                f"answered a frame with TSN 0x{tsn:02X} using TSN 0x{frame_tsn(answer):02X} (ZCL r7 §2.4.1.2: a "
                "response carries the TSN of the command it answers)",
                _probe_for(ex, tsn),
                answer,
            )
    shown = [f for _, f in pairs if f is not None]
    return passed(f"{len(shown)} answers each carried the TSN of the command they answered", ex.probes[:1], shown)


def z02_direction(ex: Exchange) -> Judgement:
    own = ex.own
    wrong = [f for f in own if frame_control(f) & FC_DIRECTION_S2C]
    if wrong:
        return failed(
            f"{len(wrong)} frame(s) from its OTA client carry direction server→client (ZCL r7 §2.4.1.1.3: a client "
            f"cluster sends client→server); first: {wrong[0].name}",
            wrong[:2],
        )
    if not own:
        return Judgement(Verdict.INCONCLUSIVE, "the DUT sent no OTA cluster frame to judge", [])
    return passed(f"all {len(own)} frames from its OTA client carry direction client→server", own[:3])


def z03_default_response_rules(ex: Exchange) -> Judgement:
    answered_ddr = ex.notify_default is not None and int(ex.notify_default.fields.get("status", -1)) == 0
    if answered_ddr:
        return failed(
            "sent Default Response SUCCESS to an Image Notify whose frame control disabled it (ZCL r7 §2.5.12.2)",
            _probe_for(ex, NOTIFY_TSN),
            ex.notify_default,
        )
    if ex.broadcast is not None:
        return failed(
            "sent a Default Response to a broadcast (ZCL r7 §2.5.12.2: never in answer to a broadcast)",
            _probe_for(ex, BROADCAST_TSN),
            ex.broadcast,
        )
    if ex.to_default is not None:
        return failed(
            "answered a Default Response (ZCL r7 §2.5.12.2: a Default Response is never answered)",
            _probe_for(ex, DEFAULT_TSN),
            ex.to_default,
        )
    shown = [_probe_for(ex, tsn) for tsn in (NOTIFY_TSN, BROADCAST_TSN, DEFAULT_TSN)]
    return passed(
        "no Default Response where it was disabled, to a broadcast or to a Default Response", *shown, ex.notify_query
    )


def _judge_unsupported(
    ex: Exchange, answer: FrameRecord | None, tsn: int, allowed: set[Status], what: str
) -> tuple[str | None, list[FrameRecord | None]]:
    """(what is wrong or None, the frames) for the DUT's answer to an unsupported command."""
    probe = _probe_for(ex, tsn)
    if answer is None or answer.name != "Default_Response":
        return f"no Default Response to {what}", [probe, answer]
    status = int(answer.fields.get("status", -1))
    if status not in allowed:
        names = " or ".join(f"0x{int(s):02X}" for s in sorted(allowed))
        return f"Default Response 0x{status:02X} to {what} (expected {names})", [probe, answer]
    if probe is not None and int(answer.fields.get("command_id", -1)) != frame_command_id(probe):
        return (
            f"Default Response to {what} names command 0x{int(answer.fields['command_id']):02X}",
            [probe, answer],
        )
    return None, [probe, answer]


def z04_unsupported_commands(ex: Exchange) -> Judgement:
    shown: list[FrameRecord | None] = []
    for answer, tsn, allowed, what in (
        (ex.unknown, UNKNOWN_TSN, UNSUPPORTED, f"OTA command 0x{UNDEFINED_OTA_COMMAND:02X}, which the cluster lacks"),
        (ex.general, GENERAL_TSN, UNSUPPORTED_GENERAL, f"general command 0x{UNDEFINED_GENERAL_COMMAND:02X}"),
    ):
        problem, frames_ = _judge_unsupported(ex, answer, tsn, allowed, what)
        if problem is not None:
            return failed(
                f"{problem} (ZCL r7 §2.5.12.2: an unsupported command gets a Default Response with its status, "
                "even when the frame disabled default responses)",
                *frames_,
            )
        shown += frames_
    return passed("answered undefined cluster and general commands with Default Responses 0x81/0x82", *shown)


def z05_manufacturer_specific(ex: Exchange) -> Judgement:
    own = ex.own
    flagged = [f for f in own if frame_control(f) & FC_MANUFACTURER_SPECIFIC]
    if flagged:
        return failed(
            f"{len(flagged)} OTA cluster frame(s) with the manufacturer-specific bit set (ZCL r7 §2.4.1.1.2: the "
            "standard OTA and foundation commands are not manufacturer specific)",
            flagged[:2],
        )
    what = f"a command of manufacturer 0x{TEST_MANUFACTURER:04X}"
    problem, frames_ = _judge_unsupported(ex, ex.manufacturer, MANUFACTURER_TSN, UNSUPPORTED_MANUFACTURER, what)
    if ex.manufacturer is not None and ex.manufacturer.name == "query_next_image":
        return failed(
            f"acted on a manufacturer-specific command (manufacturer 0x{TEST_MANUFACTURER:04X}) as if it were the "
            "standard Image Notify",
            *frames_,
        )
    if problem is not None:
        return failed(f"{problem} (ZCL r7 §2.5.12.2)", *frames_)
    assert ex.manufacturer is not None
    status = int(ex.manufacturer.fields["status"])
    return passed(
        f"no manufacturer-specific bit on its own frames; {what} got Default Response 0x{status:02X}", *frames_
    )
