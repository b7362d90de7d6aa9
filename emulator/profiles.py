"""Device and CHF profiles: TOML files that describe an emulated PPMID/HCALCS or a CHF OTA server.

A profile is read once, checked completely, and turned into a frozen dataclass; nothing downstream re-checks
it. An error names the file, the key and what is allowed, on one line. Every key, its meaning and its default
is documented in the README ("Profiles"); the `help` metadata below is the one source of those texts.

Behaviour the GB documents leave open (SPEC.md "UNCONFIRMED") is a setting here with the default SPEC.md
recommends: MinimumBlockPeriod unit, whether the CHF requires a hardware version, what an untargeted device
is told, and when the CHF tells a PPMID to activate.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import hashlib
import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import zigpy.types as t
from zigpy.zcl.clusters.general import UpgradeActivationPolicy, UpgradeTimeoutPolicy

from emulator.device.faults import DeviceFault
from emulator.errors import InputError
from emulator.numbers import parse_unsigned
from emulator.ota.frames import UPGRADE_TIME_WAIT
from emulator.security.install_code import InstallCode

SMART_ENERGY_PROFILE = 0x0109
HOME_AUTOMATION_PROFILE = 0x0104

# Device IDs: SE "Prepayment Terminal" and "Load Control Device" (SPEC.md §7: mapping UNCONFIRMED).
# The NWK address of the first emulated device of a HAN when its profile names none; the next count up.
FIRST_DEVICE_NWK = 0x1001
DEFAULT_DEVICE_IDS = {"ppmid": 0x0506, "hcalcs": 0x0504}

# The OTA client's policy attributes (SE 1.2b 15-0324-02 §11.10.12, §11.10.13) are zigpy's enums
# (`UpgradeActivationPolicy`, `UpgradeTimeoutPolicy`): a profile gives their number, the device reads them back.
_Policy = TypeVar("_Policy", UpgradeActivationPolicy, UpgradeTimeoutPolicy)


class ProfileError(InputError):
    """A profile file that is missing, not TOML, or has a key with a value that is not allowed."""


# -- value parsers ---------------------------------------------------------------------------------------


def _int(bits: int) -> Any:
    def parse(value: Any) -> int:
        return parse_unsigned(value, bits)

    return parse


def _optional(parser: Any) -> Any:
    def parse(value: Any) -> Any:
        return None if value in ("", "none", None) else parser(value)

    return parse


def _number(low: float = 0.0, high: float = float("inf")) -> Any:
    def parse(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"expected {low:g}..{high:g}, got {value}")
        return float(value)

    return parse


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _choice(*allowed: str) -> Any:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
        return value

    return parse


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def parse_eui64(value: Any) -> t.EUI64:
    """EUI-64 as written by people: "00:0D:6F:00:00:19:8B:36", "000D6F0000198B36" or 0x000D6F0000198B36."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < 1 << 64:
            raise ValueError(f"expected a 64-bit EUI-64, got {value}")
        return t.EUI64(value.to_bytes(8, "little"))
    if not isinstance(value, str):
        raise ValueError(f'expected an EUI-64 such as "00:0D:6F:00:00:19:8B:36", got {value!r}')
    text = value.strip().lower().removeprefix("0x").replace(":", "").replace("-", "")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 8:
        raise ValueError(f'expected an EUI-64 of 16 hex digits such as "00:0D:6F:00:00:19:8B:36", got {value!r}')
    return t.EUI64(raw[::-1])


def _eui64_list(value: Any) -> tuple[t.EUI64, ...]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list of EUI-64 strings, got {value!r}")
    return tuple(parse_eui64(item) for item in value)


def _str_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of strings, got {value!r}")
    return tuple(value)


def _faults(value: Any) -> frozenset[DeviceFault]:
    return frozenset(DeviceFault.parse(name) for name in _str_list(value))


def _policy(kind: type[_Policy], meanings: str) -> Any:
    """An OTA client policy attribute (SE 1.2b §11.10.12, §11.10.13): its number, as the attribute reads."""

    def parse(value: Any) -> _Policy:
        if isinstance(value, bool) or value not in (0, 1):
            raise ValueError(f"expected {meanings}, got {value!r}")
        return kind(value)

    return parse


