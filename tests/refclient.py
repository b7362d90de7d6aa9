"""A second, independent OTA Upgrade client for the conformance bench: written from the specification, apart
from `emulator/device/`, and attached to the bench through its public DUT interface only.

It is deliberately small. What it implements is the mandatory client behaviour of the OTA Upgrade cluster (ZCL
r7 §11.13 / OTA spec 09-5264 r23 §6.10): server discovery with Match_Desc, Query Next Image (hardware version
included), Image Notify rules (unicast always queries; broadcast fields and QueryJitter), the Image Block
Request loop (offset bookkeeping, WAIT_FOR_DATA, ABORT, three NO_IMAGE_AVAILABLE Default Responses, resends then
Upgrade End ABORT), image checks before Upgrade End SUCCESS/INVALID_IMAGE, Upgrade End Response times
(relative, absolute, wait, wildcards, out-of-band refusal with NOT_AUTHORIZED), UpgradeTimeoutPolicy and the
ZCL foundation answers (Read Attributes, Default Response). Optional behaviour is a switch (`RefConfig`), and so
is each deliberate deviation (`Fault`), mirroring `profiles/faults/` and the ZCL hygiene rules.

Frames are built and parsed here with zigpy's types and OTA cluster schemas; nothing of the emulator's own frame
or device code is imported, so a check that only the emulator's device passes shows up as a failure here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import zigpy.types as t
import zigpy.zdo.types as zdo_t
from zigpy.ota.image import OTAImageHeader
from zigpy.zcl import foundation
from zigpy.zcl.clusters.general import Ota

from emulator.conformance.interface import Ability, ActivationReply, DeviceUnderTest, FirmwareAlert, Link

OTA = Ota.cluster_id
SE_PROFILE = 0x0109
ENDPOINT = 1
COORDINATOR = 0x0000
BROADCAST_RX_ON = 0xFFFD
Status = foundation.Status
S2C = foundation.Direction.Server_to_Client
C2S = foundation.Direction.Client_to_Server
SERVER_CMDS = {c.name: c for c in Ota.ServerCommandDefs}  # what a client sends
CLIENT_CMDS = {c.id: c for c in Ota.ClientCommandDefs}  # what a client receives
WAIT = 0xFFFFFFFF
WILDCARDS = (0xFFFF, 0xFFFF, 0xFFFFFFFF)
ZCL_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

RESPONSE_TIMEOUT = 5.0  # an answer to a request
RESENDS = 3  # a block request resent this often before Upgrade End ABORT
NO_IMAGE_LIMIT = 3  # ZCL r7 §11.13.6.5.2: three NO_IMAGE_AVAILABLE and the client returns to querying
END_RETRY = 600.0  # an unanswered Upgrade End Request is re-sent after this long
END_MISSES = 3  # … and after this many the UpgradeTimeoutPolicy decides
WAIT_REASK = 3600.0  # told to wait: ask again within 60 min
REBOOT = 2.0  # seconds from activation to the Device_annce of the new firmware
MAX_DATA = 48
SIGNATURE_LENGTH = 64  # GB Upgrade Image signature trailer: 00 40, then r||s
TRAILER_LENGTH = 2 + SIGNATURE_LENGTH


class Fault(StrEnum):
    """One deliberate deviation, each meant to fail the checks named in `tests/test_conformance_refclient.py`."""

    IGNORE_UNICAST_NOTIFY = "ignore-unicast-notify"
    QUERY_ON_ANY_NOTIFY = "query-on-any-notify"
    NO_HARDWARE_VERSION = "no-hardware-version"
    ACCEPT_SAME_VERSION = "accept-same-version"
    ASSUME_FULL_BLOCKS = "assume-full-blocks"
    IGNORE_OFFSET = "ignore-offset"
    IGNORE_WAIT_FOR_DATA = "ignore-wait-for-data"
    IGNORE_MIN_BLOCK_PERIOD = "ignore-min-block-period"
    CONTINUE_AFTER_ABORT = "continue-after-abort"
    IGNORE_NO_IMAGE = "ignore-no-image-default-response"
    NO_RESEND = "no-resend"
    SKIP_VERIFICATION = "skip-verification"
    NO_UPGRADE_END_ON_INVALID = "no-upgrade-end-on-invalid"
    UPGRADE_END_RUNNING_VERSION = "upgrade-end-running-version"
    ACTIVATE_WHILE_WAITING = "activate-while-waiting"
    IGNORE_UPGRADE_TIME = "ignore-upgrade-time"
    ACCEPT_FOREIGN_UPGRADE_END = "accept-foreign-upgrade-end"
    IGNORE_ACTIVATION_POLICY = "ignore-activation-policy"
    IGNORE_TIMEOUT_POLICY = "ignore-timeout-policy"
    RESTART_FROM_ZERO = "restart-from-zero"
    KEEP_IMAGE_TYPE = "keep-image-type"
    ACTIVATION_FAILS = "activation-fails"
    NO_ACTIVATION_ALERT = "no-activation-alert"
    SKIP_HASH_CHECK = "skip-hash-check"
    ACTIVATE_WITHOUT_IMAGE = "activate-without-image"
    ACTIVATE_FUTURE_DATED_NOW = "activate-future-dated-now"
    ZERO_DATA_SIZE = "zero-maximum-data-size"
    # ZCL foundation hygiene (ZCL r7 §2.4, §2.5.12)
    WRONG_TSN = "wrong-tsn"
    WRONG_DIRECTION = "wrong-direction"
    DEFAULT_RESPONSE_WHEN_DISABLED = "default-response-when-disabled"
    SILENT_ON_UNSUPPORTED = "silent-on-unsupported"
    MANUFACTURER_SPECIFIC_FLAG = "manufacturer-specific-flag"


@dataclass(frozen=True)
class RefConfig:
    """The client's identity and its optional behaviour."""

    kind: str = "ppmid"
    ieee: str = "00:0b:57:ff:fe:00:00:01"
    manufacturer_code: int = 0x1234
    image_type: int = 0x0042
    file_version: int = 0x00000010
    hardware_version: int = 0x0100
    activation_policy: int = 0  # UpgradeActivationPolicy: 0 server may activate, 1 out-of-band only
    timeout_policy: int = 0  # UpgradeTimeoutPolicy: 0 apply after timeout, 1 do not
    rate_limiting: bool = True  # MinimumBlockPeriod supported (Image Block Request field control bit 1)
    mandatory_attributes_only: bool = False  # only UpgradeServerID, ImageUpgradeStatus, ClusterRevision
    gbcs: bool = True  # the harness sees GBCS alerts and can deliver Activate Firmware
    power_cycle: bool = True
    abort_at: float | None = None  # end every download with Upgrade End ABORT at this fraction (a bad link)
    query_at_once: bool = False  # after a download the server stopped, query again at once (not next period)
    faults: frozenset[Fault] = frozenset()


