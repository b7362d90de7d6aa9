"""Captures of the virtual HAN: a real in-process upgrade written as 802.15.4 + NWK (+ CCM*) + APS (+ CCM*)
frames, read back by tshark (with and without the network and link keys) and scapy, and rebuilt into the served
image by zigpy-cli."""

from __future__ import annotations

import random
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import zigpy.types as t
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from dissection import Frame, dissect, ota_rows, where, zigpy_reconstruct
from zigpy.util import convert_install_code

from conftest import held_image
from emulator import clock
from emulator.errors import InputError
from emulator.han.network import Han, HanOptions
from emulator.ota import frames
from emulator.profiles import bundled, load_chf, load_device
from emulator.radio.capture import (
    CaptureError,
    CaptureKey,
    FrameEncoder,
    PcapWriter,
    parse_network_key,
    tshark_key_options,
)
from emulator.security.aps import ApplicationLinkKeyTransport, NetworkKeyTransport, TrustCenterLinkKeyTransport
from emulator.security.keystore import requires_aps_encryption

# One worker runs the whole module under pytest-xdist, so its module-scoped fixtures are built once, not per worker.
pytestmark = pytest.mark.xdist_group("test_capture")

START = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
# Not one of the keys zigpy-cli tries by itself, so only --add-network-key can open this capture.
OTHER_KEY = bytes.fromhex("8f3a55c2d1e07b96a4f10c3e5d7b2a19")
OTA = 0x0019

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (apt: tshark)")


@dataclass
class Upgrade:
    encrypted: Path
    plain: Path
    other_key: Path
    key: bytes
    image: bytes
    tapped: list[tuple[t.ZigbeePacket, float]]
    written: int
    origin: float
    ieees: dict[int, t.EUI64]


def _run_upgrade(directory: Path) -> Upgrade:
    # A HAN without Smart Energy security, so the capture meets APS frames in clear and applies (or not) APS
    # encryption itself; captures of an SE HAN's own secured frames are in test_han_security.py.
    ppmid = load_device(bundled("ppmid")).replace(security="none")
    chf = load_chf(bundled("chf")).replace(security="none")
    held = held_image(ppmid, payload=random.Random(3).randbytes(2000))
    key = parse_network_key(chf.network_key)
    paths = {name: directory / f"{name}.pcap" for name in ("encrypted", "plain", "other")}
    tapped: list[tuple[t.ZigbeePacket, float]] = []

    async def main() -> tuple[int, float]:
        han = Han(chf, [ppmid], [held], HanOptions(start_utc=START))
        await han.start()
        origin = han.clock.loop_time_at(START)
        writers = [
            PcapWriter(paths["encrypted"], network_key=key, pan_id=chf.pan_id, clock=han.clock),
            PcapWriter(paths["plain"], network_key=None, pan_id=chf.pan_id, clock=han.clock),
            PcapWriter(paths["other"], network_key=OTHER_KEY, pan_id=chf.pan_id, clock=han.clock),
        ]
        for writer in writers:
            writer.attach(han.air)
        han.air.add_tap(lambda packet, at: tapped.append((packet, at)))
        assert await han.settle(86400)
        await han.stop()
        for writer in writers:
            writer.close()
        assert han.devices[ppmid.ieee].state.running_image == held.data
        assert {w.frames for w in writers} == {len(tapped)}
        return writers[0].frames, origin

    written, origin = clock.run(main, virtual=True)
    ieees = {0x0000: chf.ieee, 0x1001: ppmid.ieee}
    return Upgrade(paths["encrypted"], paths["plain"], paths["other"], key, held.data, tapped, written, origin, ieees)


@pytest.fixture(scope="module")
def upgrade(tmp_path_factory: pytest.TempPathFactory) -> Upgrade:
    return _run_upgrade(tmp_path_factory.mktemp("capture"))


def key_options(key: bytes | None) -> list[str]:
    return [] if key is None else ["-o", f'uat:zigbee_pc_keys:"{key.hex(":")}","Normal","net"']


