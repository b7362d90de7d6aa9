"""Smart Energy security on the EZSP path, in one process: the CHF on bellows' own app over the virtual NCP's
in-process serial link (virtual time: bellows, the NCP and the devices on one clock), a PPMID inside the NCP's air
joining with its install code, CBKE on the CHF's host with the key then stored in the NCP, and the OTA upgrade
APS-encrypted by the NCP's stack and by the device. (`test_ezsp_security_cli` runs the same over TCP between
processes, on real time.)

The witnesses we did not write: bellows (every EZSP command and callback), and tshark, which opens a capture of the
NCP's air — the very frames the NCP and the device secured — given the network key, the install-code key and the
CBKE key, and cannot open the OTA frames with the network key alone."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zigpy.types as t
from dissection import Frame, dissect, ota_rows, where
from test_han_security import needs_tshark

from conftest import sign_for_tests
from emulator import clock
from emulator.chf import events as server_events
from emulator.chf import ezsp_security
from emulator.chf.key_establishment import FrameDropped, KeyEstablished
from emulator.chf.node import ChfNode
from emulator.chf.se_credentials import credentials_for, issue_test_credentials
from emulator.chf.store import HeldImage, ImageStore
from emulator.clock import Clock
from emulator.device import security_events as sev
from emulator.device.device import EmulatedDevice
from emulator.errors import InputError
from emulator.gb.codes import TransferResponse
from emulator.ncp.devices import NcpDeviceSecurity
from emulator.ncp.security import TransportKeySent
from emulator.ncp.server import VirtualNcp
from emulator.ota.image import build_gb
from emulator.profiles import DeviceProfile, bundled, load_chf, load_device
from emulator.radio.air import Air
from emulator.radio.capture import CaptureKey, PcapWriter, parse_network_key, tshark_key_options
from emulator.radio.secure import SecuredApsFrame, unicast
from emulator.security import credentials as credential_files
from emulator.security.certs import CryptoSuite

# One worker runs the whole module under pytest-xdist, so its module-scoped fixtures are built once, not per worker.
pytestmark = [pytest.mark.xdist_group("test_ezsp_security"), pytest.mark.long]

NEW = 0x00000002
OTA = 0x0019
KEY_ESTABLISHMENT = 0x0800
SETTLE = 60.0
OUTSIDER = t.EUI64.convert("00:db:12:34:56:78:90:ee")
PLAIN = t.EUI64.convert("00:db:12:34:56:78:90:ef")  # a device without Smart Energy security


def image_for(profile: DeviceProfile, size: int = 1500) -> HeldImage:
    payload = random.Random(profile.image_type).randbytes(size)
    image = build_gb(profile.manufacturer_code, profile.image_type, NEW, payload=payload, hw_min=0x1111, hw_max=0x1211)
    image = sign_for_tests(image)
    return HeldImage(image, image.serialize(), frozenset([profile.ieee]))


@dataclass
class Run:
    ppmid: DeviceProfile
    held: HeldImage
    coordinator: t.EUI64
    events: list[object] = field(default_factory=list)
    installed: list[ezsp_security.LinkKeyInstalled] = field(default_factory=list)
    air_frames: list[t.ZigbeePacket] = field(default_factory=list)
    running: bytes | None = None
    ncp_key: bytes | None = None
    device_key: bytes | None = None
    capture_keys: list[CaptureKey] = field(default_factory=list)
    outsider_joined: bool = True
    block_size: int = 0
    injected_at: int = 0  # where the test's own frame in clear is in `air_frames`
    ncp_commands: dict[str, int] = field(default_factory=dict)
    cbke: str = ""


def start_devices(
    ncp: VirtualNcp, air: Air, profiles: list[DeviceProfile], listener: Callable[[object], None]
) -> tuple[list[EmulatedDevice], list[Any], list[asyncio.Task[None]]]:
    """The devices on the NCP's air at NWK 0x1001, 0x1002, ... joining (and retrying) as `ota-emu ncp` has them."""
    security = NcpDeviceSecurity(ncp.stack)
    devices, radios, joins = [], [], []
    for index, profile in enumerate(profiles):
        radio = security.radio(profile, air)
        device = EmulatedDevice(profile, radio, clock.Clock(), nwk=0x1001 + index, seed=index)
        security.attach(device, radio)
        device.add_listener(listener)
        devices.append(device)
        radios.append(radio)
        joins.append(asyncio.create_task(security.join(device, radio)))
    return devices, radios, joins