@dataclass
class _Memory:
    """What survives a power cycle (the client's non-volatile storage)."""

    running_version: int
    offer: tuple[int, int, int, int] | None = None  # mfr, type, version, size of the download in progress
    data: bytearray = field(default_factory=bytearray)
    held: bytes | None = None  # a verified image waiting for activation
    held_ids: tuple[int, int, int] | None = None
    min_block_period: int = 0
    image_type_id: int = 0xFFFF


# The ZCL codec, as pure functions of their inputs. Every check restarts the client from the same state, so the
# same frames recur across checks and runs; zigpy's structs take ~100 µs a frame, so each answer is kept. The
# parsed values are only read, never changed.
@functools.lru_cache(maxsize=1024, typed=True)
def _header_bytes(
    tsn: int, command_id: int, general: bool, direction: foundation.Direction, manufacturer: int | None
) -> bytes:
    build = foundation.ZCLHeader.general if general else foundation.ZCLHeader.cluster
    header = build(tsn, command_id, manufacturer, direction)
    if general:  # our general commands are all answers: nothing may answer them
        header.frame_control = header.frame_control.replace(disable_default_response=True)
    return bytes(header.serialize())


_MANUFACTURER_SPECIFIC = 0x04  # frame control bit 2


def _parse_header(data: bytes) -> tuple[foundation.ZCLHeader, bytes]:
    """The ZCL header (kept by its own bytes: an Image Block Response's payload is new in every frame, its header
    is not) and the payload after it."""
    size = 5 if data and data[0] & _MANUFACTURER_SPECIFIC else 3  # ZCL r7 §2.4.1: the manufacturer code is 2 bytes
    return _parse_header_bytes(data[:size]), data[size:]


@functools.lru_cache(maxsize=4096)
def _parse_header_bytes(data: bytes) -> foundation.ZCLHeader:
    header, rest = foundation.ZCLHeader.deserialize(data)
    assert not rest
    return header


@functools.lru_cache(maxsize=4096)
def _parse_command(command_id: int, payload: bytes) -> Any:
    return CLIENT_CMDS[command_id].schema.deserialize(payload)[0]


@functools.lru_cache(maxsize=4096, typed=True)
def _command_bytes(name: str, fields: tuple[tuple[str, Any], ...]) -> bytes:
    return bytes(SERVER_CMDS[name].schema(**dict(fields)).serialize())


@functools.lru_cache(maxsize=64)
def _zdo_payload(cluster: int, own_nwk: int, manufacturer_code: int, kind: str | None) -> bytes:
    """The payload of our answer to a ZDO request (after its TSN)."""
    nwk = t.NWK(own_nwk)
    if cluster == zdo_t.ZDOCmd.Node_Desc_req:
        descriptor = zdo_t.NodeDescriptor(
            logical_type=zdo_t.LogicalType.EndDevice,
            complex_descriptor_available=0,
            user_descriptor_available=0,
            reserved=0,
            aps_flags=0,
            frequency_band=zdo_t.NodeDescriptor.FrequencyBand.Freq2400MHz,
            mac_capability_flags=zdo_t.MACCapabilityFlags.AllocateAddress
            | zdo_t.MACCapabilityFlags.RxOnWhenIdle
            | zdo_t.MACCapabilityFlags.MainsPowered,
            manufacturer_code=manufacturer_code,
            maximum_buffer_size=82,
            maximum_incoming_transfer_size=82,
            server_mask=0,
            maximum_outgoing_transfer_size=82,
            descriptor_capability_field=zdo_t.NodeDescriptor.DescriptorCapability.NONE,
        )
        payload = Status.SUCCESS.serialize() + nwk.serialize() + descriptor.serialize()
    elif cluster == zdo_t.ZDOCmd.Active_EP_req:
        payload = Status.SUCCESS.serialize() + nwk.serialize() + bytes([1, ENDPOINT])
    elif cluster == zdo_t.ZDOCmd.Simple_Desc_req:
        device_id = 0x0504 if kind == "hcalcs" else 0x0506
        descriptor = zdo_t.SizePrefixedSimpleDescriptor(
            endpoint=ENDPOINT,
            profile=SE_PROFILE,
            device_type=device_id,
            device_version=0,
            input_clusters=[],
            output_clusters=[OTA],
        )
        payload = Status.SUCCESS.serialize() + nwk.serialize() + descriptor.serialize()
    else:
        payload = bytes([zdo_t.Status.NOT_SUPPORTED])
    return payload


