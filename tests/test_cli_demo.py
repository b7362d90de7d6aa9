"""`ota-emu demo` tells the GB story in numbered steps: the HCALCS holds its image until Activate Firmware."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from emulator.cli import main


def test_demo_steps_are_numbered_once_each_and_show_the_hcalcs_holding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # --out relative to the working folder, as in the command's example
    result = CliRunner().invoke(main, ["demo", "--out", "demo/"], prog_name="ota-emu")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "demo" / "demo-supplier.pub.pem").is_file()
    lines = result.stderr.splitlines()
    steps = [int(m.group(1)) for line in lines if (m := re.match(r"(\d+)\. ", line))]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 5, steps

    def at(pattern: str) -> int:
        [index] = [i for i, line in enumerate(lines) if re.search(pattern, line)]
        return index

    ppmid_now = at(r"PPMID +activated on the Upgrade End Response: now runs 0x00000002")
    held = at(r"HCALCS +told to wait .*UpgradeTime 0xFFFFFFFF.*holds 0x00000002, keeps running 0x00000001")
    activated = at(r"HCALCS +Activate Firmware \(CS06\) with the Manufacturer Image Hash: success, now runs 0x00000002")
    assert ppmid_now < held < activated
    assert not [line for line in lines if re.search(r"HCALCS .*activated on the Upgrade End Response", line)]
