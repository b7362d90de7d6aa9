"""`ota-emu device`: one emulated PPMID or HCALCS on an EZSP stick, joined to an existing network.

The device is the same `EmulatedDevice` as in `ota-emu run`; its radio is a `StickRadio` instead of the virtual
air. It joins through the stick (or resumes the network the stick already has), answers the interview, finds the
OTA server and upgrades from it, and ends with one outcome line (or `--json`).

With Smart Energy security (`security = "se"`, the profiles' default) the stick joins with the key derived from
the device's install code (the profile's, or the one derived from the stick's EUI-64 as `ota-emu run` derives it),
the device runs CBKE with the trust centre on the host (`KeyEstablishmentClient`, the same as in process) and the
host installs the resulting link key in the stick's NCP, or (`--cbke ncp`) the stick's own CBKE library computes
with its own certificate and stores the key (`NcpKeyEstablishmentClient`); from then on its OTA frames travel
APS-encrypted and OTA frames that arrive in the clear are dropped (`StickSecurity`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import zigpy.types as t

from emulator import clock
from emulator.chf.node import RadioError
from emulator.chf.se_credentials import credentials_for
from emulator.cli.display import RunProgress, StopReason
from emulator.cli.params import Eui64Param, Number, PortParam, ProfileParam, example
from emulator.device import events as de
from emulator.device import security_events as sev
from emulator.device.device import IN_CLUSTERS, OUT_CLUSTERS, EmulatedDevice
from emulator.device.firmware import manufacturer_image_hash
from emulator.device.key_establishment import KeyEstablishmentClient, Outcome
from emulator.device.ncp_key_establishment import NcpKeyEstablishmentClient, stick_certificates
from emulator.errors import InputError
from emulator.han.network import DeviceResult, DeviceSummary
from emulator.han.security import SE, drop_reporter, install_code_of
from emulator.profiles import DeviceProfile, load_device
from emulator.radio.capture import PcapWriter
from emulator.radio.ezsp import FLOW_CONTROL
from emulator.radio.kind import RadioKind
from emulator.radio.stick import Endpoint, Joined, JoinPlan, KeyRefusedError, Role, StickRadio
from emulator.radio.stick_security import StickSecurity
from emulator.security.certs import Certificate, CryptoSuite, DeviceCredentials
from emulator.security.install_code import InstallCode
from emulator.security.keystore import SecurityContext

# The longest wait after the outcome for the last frames (an Upgrade End, a Default Response) to leave the stick:
# the run ends as soon as they have.
FINAL_SEND_GRACE = 0.5
HOST, NCP = "host", "ncp"  # where CBKE's cryptography runs: on this host, or in the stick's CBKE library


@dataclass(frozen=True, slots=True)
class DeviceRun:
    """What `ota-emu device` was asked to do."""

    port: str
    profile: DeviceProfile
    plan: JoinPlan
    baudrate: int = 115200
    flow_control: str = "software"
    state_dir: Path | None = None
    until: float | None = None
    activate: bool = False
    activate_after: float | None = None
    pcap: Path | None = None
    quiet: bool = False
    seed: int = 0
    stay: bool = False
    cbke: str = HOST  # Smart Energy: where CBKE's cryptography runs (host, or the stick's library)


class DeviceWatch:
    """Folds the device's events into its summary (the same results as `ota-emu run`) and says when it is done:
    upgraded, held (an HCALCS waiting for Activate Firmware, unless `--activate`) or failed. A device whose
    query finds no image keeps asking at its query interval, as it would on a real network."""

    def __init__(self, summary: DeviceSummary, device: EmulatedDevice, run: DeviceRun, progress: RunProgress) -> None:
        self.summary = summary
        self.device = device
        self.run = run
        self.progress = progress
        self.done = asyncio.Event()
        self._activation: asyncio.Task[Any] | None = None

    def __call__(self, event: de.DeviceEvent) -> None:
        summary = self.summary
        if self.done.is_set():
            return  # the outcome stands (a query answered NO_IMAGE after an upgrade does not undo it)
        if self._security(event):
            self.progress(event)
            return
        verdict = summary.follow(event)
        if verdict is not None:
            self._finish(*verdict)
        elif isinstance(event, de.WaitingToUpgrade):
            if self.run.activate and summary.kind == "hcalcs":
                self._activate()
            else:
                self._finish(DeviceResult.HELD, "waiting for Activate Firmware")
        elif isinstance(event, de.QueryAnswered) and event.status is not None and summary.size == 0:
            summary.result, summary.reason = DeviceResult.NO_IMAGE, f"query answered 0x{event.status:02X}"
        self.progress(event)

    def _security(self, event: de.DeviceEvent) -> bool:
        """Joining and key establishment, as `ota-emu run` folds them; False for any other event."""
        summary = self.summary
        if isinstance(event, sev.Admitted):
            summary.joined, summary.link_key = "install code", "install code"
        elif isinstance(event, sev.KeyEstablished):
            summary.cbke_suite, summary.link_key = event.suite, "CBKE"
        elif isinstance(event, sev.KeyEstablishmentFailed):
            self._finish(DeviceResult.FAILED, f"CBKE failed: {event.status} ({event.reason})")
        else:
            return False
        return True

    def _finish(self, result: DeviceResult, reason: str) -> None:
        self.summary.result, self.summary.reason = result, reason
        self.summary.finished_at = self.device.clock.now()
        self.done.set()

    def _activate(self) -> None:
        """Activate Firmware (CS06) with the hash of the held image, now or `--activate-after` seconds ahead, as
        `ota-emu run --activate` does."""
        if self._activation is not None:
            return
        image = self.device.downloaded_image
        image_hash = manufacturer_image_hash(image) if image is not None else bytes(32)
        after = self.run.activate_after
        at = None if after is None else self.device.clock.utc() + timedelta(seconds=after)
        self._activation = asyncio.get_running_loop().create_task(self.device.activate_firmware(image_hash, at))


async def run_device(
    run: DeviceRun, stop: asyncio.Event | None = None
) -> tuple[DeviceSummary, StopReason, float, Joined]:
    """Join (or resume), run the device until it has an outcome (unless `run.stay`), `until` seconds pass, a
    signal comes or `stop` is set; save its state and leave the stick. Returns the summary, why it stopped, the
    wall time and where it joined."""
    started = time.monotonic()
    radio, profile, joined, keying = await _join(run)
    capture = _capture(run.pcap, joined) if run.pcap is not None else None
    if capture is not None:
        radio.add_tap(capture.write)
    if run.state_dir is not None:
        run.state_dir.mkdir(parents=True, exist_ok=True)
    device = EmulatedDevice(profile, radio, clock.Clock(), nwk=joined.nwk, state_dir=run.state_dir, seed=run.seed)
    if keying is not None:
        keying.attach(device, say=None if run.quiet else lambda text: click.echo(text, err=True))
    summary = DeviceSummary(joined.ieee, profile.kind, joined.nwk, device.running_version, device.running_version)
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        with RunProgress({joined.ieee: summary}, enabled=not run.quiet) as progress:
            watch = DeviceWatch(summary, device, run, progress)
            device.add_listener(watch)
            await device.start()
            stopped = await _until_done(watch, run, stop, radio)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await device.stop()  # saves the state, partial download included
        await radio.close()
        if capture is not None:
            capture.close()
    return summary, stopped, time.monotonic() - started, joined


class StickKeyEstablishment:
    """Smart Energy security of the device on the stick after the join: CBKE with the trust centre on the host,
    then the link key into the NCP, before the OTA client starts (as `ota-emu run` does it in process); or, given
    the stick's `certificates` instead of `credentials`, CBKE in the stick's CBKE library, which keeps the key."""

    def __init__(
        self,
        radio: StickRadio,
        security: StickSecurity,
        trust_centre: t.EUI64,
        credentials: Mapping[CryptoSuite, DeviceCredentials] | None = None,
        *,
        certificates: dict[CryptoSuite, Certificate] | None = None,
    ) -> None:
        self.radio = radio
        self.security = security
        self.trust_centre = trust_centre
        self.credentials = credentials
        self.certificates = certificates

    def attach(self, device: EmulatedDevice, say: Any) -> None:
        """Run key establishment for `device` before its OTA client; `say(text)` hears how it went."""
        self.security.on_drop = drop_reporter(device)

        async def before_ota() -> bool:
            return await self.establish(device, say)

        device.before_ota = before_ota

    async def establish(self, device: EmulatedDevice, say: Any) -> bool:
        """CBKE, with the key then in the NCP: True when the device's OTA traffic can go APS-encrypted."""
        security = self.security
        security.application_ready = False  # no OTA frame is taken before the link key is there
        device.emit(sev.Admitted, trust_centre=self.trust_centre)
        if self.certificates is not None:
            outcome = await NcpKeyEstablishmentClient(device, self.radio, self.trust_centre, self.certificates).run()
            where = " in the stick's CBKE library"
        else:
            outcome = await self._on_host(device)
            where = ""
        if not outcome.ok:
            return False
        security.link_key_in_use = security.application_ready = True
        if say is not None:
            say(
                f"Device {device.ieee}: CBKE suite {outcome.suite} done{where} with trust centre "
                f"{self.trust_centre}; its link key is in the stick and OTA traffic is APS-encrypted"
            )
        return True

    async def _on_host(self, device: EmulatedDevice) -> Outcome:
        """CBKE computed here, then the key installed in the NCP."""
        assert self.credentials is not None
        context = SecurityContext(device.ieee)
        client = KeyEstablishmentClient(device, self.radio, context, self.credentials, self.trust_centre)
        outcome = await client.run()
        key = context.link_key(self.trust_centre)
        if not outcome.ok or key is None:
            return outcome
        try:
            await self.radio.install_link_key(self.trust_centre, key.key)
        except (RadioError, TimeoutError) as exc:
            device.emit(sev.KeyEstablishmentFailed, status="NOT_INSTALLED", reason=str(exc))
            return Outcome(False, None, "NOT_INSTALLED", str(exc))
        return outcome


