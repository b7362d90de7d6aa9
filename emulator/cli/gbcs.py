"""`ota-emu gbcs ...`: read GBCS firmware messages (CCS08, CS06, CS08, CS09) and check who signed them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from emulator import keys
from emulator.gb.codes import MESSAGE_TITLES, MessageCode
from emulator.gb.frame import GbcsFrame, bytes_from_hex, decode_message, parse, verify
from emulator.gb.jsonable import json_value
from emulator.gb.messages import GbcsError, GbcsMessage

VERIFIED = "verified"
NOT_VERIFIED = "does not verify"
NOT_CHECKED = "not checked"
UNSIGNED = "no signature"


@click.group("gbcs")
def command() -> None:
    """Decode GBCS firmware messages and verify their signatures."""


@command.command("decode")
@click.argument("message", metavar="HEX_OR_FILE")
@click.option(
    "--signer",
    metavar="CERT",
    help="PEM certificate or public key of the originator; the signature is checked against it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.pass_context
def decode(ctx: click.Context, message: str, signer: str | None, as_json: bool) -> None:
    """Decode a GBCS message given as hex (whitespace allowed), a file of hex such as an RTDS .HEX file, or
    '-' for standard input: header fields, the content field by field, and the signature.

    With --signer the exit status is 0 when the signature verifies and 1 when it does not or the frame is
    unsigned (CS08 responses carry only a MAC, which needs the ECDH key and is not checked).
    """
    public_key = keys.load_public_key(signer) if signer else None
    data, source = _read_input(message)
    frame = parse(data, source)
    payload = decode_message(frame, source)
    status = _signature_status(frame, public_key)
    report = _report(frame, payload, status, source, signer)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for line in _text_lines(report, ""):
            click.echo(line)
    if public_key is not None and status != VERIFIED:
        ctx.exit(1)


def _read_input(argument: str) -> tuple[bytes, str]:
    """Hex on the command line, '-' for standard input, or a file of hex. An argument that names no file and
    is not shaped like a path is taken as hex, so a typo in hex is reported as the first non-hex character."""
    if argument == "-":
        return bytes_from_hex(sys.stdin.read(), "standard input"), "standard input"
    path = Path(argument)
    try:
        text = path.read_text(encoding="ascii")
    except IsADirectoryError:
        raise GbcsError(f"{path}: is a directory (expected hex or a file of hex)") from None
    except UnicodeDecodeError:
        raise GbcsError(f"{path}: not a text file of hex digits") from None
    except OSError as exc:  # no such file, or hex too long to be a file name
        if "/" in argument or "\\" in argument or path.suffix:
            raise GbcsError(f"{path}: {exc.strerror or 'cannot be read'} (expected hex or a file of hex)") from None
        return bytes_from_hex(argument, "hex argument"), "hex argument"
    return bytes_from_hex(text, str(path)), str(path)


def _signature_status(frame: GbcsFrame, public_key: keys.PublicKey | None) -> str:
    if frame.signature is None:
        return UNSIGNED
    if public_key is None:
        return NOT_CHECKED
    return VERIFIED if verify(frame, public_key) else NOT_VERIFIED


def _report(frame: GbcsFrame, payload: GbcsMessage, status: str, source: str, signer: str | None) -> dict[str, Any]:
    code = frame.message_code
    return {
        "source": source,
        "wrapper": None
        if frame.mac is None
        else {
            "type": "general ciphering",
            "invocation_counter": frame.invocation_counter,
            "mac": frame.mac.hex(),
            "mac_status": NOT_CHECKED,
        },
        "cra_flag": json_value(frame.cra_flag),
        "originator_counter": frame.originator_counter,
        "originator_id": json_value(frame.originator_id),
        "recipient_id": json_value(frame.recipient_id),
        "date_time": json_value(frame.date_time),
        "message_code": {"value": int(code), "hex": f"0x{code:04X}", "name": MESSAGE_TITLES[MessageCode(code)]},
        "supplementary_remote_party_id": json_value(frame.supplementary_remote_party_id),
        "supplementary_remote_party_counter": frame.supplementary_remote_party_counter,
        "content": {"type": type(payload).__name__, **json_value(payload)},
        "content_hex": frame.content.hex(),
        "signature": {
            "status": status,
            "signer": signer,
            "value": None if frame.signature is None else frame.signature.hex(),
        },
    }


def _text_lines(report: dict[str, Any], indent: str) -> list[str]:
    lines = []
    for key, value in report.items():
        if isinstance(value, dict) and "name" in value and "value" in value:
            shown = value.get("hex", value["value"])
            lines.append(f"{indent}{key}: {shown} ({value['name']})")
        elif isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines.extend(_text_lines(value, indent + "  "))
        else:
            lines.append(f"{indent}{key}: {'-' if value is None else value}")
    return lines
