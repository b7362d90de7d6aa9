"""`ota-emu chf` as a lab runs it: bad input through the CLI, ports that are closed, missing, busy or silent,
and the two-terminal recipe — `ota-emu ncp --device profiles/ppmid.toml` in one process, `ota-emu chf` on its
tcp:// URL in another — upgrading the emulated PPMID over real sockets, bellows and the virtual NCP."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from conftest import TEST_IMAGE_KEY, assert_one_line_error
from emulator.chf import node as chf_node
from emulator.cli import main
from emulator.cli.ncp import Output, join_devices
from emulator.device.device import EmulatedDevice
from emulator.ncp.server import DEFAULT_TCP, VirtualNcp
from emulator.profiles import expand, load_device
from emulator.radio.air import Air

RUN_TIMEOUT = 30
LINE_TIMEOUT = 30.0
PPMID = "00:DB:12:34:56:78:90:A4"
SECOND_PPMID = "00:DB:12:34:56:78:90:A5"  # the next EUI-64, as `ota-emu ncp --count 2` gives it
ABSENT = "00:DB:12:34:56:78:90:FF"
PROFILES = Path(__file__).parent.parent / "profiles"


def run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], prog_name="ota-emu")


@pytest.fixture
def ppmid_image(tmp_path: Path) -> Path:
    """A 2 KiB GB Upgrade Image for the bundled PPMID profile (manufacturer, type and hardware range match)."""
    payload = tmp_path / "payload.bin"
    payload.write_bytes(bytes(range(256)) * 8)
    unsigned, out = tmp_path / "unsigned-ppmid.ota", tmp_path / "ppmid.ota"
    result = run(
        "image", "build", "--format", "gb", "--manufacturer", "0x121D", "--image-type", "0x0084",
        "--file-version", "2", "--hw-min", "0x1111", "--hw-max", "0x1211", "--payload", payload, "-o", unsigned,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # Signed with the test-only key the bundled PPMID trusts, as the README's example does.
    result = run("image", "sign", "--key", TEST_IMAGE_KEY, unsigned, "-o", out)
    assert result.exit_code == 0, result.output
    return out


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- bad input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--radio", "znp", "--port", "/dev/ttyACM0"], ["--radio", "'znp' is not 'ezsp'"]),
        ([], ["Missing option '--port'"]),
        (["--port", "tcp://127.0.0.1:1", "--target", "00:11"], ["--target", "16 hex digits", "'00:11'"]),
        (["--port", "tcp://127.0.0.1:1", "--flow-control", "rts"], ["--flow-control", "'rts'"]),
        (["--port", "tcp://127.0.0.1:1", "--permit", "300"], ["--permit", "300"]),
        (["--port", "tcp://127.0.0.1:1"], ["chf.toml: no image to serve", "expected --image FILE"]),
        (["--port", "tcp://127.0.0.1:1", "--image", "nope.ota", "--target", PPMID], ["nope.ota: no such file"]),
    ],
)
def test_bad_arguments(args: list[str], fragments: list[str]) -> None:
    assert_one_line_error(run("chf", *args), *fragments)


@pytest.mark.parametrize(
    "port", ["tcp://:notaport", "tcp://127.0.0.1:notaport", "tcp://127.0.0.1", "udp://host:1", "tcp://127.0.0.1:0", ""]
)
def test_a_port_url_that_cannot_work_is_refused_before_bellows(port: str, ppmid_image: Path) -> None:
    assert_one_line_error(run("chf", "--port", port, "--image", ppmid_image, "--target", PPMID), "--port", repr(port))


def test_the_old_option_names_still_work_with_one_warning_each(tmp_path: Path, ppmid_image: Path) -> None:
    profile = tmp_path / "chf.toml"
    profile.write_text("[chf]\nchannel = 40\n")
    result = run("chf", "--device", "tcp://127.0.0.1:1", "--profile", profile, "--image", ppmid_image,
                 "--target", PPMID)  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "ota-emu: warning: --device is deprecated, use --port (the old spelling goes in a future release)",
        "ota-emu: warning: --profile is deprecated, use --chf (the old spelling goes in a future release)",
        f"ota-emu: error: {profile}: key 'chf.channel': expected 11..26, got 40",
    ]


def test_an_image_needs_its_targets(ppmid_image: Path) -> None:
    assert_one_line_error(
        run("chf", "--port", "tcp://127.0.0.1:1", "--image", ppmid_image), "--image", "no --target EUI64"
    )


def test_a_profile_error_names_file_and_key(tmp_path: Path, ppmid_image: Path) -> None:
    profile = tmp_path / "chf.toml"
    profile.write_text("[chf]\nchannel = 40\n")
    result = run("chf", "--port", "tcp://127.0.0.1:1", "--chf", profile, "--image", ppmid_image, "--target", PPMID)
    assert_one_line_error(result, str(profile), "chf.channel", "11..26")


def test_a_missing_serial_port_is_named(ppmid_image: Path) -> None:
    result = run("chf", "--port", "/dev/ttyUSB97", "--image", ppmid_image, "--target", PPMID)
    assert_one_line_error(result, "/dev/ttyUSB97: no such serial port")


@pytest.mark.realtime
def test_a_closed_port_fails_with_one_line_and_exit_2(ppmid_image: Path) -> None:
    # In this process, as the missing, busy and silent ports below: what decides the line is the CHF's own code.
    url = f"tcp://127.0.0.1:{closed_port()}"
    chf = run("chf", "--radio", "ezsp", "--port", url, "--image", ppmid_image, "--target", PPMID)
    assert chf.exit_code == 2, chf.output
    assert chf.stderr.splitlines() == [f"ota-emu: error: {url}: cannot open the EZSP port (connection refused: "
                                       "nothing listens there)"]  # fmt: skip
    assert chf.stdout == ""


@contextlib.contextmanager
def pseudo_terminal() -> Iterator[str]:
    """A serial port nobody answers on: the slave side of a fresh pty."""
    master, slave = pty.openpty()
    try:
        yield os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def test_a_port_another_program_holds_is_busy(ppmid_image: Path) -> None:
    with pseudo_terminal() as path, open(path, "rb", buffering=0) as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what bellows, zigpy and serialx take on a port
        result = run("chf", "--port", path, "--image", ppmid_image, "--target", PPMID)
    assert_one_line_error(result, path, "busy")


@pytest.mark.realtime
def test_a_port_where_nothing_speaks_ezsp(ppmid_image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 10 s in use (bellows itself gives up after three ASH resets of 2.5 s); the message is what is checked.
    monkeypatch.setattr(chf_node, "EZSP_CONNECT_TIMEOUT", 0.5)
    with pseudo_terminal() as path:
        result = run("chf", "--port", path, "--baudrate", "460800", "--image", ppmid_image, "--target", PPMID)
    assert_one_line_error(
        result, path, "no EZSP answer within 0.5 s", "460800 baud", "flow control software", "Silicon Labs NCP"
    )


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--count", "2"], ["--count needs at least one --device PROFILE"]),
        (["--device", "absent.toml"], ["absent.toml"]),
        (
            ["--device", PROFILES / "ppmid.toml", "--device", PROFILES / "ppmid.toml"],
            ["--device", "would both be 00:db:12:34:56:78:90:a4"],
        ),
        (["--device", PROFILES / "ppmid.toml", "--count", "0"], ["--count", "0"]),
    ],
)
def test_bad_ncp_device_arguments(args: list[object], fragments: list[str]) -> None:
    assert_one_line_error(run("ncp", *args), *fragments)


# -- two terminals: ota-emu ncp with an emulated device, ota-emu chf on its URL ------------------------------------


@contextlib.contextmanager
def virtual_dongle(*devices: Path, count: int = 1) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    args = [sys.executable, "-m", "emulator", "ncp", "--listen", "tcp://127.0.0.1:0", "--count", str(count)]
    for device in devices:
        args += ["--device", str(device)]
    ncp = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = ncp.stdout.readline()  # type: ignore[union-attr]
        match = re.fullmatch(r"Virtual EZSP v13 NCP listening on (tcp://127\.0\.0\.1:\d+)\n", banner)
        assert match, banner
        yield match.group(1), ncp
    finally:
        if ncp.poll() is None:
            ncp.send_signal(signal.SIGTERM)
        ncp.communicate(timeout=RUN_TIMEOUT)


def chf(url: str, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emulator", "chf", "--radio", "ezsp", "--port", url, *map(str, args)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False,
    )  # fmt: skip


def chf_here(url: str, *args: object) -> Result:
    """`ota-emu chf` in this process, on the URL of an `ota-emu ncp` process: for what the CHF decides, where the
    process boundary proves nothing more than the two-terminal tests already do."""
    return run("chf", "--radio", "ezsp", "--port", url, *args)


class Dongle(Output, logging.Handler):
    """`ota-emu ncp --device PROFILE --count N` (seed 0, EZSP v13, a free TCP port) on a thread of this process:
    the command's own NCP and `join_devices`, with the lines it would print kept in `lines`, and what the command's
    process would have printed as a traceback (an error logged on the dongle's thread, an exception its loop saw
    nobody handle) in `troubles`."""

    def __init__(self) -> None:
        Output.__init__(self, as_json=False)
        logging.Handler.__init__(self, logging.ERROR)
        self.lines: list[str] = []
        self.troubles: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(lambda _, context: self.troubles.append(str(context)))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.devices: list[EmulatedDevice] = []

    def __call__(self, event: str, text: str, **fields: Any) -> None:
        self.lines.append(text)

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread.ident:
            self.troubles.append(self.format(record))

    def until(self, fragment: str) -> list[str]:
        """The lines so far, once one holds `fragment`: what a device does after the CHF has its outcome (a PPMID
        activates once told to) is printed when it happens, so the test waits for it."""
        deadline = time.monotonic() + LINE_TIMEOUT
        while not any(fragment in line for line in self.lines):
            assert time.monotonic() < deadline, f"no line with {fragment!r}: {self.lines}"
            time.sleep(0.02)
        return list(self.lines)

    async def serve(self, device: Path, count: int) -> str:
        self.ncp = VirtualNcp(Air(seed=0), ezsp_version=13, seed=0, listen=DEFAULT_TCP)
        await self.ncp.start()
        profiles = expand([load_device(device)], count)
        self.joining = asyncio.get_running_loop().create_task(join_devices(self.ncp, profiles, 0, self.devices, self))
        assert self.ncp.url is not None
        return self.ncp.url

    async def stop(self) -> None:
        self.joining.cancel()
        await asyncio.gather(self.joining, return_exceptions=True)
        if not self.joining.cancelled():
            assert self.joining.exception() is None, self.joining.exception()
        for device in self.devices:
            await device.stop()
        await self.ncp.stop()


@contextlib.contextmanager
def dongle(device: Path, count: int = 1) -> Iterator[tuple[str, Dongle]]:
    """The dongle's URL and the dongle, stopped (as Ctrl-C stops the command) when the block ends."""
    here = Dongle()
    here.thread.start()
    logging.getLogger().addHandler(here)
    try:
        yield asyncio.run_coroutine_threadsafe(here.serve(device, count), here.loop).result(LINE_TIMEOUT), here
    finally:
        asyncio.run_coroutine_threadsafe(here.stop(), here.loop).result(LINE_TIMEOUT)
        here.loop.call_soon_threadsafe(here.loop.stop)
        here.thread.join(LINE_TIMEOUT)
        here.loop.close()
        logging.getLogger().removeHandler(here)
    assert here.troubles == []  # the command would have exited 0 without a traceback


