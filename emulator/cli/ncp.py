"""`ota-emu ncp`: run a virtual Silicon Labs EZSP coordinator that bellows, zigpy-cli or Home Assistant can use."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from pathlib import Path
from typing import Any

import click

from emulator.cli.params import ProfileParam, example, warn_deprecated
from emulator.clock import Clock
from emulator.device import events as device_events
from emulator.device import security_events
from emulator.device.device import EmulatedDevice
from emulator.errors import InputError
from emulator.files import check_output_dir, check_output_file
from emulator.ncp.devices import NcpDeviceSecurity
from emulator.ncp.ezsp import SUPPORTED_VERSIONS
from emulator.ncp.server import DEFAULT_TCP, PTY, ListenError, VirtualNcp
from emulator.profiles import FIRST_DEVICE_NWK, DeviceProfile, expand, load_device
from emulator.radio.air import Air

STATE_FILE = "ncp.json"  # the NCP's network state inside --state-dir


class Output:
    """The lines the command prints: text for a person, or with --json one JSON object per line (`event` names
    what happened), so a script can read the listening URL from the first line."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self._refused: set[object] = set()

    def __call__(self, event: str, text: str, **fields: Any) -> None:
        click.echo(json.dumps({"event": event, **fields}) if self.as_json else text)

    def device_event(self, event: device_events.DeviceEvent) -> None:
        """The few device events a lab watching the dongle's terminal wants to see."""
        ieee = str(event.ieee)
        if isinstance(event, device_events.Activated):
            verdict = "now runs" if event.success else "failed to activate"
            self(
                "activated" if event.success else "activation_failed",
                f"Device {event.ieee} {verdict} 0x{event.new_version:08X}",
                ieee=ieee,
                version=f"0x{event.new_version:08X}",
            )
        elif isinstance(event, device_events.WaitingToUpgrade):
            self(
                "held",
                f"Device {event.ieee} holds 0x{event.version:08X}, waiting for Activate Firmware",
                ieee=ieee,
                version=f"0x{event.version:08X}",
            )
        elif isinstance(event, device_events.ImageVerified) and not event.ok:
            self("rejected", f"Device {event.ieee} rejected the image: {event.reason}", ieee=ieee, reason=event.reason)
        else:
            self.security_event(event)

    def security_event(self, event: device_events.DeviceEvent) -> None:
        """Smart Energy security: a refused join (once per device), CBKE's outcome."""
        ieee = str(event.ieee)
        if isinstance(event, security_events.NotAdmitted) and event.ieee not in self._refused:
            self._refused.add(event.ieee)
            self(
                "not_admitted",
                f"Device {event.ieee} was not admitted: {event.reason}; it keeps trying",
                ieee=ieee,
                reason=event.reason,
            )
        elif isinstance(event, security_events.KeyEstablished):
            self(
                "key_established",
                f"Device {event.ieee} established a link key with {event.partner} (CBKE suite {event.suite})",
                ieee=ieee,
                suite=event.suite,
                partner=str(event.partner),
            )
        elif isinstance(event, security_events.KeyEstablishmentFailed):
            self(
                "key_establishment_failed",
                f"Device {event.ieee} failed key establishment: {event.status} ({event.reason})",
                ieee=ieee,
                status=event.status,
                reason=event.reason,
            )


async def join_devices(
    ncp: VirtualNcp, profiles: list[DeviceProfile], seed: int, devices: list[EmulatedDevice], out: Output
) -> None:
    """Start the devices on the NCP's air once the host has a network up and has opened joining, as real devices
    would join (NWK addresses from FIRST_DEVICE_NWK on, unless a profile names one), one line each. `ota-emu ncp`
    runs this on real time: the host on the other end of the socket runs on the wall clock."""
    await ncp.wait_for_joining()
    clock = Clock()
    security = NcpDeviceSecurity(ncp.stack)  # Smart Energy devices join by install code and run CBKE
    joins = []
    for index, profile in enumerate(profiles):
        nwk = profile.nwk if profile.nwk is not None else FIRST_DEVICE_NWK + index
        radio = security.radio(profile, ncp.air)
        device = EmulatedDevice(profile, radio, clock, nwk=nwk, seed=seed * 7919 + index)
        security.attach(device, radio)
        device.add_listener(out.device_event)
        devices.append(device)

        def joined(profile: DeviceProfile = profile, nwk: int = nwk) -> None:
            out(
                "joined",
                f"Device {profile.kind.upper()} {profile.ieee} joined as NWK 0x{nwk:04X}",
                ieee=str(profile.ieee),
                kind=profile.kind,
                nwk=f"0x{nwk:04X}",
            )

        joins.append(security.join(device, radio, joined))
    await asyncio.gather(*joins)


