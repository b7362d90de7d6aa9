"""The pytest items of the plugin (`emulator.conformance.pytest_plugin`): one per device check, all decided by one
bench run. Imported only when a run names a DUT, so the plugin costs nothing in a pytest run that does not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from emulator.conformance.check import Check, Level
from emulator.conformance.device.bench import DeviceTarget, run_device_checks
from emulator.conformance.device.catalogue import CHECKS
from emulator.conformance.interface import load_plugin
from emulator.conformance.results import CheckResult, Report
from emulator.conformance.selection import parse_ids, select
from emulator.conformance.verdict import Verdict
from emulator.errors import InputError
from emulator.profiles import load_device

REPORT_KEY = pytest.StashKey[Report]()
TARGET_KEY = pytest.StashKey[DeviceTarget]()


def target_from(value: str) -> DeviceTarget:
    """The DUT an `--ota-emu-dut` value names."""
    if value.endswith(".toml") or Path(value).is_file():
        return DeviceTarget(profile=load_device(Path(value)))
    return DeviceTarget(dut=load_plugin(value))


class CheckFailed(Exception):
    """A check's verdict that fails the item; the message is the verdict, its reason and the evidence."""


def describe(result: CheckResult) -> str:
    check = result.check
    lines = [f"{check.id} {check.title} [{check.level}] — {result.verdict.value}", f"reason: {result.reason}"]
    lines.append(f"reference: {check.reference}")
    if result.evidence:
        lines.append("evidence (protocol time, direction, frame, bytes):")
        lines += [f"  {f.at:10.3f} s  {f.direction:8}  {f.name}  {f.hex}" for f in result.evidence]
    return "\n".join(lines)


class CheckItem(pytest.Item):
    def __init__(self, *, check: Check, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.user_properties += [("level", str(check.level)), ("reference", check.reference)]

    def runtest(self) -> None:
        report = self.config.stash.get(REPORT_KEY, None)
        if report is None:
            report = self.config.stash[REPORT_KEY] = _run(self.config)
        result = next((r for r in report.results if r.check.id == self.check.id), None)
        if result is None:
            raise CheckFailed(f"{self.check.id}: no result in the bench's report")
        self.user_properties.append(("verdict", result.verdict.value))
        if result.verdict == Verdict.PASS:
            return
        if result.verdict == Verdict.NOT_APPLICABLE:
            pytest.skip(f"not applicable: {result.reason}")
        if self.check.level == Level.SHOULD:
            pytest.xfail(f"SHOULD not met ({result.verdict.value}): {result.reason}")
        raise CheckFailed(describe(result))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, CheckFailed):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[str, int | None, str]:
        return "ota-emu", None, f"{self.check.id}: {self.check.title}"


class CheckCollector(pytest.Collector):
    def __init__(self, *, checks: list[Check], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.checks = checks

    def collect(self) -> list[pytest.Item]:
        return [CheckItem.from_parent(self, name=check.id, check=check) for check in self.checks]


def _run(config: pytest.Config) -> Report:
    checks = config.getoption("--ota-emu-checks")
    return run_device_checks(config.stash[TARGET_KEY], None if checks is None else parse_ids(checks))


def add_check_items(session: pytest.Session, config: pytest.Config, items: list[pytest.Item], value: str) -> None:
    """Append one item per selected check for the DUT `value` names (`--ota-emu-dut`)."""
    text = config.getoption("--ota-emu-checks")
    try:
        checks = select(None if text is None else parse_ids(text), CHECKS)
        config.stash[TARGET_KEY] = target_from(value)  # a bad profile or factory: a usage error before any run
    except InputError as exc:
        raise pytest.UsageError(f"--ota-emu-dut/--ota-emu-checks: {exc}") from None
    collector = CheckCollector.from_parent(session, name="ota-emu", checks=checks)
    items.extend(collector.collect())
