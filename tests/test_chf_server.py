"""The CHF OTA server (S-01…S-18) on the real zigpy loopback app, probed byte by byte by a scripted client
on the virtual air."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import pytest
import zigpy.endpoint
import zigpy.types as t
import zigpy.zdo.types as zdo_t

from emulator.chf import events as ev
from emulator.chf.server import OtaServer
from emulator.chf.store import HeldImage, ImageStore
from emulator.clock import Clock
from emulator.gb.codes import AlertCode, TransferResponse
from emulator.ota import frames
from emulator.ota.blocks import encode_wait_for_data
from emulator.ota.frames import Status
from emulator.ota.image import build_gb, build_zigbee
from emulator.profiles import ActivationTime, ChfProfile
from emulator.radio.air import Air
from emulator.radio.loopback import LoopbackApp, loopback_config

pytestmark = pytest.mark.virtual_time

CHF_IEEE = t.EUI64.convert("00:db:12:34:56:78:90:a2")
PPMID = t.EUI64.convert("00:db:12:34:56:78:90:a4")
HCALCS = t.EUI64.convert("00:db:12:34:56:78:90:a5")
PPMID_DEVICE_ID = 0x0506
STRANGER = t.EUI64.convert("00:db:12:34:56:78:90:ff")
MFR, TYPE = 0x121D, 0x0084
START = datetime(2026, 1, 1, tzinfo=UTC)


class ScriptedClient:
    """A node that sends exactly the OTA frames a test gives it and records what comes back."""

    rx_on_when_idle = True

    def __init__(self, air: Air, nwk: int, ieee: t.EUI64, *, endpoint: int = 1, profile_id: int = 0x0109) -> None:
        self.air, self.nwk, self.ieee, self.endpoint, self.profile_id = air, nwk, ieee, endpoint, profile_id
        self.inbox: asyncio.Queue[tuple[t.ZigbeePacket, bytes]] = asyncio.Queue()
        self.tsn = 0x40

    def receive(self, packet: t.ZigbeePacket) -> None:
        if packet.cluster_id in (frames.CLUSTER_ID, zdo_t.ZDOCmd.Match_Desc_rsp):
            self.inbox.put_nowait((packet, packet.data.serialize()))

    def send_raw(
        self, data: bytes, *, cluster: int = frames.CLUSTER_ID, src_ep: int | None = None, dst_ep: int = 1
    ) -> None:
        self.air.send(
            t.ZigbeePacket(
                src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=self.nwk),
                src_ep=self.endpoint if src_ep is None else src_ep,
                dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=0x0000),
                dst_ep=dst_ep,
                tsn=data[0] if cluster != frames.CLUSTER_ID else data[1],
                profile_id=self.profile_id if cluster == frames.CLUSTER_ID else 0,
                cluster_id=cluster,
                data=t.SerializableBytes(data),
            )
        )

    def send(self, name: str, **fields) -> int:
        self.tsn = (self.tsn + 1) & 0xFF
        self.send_raw(frames.encode(name, tsn=self.tsn, **fields))
        return self.tsn

    async def expect(self, within: float = 10.0) -> tuple[t.ZigbeePacket, bytes]:
        return await asyncio.wait_for(self.inbox.get(), within)

    async def silence(self, seconds: float = 10.0) -> None:
        await asyncio.sleep(seconds)
        assert self.inbox.empty(), f"unexpected frame {self.inbox.get_nowait()[1].hex()}"

    def query(self, version: int = 1, hardware: int | None = 0x1111, image_type: int = TYPE) -> int:
        fields = {
            "field_control": 0,
            "manufacturer_code": MFR,
            "image_type": image_type,
            "current_file_version": version,
        }
        if hardware is not None:
            fields.update(field_control=1, hardware_version=hardware)
        return self.send("query_next_image", **fields)

    def block(self, held: HeldImage, offset: int, size: int = 63, **extra) -> int:
        return self.send(
            "image_block",
            field_control=extra.pop("field_control", 0),
            manufacturer_code=held.manufacturer_id,
            image_type=held.image_type,
            file_version=held.file_version,
            file_offset=offset,
            maximum_data_size=size,
            **extra,
        )


class Han:
    def __init__(self, app: LoopbackApp, air: Air, server: OtaServer, clock: Clock) -> None:
        self.app, self.air, self.server, self.clock = app, air, server, clock
        self.events: list[ev.ServerEvent] = []
        server.add_listener(self.events.append)
        self._nwk = 0x1000

    def client(self, ieee: t.EUI64, *, device_type: int | None = None, **kwargs) -> ScriptedClient:
        self._nwk += 1
        node = ScriptedClient(self.air, self._nwk, ieee, **kwargs)
        self.air.attach(node)
        self.app.handle_join(t.NWK(node.nwk), ieee, t.NWK(0))
        if device_type is not None:
            self.interviewed(ieee, device_type, node.endpoint)
        return node

    def interviewed(self, ieee: t.EUI64, device_type: int, endpoint_id: int = 1) -> None:
        """What zigpy knows once its interview has read the device's Simple Descriptor: its device id."""
        device = self.app.get_device(ieee=ieee)
        endpoint = device.add_endpoint(endpoint_id)
        endpoint.profile_id, endpoint.device_type = 0x0109, device_type
        endpoint.add_output_cluster(0x0019)
        endpoint.status = zigpy.endpoint.Status.ZDO_INIT

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def gb_image(version: int = 2, size: int = 300, device_ids: tuple[t.EUI64, ...] = (PPMID, HCALCS)) -> HeldImage:
    payload = bytes((i * 7 + 3) & 0xFF for i in range(size))
    image = build_gb(MFR, TYPE, version, payload=payload, hw_min=0x1111, hw_max=0x1211)
    return HeldImage.from_bytes(image.serialize(), device_ids=device_ids)


