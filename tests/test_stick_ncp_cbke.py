"""`ota-emu device --cbke ncp`: the device's CBKE runs in its stick's CBKE library (the virtual NCP's, driven through
bellows' EZSP layer), as the initiator, with the CHF on another stick of the same air as the responder. In one
process, on virtual time.

The witnesses are the two NCPs: the stick counts the library commands the host ran and holds the key it stored
itself; the CHF's NCP holds the key the CHF's host computed independently (its own `Responder`) and installed; the
CHF's host sees every OTA frame come APS-decrypted by its NCP.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import bellows.types as bt
import pytest
import zigpy.types as zt
from click.testing import Result
from test_ncp_joining import call, until
from test_stick_e2e import Bench, build_image, cli, quick_profile

from conftest import assert_one_line_error
from emulator.chf import ezsp_security
from emulator.chf.key_establishment import KeyEstablished, KeyEstablishmentFailed
from emulator.chf.node import ChfNode, RadioError
from emulator.chf.store import ImageStore, load_images
from emulator.cli.device import NCP, DeviceRun, run_device
from emulator.clock import Clock
from emulator.han.network import DeviceSummary
from emulator.ncp.server import VirtualNcp
from emulator.profiles import bundled, derived_install_code, load_chf, load_device
from emulator.radio.air import Air
from emulator.radio.stick import JoinPlan, Role
from emulator.security import key_establishment as ke
from emulator.security.ca import CertificateAuthority
from emulator.security.certs import CryptoSuite
from emulator.security.install_code import InstallCode

pytestmark = pytest.mark.virtual_time

PROFILES = Path(__file__).parent.parent / "profiles"
PAYLOAD = bytes(range(256)) * 4
LIBRARY_COMMANDS = ("generateCbkeKeys283k1", "calculateSmacs283k1", "clearTemporaryDataMaybeStoreLinkKey283k1")


@contextlib.asynccontextmanager
async def bench(
    image: Path, stick_version: int, chf_cbke: str = ezsp_security.HOST, *, stick_library: bool = True
) -> AsyncIterator[Bench]:
    """test_stick_e2e's bench (the CHF with Smart Energy security on one stick, its CBKE on its host or, with
    `chf_cbke` NCP, in its NCP's library) with the device's stick speaking EZSP `stick_version`, built with or
    without the CBKE library (`stick_library`)."""
    air = Air(seed=9)
    async with (
        VirtualNcp(air, seed=0) as chf_ncp,
        VirtualNcp(air, seed=1, ezsp_version=stick_version, cbke_library=stick_library) as stick,
    ):
        target = stick.stack.ieee
        chf = load_chf(bundled("chf"))
        node = ChfNode(chf, ImageStore.from_profile(chf, load_images([image], device_ids=[target])), Clock())
        await node.start_ezsp(chf_ncp.url or "", ezsp_extra=ezsp_security.bellows_config())
        here = Bench(air, chf_ncp, stick, node)
        node.server.add_listener(here.events.append)
        node.app.add_tap(
            lambda packet, _: here.received.append(packet) if packet.src and packet.src.address != 0x0000 else None
        )
        log = ezsp_security.device_log_of(chf, [target])
        here.guard = await ezsp_security.start(node, log, here.events.append, cbke=chf_cbke)
        await here.guard.permit(60)
        try:
            yield here
        finally:
            await node.stop()


async def device_with_ncp_cbke(
    b: Bench, tmp_path: Path, until_s: float = 60, *, quiet: bool = True
) -> tuple[DeviceSummary, Any]:
    run = DeviceRun(
        port=b.stick.url or "",
        profile=load_device(quick_profile(tmp_path, "ppmid")),
        plan=JoinPlan(Role.END_DEVICE, join_timeout=10),
        until=until_s,
        quiet=quiet,
        cbke=NCP,
    )
    summary, stopped, _, joined = await run_device(run)
    assert stopped == "outcome"
    return summary, joined


def ke_from_device(b: Bench) -> list[bytes]:
    """The Key Establishment cluster commands the CHF's host got from the device (ZCL header included)."""
    frames = [p.data.serialize() for p in b.received if p.cluster_id == ke.CLUSTER_ID]
    return [data for data in frames if data[0] & 0x03 == 0x01]


