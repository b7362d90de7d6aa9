"""`ota-emu chf`: a test CHF on an EZSP coordinator (a Silicon Labs USB stick, or the virtual NCP), through bellows.

The OTA server is the one `ota-emu run` uses in process; only its radio differs. The command forms or resumes the
stick's network, keeps joining open while a target is missing, follows every transfer from the server's side
(the offset each client asks for, the CCS08 outcome the server reports) and stops when each target has its
outcome, at `--until`, or on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import zigpy.device
import zigpy.types as t
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from emulator import clock
from emulator.chf import events as server_events
from emulator.chf import ezsp_security
from emulator.chf.key_establishment import KeyEstablished, KeyEstablishmentFailed
from emulator.chf.node import ChfNode
from emulator.chf.store import ImageStore, load_images
from emulator.cli.display import StatusColumn, StopReason, Transfer, aggregate_text, progress_text
from emulator.cli.params import AliasedCommand, Eui64Param, FiniteFloat, PortParam, ProfileParam, example
from emulator.cli.run import Interruption, print_capture_keys
from emulator.errors import InputError
from emulator.files import check_output_file
from emulator.gb.codes import TransferResponse
from emulator.han.security import SE
from emulator.ota import frames
from emulator.ota.blocks import decode_block_request
from emulator.profiles import ChfProfile, bundled, load_chf
from emulator.radio.capture import PcapWriter, parse_network_key
from emulator.radio.ezsp import FLOW_CONTROL
from emulator.radio.kind import RadioKind

LOGGER = logging.getLogger(__name__)

MAX_PERMIT = 254  # the longest Mgmt_Permit_Joining_req duration; 255 would mean "forever"
# After the last outcome, the longest wait for the frames still on their way to the stick (the Upgrade End
# Response that follows it): the run ends as soon as they have left.
FINAL_SEND_GRACE = 1.0
PERMIT_RETRY = 2.0
MAX_BARS = 12
ALL_DEVICES = t.EUI64(b"\xff" * 8)  # the key of the one aggregate bar shown instead of one bar per device


@dataclass
class TargetStatus:
    """One device as the CHF sees it: on the network, how far its download is (the offset it asked for last),
    and the outcome the server reported with CCS08 meaning."""

    ieee: t.EUI64
    target: bool
    nwk: int | None = None
    joined: bool = False
    file_version: int | None = None
    offset: int = 0
    size: int = 0
    outcome: server_events.TransferOutcome | None = None
    cbke_suite: int | None = None  # Smart Energy: the suite of the link key CBKE gave it

    @property
    def succeeded(self) -> bool:
        return self.outcome is not None and self.outcome.response == TransferResponse.SUCCESS

    def as_dict(self) -> dict[str, Any]:
        outcome = self.outcome
        return {
            "ieee": str(self.ieee),
            "target": self.target,
            "joined": self.joined,
            "nwk": None if self.nwk is None else f"0x{self.nwk:04X}",
            "file_version": None if self.file_version is None else f"0x{self.file_version:08X}",
            "offset": self.offset,
            "size": self.size,
            "outcome": None if outcome is None else outcome.response.name.lower(),
            "response_code": None if outcome is None else int(outcome.response),
            "alert_code": None if outcome is None else f"0x{int(outcome.alert_code):04X}",
            "reason": "" if outcome is None else outcome.reason,
            "cbke_suite": self.cbke_suite,
        }


def target_text(status: TargetStatus, transfer: Transfer, *, now: float, joining_until: float | None) -> str:
    """What the CHF is waiting for with one device, beside its bar: to join (and for how long joining stays
    open), its first query, its blocks (rate, time left), its Upgrade End Request, or the outcome it reported."""
    outcome = status.outcome
    if outcome is not None:
        verdict = f"{outcome.response.name.lower().replace('_', ' ')} (CCS08 {int(outcome.response)})"
        return progress_text(Transfer(phase=verdict, offset=status.offset, size=status.size))
    if not status.joined and status.size == 0:
        if joining_until is None or joining_until <= now:
            return f"waiting for {status.ieee} to join; joining closed"
        return f"waiting for {status.ieee} to join; joining open for {joining_until - now:.0f} s"
    if status.size == 0:
        return "joined; waiting for its Query Next Image Request"
    return progress_text(transfer)


class Watch:
    """Follows the run from the CHF's side: zigpy's join/interview events, each client's block requests
    (offered before the server takes them) and the server's transfer events."""

    def __init__(self, targets: list[t.EUI64], *, progress: bool) -> None:
        self.status = {ieee: TargetStatus(ieee, target=True) for ieee in targets}
        self.node: ChfNode | None = None
        self.all_done = asyncio.Event()
        self.all_joined = asyncio.Event()
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), StatusColumn(), console=Console(stderr=True)
        )
        self.show = progress and sys.stderr.isatty()
        self._bars: dict[t.EUI64, TaskID] = {}
        self.transfers: dict[t.EUI64, Transfer] = {}
        self.joining_until: float | None = None  # monotonic time joining closes again, while it is open
        self._check()

    def _transfer(self, status: TargetStatus) -> Transfer:
        """Kept up with `status` on the wall clock; its phase is the server's view of the download."""
        transfer = self.transfers.setdefault(status.ieee, Transfer())
        now = time.monotonic()
        if status.size and transfer.started_at is None:
            transfer.start(status.offset, status.size, now)
        transfer.size = status.size
        transfer.advance(status.offset, now)
        if status.size and status.offset >= status.size and status.outcome is None:
            transfer.phase = "waiting for Upgrade End Request (the device verifies the image)"
        elif status.outcome is None:
            transfer.phase = "downloading"
        return transfer

    def _get(self, ieee: t.EUI64) -> TargetStatus:
        status = self.status.get(ieee)
        if status is None:
            status = self.status[ieee] = TargetStatus(ieee, target=False)
        return status

    @property
    def targets(self) -> list[TargetStatus]:
        return [s for s in self.status.values() if s.target]

    def _check(self) -> None:
        targets = self.targets
        if targets and all(s.outcome is not None for s in targets):
            self.all_done.set()
        if targets and all(s.joined for s in targets):
            self.all_joined.set()
        else:
            self.all_joined.clear()

    # -- zigpy app listener -------------------------------------------------------------------------------------

    def device_joined(self, device: zigpy.device.BaseDevice) -> None:
        """Only devices the run is about are listed: the targets, and any device served an image."""
        status = self.status.get(device.ieee)
        if status is not None:
            status.joined, status.nwk = True, int(device.nwk)
            self._check()

    device_initialized = device_joined

    def device_left(self, device: zigpy.device.BaseDevice) -> None:
        if device.ieee in self.status:
            self.status[device.ieee].joined = False
            self._check()

    # -- what the CHF receives and reports ----------------------------------------------------------------------

    def observe(self, packet: t.ZigbeePacket) -> bool:
        """Ingress observer: the offset of every Image Block/Page Request. Never takes the packet."""
        if packet.cluster_id != frames.CLUSTER_ID or packet.src_ep == 0 or self.node is None:
            return False
        data = packet.data.serialize()
        block = decode_block_request(data)
        if block is not None:
            version, offset = block[3], block[4]
        elif len(data) >= 3 and data[0] & 0x03 == 0x01 and data[2] == frames.OtaCommand.IMAGE_PAGE:
            try:
                command = frames.decode(data).command
            except (frames.MalformedFrame, frames.UnsupportedCommand):
                return False
            version, offset = command.file_version, command.file_offset
        else:
            return False
        if packet.src is None or not isinstance(packet.src.address, int):
            return False
        try:
            ieee = self.node.app.get_device(nwk=packet.src.address).ieee
        except KeyError:
            return False
        status = self._get(ieee)
        if status.file_version != version:
            status.file_version, status.offset = version, 0
        status.offset = max(status.offset, offset)
        self._draw(status)
        return False

    def on_server_event(self, event: server_events.ServerEvent) -> None:
        if event.ieee is None:
            return
        if isinstance(event, KeyEstablished):
            self._get(event.ieee).cbke_suite = event.suite
        elif isinstance(event, KeyEstablishmentFailed):
            LOGGER.warning("key establishment with %s failed: %s (%s)", event.ieee, event.status, event.reason)
        elif isinstance(event, server_events.TransferStarted):
            status = self._get(event.ieee)
            status.file_version, status.size, status.offset = event.file_version, event.size, event.offset
            self._draw(status)
        elif isinstance(event, server_events.TransferOutcome):
            status = self._get(event.ieee)
            if status.outcome is None:  # the first outcome is the one a CHF alerts (CCS08)
                status.outcome = event
                status.file_version = event.file_version
                if event.response == TransferResponse.SUCCESS and status.size:
                    status.offset = status.size
                self._draw(status)
                self._check()

    # -- progress bars ------------------------------------------------------------------------------------------

    def __enter__(self) -> Watch:
        if self.show:
            self._progress.start()
            for status in self.targets:
                self._draw(status)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.show:
            self._progress.stop()

    def _draw(self, status: TargetStatus) -> None:
        if not self.show:
            return
        transfer = self._transfer(status)
        if len(self.status) > MAX_BARS:
            total = sum(s.size for s in self.status.values())
            done = sum(s.offset for s in self.status.values())
            text = aggregate_text(list(self.transfers.values()), len(self.status))
            self._update(ALL_DEVICES, f"{len(self.status)} devices", done, total, lambda: text)
            return

        def line() -> str:
            return target_text(status, transfer, now=time.monotonic(), joining_until=self.joining_until)

        self._update(status.ieee, str(status.ieee), status.offset, status.size, line)

    def _update(self, key: t.EUI64, label: str, done: int, total: int, line: Callable[[], str]) -> None:
        bar = self._bars.get(key)
        if bar is None:
            bar = self._bars[key] = self._progress.add_task(label, total=total or None, status=line)
        self._progress.update(bar, description=label, completed=done, total=total or None, status=line)


