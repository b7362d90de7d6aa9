"""The two-terminal recipe under Smart Energy security: `ota-emu ncp --device profiles/ppmid.toml` in one terminal,
`ota-emu chf --pcap` on its URL in another. The PPMID joins with its install code, runs CBKE with the CHF's host
through bellows, and upgrades APS-encrypted; tshark, run as the CHF prints it, opens the capture with the keys it
printed. With `security = "none"` in both profiles the same recipe runs with the network key only.

Both ends run in the test's process here, each on its own event loop and talking over TCP: the dongle is what
`ota-emu ncp --device` serves (its `join_devices` and the lines it prints) on a thread, the CHF is `ota-emu chf`
through click's runner. What they decide is the same in a process of their own; test_cli_chf runs both ends as
processes (signals, the printed URL, the two-terminal recipe with Smart Energy security end to end)."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from test_cli_chf import PPMID, PROFILES, chf_here, dongle, ppmid_image, run  # noqa: F401 (a fixture)
from test_han_security import OTA_FIELDS, needs_tshark

from conftest import assert_one_line_error

BLOCK = 82 - 17 - 17  # what fits an APS-encrypted Image Block Response on the virtual NCP


def none_profiles(tmp_path: Path) -> tuple[Path, Path]:
    """Copies of the bundled CHF and PPMID profiles with `security = "none"` (the signer keys beside them)."""
    shutil.copytree(PROFILES / "keys", tmp_path / "keys", dirs_exist_ok=True)
    device, chf_profile = tmp_path / "ppmid.toml", tmp_path / "chf.toml"
    device.write_text((PROFILES / "ppmid.toml").read_text().replace("[device]\n", '[device]\nsecurity = "none"\n'))
    chf_profile.write_text((PROFILES / "chf.toml").read_text().replace("[chf]\n", '[chf]\nsecurity = "none"\n'))
    return chf_profile, device


@pytest.mark.realtime
@needs_tshark
def test_smart_energy_upgrade_and_tshark_opens_the_capture_with_the_printed_keys(
    ppmid_image: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    pcap = tmp_path / "chf.pcap"
    with dongle(PROFILES / "ppmid.toml") as (url, ncp):
        done = chf_here(url, "--image", ppmid_image, "--target", PPMID, "--json", "--pcap", pcap)
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    [target] = report["devices"]
    assert (target["outcome"], target["cbke_suite"]) == ("success", 2)
    coordinator = report["network"]["ieee"]
    assert f"Device {PPMID.lower()} established a link key with {coordinator} (CBKE suite 2)" in ncp.lines

    keys = pcap.with_name("chf.pcap.keys")
    rows = keys.read_text().splitlines()[1:]
    assert keys.stat().st_mode & 0o777 == 0o600
    assert [row.rsplit(",", 1)[1] for row in rows] == ['"network key"', f'"CBKE link key {PPMID.lower()}"']
    command = done.stderr.strip().splitlines()[-1]
    assert command.startswith("tshark -r ")
    opened = subprocess.run(
        [*shlex.split(command), *OTA_FIELDS], check=True, capture_output=True, text=True, timeout=60
    )  # fmt: skip
    offsets = [int(line) for line in opened.stdout.split()]
    assert offsets == list(range(0, ppmid_image.stat().st_size, BLOCK))  # every Image Block Response opened
    secured = subprocess.run(
        [*shlex.split(command), "-Y", "zbee_aps.security == 1 && zbee_aps.cluster == 0x0019"],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert len(secured.stdout.splitlines()) >= 2 * len(offsets)  # requests and responses, APS-encrypted
    network_only = [*shlex.split(command)[:5], *OTA_FIELDS]  # tshark -r PCAP -o <the network key row>
    assert subprocess.run(network_only, check=True, capture_output=True, text=True, timeout=60).stdout == ""


@pytest.mark.realtime
def test_network_key_only_when_both_profiles_say_none(ppmid_image: Path, tmp_path: Path) -> None:  # noqa: F811
    chf_profile, device = none_profiles(tmp_path)
    with dongle(device) as (url, ncp):
        done = chf_here(url, "--chf", chf_profile, "--image", ppmid_image, "--target", PPMID, "--json")
        lines = ncp.until("now runs")
    assert done.exit_code == 0, done.output
    [target] = json.loads(done.stdout)["devices"]
    assert (target["outcome"], target["cbke_suite"], target["offset"]) == ("success", None, ppmid_image.stat().st_size)
    assert not any("established a link key" in line for line in lines)
    assert f"Device {PPMID.lower()} now runs 0x00000002" in lines


@pytest.mark.realtime
def test_cbke_in_the_ncps_library(ppmid_image: Path) -> None:  # noqa: F811
    """`--cbke ncp`: the stick's CBKE library (the virtual NCP's, with its own test-CA certificate) does the math."""
    with dongle(PROFILES / "ppmid.toml") as (url, ncp):
        done = chf_here(url, "--cbke", "ncp", "--image", ppmid_image, "--target", PPMID, "--json")
    assert done.exit_code == 0, done.output
    [target] = json.loads(done.stdout)["devices"]
    assert (target["outcome"], target["cbke_suite"]) == ("success", 2)
    assert any("established a link key" in line for line in ncp.lines)


def test_cbke_ncp_needs_a_smart_energy_chf(ppmid_image: Path, tmp_path: Path) -> None:  # noqa: F811
    chf_profile, _ = none_profiles(tmp_path)
    args = ["chf", "--port", "tcp://127.0.0.1:1", "--chf", chf_profile, "--cbke", "ncp", "--image", ppmid_image,
            "--target", PPMID]  # fmt: skip
    assert_one_line_error(run(*args), "--cbke ncp", 'expected security = "se"')