def tshark(pcap: Path, *args: str, key: bytes | None = None) -> list[list[str]]:
    """One tshark run over `pcap` with `args`, given `key` as the network key (for captures read once)."""
    command = ["tshark", "-r", str(pcap), *key_options(key), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    return [line.split("\t") for line in done.stdout.splitlines()]


def dissected(pcap: Path, key: bytes | None = None) -> tuple[Frame, ...]:
    """The capture as tshark dissects it, given `key` as the network key (one tshark run per capture and key)."""
    return dissect(pcap, key_options(key))


def served_blocks(upgrade: Upgrade) -> list[int]:
    """File offsets of the successful Image Block Responses the CHF put on the air, decoded from the tap."""
    offsets = []
    for packet, _ in upgrade.tapped:
        if packet.cluster_id != OTA or packet.src.address != 0x0000:
            continue
        frame = frames.decode(packet.data.serialize())
        if frame.name == "image_block_response" and frame.command.status == frames.Status.SUCCESS:
            offsets.append(frame.command.file_offset)
    return offsets


OTA_COMMANDS = "zbee_zcl_general.ota.cmd.srv_rx.id || zbee_zcl_general.ota.cmd.srv_tx.id"
OTA_FIELDS = (
    "-Y", OTA_COMMANDS, "-T", "fields",
    "-e", "zbee_zcl_general.ota.cmd.srv_rx.id", "-e", "zbee_zcl_general.ota.cmd.srv_tx.id",
    "-e", "zbee_zcl_general.ota.file.offset",
)  # fmt: skip


def ota_commands(upgrade: Upgrade) -> list[tuple[str, str]]:
    """(client-to-server id, server-to-client id) of every OTA cluster command on the air, from the tap."""
    commands = []
    for packet, _ in upgrade.tapped:
        data = packet.data.serialize()
        if packet.cluster_id == OTA and data[0] & 0x03 == 0x01:
            command_id = f"0x{data[2]:02x}"
            commands.append(("", command_id) if data[0] & 0x08 else (command_id, ""))
    return commands


def all_frames(frame: Frame) -> bool:
    return True


def block_offsets(rows: list[list[str]]) -> list[int]:
    return [int(offset) for _, to_client, offset in rows if to_client == "0x05"]


@needs_tshark
def test_encrypted_capture_decodes_every_ota_frame_with_the_network_key(upgrade: Upgrade) -> None:
    frames = dissected(upgrade.encrypted, key=upgrade.key)
    assert where(frames, Frame.troubled) == []
    rows = where(frames, all_frames, "wpan.fcs_ok", "zbee_nwk.security")
    assert len(rows) == upgrade.written == len(upgrade.tapped)
    assert {tuple(r) for r in rows} == {("1", "1")}

    ota = ota_rows(frames)
    assert [(to_server, to_client) for to_server, to_client, _ in ota] == ota_commands(upgrade)
    blocks = served_blocks(upgrade)
    assert len(blocks) > 30
    assert block_offsets(ota) == blocks
    # Every frame the capture holds is a ZCL or ZDP frame tshark could open.
    zcl_or_zdp = where(frames, lambda frame: frame.has("zbee_zcl") or frame.has("zbee_zdp"), "frame.number")
    assert len(zcl_or_zdp) == upgrade.written


@needs_tshark
def test_encrypted_capture_stays_closed_without_the_key(upgrade: Upgrade) -> None:
    frames = dissected(upgrade.encrypted)
    assert where(frames, lambda frame: frame.has("zbee_zcl") or frame.has("zbee_zdp")) == []
    assert len(where(frames, lambda frame: frame.equals("zbee_nwk.security", 1))) == upgrade.written
    assert where(dissected(upgrade.encrypted, key=OTHER_KEY), lambda frame: frame.has("zbee_zcl")) == []


@needs_tshark
def test_unencrypted_capture_decodes(upgrade: Upgrade) -> None:
    frames = dissected(upgrade.plain)
    assert where(frames, Frame.troubled) == []
    assert where(frames, lambda frame: frame.equals("zbee_nwk.security", 1)) == []
    ota = ota_rows(frames)
    assert [(to_server, to_client) for to_server, to_client, _ in ota] == ota_commands(upgrade)
    assert block_offsets(ota) == served_blocks(upgrade)


@needs_tshark
def test_timestamps_are_protocol_time_on_the_runs_utc(upgrade: Upgrade) -> None:
    rows = where(dissected(upgrade.plain), all_frames, "frame.time_epoch")
    expected = [START.timestamp() + (at - upgrade.origin) for _, at in upgrade.tapped]
    assert len(rows) == len(expected)
    for (stamp,), want in zip(rows, expected, strict=True):
        assert abs(float(stamp) - want) < 2e-6


@needs_tshark
def test_addresses_and_counters_on_the_air(upgrade: Upgrade) -> None:
    rows = where(
        dissected(upgrade.plain),
        all_frames,
        "wpan.dst16", "wpan.src16", "wpan.dst_pan", "wpan.seq_no",
        "zbee_nwk.dst", "zbee_nwk.src", "zbee_nwk.seqno",
        "zbee_aps.cluster", "zbee_aps.zdp_cluster", "zbee_aps.profile",
        "zbee_aps.dst", "zbee_aps.src",
    )  # fmt: skip
    seen: dict[str, int] = {}
    for row, (packet, _) in zip(rows, upgrade.tapped, strict=True):
        mac_dst, mac_src, pan, mac_seq, nwk_dst, nwk_src, nwk_seq, cluster, zdp_cluster, profile, dst_ep, src_ep = row
        assert int(pan, 16) == 0x1A62
        assert int(nwk_src, 16) == packet.src.address == int(mac_src, 16)
        broadcast = packet.dst.addr_mode == t.AddrMode.Broadcast
        assert int(mac_dst, 16) == (0xFFFF if broadcast else int(packet.dst.address))
        assert int(nwk_dst, 16) == int(packet.dst.address)
        assert (int(cluster or zdp_cluster, 16), int(profile, 16)) == (packet.cluster_id, packet.profile_id)
        assert (int(dst_ep), int(src_ep)) == (packet.dst_ep, packet.src_ep)
        # Each sender counts its own MAC and NWK sequence numbers up from 0.
        count = seen.get(nwk_src, 0)
        assert int(mac_seq) == int(nwk_seq) == count % 256
        seen[nwk_src] = count + 1


@needs_tshark
def test_zigpy_rebuilds_the_served_image_byte_identical(upgrade: Upgrade, tmp_path: Path) -> None:
    def reconstruct(output: Path, *keys: str) -> list[Path]:
        return zigpy_reconstruct(upgrade.other_key, output, keys)

    [rebuilt] = reconstruct(tmp_path / "with-key", OTHER_KEY.hex(":"))
    assert "_partial" not in rebuilt.name and "_unk_size" not in rebuilt.name
    assert rebuilt.read_bytes() == upgrade.image
    assert reconstruct(tmp_path / "without-key") == []


def test_scapy_dissects_the_same_layers(upgrade: Upgrade, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second, independent reading of every frame: scapy's 802.15.4 and Zigbee dissectors."""
    # scapy is imported by the two tests that read with it, not by every test worker at collection (half a second)
    from scapy.config import conf as scapy_conf
    from scapy.layers.dot15d4 import Dot15d4Data, Dot15d4FCS
    from scapy.layers.zigbee import ZigbeeAppDataPayload, ZigbeeNWK, ZigbeeSecurityHeader
    from scapy.utils import rdpcap

    monkeypatch.setattr(scapy_conf, "dot15d4_protocol", "zigbee")
    plain, secured = rdpcap(str(upgrade.plain)), rdpcap(str(upgrade.encrypted))
    assert len(plain) == len(secured) == len(upgrade.tapped)
    frame_counters: dict[int, int] = {}
    for plain_record, secured_record, (packet, _) in zip(plain, secured, upgrade.tapped, strict=True):
        mac = Dot15d4FCS(bytes(plain_record))
        src = packet.src.address
        assert (mac.fcf_frametype, mac.fcf_panidcompress, mac[Dot15d4Data].src_addr) == (1, 1, src)
        nwk = mac[ZigbeeNWK]
        assert (nwk.frametype, nwk.proto_version, nwk.source, nwk.flags.security) == (0, 2, src, False)
        aps = mac[ZigbeeAppDataPayload]
        assert (aps.cluster, aps.profile, aps.dst_endpoint, aps.src_endpoint) == (
            packet.cluster_id,
            packet.profile_id,
            packet.dst_ep,
            packet.src_ep,
        )
        assert bytes(plain_record)[-2 - len(packet.data.serialize()) : -2] == packet.data.serialize()

        security = Dot15d4FCS(bytes(secured_record))[ZigbeeSecurityHeader]
        assert (security.key_type, security.extended_nonce, security.nwk_seclevel) == (1, 1, 0)
        assert security.source == int.from_bytes(bytes(upgrade.ieees[src]), "little")
        assert security.fc == frame_counters.get(src, 0)
        frame_counters[src] = security.fc + 1


# -- frame layout, byte-exact ------------------------------------------------------------------------------


def nwk(address: int) -> t.AddrModeAddress:
    return t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=address)


def ota_packet(src: int, dst: t.AddrModeAddress, data: bytes, **extra: object) -> t.ZigbeePacket:
    fields = {
        "src": nwk(src), "src_ep": 1, "dst": dst, "dst_ep": 1, "tsn": 7, "profile_id": 0x0109, "cluster_id": OTA,
        "data": t.SerializableBytes(data), "tx_options": t.TransmitOptions.ACK, "radius": 0,
    }  # fmt: skip
    fields.update(extra)
    return t.ZigbeePacket(**fields)


def crc16_kermit(data: bytes) -> bytes:
    """802.15.4 FCS (ITU-T CRC-16, reflected, initial value 0), as the standard defines it."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


ZCL = bytes.fromhex("190705001d12840002000000400000000401020304")


def test_unsecured_unicast_and_broadcast_frames_byte_exact() -> None:
    encoder = FrameEncoder(pan_id=0x1A62, network_key=None)
    first = encoder.encode(ota_packet(0x0000, nwk(0x1001), ZCL))
    body = (
        bytes.fromhex("6188 00 621a 0110 0000")  # MAC: data, ack request, PAN ID compression, short/short; seq 0
        + bytes.fromhex("4800 0110 0000 1e 00")  # NWK: data, v2, discover route; dst, src, radius 30, seq 0
        + bytes.fromhex("40 01 1900 0901 01 00")  # APS: data, unicast, ack request; ep 1, OTA, SE, ep 1, counter 0
        + ZCL
    )
    assert first == body + crc16_kermit(body)

    broadcast = t.AddrModeAddress(addr_mode=t.AddrMode.Broadcast, address=0xFFFD)
    second = encoder.encode(ota_packet(0x0000, broadcast, ZCL, tx_options=t.TransmitOptions.NONE, radius=5))
    body = (
        bytes.fromhex("4188 01 621a ffff 0000")  # no ack request, MAC broadcast; seq 1
        + bytes.fromhex("0800 fdff 0000 05 01")  # route discovery suppressed; radius 5, seq 1
        + bytes.fromhex("08 01 1900 0901 01 01")  # APS broadcast delivery; counter 1
        + ZCL
    )
    assert second == body + crc16_kermit(body)

    # Another sender keeps its own counters.
    other = encoder.encode(ota_packet(0x1001, nwk(0x0000), ZCL))
    assert other[2] == 0 and other[16] == 0


def test_secured_frame_is_ccm_star_level_5_with_the_senders_ieee() -> None:
    key = bytes(range(16))
    ieee = t.EUI64.convert("00:db:12:34:56:78:90:a4")
    encoder = FrameEncoder(pan_id=0x1A62, network_key=key)
    encoder.add_node(0x1001, ieee)
    frames_out = [encoder.encode(ota_packet(0x1001, nwk(0x0000), ZCL)) for _ in range(2)]
    for counter, frame in enumerate(frames_out):
        assert frame[-2:] == crc16_kermit(frame[:-2])
        header = frame[9:17]
        assert header == bytes.fromhex(f"4802 0000 0110 1e {counter:02x}")  # security flag set
        aux = frame[17:31]
        # Level bits sent as 0; key id 1 (network key); extended nonce; frame counter; source IEEE; key seq 0.
        assert aux == bytes([0x28]) + counter.to_bytes(4, "little") + bytes(ieee) + b"\x00"
        sealed = frame[31:-2]
        nonce = bytes(ieee) + counter.to_bytes(4, "little") + b"\x2d"
        authenticated = header + b"\x2d" + aux[1:]
        aps = AESCCM(key, tag_length=4).decrypt(nonce, sealed, authenticated)
        assert aps == bytes.fromhex(f"40 01 1900 0901 01 {counter:02x}") + ZCL


def test_unknown_sender_gets_a_stable_stand_in_ieee() -> None:
    encoder = FrameEncoder(pan_id=0x1A62, network_key=bytes(16))
    frame = encoder.encode(ota_packet(0x2002, nwk(0x0000), ZCL))
    assert frame[22:30] == bytes.fromhex("0220ffffffffffff")
    encoder.add_resolver(lambda address: t.EUI64.convert("11:22:33:44:55:66:77:88") if address == 0x3003 else None)
    frame = encoder.encode(ota_packet(0x3003, nwk(0x0000), ZCL))
    assert frame[22:30] == bytes(t.EUI64.convert("11:22:33:44:55:66:77:88"))


# -- the file ----------------------------------------------------------------------------------------------


def pcap_records(path: Path) -> list[tuple[int, int, bytes]]:
    data = path.read_bytes()
    assert data[:4] == bytes.fromhex("d4c3b2a1") and int.from_bytes(data[20:24], "little") == 195
    records, position = [], 24
    while position < len(data):
        seconds, micros, length = (int.from_bytes(data[position + i : position + i + 4], "little") for i in (0, 4, 8))
        records.append((seconds, micros, data[position + 16 : position + 16 + length]))
        position += 16 + length
    return records


def test_capture_appears_only_when_closed(tmp_path: Path) -> None:
    target = tmp_path / "run.pcap"
    writer = PcapWriter(target, network_key=None, pan_id=0x1A62)
    writer.write(ota_packet(0x0000, nwk(0x1001), ZCL), 10.0)
    writer.write(ota_packet(0x1001, nwk(0x0000), ZCL), 12.5)
    assert not target.exists()
    [temporary] = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert writer.close() == target and not temporary.exists()
    (s1, u1, f1), (s2, u2, f2) = pcap_records(target)
    # Without a clock the first frame takes the wall-clock UTC; the next follows by loop time.
    assert (s2 * 1_000_000 + u2) - (s1 * 1_000_000 + u1) == 2_500_000
    assert f1.endswith(ZCL + crc16_kermit(f1[:-2])) and f2[5:9] == bytes.fromhex("00000110")
    with pytest.raises(ValueError, match="closed"):
        writer.write(ota_packet(0x0000, nwk(0x1001), ZCL), 13.0)


def test_empty_and_discarded_captures(tmp_path: Path) -> None:
    with PcapWriter(tmp_path / "empty.pcap", network_key=None, pan_id=1) as writer:
        pass
    assert writer.frames == 0 and pcap_records(tmp_path / "empty.pcap") == []
    dropped = PcapWriter(tmp_path / "dropped.pcap", network_key=None, pan_id=1)
    dropped.write(ota_packet(0x0000, nwk(0x1001), ZCL), 1.0)
    dropped.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.pcap"]


def test_a_run_that_raises_keeps_the_frames_written_before_it(tmp_path: Path) -> None:
    target = tmp_path / "failed.pcap"
    with pytest.raises(RuntimeError), PcapWriter(target, network_key=None, pan_id=1) as writer:
        writer.write(ota_packet(0x0000, nwk(0x1001), ZCL), 1.0)
        raise RuntimeError("the run failed")
    assert len(pcap_records(target)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["failed.pcap"]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: PcapWriter(d / "x.pcap", network_key=bytes(15), pan_id=1), "network key: expected 16 bytes"),
        (lambda d: PcapWriter(d / "nowhere" / "x.pcap", network_key=None, pan_id=1), "does not exist"),
        (lambda d: parse_network_key("01:02:zz"), "network key '01:02:zz': expected 16 bytes of hex"),
    ],
)
def test_bad_capture_inputs_are_one_line_errors(tmp_path: Path, make, expected: str) -> None:
    with pytest.raises(CaptureError) as caught:
        make(tmp_path)
    assert isinstance(caught.value, InputError)
    message = str(caught.value)
    assert expected in message and "\n" not in message
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


# -- APS security: link-key encrypted OTA traffic and the join's Transport-Key ------------------------------

# Silicon Labs AN1089's install code (with its CRC C3 B5); zigpy turns it into the PPMID's join link key.
INSTALL_CODE = bytes.fromhex("83FED3407A939723A5C639B26916D505C3B5")
# Stands for the key CBKE leaves the CHF and the PPMID with.
CBKE_KEY = bytes.fromhex("3d9a0c71e85b24f6a1c3907e5d2b48f1")
SE_OTA = "zbee_zcl_general.ota"


@dataclass
class ApsCapture:
    path: Path
    plain_nwk: Path
    writer: PcapWriter
    install_key: bytes
    encrypted: list[bool]


def _se_rule(packet: t.ZigbeePacket) -> bool:
    data = packet.data.serialize()
    broadcast = packet.dst.addr_mode == t.AddrMode.Broadcast
    return requires_aps_encryption(packet.profile_id, packet.cluster_id, broadcast=broadcast, command_id=data[2])


def _write_aps_capture(upgrade: Upgrade, path: Path, network_key: bytes | None) -> tuple[PcapWriter, list[bool]]:
    """The upgrade's traffic written as an SE HAN carries it: the CHF sends the PPMID the network key under its
    install-code key, then every frame the SE rule names goes APS-encrypted with the CBKE link key (the packets
    say so with zigpy's APS_Encryption transmit option, as bellows marks them)."""
    chf, ppmid = upgrade.ieees[0x0000], upgrade.ieees[0x1001]
    install_key = bytes(convert_install_code(INSTALL_CODE))
    writer = PcapWriter(path, network_key=network_key, pan_id=0x1A62)
    for nwk_address, ieee in upgrade.ieees.items():
        writer.add_node(nwk_address, ieee)
    key = upgrade.key if network_key is None else network_key
    command = NetworkKeyTransport(key, 0, destination=bytes(ppmid), source=bytes(chf))
    writer.write_transport_key(0x0000, 0x1001, command, install_key, upgrade.tapped[0][1] - 1.0, label="ppmid ic")
    writer.set_link_key(chf, ppmid, CBKE_KEY, label="ppmid cbke")
    encrypted = []
    for packet, at in upgrade.tapped:
        secured = _se_rule(packet)
        options = packet.tx_options | t.TransmitOptions.APS_Encryption if secured else packet.tx_options
        writer.write(packet.replace(tx_options=options), at)
        encrypted.append(secured)
    writer.close()
    return writer, encrypted


@pytest.fixture(scope="module")
def aps_capture(upgrade: Upgrade, tmp_path_factory: pytest.TempPathFactory) -> ApsCapture:
    directory = tmp_path_factory.mktemp("aps")
    writer, encrypted = _write_aps_capture(upgrade, directory / "aps.pcap", upgrade.key)
    _, _ = _write_aps_capture(upgrade, directory / "aps-plain-nwk.pcap", None)
    install_key = bytes(convert_install_code(INSTALL_CODE))
    return ApsCapture(directory / "aps.pcap", directory / "aps-plain-nwk.pcap", writer, install_key, encrypted)


def test_the_se_rule_secures_the_ota_exchange(upgrade: Upgrade, aps_capture: ApsCapture) -> None:
    ota = [packet.cluster_id == OTA for packet, _ in upgrade.tapped]
    assert aps_capture.encrypted == ota and sum(ota) > 30
    assert aps_capture.writer.encoder.missing_link_keys == set()


@needs_tshark
def test_aps_encrypted_capture_decodes_with_network_and_link_keys(upgrade: Upgrade, aps_capture: ApsCapture) -> None:
    frames = dissect(aps_capture.path, aps_capture.writer.tshark_options())
    assert where(frames, Frame.troubled) == []
    rows = where(frames, all_frames, "zbee_aps.security", "zbee.sec.key_id")
    assert len(rows) == 1 + len(upgrade.tapped)
    # The Transport-Key: APS security with the key-transport key, NWK header in clear.
    assert rows[0] == ["1", "0x02"]
    for (aps_secured, key_ids), secured in zip(rows[1:], aps_capture.encrypted, strict=True):
        # NWK security (network key) always; APS security (data key) on the frames the SE rule names.
        assert (aps_secured, key_ids) == (("1", "0x01,0x00") if secured else ("0", "0x01"))
    ota = ota_rows(frames)
    assert [(to_server, to_client) for to_server, to_client, _ in ota] == ota_commands(upgrade)
    assert block_offsets(ota) == served_blocks(upgrade)


@needs_tshark
def test_without_the_link_key_the_ota_payload_stays_closed(upgrade: Upgrade, aps_capture: ApsCapture) -> None:
    frames = dissect(aps_capture.path, tshark_key_options([CaptureKey(upgrade.key, "net")]))
    assert where(frames, lambda frame: frame.has(SE_OTA)) == []
    # Everything else opens: the ZDO traffic and the APS headers of the secured frames.
    secured = where(frames, lambda frame: frame.equals("zbee_aps.security", 1) and frame.has("zbee_nwk"))
    assert len(secured) == 1 + sum(aps_capture.encrypted)
    zdp = where(frames, lambda frame: frame.has("zbee_zdp"))
    assert len(zdp) == sum(1 for packet, _ in upgrade.tapped if packet.profile_id == 0) > 0


@needs_tshark
def test_install_code_key_opens_the_transport_key_and_wireshark_learns_the_network_key(
    upgrade: Upgrade, aps_capture: ApsCapture
) -> None:
    install_only = tshark_key_options([CaptureKey(aps_capture.install_key, "ic")])
    frames = dissect(aps_capture.path, install_only)
    [row] = where(
        frames, lambda frame: frame.equals("zbee_aps.cmd.id", 0x05),
        "frame.number", "zbee_aps.cmd.key_type", "zbee_aps.cmd.key", "zbee_aps.cmd.seqno",
    )  # fmt: skip
    assert row[0] == "1" and row[1] == "0x01" and bytes.fromhex(row[2].replace(":", "")) == upgrade.key
    # With the network key learnt from frame 1, the NWK layer of every later frame opens: ZDO decodes...
    zdp = where(frames, lambda frame: frame.has("zbee_zdp"))
    assert len(zdp) == sum(1 for packet, _ in upgrade.tapped if packet.profile_id == 0) > 0
    # ...and OTA as soon as the CBKE link key is known too.
    with_link_key = install_only + tshark_key_options([CaptureKey(CBKE_KEY, "cbke")])
    assert block_offsets(ota_rows(dissect(aps_capture.path, with_link_key))) == served_blocks(upgrade)
    assert where(frames, lambda frame: frame.has(SE_OTA)) == []


@needs_tshark
def test_keys_file_beside_the_capture(aps_capture: ApsCapture, upgrade: Upgrade) -> None:
    path = aps_capture.writer.write_keys()
    assert path == aps_capture.path.with_name("aps.pcap.keys") and path.stat().st_mode & 0o777 == 0o600
    rows = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert rows == [
        f'"{upgrade.key.hex(":").upper()}","Normal","network key"',
        f'"{aps_capture.install_key.hex(":").upper()}","Normal","ppmid ic"',
        f'"{CBKE_KEY.hex(":").upper()}","Normal","ppmid cbke"',
    ]
    # The rows load into tshark as they stand (one UAT option holding them all, as zigpy-cli passes its keys).
    options = ["-o", "uat:zigbee_pc_keys:" + "\n".join(rows)]
    assert block_offsets(ota_rows(dissect(aps_capture.path, options))) == served_blocks(upgrade)


@needs_tshark
def test_zigpy_rebuilds_the_image_from_an_aps_encrypted_capture(
    upgrade: Upgrade, aps_capture: ApsCapture, tmp_path: Path
) -> None:
    """zigpy-cli passes every --add-network-key to tshark's key table, which tries each key for NWK and APS
    frames alike; so the link key goes in with the same option."""

    def reconstruct(output: Path, *keys: bytes) -> list[Path]:
        return zigpy_reconstruct(aps_capture.path, output, [key.hex(":") for key in keys])

    # (Without the link key tshark shows no OTA field at all: test_without_the_link_key_the_ota_payload_stays_closed.)
    [rebuilt] = reconstruct(tmp_path / "both", upgrade.key, CBKE_KEY)
    assert "_partial" not in rebuilt.name and rebuilt.read_bytes() == upgrade.image


@needs_tshark
def test_every_transport_key_type_opens_in_tshark(tmp_path: Path) -> None:
    """Network key and trust-center link key under the key-transport key (key id 2), an application link key
    under the key-load key (key id 3): Wireshark derives both from the one unhashed link key."""
    link_key = bytes(convert_install_code(INSTALL_CODE))
    writer = PcapWriter(tmp_path / "keys.pcap", network_key=None, pan_id=0x1A62)
    writer.add_node(0x0000, CHF_IEEE)
    writer.add_node(0x1001, PPMID_IEEE)
    commands: list[tuple[NetworkKeyTransport | TrustCenterLinkKeyTransport | ApplicationLinkKeyTransport, str, str]] = [
        (NetworkKeyTransport(bytes(range(16)), 5, bytes(PPMID_IEEE), bytes(CHF_IEEE)), "0x02", "0x01"),
        (TrustCenterLinkKeyTransport(CBKE_KEY, bytes(PPMID_IEEE), bytes(CHF_IEEE)), "0x02", "0x04"),
        (ApplicationLinkKeyTransport(bytes(range(16, 32)), bytes(CHF_IEEE), initiator=True), "0x03", "0x03"),
    ]
    for number, (command, _, _) in enumerate(commands):
        writer.write_transport_key(0x0000, 0x1001, command, link_key, float(number))
    writer.close()
    frames = dissect(writer.path, writer.tshark_options())
    rows = where(frames, all_frames, "zbee.sec.key_id", "zbee_aps.cmd.key_type", "zbee_aps.cmd.key")
    assert [(key_id, key_type, bytes.fromhex(key.replace(":", ""))) for key_id, key_type, key in rows] == [
        (key_id, key_type, command.key) for command, key_id, key_type in commands
    ]
    assert where(frames, Frame.troubled) == []
    assert where(dissect(writer.path), lambda frame: frame.carries("zbee_aps.cmd.key")) == []


def test_scapy_reads_the_aps_security_header(
    upgrade: Upgrade, aps_capture: ApsCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the NWK layer in clear, scapy's Zigbee dissector reaches the APS auxiliary header: key id 0 (data
    key), extended nonce with the sender's IEEE address, a per-sender frame counter."""
    from scapy.config import conf as scapy_conf
    from scapy.layers.dot15d4 import Dot15d4FCS
    from scapy.layers.zigbee import ZigbeeAppDataPayload, ZigbeeNWK, ZigbeeSecurityHeader
    from scapy.utils import rdpcap

    monkeypatch.setattr(scapy_conf, "dot15d4_protocol", "zigbee")
    records = rdpcap(str(aps_capture.plain_nwk))
    transport_key = Dot15d4FCS(bytes(records[0]))
    assert transport_key[ZigbeeNWK].flags.security is False
    security = transport_key[ZigbeeSecurityHeader]
    assert (security.key_type, security.extended_nonce, security.fc) == (2, 1, 0)
    assert security.source == int.from_bytes(bytes(upgrade.ieees[0x0000]), "little")
    counters: dict[int, int] = {0x0000: 1}
    for record, (packet, _), secured in zip(records[1:], upgrade.tapped, aps_capture.encrypted, strict=True):
        frame = Dot15d4FCS(bytes(record))
        src = packet.src.address
        if not secured:
            assert ZigbeeSecurityHeader not in frame
            continue
        aps = frame[ZigbeeAppDataPayload]
        assert (aps.cluster, aps.profile, aps.frame_control.security) == (OTA, 0x0109, True)
        security = frame[ZigbeeSecurityHeader]
        assert (security.key_type, security.extended_nonce, security.nwk_seclevel) == (0, 1, 0)
        assert security.source == int.from_bytes(bytes(upgrade.ieees[src]), "little")
        assert security.fc == counters.get(src, 0)
        counters[src] = security.fc + 1
        assert packet.data.serialize() not in bytes(record)


# -- APS security, byte-exact -------------------------------------------------------------------------------

CHF_IEEE = t.EUI64.convert("00:db:12:34:56:78:90:a2")
PPMID_IEEE = t.EUI64.convert("00:db:12:34:56:78:90:a4")


def _aps_encoder(network_key: bytes | None = None) -> FrameEncoder:
    encoder = FrameEncoder(pan_id=0x1A62, network_key=network_key, link_keys={(PPMID_IEEE, CHF_IEEE): CBKE_KEY})
    encoder.add_node(0x0000, CHF_IEEE)
    encoder.add_node(0x1001, PPMID_IEEE)
    return encoder


def test_aps_secured_frame_layout() -> None:
    encoder = _aps_encoder()
    aps_encrypted = ota_packet(0x0000, nwk(0x1001), ZCL, tx_options=t.TransmitOptions.APS_Encryption)
    for counter in range(2):
        frame = encoder.encode(aps_encrypted)
        assert frame[-2:] == crc16_kermit(frame[:-2])
        aps_header = frame[17:25]
        # Security bit set; no ack request (the packet did not ask for one).
        assert aps_header == bytes.fromhex(f"20 01 1900 0901 01 {counter:02x}")
        aux = frame[25:38]
        assert aux == bytes([0x20]) + counter.to_bytes(4, "little") + bytes(CHF_IEEE)
        nonce = bytes(CHF_IEEE) + counter.to_bytes(4, "little") + b"\x25"
        assert AESCCM(CBKE_KEY, tag_length=4).decrypt(nonce, frame[38:-2], aps_header + b"\x25" + aux[1:]) == ZCL


def test_aps_encryption_follows_the_argument_over_the_packet() -> None:
    encoder = _aps_encoder()
    plain = ota_packet(0x1001, nwk(0x0000), ZCL)
    assert encoder.encode(plain, aps_encrypted=True)[17] & 0x20
    marked = plain.replace(tx_options=t.TransmitOptions.ACK | t.TransmitOptions.APS_Encryption)
    assert encoder.encode(marked)[17] == 0x60  # ack request and security
    assert not encoder.encode(marked, aps_encrypted=False)[17] & 0x20
    # A broadcast is never APS-secured.
    broadcast = t.AddrModeAddress(addr_mode=t.AddrMode.Broadcast, address=0xFFFD)
    assert encoder.encode(marked.replace(dst=broadcast))[17] == 0x08
    # Frames addressed by IEEE find the pair too.
    by_ieee = t.AddrModeAddress(addr_mode=t.AddrMode.IEEE, address=CHF_IEEE)
    assert encoder.encode(marked.replace(dst=by_ieee))[17] == 0x60


def test_aps_encryption_without_a_link_key_is_recorded_and_written_in_clear() -> None:
    encoder = _aps_encoder()
    stranger = t.EUI64.convert("00:db:12:34:56:78:90:ff")
    encoder.add_node(0x2002, stranger)
    frame = encoder.encode(ota_packet(0x2002, nwk(0x0000), ZCL, tx_options=t.TransmitOptions.APS_Encryption))
    assert frame[17] == 0x00 and frame.endswith(ZCL + crc16_kermit(frame[:-2]))
    assert encoder.missing_link_keys == {frozenset({stranger, CHF_IEEE})}
    # Given the key while writing, the next frame is secured.
    encoder.set_link_key(CHF_IEEE, stranger, CBKE_KEY)
    assert encoder.encode(ota_packet(0x2002, nwk(0x0000), ZCL), aps_encrypted=True)[17] == 0x60


def test_transport_key_frame_carries_the_regression_vector() -> None:
    """The SE join's Transport-Key, as built in tests/test_security_aps.py, inside MAC and clear NWK headers."""
    tc, joiner = t.EUI64.convert("00:0D:6F:00:00:AA:AA:AA"), t.EUI64.convert("00:0D:6F:00:00:BB:BB:BB")
    install_key = bytes(convert_install_code(bytes.fromhex("83FED3407A939723A5C639B26916D505C3B5")))
    network_key = bytes.fromhex("00112233445566778899aabbccddeeff")
    encoder = FrameEncoder(pan_id=0x1A62, network_key=bytes(range(16)), link_keys={(tc, joiner): install_key})
    encoder.add_node(0x0000, tc)
    encoder.add_node(0x1001, joiner)
    # The trust center has sent one APS-secured frame (APS frame counter 0) and 16 frames in all (APS counter 0-15).
    encoder.encode(ota_packet(0x0000, nwk(0x1001), ZCL), aps_encrypted=True)
    for _ in range(15):
        encoder.encode(ota_packet(0x0000, nwk(0x1001), ZCL))
    command = NetworkKeyTransport(network_key, 0, bytes(joiner), bytes(tc))
    frame = encoder.encode_transport_key(0x0000, 0x1001, command, install_key)
    assert frame[9:17] == bytes.fromhex("4800 0110 0000 1e 10")  # NWK: no security flag
    assert frame[17:-2] == bytes.fromhex(
        "2110 30 01000000 aaaaaa00006f0d00"
        "4aa81e5a0f79152f6a5503a9427aa48a3c412571449e16a14d962d57f3a3b69538b484 01cdaa2d"
    )


def test_key_rows_and_tshark_options() -> None:
    keys = [CaptureKey(bytes(range(16)), "network key"), CaptureKey(CBKE_KEY, 'ppmid "cbke"')]
    assert tshark_key_options(keys) == [
        "-o", 'uat:zigbee_pc_keys:"00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F","Normal","network key"',
        "-o", 'uat:zigbee_pc_keys:"3D:9A:0C:71:E8:5B:24:F6:A1:C3:90:7E:5D:2B:48:F1","Normal","ppmid \'cbke\'"',
    ]  # fmt: skip


def test_bad_link_keys_and_unwritable_keys_file_are_one_line_errors(tmp_path: Path) -> None:
    writer = PcapWriter(tmp_path / "x.pcap", network_key=None, pan_id=1)
    with pytest.raises(CaptureError, match=r"link key for .*: expected 16 bytes, got 3"):
        writer.set_link_key(CHF_IEEE, PPMID_IEEE, b"abc")
    command = NetworkKeyTransport(bytes(16), 0, bytes(PPMID_IEEE), bytes(CHF_IEEE))
    with pytest.raises(CaptureError, match="Transport-Key link key: expected 16 bytes"):
        writer.write_transport_key(0, 1, command, b"short", 1.0)
    with pytest.raises(CaptureError, match=r"keys file .*nowhere.*cannot write") as caught:
        writer.write_keys(tmp_path / "nowhere" / "x.keys")
    assert "\n" not in str(caught.value)
    writer.discard()
    assert list(tmp_path.iterdir()) == []