class InstallCodeKey:
    """The key a Smart Energy device's stick joins with: the key of its install code, the profile's or else the one
    derived from the stick's EUI-64 (only the stick knows it). `code` is the one used, once the stick has asked."""

    def __init__(self, profile: DeviceProfile) -> None:
        self.profile = profile
        self.code: InstallCode | None = None

    def __call__(self, ieee: t.EUI64) -> bytes:
        self.code = install_code_of(self.profile.replace(ieee=ieee))
        return self.code.key

    def refused(self, exc: KeyRefusedError) -> RadioError:
        """The join error, naming the code the trust centre must hold (a Communications Hub's Device Log entry)."""
        if self.code is None:
            return exc
        return RadioError(f"{exc}; the trust centre must hold install code {self.code.with_crc.hex().upper()}")


async def _join(run: DeviceRun) -> tuple[StickRadio, DeviceProfile, Joined, StickKeyEstablishment | None]:
    """Join through the stick (or resume its network) and say where; the device takes the stick's EUI-64. A
    Smart Energy device gets what its key establishment needs (its trust centre, its CBKE credentials)."""
    profile = run.profile.replace(sleepy=run.plan.role == Role.SLEEPY)  # the device polls when the stick sleeps
    se = profile.security == SE
    key = InstallCodeKey(profile) if se else None
    plan = run.plan if key is None else dataclasses.replace(run.plan, link_key=key)
    security = StickSecurity() if se else None
    radio = StickRadio(run.port, plan, baudrate=run.baudrate, flow_control=run.flow_control, security=security)
    if not run.quiet:
        radio.add_listener(lambda text: click.echo(text, err=True))
    endpoint = Endpoint(
        endpoint=profile.endpoint,
        profile_id=profile.profile_id,
        device_id=profile.effective_device_id,
        in_clusters=IN_CLUSTERS,
        out_clusters=OUT_CLUSTERS,
        manufacturer_code=profile.manufacturer_code,
    )
    try:
        joined = await radio.open(endpoint)
    except KeyRefusedError as exc:
        raise exc if key is None else key.refused(exc) from None
    # The network knows the stick by its own EUI-64: the device takes it, and keeps its state under it.
    profile = profile.replace(ieee=joined.ieee, nwk=joined.nwk)
    how = "resumed" if joined.resumed else "joined"
    if not run.quiet:
        click.echo(
            f"Device {profile.kind.upper()} {joined.ieee} {how} PAN 0x{joined.pan_id:04X} on channel "
            f"{joined.channel} as NWK 0x{joined.nwk:04X} ({run.plan.role.value}) through {run.port}",
            err=True,
        )
    if security is None:
        return radio, profile, joined, None
    try:
        trust_centre = await radio.trust_centre()
        keying = await _key_establishment(run, radio, security, trust_centre, profile, joined.ieee)
    except BaseException:
        await radio.close()
        raise
    if not run.quiet:
        click.echo(f"Device {joined.ieee}: {_admission(joined, key)}; trust centre {trust_centre}", err=True)
    return radio, profile, joined, keying


