"""The device bench on a coordinator stick with Smart Energy security (`conform device --port ... --install-code`).

The DUT is an emulated PPMID inside a virtual NCP, as `ota-emu ncp --device` has it: with `security = "se"` it joins
only under its install-code key and runs CBKE with the trust centre before its OTA client starts. The bench's test
CHF is bellows on that NCP, in the same process and on virtual time. The witnesses we did not write: bellows (every
EZSP command), and tshark, which opens the bench's capture with the keys file written beside it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zigpy.types as t
from click.testing import CliRunner
from dissection import Frame, dissect, where
from test_cli_conform import NcpThread
from test_han_security import needs_tshark

from emulator import clock
from emulator.cli import main
from emulator.conformance.device.bench import DeviceTarget, check_device
from emulator.conformance.device.catalogue import CHECKS
from emulator.conformance.device.dut import DutSecurity
from emulator.conformance.device.testchf import TEST_CHF
from emulator.conformance.results import Report
from emulator.conformance.selection import select
from emulator.conformance.verdict import Verdict
from emulator.device import security_events as sev
from emulator.device.device import EmulatedDevice
from emulator.errors import InputError
from emulator.han.security import install_code_of
from emulator.ncp.devices import NcpDeviceSecurity
from emulator.ncp.server import VirtualNcp
from emulator.profiles import DeviceProfile, bundled, load_device
from emulator.radio.air import Air
from emulator.radio.capture import parse_network_key
from emulator.radio.secure import SecuredApsFrame
from emulator.security import credentials as credential_files
from emulator.security.ca import CertificateAuthority
from emulator.security.certs import CryptoSuite
from emulator.security.install_code import InstallCode

OTA = 0x0019
KEY_ESTABLISHMENT = 0x0800
QUICK = ["C-01", "C-04"]  # a unicast Image Notify and the query it draws: OTA frames both ways
PPMID = load_device(bundled("ppmid"))
WRONG_CODE = InstallCode(bytes.fromhex("0123456789abcdef0123456789abcdef"))


@dataclass
class Bench:
    """What a bench run left: the report, the bench's notices (stderr on the command line), and the NCP's side."""

    report: Report
    notices: list[str]
    coordinator: t.EUI64
    ncp_key: bytes | None
    device_key: bytes | None
    ota_on_air: list[t.ZigbeePacket] = field(default_factory=list)
    device_events: list[object] = field(default_factory=list)
    ncp_commands: dict[str, int] = field(default_factory=dict)

    def verdicts(self) -> dict[str, Verdict]:
        return {r.check.id: r.verdict for r in self.report.results}

    def reasons(self) -> set[str]:
        return {r.reason for r in self.report.results}


Security = DutSecurity | None | Callable[[t.EUI64], DutSecurity]  # given, or made for the stick's EUI-64


async def _bench(
    security: Security,
    *,
    profile: DeviceProfile = PPMID,
    pcap: Path | None = None,
    join: float = 30.0,
    checks: list[str] = QUICK,
) -> Bench:
    air = Air(seed=5)
    heard: list[t.ZigbeePacket] = []
    air.add_tap(lambda packet, _when: heard.append(packet) if packet.cluster_id in (OTA, KEY_ESTABLISHMENT) else None)
    events: list[object] = []
    async with VirtualNcp(air, seed=5) as ncp:
        devices = NcpDeviceSecurity(ncp.stack)
        radio = devices.radio(profile, air)
        device = EmulatedDevice(profile, radio, clock.Clock(), nwk=0x1001)
        devices.attach(device, radio)
        device.add_listener(events.append)

        async def power_on() -> None:
            await ncp.wait_for_joining()  # as a device is switched on once the bench says so
            await devices.join(device, radio)

        joining = asyncio.get_running_loop().create_task(power_on())
        if callable(security):
            security = security(ncp.stack.ieee)
        target = DeviceTarget(
            port=ncp.url, ieee=profile.ieee, kind="ppmid", join_timeout=join, radio="ezsp", security=security
        )
        notices: list[str] = []
        try:
            report = await check_device(target, select(checks, CHECKS), pcap=pcap, notice=notices.append)
        finally:
            joining.cancel()
            await asyncio.gather(joining, return_exceptions=True)
            await device.stop()
        key = radio.context.link_key(ncp.stack.ieee)
        return Bench(
            report,
            notices,
            ncp.stack.ieee,
            ncp.stack.link_key_for(profile.ieee),
            None if key is None else key.key,
            _ota_after_cbke(heard),
            events,
            dict(ncp.counters.commands),
        )


def _ota_after_cbke(heard: list[t.ZigbeePacket]) -> list[t.ZigbeePacket]:
    """The OTA unicasts on the air after the last Key Establishment frame (before it, zigpy's interview reads the
    OTA client's attributes in clear, which the device, not ready for application traffic yet, ignores)."""
    keyed = [i for i, p in enumerate(heard) if p.cluster_id == KEY_ESTABLISHMENT]
    after = heard[keyed[-1] + 1 :] if keyed else heard
    return [p for p in after if p.cluster_id == OTA and p.dst is not None and p.dst.addr_mode == t.AddrMode.NWK]


def bench(security: Security, **kwargs: object) -> Bench:
    return clock.run(lambda: _bench(security, **kwargs), virtual=True)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Bench, Path]:
    pcap = tmp_path_factory.mktemp("stick-se") / "bench.pcap"
    return bench(DutSecurity(install_code_of(PPMID)), pcap=pcap, checks=[*QUICK, "SE-02"]), pcap