@dataclass
class RunResult:
    """A CHF run on a stick: where, which network, every device it followed, and why and when it stopped."""

    port: str
    network: dict[str, Any]
    statuses: list[TargetStatus]
    stopped: StopReason
    wall_time: float
    reconnects: int
    interrupted_by: signal.Signals | None = None

    def exit_code(self) -> int:
        """0 when every target succeeded, 1 otherwise; 128 + the signal number (130, 143) when interrupted."""
        if self.interrupted_by is not None:
            return 128 + int(self.interrupted_by)
        targets = [s for s in self.statuses if s.target]
        if targets:
            return 0 if all(s.succeeded for s in targets) else 1
        return 0 if all(s.outcome is None or s.succeeded for s in self.statuses) else 1

    def as_dict(self) -> dict[str, Any]:
        targets = [s for s in self.statuses if s.target]
        return {
            "radio": RadioKind.EZSP,
            "port": self.port,
            "network": self.network,
            "complete": bool(targets) and all(s.outcome is not None for s in targets),
            "stopped": self.stopped,
            "interrupted": None if self.interrupted_by is None else self.interrupted_by.name,
            "wall_time_s": round(self.wall_time, 3),
            "reconnects": self.reconnects,
            "devices": [s.as_dict() for s in self.statuses],
        }