def _admission(joined: Joined, key: InstallCodeKey | None) -> str:
    """How the stick got onto the Smart Energy network: now, with the install code named, or earlier."""
    if joined.resumed or key is None or key.code is None:
        return "resumed the network it joined with its install-code key"
    return f"joined with its install-code key (install code {key.code.with_crc.hex().upper()})"


async def _key_establishment(
    run: DeviceRun,
    radio: StickRadio,
    security: StickSecurity,
    trust_centre: t.EUI64,
    profile: DeviceProfile,
    ieee: t.EUI64,
) -> StickKeyEstablishment:
    """What the device's CBKE needs: its credentials on the host, or (`--cbke ncp`) the certificates of the
    stick's CBKE library, read before the device starts (a stick without them is a one-line error)."""
    if run.cbke == NCP:
        certificates = await stick_certificates(radio, ieee)
        return StickKeyEstablishment(radio, security, trust_centre, certificates=certificates)
    credentials = credentials_for(ieee, profile.cbke_suite, profile.cbke_credentials, profile.source, f"device {ieee}")
    return StickKeyEstablishment(radio, security, trust_centre, credentials)


async def _until_done(watch: DeviceWatch, run: DeviceRun, stop: asyncio.Event, radio: StickRadio) -> StopReason:
    """Wait for the outcome (unless `run.stay`), `run.until` seconds, or `stop`; say which came first."""
    loop = asyncio.get_running_loop()
    waits = [loop.create_task(stop.wait())]
    if not run.stay:
        waits.append(loop.create_task(watch.done.wait()))
    await asyncio.wait(waits, timeout=run.until, return_when=asyncio.FIRST_COMPLETED)
    for task in waits:
        task.cancel()
    if watch.done.is_set() and not run.stay:
        await radio.sent(within=FINAL_SEND_GRACE)
        return StopReason.OUTCOME
    return StopReason.SIGNAL if stop.is_set() else StopReason.UNTIL