async def upgrade(version: int, pcap: Path, cbke: str = ezsp_security.HOST) -> Run:
    """The PPMID and an outsider (a device missing from the Device Log) on the NCP's air; the CHF serves the
    PPMID's image. Returns once the PPMID's transfer has its outcome. (One scenario from start to end, kept in one
    piece so that it reads in the order things happen.)"""
    air = Air(seed=version)
    chf = load_chf(bundled("chf"))
    ppmid = load_device(bundled("ppmid"))
    outsider = ppmid.replace(ieee=OUTSIDER)
    plain = ppmid.replace(ieee=PLAIN, security="none")
    held = image_for(ppmid)
    capture = PcapWriter(pcap, network_key=parse_network_key(chf.network_key), pan_id=chf.pan_id)
    capture.attach(air)
    air_frames: list[t.ZigbeePacket] = []
    air.add_tap(lambda packet, _when: air_frames.append(packet))
    async with VirtualNcp(air, ezsp_version=version, seed=version) as ncp:
        node = ChfNode(chf, ImageStore.from_profile(chf, [held]), clock.Clock())
        await node.start_ezsp(ncp.url or "", ezsp_extra=ezsp_security.bellows_config())
        run = Run(ppmid, held, node.app.state.node_info.ieee, air_frames=air_frames)
        done = asyncio.Event()

        def on_event(event: object) -> None:
            run.events.append(event)
            if isinstance(event, server_events.TransferOutcome):
                done.set()

        def on_transport_key(sent: TransportKeySent) -> None:
            capture.write_transport_key(
                0x0000, sent.nwk, sent.transport.command, sent.transport.link_key,
                label=f"install-code link key {sent.transport.joiner}",
            )  # fmt: skip

        ncp.stack.security_listeners.append(on_transport_key)
        log = ezsp_security.device_log_of(chf, [ppmid.ieee])
        security = await ezsp_security.start(node, log, on_event, cbke=cbke)
        security.notices.append(run.installed.append)
        node.server.add_listener(on_event)
        run.block_size = node.server.profile.max_block_size
        await ncp.wait_for_network()
        await security.permit(60)

        devices, radios, joins = start_devices(ncp, air, [ppmid, outsider, plain], on_event)
        try:
            async with asyncio.timeout(SETTLE):
                await done.wait()
            await asyncio.sleep(0.5)  # the Upgrade End Response on its way
            # A Query Next Image Request in clear from the PPMID, which shares a CBKE key with the CHF: dropped.
            query = bytes.fromhex("01 77 01 00 1d12 8400 01000000")
            run.injected_at = len(air_frames)
            air.send(unicast(0x1001, ppmid.endpoint, 0x0000, chf.endpoint, 0x0109, OTA, query))
            await asyncio.sleep(0.5)
        finally:
            run.outsider_joined = any(task.done() and not task.cancelled() for task in joins[1:])
            for task in joins:
                task.cancel()
            await asyncio.gather(*joins, return_exceptions=True)
            for device in devices:
                await device.stop()
            security.stop()
            await node.stop()
        run.running = devices[0].state.running_image
        key = radios[0].context.link_key(run.coordinator)
        run.device_key = None if key is None else key.key
        run.ncp_key = ncp.stack.link_key_for(ppmid.ieee)
        run.ncp_commands = dict(ncp.counters.commands)
        run.cbke = cbke
    capture.close()
    for notice in run.installed:
        capture.set_link_key(notice.coordinator, notice.device, notice.key, label=f"CBKE link key {notice.device}")
    run.capture_keys = capture.keys()
    return run


@pytest.fixture(scope="module", params=[(8, "host"), (13, "host"), (14, "host"), (8, "ncp"), (14, "ncp")], ids=str)
def se_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Path]:
    version, cbke = request.param
    pcap = tmp_path_factory.mktemp(f"ezsp-se-{version}-{cbke}") / "air.pcap"
    return clock.run(lambda: upgrade(version, pcap, cbke), virtual=True), pcap


