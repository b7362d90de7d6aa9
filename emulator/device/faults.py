"""The deliberate deviations an emulated device can be given (a profile's `faults` list).

Each one breaks exactly one rule of the OTA client or of ZCL, so that every conformance check has a device that
fails it. A profile names them by their value (`faults = ["no_resend"]`); the loader turns the names into
`DeviceFault` members and refuses an unknown one, and the code consults the member at the one place where the
conforming behaviour lives. Being an enum rather than a string, a misspelt fault is an error where it is written
(an AttributeError, and a mypy error) instead of a check that silently never fires.
"""

from __future__ import annotations

import enum


class DeviceFault(enum.Enum):
    """One deviation; the value is its name in a profile."""

    NO_HARDWARE_VERSION = "no_hardware_version"
    QUERY_ON_ANY_NOTIFY = "query_on_any_notify"
    IGNORE_UNICAST_NOTIFY = "ignore_unicast_notify"
    ACCEPT_SAME_VERSION = "accept_same_version"
    IGNORE_OFFSET = "ignore_offset"
    IGNORE_WAIT_FOR_DATA = "ignore_wait_for_data"
    IGNORE_MIN_BLOCK_PERIOD = "ignore_min_block_period"
    CONTINUE_AFTER_ABORT = "continue_after_abort"
    IGNORE_NO_IMAGE_DEFAULT_RESPONSE = "ignore_no_image_default_response"
    NO_RESEND = "no_resend"
    SKIP_VERIFICATION = "skip_verification"
    ACTIVATE_WHILE_WAITING = "activate_while_waiting"
    IGNORE_UPGRADE_TIME = "ignore_upgrade_time"
    ACCEPT_FOREIGN_UPGRADE_END = "accept_foreign_upgrade_end"
    IGNORE_ACTIVATION_POLICY = "ignore_activation_policy"
    RESTART_FROM_ZERO = "restart_from_zero"
    KEEP_IMAGE_TYPE_AFTER_UPGRADE = "keep_image_type_after_upgrade"
    NO_ACTIVATION_ALERT = "no_activation_alert"
    SKIP_HASH_CHECK = "skip_hash_check"
    ACTIVATE_WITHOUT_IMAGE = "activate_without_image"
    NO_PAGE_FALLBACK = "no_page_fallback"
    NO_UPGRADE_END_ON_INVALID = "no_upgrade_end_on_invalid"
    ASSUME_FULL_BLOCKS = "assume_full_blocks"
    UPGRADE_END_RUNNING_VERSION = "upgrade_end_running_version"
    IGNORE_TIMEOUT_POLICY = "ignore_timeout_policy"
    ACTIVATE_FUTURE_DATED_NOW = "activate_future_dated_now"
    ZCL_WRONG_TSN = "zcl_wrong_tsn"
    ZCL_WRONG_DIRECTION = "zcl_wrong_direction"
    ZCL_DEFAULT_RESPONSE_WHEN_DISABLED = "zcl_default_response_when_disabled"
    ZCL_SILENT_ON_UNSUPPORTED = "zcl_silent_on_unsupported"
    ZCL_MANUFACTURER_FLAG = "zcl_manufacturer_flag"
    JOIN_WITH_FOREIGN_KEY = "join_with_foreign_key"
    OTA_WITHOUT_APS_ENCRYPTION = "ota_without_aps_encryption"
    KE_NO_TERMINATE = "ke_no_terminate"
    KE_TERMINATE_BAD_MESSAGE = "ke_terminate_bad_message"
    ACCEPT_UNENCRYPTED_OTA = "accept_unencrypted_ota"

    def __str__(self) -> str:
        return str(self.value)

    @property
    def description(self) -> str:
        """What the device does instead of the rule, and the checks that catch it (the README's table)."""
        return _DESCRIPTIONS[self]

    @classmethod
    def parse(cls, name: object) -> DeviceFault:
        """The fault a profile names; ValueError naming every valid fault otherwise."""
        for fault in cls:
            if fault.value == name:
                return fault
        raise ValueError(f"unknown fault {name!r} (known: {', '.join(sorted(f.value for f in cls))})")


