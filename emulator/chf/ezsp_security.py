"""Smart Energy security for the CHF on an EZSP coordinator (bellows): install-code joins, CBKE, APS encryption.

What the in-process HAN does with `SecureRadio` and `TrustCentre`, the CHF on a stick does with the NCP's own
security, driven over EZSP:

* **Admission.** The Device Log's install codes become transient keys in the NCP (v8 `addTransientLinkKey`,
  v13+ `importTransientKey`, through bellows' `add_transient_link_key`), after `clearTransientLinkKeys` has
  dropped the well-known key bellows' own `permit` puts there for any joiner. Joining opens under
  TRUST_CENTER_POLICY = ALLOW_JOINS | JOINS_USE_INSTALL_CODE_KEY, what bellows' `permit_with_link_key` sets for
  one device; the same value is bellows' configured policy (`ezsp_policies`), so bellows puts it back whenever it
  restores its own. The NCP's trust centre then sends the network key only under a device's install-code key.
* **Key establishment on the host** (the default; `cbke = NCP` leaves the cryptography to the stick's CBKE
  library instead, `chf.ncp_key_establishment`). The CHF's Key Establishment server (`chf.key_establishment`)
  answers the device over plain unicasts (NWK security only, as ZSE §5.4.6 wants). When an exchange succeeds
  the key goes into the NCP's key table (v8 `addOrUpdateKeyTableEntry`; v13+ `importLinkKey` at the device's
  entry or a free one, `findKeyTableEntry` and `exportLinkKeyByIndex` tell which) before the Confirm Key Data
  Response leaves, so the device's first APS-encrypted frame finds the key in place; if it cannot be stored the
  exchange ends with a Terminate (NO_RESOURCES).
* **APS encryption.** A unicast the Smart Energy rule covers (`keystore.requires_aps_encryption`) to a device
  with a CBKE key gets zigpy's `TransmitOptions.APS_Encryption`, which bellows turns into APS_OPTION_ENCRYPTION:
  the NCP encrypts. A frame the rule covers that arrives without the encryption bit from such a device is
  dropped and reported (`FrameDropped`), as Silicon Labs' application framework does on the host.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import bellows.types as bt
import zigpy.application
import zigpy.types as t

from emulator.chf.events import ServerEvent
from emulator.chf.key_establishment import FrameDropped, KeyEstablished, KeyEstablishmentServer
from emulator.chf.ncp_key_establishment import NcpKeyEstablishmentServer
from emulator.chf.se_credentials import credentials_for
from emulator.clock import Clock
from emulator.errors import InputError
from emulator.profiles import derived_install_code
from emulator.radio.secure import is_broadcast
from emulator.security import key_establishment as ke
from emulator.security.certs import CryptoSuite, DeviceCredentials
from emulator.security.install_code import InstallCode
from emulator.security.keystore import SecurityContext, requires_aps_encryption

LOGGER = logging.getLogger(__name__)

HOST, NCP = "host", "ncp"  # where CBKE's cryptography runs: on the CHF's host, or in the NCP's CBKE library

# EzspDecisionBitmask ALLOW_JOINS | JOINS_USE_INSTALL_CODE_KEY: joins only with a transient (install-code) key.
INSTALL_CODE_JOINS = 0x0011
TRUST_CENTER_POLICY = "TRUST_CENTER_POLICY"
# Room in the NCP's key table for a CBKE key per device (the virtual NCP holds 16; bellows asks for 4).
KEY_TABLE_SIZE = 16
NO_INDEX = 0xFF

# What APS encryption adds to a frame: auxiliary header with the sender's IEEE address (5 + 8) and MIC (4).
APS_ENCRYPTION_OVERHEAD = 17
# An Image Block Response around its data: ZCL header (3), status, manufacturer code, image type, file version,
# file offset and data size (1 + 2 + 2 + 4 + 4 + 1).
BLOCK_RESPONSE_HEADER = 17

Listener = Callable[[ServerEvent], None]
Installer = Callable[[t.EUI64, bytes], Awaitable[bool]]


def bellows_config() -> dict[str, Any]:
    """What the CHF's bellows config needs for Smart Energy: the install-code join policy as bellows' own, and a
    key table with room for the devices' CBKE keys."""
    return {
        "ezsp_policies": {TRUST_CENTER_POLICY: INSTALL_CODE_JOINS},
        "ezsp_config": {"CONFIG_KEY_TABLE_SIZE": KEY_TABLE_SIZE},
    }