class ActivationKind(enum.Enum):
    """The four forms of an activation time."""

    NOW = "now"  # activate at once: UpgradeTime = CurrentTime
    WAIT = "wait"  # hold the image until told again: UpgradeTime 0xFFFFFFFF
    AFTER = "after"  # SECONDS after the response: CurrentTime 0, UpgradeTime SECONDS (the relative form)
    AT = "at"  # at a UTC time: the absolute form


@dataclass(frozen=True, slots=True)
class ActivationTime:
    """When the CHF tells a device to activate, in its Upgrade End Response (SPEC.md §2.8). A profile writes it
    "now", "wait", "+SECONDS" or as an ISO-8601 time (UTC unless it names another zone); `str()` gives that text
    back (an ISO time in its normal form)."""

    kind: ActivationKind
    seconds: int = 0  # AFTER: how long after the response
    when: datetime | None = None  # AT: the time, timezone-aware

    NOW: ClassVar[ActivationTime]
    WAIT: ClassVar[ActivationTime]

    @classmethod
    def after(cls, seconds: int) -> ActivationTime:
        return cls(ActivationKind.AFTER, seconds=seconds)

    @classmethod
    def at(cls, when: datetime) -> ActivationTime:
        return cls(ActivationKind.AT, when=when if when.tzinfo is not None else when.replace(tzinfo=UTC))

    @classmethod
    def parse(cls, value: object) -> ActivationTime:
        """The activation time a profile names; ValueError saying what is allowed otherwise."""
        if isinstance(value, str):
            if value in ("now", "wait"):
                return cls(ActivationKind(value))
            if value.startswith("+") and value[1:].isdigit():
                return cls.after(int(value[1:]))
            try:
                return cls.at(datetime.fromisoformat(value))
            except ValueError:
                pass
        raise ValueError(f'expected "now", "wait", "+SECONDS" or an ISO-8601 UTC time, got {value!r}')

    def __str__(self) -> str:
        if self.kind is ActivationKind.AFTER:
            return f"+{self.seconds}"
        if self.kind is ActivationKind.AT and self.when is not None:
            return self.when.isoformat()
        return str(self.kind.value)

    def upgrade_times(self, now: int, epoch: datetime) -> tuple[int, int]:
        """(CurrentTime, UpgradeTime) of an Upgrade End Response sent at ZCL UTC time `now`, where `epoch` is the
        UTC time of ZCL time 0: "+N" takes the relative form (CurrentTime 0), an absolute time is never earlier
        than now."""
        if self.kind is ActivationKind.WAIT:
            return now, UPGRADE_TIME_WAIT
        if self.kind is ActivationKind.AFTER:
            return 0, self.seconds
        if self.kind is ActivationKind.AT and self.when is not None:
            return now, max(now, int((self.when - epoch).total_seconds()))
        return now, now


ActivationTime.NOW = ActivationTime(ActivationKind.NOW)
ActivationTime.WAIT = ActivationTime(ActivationKind.WAIT)


def _activation_time(value: Any) -> ActivationTime:
    return value if isinstance(value, ActivationTime) else ActivationTime.parse(value)


def _install_code(value: Any) -> str | None:
    """An install code in hex (with or without its CRC), kept as the code's hex without the CRC."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected an install code as a hex string, got {value!r}")
    try:
        return InstallCode.parse(value).code.hex().upper()
    except InputError as exc:
        raise ValueError(str(exc)) from None


def _cbke_suite(value: Any) -> str:
    """1, 2 or "both": the CBKE crypto suites a node offers (both: suite 2 preferred, as ZSE 1.2+ asks)."""
    if value in (1, 2, "1", "2", "both"):
        return str(value)
    raise ValueError(f'expected 1, 2 or "both", got {value!r}')


def derived_install_code(ieee: t.EUI64) -> str:
    """TEST ONLY: the install code a profile without `install_code` gets, a 16-byte code derived from the EUI-64
    so that bundled profiles join; a real device's code is random and printed on it (ZSE 07-5356 §5.4.8.1)."""
    return hashlib.sha256(b"ota-emu install code " + bytes(ieee)).digest()[:16].hex().upper()