_DESCRIPTIONS: dict[DeviceFault, str] = {
    DeviceFault.NO_HARDWARE_VERSION: "omit the hardware version from Query Next Image Request (C-04)",
    DeviceFault.QUERY_ON_ANY_NOTIFY: (
        "query on every broadcast Image Notify, ignoring mismatching fields and jitter (C-02, C-03)"
    ),
    DeviceFault.IGNORE_UNICAST_NOTIFY: "do not query after a unicast Image Notify (C-01)",
    DeviceFault.ACCEPT_SAME_VERSION: "start a download when offered the version already running (C-05)",
    DeviceFault.IGNORE_OFFSET: "store a block at whatever offset it carries instead of the requested one (C-07)",
    DeviceFault.IGNORE_WAIT_FOR_DATA: "re-request at once after WAIT_FOR_DATA instead of waiting (C-08)",
    DeviceFault.IGNORE_MIN_BLOCK_PERIOD: "send block requests back to back, ignoring MinimumBlockPeriod (C-08)",
    DeviceFault.CONTINUE_AFTER_ABORT: "keep requesting blocks after an ABORT block response (C-09)",
    DeviceFault.IGNORE_NO_IMAGE_DEFAULT_RESPONSE: "keep requesting blocks after three 0x98 Default Responses (C-10)",
    DeviceFault.NO_RESEND: "never resend a block request that got no answer (C-11)",
    DeviceFault.SKIP_VERIFICATION: "accept any image without checking signature, hardware range or identity (C-12)",
    DeviceFault.ACTIVATE_WHILE_WAITING: "activate at once when told to wait (UpgradeTime 0xFFFFFFFF) (C-14)",
    DeviceFault.IGNORE_UPGRADE_TIME: "activate at once instead of at UpgradeTime (C-15)",
    DeviceFault.ACCEPT_FOREIGN_UPGRADE_END: "act on an Upgrade End Response for another image (C-16)",
    DeviceFault.IGNORE_ACTIVATION_POLICY: (
        "obey the server's UpgradeTime even with out-of-band activation policy (C-17)"
    ),
    DeviceFault.RESTART_FROM_ZERO: "restart every download from offset 0 after a restart (C-20)",
    DeviceFault.KEEP_IMAGE_TYPE_AFTER_UPGRADE: "leave ImageTypeID at the new image's type after activating (C-21)",
    DeviceFault.NO_ACTIVATION_ALERT: "do not report activation (no CS09-style event) (C-22)",
    DeviceFault.SKIP_HASH_CHECK: "activate on an Activate Firmware command whatever its hash (C-23)",
    DeviceFault.ACTIVATE_WITHOUT_IMAGE: "answer success to Activate Firmware with no image held (C-23)",
    DeviceFault.NO_PAGE_FALLBACK: "keep sending page requests after UNSUP_CLUSTER_COMMAND",
    DeviceFault.NO_UPGRADE_END_ON_INVALID: (
        "discard an invalid image silently instead of Upgrade End INVALID_IMAGE (C-12)"
    ),
    DeviceFault.ASSUME_FULL_BLOCKS: "advance FileOffset by MaximumDataSize whatever length the block had (C-06)",
    DeviceFault.UPGRADE_END_RUNNING_VERSION: "name the running file version in Upgrade End Request SUCCESS (C-13)",
    DeviceFault.IGNORE_TIMEOUT_POLICY: (
        "apply after unanswered Upgrade End Requests even with UpgradeTimeoutPolicy 1 (C-18)"
    ),
    DeviceFault.ACTIVATE_FUTURE_DATED_NOW: (
        "execute a future-dated Activate Firmware at once instead of at its time (C-23)"
    ),
    DeviceFault.ZCL_WRONG_TSN: "answer ZCL commands with a TSN one above the request's (Z-01)",
    DeviceFault.ZCL_WRONG_DIRECTION: "send ZCL answers with the direction bit of the other side (Z-02)",
    DeviceFault.ZCL_DEFAULT_RESPONSE_WHEN_DISABLED: (
        "send Default Response SUCCESS even when the command disabled it (Z-03)"
    ),
    DeviceFault.ZCL_SILENT_ON_UNSUPPORTED: "send no Default Response for unsupported commands (Z-04, Z-05)",
    DeviceFault.ZCL_MANUFACTURER_FLAG: "send ZCL answers flagged manufacturer specific (Z-05)",
    DeviceFault.JOIN_WITH_FOREIGN_KEY: (
        "join although the Transport-Key does not open under its install-code key (SE-01)"
    ),
    DeviceFault.OTA_WITHOUT_APS_ENCRYPTION: "send OTA frames without APS encryption after CBKE (SE-02)",
    DeviceFault.KE_NO_TERMINATE: (
        "give up a failed key establishment without Terminate Key Establishment (SE-03, SE-04, SE-05)"
    ),
    DeviceFault.KE_TERMINATE_BAD_MESSAGE: (
        "terminate every failed key establishment with status BAD_MESSAGE, whatever failed (SE-03, SE-05)"
    ),
    DeviceFault.ACCEPT_UNENCRYPTED_OTA: (
        "act on OTA commands sent without APS encryption while it holds a link key (SE-06)"
    ),
}
