"""The progress line of each device: percentage, rate, time left and phase, so that a bar at 100 % says why it is
still open; and the CHF's line for a target it is waiting for. Tested through the functions that format the
lines, fed with the events of real in-process runs where the phases come from the devices."""

from __future__ import annotations

import pytest
import zigpy.types as t

from conftest import held_image
from emulator.chf import events as server_events
from emulator.chf.store import HeldImage
from emulator.cli.chf import TargetStatus, target_text
from emulator.cli.display import Transfer, aggregate_text, device_phase, progress_text
from emulator.device import events as device_events
from emulator.gb.codes import TransferResponse
from emulator.han.network import Event, Han, HanOptions
from emulator.profiles import bundled, load_chf, load_device

EUI = t.EUI64.convert("00:db:12:34:56:78:90:a4")


def test_a_download_shows_percent_rate_and_time_left() -> None:
    transfer = Transfer()
    transfer.start(0, 10_000, at=100.0)
    transfer.advance(2_500, at=105.0)
    assert progress_text(transfer) == " 25 %  500 B/s  ETA 15.0 s  downloading"
    transfer.advance(6_000, at=110.0)
    assert progress_text(transfer) == " 60 %  600 B/s  ETA 6.7 s  downloading"


def test_a_resumed_download_measures_its_rate_from_where_it_resumed() -> None:
    transfer = Transfer()
    transfer.start(8_000, 10_000, at=0.0)
    transfer.advance(9_000, at=2.0)
    assert progress_text(transfer) == " 90 %  500 B/s  ETA 2.0 s  downloading"


def test_before_a_rate_can_be_measured() -> None:
    transfer = Transfer()
    transfer.start(0, 2_000_000, at=3.0)
    assert progress_text(transfer) == "  0 %  --- B/s  ETA --  downloading"
    transfer.advance(1_500_000, at=4.0)
    assert progress_text(transfer) == " 75 %  1.5 MB/s  ETA 0.3 s  downloading"


def test_a_full_bar_says_why_it_is_open() -> None:
    transfer = Transfer(phase="held: waiting for Activate Firmware", offset=4096, size=4096)
    assert progress_text(transfer) == "100 %  held: waiting for Activate Firmware"
    assert progress_text(Transfer()) == "waiting to query"


def events_of_a_run(devices: list, images: list[HeldImage], **options: object) -> list[Event]:
    """Every event of an in-process run on virtual time until it settles."""
    from emulator import clock

    events: list[Event] = []

    async def main() -> None:
        han = Han(load_chf(bundled("chf")), devices, images, HanOptions(**options))  # type: ignore[arg-type]
        han.add_listener(events.append)
        await han.start()
        assert await han.settle(2 * 86400.0)
        await han.stop()

    clock.run(main, virtual=True)
    return events


def phases(events: list[Event], ieee: t.EUI64) -> list[str]:
    transfer = Transfer()
    seen: list[str] = []
    for event in events:
        if isinstance(event, device_events.DeviceEvent) and event.ieee == ieee:
            device_phase(event, transfer)
            if not seen or seen[-1] != transfer.phase:
                seen.append(transfer.phase)
    return seen


def test_the_phases_of_a_ppmid_and_an_hcalcs_upgrading() -> None:
    ppmid, hcalcs = load_device(bundled("ppmid")), load_device(bundled("hcalcs"))
    events = events_of_a_run([ppmid, hcalcs], [held_image(ppmid, size=3000), held_image(hcalcs, size=3000)])
    ppmid_phases = phases(events, ppmid.ieee)
    assert ppmid_phases[:2] == ["waiting to query", "querying the CHF"]
    assert ppmid_phases[2:] == ["downloading", "verifying", "waiting for Upgrade End Response", "activating in 0.0 s",
                                "running 0x00000002"]  # fmt: skip
    hcalcs_phases = phases(events, hcalcs.ieee)
    held = "held: waiting for Activate Firmware"
    assert hcalcs_phases[2:] == ["downloading", "verifying", "waiting for Upgrade End Response", held]


def test_a_device_the_chf_holds_nothing_for() -> None:
    ppmid, hcalcs = load_device(bundled("ppmid")), load_device(bundled("hcalcs"))
    events = events_of_a_run([ppmid, hcalcs], [held_image(ppmid, size=3000)])
    assert phases(events, hcalcs.ieee)[-1] == "no image for it (NO_IMAGE_AVAILABLE)"


def test_many_devices_share_one_line_by_phase() -> None:
    transfers = [Transfer("downloading", 500, 1000), Transfer("downloading", 250, 1000),
                 Transfer("held: waiting for Activate Firmware", 1000, 1000)]  # fmt: skip
    assert aggregate_text(transfers, devices=5) == "1.8 kB of 3.0 kB  2 downloading, 2 waiting to query, 1 held"


# -- the CHF's side (ota-emu chf) ------------------------------------------------------------------------------


def test_the_chf_says_what_it_waits_for() -> None:
    status = TargetStatus(EUI, target=True)
    transfer = Transfer()
    assert target_text(status, transfer, now=100.0, joining_until=354.0) == (
        "waiting for 00:db:12:34:56:78:90:a4 to join; joining open for 254 s"
    )
    assert target_text(status, transfer, now=400.0, joining_until=354.0).endswith("to join; joining closed")
    status.joined = True
    assert target_text(status, transfer, now=1.0, joining_until=None) == (
        "joined; waiting for its Query Next Image Request"
    )
    status.size, status.offset = 2048, 2048
    transfer.start(0, 2048, at=0.0)
    transfer.advance(2048, at=4.0)
    transfer.phase = "waiting for Upgrade End Request (the device verifies the image)"
    assert target_text(status, transfer, now=5.0, joining_until=None) == (
        "100 %  waiting for Upgrade End Request (the device verifies the image)"
    )


@pytest.mark.parametrize(
    ("response", "text"),
    [(TransferResponse.SUCCESS, "100 %  success (CCS08 0)"),
     (TransferResponse.HARDWARE_VERSION_MISMATCH, "100 %  hardware version mismatch (CCS08 2)")],
)  # fmt: skip
def test_the_chf_line_ends_with_the_ccs08_outcome(response: TransferResponse, text: str) -> None:
    status = TargetStatus(EUI, target=True, joined=True, offset=100, size=100)
    status.outcome = server_events.TransferOutcome(EUI, 9.0, 0x121D, 0x0084, 2, response, "")
    assert target_text(status, Transfer(), now=10.0, joining_until=None) == text


def test_no_progress_when_stderr_is_not_a_terminal(tmp_path) -> None:
    from click.testing import CliRunner

    from emulator.cli import main

    ppmid = load_device(bundled("ppmid"))
    path = tmp_path / "ppmid.ota"
    path.write_bytes(held_image(ppmid, size=3000).data)
    result = CliRunner().invoke(main, ["run", "--device", "ppmid", "--image", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and "upgraded" in result.stdout