def test_with_the_install_code_the_se_device_joins_runs_cbke_and_passes_over_aps_encrypted_ota(
    secured: tuple[Bench, Path],
) -> None:
    run, _ = secured
    assert run.verdicts() == {"C-01": Verdict.PASS, "C-04": Verdict.PASS, "SE-02": Verdict.INCONCLUSIVE}
    # The SE checks need the in-process APS layer; the reason says what did happen on the stick.
    [se02] = [r.reason for r in run.report.results if r.check.id == "SE-02"]
    assert se02.startswith("on the stick the NCP's own stack does the APS security (the device joined by install")
    # Joined under its install-code key, then CBKE with the CHF: the NCP's key table holds the key the device has.
    assert [e.trust_centre for e in run.device_events if isinstance(e, sev.Admitted)] == [run.coordinator]
    [established] = [e for e in run.device_events if isinstance(e, sev.KeyEstablished)]
    assert established.partner == run.coordinator
    assert run.ncp_key is not None and run.ncp_key == run.device_key
    # From the end of key establishment on, every OTA unicast between them went on the NCP's air APS-secured,
    # both ways.
    assert {p.src.address for p in run.ota_on_air} == {0x0000, 0x1001}
    assert [p for p in run.ota_on_air if not isinstance(p.data, SecuredApsFrame)] == []
    assert any("established a link key with the test CHF by CBKE (suite 2)" in note for note in run.report.notes)
    # Who the device is, read over the air once it had its key.
    assert run.report.dut is not None and run.report.dut.model_identifier == "PPMID"
    assert not any("--install-code" in notice and "network key only" in notice for notice in run.notices)


def test_with_cbke_ncp_the_sticks_cbke_library_does_the_cryptography() -> None:
    run = bench(DutSecurity(install_code_of(PPMID), cbke="ncp"))
    assert run.verdicts() == {"C-01": Verdict.PASS, "C-04": Verdict.PASS}
    library = ("generateCbkeKeys283k1", "calculateSmacs283k1", "clearTemporaryDataMaybeStoreLinkKey283k1")
    assert [run.ncp_commands.get(name) for name in library] == [1, 1, 1]
    assert "importLinkKey" not in run.ncp_commands  # the library stored the key itself
    assert run.ncp_key is not None and run.ncp_key == run.device_key
    assert [p for p in run.ota_on_air if not isinstance(p.data, SecuredApsFrame)] == []
    assert any("CBKE on the stick's CBKE library" in notice for notice in run.notices)


