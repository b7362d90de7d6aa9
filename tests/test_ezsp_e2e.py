"""One end-to-end suite, two radios: the CHF OTA server on zigpy's loopback radio and on bellows' own EZSP app
talking ASH/EZSP to the virtual NCP over its in-process serial link, both on virtual time. The same PPMID and
HCALCS upgrade byte-identically on both, with the same outcomes and GB events; then the bellows path alone on
EZSP v8 and v14 and through serial-link faults, an NCP reset mid-transfer and failed deliveries (bellows' and the
NCP's ASH timers run on the same virtual clock)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zigpy.types as t
from click.testing import CliRunner, Result

from conftest import held_image
from emulator import clock
from emulator.chf import events as server_events
from emulator.chf.store import HeldImage
from emulator.cli import main
from emulator.device import events as device_events
from emulator.gb.codes import ActivationResponse, AlertCode, TransferResponse
from emulator.han.network import Han, HanOptions
from emulator.ota.blocks import decode_block_request
from emulator.ota.frames import CLUSTER_ID, UPGRADE_TIME_WAIT
from emulator.profiles import DeviceProfile, bundled, load_chf, load_device

# One worker runs the whole module under pytest-xdist, so its module-scoped fixtures are built once, not per worker.
pytestmark = [pytest.mark.virtual_time, pytest.mark.xdist_group("test_ezsp_e2e")]

NEW = 0x00000002
SETTLE = 2 * 86400.0

Event = server_events.ServerEvent | device_events.DeviceEvent


# Smart Energy security (install codes, CBKE, APS encryption) runs on the loopback path only so far: both radios
# carry the same HAN without it, so their outcomes and events compare one to one.
def ppmid() -> DeviceProfile:
    return load_device(bundled("ppmid")).replace(security="none")


def hcalcs() -> DeviceProfile:
    return load_device(bundled("hcalcs")).replace(security="none")


@dataclass
class Scenario:
    """What one run of the GB scenario left behind, radio apart."""

    radio: str
    ppmid: DeviceProfile
    hcalcs: DeviceProfile
    images: dict[t.EUI64, HeldImage]
    settled: bool
    results: dict[t.EUI64, str]  # when the HAN settled, before Activate Firmware
    running: dict[t.EUI64, bytes | None]
    held_before_activation: bytes | None
    wrong_hash: device_events.ActivationReply
    right_hash: device_events.ActivationReply
    events: list[Event]
    coordinator_ieee: t.EUI64
    ncp_counters: dict[str, dict[str, int]] | None


def run_scenario(radio: str) -> Scenario:
    """PPMID and HCALCS upgrade; the HCALCS then gets Activate Firmware with a wrong hash, then the right one."""
    p, h = ppmid(), hcalcs()
    images = {p.ieee: held_image(p, size=3072), h.ieee: held_image(h, size=3072)}

    async def main() -> Scenario:
        chf = load_chf(bundled("chf")).replace(security="none")
        han = Han(chf, [p, h], list(images.values()), HanOptions(radio=radio))
        await han.start()
        settled = await han.settle(SETTLE)
        results = {ieee: s.result for ieee, s in han.summaries.items()}
        held = han.devices[h.ieee].downloaded_image
        wrong = await han.activate(h.ieee, bytes(32))
        right = await han.activate(h.ieee)  # the hash of the image the CHF holds for it
        await han.stop()
        return Scenario(
            radio,
            p,
            h,
            images,
            settled,
            results,
            {ieee: d.state.running_image for ieee, d in han.devices.items()},
            held,
            wrong,
            right,
            list(han.events),
            han.app.state.node_info.ieee,
            han.ncp.counters.snapshot() if han.ncp is not None else None,
        )

    return clock.run(main, virtual=True)


@pytest.fixture(scope="module")
def loopback_run() -> Scenario:
    return run_scenario("loopback")


@pytest.fixture(scope="module")
def ezsp_run() -> Scenario:
    return run_scenario("ezsp")


@pytest.fixture(params=["loopback", "ezsp"])
def scenario(request: pytest.FixtureRequest) -> Scenario:
    return request.getfixturevalue(f"{request.param}_run")


def signature(event: Event, coordinator: t.EUI64) -> tuple[Any, ...]:
    """(device, event type, its fields) without what depends on the clock or on which chip is the coordinator:
    the time fields, and the coordinator's EUI-64 (a stick has its own, the loopback radio takes the profile's)."""
    fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event) if f.name not in ("ieee", "at")}
    if isinstance(event, server_events.UpgradeEndResponseSent):
        upgrade = fields.pop("upgrade_time")
        current = fields.pop("current_time")
        fields["activation"] = "wait" if upgrade == UPGRADE_TIME_WAIT else "now" if upgrade == current else "later"
    if isinstance(event, device_events.ServerDiscovered):
        fields["server_ieee"] = fields["server_ieee"] == coordinator
    return (event.ieee, type(event).__qualname__, tuple(sorted(fields.items())))


def signatures(run: Scenario) -> set[tuple[Any, ...]]:
    return {signature(e, run.coordinator_ieee) for e in run.events if not isinstance(e, device_events.Progress)}


# -- the GB scenario on both radios ------------------------------------------------------------------------------


def test_ppmid_and_hcalcs_upgrade_byte_identically(scenario: Scenario) -> None:
    p, h = scenario.ppmid.ieee, scenario.hcalcs.ieee
    assert scenario.settled
    assert scenario.results == {p: "upgraded", h: "held"}
    assert scenario.running[p] == scenario.images[p].data
    assert scenario.held_before_activation == scenario.images[h].data


def test_hcalcs_waits_then_activates_by_hash_and_refuses_a_wrong_one(scenario: Scenario) -> None:
    h = scenario.hcalcs.ieee
    [told] = [e for e in scenario.events if isinstance(e, server_events.UpgradeEndResponseSent) and e.ieee == h]
    assert told.upgrade_time == UPGRADE_TIME_WAIT
    wrong = scenario.wrong_hash
    assert (wrong.accepted, wrong.response_code, wrong.firmware_version) == (False, ActivationResponse.HASH_MISMATCH, 1)
    assert int(wrong.response_code) == 2
    right = scenario.right_hash
    assert (right.response_code, right.firmware_version) == (ActivationResponse.SUCCESS, NEW)
    assert scenario.running[h] == scenario.images[h].data


def test_gb_outcome_events_carry_their_codes(scenario: Scenario) -> None:
    p, h = scenario.ppmid.ieee, scenario.hcalcs.ieee
    outcomes = {
        (e.ieee, e.response, e.alert_code) for e in scenario.events if isinstance(e, server_events.TransferOutcome)
    }
    assert outcomes == {
        (p, TransferResponse.SUCCESS, AlertCode.FIRMWARE_TRANSFER_SUCCESS),
        (h, TransferResponse.SUCCESS, AlertCode.FIRMWARE_TRANSFER_SUCCESS),
    }
    activated = {
        (e.ieee, e.new_version, e.success, e.alert_code)
        for e in scenario.events
        if isinstance(e, device_events.Activated)
    }
    # The PPMID reports its activation CS09-style (alert 0x8F8B); the HCALCS answers the Activate Firmware command.
    assert activated == {(p, NEW, True, AlertCode.FIRMWARE_VERSION), (h, NEW, True, None)}
    replies = [(e.response_code, e.version) for e in scenario.events if isinstance(e, device_events.ActivationOutcome)]
    assert replies == [(ActivationResponse.HASH_MISMATCH, 1), (ActivationResponse.SUCCESS, NEW)]


def test_bellows_and_loopback_give_the_same_outcomes_and_gb_events(loopback_run: Scenario, ezsp_run: Scenario) -> None:
    counters = ezsp_run.ncp_counters
    assert counters is not None and loopback_run.ncp_counters is None
    blocks = -(-len(ezsp_run.images[ezsp_run.ppmid.ieee].data) // 63)
    assert counters["commands"]["sendUnicast"] > 2 * blocks  # both downloads went through bellows and the NCP
    assert counters["callbacks"]["incomingMessageHandler"] > 2 * blocks
    ours, theirs = signatures(ezsp_run), signatures(loopback_run)
    assert ours == theirs
    kinds = {kind for _, kind, _ in ours}
    assert {"TransferStarted", "TransferOutcome", "UpgradeEndResponseSent", "Activated", "WaitingToUpgrade"} <= kinds


# -- the bellows path alone ---------------------------------------------------------------------------------------


async def upgrade_one(
    profile: DeviceProfile,
    *,
    size: int = 3072,
    ezsp_version: int = 13,
    seed: int = 0,
    started: Callable[[Han], None] | None = None,
    listener: Callable[[Han, Event], None] | None = None,
) -> tuple[Han, HeldImage]:
    """One device upgrading from the CHF on bellows and the virtual NCP; returns the stopped HAN."""
    held = held_image(profile, size=size)
    han = Han(
        load_chf(bundled("chf")), [profile], [held], HanOptions(radio="ezsp", ezsp_version=ezsp_version, seed=seed)
    )
    if listener is not None:
        han.add_listener(lambda event: listener(han, event))
    await han.start()
    if started is not None:
        started(han)
    try:
        assert await han.settle(SETTLE), han.summaries[profile.ieee]
    finally:
        await han.stop()
    return han, held


async def test_hours_on_the_virtual_clock_and_not_one_ash_retransmission() -> None:
    """The clock jumps 4 ms per hop between the frames of a transfer while bellows and the NCP wait, then hours
    at once; both ASH ends read the loop's clock, so every frame is acknowledged before a retransmission timer of
    either could ring, and the link needs no reconnect."""
    profile = ppmid()
    held = held_image(profile, size=3072)
    han = Han(load_chf(bundled("chf")), [profile], [held], HanOptions(radio="ezsp", seed=5))
    await han.start()
    await asyncio.sleep(6 * 3600)
    assert await han.settle(SETTLE)
    await han.stop()
    assert han.devices[profile.ieee].state.running_image == held.data
    assert han.clock.now() >= 6 * 3600
    assert han.ncp is not None
    counters = han.ncp.counters
    assert counters.ash_tx["DATA"] > 100 and counters.ash_rx["DATA"] > 100
    assert counters.ash_tx["retransmitted"] == 0  # the NCP never waited too long for an ACK
    assert counters.ash_rx["duplicate"] == 0  # nor did bellows
    assert counters.ash_tx["NAK"] == counters.ash_rx["NAK"] == 0
    assert han.chf.reconnects == 0


@pytest.mark.parametrize("version", [8, 14])
async def test_ppmid_upgrades_over_other_ezsp_versions(version: int) -> None:
    han, held = await upgrade_one(ppmid(), ezsp_version=version)
    device = han.devices[ppmid().ieee]
    assert han.summaries[device.ieee].result == "upgraded"
    assert device.state.running_image == held.data
    assert han.ncp is not None and han.ncp.ezsp_version == version
    assert han.ncp.counters.commands["sendUnicast"] > len(held.data) // 63


async def test_upgrade_survives_a_lossy_serial_link() -> None:
    def lossy(han: Han) -> None:
        # From the end of bellows' startup on: forming a network takes ~460 frames, and at these rates the ASH
        # retransmissions alone would outlast the 10 s connect timeout before the upgrade begins.
        assert han.ncp is not None
        faults = han.ncp.faults
        faults.drop_to_host = faults.drop_from_host = 0.05
        faults.corrupt_to_host = faults.corrupt_from_host = 0.01

    han, held = await upgrade_one(ppmid(), size=2048, seed=1, started=lossy)
    assert han.devices[ppmid().ieee].state.running_image == held.data
    link = han.ncp.counters  # type: ignore[union-attr]
    assert link.ash_tx["dropped"] > 0 and link.ash_rx["dropped"] > 0
    assert link.ash_tx["corrupted"] + link.ash_rx["corrupted"] > 0
    assert link.ash_tx["retransmitted"] > 0  # the NCP resent what the host never acknowledged


@pytest.mark.parametrize("kind", ["rstack", "error"])
async def test_ncp_reset_mid_transfer_reconnects_and_the_transfer_resumes(kind: str) -> None:
    profile = ppmid().replace(response_timeout=1.0)  # the device re-requests a block lost in the reset sooner
    reset_at: list[int] = []
    resets_before: list[int] = []

    def reset_past_half(han: Han, event: Event) -> None:
        if isinstance(event, device_events.Progress) and event.offset > event.size // 2 and not reset_at:
            assert han.ncp is not None
            reset_at.append(event.offset)
            resets_before.append(han.ncp.counters.ash_rx["RST"])
            han.ncp.inject_reset(kind)  # type: ignore[arg-type]

    han, held = await upgrade_one(profile, listener=reset_past_half)
    device = han.devices[profile.ieee]
    assert reset_at and reset_at[0] < held.size
    assert han.chf.reconnects == 1
    assert han.ncp is not None and han.ncp.counters.ash_rx["RST"] > resets_before[0]  # bellows reset the NCP again
    assert device.state.running_image == held.data
    # The same transfer went on from where it stood: one start, no abort, on both ends.
    mine = [e for e in han.events if e.ieee == profile.ieee]
    assert [e.offset for e in mine if isinstance(e, device_events.DownloadStarted)] == [0]
    assert [e.offset for e in mine if isinstance(e, server_events.TransferStarted)] == [0]
    assert not [e for e in mine if isinstance(e, device_events.DownloadAborted)]


async def test_a_failed_delivery_is_rerequested_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="emulator.radio.host")
    profile = ppmid().replace(response_timeout=1.0)
    requested: list[int] = []
    failed_at: list[int] = []

    def tap(packet: t.ZigbeePacket, _when: float) -> None:
        if packet.cluster_id == CLUSTER_ID and (block := decode_block_request(packet.data.serialize())) is not None:
            requested.append(block[4])

    def watch_air(han: Han) -> None:
        han.air.add_tap(tap)

    def fail_past_half(han: Han, event: Event) -> None:
        if isinstance(event, device_events.Progress) and event.offset > event.size // 2 and not failed_at:
            assert han.ncp is not None
            failed_at.append(event.offset)
            han.ncp.fail_next_sends(1)

    han, held = await upgrade_one(profile, started=watch_air, listener=fail_past_half)
    assert han.devices[profile.ieee].state.running_image == held.data
    assert han.ncp is not None and han.ncp.counters.air["delivery_failures_injected"] == 1
    assert any("delivery failed" in record.getMessage() for record in caplog.records)
    # The block whose response never left the NCP was asked for again (and only that one).
    repeated = [offset for offset in set(requested) if requested.count(offset) > 1]
    assert repeated == [failed_at[0]]


async def test_sent_returns_once_the_last_answer_has_left_the_stick() -> None:
    """What `ota-emu chf` waits for after the last outcome: the Upgrade End Response the server hands bellows as it
    reports the outcome is on the air when `sent` returns, well before the bound it was given."""
    loop = asyncio.get_running_loop()
    responses: list[float] = []  # when Upgrade End Responses went on the air
    # (responses on the air before, all sent, protocol seconds waited, responses on the air after)
    waited: list[tuple[int, bool, float, int]] = []
    waits: list[asyncio.Task[None]] = []

    def tap(packet: t.ZigbeePacket, when: float) -> None:
        data = packet.data.serialize()
        if packet.cluster_id == CLUSTER_ID and len(data) > 2 and data[0] & 0x08 and data[2] == 0x07:
            responses.append(when)

    async def wait_for_sends(han: Han) -> None:
        start, before = loop.time(), len(responses)
        done = await han.chf.app.sent(within=5.0)
        waited.append((before, done, loop.time() - start, len(responses)))

    def on_event(han: Han, event: Event) -> None:
        if isinstance(event, server_events.TransferOutcome):
            waits.append(loop.create_task(wait_for_sends(han)))

    await upgrade_one(ppmid(), started=lambda han: han.air.add_tap(tap), listener=on_event)
    await asyncio.gather(*waits)
    [(before, done, seconds, after)] = waited
    assert (before, done, after) == (0, True, 1) and seconds < 5.0


# -- the commands on the bellows path -----------------------------------------------------------------------------


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), prog_name="ota-emu")


def test_run_with_radio_ezsp_upgrades_through_bellows_on_virtual_time(tmp_path: Path) -> None:
    held = held_image(ppmid(), size=3072)
    path = tmp_path / "ppmid.ota"
    path.write_bytes(held.data)
    result = cli("run", "--radio", "ezsp", "--device", str(bundled("ppmid")), "--image", str(path), "--json")
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    [device] = outcome["devices"]
    assert (device["result"], device["offset"]) == ("upgraded", held.size)
    assert outcome["settled"] is True and outcome["protocol_time_s"] > 0


def test_conform_device_through_bellows_runs_on_virtual_time_unless_told(tmp_path: Path) -> None:
    report = tmp_path / "report"
    args = ("conform", "device", "--dut", "ppmid", "--radio", "ezsp", "--checks", "C-01,C-13")
    result = cli(*args, "--report-dir", str(report))
    assert result.exit_code == 0, result.output
    data = json.loads((report / "report.json").read_text())
    assert [r["verdict"] for r in data["results"]] == ["pass", "pass"]
    assert "bellows and a virtual EZSP NCP, virtual time" in data["description"]
    assert data["run"]["settings"]["real-time"] is False
