"""What the probes of the server checks ask for: the image a target holds, who the probes are, and the sizes and
statuses they send. Targets build the image and the probes from it, and judges check the answers against the same
numbers, so it stays apart from either."""

import zigpy.types as t

from emulator.ota.frames import Status

MANUFACTURER = 0x121D
IMAGE_TYPE = 0x0084
CURRENT_VERSION = 1
OFFERED_VERSION = 2
HARDWARE_RANGE = (0x1111, 0x1211)
PROBE_HARDWARE = 0x1150
PAYLOAD_SIZE = 300
# A device-specific file (SPEC.md §2.9): client configuration, for the first probe only.
SPECIFIC_IMAGE_TYPE = 0xFFC1
SPECIFIC_VERSION = 5
# The "missing file" of Silicon Labs' test case 9.5.6 (SPEC.md §9.1).
MISSING_FILE = (0xFFF0, 0x0000, 0xFFFFFFF0)
MISSING_FILE_OFFSET = 100
# MaximumDataSize of a download, and a smaller one a server must also respect.
MAX_DATA_SIZE = 64
SMALL_DATA_SIZE = 17
CONCURRENT_DATA_SIZE = 40
# An Image Page Request (SPEC.md §2.5): offset, MaximumDataSize, PageSize, ResponseSpacing (ms).
PAGE = (10, 50, 120, 40)
# Protocol seconds a probe listens where the right answer is silence (or may come late).
LISTEN = 5.0
TARGET_IEEES = tuple(t.EUI64.convert(f"00:db:12:34:56:78:91:0{i}") for i in range(1, 4))
SPARE_IEEE = t.EUI64.convert("00:db:12:34:56:78:91:04")  # in the DeviceIDList of an image that gets discarded
STRANGER_IEEE = t.EUI64.convert("00:db:12:34:56:78:91:ff")  # in no DeviceIDList
FIRST_PROBE_NWK = 0x2001
STRANGER_NWK = 0x20FF
FAILED_END_STATUSES = (Status.ABORT, Status.INVALID_IMAGE, Status.REQUIRE_MORE_IMAGE)
# Image Notify payload length by payload type (SPEC.md §2.1).
NOTIFY_PAYLOAD_SIZES = (2, 4, 6, 10)