@needs_tshark
def test_the_capture_keys_file_holds_the_cbke_key_and_tshark_opens_the_ota_frames_with_it(
    secured: tuple[Bench, Path],
) -> None:
    run, pcap = secured
    assert run.report.pcap == str(pcap) and run.report.pcap_keys is not None and run.ncp_key is not None
    # The keys file beside the pcap: the network key, then the CBKE key the CHF stored in the NCP.
    rows = [line for line in Path(run.report.pcap_keys).read_text().splitlines() if not line.startswith("#")]
    network_key = parse_network_key(TEST_CHF.network_key)
    assert rows == [
        f'"{network_key.hex(":").upper()}","Normal","network key"',
        f'"{run.ncp_key.hex(":").upper()}","Normal","CBKE link key {PPMID.ieee}"',
    ]
    frames = dissect(pcap, [option for row in rows for option in ("-o", f"uat:zigbee_pc_keys:{row}")])
    assert where(frames, Frame.troubled) == []
    ota_ids = ("zbee_zcl_general.ota.cmd.srv_tx.id", "zbee_zcl_general.ota.cmd.srv_rx.id")
    secured_ota = where(frames, lambda f: f.equals("zbee_aps.security", 1) and any(f.carries(i) for i in ota_ids))
    assert len(secured_ota) >= 2  # the Image Notify and the query it drew, at least
    # With the network key alone, none of the APS-secured OTA frames opens.
    alone = dissect(pcap, ["-o", f"uat:zigbee_pc_keys:{rows[0]}"])
    opened = where(alone, lambda f: f.equals("zbee_aps.security", 1) and any(f.carries(i) for i in ota_ids))
    assert opened == []


def test_with_a_wrong_install_code_the_device_never_joins_and_the_checks_are_inconclusive() -> None:
    run = bench(DutSecurity(WRONG_CODE), join=10.0)
    assert run.verdicts() == {"C-01": Verdict.INCONCLUSIVE, "C-04": Verdict.INCONCLUSIVE}
    [reason] = run.reasons()
    assert f"install code {WRONG_CODE.with_crc.hex().upper()} only" in reason
    assert run.ncp_key is None and run.ota_on_air == []
    # The NCP's trust centre sent the network key under the wrong code's key, which the device could not open.
    refused = {e.reason for e in run.device_events if isinstance(e, sev.NotAdmitted)}
    assert any(r.startswith("Transport-Key not opened with its install code") for r in refused)
    assert [e for e in run.device_events if isinstance(e, sev.Admitted)] == []


def test_without_the_install_code_an_se_device_does_not_join_and_stderr_says_why() -> None:
    run = bench(None, join=10.0)
    assert set(run.verdicts().values()) == {Verdict.INCONCLUSIVE}
    [reason] = run.reasons()
    assert "network key only" in reason and "--install-code" in reason
    [line] = [n for n in run.notices if n.startswith("No --install-code")]
    assert "a GB device (Smart Energy security) will not join it" in line
    assert [e for e in run.device_events if isinstance(e, sev.Admitted)] == [] and run.ota_on_air == []


@pytest.fixture(scope="module")
def vendor_ca() -> CertificateAuthority:
    """A CA of the device's vendor, which the bench's test CA is not."""
    return CertificateAuthority.generate(CryptoSuite.SUITE_2, issuer=b"VENDORCA")


def issued(ca: CertificateAuthority, ieee: t.EUI64, path: Path) -> str:
    path.write_text(credential_files.device_text(ca.issue(bytes(ieee)[::-1])))
    return str(path)


def test_a_device_of_another_ca_fails_cbke_and_its_checks_are_inconclusive_with_the_reason(
    tmp_path: Path, vendor_ca: CertificateAuthority
) -> None:
    device = PPMID.replace(cbke_credentials=issued(vendor_ca, PPMID.ieee, tmp_path / "ppmid.json"), cbke_suite="2")
    run = bench(DutSecurity(install_code_of(PPMID)), profile=device)
    assert run.verdicts() == {"C-01": Verdict.INCONCLUSIVE, "C-04": Verdict.INCONCLUSIVE}
    [reason] = run.reasons()
    assert "key establishment (CBKE) with the test CHF failed with UNKNOWN_ISSUER" in reason
    assert "--chf-credentials" in reason
    assert f"Smart Energy security: {reason}" in run.report.notes
    assert run.ncp_key is None and run.ota_on_air == []


def test_with_chf_credentials_from_the_devices_ca_cbke_succeeds(
    tmp_path: Path, vendor_ca: CertificateAuthority
) -> None:
    device = PPMID.replace(cbke_credentials=issued(vendor_ca, PPMID.ieee, tmp_path / "ppmid.json"), cbke_suite="2")
    chf = tmp_path / "chf.json"
    code = install_code_of(PPMID)
    run = bench(lambda stick: DutSecurity(code, credentials=issued(vendor_ca, stick, chf)), profile=device)
    assert run.verdicts() == {"C-01": Verdict.PASS, "C-04": Verdict.PASS}
    assert run.ncp_key is not None and run.ncp_key == run.device_key
    assert [p for p in run.ota_on_air if not isinstance(p.data, SecuredApsFrame)] == []