async def start_han(profile: ChfProfile, images: list[HeldImage]) -> Han:
    air = Air(seed=3)
    clock = Clock(START)
    config = loopback_config(
        ieee=CHF_IEEE,
        channel=15,
        pan_id=0x1A62,
        extended_pan_id=t.EUI64.convert("dd:dd:dd:dd:dd:dd:dd:dd"),
        network_key=bytes(16),
    )
    app = await LoopbackApp.start_on(air, config, CHF_IEEE)
    server = OtaServer(app, profile, ImageStore(images), clock)
    server.start()
    return Han(app, air, server, clock)


@pytest.fixture
async def han():
    held = gb_image()
    h = await start_han(ChfProfile(notify="none"), [held])
    h.held = held
    yield h
    h.server.stop()
    await h.app.shutdown()


def decode(data: bytes) -> frames.Frame:
    return frames.decode(data)


# -- S-01…S-05: Query Next Image ---------------------------------------------------------------------------


async def test_s01_query_offered_with_total_size_echoed_tsn_and_fc_0x19(han):
    client = han.client(PPMID)
    tsn = client.query(version=1)
    packet, data = await client.expect()
    assert data[0] == 0x19 and data[1] == tsn and data[2] == 0x02
    assert len(data) - 3 == 13
    rsp = decode(data).command
    assert (rsp.status, rsp.manufacturer_code, rsp.image_type, rsp.file_version) == (Status.SUCCESS, MFR, TYPE, 2)
    assert rsp.image_size == han.held.size == len(han.held.data)
    assert packet.src_ep == 1 and packet.dst_ep == client.endpoint and packet.profile_id == 0x0109


@pytest.mark.parametrize(
    ("hardware", "status"),
    [
        (0x1110, Status.NO_IMAGE_AVAILABLE),
        (0x1111, Status.SUCCESS),
        (0x1200, Status.SUCCESS),
        (0x1211, Status.SUCCESS),
        (0x1212, Status.NO_IMAGE_AVAILABLE),
    ],
)
async def test_s02_hardware_range_bounds(han, hardware, status):
    client = han.client(PPMID)
    client.query(hardware=hardware)
    _, data = await client.expect()
    assert decode(data).command.status == status
    if status != Status.SUCCESS:
        assert len(data) == 4  # one status byte
        outcome = han.of(ev.TransferOutcome)
        assert [o.response for o in outcome] == [TransferResponse.HARDWARE_VERSION_MISMATCH]
        assert outcome[0].alert_code == AlertCode.FIRMWARE_TRANSFER_FAILURE and outcome[0].ieee == PPMID


