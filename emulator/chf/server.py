"""The CHF's OTA Upgrade cluster server, written once against zigpy's `ControllerApplication`.

It takes OTA frames from the app's ingress hook (`HostMixin`) before zigpy's own `Ota` cluster sees them and
answers with `app.transmit`, so the same code runs on the loopback radio and on bellows (real dongle or the
virtual NCP). What it does, by command (SPEC.md §2, §6.2, §8.6; cases S-01…S-18):

* Query Next Image → the policy in `policy.py`; SUCCESS carries the file's total size (S-01…S-05).
* Image Block Request → a slice of the held file: never more than the client's MaximumDataSize nor the
  profile's cap, offset echoed, short last block (S-06); unknown image or not a target → Default Response
  0x98 (S-07); offset past the end → ABORT (S-08); rate limiting through WAIT_FOR_DATA and MinimumBlockPeriod
  (S-09, S-10).
* Image Page Request → a paced burst of Block Responses without APS ACKs, or 0x81 when disabled (S-11).
* Upgrade End Request SUCCESS → Upgrade End Response at the time the GB rules set (PPMID now, HCALCS wait);
  any other status → Default Response SUCCESS and no Upgrade End Response (S-12, S-13). The kind comes from the
  device's Simple Descriptor; while zigpy has not learned it (its interview lost on the air) the answer is
  *wait*, never *now*: an HCALCS must switch only on a hash-checked Activate Firmware (DUIS SR 11.3, GBCS CS06).
  The CHF then asks zigpy to interview the device again and, once the kind is known, sends the Upgrade End
  Response that kind gets (unsolicited, S-14).
* Query Device Specific File → the file whose destination is the requester, or 0x81 when disabled (S-15).
* Malformed → 0x80; client-side commands sent to the server → 0x81 (S-16). A command with bytes after its
  known fields is taken on those fields: a later cluster revision may append fields (zigpy reads commands the
  same way). MaximumDataSize 0 is INVALID_VALUE for blocks and pages alike; a size beyond what the server
  can send is served at its cap in both (ZCL r7 §11.13.6, §11.13.7).
* Nothing is ever sent in answer to a broadcast or group frame (ZCL r7 §2.5.12.2).
* Per target and image, one `TransferOutcome` with CCS08 meaning (S-18).

The server keeps only what GB reporting and rate limiting need per client (a `Transfer`, in `transfers.py`:
timeouts, admission control and how long a client waits): the protocol itself is stateless — every Block Request
names the image and the offset. What a block costs does not grow with the number of clients: the sender's
EUI-64 is resolved once per NWK address (as an `Eui64Key`, which hashes in constant time).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any, Protocol

import zigpy.device
import zigpy.state
import zigpy.types as t
import zigpy.zdo.types as zdo_t
from zigpy.zcl import foundation

from emulator.chf import events as ev
from emulator.chf.policy import decide_query, specific_file
from emulator.chf.store import HeldImage, ImageStore
from emulator.chf.transfers import Transfer, TransferTable
from emulator.clock import Clock
from emulator.eui64 import Eui64Key, eui64_key
from emulator.gb.codes import TransferResponse
from emulator.ota import frames, headers
from emulator.ota.blocks import decode_block_request, encode_block_response, encode_wait_for_data
from emulator.ota.frames import CLUSTER_ID, OtaCommand, Status
from emulator.profiles import HOME_AUTOMATION_PROFILE, SMART_ENERGY_PROFILE, ActivationTime, ChfProfile
from emulator.radio.host import IngressHandler
from emulator.radio.packets import address_value, nwk_address, zigbee_packet

LOGGER = logging.getLogger(__name__)

ZDO_PROFILE = 0x0000
BROADCAST_ENDPOINT = 0xFF
# zigpy sets EUI64.UNKNOWN after the class, where a type checker does not see it.
UNKNOWN_IEEE: t.EUI64 = t.EUI64.UNKNOWN  # type: ignore[attr-defined]
FIRST_BROADCAST_NWK = 0xFFF8
# After CBKE, how long the CHF waits before the Image Notify a target's interview held back (s).
NOTIFY_AFTER_KEY_S = 1.0
# Device IDs (SPEC.md §7, UNCONFIRMED) that tell a PPMID from an HCALCS when the image entry does not say.
HCALCS_DEVICE_ID = 0x0504

_FRAME_TYPE_MASK = 0x03
_CLUSTER_SPECIFIC = 0x01
_MANUFACTURER_SPECIFIC = 0x04
_SERVER_GENERATED = {cmd.id for cmd in frames.CLIENT_COMMANDS.values()}
# zigpy names looked up once: enum members are properties on their class, each look-up a call.
_NWK = t.AddrMode.NWK
_IEEE = t.AddrMode.IEEE

Listener = Callable[[ev.ServerEvent], None]


class ChfApp(Protocol):
    """What the server needs of its zigpy app: a `ControllerApplication` with `HostMixin` (the loopback app, or
    bellows' EZSP app)."""

    devices: dict[t.EUI64, zigpy.device.BaseDevice]
    state: zigpy.state.State

    def add_ingress_handler(self, handler: IngressHandler) -> Callable[[], None]: ...

    def add_listener(self, listener: Any) -> int: ...

    def transmit(self, packet: t.ZigbeePacket) -> None: ...

    def get_sequence(self) -> int: ...


class OtaServer:
    """OTA Upgrade cluster server for a CHF on any zigpy app that has `HostMixin`."""

    def __init__(self, app: ChfApp, profile: ChfProfile, store: ImageStore, clock: Clock) -> None:
        self.app = app
        self.profile = profile
        self.store = store
        self.clock = clock
        self.table = TransferTable(
            clock,
            lambda: self.profile.transfer_timeout,
            lambda: self.profile.max_concurrent_downloads,
            self._timed_out,
        )
        #: Every client's transfer by (EUI-64, image key).
        self.transfers = self.table.by_key
        self.outcomes: list[ev.TransferOutcome] = []
        self._reported: set[tuple[t.EUI64, tuple[int, int, int], TransferResponse]] = set()
        self._listeners: list[Listener] = []
        self._remove_hook: Callable[[], None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._nwk_cache: dict[int, Eui64Key] = {}
        self._src: t.AddrModeAddress | None = None
        # Devices told to wait only because their kind was unknown, with the image they hold.
        self._kind_pending: dict[t.EUI64, HeldImage] = {}
        # Smart Energy: a unicast Image Notify must travel APS-encrypted, so a target is notified once it shares a
        # link key with the CHF (`link_key_ready`, after CBKE), not at its interview.
        self.awaits_link_key: Callable[[t.EUI64], bool] | None = None
        self._notified_at_key: set[t.EUI64] = set()

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._remove_hook = self.app.add_ingress_handler(self._ingress)
        self.app.add_listener(self)

    def stop(self) -> None:
        if self._remove_hook is not None:
            self._remove_hook()
            self._remove_hook = None
        self.table.stop()
        for task in self._tasks:
            task.cancel()

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _emit(self, event: ev.ServerEvent) -> None:
        for listener in self._listeners:
            listener(event)

    # -- zigpy app listener: notify targets once zigpy has interviewed them --------------------------------

    def device_initialized(self, device: zigpy.device.BaseDevice) -> None:
        held = self._kind_pending.get(device.ieee)
        if held is not None and _device_type(device) is not None:
            del self._kind_pending[device.ieee]
            activation = self._activation_for(device.ieee, held)
            if activation != ActivationTime.WAIT:
                self.send_upgrade_end_response(device.ieee, held, activation)
        if self.profile.notify == "none":
            return
        if self.awaits_link_key is not None and (
            self.awaits_link_key(device.ieee) or device.ieee in self._notified_at_key
        ):
            return  # notified when its link key is ready (`link_key_ready`), not at the interview
        self._notify_target(device.ieee)

    def link_key_ready(self, ieee: t.EUI64) -> None:
        """The CHF now shares a link key with `ieee`: the target is notified then, a moment later so that the
        device has taken the key from the Confirm Key Data Response first (its interview may still be running)."""
        if self.profile.notify != "none" and ieee not in self._notified_at_key:
            self._notified_at_key.add(ieee)
            asyncio.get_running_loop().call_later(NOTIFY_AFTER_KEY_S, self._notify_target, ieee)

    def _notify_target(self, ieee: t.EUI64) -> None:
        for held in self.store:
            if held.device_ids and ieee in held.device_ids:
                self.notify(None if self.profile.notify == "broadcast" else ieee, held)
                return

    # -- ingress ------------------------------------------------------------------------------------------

    def _ingress(self, packet: t.ZigbeePacket) -> bool:
        """Take OTA cluster commands and Default Responses to the server's own commands; leave everything else
        (e.g. the Read Attributes responses of zigpy's interview) to zigpy."""
        if packet.cluster_id == CLUSTER_ID and packet.dst_ep != 0 and packet.src_ep != 0:
            data = packet.data.serialize()
            if data and data[0] & _FRAME_TYPE_MASK == _CLUSTER_SPECIFIC:
                self._on_ota_frame(packet, data)
                return True
            if (
                len(data) >= 5
                and data[0] & (_FRAME_TYPE_MASK | _MANUFACTURER_SPECIFIC) == 0
                and data[2] == foundation.GeneralCommand.Default_Response
                and data[3] in _SERVER_GENERATED
            ):
                self._emit(ev.DefaultResponseReceived(self._ieee_of(packet), self.clock.now(), data[3], data[4]))
                return True
            return False
        if packet.profile_id == ZDO_PROFILE and packet.cluster_id == zdo_t.ZDOCmd.Match_Desc_req:
            return self._on_match_desc(packet)
        return False

    def _on_match_desc(self, packet: t.ZigbeePacket) -> bool:
        """Answer "who serves OTA?" for the SE profile, which zigpy's ZDO answers with an empty match."""
        try:
            tsn, rest = t.uint8_t.deserialize(packet.data.serialize())
            (_, profile_id, in_clusters, _), _ = _deserialize_zdo(zdo_t.ZDOCmd.Match_Desc_req, rest)
        except (ValueError, KeyError, IndexError):
            return False
        if CLUSTER_ID not in in_clusters or profile_id not in (SMART_ENERGY_PROFILE, HOME_AUTOMATION_PROFILE, 0xFFFF):
            return False
        _, types = zdo_t.CLUSTERS[zdo_t.ZDOCmd.Match_Desc_rsp]
        payload = t.serialize(
            [foundation.Status.SUCCESS, t.NWK(self._own_nwk), [t.uint8_t(self.profile.endpoint)]], types
        )
        if packet.src is None:
            return False
        self.app.transmit(
            zigbee_packet(
                src=self._own_address(),
                src_ep=0,
                dst=nwk_address(address_value(packet.src)),
                dst_ep=0,
                tsn=tsn,
                profile_id=ZDO_PROFILE,
                cluster_id=zdo_t.ZDOCmd.Match_Desc_rsp,
                data=bytes([tsn]) + payload,
                ack=False,
            )
        )
        return True

    @property
    def _own_nwk(self) -> int:
        return int(self.app.state.node_info.nwk)

    def _own_address(self) -> t.AddrModeAddress:
        """The CHF's NWK address as a packet source, made again only when it changes (zigpy's AddrModeAddress
        costs microseconds to build, and every Block Response needs one)."""
        nwk = self._own_nwk
        if self._src is None or self._src.address != nwk:
            self._src = nwk_address(nwk)
        return self._src

    def _ieee_of(self, packet: t.ZigbeePacket) -> t.EUI64 | None:
        """The sender's EUI-64, which the DeviceIDList is written in. Cached by NWK address as an `Eui64Key`: this
        runs for every block, zigpy looks devices up by NWK with a scan, and a plain EUI64 hashes slowly."""
        if packet.src is None:
            return None
        if packet.src.addr_mode == _IEEE:
            return eui64_key(address_value(packet.src))
        nwk: int = address_value(packet.src)
        ieee = self._nwk_cache.get(nwk)
        if ieee is not None:
            device = self.app.devices.get(ieee)
            if device is not None and device.nwk == nwk:
                return ieee
        for device in self.app.devices.values():
            if device.nwk == nwk:
                ieee = self._nwk_cache[nwk] = eui64_key(device.ieee)
                return ieee
        return None

    def _on_ota_frame(self, packet: t.ZigbeePacket, data: bytes) -> None:
        block = decode_block_request(data)
        if block is not None:
            self._serve_block(packet, self._ieee_of(packet), *block)
            return
        try:
            frame = frames.decode(data)
        except frames.UnsupportedCommand as exc:
            self._reject(packet, exc.header.tsn, exc.header.command_id, Status.UNSUP_CLUSTER_COMMAND, str(exc))
            return
        except frames.MalformedFrame as exc:
            extended = _with_trailing_bytes(data)
            if extended is None:
                if len(data) >= 3:
                    self._reject(packet, data[1], data[2], Status.MALFORMED_COMMAND, str(exc))
                return
            frame = extended
        ieee = self._ieee_of(packet)
        if frame.direction != frames.C2S:
            self._reject(
                packet, frame.tsn, frame.header.command_id, Status.UNSUP_CLUSTER_COMMAND, "client-side command"
            )
            return
        handler = getattr(self, f"_on_{frame.name}")
        handler(packet, frame, ieee)

    # -- sending ------------------------------------------------------------------------------------------

    def _reply(self, request: t.ZigbeePacket, data: bytes, *, ack: bool = True) -> None:
        # The request's NWK source is the answer's destination as it stands (addresses are not changed in place).
        dst = request.src
        if dst is None:
            return
        if dst.addr_mode != _NWK:
            dst = nwk_address(address_value(dst))
        self.app.transmit(
            zigbee_packet(
                src=self._own_address(),
                src_ep=request.dst_ep or 0,
                dst=dst,
                dst_ep=request.src_ep or 0,
                tsn=data[1],
                profile_id=request.profile_id,
                cluster_id=CLUSTER_ID,
                data=data,
                ack=ack,
            )
        )

    def _reject(self, packet: t.ZigbeePacket, tsn: int, command_id: int, status: Status, reason: str) -> None:
        """Default Response with an error status; sent even when default responses are disabled (ZCL: that bit
        only suppresses success responses), but never to a broadcast."""
        self._emit(ev.FrameRejected(self._ieee_of(packet), self.clock.now(), command_id, status, reason))
        if packet.dst is None or _is_broadcast(packet.dst):
            return
        self._reply(
            packet, frames.default_response(tsn=tsn, command_id=command_id, status=status, direction=frames.S2C)
        )

    def _report(self, ieee: t.EUI64 | None, held: HeldImage, response: TransferResponse, reason: str) -> None:
        if ieee is None:
            return
        key = (ieee, held.key, response)
        if key in self._reported:
            return
        self._reported.add(key)
        outcome = ev.TransferOutcome(
            ieee, self.clock.now(), held.manufacturer_id, held.image_type, held.file_version, response, reason
        )
        self.outcomes.append(outcome)
        self._emit(outcome)

    # -- Query Next Image ---------------------------------------------------------------------------------

    def _on_query_next_image(self, packet: t.ZigbeePacket, frame: frames.Frame, ieee: t.EUI64 | None) -> None:
        cmd = frame.command
        hardware = cmd.hardware_version if cmd.field_control & cmd.FieldControl.HardwareVersion else None
        decision = decide_query(
            self.store,
            self.profile,
            ieee if ieee is not None else UNKNOWN_IEEE,
            cmd.manufacturer_code,
            cmd.image_type,
            cmd.current_file_version,
            hardware,
        )
        if decision.hardware_mismatch is not None and decision.hardware_mismatch.device_ids:
            self._report(ieee, decision.hardware_mismatch, TransferResponse.HARDWARE_VERSION_MISMATCH, decision.reason)
        held = decision.image
        if held is None:
            data = frames.encode("query_next_image_response", tsn=frame.tsn, status=decision.status)
        else:
            data = frames.encode(
                "query_next_image_response",
                tsn=frame.tsn,
                status=Status.SUCCESS,
                manufacturer_code=held.manufacturer_id,
                image_type=held.image_type,
                file_version=held.file_version,
                image_size=held.size,
            )
        self._emit(
            ev.QueryAnswered(
                ieee, self.clock.now(), decision.status, held.file_version if held else None, decision.reason
            )
        )
        self._reply(packet, data)

    # -- Image Block / Page -------------------------------------------------------------------------------

    def _served_image(
        self, ieee: t.EUI64 | None, manufacturer_id: int, image_type: int, version: int
    ) -> HeldImage | None:
        held = self.store.get(manufacturer_id, image_type, version)
        if held is None or (held.device_ids and ieee not in held.device_ids):
            return None
        if held.destination is not None and held.destination != ieee:
            return None
        return held

    def _on_image_block(self, packet: t.ZigbeePacket, frame: frames.Frame, ieee: t.EUI64 | None) -> None:
        """Block requests that carry RequestNodeAddress (the common ones take the `blocks` fast path)."""
        cmd = frame.command
        period = cmd.minimum_block_period if cmd.field_control & cmd.FieldControl.MinimumBlockPeriod else None
        self._serve_block(
            packet,
            ieee,
            frame.tsn,
            cmd.manufacturer_code,
            cmd.image_type,
            cmd.file_version,
            cmd.file_offset,
            cmd.maximum_data_size,
            period,
        )

    def _serve_block(
        self,
        packet: t.ZigbeePacket,
        ieee: t.EUI64 | None,
        tsn: int,
        manufacturer_id: int,
        image_type: int,
        version: int,
        offset: int,
        maximum_data_size: int,
        advertised_period: int | None,
    ) -> None:
        held = self._served_image(ieee, manufacturer_id, image_type, version)
        if held is None:
            self._reject(packet, tsn, OtaCommand.IMAGE_BLOCK, Status.NO_IMAGE_AVAILABLE, "no such image held")
            return
        if offset >= held.size:
            self._reply(packet, frames.encode("image_block_response", tsn=tsn, status=Status.ABORT))
            return
        if maximum_data_size == 0:
            self._reject(packet, tsn, OtaCommand.IMAGE_BLOCK, Status.INVALID_VALUE, "MaximumDataSize 0")
            return
        transfer = self._track(ieee, held, offset)
        delay, period, reason = self._rate_limit(transfer, advertised_period)
        if delay is not None:
            transfer.told_to_wait = True
            self.table.park(transfer, delay)
            now = self.clock.zcl_utc()
            self._emit(ev.WaitForDataSent(ieee, self.clock.now(), delay, period, reason))
            self._reply(packet, encode_wait_for_data(tsn, now, now + delay, period))
            return
        self._send_block(packet, tsn, held, offset, min(maximum_data_size, self.profile.max_block_size), ack=True)
        self.table.served(transfer)

    def _send_block(
        self, request: t.ZigbeePacket, tsn: int, held: HeldImage, offset: int, size: int, *, ack: bool
    ) -> int:
        chunk = held.data[offset : offset + size]
        manufacturer_id, image_type, version = held.key
        self._reply(request, encode_block_response(tsn, manufacturer_id, image_type, version, offset, chunk), ack=ack)
        return len(chunk)

    def _track(self, ieee: t.EUI64 | None, held: HeldImage, offset: int) -> Transfer:
        transfer, new = self.table.track(ieee, held)  # type: ignore[arg-type]  # None only for unknown senders
        if new:
            self._emit(ev.TransferStarted(ieee, transfer.last_request, held.file_version, held.size, offset))
        return transfer

    def _timed_out(self, transfer: Transfer, silent_for: float) -> None:
        reason = f"no block request for {silent_for:g} s"
        self._report(transfer.ieee, transfer.held, TransferResponse.FILE_TRANSFER_FAILURE, reason)

    def _rate_limit(self, transfer: Transfer, advertised: int | None) -> tuple[int | None, int | None, str]:
        """(delay seconds, MinimumBlockPeriod to impose, why) when this request must wait; (None, ...) if not."""
        profile = self.profile
        period = profile.minimum_block_period if profile.minimum_block_period else None
        if profile.wait_for_data and not transfer.told_to_wait:
            return math.ceil(profile.wait_for_data), period, "server asks the client to wait before the download"
        # Admission control: only a client not yet served waits; one that has blocks keeps its slot.
        limit = profile.max_concurrent_downloads
        if limit and not transfer.blocks and self.table.busy() >= limit:
            return self.table.busy_wait(transfer), period, "too many concurrent downloads"
        if period is not None and advertised is not None and advertised != period:
            return 0, period, f"client period {advertised} differs from the server's {period}"
        return None, period, ""

    def _on_image_page(self, packet: t.ZigbeePacket, frame: frames.Frame, ieee: t.EUI64 | None) -> None:
        cmd = frame.command
        if not self.profile.page_requests:
            self._reject(packet, frame.tsn, frame.header.command_id, Status.UNSUP_CLUSTER_COMMAND, "page requests off")
            return
        held = self._served_image(ieee, cmd.manufacturer_code, cmd.image_type, cmd.file_version)
        if held is None:
            self._reject(packet, frame.tsn, frame.header.command_id, Status.NO_IMAGE_AVAILABLE, "no such image held")
            return
        if cmd.file_offset > held.size or cmd.maximum_data_size > cmd.page_size or cmd.maximum_data_size == 0:
            self._reject(packet, frame.tsn, frame.header.command_id, Status.INVALID_VALUE, "bad page request")
            return
        transfer = self._track(ieee, held, cmd.file_offset)
        task = asyncio.get_running_loop().create_task(self._serve_page(packet, frame.tsn, held, cmd, transfer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_page(
        self, packet: t.ZigbeePacket, tsn: int, held: HeldImage, cmd: Any, transfer: Transfer
    ) -> None:
        """Unsolicited Block Responses up to the page end or end of file, spaced ResponseSpacing ms, without APS
        ACKs (SPEC.md §2.5: the client re-requests what it missed)."""
        size = min(cmd.maximum_data_size, self.profile.max_block_size)
        end = min(cmd.file_offset + cmd.page_size, held.size)
        offset = cmd.file_offset
        spacing = cmd.response_spacing / 1000
        while offset < end:
            offset += self._send_block(packet, tsn, held, offset, min(size, end - offset), ack=False)
            self.table.served(transfer)
            self.table.touch(transfer)
            if offset < end:
                await asyncio.sleep(spacing)

    # -- Upgrade End --------------------------------------------------------------------------------------

    def _on_upgrade_end(self, packet: t.ZigbeePacket, frame: frames.Frame, ieee: t.EUI64 | None) -> None:
        cmd = frame.command
        self._emit(ev.UpgradeEndReceived(ieee, self.clock.now(), cmd.status, cmd.file_version))
        held = self.store.get(cmd.manufacturer_code, cmd.image_type, cmd.file_version)
        transfer = self.transfers.get((ieee, held.key)) if held is not None else None  # type: ignore[arg-type]
        if transfer is not None:
            self.table.end(transfer, completed=cmd.status == Status.SUCCESS)
        if cmd.status != Status.SUCCESS:
            if held is not None:
                self._report(ieee, held, TransferResponse.FILE_TRANSFER_FAILURE, f"client ended with {cmd.status.name}")
            if frames.wants_default_response(frame.header) and packet.dst is not None and not _is_broadcast(packet.dst):
                self._reply(
                    packet,
                    frames.default_response(
                        tsn=frame.tsn, command_id=frame.header.command_id, status=Status.SUCCESS, direction=frames.S2C
                    ),
                )
            return
        if held is None or (held.device_ids and ieee not in held.device_ids):
            self._reject(packet, frame.tsn, frame.header.command_id, Status.NO_IMAGE_AVAILABLE, "no such image held")
            return
        self._report(ieee, held, TransferResponse.SUCCESS, "client verified the image")
        current, upgrade = self.upgrade_times(self._activation_for(ieee, held))
        self._emit(ev.UpgradeEndResponseSent(ieee, self.clock.now(), held.file_version, current, upgrade, False))
        self._reply(
            packet,
            frames.encode(
                "upgrade_end_response",
                tsn=frame.tsn,
                manufacturer_code=held.manufacturer_id,
                image_type=held.image_type,
                file_version=held.file_version,
                current_time=current,
                upgrade_time=upgrade,
            ),
        )

    def awaiting_kind(self, ieee: t.EUI64) -> bool:
        """True while `ieee` was told to wait only because its kind is unknown: it gets another answer later."""
        return ieee in self._kind_pending

    def _activation_for(self, ieee: t.EUI64 | None, held: HeldImage) -> ActivationTime:
        """The image entry's setting, else the one for the device's kind; "wait" while the kind is unknown (and
        the device is remembered, to be answered again once zigpy has interviewed it)."""
        if held.activation is not None:
            return held.activation
        device = self.app.devices.get(ieee) if ieee is not None else None
        device_type = _device_type(device) if device is not None else None
        if device is None or device_type is None:
            if isinstance(device, zigpy.device.Device) and ieee is not None:
                self._kind_pending[ieee] = held
                if not device.initializing:
                    device.schedule_initialize()
            return ActivationTime.WAIT
        self._kind_pending.pop(device.ieee, None)
        if device_type == HCALCS_DEVICE_ID:
            return self.profile.hcalcs_activation
        return self.profile.ppmid_activation

    def upgrade_times(self, activation: ActivationTime) -> tuple[int, int]:
        """(CurrentTime, UpgradeTime) for an activation setting now (SPEC.md §2.8)."""
        return activation.upgrade_times(self.clock.zcl_utc(), self.clock.utc_from_zcl(0))

    def send_upgrade_end_response(
        self,
        ieee: t.EUI64 | None,
        held: HeldImage,
        activation: ActivationTime = ActivationTime.NOW,
        *,
        endpoint: int | None = None,
    ) -> None:
        """Unsolicited Upgrade End Response (S-14): unicast to `ieee`, or broadcast when None — how a server
        schedules activation on devices that were told to wait."""
        current, upgrade = self.upgrade_times(activation)
        data = frames.encode(
            "upgrade_end_response",
            tsn=self._sequence(ieee),
            manufacturer_code=held.manufacturer_id,
            image_type=held.image_type,
            file_version=held.file_version,
            current_time=current,
            upgrade_time=upgrade,
        )
        self._emit(ev.UpgradeEndResponseSent(ieee, self.clock.now(), held.file_version, current, upgrade, True))
        self._send_unsolicited(ieee, data, endpoint)

    # -- Query Device Specific File -------------------------------------------------------------------------

    def _on_query_specific_file(self, packet: t.ZigbeePacket, frame: frames.Frame, ieee: t.EUI64 | None) -> None:
        cmd = frame.command
        if not self.profile.query_specific_file:
            self._reject(packet, frame.tsn, frame.header.command_id, Status.UNSUP_CLUSTER_COMMAND, "QDSF off")
            return
        held = specific_file(self.store, cmd.request_node_addr, cmd.manufacturer_code, cmd.image_type)
        if held is None or (ieee is not None and held.destination != ieee):
            data = frames.encode("query_specific_file_response", tsn=frame.tsn, status=Status.NO_IMAGE_AVAILABLE)
        else:
            data = frames.encode(
                "query_specific_file_response",
                tsn=frame.tsn,
                status=Status.SUCCESS,
                manufacturer_code=held.manufacturer_id,
                image_type=held.image_type,
                file_version=held.file_version,
                image_size=held.size,
            )
        self._reply(packet, data)

    # -- Image Notify and image management --------------------------------------------------------------------

    def notify(
        self,
        ieee: t.EUI64 | None,
        held: HeldImage | None = None,
        *,
        payload_type: int | None = None,
        query_jitter: int | None = None,
        endpoint: int | None = None,
    ) -> None:
        """Image Notify (S-17): unicast to `ieee`, or broadcast when None (default response disabled)."""
        payload_type = self.profile.notify_payload_type if payload_type is None else payload_type
        jitter = self.profile.notify_jitter if query_jitter is None else query_jitter
        fields: dict[str, Any] = {"payload_type": payload_type, "query_jitter": jitter}
        if held is not None:
            if payload_type >= 1:
                fields["manufacturer_code"] = held.manufacturer_id
            if payload_type >= 2:
                fields["image_type"] = held.image_type
            if payload_type >= 3:
                fields["new_file_version"] = held.file_version
        data = frames.encode("image_notify", tsn=self._sequence(ieee), **fields)
        self._emit(ev.NotifySent(ieee, self.clock.now(), payload_type, jitter, ieee is None))
        self._send_unsolicited(ieee, data, endpoint)

    def _sequence(self, ieee: t.EUI64 | None) -> int:
        """A fresh TSN: from zigpy's per-device counter for a unicast, so it never repeats one zigpy itself just
        used towards that device (its interview sends an Image Notify too); from the app's for a broadcast."""
        device = self.app.devices.get(ieee) if ieee is not None else None
        if isinstance(device, zigpy.device.Device):
            return device.get_sequence()
        return self.app.get_sequence()

    def _send_unsolicited(self, ieee: t.EUI64 | None, data: bytes, endpoint: int | None) -> None:
        if ieee is None:
            dst = t.AddrModeAddress(addr_mode=t.AddrMode.Broadcast, address=t.BroadcastAddress.ALL_DEVICES)
            dst_ep = BROADCAST_ENDPOINT
        else:
            device = self.app.devices[ieee]
            dst = nwk_address(device.nwk)
            dst_ep = endpoint if endpoint is not None else _ota_client_endpoint(device)
        self.app.transmit(
            zigbee_packet(
                src=self._own_address(),
                src_ep=self.profile.endpoint,
                dst=dst,
                dst_ep=dst_ep,
                tsn=data[1],
                profile_id=self.profile.profile_id,
                cluster_id=CLUSTER_ID,
                data=data,
                ack=ieee is not None,
            )
        )

    def discard(self, held: HeldImage, reason: str = "image discarded by the CHF") -> None:
        """Stop holding `held`; each target that has not completed it gets a CCS08 "image discarded"."""
        self.store.remove(held)
        completed = {o.ieee for o in self.outcomes if o.file_version == held.file_version and o.response == 0}
        for ieee in held.device_ids:
            if ieee not in completed:
                self._report(ieee, held, TransferResponse.IMAGE_DISCARDED, reason)


def _device_type(device: zigpy.device.BaseDevice) -> int | None:
    """The device id of the endpoint that holds the OTA client (else of any application endpoint), or None while
    zigpy has no Simple Descriptor for it."""
    types: dict[int, int] = {
        endpoint_id: int(endpoint.device_type)
        for endpoint_id, endpoint in _endpoints(device).items()
        if endpoint_id != 0 and getattr(endpoint, "device_type", None) is not None
    }
    if not types:
        return None
    ota_client = _ota_client_endpoint(device)
    return types.get(ota_client, next(iter(types.values())))


def _endpoints(device: zigpy.device.BaseDevice) -> dict[int, Any]:
    return getattr(device, "endpoints", {})


def _ota_client_endpoint(device: zigpy.device.BaseDevice) -> int:
    for endpoint_id, endpoint in _endpoints(device).items():
        if endpoint_id != 0 and CLUSTER_ID in getattr(endpoint, "out_clusters", {}):
            return endpoint_id
    return 1


def _is_broadcast(address: t.AddrModeAddress) -> bool:
    """A broadcast or group destination (ZCL r7 §2.5.12.2: no Default Response to either)."""
    if address.addr_mode in (t.AddrMode.Broadcast, t.AddrMode.Group):
        return True
    return address.addr_mode == t.AddrMode.NWK and int(address_value(address)) >= FIRST_BROADCAST_NWK


def _with_trailing_bytes(data: bytes) -> frames.Frame | None:
    """A client command whose known fields are all there, followed by more bytes: accepted on its known fields.
    ZCL lets a later revision of a cluster append fields to a command, and a receiver of an older revision reads
    the ones it knows (zigpy does the same: it ignores data left after a command's schema)."""
    try:
        header, rest = headers.parse(data)
    except (ValueError, IndexError):
        return None
    definition = frames.SERVER_COMMANDS.get(header.command_id)
    if header.frame_control.frame_type != foundation.FrameType.CLUSTER_COMMAND or definition is None:
        return None
    if header.direction != frames.C2S or header.frame_control.is_manufacturer_specific:
        return None
    try:
        command, extra = definition.schema.deserialize(rest)
    except (ValueError, KeyError, IndexError):
        return None
    return frames.Frame(header, definition.name, command) if extra else None


def _deserialize_zdo(command: zdo_t.ZDOCmd, data: bytes) -> tuple[list[Any], bytes]:
    _, types = zdo_t.CLUSTERS[command]
    values: tuple[list[Any], bytes] = t.deserialize(data, types)
    return values