def lines_until(ncp: subprocess.Popen[str], fragment: str) -> list[str]:
    """The NCP's lines up to and including the first with `fragment`: what a device does after the CHF has its
    outcome (a PPMID activates once told to) is printed when it happens, so the test waits for it."""
    lines = []
    while line := ncp.stdout.readline():  # type: ignore[union-attr]
        lines.append(line.rstrip("\n"))
        if fragment in line:
            break
    return lines


def stop(ncp: subprocess.Popen[str]) -> str:
    ncp.send_signal(signal.SIGTERM)
    out, err = ncp.communicate(timeout=RUN_TIMEOUT)
    assert ncp.returncode == 0, err
    assert "Traceback" not in err
    return out


@pytest.mark.long
@pytest.mark.realtime
def test_two_terminals_upgrade_the_emulated_ppmid(ppmid_image: Path) -> None:
    with virtual_dongle(PROFILES / "ppmid.toml") as (url, ncp):
        done = chf(url, "--image", ppmid_image, "--target", PPMID, "--json")
        lines = lines_until(ncp, "now runs") + stop(ncp).splitlines()
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["complete"], report["stopped"], report["port"]) == (True, "outcomes", url)
    [target] = report["devices"]
    size = ppmid_image.stat().st_size
    assert target == {
        "ieee": PPMID.lower(),
        "target": True,
        "joined": True,
        "nwk": "0x1001",
        "file_version": "0x00000002",
        "offset": size,
        "size": size,
        "outcome": "success",
        "response_code": 0,
        "alert_code": "0x8F8A",
        "reason": "client verified the image",
        "cbke_suite": 2,  # the bundled profiles ask for Smart Energy security: CBKE, then APS-encrypted OTA
    }
    assert report["network"]["pan_id"] == "0x1A62" and report["network"]["channel"] == 15
    assert f"Device PPMID {PPMID.lower()} joined as NWK 0x1001" in lines
    coordinator = report["network"]["ieee"]
    assert f"Device {PPMID.lower()} established a link key with {coordinator} (CBKE suite 2)" in lines
    assert f"Device {PPMID.lower()} now runs 0x00000002" in lines