def _manufacturer_image(data: bytes) -> bytes:
    """The Manufacturer Image of a GB Upgrade Image: what follows the OTA header, less the signature trailer
    (the 2-byte big-endian length 0x0040 and the 64-byte ECDSA signature) when the file carries one. The hash
    in Activate Firmware (CS06) is over the Manufacturer Image only, never over its signature."""
    _, body = OTAImageHeader.deserialize(data)
    if len(body) >= TRAILER_LENGTH and body[-TRAILER_LENGTH:-SIGNATURE_LENGTH] == SIGNATURE_LENGTH.to_bytes(2, "big"):
        return body[:-TRAILER_LENGTH]
    return body


class RefClient(DeviceUnderTest):
    """The independent client as a DUT on the bench's virtual air."""

    def __init__(self, config: RefConfig | None = None, *, seed: int = 1) -> None:
        super().__init__()
        self.config = config = config or RefConfig()
        self.ieee = t.EUI64.convert(config.ieee)
        self.kind = config.kind
        self.block_period_unit = "ms"
        names = ", ".join(sorted(config.faults)) or "no faults"
        self.description = f"independent reference client ({config.kind.upper()}, {names})"
        self.seed = seed
        self.rx_on_when_idle = True
        self.nwk = 0
        self._link: Link | None = None
        self._task: asyncio.Task[None] | None = None
        self._timers: set[asyncio.Task[None]] = set()
        self._inbox: asyncio.Queue[tuple[foundation.ZCLHeader, Any, t.ZigbeePacket]] = asyncio.Queue()
        self._zdo: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        self._tsn = 0
        self._rng = random.Random(seed)
        self._memory = _Memory(config.file_version)
        self._status = 0
        self._server: tuple[int, int] | None = None
        self._wake = asyncio.Event()
        self._last_block_request = -1e9
        self._activation_at: float | None = None

    # -- the DUT interface ------------------------------------------------------------------------------

    @property
    def abilities(self) -> frozenset[Ability]:
        found = set()
        if self.config.power_cycle:
            found.add(Ability.POWER_CYCLE)
        if self.config.gbcs:
            found.add(Ability.GBCS)
        return frozenset(found)

    async def start(self, link: Link) -> None:
        self._link = link
        self._memory = _Memory(self.config.file_version)
        self._rng = random.Random(self.seed)
        await self._boot()

    async def stop(self) -> None:
        for task in [self._task, *self._timers]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = None
        self._timers.clear()
        if self._link is not None:
            self._link.air.detach(self)

    async def power_cycle(self) -> None:
        await self.stop()
        await self._boot()

    async def activate_firmware(self, image_hash: bytes, at: datetime | None = None) -> ActivationReply:
        """GBCS Activate Firmware (CS06): SHA-256 of the held Manufacturer Image, now or at `at`."""
        faults = self.config.faults
        memory = self._memory
        if memory.held is None and Fault.ACTIVATE_WITHOUT_IMAGE not in faults:
            return ActivationReply(False, 1, memory.running_version)
        if (
            memory.held is not None
            and Fault.SKIP_HASH_CHECK not in faults
            and hashlib.sha256(_manufacturer_image(memory.held)).digest() != bytes(image_hash)
        ):
            return ActivationReply(False, 2, memory.running_version)
        now = self._link.clock.utc() if self._link is not None else datetime.now(UTC)
        if at is not None and at > now and Fault.ACTIVATE_FUTURE_DATED_NOW not in faults:
            self._spawn(self._future_activation((at - now).total_seconds()))
            return ActivationReply(True, None, None)
        if memory.held is None:
            return ActivationReply(False, 0, memory.running_version)
        self._activate()
        return ActivationReply(False, 0, self._memory.running_version)

    async def _future_activation(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._activate()
        self.alerts.append(FirmwareAlert(self._now(), 0x8F66, self._memory.running_version, 0, 0, True))

    # -- the node on the air ----------------------------------------------------------------------------

    async def _boot(self) -> None:
        link = self._link
        assert link is not None
        self.nwk = link.nwk
        self._inbox = asyncio.Queue()
        self._zdo = asyncio.Queue()
        self._status = 0 if self._memory.held is None else 3
        link.air.join(self)
        self._task = asyncio.get_running_loop().create_task(self._run())

    def receive(self, packet: t.ZigbeePacket) -> None:
        data = packet.data.serialize()
        if packet.dst_ep == 0:
            self._on_zdo(packet, data)
        elif packet.cluster_id == OTA and packet.dst_ep in (ENDPOINT, 0xFF):
            self._on_zcl(packet, data)
        elif packet.dst_ep == ENDPOINT and not self._broadcast(packet):
            self._on_other_cluster(packet, data)

    def _on_other_cluster(self, packet: t.ZigbeePacket, data: bytes) -> None:
        """No such cluster here: ZCL r7 §2.5.12.2, Default Response UNSUPPORTED_CLUSTER (never to a broadcast)."""
        with contextlib.suppress(ValueError, IndexError):
            header, _ = foundation.ZCLHeader.deserialize(data)
            if header.command_id != foundation.GeneralCommand.Default_Response or header.frame_control.is_cluster:
                self._default_response(packet, header, Status.UNSUPPORTED_CLUSTER)

    def _on_zdo(self, packet: t.ZigbeePacket, data: bytes) -> None:
        cluster = packet.cluster_id
        if cluster & 0x8000:
            self._zdo.put_nowait((cluster, data))
            return
        if not data or self._broadcast(packet):
            return
        tsn = data[0]
        payload = _zdo_payload(cluster, self.nwk, self.config.manufacturer_code, self.kind)
        self._send_zdo(packet.src.address, cluster | 0x8000, bytes([tsn]) + payload)

    def _on_zcl(self, packet: t.ZigbeePacket, data: bytes) -> None:
        try:
            header, payload = _parse_header(data)
        except (ValueError, IndexError):
            return
        general = header.frame_control.frame_type == foundation.FrameType.GLOBAL_COMMAND
        if general:
            self._on_general(packet, header, payload)
            return
        if header.frame_control.is_manufacturer_specific:
            self._default_response(packet, header, Status.UNSUP_MANUF_CLUSTER_COMMAND)
            return
        if header.direction != S2C or header.command_id not in CLIENT_CMDS:
            self._default_response(packet, header, Status.UNSUP_CLUSTER_COMMAND)
            return
        definition = CLIENT_CMDS[header.command_id]
        try:
            command: Any = _parse_command(header.command_id, payload)
        except (ValueError, KeyError, IndexError):
            command = _short_wait_for_data(definition.name, payload)
            if command is None:
                self._default_response(packet, header, Status.MALFORMED_COMMAND)
                return
        # Trailing bytes are ignored: ZCL r7 §2.4 lets later revisions extend a command.
        if self._server is not None and packet.src.address != self._server[0]:
            return
        if definition.name == "image_notify":
            self._on_notify(packet, header, command)
            return
        self._inbox.put_nowait((header, command, packet))
        if definition.name == "upgrade_end_response":
            self._wake.set()

    def _on_general(self, packet: t.ZigbeePacket, header: foundation.ZCLHeader, payload: bytes) -> None:
        command_id = header.command_id
        if command_id == foundation.GeneralCommand.Default_Response:
            with contextlib.suppress(ValueError, KeyError, IndexError):
                schema = foundation.GENERAL_COMMANDS[foundation.GeneralCommand.Default_Response].schema
                command, _ = schema.deserialize(payload)
                self._inbox.put_nowait((header, command, packet))
            return
        if command_id != foundation.GeneralCommand.Read_Attributes:
            self._default_response(packet, header, Status.UNSUP_GENERAL_COMMAND)
            return
        if header.direction != S2C:  # our OTA cluster is a client: its attributes are read server→client
            self._default_response(packet, header, Status.UNSUP_GENERAL_COMMAND)
            return
        try:
            ids, _ = t.List[t.uint16_t].deserialize(payload)
        except (ValueError, IndexError):
            self._default_response(packet, header, Status.MALFORMED_COMMAND)
            return
        table = self._attributes()
        records = b""
        for attrid in ids:
            if attrid in table:
                kind, value = table[attrid]
                records += t.uint16_t(attrid).serialize() + Status.SUCCESS.serialize()
                type_id = foundation.DataType.from_python_type(kind).type_id
                records += foundation.TypeValue(type_id, kind(value)).serialize()
            else:
                records += t.uint16_t(attrid).serialize() + Status.UNSUPPORTED_ATTRIBUTE.serialize()
        self._reply(packet, header, foundation.GeneralCommand.Read_Attributes_rsp, records, general=True)

    # -- ZCL sending ------------------------------------------------------------------------------------

    def _header(self, tsn: int, command_id: int, *, general: bool, direction: foundation.Direction) -> bytes:
        faults = self.config.faults
        if Fault.WRONG_DIRECTION in faults:
            direction = S2C if direction == C2S else C2S
        manufacturer = self.config.manufacturer_code if Fault.MANUFACTURER_SPECIFIC_FLAG in faults else None
        return _header_bytes(tsn, command_id, general, direction, manufacturer)

    def _reply(
        self, packet: t.ZigbeePacket, request: foundation.ZCLHeader, command_id: int, payload: bytes, *, general: bool
    ) -> None:
        tsn = request.tsn if Fault.WRONG_TSN not in self.config.faults else (request.tsn + 1) & 0xFF
        data = self._header(tsn, command_id, general=general, direction=C2S) + payload
        self._transmit(packet.src.address, packet.src_ep, packet.profile_id, packet.cluster_id, data)

    def _default_response(self, packet: t.ZigbeePacket, request: foundation.ZCLHeader, status: Status) -> None:
        """ZCL r7 §2.5.12.2: errors are reported even when default responses are disabled; nothing is ever
        sent in answer to a broadcast or to a Default Response."""
        general = request.frame_control.frame_type == foundation.FrameType.GLOBAL_COMMAND
        if self._broadcast(packet) or (general and request.command_id == foundation.GeneralCommand.Default_Response):
            return
        if status != Status.SUCCESS and Fault.SILENT_ON_UNSUPPORTED in self.config.faults:
            return
        payload = t.uint8_t(request.command_id).serialize() + status.serialize()
        self._reply(packet, request, foundation.GeneralCommand.Default_Response, payload, general=True)

    def _success_response(self, packet: t.ZigbeePacket, header: foundation.ZCLHeader) -> None:
        """A Default Response SUCCESS to a command that has no response of its own, unless it disabled it."""
        if header.frame_control.disable_default_response and (
            Fault.DEFAULT_RESPONSE_WHEN_DISABLED not in self.config.faults
        ):
            return
        self._default_response(packet, header, Status.SUCCESS)

    def _send_ota(self, name: str, **fields: Any) -> int:
        assert self._server is not None
        tsn = self._next_tsn()
        definition = SERVER_CMDS[name]
        payload = _command_bytes(name, tuple(fields.items()))
        data = self._header(tsn, definition.id, general=False, direction=C2S) + payload
        self._transmit(self._server[0], self._server[1], SE_PROFILE, OTA, data)
        return tsn

    def _transmit(self, nwk: int, endpoint: int, profile: int, cluster: int, data: bytes) -> None:
        assert self._link is not None
        self._link.air.send(
            t.ZigbeePacket(
                src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(self.nwk)),
                src_ep=ENDPOINT,
                dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(nwk)),
                dst_ep=endpoint,
                tsn=data[1] if len(data) > 1 else 0,
                profile_id=profile,
                cluster_id=cluster,
                data=t.SerializableBytes(data),
                tx_options=t.TransmitOptions.ACK,
                radius=0,
            )
        )

    def _send_zdo(self, nwk: int, cluster: int, data: bytes, *, broadcast: bool = False) -> None:
        assert self._link is not None
        mode = t.AddrMode.Broadcast if broadcast else t.AddrMode.NWK
        self._link.air.send(
            t.ZigbeePacket(
                src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(self.nwk)),
                src_ep=0,
                dst=t.AddrModeAddress(addr_mode=mode, address=t.NWK(nwk)),
                dst_ep=0,
                tsn=data[0],
                profile_id=0,
                cluster_id=cluster,
                data=t.SerializableBytes(data),
                tx_options=t.TransmitOptions.NONE if broadcast else t.TransmitOptions.ACK,
                radius=0,
            )
        )

    # -- the client ---------------------------------------------------------------------------------------

    async def _run(self) -> None:
        self._announce()
        await self._discover()
        await asyncio.sleep(self._rng.uniform(0.5, 2.0))
        while True:
            if self._memory.held is not None and self._memory.held_ids is not None:
                await self._end_phase(self._memory.held_ids)
            elif self._memory.offer is not None:
                await self._download(*self._memory.offer)
                if self._memory.held is None and not self.config.query_at_once:
                    await self._idle()
            else:
                self._wake.clear()
                await self._query()
                if self._memory.offer is None and self._memory.held is None:
                    await self._idle()

    async def _idle(self) -> None:
        """Until the next periodic query (daily) or an Image Notify that asks for one."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(86400.0):
                await self._wake.wait()
        self._wake.clear()

    def _announce(self) -> None:
        capability = int(zdo_t.MACCapabilityFlags.AllocateAddress | zdo_t.MACCapabilityFlags.RxOnWhenIdle)
        payload = t.NWK(self.nwk).serialize() + self.ieee.serialize() + t.uint8_t(capability).serialize()
        self._send_zdo(BROADCAST_RX_ON, zdo_t.ZDOCmd.Device_annce, bytes([self._next_tsn()]) + payload, broadcast=True)

    async def _discover(self) -> None:
        """Match_Desc_req for an OTA server cluster; the first answer names the server (ZCL r7 §11.13.2)."""
        while True:
            tsn = self._next_tsn()
            request = t.NWK(COORDINATOR).serialize() + t.uint16_t(SE_PROFILE).serialize()
            clusters = t.LVList[t.uint16_t, t.uint8_t]
            request += clusters([OTA]).serialize() + clusters([]).serialize()
            self._send_zdo(COORDINATOR, zdo_t.ZDOCmd.Match_Desc_req, bytes([tsn]) + request)
            answer = await self._zdo_answer(zdo_t.ZDOCmd.Match_Desc_rsp, tsn)
            if answer is not None and len(answer) >= 6 and answer[1] == 0 and answer[4] >= 1:
                self._server = (int.from_bytes(answer[2:4], "little"), answer[5])
                return
            await asyncio.sleep(60.0)

    async def _zdo_answer(self, cluster: int, tsn: int) -> bytes | None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RESPONSE_TIMEOUT):
                while True:
                    got, data = await self._zdo.get()
                    if got == cluster and data and data[0] == tsn:
                        return data
        return None

    def _on_notify(self, packet: t.ZigbeePacket, header: foundation.ZCLHeader, command: Any) -> None:
        """ZCL r7 §11.13.3.4: a unicast notify always draws a query; a broadcast one only when its fields match
        and the QueryJitter draw says so."""
        broadcast = self._broadcast(packet)
        faults = self.config.faults
        if not broadcast:
            self._success_response(packet, header)
            if Fault.IGNORE_UNICAST_NOTIFY in faults:
                return
        elif Fault.QUERY_ON_ANY_NOTIFY not in faults:
            jitter = int(command.query_jitter)
            if not 1 <= jitter <= 100 or int(command.payload_type) > 3:
                return
            config = self.config
            fields = (
                ("manufacturer_code", config.manufacturer_code, 0xFFFF),
                ("image_type", config.image_type, 0xFFFF),
            )
            for name, own, wildcard in fields:
                value = getattr(command, name, None)
                if value is not None and int(value) not in (own, wildcard):
                    return
            version = getattr(command, "new_file_version", None)
            if version is not None and int(version) == self._memory.running_version:
                return
            if self._rng.randint(1, 100) > jitter:
                return
        if self._memory.offer is None and self._memory.held is None:
            self._wake.set()

    async def _answer(self, tsn: int, names: set[str], within: float = RESPONSE_TIMEOUT) -> tuple[str, Any] | None:
        """The server's answer to our request `tsn` (a response named in `names`, or a Default Response)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while True:
                    header, command, _ = await self._inbox.get()
                    if header.tsn != tsn:
                        continue
                    if header.frame_control.frame_type == foundation.FrameType.GLOBAL_COMMAND:
                        return "default_response", command
                    name = CLIENT_CMDS[header.command_id].name
                    if name in names:
                        return name, command
        return None

    async def _query(self) -> None:
        config = self.config
        fields: dict[str, Any] = {
            "field_control": Ota.QueryNextImageCommand.FieldControl(0),
            "manufacturer_code": config.manufacturer_code,
            "image_type": config.image_type,
            "current_file_version": self._memory.running_version,
        }
        if Fault.NO_HARDWARE_VERSION not in config.faults:
            fields["field_control"] = Ota.QueryNextImageCommand.FieldControl.HardwareVersion
            fields["hardware_version"] = config.hardware_version
        tsn = self._send_ota("query_next_image", **fields)
        answer = await self._answer(tsn, {"query_next_image_response"})
        if answer is None or answer[0] != "query_next_image_response" or answer[1].status != Status.SUCCESS:
            return
        offer = answer[1]
        if None in (offer.manufacturer_code, offer.image_type, offer.file_version, offer.image_size):
            return
        if int(offer.manufacturer_code) != config.manufacturer_code or int(offer.image_type) != config.image_type:
            return
        # ZCL r7 §11.13.5.4: an offer of the running version is discarded.
        if int(offer.file_version) == self._memory.running_version and Fault.ACCEPT_SAME_VERSION not in config.faults:
            return
        self._memory.offer = (
            int(offer.manufacturer_code),
            int(offer.image_type),
            int(offer.file_version),
            int(offer.image_size),
        )
        self._memory.data = bytearray()
        self._memory.image_type_id = int(offer.image_type)

    async def _download(self, manufacturer: int, image_type: int, version: int, size: int) -> None:
        faults = self.config.faults
        memory = self._memory
        if Fault.RESTART_FROM_ZERO in faults:
            memory.data = bytearray()
        self._status = 1
        resends = no_image = 0
        while len(memory.data) < size:
            period = memory.min_block_period / 1000.0
            if self.config.rate_limiting and Fault.IGNORE_MIN_BLOCK_PERIOD not in faults:
                wait = self._last_block_request + period - self._loop_time()
                if wait > 0:
                    await asyncio.sleep(wait)
            offset = len(memory.data)
            if self.config.abort_at is not None and offset >= size * self.config.abort_at:
                self._upgrade_end(Status.ABORT, (manufacturer, image_type, version))
                return self._give_up()
            max_size = 0 if Fault.ZERO_DATA_SIZE in faults else min(MAX_DATA, size - offset)
            fields: dict[str, Any] = {
                "field_control": Ota.ImageBlockCommand.FieldControl(0),
                "manufacturer_code": manufacturer,
                "image_type": image_type,
                "file_version": version,
                "file_offset": offset,
                "maximum_data_size": max_size,
            }
            if self.config.rate_limiting:
                fields["field_control"] = Ota.ImageBlockCommand.FieldControl.MinimumBlockPeriod
                fields["minimum_block_period"] = memory.min_block_period
            self._last_block_request = self._loop_time()
            tsn = self._send_ota("image_block", **fields)
            answer = await self._answer(tsn, {"image_block_response"})
            if answer is None:
                resends += 1
                if resends > RESENDS or Fault.NO_RESEND in faults:
                    if Fault.NO_RESEND not in faults:
                        self._upgrade_end(Status.ABORT, (manufacturer, image_type, version))
                    return self._give_up()
                continue
            resends = 0
            name, command = answer
            if name == "default_response":
                if command.status == Status.NO_IMAGE_AVAILABLE:
                    no_image += 1
                    if no_image >= NO_IMAGE_LIMIT and Fault.IGNORE_NO_IMAGE not in faults:
                        return self._give_up()
                    await asyncio.sleep(1.0)
                    continue
                return self._give_up()
            no_image = 0
            status = command.status
            if status == Status.WAIT_FOR_DATA:
                if command.minimum_block_period is not None and self.config.rate_limiting:
                    memory.min_block_period = int(command.minimum_block_period)
                delay = int(command.request_time) - int(command.current_time)
                if delay <= 0:
                    delay = memory.min_block_period / 1000.0
                if Fault.IGNORE_WAIT_FOR_DATA not in faults:
                    await asyncio.sleep(min(max(delay, 0), 3600))
                continue
            if status == Status.ABORT:
                if Fault.CONTINUE_AFTER_ABORT in faults:
                    continue
                return self._give_up()
            if status != Status.SUCCESS:
                return self._give_up()
            ids = (int(command.manufacturer_code), int(command.image_type), int(command.file_version))
            block = bytes(command.image_data)
            if ids != (manufacturer, image_type, version):
                continue  # a block of another image is not stored
            if int(command.file_offset) != offset and Fault.IGNORE_OFFSET not in faults:
                continue
            if len(block) > max(max_size, 0) or offset + len(block) > size:
                continue
            if Fault.ASSUME_FULL_BLOCKS in faults and len(block) < max_size:
                block = block + bytes(max_size - len(block))
            memory.data += block
        await self._verify(manufacturer, image_type, version, size)

    def _give_up(self) -> None:
        self._memory.offer = None
        self._memory.data = bytearray()
        self._memory.image_type_id = 0xFFFF
        self._status = 0

    def _upgrade_end(self, status: Status, ids: tuple[int, int, int]) -> None:
        manufacturer, image_type, version = ids
        if Fault.UPGRADE_END_RUNNING_VERSION in self.config.faults and status == Status.SUCCESS:
            version = self._memory.running_version
        self._send_ota(
            "upgrade_end", status=status, manufacturer_code=manufacturer, image_type=image_type, file_version=version
        )

    def _image_problem(self, ids: tuple[int, int, int], size: int) -> str | None:
        """OTA spec 09-5264 §6.3 / ZCL r7 §11.4: the file's header must name the offered image, its length and a
        hardware range this device is in."""
        data = bytes(self._memory.data)
        try:
            header, _ = OTAImageHeader.deserialize(data)
        except (ValueError, IndexError) as exc:
            return f"unreadable header: {exc}"
        if (int(header.manufacturer_id), int(header.image_type), int(header.file_version)) != ids:
            return "header names another image"
        if int(header.image_size) != size or len(data) != size:
            return "wrong total size"
        low, high = header.minimum_hardware_version, header.maximum_hardware_version
        if low is not None and high is not None and not int(low) <= self.config.hardware_version <= int(high):
            return "hardware version outside the image's range"
        return None

    async def _verify(self, manufacturer: int, image_type: int, version: int, size: int) -> None:
        ids = (manufacturer, image_type, version)
        problem = None if Fault.SKIP_VERIFICATION in self.config.faults else self._image_problem(ids, size)
        memory = self._memory
        memory.offer = None
        if problem is not None:
            memory.data = bytearray()
            memory.image_type_id = 0xFFFF
            self._status = 0
            if Fault.NO_UPGRADE_END_ON_INVALID not in self.config.faults:
                self._upgrade_end(Status.INVALID_IMAGE, ids)
            return
        self._status = 2
        memory.held = bytes(memory.data)
        memory.held_ids = ids
        memory.data = bytearray()

    async def _end_phase(self, ids: tuple[int, int, int]) -> None:
        """Upgrade End Request SUCCESS, then what the Upgrade End Response (or its absence) says."""
        faults = self.config.faults
        misses = 0
        while self._memory.held is not None:
            self._upgrade_end(Status.SUCCESS, ids)
            response = await self._end_response(ids, RESPONSE_TIMEOUT)
            if response is None:
                misses += 1
                if misses >= END_MISSES:
                    timeout_apply = self.config.timeout_policy == 0 or Fault.IGNORE_TIMEOUT_POLICY in faults
                    if timeout_apply and self.config.activation_policy == 0:
                        self._activate()
                        return
                response = await self._end_response(ids, END_RETRY)
                if response is None:
                    continue
            if await self._scheduled(response):
                return

    async def _end_response(self, ids: tuple[int, int, int], within: float) -> tuple[Any, t.ZigbeePacket, Any] | None:
        """The next Upgrade End Response for our image (or with wildcards); one for another image is discarded
        (OTA spec 09-5264 §6.10.10.4)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while (left := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(left):
                    header, command, packet = await self._inbox.get()
            except TimeoutError:
                return None
            if header.frame_control.frame_type == foundation.FrameType.GLOBAL_COMMAND:
                continue
            if CLIENT_CMDS[header.command_id].name != "upgrade_end_response":
                continue
            named = (int(command.manufacturer_code), int(command.image_type), int(command.file_version))
            if all(n in (own, wild) for n, own, wild in zip(named, ids, WILDCARDS, strict=True)) or (
                Fault.ACCEPT_FOREIGN_UPGRADE_END in self.config.faults
            ):
                return header, packet, command
        return None

    async def _scheduled(self, response: tuple[Any, t.ZigbeePacket, Any]) -> bool:
        """Act on an Upgrade End Response; True once activated."""
        header, packet, command = response
        faults = self.config.faults
        current, upgrade = int(command.current_time), int(command.upgrade_time)
        if upgrade == WAIT:
            self._status = 3
            if Fault.ACTIVATE_WHILE_WAITING in faults:
                self._activate()
                return True
            refreshed = await self._end_response(self._memory.held_ids or (0, 0, 0), WAIT_REASK)
            if refreshed is not None:
                return await self._scheduled(refreshed)
            return False
        if self.config.activation_policy == 1 and Fault.IGNORE_ACTIVATION_POLICY not in faults:
            # SE 1.2b (15-0324-02) §11.10.12: out-of-band activation only; the server's time is refused.
            self._default_response(packet, header, Status.NOT_AUTHORIZED)
            self._status = 6
            refreshed = await self._end_response(self._memory.held_ids or (0, 0, 0), WAIT_REASK)
            if refreshed is not None:
                return await self._scheduled(refreshed)
            return False
        delay = upgrade if current == 0 else upgrade - current
        if Fault.IGNORE_UPGRADE_TIME in faults:
            delay = 0
        self._status = 4
        await asyncio.sleep(max(delay, 0))
        self._activate()
        return True

    def _activate(self) -> None:
        """Switch to the held image: reboot (Device_annce), attributes as after an upgrade (ZCL r7 §11.10)."""
        memory = self._memory
        if memory.held_ids is None:
            return
        new = memory.held_ids[2]
        old = memory.running_version
        faults = self.config.faults
        if Fault.ACTIVATION_FAILS not in faults:
            memory.running_version = new
        memory.held = None
        memory.held_ids = None
        if Fault.KEEP_IMAGE_TYPE not in faults:
            memory.image_type_id = 0xFFFF
        self._status = 0
        if self.config.gbcs and self.kind == "ppmid" and Fault.NO_ACTIVATION_ALERT not in faults:
            changed = memory.running_version != old
            self.alerts.append(FirmwareAlert(self._now(), 0x8F8B, memory.running_version, 0 if changed else 1))
        self._spawn(self._reboot())

    async def _reboot(self) -> None:
        """The new firmware starts: the client starts over (announce, discover, query), keeping its memory."""
        await asyncio.sleep(REBOOT)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._inbox = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    # -- attributes ---------------------------------------------------------------------------------------

    def _attributes(self) -> dict[int, tuple[type, int | t.EUI64]]:
        memory = self._memory
        server = self._link.air.node(self._server[0]) if self._link and self._server else None
        server_ieee = server.ieee if server is not None else t.EUI64.convert("ff:ff:ff:ff:ff:ff:ff:ff")
        table: dict[int, tuple[type, int | t.EUI64]] = {
            0x0000: (t.EUI64, server_ieee),
            0x0006: (t.enum8, self._status),
            0xFFFD: (t.uint16_t, 3),
        }
        if self.config.mandatory_attributes_only:
            return table
        offered = memory.offer[2] if memory.offer else memory.held_ids[2] if memory.held_ids else 0xFFFFFFFF
        table |= {
            0x0001: (t.uint32_t, len(memory.data) if memory.offer else 0xFFFFFFFF),
            0x0002: (t.uint32_t, memory.running_version),
            0x0004: (t.uint32_t, offered),
            0x0007: (t.uint16_t, self.config.manufacturer_code),
            0x0008: (t.uint16_t, memory.image_type_id),
            0x0009: (t.uint16_t, memory.min_block_period),
            0x000B: (t.enum8, self.config.activation_policy),
            0x000C: (t.enum8, self.config.timeout_policy),
        }
        return table

    # -- small helpers ------------------------------------------------------------------------------------

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    def _next_tsn(self) -> int:
        self._tsn = (self._tsn + 1) & 0xFF
        return self._tsn

    def _now(self) -> float:
        """Protocol seconds on the run's clock: the time base of `FirmwareAlert.at`."""
        assert self._link is not None
        return self._link.clock.now()

    @staticmethod
    def _loop_time() -> float:
        return asyncio.get_running_loop().time()

    @staticmethod
    def _broadcast(packet: t.ZigbeePacket) -> bool:
        dst = packet.dst
        return dst.addr_mode in (t.AddrMode.Broadcast, t.AddrMode.Group) or (
            dst.addr_mode == t.AddrMode.NWK and dst.address >= 0xFFF8
        )


@dataclass(frozen=True)
class _WaitForData:
    status: Status
    current_time: int
    request_time: int
    minimum_block_period: int | None = None


def _short_wait_for_data(name: str, payload: bytes) -> _WaitForData | None:
    """WAIT_FOR_DATA without MinimumBlockPeriod (9 bytes), as OTA spec 09-5264 r23 §6.10.8 sends it; zigpy's
    schema wants the field of later revisions."""
    if name != "image_block_response" or len(payload) != 9 or payload[0] != Status.WAIT_FOR_DATA:
        return None
    return _WaitForData(
        Status.WAIT_FOR_DATA, int.from_bytes(payload[1:5], "little"), int.from_bytes(payload[5:9], "little")
    )


def make_dut(**changes: Any) -> RefClient:
    """`--dut-plugin refclient:make_dut`: the plain client (a PPMID); keyword arguments change its config."""
    return RefClient(replace(RefConfig(), **changes))


def make_hcalcs() -> RefClient:
    """The client as a GB HCALCS: out-of-band activation (UpgradeActivationPolicy 1), UpgradeTimeoutPolicy 1."""
    return RefClient(RefConfig(kind="hcalcs", activation_policy=1, timeout_policy=1))
