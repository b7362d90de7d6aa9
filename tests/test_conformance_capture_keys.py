"""A conformance run's capture comes with the keys that open it: `<pcap>.keys` beside the pcap (Wireshark
`zigbee_pc_keys` rows), named in the report, holding the network key and the keys of the Smart Energy sessions (the
join's install-code key, the CBKE link keys). tshark, given exactly those rows, reads every frame of the security
checks, the APS-encrypted OTA frames included; given the network key alone, it cannot read those."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from dissection import Frame, dissect, where

from emulator.conformance.device.bench import DeviceTarget, run_device_checks
from emulator.conformance.results import Report
from emulator.conformance.server.bench import run_server_checks
from emulator.profiles import bundled, load_device

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")

OTA = 0x0019
KE_IDS = ("zbee_zcl_se.ke.cmd.srv_rx.id", "zbee_zcl_se.ke.cmd.srv_tx.id")
OTA_IDS = ("zbee_zcl_general.ota.cmd.srv_rx.id", "zbee_zcl_general.ota.cmd.srv_tx.id")


def key_rows(report: Report) -> list[str]:
    """The rows of the report's keys file, which must sit beside its capture."""
    assert report.pcap is not None and report.pcap_keys == report.pcap + ".keys"
    text = Path(report.pcap_keys).read_text()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def options(rows: list[str]) -> list[str]:
    return [option for row in rows for option in ("-o", f"uat:zigbee_pc_keys:{row}")]


def secured_ota(frames: tuple[Frame, ...]) -> list[Frame]:
    return [f for f in frames if f.equals("zbee_aps.security", 1) and f.equals("zbee_aps.cluster", OTA)]


def assert_opens(report: Report) -> None:
    """Every frame reads with the keys file; the APS-encrypted OTA frames need more than the network key."""
    rows = key_rows(report)
    assert '"network key"' in rows[0] and any("CBKE link key" in row for row in rows)
    pcap = Path(report.pcap or "")
    frames = dissect(pcap, options(rows))
    assert where(frames, Frame.troubled) == []
    assert where(frames, lambda f: any(f.carries(field) for field in KE_IDS))  # CBKE is in the capture
    secured = secured_ota(frames)
    assert secured and all(f.has("zbee_zcl") for f in secured)  # every APS-encrypted OTA frame opens...
    assert any(any(f.carries(field) for field in OTA_IDS) for f in secured)  # ...OTA commands among them
    network_only = dissect(pcap, options(rows[:1]))
    unread = secured_ota(network_only)
    assert len(unread) == len(secured) and not any(f.has("zbee_zcl") for f in unread)


def test_the_device_bench_writes_the_keys_of_its_security_sessions(tmp_path: Path) -> None:
    pcap = tmp_path / "conform.pcap"
    report = run_device_checks(DeviceTarget(profile=load_device(bundled("ppmid"))), ["SE-02"], pcap=pcap)
    assert [r.verdict.value for r in report.results] == ["pass"]
    assert_opens(report)
    assert json.loads(json.dumps(report.as_dict()))["pcap_keys"] == str(pcap) + ".keys"
    assert Report.from_dict(report.as_dict()).pcap_keys == report.pcap_keys


def test_the_server_bench_writes_the_keys_of_its_probes(tmp_path: Path) -> None:
    pcap = tmp_path / "server.pcap"
    report = run_server_checks("ours", ["S-19"], pcap=pcap)
    assert [r.verdict.value for r in report.results] == ["pass"]
    assert_opens(report)
