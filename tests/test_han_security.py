"""Smart Energy security end to end in process: install-code admission with the network key in an APS
Transport-Key, CBKE over the Key Establishment cluster (suites 1 and 2), then APS-encrypted OTA with the CBKE link
key; read back by tshark and zigpy-cli, which we did not write."""

from __future__ import annotations

import asyncio
import json
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import zigpy.types as t
from click.testing import CliRunner
from dissection import Frame, dissect, ota_rows, where, zigpy_reconstruct

from conftest import TEST_KEYS, assert_one_line_error, held_image
from emulator import clock
from emulator.chf import key_establishment as chf_ke
from emulator.chf.store import HeldImage
from emulator.cli import main
from emulator.device import events as device_events
from emulator.device import security_events as sev
from emulator.han.network import Han, HanOptions
from emulator.han.security import attach_capture, install_code_of
from emulator.profiles import ChfProfile, DeviceLogEntry, DeviceProfile, bundled, load_chf, load_device
from emulator.radio.capture import CaptureKey, PcapWriter, parse_network_key, tshark_key_options
from emulator.radio.secure import SecuredApsFrame
from emulator.security.ca import CertificateAuthority
from emulator.security.certs import CryptoSuite
from emulator.security.credentials import device_text
from emulator.security.keystore import KeyOrigin

DAY = 86400.0
OTA = 0x0019
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (apt: tshark)")
OTA_FIELDS = (
    "-Y", "zbee_zcl_general.ota.cmd.srv_tx.id == 0x05", "-T", "fields", "-e", "zbee_zcl_general.ota.file.offset",
)  # fmt: skip


def se_ppmid(**changes: object) -> DeviceProfile:
    return load_device(bundled("ppmid")).replace(security="se", **changes)


def se_chf(**changes: object) -> ChfProfile:
    return load_chf(bundled("chf")).replace(security="se", **changes)


@dataclass
class Run:
    han: Han
    tapped: list[t.ZigbeePacket]
    capture: PcapWriter | None
    images: list[HeldImage]


def run(chf: ChfProfile, devices: list[DeviceProfile], pcap: Path | None = None, after=None) -> Run:
    images = [held_image(d, size=2000) for d in devices]
    han = Han(chf, devices, images, HanOptions())
    tapped: list[t.ZigbeePacket] = []
    han.air.add_tap(lambda packet, _: tapped.append(packet))
    capture = None
    if pcap is not None:
        capture = PcapWriter(pcap, network_key=parse_network_key(chf.network_key), pan_id=chf.pan_id)
        capture.attach(han.air)
        attach_capture(han.security, capture)

    async def main() -> None:
        await han.start()
        await han.settle(2 * DAY)
        if after is not None:
            await after(han)
        await han.stop()

    try:
        clock.run(main, virtual=True)
    finally:
        if capture is not None:
            capture.close()
    return Run(han, tapped, capture, images)


@pytest.mark.parametrize("suite", ["2", "1"])
def test_install_code_join_cbke_and_aps_encrypted_ota_upgrade(suite: str) -> None:
    ppmid = se_ppmid(cbke_suite=suite)
    result = run(se_chf(), [ppmid])
    han = result.han
    summary = han.summaries[ppmid.ieee]
    assert (summary.result, summary.version) == ("upgraded", 2)
    assert (summary.joined, summary.cbke_suite, summary.link_key) == ("install code", int(suite), "CBKE")
    # Both ends hold the same CBKE key, and it is not the install-code key they started from.
    chf_key = han.security.chf_context.link_key(ppmid.ieee)
    device_key = han.security.device_contexts[ppmid.ieee].link_key(han.chf_profile.ieee)
    assert chf_key is not None and device_key is not None and chf_key == device_key
    assert chf_key.origin == KeyOrigin.CBKE and chf_key.key != install_code_of(ppmid).key
    assert any(isinstance(e, chf_ke.KeyEstablished) and e.suite == int(suite) for e in han.events)
    # Every OTA unicast on the air went APS-encrypted; the only clear OTA frames are broadcasts.
    ota = [p for p in result.tapped if p.cluster_id == OTA]
    unicast = [p for p in ota if p.dst.addr_mode == t.AddrMode.NWK and p.dst.address < 0xFFF8]
    assert len(unicast) > 40 and all(isinstance(p.data, SecuredApsFrame) for p in unicast)
    # Key Establishment travelled with NWK security only: six commands, in clear at the APS layer.
    ke = [p for p in result.tapped if p.cluster_id == 0x0800 and p.data.serialize()[0] & 0x03 == 0x01]
    assert len(ke) == 6 and not any(isinstance(p.data, SecuredApsFrame) for p in ke)
    assert not [e for e in han.events if isinstance(e, sev.FrameDropped | chf_ke.FrameDropped)]


