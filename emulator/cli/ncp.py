"""`ota-emu ncp`: run a virtual Silicon Labs EZSP coordinator that bellows, zigpy-cli or Home Assistant can use."""

from __future__ import annotations

import asyncio
import signal

import click

from emulator.ncp.ezsp import SUPPORTED_VERSIONS
from emulator.ncp.server import PTY, VirtualNcp
from emulator.radio.air import Air


async def _serve(listen: str, ezsp_version: int, state: str | None, seed: int) -> None:
    air = Air(seed=seed)  # emulated devices join this air once `ncp.wait_for_network()` returns
    ncp = VirtualNcp(air, ezsp_version=ezsp_version, state_path=state, seed=seed, listen=listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with ncp:
        where = "on" if listen == PTY else "listening on"
        click.echo(f"Virtual EZSP v{ezsp_version} NCP {where} {ncp.url}")
        network = ncp.state
        if network.formed:
            click.echo(
                f"Network: PAN 0x{network.pan_id:04X}, channel {network.channel}, "
                f"extended PAN {network.extended_pan_id}, IEEE {ncp.stack.ieee}"
            )
        else:
            click.echo(f"No network yet (IEEE {ncp.stack.ieee}): the host will form one")
        await stop.wait()
    click.echo("Stopped" + (f"; network state saved to {state}" if state else ""))


@click.command("ncp")
@click.option(
    "--listen",
    metavar="tcp://HOST:PORT",
    help="Serve the serial link over TCP (the default, on tcp://127.0.0.1:0; PORT 0 picks a free port).",
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
def command(listen: str | None, use_pty: bool, ezsp_version: str, state: str | None, seed: int) -> None:
    """Run a virtual EZSP NCP (ASH + EZSP over TCP or a pty) until Ctrl-C.

    It prints the serial URL or pty path to give to the host, e.g.
    `zigpy radio ezsp tcp://127.0.0.1:PORT info` or bellows' `device: {path: ...}`. The network it forms or
    resumes is the virtual air that emulated devices join. One host at a time: a new connection replaces the
    current one. On Ctrl-C or SIGTERM the network state is saved and the command exits 0.
    """
    if listen is not None and use_pty:
        raise click.UsageError("choose either --listen or --pty, not both")
    asyncio.run(_serve(PTY if use_pty else listen or "tcp://127.0.0.1:0", int(ezsp_version), state, seed))