async def test_s03_query_without_hardware_version_follows_policy():
    held = gb_image()
    lenient = await start_han(ChfProfile(notify="none"), [held])
    client = lenient.client(PPMID)
    client.query(hardware=None)
    assert decode((await client.expect())[1]).command.status == Status.SUCCESS
    await lenient.app.shutdown()

    strict = await start_han(ChfProfile(notify="none", require_hardware_version=True), [held])
    client = strict.client(PPMID)
    client.query(hardware=None)
    assert decode((await client.expect())[1]).command.status == Status.NO_IMAGE_AVAILABLE
    await strict.app.shutdown()


@pytest.mark.parametrize(
    ("policy", "current", "status"),
    [
        ("upgrade", 2, Status.NO_IMAGE_AVAILABLE),
        ("upgrade", 3, Status.NO_IMAGE_AVAILABLE),
        ("reinstall", 2, Status.SUCCESS),
        ("downgrade", 3, Status.SUCCESS),
        ("any", 1, Status.SUCCESS),
    ],
)
async def test_s04_version_policy(policy, current, status):
    h = await start_han(ChfProfile(notify="none", query_policy=policy), [gb_image()])
    client = h.client(PPMID)
    client.query(version=current)
    assert decode((await client.expect())[1]).command.status == status
    await h.app.shutdown()


@pytest.mark.parametrize(
    ("untargeted", "status"), [("no_image", Status.NO_IMAGE_AVAILABLE), ("not_authorized", Status.NOT_AUTHORIZED)]
)
async def test_s05_device_outside_device_id_list(untargeted, status):
    h = await start_han(ChfProfile(notify="none", untargeted=untargeted), [gb_image()])
    client = h.client(STRANGER)
    client.query()
    assert decode((await client.expect())[1]).command.status == status
    client.block(next(iter(h.server.store)), 0)
    _, data = await client.expect()
    assert decode(data).command.status == Status.NO_IMAGE_AVAILABLE  # Default Response, nothing served
    await h.app.shutdown()


# -- S-06…S-10: blocks --------------------------------------------------------------------------------------


async def test_s06_blocks_echo_offset_respect_sizes_and_rebuild_the_file(han):
    client = han.client(PPMID)
    received = bytearray()
    offset = 0
    while offset < han.held.size:
        tsn = client.block(han.held, offset, size=50)
        _, data = await client.expect()
        rsp = decode(data).command
        assert data[1] == tsn and rsp.status == Status.SUCCESS and rsp.file_offset == offset
        assert 0 < len(rsp.image_data) <= 50
        received += rsp.image_data
        offset += len(rsp.image_data)
    assert bytes(received) == han.held.data
    assert len(rsp.image_data) == han.held.size % 50  # short last block


async def test_s06_server_cap_below_client_maximum():
    held = gb_image()
    h = await start_han(ChfProfile(notify="none", max_block_size=40), [held])
    client = h.client(PPMID)
    client.block(held, 0, size=200)
    assert len(decode((await client.expect())[1]).command.image_data) == 40
    await h.app.shutdown()


async def test_s07_unknown_image_gets_default_response_0x98(han):
    client = han.client(PPMID)
    tsn = client.send(
        "image_block",
        field_control=0,
        manufacturer_code=0xFFF0,
        image_type=0x0000,
        file_version=0xFFFFFFF0,
        file_offset=100,
        maximum_data_size=63,
    )
    _, data = await client.expect()
    assert data == bytes([0x18, tsn, 0x0B, 0x03, 0x98])


async def test_s08_offset_past_end_aborts(han):
    client = han.client(PPMID)
    client.block(han.held, han.held.size)
    _, data = await client.expect()
    assert decode(data).command.status == Status.ABORT and len(data) == 4


async def test_s09_wait_for_data_then_minimum_block_period():
    held = gb_image()
    h = await start_han(ChfProfile(notify="none", wait_for_data=30, minimum_block_period=250), [held])
    client = h.client(PPMID)
    client.block(held, 0, field_control=2, minimum_block_period=0)
    rsp = decode((await client.expect())[1]).command
    assert rsp.status == Status.WAIT_FOR_DATA
    assert rsp.request_time - rsp.current_time == 30 and rsp.current_time == h.clock.zcl_utc()
    assert rsp.minimum_block_period == 250
    client.block(held, 0, field_control=2, minimum_block_period=0)
    rsp = decode((await client.expect())[1]).command
    assert rsp.status == Status.WAIT_FOR_DATA and rsp.minimum_block_period == 250
    client.block(held, 0, field_control=2, minimum_block_period=250)
    assert decode((await client.expect())[1]).command.status == Status.SUCCESS
    await h.app.shutdown()