@pytest.mark.parametrize(
    ("version", "chf_cbke"), [(8, ezsp_security.HOST), (14, ezsp_security.HOST), (13, ezsp_security.NCP)]
)
async def test_a_ppmid_whose_stick_runs_cbke_is_upgraded_over_aps_encryption(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], version: int, chf_cbke: str
) -> None:
    image = build_image(tmp_path, "0x0084", PAYLOAD)
    async with bench(image, version, chf_cbke) as b:
        summary, joined = await device_with_ncp_cbke(b, tmp_path, quiet=False)
        await until(b.outcomes)
    said = capsys.readouterr().err
    assert f"Device {joined.ieee}: CBKE suite 2 done in the stick's CBKE library with trust centre " in said
    assert (summary.result, summary.version, summary.cbke_suite, summary.link_key) == ("upgraded", 2, 2, "CBKE")
    assert [int(o.response) for o in b.outcomes()] == [0]
    # The stick's library did the cryptography, once, and the host installed no key itself.
    commands = b.stick.counters.commands
    assert [commands[name] for name in LIBRARY_COMMANDS] == [1, 1, 1]
    assert commands["getCertificate283k1"] >= 1
    assert commands["importKey"] == commands["addOrUpdateKeyTableEntry"] == 0
    # The CHF agreed the key on its own (on its host, or in its NCP's library); the key its NCP holds is the one
    # the stick's library stored.
    assert [e.ieee for e in b.of(KeyEstablished)] == [joined.ieee]
    assert b.guard is not None
    [installed] = b.guard.installed
    stored = bytes.fromhex(b.stick.stack.state.tc_link_key)
    assert stored == installed.key == b.chf_ncp.stack.link_key_for(joined.ieee)
    assert stored != InstallCode.parse(derived_install_code(joined.ieee)).key
    # The key exchange went in the clear (NWK security only); every OTA frame APS-encrypted.
    ota_in = [p for p in b.received if p.cluster_id == 0x0019]
    assert ota_in and all(p.tx_options & zt.TransmitOptions.APS_Encryption for p in ota_in)
    [initiate, *_] = ke_from_device(b)
    certificate = b.stick.stack.cbke_credentials()[CryptoSuite.SUITE_2].certificate.to_bytes()
    assert initiate[2] == ke.ClientCommand.INITIATE_KEY_ESTABLISHMENT_REQUEST and initiate[7:] == certificate


class ForeignCertificate:
    """The CHF's app as its Key Establishment server sends through it, presenting in its Initiate Key Establishment
    Response a certificate for the CHF's EUI-64 from another CA (the conformance scenario SE-03's lie)."""

    def __init__(self, app: Any, ieee: zt.EUI64) -> None:
        self.app = app
        foreign = CertificateAuthority.generate(CryptoSuite.SUITE_2, issuer=b"FOREIGN!")
        self.certificate = foreign.issue(bytes(ieee)[::-1]).certificate.to_bytes()

    def transmit(self, packet: zt.ZigbeePacket) -> None:
        data = packet.data.serialize()
        if packet.cluster_id == ke.CLUSTER_ID and len(data) > 7 and data[0] & 0x08 and data[2] == 0x00:
            packet = packet.replace(data=zt.SerializableBytes(data[:7] + self.certificate))
        self.app.transmit(packet)


async def test_a_chf_certificate_from_another_ca_ends_with_the_device_sending_unknown_issuer(tmp_path: Path) -> None:
    async with bench(build_image(tmp_path, "0x0084", PAYLOAD[:64]), 13) as b:
        assert b.guard is not None
        key_server = b.guard.key_server
        key_server.app = ForeignCertificate(key_server.app, b.guard.coordinator)
        summary, _ = await device_with_ncp_cbke(b, tmp_path)
        await until(lambda: b.of(KeyEstablishmentFailed))
    assert summary.result == "failed" and summary.reason.startswith("CBKE failed: UNKNOWN_ISSUER (")
    assert "464F524549474E21" in summary.reason  # b"FOREIGN!", the issuer it did not know
    # The device's last Key Establishment frame: Terminate UNKNOWN_ISSUER, for suite 2.
    *_, last = ke_from_device(b)
    assert (last[2], ke.TerminateKeyEstablishment.from_bytes(last[3:])) == (
        ke.ClientCommand.TERMINATE_KEY_ESTABLISHMENT,
        ke.TerminateKeyEstablishment(ke.TerminateStatus.UNKNOWN_ISSUER, ke.DEFAULT_TERMINATE_WAIT_TIME, 0x0002),
    )
    # Checked on the host: the stick's library was never asked to compute, and no key changed.
    assert all(b.stick.counters.commands[name] == 0 for name in LIBRARY_COMMANDS)
    assert b.guard.installed == [] and b.of(KeyEstablished) == []
    assert not any(p.cluster_id == 0x0019 for p in b.received)  # the OTA client never started


