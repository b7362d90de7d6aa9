"""`ota-emu gbcs decode --signer` as a shell sees it: the process exit status (like `image verify`) is 0 only
when the signature verifies and 1 when it does not. The statuses are read in-process through the same
`ota-emu` group a process runs; one run of the installed `ota-emu` script shows the status reaching the shell
(the other in-process checks are in test_cli_gbcs.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from emulator.cli import main

ROOT = Path(__file__).resolve().parents[1]
RTDS = Path(__file__).parent / "data" / "gb-vectors" / "rtds"
CCS08 = RTDS / "CCS08_NA_NA_ALERT_GBCS.HEX"
SIGNER = RTDS / "00db1234567890a2-ds-cert.pem"


def tampered() -> str:
    frame = CCS08.read_text().strip()
    at = 21  # the low digit of the originator counter in the general-signing header: still a readable frame
    return frame[:at] + ("0" if frame[at] != "0" else "1") + frame[at + 1 :]


def decode(hex_text: str) -> int:
    return CliRunner().invoke(main, ["gbcs", "decode", "--signer", str(SIGNER), hex_text]).exit_code


def script() -> list[str]:
    """The installed console script beside this interpreter; `python -m emulator` where the package is not
    installed."""
    installed = Path(sys.executable).with_name("ota-emu")
    return [str(installed)] if installed.exists() else [sys.executable, "-m", "emulator"]


def test_the_exit_status_follows_the_signature() -> None:
    assert decode(CCS08.read_text().strip()) == 0
    assert decode(tampered()) == 1


def test_a_signature_that_does_not_verify_exits_1_from_the_installed_script() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [*script(), "gbcs", "decode", "--json", "--signer", str(SIGNER), tampered()]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=60)
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["signature"]["status"] == "does not verify"