async def test_s10_clients_served_independently_and_excess_told_to_wait():
    held = gb_image(device_ids=())
    h = await start_han(ChfProfile(notify="none", max_concurrent_downloads=2), [held])
    clients = [h.client(t.EUI64(bytes([i, 0, 0, 0, 0, 0, 0xDB, 0]))) for i in range(1, 4)]
    for offset, client in zip((0, 63, 126), clients, strict=True):
        client.block(held, offset)
    first, second, third = [decode((await c.expect())[1]).command for c in clients]
    assert (first.file_offset, second.file_offset) == (0, 63)
    assert first.image_data == held.data[:63] and second.image_data == held.data[63:126]
    assert third.status == Status.WAIT_FOR_DATA and third.request_time - third.current_time == 60
    await h.app.shutdown()


async def test_s10_a_slot_frees_when_a_download_times_out_and_each_transfer_times_out_on_its_own_clock():
    held = gb_image(device_ids=())
    h = await start_han(ChfProfile(notify="none", max_concurrent_downloads=1), [held])
    timeout = h.server.profile.transfer_timeout
    quiet, busy, waiting = (h.client(t.EUI64(bytes([i, 0, 0, 0, 0, 0, 0xDB, 0]))) for i in range(1, 4))
    quiet.block(held, 0)
    assert decode((await quiet.expect())[1]).command.status == Status.SUCCESS
    await asyncio.sleep(timeout / 2)
    busy.block(held, 0)  # a second transfer, started half a timeout later and kept alive by its requests
    assert decode((await busy.expect())[1]).command.status == Status.WAIT_FOR_DATA
    waiting.block(held, 0)
    assert decode((await waiting.expect())[1]).command.status == Status.WAIT_FOR_DATA
    await asyncio.sleep(timeout / 2 + 1)
    assert [o.ieee for o in h.of(ev.TransferOutcome)] == [quiet.ieee]  # only the first one has gone quiet
    busy.block(held, 0)
    assert decode((await busy.expect())[1]).command.status == Status.SUCCESS  # its slot is free again
    waiting.block(held, 0)
    told = decode((await waiting.expect())[1]).command
    assert told.status == Status.WAIT_FOR_DATA
    asked_at = h.clock.now()
    await asyncio.sleep(timeout + 1)
    assert [o.ieee for o in h.of(ev.TransferOutcome)] == [quiet.ieee, busy.ieee]
    # The waiting client is not late before the time it was told to come back, plus the timeout.
    await asyncio.sleep(asked_at + told.request_time - told.current_time + timeout - h.clock.now() - 1)
    assert [o.ieee for o in h.of(ev.TransferOutcome)] == [quiet.ieee, busy.ieee]
    await asyncio.sleep(2)
    assert [o.ieee for o in h.of(ev.TransferOutcome)] == [quiet.ieee, busy.ieee, waiting.ieee]
    await h.app.shutdown()


async def test_s10_a_waiting_client_is_told_to_come_back_when_its_turn_is_likely() -> None:
    held = gb_image(device_ids=())
    h = await start_han(ChfProfile(notify="none", max_concurrent_downloads=2), [held])
    table = h.server.table
    first, second = (table.track(t.EUI64(bytes([i, 0, 0, 0, 0, 0, 0xDB, 1])), held)[0] for i in range(2))
    for transfer in (first, second):
        table.served(transfer)
    await asyncio.sleep(100)
    table.end(first, completed=True)  # one download has taken 100 s
    assert table.typical_download == pytest.approx(100)
    waiting = [table.track(t.EUI64(bytes([i, 0, 0, 0, 0, 0, 0xDB, 2])), held)[0] for i in range(200)]
    waits = [table.busy_wait(transfer) for transfer in waiting]
    # 100 s a download, two at a time: the n-th in the queue is likely served in 50 n s; never less than 60 s,
    # never more than an hour.
    assert waits[:4] == [60, 100, 150, 200] and waits[-1] == 3600
    table.served(waiting[0])  # the head of the queue got its slot: everyone behind it moves up
    assert [table.busy_wait(transfer) for transfer in waiting[1:4]] == [60, 100, 150]
    await h.app.shutdown()


