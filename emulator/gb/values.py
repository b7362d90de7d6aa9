"""How GBCS writes values the Zigbee side holds in other forms: whole-second date-times and 4-octet versions.

The emulated nodes keep protocol time to the microsecond and firmware versions as 32-bit OTA file versions; the
messages they sign carry what GBCS carries (SPEC.md §8.3): date-times in whole seconds, as the RTDS vectors write
"YYYYMMDDhhmmssZ", and firmware versions as the four octets of the file version, most significant first.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def gbcs_time(when: datetime) -> datetime:
    """GBCS date-times carry whole seconds: round down."""
    return when.astimezone(UTC).replace(microsecond=0)


def gbcs_time_not_before(when: datetime) -> datetime:
    """A whole-second execution time that is not earlier than `when` (rounding down could make it the past)."""
    whole = gbcs_time(when)
    return whole if whole == when else whole + timedelta(seconds=1)


def version_octets(version: int) -> bytes:
    """An OTA file version as GBCS carries a firmware version: 4 octets, big-endian."""
    return version.to_bytes(4, "big")