def test_a_device_with_another_install_code_is_not_admitted() -> None:
    ppmid = se_ppmid(install_code="83FED3407A939723A5C639B26916D505C3B5")
    hcalcs = load_device(bundled("hcalcs")).replace(security="se")
    log = (
        DeviceLogEntry(ppmid.ieee, "000102030405060708090A0B0C0D0E0F"),
        DeviceLogEntry(hcalcs.ieee, install_code_of(hcalcs).code.hex()),
    )
    han = run(se_chf(device_log=log), [ppmid, hcalcs]).han
    summary = han.summaries[ppmid.ieee]
    assert summary.result == "not-joined" and "Transport-Key not opened with its install code" in summary.reason
    assert han.air.node(summary.nwk) is None and summary.joined == ""
    assert not any(isinstance(e, sev.KeyEstablished | device_events.QuerySent) and e.ieee == ppmid.ieee
                   for e in han.events)  # fmt: skip
    # The device in the Device Log with its own code joins, establishes a key and gets its image.
    assert han.summaries[hcalcs.ieee].result == "held" and han.summaries[hcalcs.ieee].cbke_suite == 2


def test_a_device_missing_from_the_device_log_gets_no_network_key() -> None:
    ppmid = se_ppmid()
    other = DeviceLogEntry(t.EUI64.convert("00:11:22:33:44:55:66:77"), "000102030405060708090A0B0C0D0E0F")
    summary = run(se_chf(device_log=(other,)), [ppmid]).han.summaries[ppmid.ieee]
    assert (summary.result, summary.reason) == ("not-joined", "not in the CHF's Device Log")


def test_a_chf_certificate_from_an_unknown_issuer_fails_cbke(tmp_path: Path) -> None:
    chf = se_chf()
    foreign = CertificateAuthority.generate(CryptoSuite.SUITE_2, issuer=b"FOREIGN!")
    path = tmp_path / "chf-cbke.json"
    path.write_text(device_text(foreign.issue(bytes(chf.ieee)[::-1])))
    ppmid = se_ppmid()
    han = run(chf.replace(cbke_credentials=str(path)), [ppmid]).han
    summary = han.summaries[ppmid.ieee]
    assert (summary.result, summary.reason) == ("failed", "CBKE failed: UNKNOWN_ISSUER")
    assert summary.joined == "install code" and summary.link_key == "install code"
    [failed] = [e for e in han.events if isinstance(e, sev.KeyEstablishmentFailed)]
    assert failed.status == "UNKNOWN_ISSUER"
    [server] = [e for e in han.events if isinstance(e, chf_ke.KeyEstablishmentFailed)]
    assert server.status == "UNKNOWN_ISSUER" and b"FOREIGN!".hex().upper() in server.reason
    # The device left before its OTA client started.
    assert not any(isinstance(e, device_events.QuerySent) for e in han.events)
    assert han.air.node(summary.nwk) is None


