"""`ota-emu gbcs decode --signer` as a shell sees it: the process exit status (like `image verify`) is 0 only
when the signature verifies and 1 when it does not (the in-process checks are in test_cli_gbcs.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RTDS = Path(__file__).parent / "data" / "gb-vectors" / "rtds"
CCS08 = RTDS / "CCS08_NA_NA_ALERT_GBCS.HEX"


def decode(hex_text: str, signer: Path) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "emulator", "gbcs", "decode", "--signer", str(signer), hex_text]
    return subprocess.run(command, capture_output=True, env=env, check=False).returncode


def test_the_exit_status_follows_the_signature() -> None:
    frame = CCS08.read_text().strip()
    at = 21  # the low digit of the originator counter in the general-signing header: still a readable frame
    tampered = frame[:at] + ("0" if frame[at] != "0" else "1") + frame[at + 1 :]
    assert decode(frame, RTDS / "00db1234567890a2-ds-cert.pem") == 0
    assert decode(tampered, RTDS / "00db1234567890a2-ds-cert.pem") == 1
