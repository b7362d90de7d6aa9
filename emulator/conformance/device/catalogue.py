"""The device check catalogue: every rule the bench holds a PPMID or HCALCS to, with the play step that probes
it and the judge that decides it (`emulator/conformance/check.py: Rule`).

IDs C-01 … C-23 follow the project's client test catalogue; a case that holds two rules is split (C-02a/C-02b,
C-08a/C-08b, …). C-PAGE is the page request fallback (ZCL r7 §11.13.7); Z-01 … Z-05 are the ZCL foundation rules
every answer of the DUT obeys (ZCL r7 §2.4, §2.5.12). C-19 (REQUIRE_MORE_IMAGE) is not here: a device profile
cannot ask for more than one image, so no device could show it. The level is the strength of the rule in the
cited clause (a "shall" of the ZCL / OTA specification or a GBCS requirement is MUST; a "should", a
recommendation or what only implementations do is SHOULD); only MUST failures fail a run. Every `reference`
cites a public document: ZCL revision 7 (07-5123-07) chapter 11 and the OTA Upgrade cluster specification
09-5264 r23 for the cluster, SE 1.2b 15-0324-02 for the activation policies, GBCS use cases, DUIS service
requests and SEC modification SECMP0007 for the GB cases. SE-01 … SE-06 are the Smart Energy security rules a
device meets before and during OTA (SE 07-5356, the Zigbee Smart Energy Standard: §5.4 security, Annex C key
establishment and its Key Establishment cluster).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from emulator.conformance.check import Check, Judge, Level, Rule, as_played
from emulator.conformance.device import scenarios as ota
from emulator.conformance.device import zcl_scenarios as zcl
from emulator.conformance.device.gb_scenarios import GB_SCENARIOS
from emulator.conformance.device.scenarios import EVIDENCE_PLAYS, SCENARIOS
from emulator.conformance.device.security_scenarios import SECURITY_SCENARIOS
from emulator.conformance.device.trial import Trial

PPMID = "ppmid"
HCALCS = "hcalcs"
BOTH = (PPMID, HCALCS)

MUST, SHOULD = Level.MUST, Level.SHOULD

# A play step: drives the DUT from the test CHF in one session and returns the evidence its checks judge.
Play = Callable[[Trial], Awaitable[Any]]

# Play steps by name. A play that decides as it goes (what it sends next depends on what the DUT did) is named
# after its check and judged `as_played`; the others record evidence for a pure judge, and the ZCL checks share
# one exchange, each judging it by its own rule.
PLAYS: dict[str, Play] = {
    **SCENARIOS,
    **GB_SCENARIOS,
    **SECURITY_SCENARIOS,
    **EVIDENCE_PLAYS,
    zcl.EXCHANGE: zcl.exchange,
}


def _check(
    id_: str,
    title: str,
    reference: str,
    level: Level,
    scenario: str,
    applies_to: tuple[str, ...] = BOTH,
    *,
    play: str | None = None,
    judge: Judge[Any] = as_played,
) -> Rule[Any]:
    return Rule(Check(id_, title, reference, level, tuple(applies_to), scenario), play or id_, judge)


RULES: dict[str, Rule[Any]] = {
    rule.check.id: rule
    for rule in (
        _check(
            "C-01",
            "Unicast Image Notify always draws a query",
            "ZCL r7 §11.13.3.4 (Image Notify: a unicast one always draws a query); OTA spec 09-5264 r23 §6.10.3",
            MUST,
            "unicast Image Notify payload type 0, then type 3 naming the DUT's own version; a Query Next Image "
            "Request must follow each within 30 s",
        ),
        _check(
            "C-02a",
            "Broadcast notify for another manufacturer or image type is ignored",
            "ZCL r7 §11.13.3.4 (broadcast Image Notify field checks); OTA spec 09-5264 r23 §6.10.3.4",
            MUST,
            "broadcast Image Notify type 1 with another manufacturer code and type 2 with another image type "
            "(jitter 100): no query; a matching type 2 broadcast as control must draw one",
        ),
        _check(
            "C-02b",
            "Broadcast notify naming the running version is ignored",
            "ZCL r7 §11.13.3.4 (broadcast Image Notify field checks); OTA spec 09-5264 r23 §6.10.3.4",
            MUST,
            "broadcast Image Notify type 3 carrying the DUT's own version (jitter 100): no query; one naming "
            "another version as control must draw one",
        ),
        _check(
            "C-03",
            "QueryJitter is honoured",
            "ZCL r7 §11.13.3.2 (QueryJitter 1..100); OTA spec 09-5264 r23 §6.10.3.3",
            SHOULD,
            "broadcast Image Notify with jitter 100 (must query), 20 with jitter 10 (at most 8 queries) and one "
            "with jitter 0 (outside 1..100: ignored)",
        ),
        _check(
            "C-04",
            "Query Next Image Request carries the hardware version",
            "ZCL r7 §11.13.4 (Query Next Image Request, HardwareVersion field)",
            SHOULD,
            "the DUT's first query is read: field control bit 0 and a hardware version",
            play="first-query",
            judge=ota.judge_hardware_version,
        ),
        _check(
            "C-05",
            "An offer of the running version is discarded",
            "ZCL r7 §11.13.5.4 (an offer of the running version is discarded)",
            SHOULD,
            "the CHF offers (reinstall policy) the version the DUT runs; no block request may follow",
        ),
        _check(
            "C-06",
            "Block loop: contiguous offsets from 0, ids of the offer",
            "ZCL r7 §11.13.6 (Image Block Request: FileOffset, MaximumDataSize), §11.13.8",
            MUST,
            "a whole transfer with the CHF capping blocks at 40 bytes; every request must be at the end of the "
            "data received and name the offered image",
            play="block-loop",
            judge=ota.judge_block_loop,
        ),
        _check(
            "C-07",
            "A block at the wrong offset or for another image is not stored",
            "ZCL r7 §11.13.8.4 (Image Block Response effect on receipt)",
            MUST,
            "at a quarter of the image the CHF answers once with a block at the wrong offset, then once with a "
            "block for another file version; the DUT must ask for the same offset again after each",
            play="wrong-block",
            judge=ota.judge_wrong_block,
        ),
        _check(
            "C-08a",
            "WAIT_FOR_DATA is waited out",
            "ZCL r7 §11.13.8.4 (WAIT_FOR_DATA); OTA spec 09-5264 r23 §6.10.8.4",
            MUST,
            "the CHF answers the first block request with WAIT_FOR_DATA 30 s; the next request must come no sooner",
            play="wait-for-data",
            judge=ota.judge_wait_for_data,
        ),
        _check(
            "C-08b",
            "MinimumBlockPeriod from the server is adopted",
            "ZCL r7 §11.13.6 (MinimumBlockPeriod, field control bit 1), §11.10 (MinimumBlockPeriod attribute)",
            MUST,
            "WAIT_FOR_DATA carrying MinimumBlockPeriod 250 ms (2 s for a seconds-unit DUT); block requests must "
            "then be at least that far apart",
            play="minimum-block-period",
            judge=ota.judge_minimum_block_period,
        ),
        _check(
            "C-09",
            "Image Block Response ABORT stops the download",
            "ZCL r7 §11.13.8.4 (Image Block Response ABORT)",
            MUST,
            "abort at 40 %: the CHF answers a block request with ABORT; no block request may follow within 60 s",
        ),
        _check(
            "C-10",
            "Three Default Responses NO_IMAGE_AVAILABLE end the download",
            "ZCL r7 §11.13.6.5.2 (three NO_IMAGE_AVAILABLE: back to querying)",
            SHOULD,
            "from 40 % every block request gets Default Response 0x98; no fourth request may follow three",
        ),
        _check(
            "C-11",
            "An unanswered block request is re-sent",
            "ZCL r7 §11.13.6 (the client tracks what it received and re-requests); OTA spec 09-5264 r23 §6.10.6",
            SHOULD,
            "from 40 % the CHF stays silent; the DUT must re-send the request before it gives up (Upgrade End "
            "ABORT or a new query)",
        ),
        _check(
            "C-12a",
            "A corrupted image is reported INVALID_IMAGE and not kept",
            "ZCL r7 §11.13.9 (INVALID_IMAGE after a failed integrity check); OTA spec 09-5264 r23 §6.10.9",
            MUST,
            "one corrupted byte: the image is served with one byte of its header's file version changed; Upgrade "
            "End INVALID_IMAGE, no reboot, ImageUpgradeStatus back to 0",
        ),
        _check(
            "C-12b",
            "An image for another hardware version is reported INVALID_IMAGE",
            "ZCL r7 §11.13.9, §11.4 (hardware versions in the OTA header); OTA spec 09-5264 r23 §6.3",
            MUST,
            "the CHF offers anyway an image whose header hardware range excludes the DUT's hardware version; "
            "Upgrade End INVALID_IMAGE, no reboot",
        ),
        _check(
            "C-13",
            "A good image is reported Upgrade End SUCCESS with its ids",
            "ZCL r7 §11.13.9 (Upgrade End Request SUCCESS with the image's ids); OTA spec 09-5264 r23 §6.10.9",
            MUST,
            "a whole transfer of a good image; Upgrade End SUCCESS naming the downloaded image, after its last block",
            play="good-image",
            judge=ota.judge_good_image,
        ),
        _check(
            "C-14",
            "Told to wait (UpgradeTime 0xFFFFFFFF), the image is held",
            "ZCL r7 §11.13.10.4 (UpgradeTime 0xFFFFFFFF: wait), §11.10 (ImageUpgradeStatus 3)",
            MUST,
            "Upgrade End Response wait; for 65 min no reboot, ImageUpgradeStatus 3 (the re-sent Upgrade End "
            "Requests are reported)",
        ),
        _check(
            "C-15a",
            "Relative UpgradeTime is kept",
            "ZCL r7 §11.13.10.4 (CurrentTime and UpgradeTime); OTA spec 09-5264 r23 §6.10.10",
            MUST,
            "Upgrade End Response CurrentTime 0, UpgradeTime 120; the reboot must come 120 s later (±3 s or 5 %)",
        ),
        _check(
            "C-15b",
            "Absolute UpgradeTime is kept",
            "ZCL r7 §11.13.10.4 (CurrentTime and UpgradeTime); OTA spec 09-5264 r23 §6.10.10",
            MUST,
            "Upgrade End Response with UTC CurrentTime and UpgradeTime 120 s later; the reboot must come then",
        ),
        _check(
            "C-16",
            "Upgrade End Response for another image is ignored; wildcards are accepted",
            "OTA spec 09-5264 r23 §6.10.10.4 (ids must match the download or be wildcards); ZCL r7 §11.13.10",
            MUST,
            "Upgrade End Response wait, then an unsolicited one saying now for another file version (no reboot "
            "within 60 s), then one with wildcard ids saying now (reboot)",
        ),
        _check(
            "C-17",
            "Out-of-band activation policy refuses the server's UpgradeTime",
            "SE 1.2b OTA 15-0324-02 §11.10.12 (UpgradeActivationPolicy 1: Default Response NOT_AUTHORIZED)",
            MUST,
            "for a DUT whose UpgradeActivationPolicy reads 1: Upgrade End Response now; Default Response "
            "NOT_AUTHORIZED and no reboot",
        ),
        _check(
            "C-18",
            "UpgradeTimeoutPolicy decides what happens without an Upgrade End Response",
            "SE 1.2b OTA 15-0324-02 §11.10.13 (UpgradeTimeoutPolicy)",
            SHOULD,
            "the CHF never answers Upgrade End Request; with UpgradeTimeoutPolicy 0 the DUT must apply within "
            "4 h, with 1 it must not",
        ),
        _check(
            "C-20",
            "A restarted download resumes at its file offset",
            "ZCL r7 §11.13.6 (the client, not the server, tracks the FileOffset it has received; recommended)",
            SHOULD,
            "the DUT is power-cycled at half the image; its first request after the restart must not be offset 0",
        ),
        _check(
            "C-21",
            "After activation: CurrentFileVersion new, ImageTypeID 0xFFFF, status 0",
            "ZCL r7 §11.10 (CurrentFileVersion, ImageTypeID 0xFFFF when idle, ImageUpgradeStatus)",
            MUST,
            "Upgrade End Response now; after the reboot the OTA attributes 0x0002, 0x0008, 0x0006 are read",
        ),
        _check(
            "C-22a",
            "PPMID activates when the CHF says now",
            "SEC modification SECMP0007; DUIS SR 11.4 / GBCS CS05c (PPMID distribution and activation in one step)",
            MUST,
            "Upgrade End Response now; the PPMID must reboot into the new version (Device_annce, CurrentFileVersion)",
            applies_to=(PPMID,),
        ),
        _check(
            "C-22b",
            "PPMID reports activation with a CS09 alert that tells what happened",
            "GBCS use case CS09 (PPMID Firmware Activation Alert, alert code 0x8F8B)",
            MUST,
            "Upgrade End Response now; the CS09 alert must carry 0x8F8B, the version now running and activateImage "
            "0 when it changed (an emulated DUT's event stands in for the GBCS alert)",
            applies_to=(PPMID,),
        ),
        _check(
            "C-23a",
            "HCALCS holds a downloaded image until Activate Firmware",
            "SECMP0007; DUIS SR 11.1 and SR 11.3 (HCALCS: distribution and activation are separate)",
            MUST,
            "Upgrade End Response wait; ImageUpgradeStatus 3 and no activation for 65 min",
            applies_to=(HCALCS,),
        ),
        _check(
            "C-23b",
            "HCALCS activates on Activate Firmware with the right hash",
            "GBCS use case CS06 (Activate Firmware, executionOutcome responseCode 0)",
            MUST,
            "image held; CS06 with the SHA-256 of its Manufacturer Image: responseCode 0 and the new version",
            applies_to=(HCALCS,),
        ),
        _check(
            "C-23c",
            "HCALCS refuses Activate Firmware with a wrong hash",
            "GBCS use case CS06 (Activate Firmware, responseCode 2 hashMismatch)",
            MUST,
            "image held; CS06 with a wrong hash: responseCode 2, no activation",
            applies_to=(HCALCS,),
        ),
        _check(
            "C-23d",
            "HCALCS with no image answers noImageHeld",
            "GBCS use case CS06 (Activate Firmware, responseCode 1 noImageHeld)",
            MUST,
            "nothing held; CS06: responseCode 1",
            applies_to=(HCALCS,),
        ),
        _check(
            "C-23e",
            "HCALCS executes a future-dated Activate Firmware at its time",
            "GBCS use case CS06 (future-dated: commandAccepted, then alert 0x00CA with 0x8F66/0x8F67)",
            MUST,
            "image held; CS06 dated 1 h ahead: commandAccepted, no activation before, then the outcome "
            "(0x8F66, responseCode 0) within 60 s of the time",
            applies_to=(HCALCS,),
        ),
        _check(
            "Z-01",
            "ZCL answers carry the TSN of the command they answer",
            "ZCL r7 §2.4.1.2 (transaction sequence number)",
            MUST,
            "Read Attributes of ImageUpgradeStatus, an undefined OTA command and an undefined general command, each "
            "with its own TSN: each answer must carry it",
            play=zcl.EXCHANGE,
            judge=zcl.z01_tsn_echoed,
        ),
        _check(
            "Z-02",
            "The OTA client's frames travel client→server",
            "ZCL r7 §2.4.1.1.3 (direction sub-field)",
            MUST,
            "every OTA cluster frame the DUT sends during the ZCL exchange (queries, Read Attributes Response, Default "
            "Responses) must have the direction bit clear",
            play=zcl.EXCHANGE,
            judge=zcl.z02_direction,
        ),
        _check(
            "Z-03",
            "No Default Response where ZCL forbids one",
            "ZCL r7 §2.5.12.2 (when a Default Response is generated)",
            MUST,
            "a unicast Image Notify with disable-default-response set, an undefined command broadcast and a Default "
            "Response sent to the DUT: none may draw a Default Response (the notify still draws a query)",
            play=zcl.EXCHANGE,
            judge=zcl.z03_default_response_rules,
        ),
        _check(
            "Z-04",
            "Unsupported commands get a Default Response with their status",
            "ZCL r7 §2.5.12.2, §2.6.3 (UNSUP_CLUSTER_COMMAND, UNSUP_GENERAL_COMMAND)",
            MUST,
            "an undefined OTA command 0x0A and an undefined general command 0x1F, default responses disabled: each "
            "must draw Default Response 0x81 (0x82 for the general one) naming it",
            play=zcl.EXCHANGE,
            judge=zcl.z04_unsupported_commands,
        ),
        _check(
            "Z-05",
            "Manufacturer-specific flag: never set on standard frames, foreign ones refused",
            "ZCL r7 §2.4.1.1.2 (manufacturer specific sub-field), §2.5.12.2",
            MUST,
            "the DUT's OTA frames must not set the manufacturer-specific bit; an Image Notify id sent as manufacturer "
            "0x1234's command must draw Default Response 0x83 (or 0x81), not a query",
            play=zcl.EXCHANGE,
            judge=zcl.z05_manufacturer_specific,
        ),
        _check(
            "C-PAGE",
            "Page requests refused (0x81): fall back to block requests",
            "ZCL r7 §11.13.7 (Image Page Request is optional; a server without it answers UNSUP_CLUSTER_COMMAND)",
            SHOULD,
            "page request refused: the CHF does not serve Image Page Requests; a DUT that sends one must go on with "
            "Image Block Requests only",
            play="page-fallback",
            judge=ota.judge_page_fallback,
        ),
        _check(
            "SE-01",
            "Joins only with its install-code-derived key",
            "SE 07-5356 §5.4.8 (install codes: the initial link key is derived from the device's install code), §5.4.1",
            MUST,
            "the CHF's Device Log holds another install code for the DUT, so the Transport-Key carrying the network "
            "key is under a key the DUT cannot derive: no frame from the DUT may follow; with its own code as control "
            "it must join",
        ),
        _check(
            "SE-02",
            "Completes CBKE with a valid CHF certificate, then APS-encrypts OTA",
            "SE 07-5356 Annex C.4.2 (CBKE after joining), §5.4.6 (OTA Upgrade cluster frames are "
            "APS-encrypted with the link key)",
            MUST,
            "the CHF runs the Key Establishment server with a certificate of the DUT's CA; CBKE must complete and the "
            "Query Next Image Request an APS-encrypted unicast Image Notify draws must come APS-encrypted",
        ),
        _check(
            "SE-03",
            "Key establishment with an unknown issuer is terminated UNKNOWN_ISSUER",
            "SE 07-5356 Annex C.3.1 (Key Establishment cluster, Terminate Key Establishment "
            "status), C.4.2.2; ZCL Key Establishment cluster status UNKNOWN_ISSUER (0x01)",
            MUST,
            "the CHF's Initiate Key Establishment Response carries a certificate from another CA: the DUT must send "
            "Terminate Key Establishment status 0x01 and not go on to OTA",
        ),
        _check(
            "SE-04",
            "A CHF certificate of another EUI-64 is terminated BAD_MESSAGE",
            "SE 07-5356 Annex C.3.1, C.4.2.2 (the responder's certificate must name the partner's "
            "EUI-64); ZCL Key Establishment cluster status BAD_MESSAGE (0x03)",
            MUST,
            "the CHF's Initiate Key Establishment Response carries a genuine certificate of another EUI-64: the DUT "
            "must send Terminate Key Establishment status 0x03 and not go on to OTA",
        ),
        _check(
            "SE-05",
            "A wrong key confirmation is terminated BAD_KEY_CONFIRM",
            "SE 07-5356 Annex C.3.1, C.4.2.2.4 (key confirmation: MACV checked by the initiator); "
            "ZCL Key Establishment cluster status BAD_KEY_CONFIRM (0x02)",
            MUST,
            "the CHF's Confirm Key Data Response carries a wrong MACV: the DUT must send Terminate Key Establishment "
            "status 0x02 and not go on to OTA",
        ),
        _check(
            "SE-06",
            "OTA commands without APS encryption are ignored once a link key is held",
            "SE 07-5356 §5.4.6 (OTA Upgrade cluster commands shall be APS-encrypted; a frame that "
            "should be and is not is dropped)",
            MUST,
            "after CBKE, a unicast Image Notify APS-encrypted must draw a query (control); the same notify sent "
            "without APS encryption must not",
        ),
    )
}


CHECKS: dict[str, Check] = {check_id: rule.check for check_id, rule in RULES.items()}