def of_type(run: Run, kind: type) -> list:
    return [e for e in run.events if isinstance(e, kind)]


def test_install_code_join_host_cbke_and_an_aps_encrypted_upgrade_through_bellows(se_run: tuple[Run, Path]) -> None:
    run, _ = se_run
    ppmid = run.ppmid.ieee
    [outcome] = of_type(run, server_events.TransferOutcome)
    assert (outcome.ieee, outcome.response) == (ppmid, TransferResponse.SUCCESS)
    assert run.running == run.held.data
    # Joined with its install code, under the NCP's trust centre.
    assert [(e.ieee, e.trust_centre) for e in of_type(run, sev.Admitted)] == [(ppmid, run.coordinator)]
    # CBKE on the CHF's host, both ends agree, and the key is in the NCP's key table.
    [server_side] = of_type(run, KeyEstablished)
    [device_side] = of_type(run, sev.KeyEstablished)
    assert (server_side.ieee, server_side.suite) == (ppmid, 2)
    assert (device_side.partner, device_side.suite) == (run.coordinator, 2)
    [installed] = run.installed
    assert installed.device == ppmid and installed.key == run.device_key == run.ncp_key
    # With --cbke ncp the NCP's library did the cryptography (and stored the key); on the host, the NCP only
    # stored the key it was given.
    library = ("generateCbkeKeys283k1", "calculateSmacs283k1", "clearTemporaryDataMaybeStoreLinkKey283k1")
    stored = "addOrUpdateKeyTableEntry" if "addOrUpdateKeyTableEntry" in run.ncp_commands else "importLinkKey"
    if run.cbke == "ncp":
        assert [run.ncp_commands.get(name) for name in library] == [1, 1, 1]
        assert stored not in run.ncp_commands
    else:
        assert not any(name in run.ncp_commands for name in library)
        assert run.ncp_commands[stored] == 1
    # From the end of key establishment on, every OTA unicast between them went on the air APS-secured, in both
    # directions. (Before it, zigpy's interview read the OTA client's CurrentFileVersion in clear: the device,
    # not ready for application traffic yet, ignored it.)
    established = max(i for i, p in enumerate(run.air_frames) if p.cluster_id == KEY_ESTABLISHMENT)
    transfer = run.air_frames[established : run.injected_at]
    ota = [p for p in transfer if p.cluster_id == OTA and p.dst.addr_mode == t.AddrMode.NWK]
    assert len(ota) > 2 * len(run.held.data) // run.block_size
    assert [p for p in ota if not isinstance(p.data, SecuredApsFrame)] == []
    assert {p.src.address for p in ota} == {0x0000, 0x1001}
    assert not of_type(run, sev.FrameDropped)
    # The CHF's host applies the Smart Energy rule to what the NCP hands it: the one OTA frame sent in clear
    # after key establishment (injected on the air) was dropped and reported.
    assert [(e.ieee, e.cluster_id, e.reason) for e in of_type(run, FrameDropped)] == [
        (ppmid, OTA, "frame without APS encryption")
    ]
    # The blocks were sized to fit an APS-encrypted frame.
    assert run.block_size == 82 - 17 - 17


def test_devices_missing_from_the_device_log_or_without_security_never_get_the_network_key(
    se_run: tuple[Run, Path],
) -> None:
    run, _ = se_run
    assert not run.outsider_joined
    refused = {(e.ieee, e.reason) for e in of_type(run, sev.NotAdmitted)}
    assert refused == {
        (OUTSIDER, "the trust centre holds no key for it (install code not given)"),
        (PLAIN, "the trust centre does not take the well-known key (security none)"),
    }
    assert not [p for p in run.air_frames if p.src.address in (0x1002, 0x1003)]


