"""The GBCS side of a run: the signed messages the emulated CHF and devices send, and the alert log that keeps them.

GB reports firmware events as signed GBCS messages (SPEC.md §8.3, DESIGN.md §3): the CHF sends a CCS08 Firmware
Transfer Alert per target, a PPMID a CS09 Firmware Activation Alert once it has activated, and an HCALCS answers
an Activate Firmware command (CS06) with its executionOutcome — or, when the command is future-dated, with
commandAccepted now and a 0x00CA alert (0x8F66 success / 0x8F67 failure) when it executes. The layers below
report those moments as events (`TransferOutcome`, `Activated`, `ActivationOutcome`); this module turns them
into frames with `emulator.gb`. For an HCALCS it also checks a CS06 command before the device acts on it, as
GBCS §11.5 asks: addressed to this device, signed by the supplier the profile trusts, and an originator counter
above the last one accepted from that originator (a replayed command is refused).

Identities: every originator signs with the P-256 key its profile names (`gbcs_key`) or a key generated for it.
With a state directory, generated keys and counters are kept there (`<EUI64>.gbcs-key.pem`, `<EUI64>.gbcs.json`)
so that a device signs with the same key, and never reuses a counter, from one run or `ota-emu activate` to the
next.

The alert log holds one JSON object per line and message: the decoded frame and content, the hex frame, the event
that produced it and its protocol time. Beside it go the public keys of the originators that signed its lines
(`<id>-ds.pub.pem`, the id in lower-case hex as in the DCC's key file names), so that `ota-emu gbcs decode
--signer` verifies any line.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import zigpy.types as t

from emulator import keys
from emulator.chf import events as server_events
from emulator.chf.store import HeldImage
from emulator.device import events as device_events
from emulator.device.device import EmulatedDevice
from emulator.device.state import eui64_name
from emulator.errors import InputError
from emulator.files import write_atomic
from emulator.gb.codes import ActivationResponse, AlertCode
from emulator.gb.frame import GbcsFrame, decode_message, parse, sign_message, verify
from emulator.gb.jsonable import iso, json_value
from emulator.gb.messages import (
    ActivateFirmwareAlert,
    ActivateFirmwareCommand,
    ActivateFirmwareResponse,
    ExecutionOutcome,
    FirmwareTransferAlert,
    GbcsMessage,
    PpmidFirmwareActivationAlert,
)
from emulator.han.network import Han, HanOptions
from emulator.profiles import ChfProfile, DeviceProfile, ProfileError, bundled_key

DEFAULT_SUPPLIER_ID = t.EUI64.convert("90:B3:D5:1F:30:01:00:00")
TEST_SUPPLIER_KEY = "test-supplier.key.pem"
COUNTER_FORMAT = 1
MAC_NOT_CHECKED = "not checked (the general-ciphering MAC needs the key agreed by ECDH)"


class AlertError(InputError):
    """A GBCS command an emulated device refuses, or a counter file that is not one this program wrote."""


# -- times, versions and JSON -----------------------------------------------------------------------------


def gbcs_time(when: datetime) -> datetime:
    """GBCS date-times carry whole seconds (the RTDS vectors write "YYYYMMDDhhmmssZ"): round down."""
    return when.astimezone(UTC).replace(microsecond=0)


def gbcs_time_not_before(when: datetime) -> datetime:
    """A whole-second execution time that is not earlier than `when` (rounding down could make it the past)."""
    whole = gbcs_time(when)
    return whole if whole == when else whole + timedelta(seconds=1)


def version_octets(version: int) -> bytes:
    """An OTA file version as GBCS carries a firmware version: 4 octets, big-endian."""
    return version.to_bytes(4, "big")


def event_fields(event: object) -> dict[str, Any]:
    """Which run event produced a message, with everything it carried."""
    return {"type": type(event).__name__, **json_value(event)}


# -- keys and counters ------------------------------------------------------------------------------------


def profile_file(profile: DeviceProfile | ChfProfile, value: str) -> Path:
    """A file named in a profile, relative to the profile (as its images and signers are)."""
    path = Path(value)
    if path.is_absolute() or profile.source == "<built-in>":
        return path
    return Path(profile.source).parent / path


def _key_name(profile: DeviceProfile | ChfProfile, key: str) -> str:
    return f"{'device' if isinstance(profile, DeviceProfile) else 'chf'}.{key}"


def configured_key(profile: DeviceProfile | ChfProfile) -> keys.PrivateKey | None:
    """The signing key the profile names in `gbcs_key`, or None (a key is then generated)."""
    if profile.gbcs_key is None:
        return None
    try:
        return keys.load_private_key(profile_file(profile, profile.gbcs_key))
    except keys.KeyFileError as exc:
        raise ProfileError(f"{profile.source}: key '{_key_name(profile, 'gbcs_key')}': {exc}") from None


@dataclass(frozen=True)
class Trusted:
    """The supplier key an HCALCS checks CS06 signatures with, and the file it came from."""

    key: keys.PublicKey
    source: str


def trusted_supplier(profile: DeviceProfile) -> Trusted | None:
    """The profile's `supplier_signer`, or None when it names none (signatures are then not checked)."""
    if profile.supplier_signer is None:
        return None
    path = profile_file(profile, profile.supplier_signer)
    try:
        return Trusted(keys.load_public_key(path), str(path))
    except keys.KeyFileError as exc:
        raise ProfileError(f"{profile.source}: key '{_key_name(profile, 'supplier_signer')}': {exc}") from None