def test_chf_credentials_for_another_eui64_are_a_one_line_error(
    tmp_path: Path, vendor_ca: CertificateAuthority
) -> None:
    other = t.EUI64.convert("00:0d:6f:00:00:00:00:01")
    path = issued(vendor_ca, other, tmp_path / "chf.json")
    with pytest.raises(InputError) as raised:
        bench(DutSecurity(install_code_of(PPMID), credentials=path), join=1.0)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"--chf-credentials {path}: the certificate is for 00:0D:6F")
    assert "(the EUI-64 of the coordinator stick" in message


def conform(*args: str):
    return CliRunner().invoke(main, ["conform", "device", *args])


@pytest.mark.parametrize(
    ("code", "says"),
    [
        ("83FE D340 7A93 9723 A5C6 39B2 6916 D505 C3B6", "CRC is C3B6 but the code's CRC-16/X-25 is C3B5"),
        ("83FE D340 7A93 9723 A5", "has 9 bytes"),
        ("not-hex", "is not hex"),
    ],
)
def test_a_bad_install_code_is_a_one_line_error(code: str, says: str) -> None:
    result = conform("--port", "/no/such/tty", "--target", str(PPMID.ieee), "--install-code", code)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ota-emu: error: --install-code"), result.stderr
    assert says in lines[0]


@pytest.mark.realtime
def test_the_command_saves_the_security_options_and_a_resumed_run_uses_them(tmp_path: Path) -> None:
    """On the command line (real time, a virtual NCP on its own thread, no device joining, one second of joining
    open): the options reach the bench, the report's settings keep them, and `--resume` runs with them again."""
    reports = tmp_path / "reports"
    code = install_code_of(PPMID).with_crc.hex()
    with NcpThread() as url:
        first = conform(
            "--radio", "ezsp", "--port", url, "--target", str(PPMID.ieee), "--kind", "ppmid", "--install-code", code,
            "--cbke", "ncp", "--join-timeout", "1", "--checks", "C-01,C-04", "--report-dir", str(reports),
        )  # fmt: skip
        assert first.exit_code == 1, first.output
        said = f"Smart Energy security for device {PPMID.ieee}: install code {code.upper()}, CBKE on the stick's CBKE"
        assert said in first.stderr and "No --install-code" not in first.stderr
        path = reports / "report.json"
        data = json.loads(path.read_text())
        settings = data["run"]["settings"]
        assert (settings["install-code"], settings["cbke"], settings["chf-credentials"]) == (code, "ncp", None)
        assert f"joining was open to install code {code.upper()} only" in data["results"][0]["reason"]
        # As if Ctrl-C had come after C-01: the resumed run plays C-04 with the saved options.
        data.update(interrupted=True, not_run=["C-04"], results=data["results"][:1])
        path.write_text(json.dumps(data))
        resumed = CliRunner().invoke(main, ["conform", "--resume", str(reports)])
    assert resumed.exit_code == 1, resumed.output
    assert said in resumed.stderr
    data = json.loads(path.read_text())
    assert data["run"]["resumed"] == 1 and [r["check"]["id"] for r in data["results"]] == ["C-01", "C-04"]
    assert f"joining was open to install code {code.upper()} only" in data["results"][1]["reason"]


def test_security_options_in_the_wrong_company_are_one_line_errors(tmp_path: Path) -> None:
    code = install_code_of(PPMID).with_crc.hex()
    real = ("--port", "/no/such/tty", "--target", str(PPMID.ieee))
    not_credentials = tmp_path / "notes.txt"
    not_credentials.write_text("hello")
    for args, says in (
        (("--dut", "ppmid", "--install-code", code), "--install-code is for a real device"),
        ((*real, "--cbke", "ncp"), "--cbke and --chf-credentials go with --install-code"),
        (
            (*real, "--install-code", code, "--chf-credentials", str(not_credentials)),
            f"--chf-credentials {not_credentials}",
        ),
        (
            (*real, "--install-code", code, "--cbke", "ncp", "--chf-credentials", str(not_credentials)),
            "with --cbke ncp",
        ),
    ):
        result = conform(*args)
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ota-emu: error:") and says in lines[0], result.stderr