def _spec(parser: Any, help: str) -> dict[str, Any]:
    return {"parse": parser, "help": help}


# -- device profile --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceProfile:
    kind: str = field(metadata=_spec(_choice("ppmid", "hcalcs"), "GB device kind: ppmid or hcalcs"))
    ieee: t.EUI64 = field(metadata=_spec(parse_eui64, "the device's EUI-64"))
    manufacturer_code: int = field(metadata=_spec(_int(16), "Zigbee manufacturer code"))
    image_type: int = field(metadata=_spec(_int(16), "OTA image type the device asks for"))
    file_version: int = field(metadata=_spec(_int(32), "version of the firmware running at start"))
    hardware_version: int | None = field(
        default=None, metadata=_spec(_optional(_int(16)), "hardware version sent in Query Next Image (0xVVRR)")
    )
    stack_version: int = field(default=0x0002, metadata=_spec(_int(16), "Zigbee stack version (2 = PRO)"))
    endpoint: int = field(default=1, metadata=_spec(_int(8), "endpoint holding Basic and the OTA client"))
    profile_id: int = field(
        default=SMART_ENERGY_PROFILE,
        metadata=_spec(_int(16), "application profile: 0x0109 Smart Energy (GB) or 0x0104 Home Automation"),
    )
    device_id: int | None = field(
        default=None, metadata=_spec(_optional(_int(16)), "device id (default 0x0506 PPMID, 0x0504 HCALCS)")
    )
    manufacturer_name: str = field(default="ota-emu", metadata=_spec(_text, "Basic cluster ManufacturerName"))
    model: str = field(default="", metadata=_spec(_text, "Basic cluster ModelIdentifier (default: the kind)"))
    nwk: int | None = field(
        default=None, metadata=_spec(_optional(_int(16)), "NWK address (default: assigned on join)")
    )
    query_interval: float = field(
        default=86400.0, metadata=_spec(_number(1), "seconds between periodic Query Next Image Requests")
    )
    query_start_jitter: float = field(
        default=300.0, metadata=_spec(_number(0), "the first query comes after a random delay up to this (s)")
    )
    max_data_size: int = field(
        default=63, metadata=_spec(_int(8), "MaximumDataSize asked for in each Image Block Request")
    )
    page_requests: bool = field(default=False, metadata=_spec(_bool, "fetch with Image Page Requests"))
    page_size: int = field(default=1024, metadata=_spec(_int(16), "PageSize of an Image Page Request (bytes)"))
    response_spacing: int = field(default=20, metadata=_spec(_int(16), "ResponseSpacing of an Image Page Request (ms)"))
    minimum_block_period: int = field(
        default=0, metadata=_spec(_int(16), "MinimumBlockPeriod attribute at start (in block_period_unit)")
    )
    block_period_unit: str = field(
        default="ms",
        metadata=_spec(_choice("ms", "s"), "unit of MinimumBlockPeriod: ms (OTA 09-5264) or s (ZCL §11.10.10)"),
    )
    send_min_block_period: bool = field(
        default=True, metadata=_spec(_bool, "advertise MinimumBlockPeriod in Image Block Requests (rate limiting)")
    )
    response_timeout: float = field(
        default=5.0, metadata=_spec(_number(0.1), "seconds to wait for an answer before resending")
    )
    max_resends: int = field(default=3, metadata=_spec(_int(8), "resends of one request before Upgrade End ABORT"))
    download_retry: float = field(
        default=300.0,
        metadata=_spec(_number(1), "after a download failed on the link, query again this soon (s) and resume"),
    )
    sleepy: bool = field(default=False, metadata=_spec(_bool, "rx off when idle: receives only when it polls"))
    poll_period: float = field(
        default=1.0, metadata=_spec(_number(0.05), "seconds between data polls while sleepy (fast poll)")
    )
    upgrade_activation_policy: UpgradeActivationPolicy = field(
        default=UpgradeActivationPolicy.OTA_server_allowed,
        metadata=_spec(
            _policy(UpgradeActivationPolicy, "0 (the OTA server may activate) or 1 (out of band only)"),
            "0 = the OTA server may activate, 1 = out-of-band only",
        ),
    )
    upgrade_timeout_policy: UpgradeTimeoutPolicy = field(
        default=UpgradeTimeoutPolicy.Apply_after_timeout,
        metadata=_spec(
            _policy(UpgradeTimeoutPolicy, "0 (apply after timeouts) or 1 (do not)"),
            "0 = apply after Upgrade End Response timeouts, 1 = do not",
        ),
    )
    upgrade_end_retry: float = field(
        default=3600.0, metadata=_spec(_number(1), "re-send Upgrade End Request this often while told to wait (s)")
    )
    upgrade_wait_threshold: int = field(
        default=10, metadata=_spec(_int(8), "unanswered Upgrade End Requests before the timeout policy applies")
    )
    signers: tuple[str, ...] = field(
        default=(), metadata=_spec(_str_list, "PEM public keys / certificates trusted to sign images")
    )
    require_signature: bool = field(
        default=True,
        metadata=_spec(_bool, "refuse images without a valid signature from a trusted signer (false: unsigned pass)"),
    )
    allow_downgrade: bool = field(
        default=False, metadata=_spec(_bool, "accept an offer of a lower file version than the one running")
    )
    activation_fails: bool = field(
        default=False, metadata=_spec(_bool, "activation of a new image fails (GB activationFailure)")
    )
    gbcs_key: str | None = field(
        default=None,
        metadata=_spec(_optional(_text), "PEM P-256 private key the device signs its GBCS messages with"),
    )
    supplier_signer: str | None = field(
        default=None,
        metadata=_spec(
            _optional(_text), "PEM certificate or public key an HCALCS checks Activate Firmware (CS06) signatures with"
        ),
    )
    require_supplier_signature: bool = field(
        default=True,
        metadata=_spec(_bool, "an HCALCS refuses CS06 commands it cannot check (no supplier_signer); false takes them"),
    )
    faults: frozenset[DeviceFault] = field(
        default=frozenset(), metadata=_spec(_faults, "deliberate deviations for conformance testing")
    )
    security: str = field(
        default="se",
        metadata=_spec(_choice("se", "none"), "se: install-code join, CBKE and APS-encrypted OTA; none: NWK key only"),
    )
    install_code: str | None = field(
        default=None,
        metadata=_spec(_install_code, "install code (hex, CRC optional); default: test-only code from the EUI-64"),
    )
    cbke_credentials: str | None = field(
        default=None,
        metadata=_spec(_optional(_text), "CBKE credentials file from `ota-emu certs issue` (default: a run's test CA)"),
    )
    cbke_suite: str = field(
        default="both", metadata=_spec(_cbke_suite, 'CBKE crypto suites offered: 1, 2 or "both" (2 preferred)')
    )
    source: str = field(default="<built-in>", metadata={"internal": True})

    def __post_init__(self) -> None:
        """Typed values also when code builds or `replace`s a profile with plain ones (a fault by its name, a
        policy by its number); an unknown one is a ValueError here rather than a check that never matches."""
        faults = frozenset(f if isinstance(f, DeviceFault) else DeviceFault.parse(f) for f in self.faults)
        object.__setattr__(self, "faults", faults)
        object.__setattr__(self, "upgrade_activation_policy", UpgradeActivationPolicy(self.upgrade_activation_policy))
        object.__setattr__(self, "upgrade_timeout_policy", UpgradeTimeoutPolicy(self.upgrade_timeout_policy))

    @property
    def effective_device_id(self) -> int:
        return self.device_id if self.device_id is not None else DEFAULT_DEVICE_IDS[self.kind]

    @property
    def effective_model(self) -> str:
        return self.model or self.kind.upper()

    @property
    def block_period_seconds(self) -> float:
        scale = 0.001 if self.block_period_unit == "ms" else 1.0
        return self.minimum_block_period * scale

    def replace(self, **changes: Any) -> DeviceProfile:
        return dataclasses.replace(self, **changes)

    def signer_paths(self) -> list[Path]:
        base = Path(self.source).parent if self.source != "<built-in>" else Path.cwd()
        return [(base / p) if not Path(p).is_absolute() else Path(p) for p in self.signers]


