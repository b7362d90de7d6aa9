"""A vendor's DUT written outside the package (`tests/vendor_dut.py`) runs through the public DUT interface:
from the command line (`--dut-plugin`) and as test items of a pytest run (the `pytest11` plugin), with the
evidence in the failure message and in the JUnit XML."""

from __future__ import annotations

import tomllib
import xml.etree.ElementTree as ET
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import vendor_dut  # noqa: F401  (see below)
from click.testing import CliRunner

from conftest import assert_one_line_error
from emulator.cli import main
from emulator.conformance import pytest_items, pytest_plugin  # noqa: F401  (see below)
from emulator.conformance.interface import PluginError, load_plugin

# pytester's in-process runs drop every module first imported during a run, to import it again in the next: the
# bench (`pytest_items`: zigpy, bellows, the emulated HAN) and the vendor's DUT module are imported here once, for
# every run below.
pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent


def _plugin_is_installed() -> bool:
    """Once the package is installed, pytest loads the plugin from its `pytest11` entry point by itself; naming
    it again with `-p` would register it twice. From a plain checkout it is named explicitly."""
    return any(entry.value == pytest_plugin.__name__ for entry in entry_points(group="pytest11"))


PLUGIN = [
    *([] if _plugin_is_installed() else ["-p", pytest_plugin.__name__]),
    "-p",
    "no:cacheprovider",
    "-p",
    "no:benchmark",
    "-p",
    "no:hypothesispytest",  # its summary imports hypothesis, afresh in every run (see above)
    "-o",
    "asyncio_default_fixture_loop_scope=function",
]


def conform(*args: str):
    return CliRunner().invoke(main, ["conform", "device", *args])


def test_dut_plugin_on_the_command_line():
    result = conform("--dut-plugin", "vendor_dut:make_dut", "--checks", "C-01,C-17,C-20,C-23b,Z-01", "--json")
    assert result.exit_code == 0, result.output  # C-20 (SHOULD) is inconclusive: no power relay
    assert "vendor HCALCS on its test harness" in result.stdout
    assert '"C-17"' in result.stdout and "has no power control in this harness" in result.stdout


def test_dut_plugin_fault_fails_its_check_on_the_command_line():
    result = conform("--dut-plugin", "vendor_dut:make_faulty", "--checks", "Z-01")
    assert result.exit_code == 1 and "fail" in result.stdout and "TSN" in result.stdout


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("no_such_module:make", "cannot import module 'no_such_module'"),
        ("vendor_dut:missing", "has no 'missing'"),
        ("vendor_dut", "expected module:factory"),
        ("vendor_dut:not_a_dut", "returned str"),
    ],
)
def test_bad_dut_plugin_is_a_one_line_error(value, fragment):
    assert_one_line_error(conform("--dut-plugin", value), "DUT plugin", fragment)


def test_load_plugin_from_python():
    dut = load_plugin("vendor_dut:make_dut")
    assert dut.kind == "hcalcs" and dut.port is None and not dut.abilities & {"power cycle"}
    with pytest.raises(PluginError):
        load_plugin("vendor_dut:not_a_dut")


def test_plugin_is_registered_as_a_pytest11_entry_point():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    module = project["entry-points"]["pytest11"]["ota-emu"]
    assert module == pytest_plugin.__name__
    assert callable(pytest_plugin.pytest_addoption) and callable(pytest_plugin.pytest_collection_modifyitems)


def test_pytest_run_collects_the_checks_for_a_vendor_dut(pytester: pytest.Pytester):
    junit = pytester.path / "ota.xml"
    checks = "C-01,C-15a,C-17,Z-01"
    result = pytester.runpytest(
        *PLUGIN, "--ota-emu-dut", "vendor_dut:make_dut", "--ota-emu-checks", checks, f"--junitxml={junit}", "-rs"
    )
    result.assert_outcomes(passed=3, skipped=1)
    result.stdout.fnmatch_lines(["*not applicable: UpgradeActivationPolicy is 1*"])
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert set(cases) == {"C-01", "C-15a", "C-17", "Z-01"}
    properties = {p.get("name"): p.get("value") for p in cases["Z-01"].iter("property")}
    assert properties["level"] == "MUST" and properties["reference"].startswith("ZCL r7")
    assert properties["verdict"] == "pass"


def test_pytest_failure_carries_the_reason_and_the_frames(pytester: pytest.Pytester):
    junit = pytester.path / "ota.xml"
    result = pytester.runpytest(
        *PLUGIN, "--ota-emu-dut", "vendor_dut:make_faulty", "--ota-emu-checks", "Z-01,C-01", f"--junitxml={junit}"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*Z-01 ZCL answers carry the TSN*fail*",
            "*reason: answered a frame with TSN 0xA1*",
            "*evidence*",
            "*from DUT*Read_Attributes_rsp*",
        ]
    )
    [failure] = [c.find("failure") for c in ET.parse(junit).getroot().iter("testcase") if c.get("name") == "Z-01"]
    assert failure is not None and "TSN 0xA2" in (failure.text or "") + (failure.get("message") or "")


def test_pytest_run_on_a_bundled_profile(pytester: pytest.Pytester):
    profile = ROOT / "profiles" / "faults" / "zcl-wrong-direction.toml"
    # One argument: pytest takes a bare existing path among its arguments as a place to look for its
    # configuration, and would find this project's (whose addopts start pytest-xdist workers).
    result = pytester.runpytest(*PLUGIN, f"--ota-emu-dut={profile}", "--ota-emu-checks", "Z-02,Z-03")
    result.assert_outcomes(passed=1, failed=1)


def test_pytest_bad_dut_is_a_usage_error(pytester: pytest.Pytester):
    result = pytester.runpytest(*PLUGIN, "--ota-emu-dut", "vendor_dut:not_a_dut")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*returned str*"])


def test_without_the_option_the_plugin_adds_nothing(pytester: pytest.Pytester):
    pytester.makepyfile("def test_one():\n    assert True\n")
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=1)