@pytest.mark.parametrize("version", [8, 14])
async def test_a_stick_without_the_cbke_library_is_a_one_line_error_before_the_device_starts(
    tmp_path: Path, version: int
) -> None:
    async with bench(build_image(tmp_path, "0x0084", PAYLOAD[:64]), version, stick_library=False) as b:
        # What such a firmware answers (the virtual NCP built without the library): stubs, LIBRARY_NOT_PRESENT.
        certificate = call(b.stick.stack, "getCertificate283k1")
        assert certificate == {"status": bt.EmberStatus.LIBRARY_NOT_PRESENT, "localCert": bytes(74)}
        assert call(b.stick.stack, "getLibraryStatus", libraryId=0x0D) == {"status": 0x00}  # a stub
        assert call(b.stick.stack, "getLibraryStatus", libraryId=0x01)["status"] == 0x80  # the rest is there
        with pytest.raises(RadioError) as raised:
            await device_with_ncp_cbke(b, tmp_path)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"--cbke ncp: the stick on {b.stick.url} ({b.stick.stack.ieee}) has no CBKE library")
    assert "getLibraryStatus(0x0D) answered 0x00" in message and "use --cbke host" in message
    assert b.stick.counters.commands["getLibraryStatus"] == 2
    assert b.stick.counters.commands["generateCbkeKeys283k1"] == 0
    assert not any(p.cluster_id in (ke.CLUSTER_ID, 0x0019) for p in b.received)  # no CBKE, no OTA client


def library_failing(stick: VirtualNcp) -> None:
    """generateCbkeKeys283k1 answers a failure."""
    stick.stack.add_command("generateCbkeKeys283k1", lambda a: {"status": bt.sl_Status.FAIL})


def library_silent(stick: VirtualNcp) -> None:
    """generateCbkeKeys283k1 is accepted, but its handler never comes."""
    stick.stack.add_command("generateCbkeKeys283k1", lambda a: {"status": bt.sl_Status.OK})


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (library_failing, "the stick's CBKE library: generateCbkeKeys283k1 answered ERR_FATAL"),
        (library_silent, "the stick's CBKE library: no generateCbkeKeysHandler283k1 within 10 s"),
    ],
    ids=["failure-status", "no-callback"],
)
async def test_a_library_that_fails_or_stays_silent_ends_cbke_with_a_terminate(
    tmp_path: Path, fault: Callable[[VirtualNcp], None], reason: str
) -> None:
    async with bench(build_image(tmp_path, "0x0084", PAYLOAD[:64]), 13) as b:
        fault(b.stick)
        summary, joined = await device_with_ncp_cbke(b, tmp_path, until_s=600)
    ieee = joined.ieee
    assert (summary.result, summary.reason) == ("failed", f"CBKE failed: NO_RESOURCES ({reason})")
    terminates = [frame for frame in ke_from_device(b) if frame[2] == ke.ClientCommand.TERMINATE_KEY_ESTABLISHMENT]
    # Each exchange (the device tries again, as after a busy server) ended with Terminate NO_RESOURCES, and the
    # library's temporary data was cleared without storing a key.
    assert len(terminates) == 8 and all(frame[3] == ke.TerminateStatus.NO_RESOURCES for frame in terminates)
    assert b.stick.counters.commands["clearTemporaryDataMaybeStoreLinkKey283k1"] == 8
    assert b.guard is not None and b.guard.installed == []
    assert bytes.fromhex(b.stick.stack.state.tc_link_key) == InstallCode.parse(derived_install_code(ieee)).key


def test_cbke_ncp_needs_a_smart_energy_profile(tmp_path: Path) -> None:
    profile = quick_profile(tmp_path, "ppmid", 'security = "none"')
    result: Result = cli("device", "--port", "tcp://127.0.0.1:1", "--device", profile, "--cbke", "ncp")
    assert_one_line_error(result, "--cbke ncp", str(profile), 'expected security = "se"')
