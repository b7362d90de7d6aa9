"""An Image Notify that reaches a device before it has found its OTA server is kept: the device queries as soon
as discovery names the server, not after its start jitter (ZCL r7 §11.13: only an OTA server sends Image Notify,
and a unicast one obliges the client to query)."""

from __future__ import annotations

import asyncio

import pytest
from test_device_harness import bench, hcalcs_profile, notify, vrun

from conftest import held_image
from emulator import clock
from emulator.device import events
from emulator.han.network import Han, HanOptions
from emulator.profiles import bundled, load_chf, load_device

DAY = 86400.0


def test_a_notify_during_server_discovery_is_queried_once_the_server_is_found() -> None:
    async def main() -> None:
        b = await bench(hcalcs_profile(query_start_jitter=DAY), start=False)
        answer = b.server._default_zdo_0006

        def notify_then_answer(request):  # the CHF's notify overtakes its Match_Desc_rsp
            notify(b.server, 0, 100)
            return answer(request)

        b.server.on["zdo:0006"] = notify_then_answer
        await b.device.start()
        [query] = await b.server.wait_for("query_next_image", within=DAY)
        [found] = b.log.of(events.ServerDiscovered)
        [heard] = b.log.of(events.NotifyReceived)
        assert heard.at < found.at and heard.queried and "once discovery has found the server" in heard.reason
        assert query.at - found.at < 1.0
        await b.device.stop()

    vrun(main)


def test_a_notify_before_the_device_announced_itself_is_kept() -> None:
    async def main() -> None:
        b = await bench(hcalcs_profile(query_start_jitter=DAY))
        notify(b.server, 0, 100)  # at once: the device is still in its announce pause
        [query] = await b.server.wait_for("query_next_image", within=DAY)
        [announced] = b.log.of(events.Announced)
        [heard] = b.log.of(events.NotifyReceived)
        assert heard.at < announced.at and heard.queried
        assert query.at < 5.0
        await b.device.stop()

    vrun(main)


def test_a_notify_from_another_node_after_discovery_is_still_ignored() -> None:
    async def main() -> None:
        b = await bench(hcalcs_profile(query_start_jitter=DAY))
        await b.log.wait(events.ServerDiscovered)
        b.server.nwk = 0x4444  # same air, another short address: not the server the device found
        notify(b.server, 0, 100)
        await asyncio.sleep(60)
        assert b.log.of(events.NotifyReceived) == [] and b.server.sent("query_next_image") == []
        await b.device.stop()

    vrun(main)


def hcalcs_han(seed: int, radio: str = "loopback") -> Han:
    hcalcs = load_device(bundled("hcalcs")).replace(query_start_jitter=DAY)
    held = held_image(hcalcs, payload=bytes(200), signed=False)
    return Han(load_chf(bundled("chf")), [hcalcs], [held], HanOptions(seed=seed, radio=radio))


@pytest.mark.parametrize("seed", range(4))
def test_the_chf_notify_at_join_brings_the_first_query_on_the_in_process_han(seed: int) -> None:
    async def main() -> list[events.DeviceEvent]:
        han = hcalcs_han(seed)
        await han.start()
        assert await han.settle(3600.0), han.summaries
        await han.stop()
        return [e for e in han.events if isinstance(e, events.DeviceEvent)]

    log = clock.run(main, virtual=True)
    first_query = next(e for e in log if isinstance(e, events.QuerySent))
    assert first_query.at < 5.0
    assert any(isinstance(e, events.NotifyReceived) and e.queried for e in log)


def test_the_chf_notify_at_join_brings_the_first_query_through_bellows_and_the_virtual_ncp() -> None:
    async def main() -> tuple[bool, list[events.DeviceEvent]]:
        han = hcalcs_han(0, radio="ezsp")
        await han.start()
        settled = await han.settle(60.0)
        await han.stop()
        return settled, [e for e in han.events if isinstance(e, events.DeviceEvent)]

    settled, log = clock.run(main, virtual=True)
    assert settled, [type(e).__name__ for e in log]
    assert any(isinstance(e, events.NotifyReceived) and e.queried for e in log)
