"""`ota-emu device` on one virtual stick upgraded by the CHF on another stick of the same air: bellows at both ends
(the CHF through bellows' ControllerApplication, the device through bellows' EZSP layer). In one process the
sticks listen in process and the run is on virtual time; the tests with separate `ota-emu` processes reach the
sticks over TCP on real time.

Both ends have Smart Energy security, the bundled profiles' default: the device's stick joins with its install-code
key, the device runs CBKE with the CHF on its host, both hosts install the link key in their NCPs, and the OTA
traffic is APS-encrypted by the NCPs (one test keeps a network-key-only run on both ends).

The device's profiles here start querying within a second of joining (query_start_jitter = 1): the stick
announces itself as it joins, so the CHF's first Image Notify can come before the device has found the OTA
server, and the device then upgrades on its own first query, as a GB device does.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zigpy.types as zt
from click.testing import CliRunner, Result
from dissection import Frame, dissect, where
from test_capture import OTA_FIELDS, block_offsets, tshark
from test_cli_chf import pseudo_terminal
from test_ncp_joining import until

from conftest import TEST_IMAGE_KEY, assert_one_line_error
from emulator.chf import events as server_events
from emulator.chf import ezsp_security
from emulator.chf.key_establishment import FrameDropped, KeyEstablished
from emulator.chf.node import ChfNode
from emulator.chf.store import ImageStore, load_images
from emulator.cli import main
from emulator.cli.device import DeviceRun, run_device
from emulator.clock import Clock
from emulator.device.state import StateStore
from emulator.ncp.server import VirtualNcp
from emulator.ncp.state import NetworkState
from emulator.profiles import bundled, derived_install_code, load_chf, load_device
from emulator.radio import stick as stick_radio
from emulator.radio.air import Air
from emulator.radio.capture import PcapWriter, parse_network_key
from emulator.radio.stick import JoinPlan, Role
from emulator.security.install_code import InstallCode

PROFILES = Path(__file__).parent.parent / "profiles"
PAYLOAD = bytes(range(256)) * 8


def cli(*args: object) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], prog_name="ota-emu")


def quick_profile(tmp_path: Path, name: str, *extra: str) -> Path:
    """The bundled profile, querying within a second of joining; `extra` lines go into its [device] table."""
    text = (PROFILES / f"{name}.toml").read_text().replace("query_start_jitter = 300", "query_start_jitter = 1")
    text = text.replace("[device]\n", "[device]\n" + "".join(f"{line}\n" for line in extra))
    # The profile names its signers relative to itself (keys/test-image-signer.pub.pem): the test-only keys go
    # beside the copy, so it trusts what the bundled profile trusts.
    shutil.copytree(PROFILES / "keys", tmp_path / "keys", dirs_exist_ok=True)
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def build_image(tmp_path: Path, image_type: str, payload: bytes = PAYLOAD) -> Path:
    source = tmp_path / f"payload-{image_type}.bin"
    source.write_bytes(payload)
    unsigned, out = tmp_path / f"unsigned-{image_type}.ota", tmp_path / f"{image_type}.ota"
    result = cli(
        "image", "build", "--format", "gb", "--manufacturer", "0x121D", "--image-type", image_type,
        "--file-version", "2", "--hw-min", "0x1111", "--hw-max", "0x1211", "--payload", source, "-o", unsigned,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # Signed with the test-only key the bundled PPMID and HCALCS trust (profiles/keys/README.md).
    result = cli("image", "sign", "--key", TEST_IMAGE_KEY, unsigned, "-o", out)
    assert result.exit_code == 0, result.output
    return out


def block_request_offset(packet: zt.ZigbeePacket) -> list[int]:
    """[offset] of an OTA Image Block Request (OTA spec 11.13.6: ZCL header, field control, manufacturer code,
    image type, file version, then the file offset), else []."""
    data = packet.data.serialize()
    if packet.cluster_id != 0x0019 or len(data) < 16 or data[2] != 0x03 or data[0] & 0x08:
        return []
    return [int.from_bytes(data[12:16], "little")]


@dataclass
class Bench:
    """Two sticks on one air: the CHF on `chf_ncp` through bellows, `stick` waiting for a device."""

    air: Air
    chf_ncp: VirtualNcp
    stick: VirtualNcp
    node: ChfNode
    events: list[server_events.ServerEvent] = field(default_factory=list)
    received: list[zt.ZigbeePacket] = field(default_factory=list)  # what bellows handed the CHF's host
    guard: ezsp_security.EzspSmartEnergy | None = None  # the CHF's Smart Energy security

    def capture_air(self, path: Path) -> PcapWriter:
        """A capture of the air between the two sticks, as a sniffer would record it, given the network key and
        (as the CHF agrees them) the CBKE link keys."""
        chf = self.node.profile
        writer = PcapWriter(path, network_key=parse_network_key(chf.network_key), pan_id=chf.pan_id)
        writer.attach(self.air)
        if self.guard is not None:
            self.guard.notices.append(lambda n: writer.set_link_key(n.coordinator, n.device, n.key, label="CBKE"))
        return writer

    def outcomes(self) -> list[server_events.TransferOutcome]:
        return [e for e in self.events if isinstance(e, server_events.TransferOutcome)]

    def requested(self) -> list[int]:
        """Offsets of the device's Image Block Requests as the CHF's host got them (APS-decrypted by its NCP)."""
        return [offset for packet in self.received for offset in block_request_offset(packet)]

    @property
    def block(self) -> int:
        """The block size the CHF serves (smaller under APS encryption)."""
        return self.node.server.profile.max_block_size

    def of(self, kind: type[server_events.ServerEvent]) -> list[server_events.ServerEvent]:
        return [e for e in self.events if isinstance(e, kind)]


@contextlib.asynccontextmanager
async def bench(image: Path, *, security: str = "se") -> AsyncIterator[Bench]:
    """The CHF on one stick with the profile's Smart Energy security (its Device Log: the other stick's EUI-64 with
    the install code derived from it, as `ota-emu chf --target` makes it), or with the network key only."""
    air = Air(seed=9)
    async with VirtualNcp(air, seed=0) as chf_ncp, VirtualNcp(air, seed=1) as stick:
        target = stick.stack.ieee  # the device takes its stick's EUI-64
        chf = load_chf(bundled("chf")).replace(security=security)
        node = ChfNode(chf, ImageStore.from_profile(chf, load_images([image], device_ids=[target])), Clock())
        se = security == "se"
        await node.start_ezsp(chf_ncp.url or "", ezsp_extra=ezsp_security.bellows_config() if se else None)
        here = Bench(air, chf_ncp, stick, node)
        node.server.add_listener(here.events.append)
        node.app.add_tap(
            lambda packet, _: here.received.append(packet) if packet.src and packet.src.address != 0x0000 else None
        )
        if se:
            log = ezsp_security.device_log_of(chf, [target])
            here.guard = await ezsp_security.start(node, log, listener=here.events.append)
            await here.guard.permit(60)
        else:
            await node.app.permit(60)
        try:
            yield here
        finally:
            await node.stop()


@pytest.mark.parametrize(
    ("role", "security"), [(Role.END_DEVICE, "se"), (Role.ROUTER, "se"), (Role.END_DEVICE, "none")]
)
@pytest.mark.virtual_time
async def test_a_ppmid_on_a_stick_is_upgraded_by_the_chf_on_another_stick(
    tmp_path: Path, role: Role, security: str
) -> None:
    image = build_image(tmp_path, "0x0084")
    se = security == "se"
    async with bench(image, security=security) as b:
        sniffer = b.capture_air(tmp_path / "air.pcap")
        run = DeviceRun(
            port=b.stick.url or "",
            profile=load_device(quick_profile(tmp_path, "ppmid", f'security = "{security}"')),
            plan=JoinPlan(role, join_timeout=10),
            state_dir=tmp_path / "state",
            until=30,
            pcap=tmp_path / "device.pcap",
            quiet=True,
        )
        summary, stopped, _, joined = await run_device(run)
        await until(b.outcomes)
        sniffer.close()
    assert (stopped, summary.result, summary.version) == ("outcome", "upgraded", 2)
    assert summary.ieee == b.stick.stack.ieee and not joined.resumed
    assert b.stick.stack.node_type == role.node_type and b.stick.stack.router == (role == Role.ROUTER)
    assert (summary.offset, summary.size) == (image.stat().st_size, image.stat().st_size)
    [outcome] = b.outcomes()
    assert (outcome.ieee, int(outcome.response), int(outcome.alert_code)) == (joined.ieee, 0, 0x8F8A)  # CCS08
    # An APS-encrypted block carries less (the CHF sizes blocks for the APS security overhead).
    block = b.node.server.profile.max_block_size
    assert block == (48 if se else 63)
    # tshark reads the stick's capture: every Image Block Response the device received, in order.
    if shutil.which("tshark") is not None:
        served = block_offsets(tshark(tmp_path / "device.pcap", *OTA_FIELDS))
        assert served == list(range(0, image.stat().st_size, block))
    sends = b.stick.counters.commands["sendUnicast"]
    assert sends > image.stat().st_size // block  # every block request went through the stick
    # Security as the two NCPs saw it: the CBKE link key in both, every OTA frame APS-encrypted both ways.
    assert (summary.joined, summary.cbke_suite, summary.link_key) == (
        ("install code", 2, "CBKE") if se else ("", None, "")
    )
    assert [e.ieee for e in b.of(KeyEstablished)] == ([joined.ieee] if se else [])
    assert b.of(FrameDropped) == []
    ota_in = [p for p in b.received if p.cluster_id == 0x0019]
    assert ota_in and all(bool(p.tx_options & zt.TransmitOptions.APS_Encryption) == se for p in ota_in)
    # The stick's APS frame counter moves only for the frames it APS-encrypts: at least one per block request.
    secured = b.stick.stack.state.aps_frame_counter
    assert secured >= image.stat().st_size // block if se else secured == 0
    # tshark, given the network key and the CBKE key, reads the air between the sticks: once CBKE has ended every
    # OTA frame there is APS-secured (or, without SE, none is) and opens, and the Image Block Responses cover the
    # image in order. (Before it, the CHF's interview reads the OTA attributes in the clear; the device ignores
    # that, as no OTA frame is its to take before its link key.)
    if shutil.which("tshark") is not None:
        frames = dissect(tmp_path / "air.pcap", sniffer.tshark_options())
        assert where(frames, Frame.troubled) == []
        ke = [i for i, f in enumerate(frames) if f.carries("zbee_zcl_se.ke.cmd.srv_tx.id")]
        assert bool(ke) == se
        after = frames[ke[-1] + 1 :] if ke else frames
        ota = [f for f in after if f.equals("zbee_aps.cluster", 0x0019)]
        assert ota and all(f.equals("zbee_aps.security", 1) == se and f.has("zbee_zcl") for f in ota)
        responses = [f for f in ota if f.equals("zbee_zcl_general.ota.cmd.srv_tx.id", 0x05)]
        offsets = sorted({int(f["zbee_zcl_general.ota.file.offset"]) for f in responses})
        assert offsets == list(range(0, image.stat().st_size, block))


@pytest.mark.virtual_time
async def test_an_hcalcs_holds_its_image_then_activates_when_told(tmp_path: Path) -> None:
    image = build_image(tmp_path, "0x0085", PAYLOAD[:512])
    profile = load_device(quick_profile(tmp_path, "hcalcs", "poll_period = 0.1"))  # a sleepy device, polling fast
    async with bench(image) as b:
        common = {"port": b.stick.url or "", "profile": profile, "state_dir": tmp_path / "state", "quiet": True}
        plan = JoinPlan(Role.SLEEPY, join_timeout=10)
        held, stopped, _, first = await run_device(DeviceRun(plan=plan, until=30, **common))  # type: ignore[arg-type]
        assert (stopped, held.result, held.version) == ("outcome", "held", 1)
        # The same stick and state directory again, now with --activate: the stick resumes its network.
        done, stopped, _, again = await run_device(DeviceRun(plan=plan, until=30, activate=True, **common))  # type: ignore[arg-type]
    assert again.resumed and again.nwk == first.nwk
    assert (stopped, done.result, done.version) == ("outcome", "upgraded", 2)
    assert [int(o.response) for o in b.outcomes()] == [0]


@pytest.mark.virtual_time
async def test_sent_returns_once_the_frames_handed_to_the_stick_are_on_the_air(tmp_path: Path) -> None:
    """What `ota-emu device` waits for after its outcome: the frames the device has handed its radio are on the
    air when `sent` returns, well before the bound it was given."""
    async with bench(build_image(tmp_path, "0x0084", PAYLOAD[:64]), security="none") as b:
        radio = stick_radio.StickRadio(b.stick.url or "", JoinPlan(Role.END_DEVICE, join_timeout=10))
        endpoint = stick_radio.Endpoint(1, 0x0109, 0x0501, (0x0000,), (0x0019,), 0x121D)
        joined = await radio.open(endpoint)
        heard: list[zt.ZigbeePacket] = []
        b.air.add_tap(lambda packet, _: heard.append(packet) if packet.cluster_id == 0x0000 else None)
        for tsn in range(3):
            radio.send(
                zt.ZigbeePacket(
                    src=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=joined.nwk),
                    src_ep=1,
                    dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=0x0000),
                    dst_ep=1,
                    tsn=tsn,
                    profile_id=0x0109,
                    cluster_id=0x0000,
                    data=zt.SerializableBytes(bytes([0x18, tsn, 0x0A])),  # a ZCL Report Attributes, no records
                )
            )
        loop = asyncio.get_running_loop()
        start, before = loop.time(), len(heard)
        done = await radio.sent(within=5.0)
        seconds, after = loop.time() - start, len(heard)
        await radio.close()
    assert (before, done, after) == (0, True, 3) and seconds < 5.0


@pytest.mark.long
@pytest.mark.realtime
async def test_a_killed_device_process_resumes_its_download_at_its_offset(tmp_path: Path) -> None:
    image = build_image(tmp_path, "0x0084", bytes(range(256)) * 48)  # 12 KiB: the device saves at 8 KiB
    profile = quick_profile(tmp_path, "ppmid")
    state = tmp_path / "state"

    async def device() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "emulator", "device", "--port", b.stick.url or "", "--device", str(profile)),
            *("--state-dir", str(state), "--join-timeout", "10", "--until", "60", "--json"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async with bench(image) as b:
        first = await device()
        store = StateStore(state, b.stick.stack.ieee)
        try:
            # Killed once its state says it has 8 KiB (the blob is written before the JSON that points at it).
            await until(
                lambda: (
                    (saved := store.load()) is not None and saved.download is not None and saved.file_offset >= 8192
                ),
                within=40,
            )
        finally:
            first.send_signal(signal.SIGKILL)
            await first.wait()
        before_restart = len(b.requested())
        second = await device()
        async with asyncio.timeout(60):
            out, err = await second.communicate()
    assert second.returncode == 0, err.decode()
    assert b"Traceback" not in err
    requested = b.requested()
    killed_at, resumed_at = max(requested[:before_restart]), requested[before_restart]
    assert requested[0] == 0
    assert 8192 <= resumed_at <= killed_at + b.block  # on from the offset saved before the kill, not from 0
    assert [int(o.response) for o in b.outcomes()] == [0]
    report = json.loads(out)
    assert (report["device"]["result"], report["network"]["resumed"], report["security"]) == (
        "upgraded",
        True,
        "smart energy",
    )
    assert (report["device"]["cbke_suite"], report["device"]["link_key"]) == (2, "CBKE")  # CBKE again after restart


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--count", "2"], ["--count 2: an EZSP stick is one node", "one device"]),
        (["--port", "/dev/ttyUSB97"], ["/dev/ttyUSB97: no such serial port"]),
        (["--extended-pan-id", "zz"], ["--extended-pan-id"]),
        (["--pan-id", "0xFFFF"], ["--pan-id", "expected 0..0xFFFE", "got 0xFFFF"]),
        (["--pan-id", "0x1A6G"], ["--pan-id", "not a number"]),
    ],
)
def test_bad_input_is_one_line(args: list[str], fragments: list[str]) -> None:
    base = {"--port": "tcp://127.0.0.1:1", "--device": str(PROFILES / "ppmid.toml")}
    for name, value in zip(args[::2], args[1::2], strict=True):
        base[name] = value
    assert_one_line_error(cli("device", *[item for pair in base.items() for item in pair]), *fragments)


@pytest.mark.realtime
def test_no_open_network_within_the_join_timeout_is_one_line() -> None:
    async def serve() -> Result:
        air = Air(seed=3)
        async with VirtualNcp(air, seed=1) as stick:
            return await asyncio.to_thread(
                cli, "device", "--port", stick.url, "--device", PROFILES / "ppmid.toml", "--join-timeout", "1"
            )

    result = asyncio.run(serve())
    assert_one_line_error(result, "no network let the stick join within 1 s")


@pytest.mark.realtime
def test_a_trust_centre_without_the_install_code_is_one_line_naming_it(tmp_path: Path) -> None:
    """A Smart Energy device whose network's trust centre does not hold its install code (here a network-key-only
    CHF, which admits the well-known key) gets no network key: one line, naming the code the trust centre needs."""
    image = build_image(tmp_path, "0x0084", PAYLOAD[:64])

    async def serve() -> tuple[zt.EUI64, Result]:
        async with bench(image, security="none") as b:
            args = ("device", "--port", b.stick.url, "--device", PROFILES / "ppmid.toml", "--join-timeout", "1.5")
            return b.stick.stack.ieee, await asyncio.to_thread(cli, *args)

    ieee, result = asyncio.run(serve())
    code = InstallCode.parse(derived_install_code(ieee)).with_crc.hex().upper()
    assert_one_line_error(result, "ZIGBEE_NO_NETWORK_KEY_RECEIVED", f"the trust centre must hold install code {code}")


@pytest.mark.long
@pytest.mark.realtime
async def test_three_terminals_ncp_with_two_sticks_chf_on_one_device_on_the_other(tmp_path: Path) -> None:
    """The issue's own setup: `ota-emu ncp --listen A --listen B`, `ota-emu chf` on A, `ota-emu device` on B."""
    image = build_image(tmp_path, "0x0084")
    stick_eui64 = str(NetworkState.new(seed=1).ieee)  # the second stick of `ota-emu ncp --seed 0`
    ncp = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "emulator", "ncp", "--listen", "tcp://127.0.0.1:0", "--listen", "tcp://127.0.0.1:0"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        urls = []
        for _ in range(2):
            line = (await ncp.stdout.readline()).decode()  # type: ignore[union-attr]
            urls.append(line.rsplit(" ", 1)[-1].strip())
        # Both ends with the bundled profiles' Smart Energy security: the CHF admits the target by the install code
        # derived from its EUI-64, which is the one the device's stick joins with.
        chf = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "emulator", "chf", "--port", urls[0], "--image", str(image)),
            *("--target", stick_eui64, "--json"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        device = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "emulator", "device", "--port", urls[1]),
            *("--device", str(quick_profile(tmp_path, "ppmid")), "--join-timeout", "30", "--until", "60"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(90):
            device_out, device_err = await device.communicate()
            chf_out, chf_err = await chf.communicate()
    finally:
        ncp.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await ncp.communicate()
    assert device.returncode == 0, device_err.decode()
    assert chf.returncode == 0, chf_err.decode()
    assert b"Traceback" not in device_err + chf_err
    assert device_out.decode().startswith(f"PPMID {stick_eui64}: upgraded, runs 0x00000002 (was 0x00000001)")
    said = device_err.decode()
    assert f"Device PPMID {stick_eui64} joined PAN 0x1A62 on channel 15" in said
    assert f"Device {stick_eui64}: joined with its install-code key (install code " in said
    assert f"Device {stick_eui64}: CBKE suite 2 done with trust centre" in said
    report = json.loads(chf_out)
    [target] = report["devices"]
    assert target["cbke_suite"] == 2
    assert (target["ieee"], target["outcome"], target["response_code"], target["alert_code"]) == (
        stick_eui64,
        "success",
        0,
        "0x8F8A",
    )


@pytest.mark.virtual_time
async def test_a_stick_reset_mid_download_is_a_reconnect_and_the_download_goes_on(tmp_path: Path) -> None:
    image = build_image(tmp_path, "0x0084", bytes(range(256)) * 24)  # 6 KiB
    async with bench(image) as b:
        run = DeviceRun(
            port=b.stick.url or "",
            profile=load_device(quick_profile(tmp_path, "ppmid")),
            plan=JoinPlan(Role.END_DEVICE, join_timeout=10),
            until=60,
            quiet=True,
        )
        device_run = asyncio.create_task(run_device(run))
        await until(lambda: any(offset >= 2048 for offset in b.requested()), within=30)
        network_inits = b.stick.counters.commands["networkInit"]
        at_reset = len(b.requested())
        b.stick.inject_reset("rstack")  # the stick reboots on its own (watchdog) mid-download
        summary, stopped, _, _ = await device_run
    assert (stopped, summary.result, summary.version) == ("outcome", "upgraded", 2)
    assert b.stick.counters.commands["networkInit"] == network_inits + 1  # the host brought the stick back up
    assert min(b.requested()[at_reset:]) >= 2048 - b.block  # and the download went on from where it was
    assert [int(o.response) for o in b.outcomes()] == [0]


@pytest.mark.long
@pytest.mark.realtime
async def test_ctrl_c_saves_the_partial_download_and_exits_with_the_outcome_line(tmp_path: Path) -> None:
    image = build_image(tmp_path, "0x0084", bytes(range(256)) * 48)
    state = tmp_path / "state"
    async with bench(image) as b:
        device = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "emulator", "device", "--port", b.stick.url or ""),
            *("--device", str(quick_profile(tmp_path, "ppmid")), "--state-dir", str(state), "--until", "60"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await until(lambda: any(offset >= 2048 for offset in b.requested()), within=30)
        device.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            out, err = await device.communicate()
        saved = StateStore(state, b.stick.stack.ieee).load()
    assert device.returncode == 1, err.decode()
    assert b"Traceback" not in err
    assert "pending" in out.decode() and "stopped by signal" in out.decode()
    assert saved is not None and saved.download is not None and saved.file_offset >= 2048


def test_a_port_another_program_holds_is_busy() -> None:
    with pseudo_terminal() as path, open(path, "rb", buffering=0) as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what bellows, zigpy and serialx take on a port
        result = cli("device", "--port", path, "--device", PROFILES / "ppmid.toml")
    assert_one_line_error(result, path, "busy")


@pytest.mark.realtime
def test_a_port_where_nothing_speaks_ezsp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stick_radio, "CONNECT_TIMEOUT", 0.5)  # 10 s in use; the message is what is checked
    with pseudo_terminal() as path:
        result = cli("device", "--port", path, "--device", PROFILES / "ppmid.toml", "--baudrate", "460800")
    assert_one_line_error(result, path, "no EZSP answer within 0.5 s", "460800 baud", "Silicon Labs NCP")