@pytest.mark.long
@pytest.mark.realtime
def test_ctrl_c_stops_cleanly_with_a_table_of_every_target(ppmid_image: Path) -> None:
    # The CHF is the process the signal goes to; the dongle runs on a thread here (the process recipe is above).
    with dongle(PROFILES / "ppmid.toml", count=2) as (url, ncp):
        run_ = subprocess.Popen(
            [sys.executable, "-m", "emulator", "chf", "--port", url, "--image", str(ppmid_image), "--target", PPMID,
             "--target", ABSENT],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            lines = ncp.until("now runs")
            first = next(n for n, line in enumerate(lines) if "now runs" in line)
            seen, line = lines[:first], lines[first]  # what the dongle printed before the first "now runs", and it
            assert line == f"Device {PPMID.lower()} now runs 0x00000002"
        finally:
            run_.send_signal(signal.SIGINT)
            out, err = run_.communicate(timeout=RUN_TIMEOUT)
    # --count 2: the profile's PPMID and a copy with the next EUI-64, which the CHF holds no image for; under
    # Smart Energy security only the targets' install codes are given to the NCP, so the copy is not admitted.
    assert f"Device PPMID {PPMID.lower()} joined as NWK 0x1001" in seen
    refused = f"Device {SECOND_PPMID.lower()} was not admitted: the trust centre holds no key for it"
    assert any(line.startswith(refused) for line in seen), seen
    assert run_.returncode == 130, err
    assert "Traceback" not in err
    assert f"CHF on {url} (interrupted by SIGINT)" in out and "stopped by signal" in out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    assert set(rows) == {PPMID.lower(), ABSENT.lower()}
    assert "success" in rows[PPMID.lower()] and "0 (0x8F8A)" in rows[PPMID.lower()]
    assert "yes, 0x1001" in rows[PPMID.lower()]
    absent = [cell.strip() for cell in rows[ABSENT.lower()].split("│")[1:-1]]
    assert absent == [ABSENT.lower(), "yes", "no", "-", "-", "-", "-", ""]


@pytest.mark.realtime
def test_until_ends_a_run_whose_target_never_joins(ppmid_image: Path) -> None:
    # Both ends in this process (`--until` is the CHF's own clock, no process boundary in it).
    with dongle(PROFILES / "hcalcs.toml") as (url, _):
        done = chf_here(url, "--image", ppmid_image, "--target", ABSENT, "--until", "1", "--json")
    assert done.exit_code == 1, done.stderr
    report = json.loads(done.stdout)
    assert (report["complete"], report["stopped"]) == (False, "until")
    # The HCALCS on the air (turned away: not in the Device Log) is no target and was served nothing: no row.
    [target] = report["devices"]
    assert (target["ieee"], target["joined"], target["outcome"], target["offset"]) == (ABSENT.lower(), False, None, 0)


@pytest.mark.realtime
def test_sigterm_while_waiting_for_a_target_prints_the_json_so_far_and_exits_143(ppmid_image: Path) -> None:
    # The CHF is the process the signal goes to; the dongle runs on a thread here (the process recipe is above).
    with dongle(PROFILES / "hcalcs.toml") as (url, ncp):
        waiting = subprocess.Popen(
            [sys.executable, "-m", "emulator", "chf", "--port", url, "--image", str(ppmid_image), "--target", ABSENT,
             "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            # The HCALCS on the air tries to join once the CHF opens joining: the CHF is up and waiting for ABSENT.
            # (Under Smart Energy security it is turned away: it is not in the CHF's Device Log.)
            ncp.until("was not admitted")
        finally:
            waiting.send_signal(signal.SIGTERM)
            out, err = waiting.communicate(timeout=RUN_TIMEOUT)
    assert waiting.returncode == 143, err
    report = json.loads(out)
    assert (report["stopped"], report["interrupted"], report["complete"]) == ("signal", "SIGTERM", False)
    [target] = report["devices"]
    assert (target["ieee"], target["joined"], target["outcome"]) == (ABSENT.lower(), False, None)
