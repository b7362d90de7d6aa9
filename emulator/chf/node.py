"""A running CHF: a zigpy coordinator app (loopback on the virtual air, or bellows on an EZSP port) with the
OTA server attached. The server does not know which radio it has; only starting the app differs."""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import os
import traceback
import urllib.parse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import serialx
import zigpy.exceptions
import zigpy.zdo.types as zdo_t

from emulator.chf.server import OtaServer
from emulator.chf.store import ImageStore
from emulator.clock import Clock
from emulator.errors import InputError
from emulator.profiles import ChfProfile
from emulator.radio.air import Air
from emulator.radio.ezsp import EzspApp, ezsp_config
from emulator.radio.host import IngressHandler
from emulator.radio.loopback import LoopbackApp, loopback_config

LOGGER = logging.getLogger(__name__)

# How long `ota-emu chf` gives a dongle (or a virtual NCP) to answer before saying so.
EZSP_CONNECT_TIMEOUT = 10.0
# zigpy's device database in a CHF state directory.
DATABASE_NAME = "zigbee.db"
# Pauses between attempts to get a lost EZSP port back (the last one repeats).
RECONNECT_DELAYS = (0.2, 1.0, 2.0, 5.0)


class RadioError(InputError):
    """The coordinator port is missing, busy, or nothing on it speaks EZSP."""


def waited(deadline: asyncio.Timeout, limit: float, started: float) -> float:
    """How long a port was tried before a TimeoutError: `limit` when `deadline` (ours) fired, else the shorter time
    after which bellows gave up by itself (its ASH resets: three of 2.5 s), to a tenth of a second."""
    if deadline.expired():
        return limit
    return round(asyncio.get_running_loop().time() - started, 1)


def _network(profile: ChfProfile) -> dict[str, Any]:
    return {
        "channel": profile.channel,
        "pan_id": profile.pan_id,
        "extended_pan_id": profile.extended_pan_id,
        "network_key": bytes.fromhex(profile.network_key.replace(":", "")),
    }


# What a CHF offers on its Smart Energy endpoint: Basic, Time, the OTA server and Key Establishment.
CHF_DEVICE_TYPE = 0x0500  # SE Energy Service Interface
CHF_INPUT_CLUSTERS = (0x0000, 0x000A, 0x0019, 0x0800)
CHF_OUTPUT_CLUSTERS = (0x0800,)


def chf_endpoint_descriptor(profile: ChfProfile) -> zdo_t.SimpleDescriptor:
    return zdo_t.SimpleDescriptor(
        endpoint=profile.endpoint,
        profile=profile.profile_id,
        device_type=CHF_DEVICE_TYPE,
        device_version=0,
        input_clusters=list(CHF_INPUT_CLUSTERS),
        output_clusters=list(CHF_OUTPUT_CLUSTERS),
    )