def _facts(ncp: VirtualNcp, ezsp_version: int) -> dict[str, object]:
    """What the first "listening" line says of the NCP: its URL, EZSP version, EUI-64 and network, if any."""
    network = ncp.state
    facts: dict[str, object] = {"url": ncp.url, "ezsp_version": ezsp_version, "ieee": str(ncp.stack.ieee)}
    facts["network"] = (
        {"pan_id": f"0x{network.pan_id:04X}", "channel": network.channel, "extended_pan_id": network.extended_pan_id}
        if network.formed
        else None
    )
    return facts


async def _serve(
    listen: str,
    ezsp_version: int,
    state: str | None,
    seed: int,
    profiles: list[DeviceProfile],
    out: Output,
    more: tuple[str, ...] = (),
    cbke_library: bool = True,
) -> None:
    air = Air(seed=seed)  # emulated devices join this air once `ncp.wait_for_network()` returns
    ncp, *others = [
        VirtualNcp(
            air,
            ezsp_version=ezsp_version,
            seed=seed + n,
            listen=url,
            state_path=_nth_state(state, n + 1) if n else state,
            cbke_library=cbke_library,
        )
        for n, url in enumerate((listen, *more))
    ]  # further sticks on the same air (`--listen` repeated) can join the first one's network (ncp-2.json, ...)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with ncp, contextlib.AsyncExitStack() as stack:
        where = "on" if listen == PTY else "listening on"
        network = ncp.state
        out("listening", f"Virtual EZSP v{ezsp_version} NCP {where} {ncp.url}", **_facts(ncp, ezsp_version))
        for other in others:
            await stack.enter_async_context(other)
            out("listening", f"Virtual EZSP v{ezsp_version} NCP listening on {other.url}", url=other.url,
                ezsp_version=ezsp_version, ieee=str(other.stack.ieee), network=None)  # fmt: skip
        if not out.as_json:
            if network.formed:
                click.echo(
                    f"Network: PAN 0x{network.pan_id:04X}, channel {network.channel}, "
                    f"extended PAN {network.extended_pan_id}, IEEE {ncp.stack.ieee}"
                )
            else:
                click.echo(f"No network yet (IEEE {ncp.stack.ieee}): the host will form one")
        devices: list[EmulatedDevice] = []
        joining = loop.create_task(join_devices(ncp, profiles, seed, devices, out))
        await stop.wait()
        joining.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await joining
        for device in devices:
            await device.stop()
    out("stopped", "Stopped" + (f"; network state saved to {state}" if state else ""), state_file=state)


@click.command(
    "ncp",
    epilog=example(
        "ota-emu ncp --listen tcp://127.0.0.1:0 --device ppmid --state-dir lab/",
        "ota-emu ncp --json --device hcalcs --count 3",
    ),
)
@click.option(
    "--listen",
    metavar="tcp://HOST:PORT",
    multiple=True,
    help="Serve the serial link over TCP (the default, on tcp://127.0.0.1:0; PORT 0 picks a free port). "
    "Repeat it for several sticks on the same virtual air (one forms the network, the others join it); "
    "--state-dir keeps each one's network (ncp.json, ncp-2.json, ...).",
)
@click.option("--pty", "use_pty", is_flag=True, help="Serve the serial link on a new pseudo-terminal instead.")
@click.option(
    "--ezsp-version",
    type=click.Choice([str(v) for v in SUPPORTED_VERSIONS]),
    default="13",
    show_default=True,
    help="EZSP protocol version to speak (13 = EmberZNet 7.4, 14 = 8.0, 8 = 6.7).",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help=f"Keep the network here ({STATE_FILE}, created if missing): the NCP resumes it on the next run.",
)
@click.option(
    "--state",
    "state_file",
    type=click.Path(dir_okay=False),
    hidden=True,
    help="Deprecated: the state file itself (use --state-dir).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the EUI64 of a new NCP and for faults.")
