"""The server check catalogue S-01…S-21 (ZCL r7 §11.13, OTA spec 09-5264 r23 §6.10; Smart Energy security, ZSE
07-5356 §5.4 and Annex C): every rule the bench holds an OTA server to, with the play step (`scenarios.py`:
scripted probes play an OTA client's side) that records the exchange and the judge (`judges.py`,
`security_judges.py`: pure, they read the recorded bytes) that decides it. Checks that read the same exchange name
the same play and share one run of it (`emulator/conformance/check.py: Rule`).

A check judges what the specification leaves to the server (version policy, page support, rate limiting)
against what the target *declares* (`Claims`): our CHF declares its profile, zigpy what its code does. A server
that behaves unlike its declaration fails — which is also how the tests prove each check can fail.
"""

from __future__ import annotations

from emulator.conformance.check import Check, Judge, Level, Rule
from emulator.conformance.server.judges import (
    judge_concurrency,
    judge_download,
    judge_hardware,
    judge_malformed,
    judge_no_hardware,
    judge_notify,
    judge_notify_tsn,
    judge_page,
    judge_past_end,
    judge_past_end_form,
    judge_query,
    judge_rate_limit,
    judge_response_frame_control,
    judge_specific_file,
    judge_stranger,
    judge_transfer_alerts,
    judge_unknown_image,
    judge_unsolicited_end,
    judge_upgrade_end_failure,
    judge_upgrade_end_failure_default_response,
    judge_upgrade_end_success,
    judge_versions,
)
from emulator.conformance.server.plan import MAX_DATA_SIZE, SMALL_DATA_SIZE
from emulator.conformance.server.security_judges import judge_clear_ota, judge_other_subject, judge_unknown_issuer
from emulator.conformance.server.transcript import Transcript

BOTH = ("ours", "zigpy")
OURS_ONLY = ("ours",)


def _entry(
    id: str,
    title: str,
    reference: str,
    level: Level,
    scenario: str,
    judge: Judge[Transcript],
    text: str,
    applies_to: tuple[str, ...] = BOTH,
    elsewhere: str = "",
) -> Rule[Transcript]:
    return Rule(Check(id, title, reference, level, applies_to, text), scenario, judge, elsewhere)


