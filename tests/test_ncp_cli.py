"""`ota-emu ncp` as a user runs it: bad arguments and state files through the CLI, and a real run that
zigpy-cli's `radio ezsp ... info` reads the virtual network from, ended by SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conftest import assert_one_line_error
from emulator.cli import main
from emulator.ncp.state import NetworkState

RUN_TIMEOUT = 60
ZIGPY_CLI = "from zigpy_cli.__main__ import cli; cli()"  # the `zigpy` console script


def run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], prog_name="ota-emu")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--listen", "serial:///dev/ttyUSB0"], "expected tcp://HOST:PORT"),
        (["--listen", "tcp://127.0.0.1:70000"], "expected tcp://HOST:PORT"),
        (["--listen", "tcp://127.0.0.1"], "expected tcp://HOST:PORT"),
        (["--listen", "inprocess"], "expected tcp://HOST:PORT"),
        (["--listen", "virtual-ncp://1"], "expected tcp://HOST:PORT"),
        (["--listen", "tcp://127.0.0.1:0", "--pty"], "either --listen or --pty"),
        (["--ezsp-version", "9"], "'9' is not one of '8', '13', '14'"),
        (["--seed", "many"], "'many' is not a valid integer"),
    ],
)
def test_bad_arguments(args: list[str], fragment: str) -> None:
    assert_one_line_error(run("ncp", *args), fragment)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", 'expected a JSON object with "format": 1'),
        ('{"format": 1, "eui64": "0011"}', "eui64 must be 8 bytes of hex"),
        ('{"format": 1, "eui64": "0011223344556677", "formed": true, "channel": 3}', "channel of a formed network"),
        ('{"format": 1, "eui64": "0011223344556677", "colour": "red"}', "unexpected keyword argument 'colour'"),
    ],
)
def test_bad_state_file_is_refused_and_left_alone(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "ncp.json"
    path.write_text(content)
    assert_one_line_error(run("ncp", "--state-dir", tmp_path), f"state file {path}", fragment)
    assert path.read_text() == content


def test_the_old_state_file_option_still_works_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text("{not json")
    result = run("ncp", "--state", path)
    assert result.exit_code == 2
    warning, error = result.stderr.splitlines()
    assert warning.startswith("ota-emu: warning: --state FILE is deprecated, use --state-dir DIR")
    assert error.startswith(f"ota-emu: error: state file {path}: not JSON")


@pytest.mark.parametrize("where", ["absent/ncp.json", "plain/ncp.json"])
def test_old_state_file_in_a_missing_or_plain_folder(tmp_path: Path, where: str) -> None:
    (tmp_path / "plain").write_text("x")
    path = tmp_path / where
    result = run("ncp", "--state", path)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1].startswith(f"ota-emu: error: {path}: ")
    assert not (tmp_path / "absent").exists()


def test_state_dir_that_is_a_file_or_under_proc(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert_one_line_error(run("ncp", "--state-dir", plain), str(plain), "is a file")
    assert_one_line_error(run("ncp", "--state-dir", "/proc/ota-emu-ncp"), "/proc/ota-emu-ncp", "cannot write in /proc")


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_one_line_error(run("ncp", "--listen", f"tcp://127.0.0.1:{port}"), "cannot listen")


@pytest.mark.realtime
def test_zigpy_cli_reads_the_virtual_network_and_sigterm_saves_the_state(tmp_path: Path) -> None:
    path = tmp_path / "lab" / "ncp.json"
    path.parent.mkdir()
    state = NetworkState.new(seed=21)
    state.formed, state.channel, state.pan_id = True, 25, 0x4D2E
    state.extended_pan_id = "0a0b0c0d0e0f1011"
    state.network_key = "ffeeddccbbaa99887766554433221100"
    state.channel_mask = 1 << 25
    state.nwk_frame_counter = 1000
    state.save(path)
    ieee = ":".join(f"{b:02x}" for b in bytes.fromhex(state.eui64))

    ncp = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulator",
            "ncp",
            "--listen",
            "tcp://127.0.0.1:0",
            "--state-dir",
            str(path.parent),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = json.loads(ncp.stdout.readline())  # type: ignore[union-attr]
        assert (banner["event"], banner["ezsp_version"], banner["ieee"]) == ("listening", 13, ieee)
        assert banner["network"] == {"pan_id": "0x4D2E", "channel": 25, "extended_pan_id": "0a0b0c0d0e0f1011"}
        match = re.fullmatch(r"tcp://127\.0\.0\.1:(\d+)", banner["url"])
        assert match, banner
        assert int(match.group(1)) != 0
        info = subprocess.run(
            [sys.executable, "-c", ZIGPY_CLI, "radio", "ezsp", banner["url"], "info"],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        assert info.returncode == 0, info.stderr
        assert "PAN ID:                0x4D2E" in info.stdout
        assert "Channel:               25" in info.stdout
        assert f"Device IEEE:           {ieee}" in info.stdout
        assert "Extended PAN ID:       0a:0b:0c:0d:0e:0f:10:11" in info.stdout
        assert "Network key:           ff:ee:dd:cc:bb:aa:99:88:77:66:55:44:33:22:11:00" in info.stdout
    finally:
        ncp.send_signal(signal.SIGTERM)
        out, err = ncp.communicate(timeout=RUN_TIMEOUT)
    assert ncp.returncode == 0, err
    assert json.loads(out.splitlines()[-1]) == {"event": "stopped", "state_file": str(path)}
    assert "Traceback" not in err
    saved = json.loads(path.read_text())
    assert saved["formed"] is True and saved["pan_id"] == 0x4D2E
    assert saved["nwk_frame_counter"] >= 1000