async def _keep_joining_open(
    node: ChfNode, watch: Watch, seconds: int, permit: Callable[[int], Awaitable[None]] | None = None
) -> None:
    """Permit joining while a target is missing, then close it (an open network admits anyone). Without
    targets (images held for any device) it stays open. `permit` opens it (Smart Energy: to the Device Log only);
    by default bellows' own permit."""
    permit = permit or node.app.permit
    while not watch.all_joined.is_set():
        try:
            await permit(seconds)
        except Exception as exc:  # the stick may be mid-reconnect: whatever failed, try again shortly
            LOGGER.warning("could not open joining: %r", exc)
            await asyncio.sleep(PERMIT_RETRY)
            continue
        watch.joining_until = time.monotonic() + seconds
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watch.all_joined.wait(), seconds)
    watch.joining_until = None
    try:
        await permit(0)
    except Exception as exc:  # joining times out by itself anyway
        LOGGER.warning("could not close joining: %r", exc)


def _notify_known_targets(node: ChfNode, watch: Watch) -> None:
    """Targets zigpy interviewed before the server was attached (they joined while bellows was still starting, or
    come from its database) missed the server's `device_initialized`: hand them to the server now, which notifies
    them as the CHF profile says (`notify`), as it would have at the interview."""
    for status in watch.targets:
        device = node.app.devices.get(status.ieee)
        if device is None:
            continue
        watch.device_joined(device)
        if device.is_initialized:
            node.server.device_initialized(device)