def test_the_wait_for_data_codec_matches_the_general_codec() -> None:
    rng = random.Random(5)
    for _ in range(100):
        tsn, now, delay = rng.randrange(256), rng.randrange(1 << 31), rng.randrange(1 << 16)
        period = rng.choice([None, rng.randrange(1 << 16)])
        expected = frames.encode(
            "image_block_response",
            tsn=tsn,
            status=Status.WAIT_FOR_DATA,
            current_time=now,
            request_time=now + delay,
            minimum_block_period=period,
        )
        assert encode_wait_for_data(tsn, now, now + delay, period) == expected


# -- S-11: pages ---------------------------------------------------------------------------------------------


async def test_s11_page_request_refused_when_disabled():
    held = gb_image()
    h = await start_han(ChfProfile(notify="none", page_requests=False), [held])
    client = h.client(PPMID)
    tsn = client.send(
        "image_page",
        field_control=0,
        manufacturer_code=MFR,
        image_type=TYPE,
        file_version=2,
        file_offset=0,
        maximum_data_size=50,
        page_size=200,
        response_spacing=20,
    )
    assert (await client.expect())[1] == bytes([0x18, tsn, 0x0B, 0x04, 0x81])
    await h.app.shutdown()


async def test_s11_page_served_spaced_without_acks_and_stops_at_page_end(han):
    client = han.client(PPMID)
    client.send(
        "image_page",
        field_control=0,
        manufacturer_code=MFR,
        image_type=TYPE,
        file_version=2,
        file_offset=10,
        maximum_data_size=50,
        page_size=120,
        response_spacing=40,
    )
    got = [await client.expect() for _ in range(3)]
    await client.silence(2)
    offsets = [decode(d).command.file_offset for _, d in got]
    sizes = [len(decode(d).command.image_data) for _, d in got]
    assert offsets == [10, 60, 110] and sizes == [50, 50, 20]
    assert all(not p.tx_options & t.TransmitOptions.ACK for p, _ in got)


# -- S-12…S-14: Upgrade End ----------------------------------------------------------------------------------


async def test_s12_upgrade_end_success_answered_per_gb_policy(han):
    client = han.client(PPMID, device_type=PPMID_DEVICE_ID)
    tsn = client.send("upgrade_end", status=Status.SUCCESS, manufacturer_code=MFR, image_type=TYPE, file_version=2)
    _, data = await client.expect()
    rsp = decode(data).command
    assert data[1] == tsn and len(data) - 3 == 16
    assert (rsp.manufacturer_code, rsp.image_type, rsp.file_version) == (MFR, TYPE, 2)
    assert rsp.current_time == rsp.upgrade_time == han.clock.zcl_utc()  # PPMID: now
    assert [o.response for o in han.of(ev.TransferOutcome)] == [TransferResponse.SUCCESS]
    assert han.of(ev.TransferOutcome)[0].alert_code == AlertCode.FIRMWARE_TRANSFER_SUCCESS


@pytest.mark.parametrize(("activation", "expect"), [("wait", "wait"), ("+3600", "relative")])
async def test_s12_activation_wait_and_relative(activation, expect):
    held = gb_image()
    h = await start_han(ChfProfile(notify="none", ppmid_activation=activation), [held])
    client = h.client(PPMID, device_type=PPMID_DEVICE_ID)
    client.send("upgrade_end", status=Status.SUCCESS, manufacturer_code=MFR, image_type=TYPE, file_version=2)
    rsp = decode((await client.expect())[1]).command
    if expect == "wait":
        assert rsp.upgrade_time == 0xFFFFFFFF
    else:
        assert (rsp.current_time, rsp.upgrade_time) == (0, 3600)
    await h.app.shutdown()


