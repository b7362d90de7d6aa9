"""Suite-wide pytest hooks.

Tests marked `virtual_time` run on `emulator.clock.VirtualTimeLoop`: protocol hours (query intervals,
WAIT_FOR_DATA, scheduled activation) pass in milliseconds and the test never depends on the machine's speed.
"""

import asyncio

import pytest

from emulator.clock import VirtualTimeLoop


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "virtual_time: run the test's event loop on virtual time")


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item):
    if item.get_closest_marker("virtual_time") is not None:
        return {"virtual": VirtualTimeLoop}
    return {"real": asyncio.new_event_loop}
