"""The device check catalogue: every rule the bench holds a PPMID or HCALCS to, with the scenario that probes it.

IDs follow SPEC.md §9.3 (C-01 … C-23); a case that holds two rules is split (C-02a/C-02b, C-08a/C-08b, …).
C-PAGE is the page request fallback of SPEC.md §2.5. C-19 (REQUIRE_MORE_IMAGE) is not here: a device profile
cannot ask for more than one image, so no device could show it. The level is the strength of the rule as SPEC.md
reports it (a "shall" of the OTA specification or a GBCS requirement is MUST; a "should", a recommendation or
what only implementations do is SHOULD); only MUST failures fail a run.
"""

from __future__ import annotations

from collections.abc import Sequence

from emulator.conformance.model import Check, Level
from emulator.errors import InputError

PPMID = "ppmid"
HCALCS = "hcalcs"
BOTH = (PPMID, HCALCS)

MUST, SHOULD = Level.MUST, Level.SHOULD


class UnknownCheck(InputError):
    """A check ID that is not in the catalogue."""


def _check(id_: str, title: str, reference: str, level: Level, scenario: str, applies_to=BOTH) -> Check:
    return Check(id_, title, reference, level, tuple(applies_to), scenario)


CHECKS: dict[str, Check] = {
    check.id: check
    for check in (
        _check(
            "C-01",
            "Unicast Image Notify always draws a query",
            "SPEC.md §2.1, §9.3 C-01",
            MUST,
            "unicast Image Notify payload type 0, then type 3 naming the DUT's own version; a Query Next Image "
            "Request must follow each within 30 s",
        ),
        _check(
            "C-02a",
            "Broadcast notify for another manufacturer or image type is ignored",
            "SPEC.md §2.1, §9.3 C-02",
            MUST,
            "broadcast Image Notify type 1 with another manufacturer code and type 2 with another image type "
            "(jitter 100): no query; a matching type 2 broadcast as control must draw one",
        ),
        _check(
            "C-02b",
            "Broadcast notify naming the running version is ignored",
            "SPEC.md §2.1, §9.3 C-02",
            MUST,
            "broadcast Image Notify type 3 carrying the DUT's own version (jitter 100): no query; one naming "
            "another version as control must draw one",
        ),
        _check(
            "C-03",
            "QueryJitter is honoured",
            "SPEC.md §2.1, §9.3 C-03",
            SHOULD,
            "broadcast Image Notify with jitter 100 (must query), 20 with jitter 10 (at most 8 queries) and one "
            "with jitter 0 (outside 1..100: ignored)",
        ),
        _check(
            "C-04",
            "Query Next Image Request carries the hardware version",
            "SPEC.md §2.2, §8.4, §9.3 C-04",
            SHOULD,
            "the DUT's first query is read: field control bit 0 and a hardware version",
        ),
        _check(
            "C-05",
            "An offer of the running version is discarded",
            "SPEC.md §2.3 (ZCL7 §11.13.5.4), §9.3 C-05",
            SHOULD,
            "the CHF offers (reinstall policy) the version the DUT runs; no block request may follow",
        ),
        _check(
            "C-06",
            "Block loop: contiguous offsets from 0, ids of the offer",
            "SPEC.md §2.4, §2.6, §9.3 C-06",
            MUST,
            "a whole transfer with the CHF capping blocks at 40 bytes; every request must be at the end of the "
            "data received and name the offered image",
        ),
        _check(
            "C-07",
            "A block at the wrong offset or for another image is not stored",
            "SPEC.md §2.6 (client checks), §9.3 C-07",
            MUST,
            "at a quarter of the image the CHF answers once with a block at the wrong offset, then once with a "
            "block for another file version; the DUT must ask for the same offset again after each",
        ),
        _check(
            "C-08a",
            "WAIT_FOR_DATA is waited out",
            "SPEC.md §2.6, §6.3, §9.3 C-08",
            MUST,
            "the CHF answers the first block request with WAIT_FOR_DATA 30 s; the next request must come no sooner",
        ),
        _check(
            "C-08b",
            "MinimumBlockPeriod from the server is adopted",
            "SPEC.md §2.4, §6.3, §9.3 C-08",
            MUST,
            "WAIT_FOR_DATA carrying MinimumBlockPeriod 250 ms (2 s for a seconds-unit DUT); block requests must "
            "then be at least that far apart",
        ),
        _check(
            "C-09",
            "Image Block Response ABORT stops the download",
            "SPEC.md §2.6, §6.1, §9.3 C-09",
            MUST,
            "abort at 40 %: the CHF answers a block request with ABORT; no block request may follow within 60 s",
        ),
        _check(
            "C-10",
            "Three Default Responses NO_IMAGE_AVAILABLE end the download",
            "SPEC.md §0, §6.1 (ZCL7 §11.13.6.5.2), §9.3 C-10",
            SHOULD,
            "from 40 % every block request gets Default Response 0x98; no fourth request may follow three",
        ),
        _check(
            "C-11",
            "An unanswered block request is re-sent",
            "SPEC.md §6.1, §6.4, §9.3 C-11",
            SHOULD,
            "from 40 % the CHF stays silent; the DUT must re-send the request before it gives up (Upgrade End "
            "ABORT or a new query)",
        ),
        _check(
            "C-12a",
            "A corrupted image is reported INVALID_IMAGE and not kept",
            "SPEC.md §2.7, §9.3 C-12",
            MUST,
            "one corrupted byte: the image is served with one byte of its header's file version changed; Upgrade "
            "End INVALID_IMAGE, no reboot, ImageUpgradeStatus back to 0",
        ),
        _check(
            "C-12b",
            "An image for another hardware version is reported INVALID_IMAGE",
            "SPEC.md §2.7, §8.4, §9.3 C-12",
            MUST,
            "the CHF offers anyway an image whose header hardware range excludes the DUT's hardware version; "
            "Upgrade End INVALID_IMAGE, no reboot",
        ),
        _check(
            "C-13",
            "A good image is reported Upgrade End SUCCESS with its ids",
            "SPEC.md §2.7, §9.3 C-13",
            MUST,
            "a whole transfer of a good image; Upgrade End SUCCESS naming the downloaded image, after its last block",
        ),
        _check(
            "C-14",
            "Told to wait (UpgradeTime 0xFFFFFFFF), the image is held",
            "SPEC.md §2.8, §3.2, §9.3 C-14",
            MUST,
            "Upgrade End Response wait; for 65 min no reboot, ImageUpgradeStatus 3 (the re-sent Upgrade End "
            "Requests are reported)",
        ),
        _check(
            "C-15a",
            "Relative UpgradeTime is kept",
            "SPEC.md §2.8, §9.3 C-15",
            MUST,
            "Upgrade End Response CurrentTime 0, UpgradeTime 120; the reboot must come 120 s later (±3 s or 5 %)",
        ),
        _check(
            "C-15b",
            "Absolute UpgradeTime is kept",
            "SPEC.md §2.8, §9.3 C-15",
            MUST,
            "Upgrade End Response with UTC CurrentTime and UpgradeTime 120 s later; the reboot must come then",
        ),
        _check(
            "C-16",
            "Upgrade End Response for another image is ignored; wildcards are accepted",
            "SPEC.md §2.8 (OTA 6.10.10.4), §9.3 C-16",
            MUST,
            "Upgrade End Response wait, then an unsolicited one saying now for another file version (no reboot "
            "within 60 s), then one with wildcard ids saying now (reboot)",
        ),
        _check(
            "C-17",
            "Out-of-band activation policy refuses the server's UpgradeTime",
            "SPEC.md §2.8, §3.1 (SE 1.2b 15-0324-02 §11.10.12), §9.3 C-17",
            MUST,
            "for a DUT whose UpgradeActivationPolicy reads 1: Upgrade End Response now; Default Response "
            "NOT_AUTHORIZED and no reboot",
        ),
        _check(
            "C-18",
            "UpgradeTimeoutPolicy decides what happens without an Upgrade End Response",
            "SPEC.md §3.1, §6.1, §9.3 C-18",
            SHOULD,
            "the CHF never answers Upgrade End Request; with UpgradeTimeoutPolicy 0 the DUT must apply within "
            "4 h, with 1 it must not",
        ),
        _check(
            "C-20",
            "A restarted download resumes at its file offset",
            "SPEC.md §6.1, §9.3 C-20 (recommended)",
            SHOULD,
            "the DUT is power-cycled at half the image; its first request after the restart must not be offset 0",
        ),
        _check(
            "C-21",
            "After activation: CurrentFileVersion new, ImageTypeID 0xFFFF, status 0",
            "SPEC.md §3.1, §9.3 C-21",
            MUST,
            "Upgrade End Response now; after the reboot the OTA attributes 0x0002, 0x0008, 0x0006 are read",
        ),
        _check(
            "C-22a",
            "PPMID activates when the CHF says now",
            "SPEC.md §8.1, §8.6 item 5 (SR 11.4, CS05c), §9.3 C-22",
            MUST,
            "Upgrade End Response now; the PPMID must reboot into the new version (Device_annce, CurrentFileVersion)",
            applies_to=(PPMID,),
        ),
        _check(
            "C-22b",
            "PPMID reports activation with a CS09 alert that tells what happened",
            "SPEC.md §8.3 (CS09, alert 0x8F8B), §9.3 C-22",
            MUST,
            "Upgrade End Response now; the CS09 alert must carry 0x8F8B, the version now running and activateImage "
            "0 when it changed (an emulated DUT's event stands in for the GBCS alert)",
            applies_to=(PPMID,),
        ),
        _check(
            "C-23a",
            "HCALCS holds a downloaded image until Activate Firmware",
            "SPEC.md §8.1, §8.6 item 5 (SR 11.1 + 11.3), §9.3 C-23",
            MUST,
            "Upgrade End Response wait; ImageUpgradeStatus 3 and no activation for 65 min",
            applies_to=(HCALCS,),
        ),
        _check(
            "C-23b",
            "HCALCS activates on Activate Firmware with the right hash",
            "SPEC.md §8.3 (CS06 executionOutcome), §9.3 C-23",
            MUST,
            "image held; CS06 with the SHA-256 of its Manufacturer Image: responseCode 0 and the new version",
            applies_to=(HCALCS,),
        ),
        _check(
            "C-23c",
            "HCALCS refuses Activate Firmware with a wrong hash",
            "SPEC.md §8.3 (GBCS §11.5 hashMismatch), §9.3 C-23",
            MUST,
            "image held; CS06 with a wrong hash: responseCode 2, no activation",
            applies_to=(HCALCS,),
        ),
        _check(
            "C-23d",
            "HCALCS with no image answers noImageHeld",
            "SPEC.md §8.3 (GBCS §11.5 noImageHeld), §9.3 C-23",
            MUST,
            "nothing held; CS06: responseCode 1",
            applies_to=(HCALCS,),
        ),
        _check(
            "C-23e",
            "HCALCS executes a future-dated Activate Firmware at its time",
            "SPEC.md §8.3 (CS06 commandAccepted, alert 0x00CA 0x8F66/0x8F67), §9.3 C-23",
            MUST,
            "image held; CS06 dated 1 h ahead: commandAccepted, no activation before, then the outcome "
            "(0x8F66, responseCode 0) within 60 s of the time",
            applies_to=(HCALCS,),
        ),
        _check(
            "C-PAGE",
            "Page requests refused (0x81): fall back to block requests",
            "SPEC.md §2.5",
            SHOULD,
            "page request refused: the CHF does not serve Image Page Requests; a DUT that sends one must go on with "
            "Image Block Requests only",
        ),
    )
}


def parse_ids(text: str) -> list[str]:
    """`C-01,C-13` (spaces allowed) as a list of IDs, in the order given."""
    return [part.strip() for part in text.split(",") if part.strip()]


def select(ids: Sequence[str] | None, catalogue: dict[str, Check] | None = None) -> list[Check]:
    """The checks named (case-insensitively), in catalogue order; all of them for None."""
    catalogue = CHECKS if catalogue is None else catalogue
    if ids is None:
        return list(catalogue.values())
    by_upper = {key.upper(): key for key in catalogue}
    unknown = [i for i in ids if i.upper() not in by_upper]
    if unknown or not ids:
        named = ", ".join(unknown) if unknown else "none"
        raise UnknownCheck(f"--checks: unknown check ID(s) {named}; valid IDs: {', '.join(catalogue)}")
    wanted = {by_upper[i.upper()] for i in ids}
    return [check for key, check in catalogue.items() if key in wanted]