# -- CHF profile ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageEntry:
    path: str = field(metadata=_spec(_text, "OTA/GB upgrade file (relative to the profile)"))
    device_ids: tuple[t.EUI64, ...] = field(
        default=(), metadata=_spec(_eui64_list, "DeviceIDList: EUI-64s allowed this image (empty = any device)")
    )
    activation: ActivationTime | None = field(
        default=None,
        metadata=_spec(_optional(_activation_time), "Upgrade End policy for this image (overrides the CHF's)"),
    )

    def __post_init__(self) -> None:
        if self.activation is not None:
            object.__setattr__(self, "activation", _activation_time(self.activation))


@dataclass(frozen=True)
class DeviceLogEntry:
    ieee: t.EUI64 = field(metadata=_spec(parse_eui64, "EUI-64 of a device the CHF may admit"))
    install_code: str = field(metadata=_spec(_install_code, "its install code (hex, CRC optional)"))


@dataclass(frozen=True)
class ChfProfile:
    ieee: t.EUI64 = field(
        default=t.EUI64.convert("00:DB:12:34:56:78:90:A2"), metadata=_spec(parse_eui64, "the CHF's EUI-64")
    )
    endpoint: int = field(default=1, metadata=_spec(_int(8), "endpoint of the OTA server cluster"))
    profile_id: int = field(default=SMART_ENERGY_PROFILE, metadata=_spec(_int(16), "application profile"))
    channel: int = field(default=15, metadata=_spec(_int(8), "802.15.4 channel (11..26)"))
    pan_id: int = field(default=0x1A62, metadata=_spec(_int(16), "PAN ID"))
    extended_pan_id: t.EUI64 = field(
        default=t.EUI64.convert("DD:DD:DD:DD:DD:DD:DD:DD"), metadata=_spec(parse_eui64, "extended PAN ID")
    )
    network_key: str = field(
        default="01:03:05:07:09:0B:0D:0F:00:02:04:06:08:0A:0C:0D",
        metadata=_spec(_text, "network key (16 bytes hex), used for the network and for pcap decryption"),
    )
    images: tuple[ImageEntry, ...] = field(default=(), metadata={"internal": True})
    image_dir: str | None = field(
        default=None, metadata=_spec(_optional(_text), "folder of upgrade files served to any device")
    )
    max_block_size: int = field(
        default=63, metadata=_spec(_int(8), "largest block served, whatever the client asks (bytes)")
    )
    page_requests: bool = field(default=True, metadata=_spec(_bool, "serve Image Page Requests (else 0x81)"))
    query_specific_file: bool = field(
        default=True, metadata=_spec(_bool, "serve Query Device Specific File Requests (else 0x81)")
    )
    query_policy: str = field(
        default="upgrade",
        metadata=_spec(_choice("upgrade", "downgrade", "reinstall", "any"), "which versions a query may be offered"),
    )
    require_hardware_version: bool = field(
        default=False, metadata=_spec(_bool, "refuse queries without a hardware version when the image has a range")
    )
    untargeted: str = field(
        default="no_image",
        metadata=_spec(
            _choice("no_image", "not_authorized"), "answer to a device not in the DeviceIDList (0x98 or 0x7E)"
        ),
    )
    minimum_block_period: int = field(
        default=0, metadata=_spec(_int(16), "MinimumBlockPeriod the server imposes (0 = none)")
    )
    block_period_unit: str = field(default="ms", metadata=_spec(_choice("ms", "s"), "unit of minimum_block_period"))
    wait_for_data: float = field(
        default=0.0, metadata=_spec(_number(0, 86400), "first block request gets WAIT_FOR_DATA this long (s)")
    )
    max_concurrent_downloads: int = field(
        default=0,
        metadata=_spec(
            _int(16), "clients served at once; others wait (WAIT_FOR_DATA: 60 s, or their likely turn) (0 = no limit)"
        ),
    )
    ppmid_activation: ActivationTime = field(
        default=ActivationTime.NOW,
        metadata=_spec(_activation_time, "Upgrade End Response for a PPMID: now, +SECONDS, ISO time or wait"),
    )
    hcalcs_activation: ActivationTime = field(
        default=ActivationTime.WAIT, metadata=_spec(_activation_time, "Upgrade End Response for an HCALCS (GB: wait)")
    )
    notify: str = field(
        default="unicast",
        metadata=_spec(_choice("none", "unicast", "broadcast"), "Image Notify sent when a target joins"),
    )
    notify_payload_type: int = field(default=0, metadata=_spec(_int(8), "Image Notify payload type 0..3"))
    notify_jitter: int = field(default=100, metadata=_spec(_int(8), "Image Notify QueryJitter 1..100"))
    transfer_timeout: float = field(
        default=300.0, metadata=_spec(_number(1), "seconds without a block request before a transfer has failed")
    )
    gbcs_key: str | None = field(
        default=None, metadata=_spec(_optional(_text), "PEM P-256 private key the CHF signs its CCS08 alerts with")
    )
    alert_recipient: t.EUI64 = field(
        default=t.EUI64.convert("90:B3:D5:1F:30:00:00:02"),
        metadata=_spec(parse_eui64, "recipient id of the CCS08 and CS09 alerts"),
    )
    security: str = field(
        default="se",
        metadata=_spec(_choice("se", "none"), "se: admit by Device Log install code, CBKE server, APS-encrypted OTA"),
    )
    cbke_credentials: str | None = field(
        default=None,
        metadata=_spec(_optional(_text), "CBKE credentials file from `ota-emu certs issue` (default: a run's test CA)"),
    )
    cbke_suite: str = field(default="both", metadata=_spec(_cbke_suite, 'CBKE crypto suites offered: 1, 2 or "both"'))
    device_log: tuple[DeviceLogEntry, ...] = field(default=(), metadata={"internal": True})
    source: str = field(default="<built-in>", metadata={"internal": True})

    def __post_init__(self) -> None:
        """Typed activation times also when code builds or `replace`s a profile with their text."""
        object.__setattr__(self, "ppmid_activation", _activation_time(self.ppmid_activation))
        object.__setattr__(self, "hcalcs_activation", _activation_time(self.hcalcs_activation))

    def replace(self, **changes: Any) -> ChfProfile:
        return dataclasses.replace(self, **changes)

    @property
    def block_period_seconds(self) -> float:
        return self.minimum_block_period * (0.001 if self.block_period_unit == "ms" else 1.0)

    def image_paths(self) -> list[tuple[Path, ImageEntry]]:
        base = Path(self.source).parent if self.source != "<built-in>" else Path.cwd()
        return [(base / e.path if not Path(e.path).is_absolute() else Path(e.path), e) for e in self.images]


