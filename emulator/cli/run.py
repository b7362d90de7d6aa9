"""`ota-emu run`: emulated PPMIDs/HCALCSs upgrading from the in-process CHF.

The HAN (zigpy, the devices, the CHF) is imported when a run starts, not with the command: `ota-emu run --help`
and a refused option cost no more than click.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from emulator.cli.params import FiniteFloat, ProfileParam, example
from emulator.errors import InputError
from emulator.files import check_output_dir, check_output_file
from emulator.radio.kind import RadioKind

if TYPE_CHECKING:
    from emulator.han.network import Han
    from emulator.radio.capture import PcapWriter

DEFAULT_LIMIT_VIRTUAL = 7 * 86400.0
DEFAULT_LIMIT_REAL = 600.0

probability = FiniteFloat(0.0, 1.0)


@click.command(
    "run",
    epilog=example(
        "ota-emu run --device ppmid --count 10 --image ppmid.ota --loss 0.2 --seed 7",
        "ota-emu run --device hcalcs --image hcalcs.ota --activate --alert-log alerts.jsonl --json",
    ),
)
@click.option("--chf", "chf_path", type=ProfileParam(), help="CHF profile: a TOML file or bundled name (default: chf).")
@click.option(
    "--device",
    "device_paths",
    type=ProfileParam(),
    multiple=True,
    help="Device profile: a TOML file or a bundled name (ppmid, hcalcs, faults/NAME); repeat for more "
    "(default: ppmid and hcalcs).",
)
@click.option("--count", type=click.IntRange(1, 10000), default=1, show_default=True, help="Devices per profile.")
@click.option(
    "--image",
    "image_paths",
    type=click.Path(path_type=Path),
    multiple=True,
    help="Upgrade file to serve, held for every device of the run (repeatable).",
)
@click.option("--virtual-time/--real-time", default=True, show_default=True, help="Protocol time runs virtual (fast).")
@click.option(
    "--radio",
    type=click.Choice([kind.value for kind in RadioKind]),
    default=RadioKind.LOOPBACK.value,
    show_default=True,
    help="The CHF's radio: zigpy's loopback app, or bellows' EZSP app on a virtual NCP in this process.",
)
@click.option("--loss", type=probability, default=0.0, show_default=True, help="Frame loss probability per link.")
@click.option("--duplicate", type=probability, default=0.0, show_default=True, help="Frame duplication probability.")
@click.option("--reorder", type=probability, default=0.0, show_default=True, help="Probability a frame is overtaken.")
@click.option("--latency", type=FiniteFloat(0.0, 10.0), default=0.004, show_default=True, help="Link latency (s).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random choice of the run.")
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False), help="Persist device state here.")
@click.option("--until", "limit", type=FiniteFloat(1.0), help="Stop after this much protocol time (s).")
@click.option("--activate", is_flag=True, help="Send Activate Firmware to each HCALCS once it holds its image.")
@click.option("--activate-after", type=FiniteFloat(0.0), help="Future-date that activation by N seconds.")
@click.option(
    "--pcap", type=click.Path(path_type=Path, dir_okay=False), help="Write what crossed the air to this pcap."
)
@click.option(
    "--alert-log",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the run's signed GBCS messages (CCS08, CS09, CS06) here as JSON lines, signers' public keys beside.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON (and no progress bars).")
def command(
    chf_path: Path | None,
    device_paths: tuple[Path, ...],
    count: int,
    image_paths: tuple[Path, ...],
    virtual_time: bool,
    radio: str,
    loss: float,
    duplicate: float,
    reorder: float,
    latency: float,
    seed: int,
    state_dir: Path | None,
    limit: float | None,
    activate: bool,
    activate_after: float | None,
    pcap: Path | None,
    alert_log: Path | None,
    as_json: bool,
) -> int:
    """Run emulated PPMIDs and HCALCSs against the CHF OTA server in this process, show each transfer and
    end with a table of outcomes (protocol time and wall time). Exit 0 when every device ended upgraded,
    held (an HCALCS waiting for Activate Firmware) or had no image meant for it; 1 otherwise."""
    from emulator.chf.store import load_images
    from emulator.han.alert_log import check_log_path
    from emulator.han.gbcs import HanGbcs
    from emulator.han.network import Han, HanOptions, expand
    from emulator.profiles import bundled, load_chf, load_device
    from emulator.radio.air import LinkModel

    _check_outputs([*image_paths, *device_paths, chf_path], pcap=pcap, alert_log=alert_log, state_dir=state_dir)
    chf = load_chf(chf_path or bundled("chf"))
    profiles = [load_device(p) for p in device_paths] or [load_device(bundled(n)) for n in ("ppmid", "hcalcs")]
    try:
        devices = expand(profiles, count)
    except ValueError as exc:
        raise InputError(f"--device: {exc}") from None
    images = load_images(image_paths, device_ids=[d.ieee for d in devices])
    if not images and not chf.images and chf.image_dir is None:
        raise InputError(f"{chf.source}: no image to serve (expected --image FILE or [[images]] in the CHF profile)")
    options = HanOptions(
        seed=seed,
        link=LinkModel(latency=latency, loss=loss, duplicate=duplicate, reorder=reorder),
        state_dir=state_dir,
        activate_hcalcs=activate,
        activate_after=activate_after,
        radio=RadioKind(radio),
    )
    limit = limit or (DEFAULT_LIMIT_VIRTUAL if virtual_time else DEFAULT_LIMIT_REAL)
    if alert_log is not None:
        check_log_path(alert_log)
    han = Han(chf, devices, images, options)
    gbcs = HanGbcs(han) if alert_log is not None else None
    code = run_han(han, limit=limit, virtual=virtual_time, as_json=as_json, pcap=pcap)
    if gbcs is not None and alert_log is not None:
        gbcs.alert_log.write(alert_log)
        click.echo(f"{gbcs.alert_log.summary()} written to {alert_log}", err=True)
    return code


def _check_outputs(
    inputs: list[Path | None], *, pcap: Path | None, alert_log: Path | None, state_dir: Path | None
) -> None:
    """Refuse, before any work, an output path that names an input or another output."""
    if pcap is not None:
        check_output_file(pcap, "the pcap file to write", inputs=[*inputs, alert_log])
    if alert_log is not None:
        check_output_file(alert_log, "the alert log file to write", inputs=[*inputs, pcap], create_parents=True)
    if state_dir is not None:
        check_output_dir(state_dir, "a folder for the devices' state", inputs=[*inputs, pcap, alert_log])


class Interruption:
    """Ctrl-C (SIGINT) or SIGTERM during a run: ends the wait for the devices, so that the run still prints what
    was decided so far, keeps its capture and alert log, and exits 128 + the signal number (130, 143)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        self.event = asyncio.Event()

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interruption]:
        loop = asyncio.get_running_loop()
        for signum in self.SIGNALS:
            loop.add_signal_handler(signum, self._received, signum)
        try:
            yield self
        finally:
            for signum in self.SIGNALS:
                loop.remove_signal_handler(signum)

    def _received(self, signum: signal.Signals) -> None:
        if self.signal is None:
            self.signal = signum
        self.event.set()

    @property
    def name(self) -> str | None:
        return None if self.signal is None else self.signal.name

    @property
    def exit_code(self) -> int | None:
        return None if self.signal is None else 128 + int(self.signal)