async def _start_security(
    node: ChfNode, watch: Watch, capture: PcapWriter | None, cbke: str
) -> ezsp_security.EzspSmartEnergy:
    """Smart Energy security on the stick: the targets' install codes (or the profile's Device Log), CBKE, APS
    encryption; each CBKE key also goes to the capture, which writes the OTA frames APS-secured with it."""
    device_log = ezsp_security.device_log_of(node.profile, [s.ieee for s in watch.targets])
    security = await ezsp_security.start(node, device_log, listener=watch.on_server_event, cbke=cbke)
    if capture is not None:
        security.notices.append(
            lambda n: capture.set_link_key(n.coordinator, n.device, n.key, label=f"CBKE link key {n.device}")
        )
    return security


@dataclass(frozen=True, slots=True)
class ChfRun:
    """What `ota-emu chf` was asked to do with the stick, once the images are loaded."""

    port: str
    baudrate: int = 115200
    flow_control: str = "software"
    permit: int = MAX_PERMIT
    until: float | None = None
    quiet: bool = False
    cbke: str = ezsp_security.HOST  # Smart Energy: where CBKE's cryptography runs (host, or the stick's library)


async def _run(node: ChfNode, watch: Watch, run: ChfRun, capture: PcapWriter | None = None) -> RunResult:
    started = time.monotonic()
    port, permit = run.port, run.permit
    smart_energy = node.profile.security == SE
    extra = ezsp_security.bellows_config() if smart_energy else None
    await node.start_ezsp(port, baudrate=run.baudrate, flow_control=run.flow_control, ezsp_extra=extra)
    if capture is not None:
        capture.attach_radio(node.app)
    security = await _start_security(node, watch, capture, run.cbke) if smart_energy else None
    network = _network_summary(node.app)
    interruption = Interruption()
    tasks: list[asyncio.Task[None]] = []
    try:
        with interruption.installed():
            if not run.quiet:
                click.echo(
                    f"CHF on {port}: PAN {network['pan_id']}, channel {network['channel']}, IEEE {network['ieee']}; "
                    f"{len(node.store)} image(s) for {len(watch.targets)} target(s)",
                    err=True,
                )
            node.server.add_listener(watch.on_server_event)
            node.app.add_listener(watch)
            _notify_known_targets(node, watch)
            if permit:
                opener = security.permit if security is not None else None
                tasks.append(asyncio.get_running_loop().create_task(_keep_joining_open(node, watch, permit, opener)))
            stopped = await _until_done(watch, interruption, run.until)
    finally:
        for task in tasks:
            task.cancel()
        if security is not None:
            security.stop()
        await node.stop()
    elapsed = time.monotonic() - started
    signum = interruption.signal if stopped == StopReason.SIGNAL else None
    return RunResult(port, network, list(watch.status.values()), stopped, elapsed, node.reconnects, signum)


def _network_summary(app: Any) -> dict[str, Any]:
    """The network the stick formed or resumed, as the table caption and the JSON report give it."""
    network = app.state.network_info
    return {
        "ieee": str(app.state.node_info.ieee),
        "pan_id": f"0x{int(network.pan_id):04X}",
        "extended_pan_id": str(network.extended_pan_id),
        "channel": int(network.channel),
    }


