"""An interrupted `ota-emu run` keeps what it did: the table (or JSON) of everything decided so far, marked
interrupted, the alert log with the alerts produced so far, and exit 130 (SIGINT) or 143 (SIGTERM).

The signal is real and sent to this process from inside the run, at a chosen point (the first transfer outcome the
CHF reports), through the progress listener the command attaches to the HAN, so the test is deterministic and runs
on virtual time."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conftest import image_file
from emulator.chf import events as server_events
from emulator.cli import display, main
from emulator.han.network import Event
from emulator.profiles import bundled, load_device


@pytest.fixture
def ppmid_image(tmp_path: Path) -> Path:
    """Version 2 for the bundled PPMID, signed with the test-only key it trusts."""
    return image_file(tmp_path / "ppmid.ota", load_device(bundled("ppmid")), size=3000)


def interrupt_at_first_outcome(monkeypatch: pytest.MonkeyPatch, signum: signal.Signals) -> list[str]:
    """Send `signum` to this process when the CHF reports its first transfer outcome; the EUI-64s it was for."""
    seen: list[str] = []

    class Interrupting(display.RunProgress):
        def __call__(self, event: Event) -> None:
            super().__call__(event)
            if isinstance(event, server_events.TransferOutcome) and not seen:
                seen.append(str(event.ieee))
                signal.raise_signal(signum)

    monkeypatch.setattr(display, "RunProgress", Interrupting)  # `ota-emu run` takes it from there when it runs
    return seen


def run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], prog_name="ota-emu")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_prints_json_so_far_and_keeps_its_alert_log(
    tmp_path: Path, ppmid_image: Path, monkeypatch: pytest.MonkeyPatch, signum: signal.Signals, code: int
) -> None:
    first = interrupt_at_first_outcome(monkeypatch, signum)
    log = tmp_path / "alerts.jsonl"
    result = run("run", "--device", "ppmid", "--count", "3", "--image", ppmid_image, "--alert-log", log, "--json")
    assert result.exit_code == code, result.output
    report = json.loads(result.stdout)
    assert (report["interrupted"], report["settled"]) == (signum.name, False)
    assert len(report["devices"]) == 3
    assert any(d["result"] == "pending" for d in report["devices"])
    alerts = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(a["event"]["type"], a["event"]["ieee"]) for a in alerts] == [("TransferOutcome", first[0])]
    assert "1 CCS08 FirmwareTransferAlert" in result.stderr


def test_an_interrupted_run_says_so_in_its_table(
    ppmid_image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    interrupt_at_first_outcome(monkeypatch, signal.SIGINT)
    pcap = tmp_path / "run.pcap"
    result = run("run", "--device", "ppmid", "--count", "2", "--image", ppmid_image, "--pcap", pcap)
    assert result.exit_code == 130, result.output
    assert "Upgrade outcomes so far (interrupted by SIGINT)" in result.stdout
    assert "pending" in result.stdout
    assert pcap.stat().st_size > 24 * 10  # the capture kept the frames up to the interruption
