"""A scripted OTA server on a real `Air`, and the pieces the device tests share.

`ScriptedServer` sits at NWK 0x0000 like a CHF: it answers the device's server discovery, serves an upgrade
image by default (QNI → offer, Image Block → block, Upgrade End → Upgrade End Response) and records every frame
the device sends, decoded with `emulator.ota.frames`. A test overrides any answer with `server.on[name] = fn`,
where `fn(received)` returns the frames to send back (bytes, a list of bytes, or None for silence).

Everything runs on virtual time (`emulator.clock.run(..., virtual=True)`), so hours of protocol time cost
milliseconds. The module also tests the harness itself, so a broken harness cannot make device tests pass.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zigpy.types as t
import zigpy.zdo.types as zdo_t
from zigpy.zcl import foundation

from emulator.clock import Clock, run
from emulator.device import events
from emulator.device.device import EmulatedDevice
from emulator.ota import frames
from emulator.ota import image as ota_image
from emulator.profiles import DeviceProfile, device_from_dict
from emulator.radio.air import Air

DATA = Path(__file__).parent / "data" / "gb-vectors"
START = datetime(2024, 1, 1, tzinfo=UTC)
SERVER_IEEE = t.EUI64.convert("00:DB:12:34:56:78:90:A2")
MFR = 0x121D
PPMID_TYPE = 0x0084
HCALCS_TYPE = 0x0085

Status = foundation.Status


def vrun(main: Callable[[], Awaitable[Any]]) -> Any:
    """Run a scenario on virtual time."""
    return run(main, virtual=True)


def ppmid_profile(**changes: Any) -> DeviceProfile:
    base = {
        "kind": "ppmid",
        "ieee": "00:DB:12:34:56:78:90:A4",
        "manufacturer_code": MFR,
        "image_type": PPMID_TYPE,
        "file_version": 1,
        "hardware_version": 0x1111,
        "query_interval": 3600,
        "query_start_jitter": 10,
        # These cases test the OTA client's protocol; signing is tested in test_trust.py and test_device_gb.py,
        # so here the device opts out of the fail-closed default and takes unsigned images.
        "require_signature": False,
    }
    base.update(changes)
    return device_from_dict(base)


def hcalcs_profile(**changes: Any) -> DeviceProfile:
    return ppmid_profile(kind="hcalcs", ieee="00:DB:12:34:56:78:90:A5", image_type=HCALCS_TYPE, **changes)


def gb_image(
    version: int = 2, *, image_type: int = PPMID_TYPE, size: int = 1000, manufacturer: int = MFR, **kwargs: Any
) -> bytes:
    payload = bytes((i * 7 + version) & 0xFF for i in range(size))
    kwargs.setdefault("hw_min", 0x1100)
    kwargs.setdefault("hw_max", 0x1200)
    return ota_image.build_gb(manufacturer, image_type, version, payload=payload, **kwargs).serialize()


@dataclasses.dataclass
class Received:
    at: float
    packet: t.ZigbeePacket
    frame: frames.Frame | None  # OTA cluster frames, decoded
    zdo: tuple[int, list] | None  # (cluster, values) of ZDO requests

    @property
    def name(self) -> str:
        if self.frame is not None:
            return self.frame.name
        if self.packet.dst_ep == 0:
            return f"zdo:{self.packet.cluster_id:04X}"
        return f"cluster:{self.packet.cluster_id:04X}"

    @property
    def data(self) -> bytes:
        return self.packet.data.serialize()


class ScriptedServer:
    """A CHF-like node at 0x0000 whose every answer a test can replace."""

    def __init__(self, air: Air, clock: Clock, *, image: bytes | None = None, endpoint: int = 1) -> None:
        self.air = air
        self.clock = clock
        self.nwk = 0x0000
        self.ieee = SERVER_IEEE
        self.rx_on_when_idle = True
        self.endpoint = endpoint
        self.profile_id = 0x0109
        self.image = image
        self.max_block = 63
        self.match = True
        self.upgrade_time: str | int | tuple[int, int] = "now"
        self.on: dict[str, Callable[[Received], Any]] = {}
        self.received: list[Received] = []
        self.unparsed: list[t.ZigbeePacket] = []
        self._changed = asyncio.Event()
        self._tsn = 0x80
        air.attach(self)

    # -- what the device sent ------------------------------------------------------------------------

    def sent(self, name: str) -> list[Received]:
        return [r for r in self.received if r.name == name]

    async def wait_for(self, name: str, count: int = 1, within: float = 7 * 86400) -> list[Received]:
        """Wait (protocol time) until the device has sent `count` frames named `name`."""
        async with asyncio.timeout(within):
            while len(self.sent(name)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.sent(name)

    # -- sending -----------------------------------------------------------------------------------------

    def next_tsn(self) -> int:
        self._tsn = (self._tsn + 1) & 0xFF
        return self._tsn

    def send(
        self,
        data: bytes,
        *,
        dst: int | None = None,
        broadcast: int | None = None,
        cluster: int = frames.CLUSTER_ID,
        dst_ep: int = 1,
        profile_id: int | None = None,
        src_ep: int | None = None,
    ) -> None:
        if broadcast is not None:
            address = t.AddrModeAddress(addr_mode=t.AddrMode.Broadcast, address=t.NWK(broadcast))
        else:
            address = t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(dst))
        packet = t.ZigbeePacket(
            src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(self.nwk)),
            src_ep=self.endpoint if src_ep is None else src_ep,
            dst=address,
            dst_ep=dst_ep,
            tsn=(data[0] if profile_id == 0 else data[1]) if len(data) > 1 else 0,
            profile_id=self.profile_id if profile_id is None else profile_id,
            cluster_id=cluster,
            data=t.SerializableBytes(data),
            radius=0,
        )
        self.air.send(packet)

    def reply(self, request: Received, data: bytes) -> None:
        packet = request.packet
        self.send(
            data, dst=packet.src.address, dst_ep=packet.src_ep, cluster=packet.cluster_id, profile_id=packet.profile_id
        )

    # -- receiving ---------------------------------------------------------------------------------------

    def receive(self, packet: t.ZigbeePacket) -> None:
        data = packet.data.serialize()
        frame = None
        zdo_values = None
        if packet.dst_ep == 0:
            if not packet.cluster_id & 0x8000 and packet.cluster_id in zdo_t.CLUSTERS:
                types = zdo_t.CLUSTERS[zdo_t.ZDOCmd(packet.cluster_id)][1]
                values, _ = t.deserialize(data[1:], types)
                zdo_values = (packet.cluster_id, values)
        elif packet.cluster_id == frames.CLUSTER_ID:
            try:
                frame = frames.decode(data)
            except (frames.MalformedFrame, frames.UnsupportedCommand):
                self.unparsed.append(packet)
        received = Received(self.clock.now(), packet, frame, zdo_values)
        self.received.append(received)
        self._changed.set()
        handler = self.on.get(received.name) or getattr(self, f"_default_{received.name.replace(':', '_')}", None)
        if handler is None:
            return
        answers = handler(received)
        if answers is None:
            return
        for answer in [answers] if isinstance(answers, bytes) else answers:
            if packet.dst_ep == 0:
                self.send(
                    answer, dst=packet.src.address, dst_ep=0, src_ep=0, profile_id=0, cluster=packet.cluster_id | 0x8000
                )
            else:
                self.reply(received, answer)

    # -- default answers -----------------------------------------------------------------------------------

    def header(self) -> ota_image.OTAImageHeader:
        assert self.image is not None
        return ota_image.parse(self.image).header

    def _default_zdo_0006(self, r: Received) -> bytes:
        """Match_Desc_req → our OTA server endpoint."""
        eps = [self.endpoint] if self.match else []
        return bytes([r.data[0]]) + t.serialize(
            [zdo_t.Status.SUCCESS, self.nwk, eps], [zdo_t.Status, t.NWK, t.LVList[t.uint8_t, t.uint8_t]]
        )

    def _default_zdo_0001(self, r: Received) -> bytes:
        """IEEE_addr_req → our EUI-64."""
        return bytes([r.data[0]]) + t.serialize(
            [zdo_t.Status.SUCCESS, self.ieee, self.nwk], [zdo_t.Status, t.EUI64, t.NWK]
        )

    def _default_query_next_image(self, r: Received) -> bytes:
        cmd = r.frame.command
        if self.image is None:
            return frames.encode("query_next_image_response", tsn=r.frame.tsn, status=Status.NO_IMAGE_AVAILABLE)
        header = self.header()
        if header.file_version == cmd.current_file_version or header.image_type != cmd.image_type:
            return frames.encode("query_next_image_response", tsn=r.frame.tsn, status=Status.NO_IMAGE_AVAILABLE)
        return frames.encode(
            "query_next_image_response",
            tsn=r.frame.tsn,
            status=Status.SUCCESS,
            manufacturer_code=header.manufacturer_id,
            image_type=header.image_type,
            file_version=header.file_version,
            image_size=len(self.image),
        )

    def block(self, r: Received, offset: int | None = None, size: int | None = None, **changes: Any) -> bytes:
        """The Image Block Response SUCCESS a correct server would send for request `r` (fields overridable)."""
        cmd = r.frame.command
        offset = cmd.file_offset if offset is None else offset
        size = min(cmd.maximum_data_size, self.max_block) if size is None else size
        fields = {
            "status": Status.SUCCESS,
            "manufacturer_code": cmd.manufacturer_code,
            "image_type": cmd.image_type,
            "file_version": cmd.file_version,
            "file_offset": offset,
            "image_data": self.image[offset : offset + size],
        }
        fields.update(changes)
        return frames.encode("image_block_response", tsn=r.frame.tsn, **fields)

    def _default_image_block(self, r: Received) -> bytes:
        return self.block(r)

    def _default_image_page(self, r: Received) -> bytes:
        return frames.default_response(
            tsn=r.frame.tsn, command_id=0x04, status=Status.UNSUP_CLUSTER_COMMAND, direction=frames.S2C
        )

    def upgrade_end_response(self, tsn: int, *, current: int, upgrade: int, **ids: int) -> bytes:
        header = self.header()
        fields = {
            "manufacturer_code": header.manufacturer_id,
            "image_type": header.image_type,
            "file_version": header.file_version,
        }
        fields.update(ids)
        return frames.encode("upgrade_end_response", tsn=tsn, current_time=current, upgrade_time=upgrade, **fields)

    def _default_upgrade_end(self, r: Received) -> bytes:
        if r.frame.command.status != Status.SUCCESS:
            return frames.default_response(
                tsn=r.frame.tsn, command_id=0x06, status=Status.SUCCESS, direction=frames.S2C
            )
        policy = self.upgrade_time
        now = self.clock.zcl_utc()
        if policy == "now":
            current, upgrade = now, now
        elif policy == "wait":
            current, upgrade = now, frames.UPGRADE_TIME_WAIT
        elif isinstance(policy, tuple):
            current, upgrade = policy
        else:
            current, upgrade = 0, int(policy)
        return self.upgrade_end_response(r.frame.tsn, current=current, upgrade=upgrade)


def notify(
    server: ScriptedServer, payload_type: int = 0, jitter: int = 100, *, broadcast: bool = False, **fields: Any
) -> None:
    """Image Notify from the server: unicast to the device at 0x1234, or broadcast to every node."""
    data = frames.encode(
        "image_notify", tsn=server.next_tsn(), payload_type=payload_type, query_jitter=jitter, **fields
    )
    if broadcast:
        server.send(data, broadcast=0xFFFF, dst_ep=0xFF)
    else:
        server.send(data, dst=0x1234)


class EventLog:
    """Every event a device emitted, with waiting."""

    def __init__(self, device: EmulatedDevice) -> None:
        self.items: list[events.DeviceEvent] = []
        self._changed = asyncio.Event()
        device.add_listener(self._on)

    def _on(self, event: events.DeviceEvent) -> None:
        self.items.append(event)
        self._changed.set()

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.items if isinstance(e, kind)]

    async def wait(
        self,
        kind: type,
        count: int = 1,
        within: float = 7 * 86400,
        where: Callable[[Any], bool] | None = None,
        **match: Any,
    ) -> list[Any]:
        """Wait (protocol time) for `count` events of `kind` whose fields equal `match` and satisfy `where`."""

        def found() -> list[Any]:
            return [
                e
                for e in self.of(kind)
                if all(getattr(e, k) == v for k, v in match.items()) and (where is None or where(e))
            ]

        async with asyncio.timeout(within):
            while len(found()) < count:
                self._changed.clear()
                await self._changed.wait()
        return found()


@dataclasses.dataclass
class Bench:
    air: Air
    clock: Clock
    server: ScriptedServer
    device: EmulatedDevice
    log: EventLog


async def bench(
    profile: DeviceProfile | None = None,
    *,
    image: bytes | None = None,
    start: bool = True,
    air: Air | None = None,
    **device_args: Any,
) -> Bench:
    """Air + scripted server + one device (started unless `start=False`)."""
    air = air or Air(seed=1)
    clock = Clock(start_utc=START)
    server = ScriptedServer(air, clock, image=image)
    device = EmulatedDevice(profile or ppmid_profile(), air, clock, nwk=0x1234, **device_args)
    log = EventLog(device)
    if start:
        await device.start()
    return Bench(air, clock, server, device, log)


# -- tests of the harness itself ---------------------------------------------------------------------------


def test_scripted_server_answers_discovery_and_records_frames() -> None:
    async def main() -> None:
        b = await bench()
        found = await b.log.wait(events.ServerDiscovered)
        assert found[0].server_nwk == 0x0000 and found[0].server_ieee == SERVER_IEEE
        assert [r.name for r in b.server.received[:2]] == ["zdo:0013", "zdo:0006"]
        await b.device.stop()

    vrun(main)


def test_default_block_answer_carries_the_requested_slice() -> None:
    async def main() -> None:
        image = gb_image(size=200)
        b = await bench(image=image)
        reqs = await b.server.wait_for("image_block", 2)
        first = reqs[0]
        block = frames.decode(b.server.block(first)).command
        assert block.file_offset == 0 and bytes(block.image_data) == image[:63]
        await b.device.stop()

    vrun(main)
