"""`ota-emu activate`: give an emulated HCALCS, kept in a state directory, an Activate Firmware command (CS06).

A lab distributes an image with `ota-emu run --state-dir DIR` (the HCALCS ends holding it, waiting), then
activates it here as a supplier would: with a signed GBCS CS06 command (an RTDS vector, or one of its own), or
with just the Manufacturer Image Hash. No CHF is needed: the device is loaded from its state on a fresh virtual
air and answers as GB says — the executionOutcome, or commandAccepted and, at the execution time, the 0x00CA
alert. Between accepting a future-dated command and executing it the device has nothing to do, so it is stopped
and started again just before the execution time instead of being simulated through the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import zigpy.types as t

from emulator import clock, keys
from emulator.cli.params import Eui64Param, ProfileParam, example
from emulator.clock import Clock
from emulator.device.device import EmulatedDevice
from emulator.device.state import StateStore
from emulator.errors import InputError
from emulator.files import check_output_file
from emulator.gb.cs06 import TrustedSupplier
from emulator.gb.frame import GbcsFrame, bytes_from_hex, sign_message
from emulator.gb.messages import ActivateFirmwareCommand, GbcsError
from emulator.gb.values import gbcs_time, gbcs_time_not_before
from emulator.han.alert_log import AlertLog, check_log_path
from emulator.han.gbcs import Exchange, HcalcsActivation, Scheduled
from emulator.han.originators import DEFAULT_SUPPLIER_ID, Originator, configured_key, read_counters, trusted_supplier
from emulator.profiles import DeviceProfile, load_device
from emulator.radio.air import Air

GENERAL_FRAME_TAGS = (0xDD, 0xDF)
HASH_HEX_DIGITS = 64
# The device is restarted this long before a future-dated command's execution time.
RESTART_LEAD = timedelta(seconds=1)
# Protocol seconds to wait for the 0x00CA alert after the restart; the activation is due after RESTART_LEAD.
ALERT_WAIT = 3600.0


@dataclass
class Result:
    """What the device answered, and where it stands once the command has run its course."""

    exchange: Exchange
    alert: dict[str, Any] | None
    running_version: int
    image_held: bool


@click.command(
    "activate",
    epilog=example(
        "ota-emu activate --device hcalcs --state-dir lab/ --hash $(ota-emu image hash hcalcs.ota)",
        "ota-emu activate --device hcalcs --state-dir lab/ --gbcs CS06.HEX --alert-log alerts.jsonl --json",
    ),
)
@click.option(
    "--device", "device_path", required=True, type=ProfileParam(), help="The HCALCS's device profile (file or name)."
)
@click.option(
    "--state-dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Where `ota-emu run --state-dir` keeps the device; the result is kept there too.",
)
@click.option("--gbcs", "gbcs", metavar="HEX_OR_FILE", help="A CS06 command: hex, or a file of hex or raw bytes.")
@click.option("--hash", "image_hash", metavar="HEX", help="Or just the Manufacturer Image Hash (64 hex digits).")
@click.option("--at", "at", metavar="ISO8601|+SECONDS", help="With --hash: future-date the activation.")
@click.option(
    "--supplier-key",
    type=click.Path(path_type=Path, dir_okay=False),
    help="With --hash: sign the command with this PEM P-256 private key (else it goes unsigned).",
)
@click.option(
    "--supplier-id",
    type=Eui64Param(),
    default=str(DEFAULT_SUPPLIER_ID),
    show_default=True,
    help="With --hash: the command's originator.",
)
@click.option("--now", "now_text", metavar="ISO8601", help="The device's UTC when the command arrives (default: now).")
@click.option(
    "--alert-log",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Append the command, response and alert to this alert log; the HCALCS's public key goes beside it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def command(
    device_path: Path,
    state_dir: Path,
    gbcs: str | None,
    image_hash: str | None,
    at: str | None,
    supplier_key: Path | None,
    supplier_id: t.EUI64,
    now_text: str | None,
    alert_log: Path | None,
    as_json: bool,
) -> int:
    """Activate the image an emulated HCALCS holds with an Activate Firmware command (GBCS CS06) and print the
    device's signed response (decoded and hex); a future-dated command is accepted, then executed on virtual
    time, and its 0x00CA alert (0x8F66 success / 0x8F67 failure) printed too. The new running version is kept
    in the state directory.

    The HCALCS checks the command as GB asks: addressed to its EUI-64, originator counter above the last one it
    accepted from that originator, and signed by the supplier its profile names in `supplier_signer` — without
    one it says that it did not check the signature.

    Exit status: 0 when the image was activated, 1 when the device answered noImageHeld, hashMismatch or
    activationFailure, 2 when the input was bad or the device refused the command.
    """
    if (gbcs is None) == (image_hash is None):
        raise click.UsageError("give either --gbcs HEX_OR_FILE or --hash HEX")
    if gbcs is not None and (at is not None or supplier_key is not None):
        raise click.UsageError("--at and --supplier-key go with --hash; a --gbcs command carries its own")
    profile = _hcalcs_with_state(device_path, state_dir)
    if alert_log is not None:
        _check_alert_log(alert_log, [device_path, supplier_key, *state_dir.glob("*")], gbcs)
    now = _parse_now(now_text)
    trusted = trusted_supplier(profile)
    key = configured_key(profile)
    if gbcs is not None:
        data, source = _read_command(gbcs)
    else:
        assert image_hash is not None
        data, source = _hash_command(profile, state_dir, image_hash, at, now, supplier_id, supplier_key)
    log = AlertLog(now)
    result = _run(profile, state_dir, key, trusted, log, data, source, now)
    written = log.write(alert_log, append=True) if alert_log is not None else []
    _report(result, profile, as_json, written)
    final = result.alert["content"]["outcome"] if result.alert else result.exchange.response["content"]["outcome"]
    return 0 if final["response_code"]["value"] == 0 else 1


# -- input ----------------------------------------------------------------------------------------------------


def _hcalcs_with_state(device_path: Path, state_dir: Path) -> DeviceProfile:
    """The HCALCS profile, refused unless it is one and `ota-emu run --state-dir` left its state there."""
    profile = load_device(device_path)
    if profile.kind != "hcalcs":
        raise InputError(
            f"{device_path}: a {profile.kind} profile, expected an HCALCS (a PPMID activates with its download, "
            "not by Activate Firmware)"
        )
    store = StateStore(state_dir, profile.ieee)
    if not store.json_path.is_file():
        raise InputError(
            f"{state_dir}: no persisted state for HCALCS {profile.ieee} (expected {store.json_path.name}, "
            f"written by ota-emu run --state-dir {state_dir})"
        )
    return profile


def _check_alert_log(alert_log: Path, inputs: list[Path | None], gbcs: str | None) -> None:
    """Refuse an alert log that cannot be appended to, or that is one of the inputs (a --gbcs file included)."""
    check_log_path(alert_log)
    if gbcs is not None:
        with contextlib.suppress(OSError):  # hex too long to be a file name
            if Path(gbcs).is_file():
                inputs.append(Path(gbcs))
    check_output_file(alert_log, "the alert log to append to", inputs=inputs, create_parents=True)


def _parse_now(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC).replace(microsecond=0)
    return _parse_utc(text, "--now")


def _parse_utc(text: str, option: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{option}: {text!r} is not an ISO-8601 date-time (e.g. 2030-01-15T09:00:00Z)") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _read_command(argument: str) -> tuple[bytes, str]:
    """Hex on the command line, or a file of hex (an RTDS .HEX file) or of raw frame bytes."""
    path = Path(argument)
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise GbcsError(f"{path}: is a directory (expected hex or a file holding a CS06 command)") from None
    except OSError as exc:  # no such file, or hex too long to be a file name
        if "/" in argument or "\\" in argument or path.suffix:
            reason = "no such file" if isinstance(exc, FileNotFoundError) else exc.strerror or "cannot be read"
            raise GbcsError(f"{path}: {reason} (expected hex or a file holding a CS06 command)") from None
        return bytes_from_hex(argument, "--gbcs"), "--gbcs"
    if raw[:1] and raw[0] in GENERAL_FRAME_TAGS:
        return raw, str(path)
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise GbcsError(
            f"{path}: neither hex text nor a GBCS frame (first byte 0x{raw[0]:02X}, expected 0xDD or 0xDF)"
        ) from None
    return bytes_from_hex(text, str(path)), str(path)


def _hash_command(
    profile: DeviceProfile,
    state_dir: Path,
    image_hash: str,
    at: str | None,
    now: datetime,
    supplier_id: t.EUI64,
    supplier_key: Path | None,
) -> tuple[bytes, str]:
    """The CS06 command a supplier would send for --hash: counter one above the last the device accepted from
    that supplier, signed with --supplier-key or unsigned."""
    digest = bytes_from_hex(image_hash, "--hash")
    if len(digest) * 2 != HASH_HEX_DIGITS:
        raise InputError(f"--hash: {len(digest) * 2} hex digits, expected {HASH_HEX_DIGITS} (a 32-byte SHA-256)")
    execution = None if at is None else gbcs_time_not_before(_parse_at(at, now))
    counter = (read_counters(profile.ieee, state_dir).last_accepted(supplier_id) or 0) + 1
    command = ActivateFirmwareCommand(digest, counter, execution)
    if supplier_key is not None:
        key = keys.load_private_key(supplier_key)
        data = sign_message(
            command, originator_counter=counter, originator_id=supplier_id, recipient_id=profile.ieee, key=key
        )
        return data, f"--hash command signed with {supplier_key}"
    frame = GbcsFrame(
        cra_flag=command.CRA_FLAG,
        originator_counter=counter,
        originator_id=supplier_id,
        recipient_id=profile.ieee,
        message_code=command.MESSAGE_CODE,
        content=command.encode(),
    )
    return frame.encode(), "--hash command"


def _parse_at(text: str, now: datetime) -> datetime:
    if text.startswith("+"):
        try:
            seconds = float(text[1:])
        except ValueError:
            seconds = -1.0
        if seconds < 0:
            raise InputError(f"--at: {text!r} is not +SECONDS (expected e.g. +3600) or an ISO-8601 date-time")
        return now + timedelta(seconds=seconds)
    return _parse_utc(text, "--at")


# -- the device ---------------------------------------------------------------------------------------------


def _run(
    profile: DeviceProfile,
    state_dir: Path,
    key: keys.PrivateKey | None,
    trusted: TrustedSupplier | None,
    log: AlertLog,
    data: bytes,
    source: str,
    now: datetime,
) -> Result:
    def attach(start: datetime) -> tuple[EmulatedDevice, HcalcsActivation]:
        device = EmulatedDevice(profile, Air(), Clock(start), state_dir=state_dir)
        handler = HcalcsActivation(device, Originator(profile.ieee, key, state_dir), log, trusted)
        device.add_listener(handler.on_event)
        return device, handler

    async def accept() -> tuple[Exchange, int, bool]:
        device, handler = attach(now)
        command = handler.check(data, source)  # before the device starts, so that a refusal changes nothing
        async with _started(device):
            exchange = await handler.execute(command)
        return exchange, device.running_version, device.downloaded_image is not None

    async def execute(scheduled: Scheduled, start: datetime) -> tuple[dict[str, Any], int, bool]:
        device, handler = attach(start)
        async with _started(device):
            future = await handler.resume(scheduled)
            try:
                alert = await asyncio.wait_for(future, ALERT_WAIT)
            except TimeoutError:
                raise InputError(f"{source}: the device did not execute the command at {scheduled.execution}") from None
        return alert, device.running_version, device.downloaded_image is not None

    exchange, version, held = clock.run(accept, virtual=True)
    alert = None
    scheduled = exchange.scheduled
    if scheduled is not None:
        restart = max(now, gbcs_time(scheduled.execution - RESTART_LEAD))
        alert, version, held = clock.run(lambda: execute(scheduled, restart), virtual=True)
    return Result(exchange, alert, version, held)


@contextlib.asynccontextmanager
async def _started(device: EmulatedDevice) -> AsyncIterator[None]:
    """The device running; stopping it saves its state."""
    await device.start()
    try:
        yield
    finally:
        await device.stop()


# -- output -------------------------------------------------------------------------------------------------


def _report(result: Result, profile: DeviceProfile, as_json: bool, written: list[Path]) -> None:
    device = {
        "ieee": str(profile.ieee),
        "running_version": f"0x{result.running_version:08X}",
        "image_held": result.image_held,
    }
    records = {"command": result.exchange.command, "response": result.exchange.response, "alert": result.alert}
    if as_json:
        click.echo(json.dumps({**records, "device": device, "public_keys": [str(p) for p in written]}, indent=2))
        return
    keys_by_name = {p.name: p for p in written}
    for label, record in records.items():
        if record is not None:
            for line in _record_lines(label, record, keys_by_name):
                click.echo(line)
    held = "an image is still held" if result.image_held else "no image held"
    click.echo(f"device {profile.ieee}: running 0x{result.running_version:08X}, {held}")


def _record_lines(label: str, record: dict[str, Any], key_files: dict[str, Path]) -> list[str]:
    date_time = f", date-time {record['date_time']}" if record["date_time"] else ""
    lines = [
        f"{label}: {record['message']} ({record['message_code']}) from {record['originator_id']} to "
        f"{record['recipient_id']}, originator counter {record['originator_counter']}{date_time}"
    ]
    content = {k: v for k, v in record["content"].items() if k != "type"}
    if record["content"]["type"] == "ActivateFirmwareResponse" and content["outcome"] is None:
        lines.append("  commandAccepted (the outcome follows in a 0x00CA alert at the execution time)")
    else:
        lines.extend(_field_lines(content, "  "))
    signature = record["signature"]
    if signature["status"] == "signed":
        signer = key_files.get(signature["signer"])
        lines.append("  signature: signed by the originator" + (f" (public key {signer})" if signer else ""))
    elif signature["status"] == "verified":
        lines.append(f"  signature: verified with {signature['signer']}")
    else:
        lines.append(f"  signature: NOT CHECKED: {signature['reason']}")
    if "mac" in signature:
        lines.append(f"  mac: {signature['mac']}")
    lines.append(f"  hex: {record['hex']}")
    return lines


def _field_lines(fields: dict[str, Any], indent: str) -> list[str]:
    lines = []
    for name, value in fields.items():
        if isinstance(value, dict) and "name" in value and "value" in value:
            lines.append(f"{indent}{name}: {value.get('hex', value['value'])} ({value['name']})")
        elif isinstance(value, dict):
            lines.append(f"{indent}{name}:")
            lines.extend(_field_lines(value, indent + "  "))
        else:
            lines.append(f"{indent}{name}: {'-' if value is None else value}")
    return lines