def _capture(path: Path, joined: Joined) -> PcapWriter:
    """What the stick sent and received, as 802.15.4 frames. The network key is not read from the stick (not
    every EmberZNet build lets the host export it), so the frames are written without NWK security; APS security
    is the NCP's too, so frames are written as the host handed them over and got them (in the clear)."""
    writer = PcapWriter(path, network_key=None, pan_id=joined.pan_id)
    writer.add_node(joined.nwk, joined.ieee)
    return writer


def _outcome_line(summary: DeviceSummary, stopped: StopReason, wall: float) -> str:
    served = f"{summary.offset}/{summary.size} bytes" if summary.size else "no download"
    note = f" ({summary.reason})" if summary.reason else ""
    return (
        f"{summary.kind.upper()} {summary.ieee}: {summary.result}{note}, runs 0x{summary.version:08X} "
        f"(was 0x{summary.start_version:08X}), {served}; stopped by {stopped} after {wall:.1f} s"
    )


def _one_device(ctx: click.Context, param: click.Parameter, count: int) -> int:
    """--count is there because `run` and `ncp` have it; on a stick it can only be 1."""
    if count != 1:
        raise InputError(
            f"--count {count}: an EZSP stick is one node on the network (one EUI-64, one NWK address) and carries "
            "one device; run one `ota-emu device` per stick"
        )
    return count


@click.command(
    "device",
    epilog=example(
        "ota-emu device --port /dev/ttyUSB0 --device ppmid --state-dir lab/",
        "ota-emu device --port tcp://127.0.0.1:PORT --device hcalcs --role sleepy --activate --json",
    ),
)
@click.option(
    "--port",
    required=True,
    type=PortParam(),
    help="The stick's serial port (/dev/ttyUSB0), or tcp://HOST:PORT / socket://HOST:PORT (e.g. `ota-emu ncp`).",
)
@click.option(
    "--device",
    "device_path",
    required=True,
    type=ProfileParam(),
    help="Device profile: a TOML file or a bundled name (ppmid, hcalcs, faults/NAME).",
)
@click.option(
    "--radio",
    type=click.Choice([RadioKind.EZSP.value]),
    default=RadioKind.EZSP.value,
    show_default=True,
    help="Stick type.",
)
@click.option("--baudrate", type=click.IntRange(1200), default=115200, show_default=True, help="Serial speed.")
@click.option(
    "--flow-control",
    type=click.Choice(FLOW_CONTROL),
    default="software",
    show_default=True,
    help="Serial flow control.",
)
@click.option(
    "--role",
    type=click.Choice([r.value for r in Role]),
    help="Join as an rx-on end device, a sleepy end device (polling at the profile's poll_period) or a router "
    "(default: sleepy if the profile says sleepy = true, else end-device).",
)
@click.option("--channel", type=click.IntRange(11, 26), help="Join only a network on this channel.")
@click.option(
    "--pan-id", type=Number(16, maximum=0xFFFE), help="Join only a network with this PAN ID (0x0000..0xFFFE)."
)
@click.option(
    "--extended-pan-id", type=Eui64Param(), help="Join only a network with this extended PAN ID (EUI-64 form)."
)
@click.option(
    "--join-timeout",
    type=click.FloatRange(1.0),
    default=60.0,
    show_default=True,
    help="Give up (exit 2) when no network lets the stick join within this many seconds.",
)
@click.option(
    "--count",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    callback=_one_device,
    help="Devices on the stick (only 1).",
)
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False), help="Persist device state here.")
@click.option("--until", type=click.FloatRange(1.0), help="Stop after this many seconds, whatever the outcome.")
@click.option("--activate", is_flag=True, help="An HCALCS activates the image it holds (CS06 with its hash).")
@click.option("--activate-after", type=click.FloatRange(0.0), help="Future-date that activation by N seconds.")
@click.option("--pcap", type=click.Path(path_type=Path, dir_okay=False), help="Write what the stick sent and received.")
@click.option(
    "--stay",
    is_flag=True,
    help="Stay on the network after the outcome until --until or Ctrl-C (zigpy re-reads and re-interviews an "
    "upgraded device).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the device's random choices.")