async def settle_or_interrupt(han: Han, limit: float, interruption: Interruption) -> bool:
    """`han.settle(limit)`, cut short by a signal: True when every device settled."""
    settle = asyncio.ensure_future(han.settle(limit))
    interrupted = asyncio.ensure_future(interruption.event.wait())
    await asyncio.wait([settle, interrupted], return_when=asyncio.FIRST_COMPLETED)
    interrupted.cancel()
    if settle.done():
        return settle.result()
    settle.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await settle
    return False


def run_han(han: Han, *, limit: float, virtual: bool, as_json: bool, pcap: Path | None = None) -> int:
    """Start `han`, wait until it settles (or `limit` protocol seconds, or a signal), print outcomes; the exit
    code (128 + the signal number when interrupted)."""
    from emulator import clock
    from emulator.cli.display import RunProgress, print_outcome
    from emulator.han.security import attach_capture
    from emulator.radio.capture import PcapWriter, parse_network_key

    chf = han.chf_profile
    capture = (
        PcapWriter(pcap, network_key=parse_network_key(chf.network_key), pan_id=chf.pan_id)
        if pcap is not None
        else None
    )
    if capture is not None:
        capture.attach(han.air)
        if han.security.enabled:
            attach_capture(han.security, capture)

    interruption = Interruption()

    async def main() -> tuple[bool, float, float]:
        await han.start()
        with RunProgress(han.summaries, enabled=not as_json) as progress, interruption.installed():
            han.add_listener(progress)
            settled = await settle_or_interrupt(han, limit, interruption)
        protocol, wall = han.clock.now(), han.clock.wall_elapsed()
        await han.stop()
        return settled, protocol, wall

    try:
        settled, protocol, wall = clock.run(main, virtual=virtual)
    finally:
        if capture is not None:
            capture.close()
    if capture is not None and han.security.enabled:
        print_capture_keys(capture)
    summaries = list(han.summaries.values())
    print_outcome(
        summaries,
        protocol_time=protocol,
        wall_time=wall,
        as_json=as_json,
        extra={"settled": settled, "interrupted": interruption.name},
        interrupted=interruption.name,
    )
    if interruption.exit_code is not None:
        return interruption.exit_code
    ok = settled and all(s.result.ok for s in summaries)
    return 0 if ok else 1


def tshark_command(capture: PcapWriter) -> str:
    """The one-line tshark command that opens `capture` with every key it needs (network, install-code, CBKE)."""
    return shlex.join(["tshark", "-r", str(capture.path), *capture.tshark_options()])


def print_capture_keys(capture: PcapWriter) -> None:
    """Write the keys file beside a finished capture and say, on stderr, where it is and how to read the capture."""
    path = capture.write_keys()
    sys.stderr.write(f"keys for {capture.path} written to {path} (Wireshark zigbee_pc_keys rows); read it with:\n")
    sys.stderr.write(tshark_command(capture) + "\n")