_MUST, _SHOULD = Level.MUST, Level.SHOULD
_CATALOGUE = [
    _entry(
        "S-01",
        "Query Next Image offers the held image",
        "ZCL r7 §11.13.5 (Query Next Image Response); OTA spec 09-5264 r23 §6.10.5",
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
        "ZCL r7 §2.4.1 (frame control: direction, disable default response)",
        _SHOULD,
        "query",
        judge_response_frame_control,
        "The Query Next Image Response of S-01 should carry frame control 0x19.",
    ),
    _entry(
        "S-02",
        "Hardware version checked against the image's range",
        "ZCL r7 §11.13.4.4 (the server examines the hardware version against the header range)",
        _MUST,
        "hardware",
        judge_hardware,
        "Five queries with hardware version min−1, min, inside, max, max+1 (range 0x1111..0x1211; on zigpy one "
        "update_firmware() each): SUCCESS inside the range, NO_IMAGE_AVAILABLE (status byte only) outside.",
    ),
    _entry(
        "S-03",
        "Query without hardware version is offered",
        "ZCL r7 §11.13.4 (HardwareVersion is optional in the query)",
        _SHOULD,
        "no-hardware",
        judge_no_hardware,
        "A query without the hardware version field for an image that has a hardware range should be offered "
        "(Silicon Labs policy); GB requirements on the field are not published.",
    ),
    _entry(
        "S-04",
        "Version policy of the query",
        "ZCL r7 §11.13.4.4 (the server may upgrade, downgrade or reinstall)",
        _MUST,
        "versions",
        judge_versions,
        "Queries with current version older than, equal to and newer than the held one; the answers must follow "
        "the target's declared policy (both declare upgrade-if-newer: only the older one is offered).",
    ),
    _entry(
        "S-05",
        "Nothing for a device outside the DeviceIDList",
        "DUIS SR 11.1 / SR 11.4 (images are for the devices of the DeviceIDList)",
        _SHOULD,
        "stranger",
        judge_stranger,
        "A joined device that is not a target of the image (on zigpy: not the device being updated) queries and "
        "asks for a block: NO_IMAGE_AVAILABLE or NOT_AUTHORIZED, and no image data.",
    ),
    _entry(
        "S-06",
        "Image blocks: size, offset echo, short last block",
        "ZCL r7 §11.13.8 (Image Block Response: offset echoed, at most MaximumDataSize)",
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
        "ZCL r7 §11.13.6.5.2 (NO_IMAGE_AVAILABLE for an unknown image; OTA test case 9.5.6)",
        _MUST,
        "unknown-image",
        judge_unknown_image,
        "Image Block Request for manufacturer 0xFFF0, image type 0x0000, version 0xFFFFFFF0 at offset 100: the "
        "answer must be Default Response NO_IMAGE_AVAILABLE (0x98).",
    ),
    _entry(
        "S-08",
        "Offset past the end: an error, and the server carries on",
        "ZCL r7 §11.13.6.5 (Image Block Request handling)",
        _MUST,
        "past-end",
        judge_past_end,
        "A block request at offset = file size must get an error answer (no data), and the next valid block "
        "request must still be answered.",
    ),
    _entry(
        "S-08.FORM",
        "Offset past the end: Default Response 0x98 or ABORT",
        "ZCL r7 §11.13.8 (Image Block Response ABORT)",
        _SHOULD,
        "past-end",
        judge_past_end_form,
        "The error of S-08 should be Default Response NO_IMAGE_AVAILABLE or an Image Block Response ABORT.",
    ),
    _entry(
        "S-09",
        "Rate limiting: WAIT_FOR_DATA and MinimumBlockPeriod",
        "ZCL r7 §11.13.8 (WAIT_FOR_DATA, MinimumBlockPeriod); OTA spec 09-5264 r23 §6.10.8",
        _MUST,
        "rate-limit",
        judge_rate_limit,
        "Block requests advertising MinimumBlockPeriod 0, twice (honouring each wait), then advertising the "
        "period the server imposed. Our CHF runs with wait_for_data = 30 s and minimum_block_period = 250: every "
        "WAIT_FOR_DATA must have RequestTime ≥ CurrentTime (or CurrentTime 0), the second must carry the "
        "server's period, the last request must be served. Not applicable to a server that never rate-limits "
        "(rate limiting is optional, ZCL r7 §11.13.8).",
    ),
    _entry(
        "S-10",
        "Concurrent clients served independently",
        "ZCL r7 §11.13.6 (stateless serving: every request names image and offset)",
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
        "ZCL r7 §11.13.7 (Image Page Request, optional)",
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
        "ZCL r7 §11.13.10 (Upgrade End Response); GBCS CS05c / CS06 (GB activation)",
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
        "ZCL r7 §11.13.9.4 (no further processing of a non-SUCCESS Upgrade End Request)",
        _MUST,
        "upgrade-end-failure",
        judge_upgrade_end_failure,
        "Query, one block, then Upgrade End Request ABORT, INVALID_IMAGE and REQUIRE_MORE_IMAGE in turn (on "
        "zigpy one update_firmware() each): the server must not send an Upgrade End Response to any of them.",
    ),
    _entry(
        "S-13.DR",
        "Failed Upgrade End acknowledged by Default Response",
        "ZCL r7 §2.5.12.2 (Default Response), §11.13.9.4",
        _SHOULD,
        "upgrade-end-failure",
        judge_upgrade_end_failure_default_response,
        "The failed Upgrade End Requests of S-13 ask for a default response; each should get Default Response "
        "SUCCESS (ZBOSS and Silicon Labs do).",
    ),
    _entry(
        "S-14",
        "Unsolicited Upgrade End Response",
        "ZCL r7 §11.13.10 (unsolicited Upgrade End Response); OTA spec 09-5264 r23 §6.10.10",
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
        "ZCL r7 §11.13.11 (Query Device Specific File, optional)",
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
        "ZCL r7 §2.5.12.2, §2.6.3 (MALFORMED_COMMAND, UNSUP_CLUSTER_COMMAND)",
        _MUST,
        "malformed",
        judge_malformed,
        "Truncated Query Next Image, Image Block and Upgrade End Requests (default response enabled): each must "
        "get Default Response MALFORMED_COMMAND (0x80), or INVALID_FIELD (0x85) as Silicon Labs sends.",
    ),
    _entry(
        "S-17",
        "Image Notify payloads",
        "ZCL r7 §11.13.3 (Image Notify payload types); OTA spec 09-5264 r23 §6.10.3",
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
        "ZCL r7 §2.4.1.2 (transaction sequence number)",
        _SHOULD,
        "notify",
        judge_notify_tsn,
        "The Image Notifies of S-17 should each carry a new transaction sequence number (Silicon Labs does): a "
        "client that drops repeated TSNs as duplicates would miss one.",
    ),
    _entry(
        "S-18",
        "GB CCS08 outcome once per target",
        "GBCS use case CCS08 (Firmware Transfer Alert 0x8F8A / 0x8F89, responseCode)",
        _MUST,
        "transfer-alerts",
        judge_transfer_alerts,
        "Target A completes (SUCCESS), B queries twice with hardware 0x1000 (mismatch), C aborts twice, and the "
        "image held for D is discarded; after the transfer timeout the CHF must have raised exactly one CCS08 "
        "outcome each: 0 (0x8F8A), 2, 3 and 1 (0x8F89).",
        OURS_ONLY,
        "a GB CHF duty: zigpy's OTA server raises no CCS08 Firmware Transfer Alerts",
    ),
    _entry(
        "S-19",
        "OTA requests without APS encryption from a keyed device are dropped",
        "SE 07-5356 §5.4.6 (OTA Upgrade cluster frames are APS-encrypted with the link key), §5.4.7 and Annex C.4.2 "
        "(the link key comes from CBKE after joining)",
        _MUST,
        "se-clear-ota",
        judge_clear_ota,
        "A probe joins with its install-code key (the CHF's Device Log holds it), completes CBKE with a certificate "
        "of the server's CA, then sends Query Next Image and Image Block Requests without APS encryption: no OTA "
        "answer may come. The same requests APS-encrypted with the CBKE link key must be answered (control). Not "
        "applicable to a server without a Key Establishment server.",
    ),
    _entry(
        "S-20",
        "A certificate of an unknown issuer is terminated UNKNOWN_ISSUER",
        "SE 07-5356 §5.4.7, Annex C.3.1 (Terminate Key Establishment status UNKNOWN_ISSUER 0x01), C.4.2.2",
        _MUST,
        "se-certificate",
        judge_unknown_issuer,
        "A joined probe sends Initiate Key Establishment Request with a certificate from a CA the server does not "
        "know: the answer must be Terminate Key Establishment status 0x01 and no Initiate Key Establishment "
        "Response (so no link key can follow). A genuine certificate must draw the Response (control).",
    ),
    _entry(
        "S-21",
        "A certificate naming another EUI-64 is terminated BAD_MESSAGE",
        "SE 07-5356 §5.4.7, Annex C.3.1 (Terminate Key Establishment status BAD_MESSAGE 0x03), C.4.2.2 (the "
        "initiator's certificate must name the initiator's EUI-64)",
        _MUST,
        "se-certificate",
        judge_other_subject,
        "A joined probe sends Initiate Key Establishment Request with a genuine certificate of the server's CA "
        "issued to another EUI-64: the answer must be Terminate Key Establishment status 0x03 (as Silicon Labs' "
        "stack sends) and no Initiate Key Establishment Response. A genuine certificate must draw the Response "
        "(control).",
    ),
]
RULES: dict[str, Rule[Transcript]] = {rule.check.id: rule for rule in _CATALOGUE}
CHECKS: dict[str, Check] = {check_id: rule.check for check_id, rule in RULES.items()}