@dataclass(frozen=True, slots=True)
class LinkKeyInstalled:
    """The NCP now holds `key` (CBKE KeyData) for `device`; the coordinator is `coordinator`."""

    coordinator: t.EUI64
    device: t.EUI64
    key: bytes


class KeyInstallingServer(KeyEstablishmentServer):
    """The Key Establishment server, storing each new key with `install` before the Confirm Key Data Response
    goes out."""

    def __init__(self, *args: Any, install: Installer, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.install = install
        self._installing: set[asyncio.Task[None]] = set()

    def _act(
        self, packet: t.ZigbeePacket, tsn: int, ieee: t.EUI64, nwk: int, responder: ke.Responder, step: ke.Step
    ) -> None:
        if not isinstance(step.outcome, ke.Established):
            super()._act(packet, tsn, ieee, nwk, responder, step)
            return
        task = asyncio.get_running_loop().create_task(self._install_then_act(packet, tsn, ieee, nwk, responder, step))
        self._installing.add(task)
        task.add_done_callback(self._installing.discard)

    async def _install_then_act(
        self, packet: t.ZigbeePacket, tsn: int, ieee: t.EUI64, nwk: int, responder: ke.Responder, step: ke.Step
    ) -> None:
        outcome = step.outcome
        assert isinstance(outcome, ke.Established)
        if not await self.install(ieee, outcome.key_data):
            terminate = responder.busy(suite=outcome.suite.value)
            step = ke.Step((terminate,), ke.Failed(ke.TerminateStatus.NO_RESOURCES, "no room for the key", terminate))
        super()._act(packet, tsn, ieee, nwk, responder, step)

    def stop(self) -> None:
        super().stop()
        for task in self._installing:
            task.cancel()


class EzspSmartEnergy:
    """Smart Energy security of the CHF whose bellows app is `app` and OTA server `server`.

    `device_log` maps each admitted device to its install code; `credentials` are the CHF's CBKE credentials
    for the coordinator's EUI-64 (`se_credentials.credentials_for`)."""

    def __init__(
        self,
        app: Any,
        server: Any,
        *,
        endpoint: int,
        device_log: Mapping[t.EUI64, InstallCode],
        credentials: Mapping[CryptoSuite, DeviceCredentials],
        clock: Clock,
        listener: Listener | None = None,
        cbke: str = HOST,
    ) -> None:
        self.app = app
        self.server = server
        self.device_log = dict(device_log)
        self.coordinator: t.EUI64 = app.state.node_info.ieee
        self.context = SecurityContext(self.coordinator)
        self.listener = listener
        self.installed: list[LinkKeyInstalled] = []
        self.notices: list[Callable[[LinkKeyInstalled], None]] = []
        self.key_server: KeyEstablishmentServer
        if cbke == NCP:
            self.key_server = NcpKeyEstablishmentServer(
                app, endpoint, self.context, {}, clock, ieee_of=self._ieee_of, listener=self._relay,
                export=self.read_link_key,
            )  # fmt: skip
        else:
            self.key_server = KeyInstallingServer(
                app, endpoint, self.context, credentials, clock, ieee_of=self._ieee_of, listener=self._relay,
                install=self.install_link_key,
            )  # fmt: skip
        self.clock = clock

    def start(self) -> None:
        self.key_server.start()
        self.app.aps_security = self
        self.server.awaits_link_key = lambda ieee: ieee in self.device_log and self.context.link_key(ieee) is None

    def stop(self) -> None:
        self.key_server.stop()
        if getattr(self.app, "aps_security", None) is self:
            self.app.aps_security = None

    # -- admission ----------------------------------------------------------------------------------------

    async def permit(self, seconds: int) -> None:
        """Open joining for `seconds` to the Device Log's devices only (0 closes it)."""
        ezsp = self.app._ezsp
        if seconds:
            await ezsp.clearTransientLinkKeys()
            for ieee, code in self.device_log.items():
                status = await ezsp.add_transient_link_key(ieee, t.KeyData(code.key))
                if int(status) != 0:
                    LOGGER.warning("the NCP refused the install-code key of %s: %r", ieee, status)
            await ezsp.setPolicy(policyId=bt.EzspPolicyId.TRUST_CENTER_POLICY, decisionId=INSTALL_CODE_JOINS)
        # zigpy's permit, not bellows': bellows' adds the well-known key for any joiner first (pre_permit).
        await zigpy.application.ControllerApplication.permit(self.app, seconds)

    # -- the NCP's key table ------------------------------------------------------------------------------

    async def install_link_key(self, ieee: t.EUI64, key: bytes) -> bool:
        """Store `key` as the NCP's link key for `ieee`; False when the NCP has no room for it."""
        try:
            stored = await self._store(ieee, key)
        except Exception as exc:  # the stick went away or answered nonsense: CBKE fails, the device tries again
            LOGGER.warning("storing the link key of %s in the NCP failed: %r", ieee, exc)
            return False
        if stored:
            self._installed(LinkKeyInstalled(self.coordinator, ieee, bytes(key)))
        return stored

    async def read_link_key(self, ieee: t.EUI64) -> bytes | None:
        """The link key the NCP holds for `ieee` (stored by its own CBKE library), None without one."""
        ezsp = self.app._ezsp
        try:
            if "exportLinkKeyByEui" in ezsp.COMMANDS:  # v13 and later
                names = list(ezsp.COMMANDS["exportLinkKeyByEui"][2])
                values = dict(zip(names, await ezsp.exportLinkKeyByEui(eui64=ieee), strict=True))
                key = bytes(values["plaintext_key"]) if int(values["status"]) == 0 else None
            else:
                (index,) = await ezsp.findKeyTableEntry(address=ieee, linkKey=True)
                status, entry = await ezsp.getKeyTableEntry(index=index)
                key = bytes(entry.key) if index != NO_INDEX and int(status) == 0 else None
        except Exception as exc:  # the stick went away: as if there were no key
            LOGGER.warning("reading the link key of %s from the NCP failed: %r", ieee, exc)
            return None
        if key is not None:
            self._installed(LinkKeyInstalled(self.coordinator, ieee, key))
        return key

    def _installed(self, notice: LinkKeyInstalled) -> None:
        self.installed.append(notice)
        for callback in list(self.notices):
            callback(notice)

    async def _store(self, ieee: t.EUI64, key: bytes) -> bool:
        ezsp = self.app._ezsp
        if "addOrUpdateKeyTableEntry" in ezsp.COMMANDS:  # v8 to v12
            (status,) = await ezsp.addOrUpdateKeyTableEntry(address=ieee, linkKey=True, keyData=t.KeyData(key))
            return int(status) == 0
        (index,) = await ezsp.findKeyTableEntry(address=ieee, linkKey=True)
        if index == NO_INDEX:
            index = await self._free_entry()
            if index is None:
                return False
        (status,) = await ezsp.importLinkKey(index=index, address=ieee, key=t.KeyData(key))
        return int(status) == 0

    async def _free_entry(self) -> int | None:
        ezsp = self.app._ezsp
        _, size = await ezsp.getConfigurationValue(configId=bt.EzspConfigId.CONFIG_KEY_TABLE_SIZE)
        names = list(ezsp.COMMANDS["exportLinkKeyByIndex"][2])
        for index in range(size):
            values = dict(zip(names, await ezsp.exportLinkKeyByIndex(index=index), strict=True))
            if int(values["status"]) != 0:  # NOT_FOUND: nothing stored there
                return index
        return None

    # -- APS encryption on the host side -----------------------------------------------------------------

    def outgoing(self, packet: t.ZigbeePacket) -> t.ZigbeePacket:
        """`packet` asking the NCP for APS encryption when the Smart Energy rule covers it and the device has a
        CBKE key."""
        if is_broadcast(packet.dst):
            return packet
        if not requires_aps_encryption(packet.profile_id or 0, packet.cluster_id, broadcast=False):
            return packet
        ieee = self._ieee_of(packet.dst)
        if ieee is None or self.context.link_key(ieee) is None:
            return packet
        return packet.replace(tx_options=packet.tx_options | t.TransmitOptions.APS_Encryption)

    def accept(self, packet: t.ZigbeePacket) -> bool:
        """False for a frame the Smart Energy rule covers that came without APS encryption from a device the CHF
        shares a CBKE key with (it is reported, then dropped)."""
        if packet.tx_options & t.TransmitOptions.APS_Encryption or packet.src is None:
            return True
        if not requires_aps_encryption(packet.profile_id or 0, packet.cluster_id, broadcast=is_broadcast(packet.dst)):
            return True
        ieee = self._ieee_of(packet.src)
        if ieee is None or self.context.link_key(ieee) is None:
            return True
        if self.listener is not None:
            self.listener(FrameDropped(ieee, self.clock.now(), packet.cluster_id, "frame without APS encryption", ""))
        return False

    # -- internals ----------------------------------------------------------------------------------------

    def _ieee_of(self, address: t.AddrModeAddress | int | None) -> t.EUI64 | None:
        """The IEEE address of a device zigpy knows, by NWK address (or given as IEEE already)."""
        if isinstance(address, t.AddrModeAddress):
            value: Any = address.address
            if address.addr_mode == t.AddrMode.IEEE:
                return t.EUI64(value)
            address = int(value)
        if address is None:
            return None
        return next((d.ieee for d in self.app.devices.values() if d.nwk == address), None)

    def _relay(self, event: ServerEvent) -> None:
        if isinstance(event, KeyEstablished) and event.ieee is not None:
            self.server.link_key_ready(event.ieee)
        if self.listener is not None:
            self.listener(event)


def device_log_of(profile: Any, targets: Iterable[t.EUI64]) -> dict[t.EUI64, InstallCode]:
    """The devices the CHF admits: the profile's `[[device_log]]`, or else the run's targets, each with the
    TEST-ONLY install code derived from its EUI-64 (what a device profile without `install_code` holds), as the
    in-process HAN stands in for the DCC."""
    if profile.device_log:
        return {entry.ieee: InstallCode.parse(entry.install_code) for entry in profile.device_log}
    return {ieee: InstallCode.parse(derived_install_code(ieee)) for ieee in targets}


async def start(
    node: Any, device_log: Mapping[t.EUI64, InstallCode], listener: Listener | None = None, cbke: str = HOST
) -> EzspSmartEnergy:
    """Smart Energy security for the CHF `node` (a `ChfNode` started on EZSP with `bellows_config()`): its CBKE
    credentials name the coordinator's EUI-64 (the profile's file, or the bundled test CA's), and its OTA blocks
    fit an APS-encrypted frame (`encrypted_block_size`)."""
    profile = node.profile
    coordinator = node.app.state.node_info.ieee
    credentials: Mapping[CryptoSuite, DeviceCredentials] = {}
    if cbke == HOST:
        credentials = credentials_for(
            coordinator, profile.cbke_suite, profile.cbke_credentials, profile.source, "CHF profile"
        )
    (aps_length,) = await node.app._ezsp.maximumPayloadLength()
    block = encrypted_block_size(int(aps_length))
    if profile.max_block_size > block:
        LOGGER.info("OTA blocks of at most %d bytes fit an APS-encrypted frame (the profile allows %d)",
                    block, profile.max_block_size)  # fmt: skip
        node.server.profile = profile.replace(max_block_size=block)
    security = EzspSmartEnergy(
        node.app,
        node.server,
        endpoint=profile.endpoint,
        device_log=device_log,
        credentials=credentials,
        clock=node.clock,
        listener=listener,
        cbke=cbke,
    )
    if isinstance(security.key_server, NcpKeyEstablishmentServer):
        await security.key_server.load()
        if not security.key_server.certificates:
            raise InputError(
                "--cbke ncp: the NCP has no CBKE certificate (getCertificate and getCertificate283k1 answered no "
                "data: a firmware without the Smart Energy CBKE library?); use --cbke host"
            )
    security.start()
    return security


def encrypted_block_size(aps_length: int) -> int:
    """The largest OTA block whose Image Block Response fits an APS-encrypted frame of an NCP whose largest APS
    payload (under NWK security only) is `aps_length` (EZSP maximumPayloadLength)."""
    return max(1, aps_length - APS_ENCRYPTION_OVERHEAD - BLOCK_RESPONSE_HEADER)