def public_key_name(ieee: t.EUI64) -> str:
    """File name of an originator's public key beside an alert log."""
    return f"{eui64_name(ieee).lower()}-ds.pub.pem"


class Counters:
    """The counters of one originator: its own originator counter, strictly increasing over the messages it
    originates, and the highest counter it accepted from each remote originator (GBCS replay protection)."""

    def __init__(self, ieee: t.EUI64, directory: Path | None) -> None:
        self.ieee = ieee
        self.path = None if directory is None else Path(directory) / f"{eui64_name(ieee)}.gbcs.json"
        self.last = 0
        self.accepted: dict[str, int] = {}
        if self.path is not None and self.path.exists():
            self._load(self.path)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            ok = (
                isinstance(data, dict)
                and data.get("format") == COUNTER_FORMAT
                and data.get("ieee") == str(self.ieee)
                and isinstance(data.get("originator_counter"), int)
                and isinstance(data.get("accepted"), dict)
                and all(isinstance(v, int) for v in data["accepted"].values())
            )
        except (OSError, UnicodeDecodeError, ValueError):
            ok = False
        if not ok:
            raise AlertError(f"{path}: not a GBCS counter file of device {self.ieee} (format {COUNTER_FORMAT})")
        self.last = data["originator_counter"]
        self.accepted = dict(data["accepted"])

    def next(self, at_least: int = 0) -> int:
        self.last = max(self.last + 1, at_least)
        self._save()
        return self.last

    def last_accepted(self, originator: t.EUI64) -> int | None:
        return self.accepted.get(str(originator))

    def accept(self, originator: t.EUI64, counter: int) -> None:
        self.accepted[str(originator)] = counter
        self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "format": COUNTER_FORMAT,
            "ieee": str(self.ieee),
            "originator_counter": self.last,
            "accepted": self.accepted,
        }
        write_atomic(self.path, json.dumps(data, indent=2) + "\n")


class Originator:
    """One sender of signed GBCS messages: its id, its key and its counters.

    The key is only made (or read from the state directory) when first needed, so building an originator for a
    command that then turns out to be bad input writes nothing."""

    def __init__(self, ieee: t.EUI64, key: keys.PrivateKey | None, directory: Path | None) -> None:
        self.ieee = ieee
        self._key = key
        self._directory = directory
        self.counters = Counters(ieee, directory)

    @property
    def key(self) -> keys.PrivateKey:
        if self._key is None:
            self._key = self._kept_key()
        return self._key

    def _kept_key(self) -> keys.PrivateKey:
        if self._directory is None:
            return keys.generate_private_key()
        path = self._directory / f"{eui64_name(self.ieee)}.gbcs-key.pem"
        if path.exists():
            return keys.load_private_key(path)
        key = keys.generate_private_key()
        self._directory.mkdir(parents=True, exist_ok=True)
        write_atomic(path, keys.private_key_pem(key), mode=0o600)
        return key

    def sign(
        self, message: GbcsMessage, recipient: t.EUI64, *, counter: int | None = None, date_time: datetime | None = None
    ) -> bytes:
        """A signed frame; alerts take the next own counter, a response the counter of the command it answers."""
        return sign_message(
            message,
            originator_counter=self.counters.next() if counter is None else counter,
            originator_id=self.ieee,
            recipient_id=recipient,
            key=self.key,
            date_time=date_time,
        )