async def test_s12_a_device_of_unknown_kind_is_told_to_wait_then_answered_once_known():
    """GB: an HCALCS switches only on Activate Firmware (DUIS SR 11.3), so a device whose Simple Descriptor the
    CHF has not read yet is never told "now"; once it is known, it gets the answer for its kind (S-14)."""
    h = await start_han(ChfProfile(notify="none"), [gb_image()])
    client = h.client(PPMID)
    client.send("upgrade_end", status=Status.SUCCESS, manufacturer_code=MFR, image_type=TYPE, file_version=2)
    assert decode((await client.expect())[1]).command.upgrade_time == 0xFFFFFFFF
    h.interviewed(PPMID, PPMID_DEVICE_ID)
    h.app.device_initialized(h.app.get_device(ieee=PPMID))
    rsp = decode((await client.expect())[1]).command
    assert rsp.current_time == rsp.upgrade_time == h.clock.zcl_utc()
    hcalcs = h.client(HCALCS)
    hcalcs.send("upgrade_end", status=Status.SUCCESS, manufacturer_code=MFR, image_type=TYPE, file_version=2)
    assert decode((await hcalcs.expect())[1]).command.upgrade_time == 0xFFFFFFFF
    h.interviewed(HCALCS, 0x0504)
    h.app.device_initialized(h.app.get_device(ieee=HCALCS))
    await hcalcs.silence()  # an HCALCS stays told to wait: activation is for Activate Firmware
    await h.app.shutdown()


@pytest.mark.parametrize("status", [Status.ABORT, Status.INVALID_IMAGE, Status.REQUIRE_MORE_IMAGE])
async def test_s13_failed_upgrade_end_gets_default_response_only(han, status):
    client = han.client(PPMID)
    tsn = client.send("upgrade_end", status=status, manufacturer_code=MFR, image_type=TYPE, file_version=2)
    assert (await client.expect())[1] == bytes([0x18, tsn, 0x0B, 0x06, 0x00])
    await client.silence()
    assert [o.response for o in han.of(ev.TransferOutcome)] == [TransferResponse.FILE_TRANSFER_FAILURE]


async def test_s14_unsolicited_upgrade_end_response_unicast_and_broadcast(han):
    client = han.client(PPMID)
    han.server.send_upgrade_end_response(PPMID, han.held, ActivationTime.after(120))
    packet, data = await client.expect()
    rsp = decode(data).command
    assert (rsp.current_time, rsp.upgrade_time, rsp.file_version) == (0, 120, 2)
    assert packet.dst.address == client.nwk
    han.server.send_upgrade_end_response(None, han.held, ActivationTime.NOW)
    packet, data = await client.expect()
    assert packet.dst.addr_mode == t.AddrMode.Broadcast and decode(data).name == "upgrade_end_response"


# -- S-15…S-17 ------------------------------------------------------------------------------------------------


async def test_s15_query_device_specific_file():
    specific = HeldImage.from_bytes(
        build_zigbee(MFR, 0xFFC1, 5, payload=b"config", destination=PPMID).serialize(), device_ids=()
    )
    for enabled in (False, True):
        h = await start_han(ChfProfile(notify="none", query_specific_file=enabled), [specific])
        client = h.client(PPMID)
        tsn = client.send(
            "query_specific_file",
            request_node_addr=PPMID,
            manufacturer_code=MFR,
            image_type=0xFFC1,
            file_version=1,
            current_zigbee_stack_version=2,
        )
        _, data = await client.expect()
        if enabled:
            rsp = decode(data).command
            assert (rsp.status, rsp.file_version, rsp.image_size) == (Status.SUCCESS, 5, specific.size)
        else:
            assert data == bytes([0x18, tsn, 0x0B, 0x08, 0x81])
        await h.app.shutdown()


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (bytes([0x01, 0x50, 0x01, 0x1D]), 0x80),
        (bytes([0x01, 0x51, 0x03]) + bytes(5), 0x80),
        (bytes([0x09, 0x52, 0x02, 0x98]), 0x81),
        (bytes([0x01, 0x53, 0x0A, 0x00]), 0x81),
    ],
)
async def test_s16_malformed_and_wrong_direction(han, payload, status):
    client = han.client(PPMID)
    client.send_raw(payload)
    _, data = await client.expect()
    assert data == bytes([0x18, payload[1], 0x0B, payload[2], status])