async def _until_done(watch: Watch, interruption: Interruption, until: float | None) -> StopReason:
    """Wait until every target has its outcome, `until` seconds pass or a signal comes; say which came first."""
    loop = asyncio.get_running_loop()
    waits = [loop.create_task(interruption.event.wait()), loop.create_task(watch.all_done.wait())]
    try:
        await asyncio.wait(waits, timeout=until, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
    if watch.all_done.is_set():
        if watch.node is not None:
            await watch.node.app.sent(within=FINAL_SEND_GRACE)  # the last Upgrade End Response leaves the stick
        return StopReason.OUTCOMES
    return StopReason.SIGNAL if interruption.event.is_set() else StopReason.UNTIL


def _outcome_text(status: TargetStatus) -> tuple[str, str]:
    outcome = status.outcome
    if outcome is None:
        return "-", "-"
    return outcome.response.name.lower().replace("_", " "), f"{int(outcome.response)} (0x{int(outcome.alert_code):04X})"


def print_result(result: RunResult, *, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result.as_dict(), indent=2) + "\n")
        return
    network = result.network
    interrupted = "" if result.interrupted_by is None else f" (interrupted by {result.interrupted_by.name})"
    table = Table(
        title=f"CHF on {result.port}{interrupted}",
        caption=f"PAN {network['pan_id']}, channel {network['channel']}; stopped by {result.stopped} after "
        f"{result.wall_time:.1f} s" + (f"; {result.reconnects} reconnect(s)" if result.reconnects else ""),
    )
    for column in ("EUI-64", "target", "on network", "image", "served", "outcome", "CCS08", "note"):
        table.add_column(column)
    for status in result.statuses:
        outcome, code = _outcome_text(status)
        table.add_row(
            str(status.ieee),
            "yes" if status.target else "no",
            f"yes, 0x{status.nwk:04X}" if status.joined and status.nwk is not None else "no",
            "-" if status.file_version is None else f"0x{status.file_version:08X}",
            f"{status.offset}/{status.size}" if status.size else "-",
            outcome,
            code,
            "" if status.outcome is None else status.outcome.reason,
        )
    Console(width=None if sys.stdout.isatty() else 160).print(table)


@click.command(
    "chf",
    cls=AliasedCommand,
    aliases={"--profile": "--chf", "--device": "--port"},
    epilog=example(
        "ota-emu chf --port /dev/ttyUSB0 --image ppmid.ota --target 00:DB:12:34:56:78:90:A4",
        "ota-emu chf --port tcp://127.0.0.1:PORT --chf my-chf.toml --image ppmid.ota --target 00:DB:12:34:56:78:90:A4",
    ),
)
@click.option(
    "--radio",
    type=click.Choice([RadioKind.EZSP.value]),
    default=RadioKind.EZSP.value,
    show_default=True,
    help="Coordinator type (in-process runs are `ota-emu run`).",
)
@click.option(
    "--port",
    "port",
    required=True,
    type=PortParam(),
    metavar="PORT",
    help="The stick's serial port (/dev/ttyUSB0), or tcp://HOST:PORT / socket://HOST:PORT for a network bridge "
    "or `ota-emu ncp`.",
)
@click.option("--baudrate", type=click.IntRange(1200), default=115200, show_default=True, help="Serial speed.")
@click.option(
    "--flow-control",
    type=click.Choice(FLOW_CONTROL),
    default="software",
    show_default=True,
    help="Serial flow control: software (XON/XOFF, bellows' default) or hardware (RTS/CTS); bellows takes none "
    "as software.",
)
@click.option(
    "--chf", "profile_path", type=ProfileParam(), help="CHF profile: a TOML file or a bundled name (default: chf)."
)
@click.option(
    "--image",
    "image_paths",
    type=click.Path(path_type=Path),
    multiple=True,
    help="Upgrade file to hold for the --target devices (repeatable).",
)
@click.option("--target", "targets", type=Eui64Param(), multiple=True, help="EUI-64 of a target device (repeatable).")
@click.option(
    "--permit",
    type=click.IntRange(0, MAX_PERMIT),
    default=MAX_PERMIT,
    show_default=True,
    help="Open joining this many seconds at a time while a target is missing (0: never open it).",
)
@click.option(
    "--until", type=FiniteFloat(1.0), help="Stop this many seconds after the network is up, whatever the outcomes."
)
@click.option(
    "--pcap", type=click.Path(path_type=Path, dir_okay=False), help="Write what the CHF's radio sent and received."
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Keep zigpy's device database here (zigbee.db), so a restarted CHF knows the devices that joined before.",
)
@click.option(
    "--cbke",
    type=click.Choice(["host", "ncp"]),
    default="host",
    show_default=True,
    help="Under Smart Energy security, where key establishment's cryptography runs: on this host, or in the "
    "stick's CBKE library with its own certificate.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON (and no progress).")
