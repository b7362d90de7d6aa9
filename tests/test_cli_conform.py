"""`ota-emu conform`: verdict table, reports and capture, exit codes, one-line errors; the real-device path against
a virtual NCP served from another thread (as a dongle would be), with and without a device joining it."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from emulator.cli import main
from emulator.clock import Clock
from emulator.conformance.checks import CHECKS
from emulator.device.device import EmulatedDevice
from emulator.ncp.server import VirtualNcp
from emulator.profiles import DeviceProfile, bundled, load_device
from emulator.radio.air import Air

ROOT = Path(__file__).resolve().parent.parent
PPMID = str(ROOT / "profiles" / "ppmid.toml")
PCAP_MAGIC = bytes.fromhex("d4c3b2a1")
ROW = re.compile(r"^│ (\S+)\s+│ (MUST|SHOULD)\s+│ (pass|fail|not applicable|inconclusive)\s+│")


def run(*args: str):
    return CliRunner().invoke(main, ["conform", *args])


def table(output: str) -> dict[str, str]:
    return {m.group(1): m.group(3) for line in output.splitlines() if (m := ROW.match(line))}


def one_line_error(result, *parts: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ota-emu: error:"), result.stderr
    assert "Traceback" not in result.output
    for part in parts:
        assert part in lines[0]


def test_full_run_writes_reports_and_capture_that_match_the_table(tmp_path):
    reports, capture = tmp_path / "reports", tmp_path / "run.pcap"
    result = run("device", "--dut", PPMID, "--report-dir", str(reports), "--pcap", str(capture))
    assert result.exit_code == 0, result.output
    shown = table(result.stdout)
    data = json.loads((reports / "report.json").read_text())
    assert {r["check"]["id"]: r["verdict"] for r in data["results"]} == shown
    assert len(shown) == len(CHECKS) and set(shown.values()) == {"pass", "not applicable"}
    assert data["passed"] is True and data["pcap"] == str(capture)
    suite = ET.parse(reports / "report.xml").getroot()
    assert int(suite.get("tests") or next(iter(suite)).get("tests")) == len(CHECKS)
    assert (reports / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert capture.read_bytes()[:4] == PCAP_MAGIC and capture.stat().st_size > 10_000
    assert "PASS" in result.stdout and "wall time" in result.stdout


def test_json_goes_to_stdout_and_the_table_to_stderr():
    result = run("device", "--dut", PPMID, "--checks", "C-04,C-23d", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [(r["check"]["id"], r["verdict"]) for r in data["results"]] == [
        ("C-04", "pass"),
        ("C-23d", "not applicable"),
    ]
    assert table(result.stderr) == {"C-04": "pass", "C-23d": "not applicable"}


def test_a_must_failure_exits_1_and_a_should_failure_alone_exits_0():
    faults = ROOT / "profiles" / "faults"
    must = run("device", "--dut", str(faults / "ignore-unicast-notify.toml"), "--checks", "C-01")
    assert must.exit_code == 1 and table(must.stdout) == {"C-01": "fail"}
    assert "FAIL (1 MUST failure)" in must.stdout
    should = run("device", "--dut", str(faults / "no-resend.toml"), "--checks", "C-11,C-13")
    assert should.exit_code == 0 and table(should.stdout) == {"C-11": "fail", "C-13": "pass"}


def test_unknown_check_ids_are_one_line_listing_the_valid_ones():
    result = run("device", "--dut", PPMID, "--checks", "C-01,C-99,X")
    one_line_error(result, "unknown check ID(s) C-99, X", "valid IDs: C-01, C-02a", "C-PAGE")
    server = run("server", "--target", "ours", "--checks", "C-01")
    one_line_error(server, "unknown check ID(s) C-01", "valid IDs: S-01")


def test_a_dut_profile_with_errors_is_its_one_line_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(Path(PPMID).read_text() + 'faults = ["fly"]\n')
    one_line_error(run("device", "--dut", str(bad)), str(bad), "unknown fault 'fly'")
    one_line_error(run("device", "--dut", str(tmp_path / "missing.toml")), "no such profile file")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give --dut PROFILE, or --radio ezsp --device PATH --eui64 EUI64"),
        (("--dut", PPMID, "--eui64", "00:db:12:34:56:78:90:a4"), "not both"),
        (
            ("--device", "tcp://127.0.0.1:1", "--eui64", "00:db:12:34:56:78:90:a4", "--radio", "loopback"),
            "--radio ezsp",
        ),
        (("--device", "tcp://127.0.0.1:1", "--eui64", "00:db"), "--eui64"),
        (("--device", "/no/such/tty", "--eui64", "00:db:12:34:56:78:90:a4"), "/no/such/tty: no such serial port"),
        (("--dut", PPMID, "--checks", "C-01", "--pcap", "/no/such/dir/run.pcap"), "does not exist"),
    ],
)
def test_usage_errors_are_one_line(args, message):
    one_line_error(run("device", *args), message)


def test_server_subcommand_runs_the_server_checks(tmp_path):
    result = run("server", "--target", "ours", "--checks", "S-01,S-07", "--report-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert table(result.stdout) == {"S-01": "pass", "S-07": "pass"}
    data = json.loads((tmp_path / "report.json").read_text())
    assert [r["check"]["id"] for r in data["results"]] == ["S-01", "S-07"]


class NcpThread:
    """A virtual NCP on its own event loop and thread — a dongle as the bench sees it — optionally with an
    emulated device that joins once the bench opens joining."""

    def __init__(self, device: DeviceProfile | None = None) -> None:
        self.profile = device
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.devices: list[EmulatedDevice] = []

    def __enter__(self) -> str:
        self.thread.start()
        return asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> str:
        self.air = Air()
        self.ncp = VirtualNcp(self.air)
        await self.ncp.start()
        if self.profile is not None:
            self.joining = asyncio.get_running_loop().create_task(self._join(self.profile))
        assert self.ncp.url is not None
        return self.ncp.url

    async def _join(self, profile: DeviceProfile) -> None:
        await self.ncp.wait_for_joining()
        device = EmulatedDevice(profile, self.air, Clock(), nwk=0x2345)
        await device.start()
        self.devices.append(device)

    async def _stop(self) -> None:
        for device in self.devices:
            await device.stop()
        await self.ncp.stop()

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_a_real_device_that_never_joins_leaves_every_check_inconclusive():
    with NcpThread() as url:
        result = run(
            "device", "--radio", "ezsp", "--device", url, "--eui64", "00:db:12:34:56:78:90:a4",
            "--join-timeout", "2", "--checks", "C-01,C-13,C-23b",
        )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert table(result.stdout) == dict.fromkeys(["C-01", "C-13", "C-23b"], "inconclusive")
    assert result.stdout.count("did not join within 2 s") == 3
    assert "Joining is open for 2 s: power on device 00:db:12:34:56:78:90:a4" in result.stderr
    assert "could not be decided" in result.stdout and "Traceback" not in result.output


def test_a_device_on_the_coordinator_network_is_checked_through_bellows():
    profile = load_device(bundled("ppmid"))
    with NcpThread(profile) as url:
        result = run(
            "device", "--radio", "ezsp", "--device", url, "--eui64", str(profile.ieee), "--kind", "ppmid",
            "--join-timeout", "30", "--checks", "C-01,C-22a",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert table(result.stdout) == {"C-01": "pass", "C-22a": "pass"}
    assert "is on the network; running the checks" in result.stderr