@click.option(
    "--cbke",
    type=click.Choice([HOST, NCP]),
    default=HOST,
    show_default=True,
    help="Under Smart Energy security, where key establishment's cryptography runs: on this host, or in the "
    "stick's CBKE library with its own certificate.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON (and no progress).")
def command(
    port: str,
    device_path: Path,
    radio: str,
    baudrate: int,
    flow_control: str,
    role: str | None,
    channel: int | None,
    pan_id: int | None,
    extended_pan_id: t.EUI64 | None,
    join_timeout: float,
    count: int,
    state_dir: Path | None,
    until: float | None,
    activate: bool,
    activate_after: float | None,
    pcap: Path | None,
    seed: int,
    stay: bool,
    cbke: str,
    as_json: bool,
) -> int:
    """Run one emulated PPMID or HCALCS on an EZSP stick that joins an existing network.

    Open joining on the network first (permit join on its coordinator). The stick joins as an end device
    (or sleepy end device, or router), or resumes the network it already has; the device takes the stick's
    EUI-64, announces itself, answers the interview, finds the OTA server and upgrades from it exactly as in
    `ota-emu run`, with its faults and Smart Energy security (install-code join, CBKE, APS-encrypted OTA). With
    --state-dir a restarted device continues its download at its offset. Exit 0 when it ends upgraded or held (an
    HCALCS waiting for Activate Firmware), 1 otherwise, 2 for bad input, an unusable port or no network to join.
    """
    profile = load_device(device_path)
    _check_cbke(cbke, profile)
    chosen = Role(role) if role is not None else Role.SLEEPY if profile.sleepy else Role.END_DEVICE
    if pcap is not None and not pcap.parent.is_dir():
        raise InputError(f"--pcap {pcap}: directory {pcap.parent} does not exist")
    plan = JoinPlan(chosen, channel=channel, pan_id=pan_id, extended_pan_id=extended_pan_id, join_timeout=join_timeout)
    run = DeviceRun(
        port=port,
        profile=profile,
        plan=plan,
        baudrate=baudrate,
        flow_control=flow_control,
        state_dir=state_dir,
        until=until,
        activate=activate,
        activate_after=activate_after,
        pcap=pcap,
        quiet=as_json,
        seed=seed,
        stay=stay,
        cbke=cbke,
    )
    summary, stopped, wall, joined = clock.run(lambda: run_device(run), virtual=False)
    if as_json:
        sys.stdout.write(json.dumps(_document(RadioKind(radio), run, summary, stopped, wall, joined), indent=2) + "\n")
    else:
        click.echo(_outcome_line(summary, stopped, wall))
    return 0 if summary.result in (DeviceResult.UPGRADED, DeviceResult.HELD) else 1


def _check_cbke(cbke: str, profile: DeviceProfile) -> None:
    """CBKE anywhere but on the host needs a device that runs CBKE at all."""
    if cbke != HOST and profile.security != SE:
        raise InputError(
            f'--cbke {cbke}: {profile.source} asks for no Smart Energy security (expected security = "se")'
        )


def _document(
    radio: RadioKind, run: DeviceRun, summary: DeviceSummary, stopped: StopReason, wall: float, joined: Joined
) -> dict[str, Any]:
    """The `--json` outcome: where the stick joined, why the run stopped, and the device's summary."""
    return {
        "radio": radio,
        "port": run.port,
        "network": {"pan_id": f"0x{joined.pan_id:04X}", "channel": joined.channel, "resumed": joined.resumed},
        "role": run.plan.role.value,
        "security": "smart energy" if run.profile.security == SE else "network key",
        "stopped": stopped,
        "wall_time_s": round(wall, 3),
        "device": summary.as_dict(),
    }