class ChfNode:
    """`observers` see every packet the CHF receives before the OTA server takes it (they must not take it
    themselves): how a front end follows each client's requested offset without the server reporting per block."""

    def __init__(
        self,
        profile: ChfProfile,
        store: ImageStore,
        clock: Clock,
        *,
        observers: Iterable[IngressHandler] = (),
        state_dir: Path | None = None,
    ) -> None:
        self.profile = profile
        self.state_dir = state_dir
        self.store = store
        self.clock = clock
        self.observers = tuple(observers)
        self.app: LoopbackApp | EzspApp
        self.server: OtaServer
        self.reconnects = 0
        self._reconnecting: asyncio.Task[None] | None = None
        self._stopping = False

    async def start_loopback(self, air: Air) -> None:
        config = loopback_config(ieee=self.profile.ieee, **_network(self.profile))
        self.app = await LoopbackApp.start_on(air, config, self.profile.ieee)
        self._attach()

    async def start_ezsp(
        self,
        path: str,
        *,
        baudrate: int = 115200,
        flow_control: str = "software",
        state_dir: Path | None = None,
        ezsp_extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Connect bellows to `path` (a serial device, tcp://HOST:PORT or socket://HOST:PORT), form the network
        the profile describes if the stick has none, or resume the one it has. With `state_dir`, zigpy keeps its
        device database there (`zigbee.db`: EUI-64, NWK address, endpoints of every device that joined), so a
        restarted CHF serves a device from its offset without waiting for it to rejoin. `ezsp_extra` adds to
        bellows' config (Smart Energy security: `chf.ezsp_security.bellows_config`)."""
        _check_port(path)
        state_dir = state_dir if state_dir is not None else self.state_dir
        extra: dict[str, Any] = dict(ezsp_extra or {})
        if state_dir is not None:
            try:
                state_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(f"{state_dir}: cannot be used as a state directory ({exc.strerror})") from None
            extra["database_path"] = str(state_dir / DATABASE_NAME)
        app = EzspApp(
            ezsp_config(path=path, baudrate=baudrate, flow_control=flow_control, **_network(self.profile), **extra)
        )
        app.chf_endpoint = chf_endpoint_descriptor(self.profile)
        if state_dir is not None:
            await app._load_db()  # what ControllerApplication.new() does before startup
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(EZSP_CONNECT_TIMEOUT) as deadline:
                await app.startup(auto_form=True)
        except TimeoutError:
            await _quietly_shutdown(app)
            tried = waited(deadline, EZSP_CONNECT_TIMEOUT, started)
            raise RadioError(
                f"{path}: no EZSP answer within {tried:g} s (tried ASH reset and EZSP version "
                f"at {baudrate} baud, flow control {flow_control}; is it a Silicon Labs NCP?)"
            ) from None
        except (
            OSError,
            serialx.SerialException,
            zigpy.exceptions.ControllerException,
            zigpy.exceptions.RadioException,  # zigpy wraps a refused or reset connection in TransientConnectionError
        ) as exc:
            await _quietly_shutdown(app)
            raise RadioError(f"{path}: cannot open the EZSP port ({_reason(exc)})") from None
        except AttributeError as exc:
            # bellows 1.2 resets through a transport it has already dropped when the port closes the connection
            # at once, as an NCP (or serial bridge) that another host holds does.
            if not _lost_transport(exc):
                raise
            await _quietly_shutdown(app)
            raise RadioError(
                f"{path}: the connection closed as soon as it opened (port is busy: is another host connected?)"
            ) from None
        self.app = app
        self._attach()
        app.add_listener(self)

    def _attach(self) -> None:
        for observer in self.observers:
            self.app.add_ingress_handler(observer)
        self.server = OtaServer(self.app, self.profile, self.store, self.clock)
        self.server.start()

    def connection_lost(self, exc: Exception | None) -> None:
        """zigpy listener event: bellows lost the NCP (an unsolicited reset, the ASH link failing, the port
        closing). zigpy 2.4 has no reconnect loop of its own — Home Assistant's ZHA restarts the app — so the CHF
        restarts the same app object: the server's ingress hook, its transfers and the devices zigpy knows all
        survive, and clients resume with their next block request."""
        if self._stopping or (self._reconnecting is not None and not self._reconnecting.done()):
            return
        LOGGER.warning("lost the EZSP port (%r); reconnecting", exc)
        self.reconnects += 1
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        app = self.app
        for attempt in itertools.count():
            await _quietly_shutdown(app)  # type: ignore[arg-type]
            try:
                async with asyncio.timeout(EZSP_CONNECT_TIMEOUT):
                    await app.startup()
            except Exception as exc:  # whatever went wrong, a reconnect loop logs it and tries again
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                LOGGER.warning("reconnecting to the EZSP port failed (%s); next try in %g s", _reason(exc), delay)
                await asyncio.sleep(delay)
            else:
                LOGGER.warning("EZSP port back after %d attempt(s)", attempt + 1)
                return

    async def stop(self) -> None:
        self._stopping = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        self.server.stop()
        await self.app.shutdown()


def _check_port(path: str) -> None:
    """Fail fast and clearly on a device path that cannot be a serial port (URLs are left to serialx)."""
    if urllib.parse.urlparse(path).scheme:
        return
    if not os.path.exists(path):
        raise RadioError(
            f"{path}: no such serial port (expected a dongle path such as /dev/ttyUSB0 or tcp://HOST:PORT)"
        )
    if os.path.isdir(path):
        raise RadioError(f"{path}: is a directory (expected a serial port)")


async def _quietly_shutdown(app: EzspApp) -> None:
    try:
        await app.shutdown()
    except Exception:  # cleaning up after a failure that is already being reported
        return


def _lost_transport(exc: AttributeError) -> bool:
    """True for bellows' UART gateway using its transport after losing it (`self._transport` is None)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return (
        bool(frames)
        and frames[-1].filename.replace(os.sep, "/").endswith("bellows/uart.py")
        and ("'NoneType'" in str(exc))
    )


def _reason(exc: BaseException) -> str:
    """The cause a user can act on. zigpy wraps a refused connection in TransientConnectionError and a locked
    port (EBUSY) in PermissionError, so the chain of causes is searched."""
    chain = [exc]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    if any(isinstance(e, OSError) and e.errno == errno.EBUSY for e in chain):
        return "port is busy: another program has it open"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused: nothing listens there"
    return next((str(e).splitlines()[0] for e in chain if str(e)), type(exc).__name__)