# -- the alert log ------------------------------------------------------------------------------------------


class AlertLog:
    """The GBCS messages of a run, in the order they were sent or received. `origin` is the UTC at protocol time
    zero, so every line's protocol time counts from the start of the run."""

    def __init__(self, origin: datetime) -> None:
        self.origin = origin
        self.records: list[dict[str, Any]] = []
        self.signers: dict[t.EUI64, keys.PublicKey] = {}

    def know(self, originator: Originator) -> None:
        """Write this originator's public key beside the log."""
        self.signers[originator.ieee] = originator.key.public_key()

    def sent(self, originator: Originator, data: bytes, cause: dict[str, Any], when: datetime) -> dict[str, Any]:
        """A message an emulated node signed and sent."""
        self.know(originator)
        return self._add(data, cause, when, {"status": "signed", "signer": public_key_name(originator.ieee)})

    def received(self, data: bytes, cause: dict[str, Any], when: datetime, signature: dict[str, Any]) -> dict[str, Any]:
        """A command an emulated device accepted, with how its signature was checked."""
        return self._add(data, cause, when, signature)

    def _add(self, data: bytes, cause: dict[str, Any], when: datetime, signature: dict[str, Any]) -> dict[str, Any]:
        frame = parse(data, "alert log entry")
        message = decode_message(frame, "alert log entry")
        record = {
            "seq": len(self.records) + 1,
            "protocol_time": round((when - self.origin).total_seconds(), 3),
            "utc": iso(when),
            "event": cause,
            "message": message.TITLE,
            "message_code": f"0x{frame.message_code:04X}",
            "cra_flag": frame.cra_flag.name.lower(),
            "originator_id": str(frame.originator_id),
            "originator_counter": frame.originator_counter,
            "recipient_id": str(frame.recipient_id),
            "date_time": None if frame.date_time is None else iso(frame.date_time),
            "content": {"type": type(message).__name__, **json_value(message)},
            "signature": signature,
            "hex": data.hex(),
        }
        self.records.append(record)
        return record

    def write(self, path: str | Path, *, append: bool = False) -> list[Path]:
        """Write the log (after the lines already there, with `append`) and, first, the signers' public keys;
        returns the key files."""
        path = Path(path)
        check_log_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        written = []
        for ieee, public_key in self.signers.items():
            key_path = path.parent / public_key_name(ieee)
            write_atomic(key_path, keys.public_key_pem(public_key))
            written.append(key_path)
        text = "".join(json.dumps(record) + "\n" for record in self.records)
        if append and path.exists():
            before = path.read_text(encoding="utf-8")
            text = before + ("\n" if before and not before.endswith("\n") else "") + text
        write_atomic(path, text)
        return written

    def summary(self) -> str:
        """One line: how many messages of each kind."""
        counts = Counter(record["message"] for record in self.records)
        kinds = ", ".join(f"{count} {title}" for title, count in counts.items())
        return f"{len(self.records)} GBCS messages" + (f" ({kinds})" if kinds else "")


def check_log_path(path: Path) -> None:
    """Refuse, before any work is done, a log path that cannot be written as a file."""
    if path.is_dir():
        raise AlertError(f"{path}: is a directory (expected the alert log file to write)")
    if path.exists() and not path.is_file():
        raise AlertError(f"{path}: not a regular file (expected the alert log file to write)")


