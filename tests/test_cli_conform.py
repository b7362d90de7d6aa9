"""`ota-emu conform`: verdict table, reports and capture, exit codes, one-line errors; the real-device path against
a virtual NCP served from another thread (as a dongle would be), with and without a device joining it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from emulator import __version__
from emulator.cli import main
from emulator.clock import Clock
from emulator.conformance.device.catalogue import CHECKS
from emulator.conformance.reports import load_schema
from emulator.conformance.server.catalogue import CHECKS as SERVER_CHECKS
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
    server = run("server", "--server", "ours", "--checks", "C-01")
    one_line_error(server, "unknown check ID(s) C-01", "valid IDs: S-01")


def test_a_dut_profile_with_errors_is_its_one_line_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(Path(PPMID).read_text() + 'faults = ["fly"]\n')
    one_line_error(run("device", "--dut", str(bad)), str(bad), "unknown fault 'fly'")
    one_line_error(run("device", "--dut", str(tmp_path / "missing.toml")), "no such profile file")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give --dut PROFILE, or --radio ezsp --port PORT --target EUI64"),
        (("--dut", PPMID, "--target", "00:db:12:34:56:78:90:a4"), "not both"),
        (
            ("--port", "tcp://127.0.0.1:1", "--target", "00:db:12:34:56:78:90:a4", "--radio", "loopback"),
            "--radio ezsp",
        ),
        (("--port", "tcp://127.0.0.1:1", "--target", "00:db"), "--target"),
        (("--port", "/no/such/tty", "--target", "00:db:12:34:56:78:90:a4"), "/no/such/tty: no such serial port"),
        (("--dut", PPMID, "--checks", "C-01", "--pcap", "/no/such/dir/run.pcap"), "does not exist"),
    ],
)
def test_usage_errors_are_one_line(args, message):
    one_line_error(run("device", *args), message)


def test_server_subcommand_runs_the_server_checks(tmp_path):
    result = run("server", "--server", "ours", "--checks", "S-01,S-07", "--report-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert table(result.stdout) == {"S-01": "pass", "S-07": "pass"}
    data = json.loads((tmp_path / "report.json").read_text())
    assert [r["check"]["id"] for r in data["results"]] == ["S-01", "S-07"]
    jsonschema.Draft202012Validator(load_schema(), format_checker=jsonschema.FormatChecker()).validate(data)
    assert data["run"]["bench"] == "server" and data["run"]["settings"]["server"] == "ours" and data["dut"] is None
    cases = ET.parse(tmp_path / "report.xml").getroot().iter("testcase")
    assert [c.get("classname") for c in cases] == ["ota_emu.conformance.S-01", "ota_emu.conformance.S-07"]


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


@pytest.mark.realtime
def test_a_real_device_that_never_joins_leaves_every_check_inconclusive():
    with NcpThread() as url:
        result = run(
            "device", "--radio", "ezsp", "--port", url, "--target", "00:db:12:34:56:78:90:a4",
            "--join-timeout", "1", "--checks", "C-01,C-13,C-23b",
        )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert table(result.stdout) == dict.fromkeys(["C-01", "C-13", "C-23b"], "inconclusive")
    assert result.stdout.count("did not join within 1 s") == 3
    assert "Joining is open for 1 s: power on device 00:db:12:34:56:78:90:a4" in result.stderr
    assert "could not be decided" in result.stdout and "Traceback" not in result.output
    # No device, nothing read: the report says so rather than leaving the identity out.
    assert "DUT EUI-64: 00:db:12:34:56:78:90:a4" in result.stdout
    assert "DUT Manufacturer: not readable" in result.stdout
    assert "DUT Firmware (file version): not readable" in result.stdout


@pytest.mark.long
@pytest.mark.realtime
def test_a_device_on_the_coordinator_network_is_checked_through_bellows():
    """Two checks in sequence on the one CHF a real-device run keeps (the quickest on real time: the checks'
    own logic is proven on virtual time by the other tests)."""
    profile = load_device(bundled("ppmid"))
    with NcpThread(profile) as url:
        result = run(
            "device", "--radio", "ezsp", "--port", url, "--target", str(profile.ieee), "--kind", "ppmid",
            "--join-timeout", "30", "--checks", "C-04,C-13",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert table(result.stdout) == {"C-04": "pass", "C-13": "pass"}
    assert "is on the network; running the checks" in result.stderr


# -- reports a vendor files, report directory, old option names, the catalogue ------------------------------


def test_the_json_report_of_a_run_validates_against_the_shipped_schema_and_names_the_device(tmp_path):
    result = run("device", "--dut", PPMID, "--checks", "C-01,C-23d", "--report-dir", str(tmp_path / "new" / "dir"))
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "new" / "dir" / "report.json").read_text())
    jsonschema.Draft202012Validator(load_schema(), format_checker=jsonschema.FormatChecker()).validate(data)
    profile = load_device(PPMID)
    assert data["dut"]["model_identifier"] == profile.effective_model == "PPMID"
    assert data["dut"]["current_file_version"] == f"0x{profile.file_version:08X}"
    assert data["run"]["bench"] == "device" and data["run"]["planned"] == ["C-01", "C-23d"]
    assert data["run"]["settings"]["dut"] == PPMID and data["run"]["settings"]["checks"] == ["C-01", "C-23d"]
    assert data["tool"]["version"] == __version__
    assert f"Tool: ota-emu {__version__}" in result.stdout and "DUT Model: PPMID" in result.stdout


def test_a_report_dir_that_is_a_file_is_a_one_line_error_before_any_check(tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    capture = tmp_path / "run.pcap"
    result = run("device", "--dut", PPMID, "--report-dir", str(blocker), "--pcap", str(capture))
    one_line_error(result, "--report-dir", f"{blocker}' is a file")
    assert result.stdout == "" and not capture.exists() and blocker.read_text() == "x"
    server = run("server", "--server", "ours", "--report-dir", str(blocker / "sub"))
    one_line_error(server, f"report directory {blocker / 'sub'}")


def test_a_report_dir_that_cannot_be_written_is_a_one_line_error(tmp_path):
    if os.geteuid() == 0:
        locked = Path("/sys/kernel")  # a directory even root cannot create files in
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
    result = run("device", "--dut", PPMID, "--checks", "C-01", "--report-dir", str(locked))
    one_line_error(result, f"report directory {locked}: cannot write in it")
    assert result.stdout == ""


def test_old_option_names_still_work_and_say_they_are_renamed():
    result = run("device", "--device", "/no/such/tty", "--eui64", "00:db:12:34:56:78:90:a4")
    assert result.exit_code == 2
    warnings, error = result.stderr.splitlines()[:2], result.stderr.splitlines()[2:]
    assert warnings == [
        "ota-emu: warning: --device is renamed --port; --device will be removed",
        "ota-emu: warning: --eui64 is renamed --target; --eui64 will be removed",
    ]
    # The old names carry their values: the port given with --device is the one that was tried.
    assert len(error) == 1 and error[0].startswith("ota-emu: error: /no/such/tty: no such serial port")
    server = run("server", "--target", "ours", "--checks", "S-01")
    assert server.exit_code == 0 and table(server.stdout) == {"S-01": "pass"}
    assert server.stderr.splitlines()[0] == "ota-emu: warning: --target is renamed --server; --target will be removed"
    both = run("device", "--port", "/dev/a", "--device", "/dev/b", "--target", "00:db:12:34:56:78:90:a4")
    assert both.exit_code == 2 and "--device is the old name of --port: give --port only" in both.stderr


def test_list_checks_shows_the_whole_catalogue():
    listed = run("--list-checks", "--json")
    assert listed.exit_code == 0, listed.output
    entries = json.loads(listed.stdout)
    assert [e["id"] for e in entries] == [*CHECKS, *SERVER_CHECKS]
    assert {e["bench"] for e in entries} == {"device", "server"}
    c14 = next(e for e in entries if e["id"] == "C-14")
    assert c14["level"] == "MUST" and c14["reference"] == CHECKS["C-14"].reference and c14["expected_s"]["ppmid"] > 3600
    text = run("--list-checks")
    assert text.exit_code == 0
    rows = {line.split("│")[1].strip() for line in text.stdout.splitlines() if line.startswith("│")}
    assert set(CHECKS) | set(SERVER_CHECKS) <= rows


def test_conform_alone_or_mixed_options_are_usage_errors():
    one_line_error(run(), "give a subcommand (device, server), --list-checks or --resume REPORT_DIR")
    one_line_error(run("--list-checks", "device", "--dut", PPMID), "go without a subcommand")


def test_resume_refuses_a_finished_run_and_a_missing_report(tmp_path):
    done = run("server", "--server", "ours", "--checks", "S-01", "--report-dir", str(tmp_path / "server"))
    assert done.exit_code == 0
    one_line_error(run("--resume", str(tmp_path / "server")), "only a device run")
    device_run = run("device", "--dut", PPMID, "--checks", "C-01", "--report-dir", str(tmp_path / "device"))
    assert device_run.exit_code == 0
    one_line_error(run("--resume", str(tmp_path / "device")), "that run finished", "nothing to resume")
    one_line_error(run("--resume", str(tmp_path / "none")), "no such report")


@pytest.mark.long
@pytest.mark.realtime
def test_ctrl_c_writes_the_report_of_the_checks_decided_and_resume_finishes_the_run(tmp_path):
    """A real SIGINT to a real-time run (emulated device through bellows and a virtual NCP) once its first
    check is decided; then `conform --resume` runs the rest into the same reports (on real time again: the
    report keeps the run's settings)."""
    reports = tmp_path / "reports"
    command = [sys.executable, "-m", "emulator", "conform", "device", "--dut", PPMID, "--radio", "ezsp",
               "--real-time", "--checks", "C-04,C-13", "--report-dir", str(reports)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as process:
        assert process.stderr is not None
        lines = []
        for line in process.stderr:
            lines.append(line)
            if line.startswith("[1/2] C-04 pass"):
                process.send_signal(signal.SIGINT)
                break
        out, err = process.communicate(timeout=60)
    assert process.returncode == 130, "".join(lines) + err
    assert lines[0].startswith("[1/2] C-04 Query Next Image Request carries the hardware version (expected 10.0 s")
    assert f"Interrupted: 1 of 2 checks decided; continue with: ota-emu conform --resume {reports}" in out
    data = json.loads((reports / "report.json").read_text())
    assert data["interrupted"] is True and data["not_run"] == ["C-13"]
    assert [(r["check"]["id"], r["verdict"]) for r in data["results"]] == [("C-04", "pass")]
    assert "INTERRUPTED" in (reports / "report.html").read_text()

    resumed = run("--resume", str(reports))
    assert resumed.exit_code == 0, resumed.output
    assert table(resumed.stdout) == {"C-04": "pass", "C-13": "pass"}
    data = json.loads((reports / "report.json").read_text())
    assert data["interrupted"] is False and data["not_run"] == [] and data["run"]["resumed"] == 1
    assert [r["check"]["id"] for r in data["results"]] == ["C-04", "C-13"]
