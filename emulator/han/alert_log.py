"""The alert log of a run: every signed GBCS message the emulated nodes sent or accepted, one JSON line each.

A line holds the decoded frame and content, the hex frame, the event that produced it, its protocol time and how
its signature was dealt with. Beside the log go the public keys of the originators that signed its lines
(`<id>-ds.pub.pem`, the id in lower-case hex as in the DCC's key file names), so that `ota-emu gbcs decode
--signer` verifies any line.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import zigpy.types as t

from emulator import keys
from emulator.device.state import eui64_name
from emulator.errors import InputError
from emulator.files import write_atomic
from emulator.gb.cs06 import SignatureCheck, SignatureStatus
from emulator.gb.frame import decode_message, parse
from emulator.gb.jsonable import iso, json_value
from emulator.han.originators import Originator


class AlertLogError(InputError):
    """An alert log path that cannot be written as a file."""


def public_key_name(ieee: t.EUI64) -> str:
    """File name of an originator's public key beside an alert log."""
    return f"{eui64_name(ieee).lower()}-ds.pub.pem"


def event_fields(event: object) -> dict[str, Any]:
    """Which run event produced a message, with everything it carried."""
    return {"type": type(event).__name__, **json_value(event)}


def check_log_path(path: Path) -> None:
    """Refuse, before any work is done, a log path that cannot be written as a file."""
    if path.is_dir():
        raise AlertLogError(f"{path}: is a directory (expected the alert log file to write)")
    if path.exists() and not path.is_file():
        raise AlertLogError(f"{path}: not a regular file (expected the alert log file to write)")


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
        signed = SignatureCheck(SignatureStatus.SIGNED, signer=public_key_name(originator.ieee))
        return self._add(data, cause, when, signed)

    def received(self, data: bytes, cause: dict[str, Any], when: datetime, signature: SignatureCheck) -> dict[str, Any]:
        """A command an emulated device accepted, with how its signature was checked."""
        return self._add(data, cause, when, signature)

    def _add(self, data: bytes, cause: dict[str, Any], when: datetime, signature: SignatureCheck) -> dict[str, Any]:
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
            "signature": signature.as_json(),
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