@needs_tshark
def test_tshark_opens_the_ncp_air_with_the_keys_and_not_without(se_run: tuple[Run, Path]) -> None:
    run, pcap = se_run
    options = tshark_key_options(run.capture_keys)
    labels = [key.label for key in run.capture_keys]
    assert labels[0] == "network key" and labels[1].startswith("install-code link key")
    assert labels[2] == f"CBKE link key {run.ppmid.ieee}"
    frames = dissect(pcap, options)  # one tshark run answers every question below (tests/dissection.py)
    assert where(frames, Frame.troubled) == []
    # The Transport-Key the NCP's trust centre sent opens under the install-code key and carries the network key.
    [row] = where(frames, lambda frame: frame.equals("zbee_aps.cmd.id", 0x05), "zbee_aps.cmd.key")
    assert bytes.fromhex(row[0].replace(":", "")) == run.capture_keys[0].key
    block_responses = where(
        frames,
        lambda frame: frame.equals("zbee_zcl_general.ota.cmd.srv_tx.id", 0x05),
        "zbee_zcl_general.ota.file.offset",
    )
    offsets = [int(offset) for [offset] in block_responses]
    assert offsets[0] == 0 and offsets == sorted(offsets) and offsets[-1] + run.block_size >= len(run.held.data)
    secured = where(
        frames,
        lambda frame: frame.equals("zbee_aps.security", 1) and frame.carries("zbee_zcl_general.ota.cmd.srv_tx.id"),
    )
    assert len(secured) >= len(offsets)
    frames = dissect(pcap, tshark_key_options(run.capture_keys[:1]))
    # With the network key alone, the only OTA command that opens is the Query Next Image Request injected in
    # clear (the one the CHF's host dropped); every APS-secured one stays closed.
    assert ota_rows(frames) == [["0x01", "", ""]]
    # Key Establishment travels with NWK security only.
    key_establishment = ("zbee_zcl_se.ke.cmd.srv_rx.id", "zbee_zcl_se.ke.cmd.srv_tx.id")
    assert len(where(frames, lambda frame: any(frame.carries(field) for field in key_establishment))) == 6


def test_a_credentials_file_for_another_eui64_is_a_one_line_error(tmp_path: Path) -> None:
    """CBKE partners check the certificate's subject: a CHF whose file names another EUI-64 is told so at once."""
    other = t.EUI64.convert("00:0d:6f:00:00:00:00:01")
    [credentials] = issue_test_credentials(other, (CryptoSuite.SUITE_1,)).values()
    path = tmp_path / "chf.cbke.json"
    path.write_text(credential_files.device_text(credentials))
    coordinator = t.EUI64.convert("00:0d:6f:00:00:00:00:02")
    with pytest.raises(InputError) as raised:
        credentials_for(coordinator, "1", str(path), str(tmp_path / "chf.toml"), "CHF profile")
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"CHF profile cbke_credentials {path}")
    assert "00:0D:6F:00:00:00:00:01" in message and "expected 00:0D:6F:00:00:00:00:02" in message
    issued = credentials_for(coordinator, "both", None, "<built-in>", "CHF profile")
    assert {suite: c.certificate.subject for suite, c in issued.items()} == {
        CryptoSuite.SUITE_2: bytes(coordinator)[::-1],
        CryptoSuite.SUITE_1: bytes(coordinator)[::-1],
    }


@pytest.mark.virtual_time
async def test_cbke_ncp_on_a_stick_without_the_cbke_library_is_a_one_line_error() -> None:
    """`ota-emu chf --cbke ncp` on a firmware built without the CBKE library (the virtual NCP can be one): its
    certificate commands answer LIBRARY_NOT_PRESENT, and the CHF says so in one line before opening joining."""
    chf = load_chf(bundled("chf"))
    async with VirtualNcp(Air(seed=4), seed=4, cbke_library=False) as ncp:
        node = ChfNode(chf, ImageStore.from_profile(chf, []), Clock())
        await node.start_ezsp(ncp.url or "", ezsp_extra=ezsp_security.bellows_config())
        try:
            with pytest.raises(InputError) as raised:
                await ezsp_security.start(node, {}, cbke=ezsp_security.NCP)
        finally:
            await node.stop()
    message = str(raised.value)
    assert "\n" not in message and message.startswith("--cbke ncp: the NCP has no CBKE certificate")
    assert "use --cbke host" in message
    assert ncp.counters.commands["getCertificate"] == ncp.counters.commands["getCertificate283k1"] == 1