def command(
    radio: str,
    port: str,
    baudrate: int,
    flow_control: str,
    profile_path: Path | None,
    image_paths: tuple[Path, ...],
    targets: tuple[t.EUI64, ...],
    permit: int,
    until: float | None,
    pcap: Path | None,
    state_dir: Path | None,
    cbke: str,
    as_json: bool,
) -> int:
    """Run the CHF OTA server on an EZSP coordinator through bellows and upgrade the target devices.

    It forms the profile's network on a blank stick or resumes the one the stick has, holds each --image for
    the --target devices (and the profile's [[images]] for their DeviceIDLists), opens joining while a target
    is missing, and shows each transfer as the CHF sees it. It stops when every target has a transfer outcome
    (the first one reported, with CCS08 meaning: 0 success, 1 image discarded, 2 hardware version mismatch,
    3 file transfer failure), at --until, or on Ctrl-C, then prints a table of the targets. Exit 0 when every
    target's transfer succeeded, 1 otherwise, 2 for bad input or a port that cannot be used.
    """
    if pcap is not None:
        check_output_file(pcap, "the pcap file to write", inputs=[*image_paths, profile_path])
    chf = load_chf(profile_path or bundled("chf"))
    if cbke != ezsp_security.HOST and chf.security != SE:
        raise InputError(f'--cbke {cbke}: {chf.source} asks for no Smart Energy security (expected security = "se")')
    store = _held_images(chf, image_paths, targets)
    everyone = list(dict.fromkeys([*targets, *(ieee for held in store for ieee in held.device_ids)]))
    run = ChfRun(port, baudrate, flow_control, permit, until, quiet=as_json, cbke=cbke)
    capture = (
        PcapWriter(pcap, network_key=parse_network_key(chf.network_key), pan_id=chf.pan_id)
        if pcap is not None
        else None
    )

    async def main() -> RunResult:
        watch = Watch(everyone, progress=not as_json)
        node = ChfNode(chf, store, clock.Clock(), observers=[watch.observe], state_dir=state_dir)
        watch.node = node
        with watch:
            return await _run(node, watch, run, capture)

    try:
        result = clock.run(main, virtual=False)
    finally:
        if capture is not None:
            capture.close()
    if capture is not None and chf.security == SE:
        print_capture_keys(capture)
    print_result(result, as_json=as_json)
    return result.exit_code()


def _held_images(chf: ChfProfile, image_paths: tuple[Path, ...], targets: tuple[t.EUI64, ...]) -> ImageStore:
    """The --image files held for the --target devices, and the profile's [[images]]; refused when empty."""
    if image_paths and not targets:
        raise InputError("--image: no --target EUI64 given (expected the devices the image is held for)")
    images = load_images(image_paths, device_ids=targets)
    store = ImageStore.from_profile(chf, images)
    if not len(store):
        raise InputError(f"{chf.source}: no image to serve (expected --image FILE or [[images]] in the CHF profile)")
    return store