# -- an HCALCS and its Activate Firmware commands (CS06) ----------------------------------------------------


@dataclass(frozen=True)
class ActivateCommand:
    """A CS06 command that passed the device's checks and has not been acted on yet."""

    data: bytes
    frame: GbcsFrame
    message: ActivateFirmwareCommand
    source: str
    signature: dict[str, Any]


@dataclass(frozen=True)
class Scheduled:
    """A future-dated command the device accepted: what its 0x00CA alert repeats, and where it goes."""

    supplier: t.EUI64
    originator_counter: int
    execution: datetime
    image_hash: bytes


@dataclass
class Exchange:
    """A CS06 command, the device's response, and for a future-dated command the 0x00CA alert to come."""

    command: dict[str, Any]
    response: dict[str, Any]
    reply: device_events.ActivationReply
    scheduled: Scheduled | None = None
    alert: asyncio.Future[dict[str, Any]] | None = None


class HcalcsActivation:
    """The GBCS face of one emulated HCALCS: checks CS06 commands, has the device act on them, signs its answers.

    Feed it the device's events (`on_event`) so that a future-dated activation turns into its 0x00CA alert."""

    def __init__(self, device: EmulatedDevice, originator: Originator, log: AlertLog, trusted: Trusted | None) -> None:
        profile = device.profile
        if profile.kind != "hcalcs":
            raise AlertError(
                f"{profile.source}: device {device.ieee} is a {profile.kind}; Activate Firmware (CS06) is for an "
                "HCALCS (a PPMID activates with its download)"
            )
        self.device = device
        self.originator = originator
        self.log = log
        self.trusted = trusted
        self._waiting: list[tuple[Scheduled, asyncio.Future[dict[str, Any]]]] = []

    def check(self, data: bytes, source: str) -> ActivateCommand:
        """Everything the device checks before acting (GBCS §11.5); a refusal is an `AlertError` (or a
        `GbcsError` for a frame that does not parse) and changes nothing."""
        frame = parse(data, source)
        message = decode_message(frame, source)
        if not isinstance(message, ActivateFirmwareCommand):
            raise AlertError(
                f"{source}: a {message.TITLE} (message code 0x{frame.message_code:04X}), expected a CS06 "
                "ActivateFirmware command (0x0012, CRA flag command)"
            )
        if frame.recipient_id != self.device.ieee:
            raise AlertError(f"{source}: addressed to {frame.recipient_id}, not to this HCALCS {self.device.ieee}")
        signature = self._signature(frame, source)
        last = self.originator.counters.last_accepted(frame.originator_id)
        if last is not None and frame.originator_counter <= last:
            raise AlertError(
                f"{source}: originator counter {frame.originator_counter} is not above {last}, the last accepted "
                f"from {frame.originator_id} (a replayed command is refused)"
            )
        return ActivateCommand(data, frame, message, source, signature)

    def _signature(self, frame: GbcsFrame, source: str) -> dict[str, Any]:
        mac = {} if frame.mac is None else {"mac": MAC_NOT_CHECKED}
        trusted = self.trusted
        if trusted is None:
            profile = self.device.profile
            if profile.require_supplier_signature:
                raise AlertError(
                    f"{source}: {profile.source} names no supplier_signer, so the signature cannot be checked; "
                    "command refused (require_supplier_signature = false takes unchecked commands)"
                )
            reason = f"{profile.source} names no supplier_signer"
            return {"status": "not checked", "reason": reason, **mac}
        if frame.signature is None:
            raise AlertError(f"{source}: unsigned, expected a signature by {trusted.source} (supplier_signer)")
        if not verify(frame, trusted.key):
            raise AlertError(
                f"{source}: signature does not verify with {trusted.source} (supplier_signer); command refused"
            )
        return {"status": "verified", "signer": trusted.source, **mac}

    async def execute(self, command: ActivateCommand) -> Exchange:
        """Act on a checked command and answer it: the executionOutcome, or commandAccepted when future-dated."""
        frame, message = command.frame, command.message
        self.originator.counters.accept(frame.originator_id, frame.originator_counter)
        clock = self.device.clock
        cause = {"type": "ActivateFirmwareCommand", "source": command.source}
        received = self.log.received(command.data, cause, clock.utc(), command.signature)
        reply = await self.device.activate_firmware(message.manufacturer_image_hash, message.execution_datetime)
        outcome = None
        if not reply.accepted:
            assert reply.response_code is not None
            outcome = ExecutionOutcome(reply.response_code, version_octets(reply.firmware_version))
        now = clock.utc()
        data = self.originator.sign(
            ActivateFirmwareResponse(outcome),
            frame.originator_id,
            counter=frame.originator_counter,
            date_time=gbcs_time(now),
        )
        response = self.log.sent(self.originator, data, event_fields(reply), now)
        exchange = Exchange(received, response, reply)
        if reply.accepted and message.execution_datetime is not None:
            exchange.scheduled = Scheduled(
                frame.originator_id,
                message.originator_counter,
                message.execution_datetime,
                message.manufacturer_image_hash,
            )
            exchange.alert = self._expect(exchange.scheduled)
        return exchange

    async def resume(self, scheduled: Scheduled) -> asyncio.Future[dict[str, Any]]:
        """Arm a future-dated command again on a restarted device (scheduled commands are not persisted)."""
        future = self._expect(scheduled)
        reply = await self.device.activate_firmware(scheduled.image_hash, scheduled.execution)
        if not reply.accepted:  # its time had already come: the outcome is in the reply
            assert reply.response_code is not None
            self._waiting.remove((scheduled, future))
            future.set_result(self._alert(scheduled, reply.response_code, reply.firmware_version, reply))
        return future

    def on_event(self, event: object) -> None:
        if not isinstance(event, device_events.ActivationOutcome) or not event.future_dated:
            return
        if event.ieee != self.device.ieee or not self._waiting:
            return
        scheduled, future = self._waiting.pop(0)
        record = self._alert(scheduled, event.response_code, event.version, event)
        if not future.done():
            future.set_result(record)

    def _expect(self, scheduled: Scheduled) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append((scheduled, future))
        self._waiting.sort(key=lambda waiting: waiting[0].execution)
        return future

    def _alert(self, scheduled: Scheduled, code: ActivationResponse, version: int, cause: object) -> dict[str, Any]:
        ok = code == ActivationResponse.SUCCESS
        message = ActivateFirmwareAlert(
            alert_code=AlertCode.FUTURE_DATED_COMMAND_SUCCESS if ok else AlertCode.FUTURE_DATED_COMMAND_FAILURE,
            execution_datetime=gbcs_time(scheduled.execution),
            originator_counter=scheduled.originator_counter,
            outcome=ExecutionOutcome(code, version_octets(version)),
        )
        data = self.originator.sign(message, scheduled.supplier)
        return self.log.sent(self.originator, data, event_fields(cause), self.device.clock.utc())


