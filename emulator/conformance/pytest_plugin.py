"""pytest plugin: the device checks as test items of a vendor's own pytest run.

Registered through the `pytest11` entry point, so installing ota-emu is enough; it stays inert unless asked:

    pytest --ota-emu-dut profiles/ppmid.toml                 # an emulated device from a profile
    pytest --ota-emu-dut my_harness:make_dut --junitxml=ota.xml
    pytest --ota-emu-dut my_harness:make_dut --ota-emu-checks C-01,C-13,Z-01

`my_harness:make_dut` is a factory returning an `emulator.conformance.interface.DeviceUnderTest` (the same
value `ota-emu conform device --dut-plugin` takes). Each check becomes one item, `ota-emu::C-01` …, run in
catalogue order from one bench run (virtual time for an in-process DUT). A check that passes passes; one that
does not apply is skipped with its reason; a failed MUST check fails with the reason and the frames that
decided it; a MUST check that cannot be decided fails as inconclusive (as the bench's exit code does); a
SHOULD check that is not met is an expected failure (xfail). The JUnit XML pytest writes carries each
check's level and reference as properties.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ota-emu", "ota-emu device conformance bench")
    group.addoption(
        "--ota-emu-dut",
        metavar="PROFILE|MODULE:FACTORY",
        help="run the bench's device checks against this DUT: a device profile (.toml) or a factory returning an "
        "emulator.conformance.interface.DeviceUnderTest",
    )
    group.addoption("--ota-emu-checks", metavar="ID,...", help="only these checks (default: all)")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    value = config.getoption("--ota-emu-dut")
    if value is None:
        return
    # Imported here: every pytest run on a machine with ota-emu installed loads this module, and the bench
    # (zigpy, the emulated HAN) takes seconds to import.
    from emulator.conformance.pytest_items import add_check_items

    add_check_items(session, config, items, value)