@click.option(
    "--device",
    "device_paths",
    type=ProfileParam(),
    multiple=True,
    help="Device profile (a TOML file or a bundled name: ppmid, hcalcs, faults/NAME) of an emulated device on the "
    "dongle's air; repeatable.",
)
@click.option("--count", type=click.IntRange(1, 1000), help="Devices per --device profile, with consecutive EUI-64s.")
@click.option(
    "--no-cbke-library",
    "no_cbke_library",
    is_flag=True,
    help="Be a firmware built without the Smart Energy CBKE library, as most coordinator sticks are: its CBKE "
    "commands answer LIBRARY_NOT_PRESENT (for trying `--cbke ncp` against such a stick).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line; the first has the URL.")
def command(
    listen: tuple[str, ...],
    use_pty: bool,
    ezsp_version: str,
    state_dir: Path | None,
    state_file: str | None,
    seed: int,
    device_paths: tuple[Path, ...],
    count: int | None,
    no_cbke_library: bool,
    as_json: bool,
) -> None:
    """Run a virtual EZSP NCP (ASH + EZSP over TCP or a pty) until Ctrl-C.

    It prints the serial URL or pty path to give to the host, e.g.
    `zigpy radio ezsp tcp://127.0.0.1:PORT info` or bellows' `device: {path: ...}`. The network it forms or
    resumes is the virtual air that emulated devices join. One host at a time: a new connection replaces the
    current one. On Ctrl-C or SIGTERM the network state is saved and the command exits 0.

    With --device, emulated PPMIDs/HCALCSs live on that air: they join once the host has formed or resumed the
    network and opened joining (one line each), answer its interview and upgrade from its OTA server, e.g. from
    `ota-emu chf --port tcp://127.0.0.1:PORT --image FILE --target EUI64`. Under Smart Energy security (a profile's
    default) a device joins with its install code only when the host gave the NCP that code, then runs key
    establishment with the coordinator and upgrades APS-encrypted.
    """
    if listen and use_pty:
        raise click.UsageError("choose either --listen or --pty, not both")
    if count is not None and not device_paths:
        raise click.UsageError("--count needs at least one --device PROFILE")
    state = _state_path(state_dir, state_file)
    try:
        profiles = expand([load_device(p) for p in device_paths], count or 1)
    except ValueError as exc:
        raise InputError(f"--device: {exc}") from None
    for url in listen:
        if not url.startswith("tcp://"):  # an in-process port would be out of every other program's reach
            raise ListenError(f"--listen {url}: expected tcp://HOST:PORT (PORT 0 picks a free port)")
    first, *more = listen or (DEFAULT_TCP,)
    where = PTY if use_pty else first
    serve = _serve(
        where, int(ezsp_version), state, seed, profiles, Output(as_json), tuple(more), cbke_library=not no_cbke_library
    )
    asyncio.run(serve)


def _nth_state(state: str | None, n: int) -> str | None:
    """The state file of the n-th stick of one `ota-emu ncp`, beside the first one's."""
    if state is None:
        return None
    first = Path(state)
    return str(first.with_name(f"{first.stem}-{n}{first.suffix}"))


def _state_path(state_dir: Path | None, state_file: str | None) -> str | None:
    """The NCP's state file: inside --state-dir (created), or the deprecated --state FILE as it was given."""
    if state_dir is not None and state_file is not None:
        raise click.UsageError("choose either --state-dir or --state, not both")
    if state_file is not None:
        warn_deprecated("--state FILE", f"--state-dir DIR (the NCP keeps DIR/{STATE_FILE})")
        check_output_file(state_file, "the NCP's network state file")
        return state_file
    if state_dir is None:
        return None
    check_output_dir(state_dir, "a folder for the NCP's network state")
    state_dir.mkdir(parents=True, exist_ok=True)
    return str(state_dir / STATE_FILE)