def test_an_unencrypted_ota_command_to_a_device_with_a_link_key_is_dropped_and_reported() -> None:
    ppmid = se_ppmid()
    new_events: list[object] = []

    async def send_in_clear(han: Han) -> None:
        notify = bytes([0x19, 0x42, 0x00, 0x00, 0x64])  # Image Notify, payload type 0, jitter 100
        packet = t.ZigbeePacket(
            src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(0x0000)), src_ep=1,
            dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(han.summaries[ppmid.ieee].nwk)), dst_ep=1,
            tsn=0x42, profile_id=0x0109, cluster_id=OTA, data=t.SerializableBytes(notify),
            tx_options=t.TransmitOptions.ACK, radius=0,
        )  # fmt: skip
        before = len(han.events)
        han.air.send(packet)  # around the CHF's APS layer, as a rogue or broken sender would
        await asyncio.sleep(1.0)
        new_events.extend(han.events[before:])

    run(se_chf(), [ppmid], after=send_in_clear)
    [dropped] = [e for e in new_events if isinstance(e, sev.FrameDropped)]
    assert (dropped.cluster_id, dropped.command_id, dropped.reason) == (OTA, 0x00, "frame without APS encryption")
    assert not any(isinstance(e, device_events.NotifyReceived) for e in new_events)


def test_device_security_without_an_se_chf_fails_cbke_for_want_of_a_server() -> None:
    ppmid = se_ppmid()
    han = run(load_chf(bundled("chf")).replace(security="none"), [ppmid]).han
    summary = han.summaries[ppmid.ieee]
    assert (summary.result, summary.reason) == ("failed", "CBKE failed: NO_SERVER")


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Path, HeldImage]:
    pcap = tmp_path_factory.mktemp("se") / "se.pcap"
    ppmid = se_ppmid()
    result = run(se_chf(), [ppmid], pcap=pcap)
    assert result.han.summaries[ppmid.ieee].result == "upgraded"
    return result, pcap, result.images[0]


def tshark(pcap: Path, options: list[str], *args: str) -> list[list[str]]:
    command = ["tshark", "-r", str(pcap), *options, *args]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line.split("\t") for line in done.stdout.splitlines()]


@needs_tshark
def test_tshark_opens_the_capture_with_the_network_and_link_keys_only(captured: tuple[Run, Path, HeldImage]) -> None:
    result, pcap, _ = captured
    assert result.capture is not None
    options = result.capture.tshark_options()
    known = result.capture.keys()
    labels = [key.label for key in known]
    assert labels[0] == "network key" and any(label.startswith("CBKE link key") for label in labels)
    frames = dissect(pcap, options)  # one tshark run answers every question below (tests/dissection.py)
    assert where(frames, Frame.troubled) == []
    # The Transport-Key opens under the install-code key and carries the network key.
    [row] = where(frames, lambda frame: frame.equals("zbee_aps.cmd.id", 0x05), "zbee_aps.cmd.key")
    assert bytes.fromhex(row[0].replace(":", "")) == parse_network_key(result.han.chf_profile.network_key)
    block_responses = where(
        frames,
        lambda frame: frame.equals("zbee_zcl_general.ota.cmd.srv_tx.id", 0x05),
        "zbee_zcl_general.ota.file.offset",
    )
    offsets = [int(offset) for [offset] in block_responses]
    assert offsets[0] == 0 and offsets == sorted(offsets) and len(offsets) == len(set(offsets)) > 30
    # The APS-secured frames are the OTA unicasts, each with the data key.
    secured = where(
        frames, lambda frame: frame.equals("zbee_aps.security", 1) and frame.equals("zbee_aps.cluster", OTA)
    )
    assert len(secured) == sum(
        1 for p in result.tapped if p.cluster_id == OTA and isinstance(p.data, SecuredApsFrame)
    )  # fmt: skip
    network_only = tshark_key_options([CaptureKey(parse_network_key(result.han.chf_profile.network_key), "net")])
    frames = dissect(pcap, network_only)
    assert ota_rows(frames) == []
    # ...while ZDO and Key Establishment (NWK security only) still open with the network key alone.
    key_establishment = ("zbee_zcl_se.ke.cmd.srv_rx.id", "zbee_zcl_se.ke.cmd.srv_tx.id")
    assert len(where(frames, lambda frame: any(frame.carries(field) for field in key_establishment))) == 6