@pytest.mark.parametrize("payload_type", [0, 1, 2, 3])
async def test_s17_image_notify_payload_types(han, payload_type):
    client = han.client(PPMID)
    han.server.notify(PPMID, han.held, payload_type=payload_type, query_jitter=42)
    _, data = await client.expect()
    cmd = decode(data).command
    assert len(data) - 3 == (2, 4, 6, 10)[payload_type]
    assert (cmd.payload_type, cmd.query_jitter) == (payload_type, 42)
    if payload_type == 3:
        assert (cmd.manufacturer_code, cmd.image_type, cmd.new_file_version) == (MFR, TYPE, 2)
    han.server.notify(None, han.held, payload_type=payload_type, query_jitter=42)
    packet2, data2 = await client.expect()
    assert packet2.dst.addr_mode == t.AddrMode.Broadcast and data2[0] & 0x10  # default response disabled
    assert data2[1] != data[1]  # a fresh TSN each time


# -- S-18 and discovery ---------------------------------------------------------------------------------------


async def test_s18_transfer_timeout_and_discard_reported_once_per_target(han):
    client = han.client(PPMID)
    client.block(han.held, 0)
    await client.expect()
    await asyncio.sleep(han.server.profile.transfer_timeout + 5)
    han.server.discard(han.held)
    outcomes = {(o.ieee, o.response) for o in han.of(ev.TransferOutcome)}
    assert outcomes == {
        (PPMID, TransferResponse.FILE_TRANSFER_FAILURE),
        (PPMID, TransferResponse.IMAGE_DISCARDED),
        (HCALCS, TransferResponse.IMAGE_DISCARDED),
    }
    client.block(han.held, 63)
    assert decode((await client.expect())[1]).command.status == Status.NO_IMAGE_AVAILABLE


async def test_match_desc_for_ota_server_answered_for_smart_energy(han):
    client = han.client(PPMID)
    _, types = zdo_t.CLUSTERS[zdo_t.ZDOCmd.Match_Desc_req]
    request = bytes([0x33]) + t.serialize([t.NWK(0x0000), 0x0109, [0x0019], []], types)
    client.send_raw(request, cluster=zdo_t.ZDOCmd.Match_Desc_req, src_ep=0, dst_ep=0)
    _, data = await client.expect()
    assert data == bytes([0x33, 0x00, 0x00, 0x00, 0x01, 0x01])


async def test_zigpy_ota_cluster_never_answers_in_our_place(han):
    """zigpy would answer NO_IMAGE_AVAILABLE itself (ZIGPY_BELLOWS.md §1.4): exactly one answer arrives."""
    client = han.client(PPMID, profile_id=0x0104)
    client.query()
    assert decode((await client.expect())[1]).command.status == Status.SUCCESS
    await client.silence()


async def test_random_and_truncated_frames_never_break_the_server(han):
    """Fuzz: random bytes and every truncation of each client command; the server answers errors with Default
    Responses (0x80/0x81) or not at all, never raises, and still serves a good query afterwards."""
    client = han.client(PPMID)
    rng = random.Random(17)
    samples = [
        bytes([0x01, rng.randrange(256), rng.randrange(16)]) + rng.randbytes(rng.randrange(30)) for _ in range(300)
    ]
    good = [
        frames.encode(
            "query_next_image",
            tsn=1,
            field_control=1,
            manufacturer_code=MFR,
            image_type=TYPE,
            current_file_version=1,
            hardware_version=0x1111,
        ),
        frames.encode(
            "image_block",
            tsn=2,
            field_control=0,
            manufacturer_code=MFR,
            image_type=TYPE,
            file_version=2,
            file_offset=0,
            maximum_data_size=63,
        ),
        frames.encode(
            "upgrade_end", tsn=3, status=Status.ABORT, manufacturer_code=MFR, image_type=TYPE, file_version=2
        ),
    ]
    samples += [frame[:cut] for frame in good for cut in range(len(frame))]
    for sample in samples:
        client.send_raw(sample) if len(sample) >= 2 else None
    await asyncio.sleep(30)
    answers = []
    while not client.inbox.empty():
        answers.append(client.inbox.get_nowait()[1])
    errors = [a for a in answers if a[2] == 0x0B]
    assert errors and {a[4] for a in errors} <= {0x00, 0x80, 0x81, 0x87, 0x98}, {a.hex() for a in errors}
    assert han.air.stats["receiver_errors"] == 0
    client.query()
    assert decode((await client.expect())[1]).command.status == Status.SUCCESS
