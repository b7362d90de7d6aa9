"""The public device-under-test interface: what the conformance bench needs from a DUT, and how to load one.

A vendor wires their own device to the bench by subclassing `DeviceUnderTest` and handing the bench a factory
for it — from Python (`DeviceTarget(dut=MyDut())`), from the command line (`ota-emu conform device --dut-plugin
my_harness:make_dut`) or from pytest (`pytest --ota-emu-dut my_harness:make_dut`). The bench needs three things:

* a radio the test CHF reaches: either the DUT joins the bench's virtual air (`start(link)`, an in-process
  device or a bridge to one), or it already sits behind an EZSP coordinator (`port`, a real device behind a
  stick; the bench opens joining and waits for `ieee`);
* a reset between checks (`start`/`stop` per check on a fresh `Link`) and, if the harness can, a power cycle
  (`power_cycle`, e.g. a relay);
* to be told what it cannot do (`abilities`, `unable`): a check that needs an ability the DUT lacks is
  inconclusive with that reason, never failed.

Everything the checks judge comes from frames on the CHF's radio; the GBCS stand-ins (`alerts`,
`activate_firmware`) are only for what travels outside the Zigbee OTA cluster (CS06 Activate Firmware, the
CS09 and 0x00CA alerts), which a harness may observe through a serial console or a head-end.
"""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zigpy.types as t

from emulator.errors import InputError

if TYPE_CHECKING:
    from emulator.clock import Clock
    from emulator.radio.air import Air

__all__ = [
    "Ability",
    "ActivationReply",
    "DeviceUnderTest",
    "FirmwareAlert",
    "Link",
    "PluginError",
    "Unable",
    "load_plugin",
]


class Ability(StrEnum):
    """Things a harness may or may not be able to do to its device."""

    POWER_CYCLE = "power cycle"  # C-20: restart the device mid-download
    GBCS = "GBCS messages"  # C-22b, C-23b..e: Activate Firmware in, CS09 / 0x00CA alerts out
    SMART_ENERGY = "Smart Energy security"  # SE-01..SE-06: install-code join, CBKE, APS-encrypted OTA


class Unable(Exception):
    """The DUT cannot do what a check asked (the reason says why); the check is inconclusive."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PluginError(InputError):
    """A `--dut-plugin` / `--ota-emu-dut` value that does not name a usable factory."""


@dataclass(frozen=True)
class Link:
    """Where the bench puts an in-process DUT for one check: the virtual air the test CHF's radio is on, the
    run's clock (virtual time on the loopback radio), the NWK address the DUT should take, and a directory that
    lives as long as the check (state that survives a power cycle goes here)."""

    air: Air
    clock: Clock
    nwk: int
    state_dir: Path
    #: The bench's Smart Energy side for the security checks (an `emulator.han.security.HanSecurity` whose
    #: trust centre and Key Establishment server are the test CHF's), None on a network without SE security. An
    #: emulated device takes its own half of the join and CBKE from it; a harness with a stack of its own ignores it.
    security: Any = None


@dataclass(frozen=True)
class FirmwareAlert:
    """A GBCS firmware alert the DUT raised, as its harness saw it: the CS09 PPMID Firmware Activation Alert
    (0x8F8B) or the outcome of a future-dated Activate Firmware (0x00CA with 0x8F66/0x8F67). `at` is in
    protocol seconds of the run's clock (`Link.clock.now()`)."""

    at: float
    alert_code: int | None
    firmware_version: int | None
    activate_image: int | None = None  # CS09 activateImage: 0 success, 1 failure
    response_code: int | None = None  # 0x00CA: the CS06 responseCode of the deferred execution
    future_dated: bool = False


@dataclass(frozen=True)
class ActivationReply:
    """The DUT's answer to Activate Firmware (CS06): `accepted` for a future-dated command (commandAccepted),
    otherwise the executionOutcome's responseCode and the firmware version running afterwards."""

    accepted: bool
    response_code: int | None
    firmware_version: int | None


class DeviceUnderTest(abc.ABC):
    """A device the bench runs checks against. Subclass it; override what your harness can do.

    `ieee` names the device; `kind` ("ppmid", "hcalcs" or None when unknown) selects the GB checks;
    `block_period_unit` ("ms" or "s") is how it reads MinimumBlockPeriod. Set `port` (an EZSP coordinator's
    serial port or `socket://host:port`) for a device the bench must reach over a real radio; leave it None
    and implement `start` for one that joins the bench's virtual air.
    """

    ieee: t.EUI64
    kind: str | None = None
    block_period_unit: str = "ms"
    port: str | None = None
    description: str = "device under test"

    def __init__(self) -> None:
        self.alerts: list[FirmwareAlert] = []

    @property
    def abilities(self) -> frozenset[Ability]:
        """What this harness can do; by default nothing beyond the radio."""
        return frozenset()

    def unable(self, ability: Ability) -> str:
        """Why the DUT cannot do `ability` (the reason an inconclusive verdict gives)."""
        if ability is Ability.POWER_CYCLE:
            return f"{self.description} has no power control in this harness (needed to restart it mid-download)"
        if ability is Ability.SMART_ENERGY:
            return (
                f"{self.description} does not take the bench's Smart Energy security (install-code join, CBKE and "
                "APS-encrypted OTA on the virtual air) in this harness"
            )
        return (
            "the GBCS messages (Activate Firmware, CS09 and 0x00CA alerts) travel through the CHF's GBCS tunnel, "
            f"which this bench does not speak, and the harness of {self.description} does not report them"
        )

    def can(self, ability: Ability) -> bool:
        return ability in self.abilities

    async def start(self, link: Link) -> None:
        """Put the device on `link.air` (a fresh network for every check) and let it start its OTA client.
        Devices behind a `port` are not started this way."""
        raise Unable(f"{self.description} cannot join the bench's virtual air (it is reached through a port)")

    async def stop(self) -> None:
        """Take the device off the air at the end of a check."""
        return None

    async def power_cycle(self) -> None:
        """Restart the device now (it keeps what it keeps across a power loss). Needs `Ability.POWER_CYCLE`."""
        raise Unable(self.unable(Ability.POWER_CYCLE))

    async def activate_firmware(self, image_hash: bytes, at: datetime | None = None) -> ActivationReply:
        """Deliver GBCS Activate Firmware (CS06) with `image_hash`, executed now or at `at`. Needs
        `Ability.GBCS`; alerts the device raises go to `self.alerts`."""
        raise Unable(self.unable(Ability.GBCS))


def load_plugin(spec: str, *args: Any, **kwargs: Any) -> DeviceUnderTest:
    """`module:factory` → the `DeviceUnderTest` the factory returns (called with `args`/`kwargs`)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise PluginError(f"DUT plugin {spec!r}: expected module:factory (e.g. my_harness:make_dut)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"DUT plugin {spec!r}: cannot import module {module_name!r} ({exc})") from None
    factory: Any = module
    for part in attribute.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise PluginError(f"DUT plugin {spec!r}: module {module_name!r} has no {attribute!r}")
    if not callable(factory):
        raise PluginError(f"DUT plugin {spec!r}: {attribute!r} is not callable")
    dut = factory(*args, **kwargs)
    if not isinstance(dut, DeviceUnderTest):
        raise PluginError(
            f"DUT plugin {spec!r}: {attribute}() returned {type(dut).__name__}, expected an "
            "emulator.conformance.interface.DeviceUnderTest"
        )
    return dut