@needs_tshark
def test_zigpy_rebuilds_the_image_from_the_capture_given_the_keys(
    captured: tuple[Run, Path, HeldImage], tmp_path: Path
) -> None:
    result, pcap, held = captured
    assert result.capture is not None

    def reconstruct(output: Path, keys: list[bytes]) -> list[Path]:
        return zigpy_reconstruct(pcap, output, [key.hex(":") for key in keys])

    known = result.capture.keys()
    keys = [key.key for key in known]
    [rebuilt] = reconstruct(tmp_path / "all", keys)
    assert rebuilt.read_bytes() == held.data
    assert reconstruct(tmp_path / "network-only", keys[:1]) == []


def _profiles(tmp_path: Path, device_extra: str = "", chf_extra: str = "") -> tuple[Path, Path, Path]:
    ppmid = load_device(bundled("ppmid"))
    device = tmp_path / "ppmid.toml"
    # The copy lives in tmp_path, so its signer (relative to the profile) is named by its absolute path.
    text = bundled("ppmid").read_text().replace('"keys/', f'"{TEST_KEYS.resolve().as_posix()}/')
    device.write_text(text.replace("[device]\n", f'[device]\nsecurity = "se"\n{device_extra}'))
    chf = tmp_path / "chf.toml"
    chf.write_text(bundled("chf").read_text().replace("[chf]\n", '[chf]\nsecurity = "se"\n') + chf_extra)
    image = tmp_path / "ppmid.ota"
    image.write_bytes(held_image(ppmid, size=2000).data)
    return chf, device, image


@needs_tshark
def test_ota_emu_run_writes_the_keys_file_and_prints_the_tshark_command(tmp_path: Path) -> None:
    chf, device, image = _profiles(tmp_path)
    pcap = tmp_path / "run.pcap"
    args = ["run", "--chf", str(chf), "--device", str(device), "--image", str(image), "--pcap", str(pcap), "--json"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.stdout)["devices"]
    assert (entry["result"], entry["joined"], entry["cbke_suite"], entry["link_key"]) == (
        "upgraded", "install code", 2, "CBKE",
    )  # fmt: skip
    keys = pcap.with_name("run.pcap.keys")
    assert keys.stat().st_mode & 0o777 == 0o600 and len(keys.read_text().splitlines()) == 4  # header + 3 keys
    command = result.stderr.strip().splitlines()[-1]
    assert command.startswith("tshark -r ")
    done = subprocess.run(
        [*shlex.split(command), "-Y", "zbee_zcl_general.ota.cmd.srv_tx.id == 0x05"],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    blocks = -(-len(image.read_bytes()) // 63)
    assert len(done.stdout.splitlines()) == blocks  # every Image Block Response opened


def test_ota_emu_run_shows_devices_that_were_not_admitted(tmp_path: Path) -> None:
    log = '\n[[device_log]]\nieee = "00:DB:12:34:56:78:90:A4"\ninstall_code = "000102030405060708090A0B0C0D0E0F"\n'
    chf, device, image = _profiles(tmp_path, chf_extra=log)
    args = ["run", "--chf", str(chf), "--device", str(device), "--image", str(image)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 1
    assert "not-joined" in result.stdout and "Transport-Key not opened" in result.stdout


def test_bad_security_keys_in_profiles_are_one_line_errors(tmp_path: Path) -> None:
    chf, device, image = _profiles(tmp_path, device_extra='install_code = "0011"\n')
    result = CliRunner().invoke(main, ["run", "--chf", str(chf), "--device", str(device), "--image", str(image)])
    assert_one_line_error(result, "key 'device.install_code'", "expected 6, 8, 12 or 16 bytes")
    chf, device, image = _profiles(tmp_path, chf_extra="[[device_log]]\nieee = 1\n")
    result = CliRunner().invoke(main, ["run", "--chf", str(chf), "--device", str(device), "--image", str(image)])
    assert_one_line_error(result, "device_log[0]")
    chf, device, image = _profiles(tmp_path, device_extra='cbke_credentials = "missing.json"\n')
    result = CliRunner().invoke(main, ["run", "--chf", str(chf), "--device", str(device), "--image", str(image)])
    assert_one_line_error(result, "cbke_credentials", "missing.json")
