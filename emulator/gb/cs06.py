"""What an HCALCS checks before it acts on an Activate Firmware command (GBCS CS06, §11.5). Pure.

A command is acted on only when it parses, is a CS06 Activate Firmware command, is addressed to this device,
is signed by the supplier the device trusts (or the device's profile lets it take unchecked commands), and
carries an originator counter above the last one accepted from its originator — a replayed command is refused.
A refusal is a `CommandRefused` naming the command's source and what was expected, and changes nothing.

The outcome of the signature check travels with the command into the alert log (`SignatureCheck.as_json`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import zigpy.types as t

from emulator import keys
from emulator.errors import InputError
from emulator.gb.counters import Counters
from emulator.gb.frame import GbcsFrame, decode_message, parse, verify
from emulator.gb.messages import ActivateFirmwareCommand

MAC_NOT_CHECKED = "not checked (the general-ciphering MAC needs the key agreed by ECDH)"


class CommandRefused(InputError):
    """A GBCS command an emulated device refuses: wrong message, wrong recipient, bad signature, replayed."""


class SignatureStatus(StrEnum):
    """How the signature of a message in the alert log was dealt with; the value is what the log says."""

    SIGNED = "signed"  # an emulated node signed it
    VERIFIED = "verified"  # a received command, verified with the trusted supplier's key
    NOT_CHECKED = "not checked"  # a received command, taken without a trusted key to check it with


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """The signature entry of an alert log line: its status, the signer (the key file, or the file that
    verified it) or why it was not checked, and for a command in a general-ciphering wrapper, the MAC."""

    status: SignatureStatus
    signer: str | None = None
    reason: str | None = None
    mac: str | None = None

    def as_json(self) -> dict[str, Any]:
        fields = {"status": str(self.status), "signer": self.signer, "reason": self.reason, "mac": self.mac}
        return {name: value for name, value in fields.items() if value is not None}


@dataclass(frozen=True, slots=True)
class TrustedSupplier:
    """The supplier key an HCALCS checks CS06 signatures with, and the file it came from."""

    key: keys.PublicKey
    source: str


@dataclass(frozen=True, slots=True)
class ActivateCommand:
    """A CS06 command that passed the device's checks and has not been acted on yet."""

    data: bytes
    frame: GbcsFrame
    message: ActivateFirmwareCommand
    source: str
    signature: SignatureCheck


@dataclass(frozen=True, slots=True)
class Cs06Policy:
    """What one HCALCS checks commands against: its EUI-64, the supplier it trusts (None: its profile names
    none), whether it then refuses unchecked commands, and the profile to name when it does."""

    device: t.EUI64
    trusted: TrustedSupplier | None
    require_signature: bool
    profile_source: str

    def check(self, data: bytes, source: str, counters: Counters) -> ActivateCommand:
        """Everything the device checks before acting; a refusal is a `CommandRefused` (or a `GbcsError` for a
        frame that does not parse)."""
        frame = parse(data, source)
        message = decode_message(frame, source)
        if not isinstance(message, ActivateFirmwareCommand):
            raise CommandRefused(
                f"{source}: a {message.TITLE} (message code 0x{frame.message_code:04X}), expected a CS06 "
                "ActivateFirmware command (0x0012, CRA flag command)"
            )
        if frame.recipient_id != self.device:
            raise CommandRefused(f"{source}: addressed to {frame.recipient_id}, not to this HCALCS {self.device}")
        signature = self._signature(frame, source)
        last = counters.last_accepted(frame.originator_id)
        if last is not None and frame.originator_counter <= last:
            raise CommandRefused(
                f"{source}: originator counter {frame.originator_counter} is not above {last}, the last accepted "
                f"from {frame.originator_id} (a replayed command is refused)"
            )
        return ActivateCommand(data, frame, message, source, signature)

    def _signature(self, frame: GbcsFrame, source: str) -> SignatureCheck:
        mac = None if frame.mac is None else MAC_NOT_CHECKED
        trusted = self.trusted
        if trusted is None:
            if self.require_signature:
                raise CommandRefused(
                    f"{source}: {self.profile_source} names no supplier_signer, so the signature cannot be checked; "
                    "command refused (require_supplier_signature = false takes unchecked commands)"
                )
            reason = f"{self.profile_source} names no supplier_signer"
            return SignatureCheck(SignatureStatus.NOT_CHECKED, reason=reason, mac=mac)
        if frame.signature is None:
            raise CommandRefused(f"{source}: unsigned, expected a signature by {trusted.source} (supplier_signer)")
        if not verify(frame, trusted.key):
            raise CommandRefused(
                f"{source}: signature does not verify with {trusted.source} (supplier_signer); command refused"
            )
        return SignatureCheck(SignatureStatus.VERIFIED, signer=trusted.source, mac=mac)