# -- loading ----------------------------------------------------------------------------------------------


def _build(cls: type, table: dict[str, Any], source: str, prefix: str = "") -> Any:
    values: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key, raw in table.items():
        if key not in fields:
            allowed = ", ".join(sorted(fields))
            raise ProfileError(f"{source}: unknown key '{prefix}{key}' (allowed: {allowed})")
        try:
            values[key] = fields[key].metadata["parse"](raw)
        except ValueError as exc:
            raise ProfileError(f"{source}: key '{prefix}{key}': {exc}") from None
    missing = [
        name
        for name, f in fields.items()
        if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ProfileError(f"{source}: missing required key '{prefix}{missing[0]}'")
    return values


def _read_toml(path: str | os.PathLike[str]) -> tuple[dict[str, Any], str]:
    p = Path(path)
    source = str(p)
    if not p.exists():
        raise ProfileError(f"{source}: no such profile file (expected a TOML profile)")
    if p.is_dir():
        raise ProfileError(f"{source}: is a directory (expected a TOML profile file)")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8")), source
    except UnicodeDecodeError:
        raise ProfileError(f"{source}: not UTF-8 text (expected a TOML profile)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{source}: not valid TOML ({exc})") from None


def device_from_dict(table: dict[str, Any], source: str = "<built-in>") -> DeviceProfile:
    table = dict(table.get("device", table))
    values = _build(DeviceProfile, table, source, "device." if source.endswith(".toml") else "")
    profile = DeviceProfile(**values, source=source)
    _check_device(profile)
    return profile


def _check_device(p: DeviceProfile) -> None:
    if p.max_data_size == 0:
        raise ProfileError(f"{p.source}: key 'device.max_data_size': expected 1..255, got 0")
    if not 1 <= p.endpoint <= 240:
        raise ProfileError(f"{p.source}: key 'device.endpoint': expected 1..240, got {p.endpoint}")
    if p.page_requests and p.page_size < p.max_data_size:
        raise ProfileError(f"{p.source}: key 'device.page_size': expected at least max_data_size ({p.max_data_size})")


def load_device(path: str | os.PathLike[str]) -> DeviceProfile:
    data, source = _read_toml(path)
    if "device" not in data:
        raise ProfileError(f"{source}: missing table [device] (expected a device profile)")
    extra = set(data) - {"device"}
    if extra:
        raise ProfileError(f"{source}: unknown table '{sorted(extra)[0]}' (a device profile has only [device])")
    return device_from_dict(data, source)


def expand(profiles: Iterable[DeviceProfile], count: int) -> list[DeviceProfile]:
    """`count` devices per profile; copies get consecutive EUI-64s (the last bytes count up)."""
    devices = []
    made_by: dict[t.EUI64, tuple[DeviceProfile, int]] = {}  # the words of `_origin` only for a clash
    for profile in profiles:
        base = int.from_bytes(bytes(profile.ieee), "little")
        for index in range(count):
            ieee = t.EUI64(((base + index) & (1 << 64) - 1).to_bytes(8, "little"))
            devices.append(profile if index == 0 else _copy_at(profile, ieee))
            if ieee in made_by:
                fix = "change the ieee of one profile" + (", or use a smaller --count" if count > 1 else "")
                raise ValueError(
                    f"{_origin(*made_by[ieee])} and {_origin(profile, index)} would both be {ieee}, and a HAN needs "
                    f"one EUI-64 per device ({fix})"
                )
            made_by[ieee] = (profile, index)
    return devices


def _copy_at(profile: DeviceProfile, ieee: t.EUI64) -> DeviceProfile:
    """`profile.replace(ieee=ieee, nwk=None)` without running the checks again: the profile's values were checked
    when it was made, an EUI64 and no NWK address need none, and a 10,000-device run makes 10,000 copies."""
    copied = copy.copy(profile)
    object.__setattr__(copied, "ieee", ieee)
    object.__setattr__(copied, "nwk", None)
    return copied


def _origin(profile: DeviceProfile, index: int) -> str:
    """Where a device of `expand` comes from, in words: the profile, or which copy of it."""
    if index == 0:
        return f"the {profile.kind.upper()} of {profile.source}"
    return f"{profile.kind.upper()} copy {index + 1} of {profile.source} (--count counts up from {profile.ieee})"


def chf_from_dict(data: dict[str, Any], source: str = "<built-in>") -> ChfProfile:
    chf_table = dict(data.get("chf", {}))
    values = _build(ChfProfile, chf_table, source, "chf.")
    images_raw = data.get("images", [])
    if not isinstance(images_raw, list):
        raise ProfileError(f"{source}: 'images' must be an array of tables ([[images]])")
    images = []
    for index, entry in enumerate(images_raw):
        if not isinstance(entry, dict):
            raise ProfileError(f"{source}: images[{index}] must be a table with path and device_ids")
        images.append(ImageEntry(**_build(ImageEntry, entry, source, f"images[{index}].")))
    log_raw = data.get("device_log", [])
    if not isinstance(log_raw, list) or not all(isinstance(entry, dict) for entry in log_raw):
        raise ProfileError(f"{source}: 'device_log' must be an array of tables ([[device_log]]: ieee, install_code)")
    device_log = tuple(
        DeviceLogEntry(**_build(DeviceLogEntry, entry, source, f"device_log[{index}]."))
        for index, entry in enumerate(log_raw)
    )
    profile = ChfProfile(**values, images=tuple(images), device_log=device_log, source=source)
    if not 11 <= profile.channel <= 26:
        raise ProfileError(f"{source}: key 'chf.channel': expected 11..26, got {profile.channel}")
    if profile.notify_payload_type > 3:
        raise ProfileError(f"{source}: key 'chf.notify_payload_type': expected 0..3, got {profile.notify_payload_type}")
    if not 1 <= profile.notify_jitter <= 100:
        raise ProfileError(f"{source}: key 'chf.notify_jitter': expected 1..100, got {profile.notify_jitter}")
    if profile.max_block_size == 0:
        raise ProfileError(f"{source}: key 'chf.max_block_size': expected 1..255, got 0")
    try:
        key = bytes.fromhex(profile.network_key.replace(":", ""))
    except ValueError:
        key = b""
    if len(key) != 16:
        raise ProfileError(f"{source}: key 'chf.network_key': expected 16 bytes of hex, got {profile.network_key!r}")
    return profile


def load_chf(path: str | os.PathLike[str]) -> ChfProfile:
    data, source = _read_toml(path)
    extra = set(data) - {"chf", "images", "device_log"}
    if extra:
        raise ProfileError(
            f"{source}: unknown table '{sorted(extra)[0]}' (a CHF profile has [chf], [[images]] and [[device_log]])"
        )
    return chf_from_dict(data, source)


PACKAGE_PROFILES = "_profiles"  # where the wheel puts profiles/ (pyproject: force-include)


def bundled_root(package_dir: Path | None = None) -> Path | None:
    """The folder of the profiles shipped with ota-emu: `emulator/_profiles` in an installed wheel, `profiles/`
    beside the package in a checkout; None when neither exists. `package_dir` is the `emulator` package folder
    (tests pass another one to check a wheel's layout)."""
    package = package_dir or Path(__file__).resolve().parent
    for candidate in (package / PACKAGE_PROFILES, package.parent / "profiles"):
        if (candidate / "chf.toml").is_file():
            return candidate
    return None


def bundled_names(package_dir: Path | None = None) -> list[str]:
    """Every bundled profile by name: `chf`, `hcalcs`, `ppmid` first, then `faults/<name>`, each sorted."""
    root = bundled_root(package_dir)
    if root is None:
        return []
    names = [p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.toml")]
    return sorted(names, key=lambda name: (name.count("/"), name))


def bundled(name: str, package_dir: Path | None = None) -> Path:
    """Path of a profile shipped with the package by name (`ppmid`, `faults/ignore-wait-for-data`)."""
    root = bundled_root(package_dir)
    if root is not None and name in bundled_names(package_dir):
        return root / f"{name}.toml"
    raise ProfileError(f"{name}: no bundled profile of that name (expected {_expected_names(name, package_dir)})")


def resolve_profile(text: str, package_dir: Path | None = None) -> Path:
    """What a `--device`/`--chf` value names: an existing path as given, else the bundled profile of that name.
    Neither is a one-line error that lists the bundled names."""
    path = Path(text)
    if path.exists():
        return path
    if text in bundled_names(package_dir):
        return bundled(text, package_dir)
    raise ProfileError(
        f"{text}: no such profile file and no bundled profile of that name (expected a TOML file or "
        f"{_expected_names(text, package_dir)})"
    )


def _expected_names(text: str, package_dir: Path | None) -> str:
    """The bundled names worth listing on one line: the fault profiles for a `faults/...` name, else the top-level
    ones and a pointer to the rest."""
    names = bundled_names(package_dir)
    if not names:
        return "a bundled profile, but none is installed"
    top = [n for n in names if "/" not in n]
    faults = [n for n in names if n.startswith("faults/")]
    if text.startswith("faults/") or not top:
        return "one of " + ", ".join(faults or names)
    rest = f", or faults/NAME (one of {len(faults)}: `ota-emu profiles list`)" if faults else ""
    return "one of " + ", ".join(top) + rest


def bundled_key(name: str) -> Path:
    """Path of a test-only key shipped with the bundled profiles (`profiles/keys/NAME`, see its README)."""
    return bundled("ppmid").parent / "keys" / name


def documented_keys(cls: type) -> list[tuple[str, str, Any]]:
    """(key, help, default) for every user-settable key: the README's profile tables are generated from this."""
    rows = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        default = "required" if f.default is dataclasses.MISSING else f.default
        rows.append((f.name, f.metadata["help"], default))
    return rows
