"""`ota-emu ncp`: run a virtual Silicon Labs EZSP coordinator that bellows, zigpy-cli or Home Assistant can use."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import click

from emulator.clock import Clock
from emulator.device import events as device_events
from emulator.device.device import EmulatedDevice
from emulator.errors import InputError
from emulator.han import FIRST_DEVICE_NWK, expand
from emulator.ncp.ezsp import SUPPORTED_VERSIONS
from emulator.ncp.server import PTY, VirtualNcp
from emulator.profiles import DeviceProfile, load_device
from emulator.radio.air import Air


def _report(event: device_events.DeviceEvent) -> None:
    """The few device events a lab watching the dongle's terminal wants to see."""
    if isinstance(event, device_events.Activated):
        verdict = "now runs" if event.success else "failed to activate"
        click.echo(f"Device {event.ieee} {verdict} 0x{event.new_version:08X}")
    elif isinstance(event, device_events.WaitingToUpgrade):
        click.echo(f"Device {event.ieee} holds 0x{event.version:08X}, waiting for Activate Firmware")
    elif isinstance(event, device_events.ImageVerified) and not event.ok:
        click.echo(f"Device {event.ieee} rejected the image: {event.reason}")


async def _join_devices(
    ncp: VirtualNcp, profiles: list[DeviceProfile], seed: int, devices: list[EmulatedDevice]
) -> None:
    """Start the devices once the host has a network up and has opened joining, as real devices would join, on
    real time: the host on the other end of the socket runs on the wall clock."""
    await ncp.wait_for_joining()
    clock = Clock()
    for index, profile in enumerate(profiles):
        nwk = profile.nwk if profile.nwk is not None else FIRST_DEVICE_NWK + index
        device = EmulatedDevice(profile, ncp.air, clock, nwk=nwk, seed=seed * 7919 + index)
        device.add_listener(_report)
        await device.start()
        devices.append(device)
        click.echo(f"Device {profile.kind.upper()} {profile.ieee} joined as NWK 0x{nwk:04X}")


async def _serve(
    listen: str, ezsp_version: int, state: str | None, seed: int, profiles: list[DeviceProfile], more: tuple[str, ...]
) -> None:
    air = Air(seed=seed)  # emulated devices join this air once `ncp.wait_for_network()` returns
    ncp = VirtualNcp(air, ezsp_version=ezsp_version, state_path=state, seed=seed, listen=listen)
    # Further sticks on the same air (`--listen` repeated): each is a separate NCP that can join the network.
    others = [VirtualNcp(air, ezsp_version=ezsp_version, seed=seed + n, listen=url) for n, url in enumerate(more, 1)]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with ncp, contextlib.AsyncExitStack() as stack:
        where = "on" if listen == PTY else "listening on"
        click.echo(f"Virtual EZSP v{ezsp_version} NCP {where} {ncp.url}")
        for other in others:
            await stack.enter_async_context(other)
            click.echo(f"Virtual EZSP v{ezsp_version} NCP listening on {other.url}")
        network = ncp.state
        if network.formed:
            click.echo(
                f"Network: PAN 0x{network.pan_id:04X}, channel {network.channel}, "
                f"extended PAN {network.extended_pan_id}, IEEE {ncp.stack.ieee}"
            )
        else:
            click.echo(f"No network yet (IEEE {ncp.stack.ieee}): the host will form one")
        devices: list[EmulatedDevice] = []
        joining = loop.create_task(_join_devices(ncp, profiles, seed, devices))
        await stop.wait()
        joining.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await joining
        for device in devices:
            await device.stop()
    click.echo("Stopped" + (f"; network state saved to {state}" if state else ""))


@click.command("ncp")
@click.option(
    "--listen",
    metavar="tcp://HOST:PORT",
    multiple=True,
    help="Serve the serial link over TCP (the default, on tcp://127.0.0.1:0; PORT 0 picks a free port). "
    "Repeat it for several sticks on the same virtual air (one forms the network, the others join it); "
    "--state is the first one's.",
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
    "--state",
    type=click.Path(dir_okay=False),
    help="JSON file holding the network (created if missing): the NCP resumes it on the next run.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the EUI64 of a new NCP and for faults.")
@click.option(
    "--device",
    "device_paths",
    type=click.Path(path_type=Path),
    multiple=True,
    help="Device profile (e.g. profiles/ppmid.toml) of an emulated device on the dongle's air; repeatable.",
)
@click.option("--count", type=click.IntRange(1, 1000), help="Devices per --device profile, with consecutive EUI-64s.")
def command(
    listen: tuple[str, ...],
    use_pty: bool,
    ezsp_version: str,
    state: str | None,
    seed: int,
    device_paths: tuple[Path, ...],
    count: int | None,
) -> None:
    """Run a virtual EZSP NCP (ASH + EZSP over TCP or a pty) until Ctrl-C.

    It prints the serial URL or pty path to give to the host, e.g.
    `zigpy radio ezsp tcp://127.0.0.1:PORT info` or bellows' `device: {path: ...}`. The network it forms or
    resumes is the virtual air that emulated devices join. One host at a time: a new connection replaces the
    current one. On Ctrl-C or SIGTERM the network state is saved and the command exits 0.

    With --device, emulated PPMIDs/HCALCSs live on that air: they join once the host has formed or resumed the
    network and opened joining (one line each), answer its interview and upgrade from its OTA server, e.g. from
    `ota-emu chf --radio ezsp --device tcp://127.0.0.1:PORT --image FILE --target EUI64`.
    """
    if listen and use_pty:
        raise click.UsageError("choose either --listen or --pty, not both")
    if count is not None and not device_paths:
        raise click.UsageError("--count needs at least one --device PROFILE")
    try:
        profiles = expand([load_device(p) for p in device_paths], count or 1)
    except ValueError as exc:
        raise InputError(f"--device: {exc}") from None
    first, *more = listen or ("tcp://127.0.0.1:0",)
    asyncio.run(_serve(PTY if use_pty else first, int(ezsp_version), state, seed, profiles, tuple(more)))