# -- a whole HAN --------------------------------------------------------------------------------------------


class GbcsHan(Han):
    """A `Han` whose CHF and devices report as GB does, in signed GBCS messages kept in `alert_log`; its HCALCS
    activations travel as CS06 commands signed by an emulated supplier (`supplier_key`; by default the test-only
    supplier key the bundled HCALCS trusts, profiles/keys/test-supplier.key.pem)."""

    def __init__(
        self,
        chf: ChfProfile,
        devices: list[DeviceProfile],
        images: Iterable[HeldImage] = (),
        options: HanOptions | None = None,
        *,
        supplier_key: keys.PrivateKey | None = None,
        supplier_id: t.EUI64 = DEFAULT_SUPPLIER_ID,
    ) -> None:
        super().__init__(chf, devices, images, options)
        state_dir = self.options.state_dir
        # Profile keys are read now, so a bad key file is reported before the run starts.
        self._keys = {profile.ieee: configured_key(profile) for profile in devices}
        self._trusted = {profile.ieee: trusted_supplier(profile) for profile in devices if profile.kind == "hcalcs"}
        self.alert_log = AlertLog(self.options.start_utc)
        self.chf_originator = Originator(chf.ieee, configured_key(chf), state_dir)
        if supplier_key is None and supplier_id == DEFAULT_SUPPLIER_ID:
            # The emulated supplier signs with the test-only key the bundled HCALCS trusts (profiles/keys/).
            supplier_key = keys.load_private_key(bundled_key(TEST_SUPPLIER_KEY))
        self.supplier = Originator(supplier_id, supplier_key, state_dir)
        self._originators: dict[t.EUI64, Originator] = {}
        self._activations: dict[t.EUI64, HcalcsActivation] = {}
        self.add_listener(self._on_gbcs_event)

    def originator(self, ieee: t.EUI64) -> Originator:
        """The signing identity of one emulated device."""
        if ieee not in self._originators:
            self._originators[ieee] = Originator(ieee, self._keys[ieee], self.options.state_dir)
        return self._originators[ieee]

    def activation(self, ieee: t.EUI64) -> HcalcsActivation:
        """The CS06 side of an emulated HCALCS of this run."""
        if ieee not in self.devices:
            raise AlertError(f"{ieee}: no such device in this run")
        if ieee not in self._activations:
            self._activations[ieee] = HcalcsActivation(
                self.devices[ieee], self.originator(ieee), self.alert_log, self._trusted.get(ieee)
            )
        return self._activations[ieee]

    async def activate(
        self, ieee: t.EUI64, image_hash: bytes | None = None, at: datetime | None = None
    ) -> device_events.ActivationReply:
        """Activate Firmware as GB sends it: a CS06 command from the supplier, checked by the HCALCS."""
        handler = self.activation(ieee)
        if image_hash is None:
            image_hash = self.hash_for(self.devices[ieee])
        last = handler.originator.counters.last_accepted(self.supplier.ieee) or 0
        counter = self.supplier.counters.next(at_least=last + 1)
        command = ActivateFirmwareCommand(image_hash, counter, None if at is None else gbcs_time_not_before(at))
        self.alert_log.know(self.supplier)
        data = self.supplier.sign(command, ieee, counter=counter)
        return (await self.activate_gbcs(ieee, data, f"Activate Firmware from supplier {self.supplier.ieee}")).reply

    async def activate_gbcs(self, ieee: t.EUI64, data: bytes, source: str = "GBCS command") -> Exchange:
        """Give an HCALCS of this run a CS06 command (the bytes of a signed frame). A refused command raises
        `AlertError`; an activation the run was waiting for then ends the device's run as failed."""
        handler = self.activation(ieee)
        try:
            command = handler.check(data, source)
        except InputError as exc:
            summary = self.summaries.get(ieee)
            if summary is not None and summary.result == "pending":
                self._finish(summary, "failed", f"Activate Firmware refused: {exc}")
            raise
        return await handler.execute(command)

    def _utc_at(self, at: float) -> datetime:
        return self.options.start_utc + timedelta(seconds=at)

    def _on_gbcs_event(self, event: object) -> None:
        if isinstance(event, server_events.TransferOutcome) and event.ieee is not None:
            when = self._utc_at(event.at)
            alert = FirmwareTransferAlert(
                alert_code=event.alert_code,
                execution_datetime=gbcs_time(when),
                entity_id=event.ieee,
                firmware_version=version_octets(event.file_version),
                response_code=event.response,
            )
            data = self.chf_originator.sign(alert, self.chf_profile.alert_recipient)
            self.alert_log.sent(self.chf_originator, data, event_fields(event), when)
        elif isinstance(event, device_events.Activated) and event.alert_code == AlertCode.FIRMWARE_VERSION:
            when = self._utc_at(event.at)
            originator = self.originator(event.ieee)
            cs09 = PpmidFirmwareActivationAlert(
                execution_datetime=gbcs_time(when),
                firmware_version=version_octets(event.new_version),
                activate_image=event.activate_image,
            )
            data = originator.sign(cs09, self.chf_profile.alert_recipient)
            self.alert_log.sent(originator, data, event_fields(event), when)
        elif isinstance(event, device_events.ActivationOutcome) and event.ieee in self._activations:
            self._activations[event.ieee].on_event(event)
