"""The bench against a second, independent OTA client (`tests/refclient.py`, written from the specification apart
from `emulator/device/`, attached through the public DUT interface): every correct variant fails nothing, and
each fault variant fails exactly the checks meant for it. A check that only the emulator's own device passes
shows up here as a failure of a correct variant."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from refclient import Fault, RefClient, RefConfig

from emulator.conformance.device.bench import DeviceTarget, run_device_checks
from emulator.conformance.device.catalogue import CHECKS
from emulator.conformance.results import Report
from emulator.conformance.verdict import Verdict

GB_HCALCS = frozenset({"C-23a", "C-23b", "C-23c", "C-23d", "C-23e"})
GB_PPMID = frozenset({"C-22a", "C-22b"})
OUT_OF_BAND = frozenset({"C-15a", "C-15b"})  # UpgradeActivationPolicy 1: no server time to keep
# The reference client has no Smart Energy security stack (no install-code join, CBKE or APS layer).
NO_SE = frozenset({"SE-01", "SE-02", "SE-03", "SE-04", "SE-05", "SE-06"})

# Correct variants → the checks that do not apply to them (all others must pass).
VARIANTS: dict[str, tuple[RefConfig, frozenset[str]]] = {
    "PPMID": (RefConfig(), NO_SE | GB_HCALCS | {"C-17", "C-PAGE"}),
    "HCALCS, activation policy 1, timeout policy 1": (
        RefConfig(kind="hcalcs", activation_policy=1, timeout_policy=1),
        NO_SE | GB_PPMID | OUT_OF_BAND | {"C-PAGE"},
    ),
    "PPMID, activation policy 1": (
        RefConfig(activation_policy=1, timeout_policy=1),
        NO_SE | GB_HCALCS | GB_PPMID | OUT_OF_BAND | {"C-PAGE"},
    ),
    "PPMID, mandatory attributes only, no rate limiting": (
        RefConfig(mandatory_attributes_only=True, rate_limiting=False),
        NO_SE | GB_HCALCS | {"C-08b", "C-17", "C-PAGE"},
    ),
    "HCALCS, activation policy 0": (RefConfig(kind="hcalcs"), NO_SE | GB_PPMID | {"C-17", "C-PAGE"}),
}

# Fault → (how the client is set up besides the fault, the checks it fails). Every other check passes, does not
# apply, or is inconclusive because the fault stopped the scenario from reaching its point.
FAULTS: dict[Fault, tuple[dict[str, object], frozenset[str]]] = {
    Fault.IGNORE_UNICAST_NOTIFY: ({}, frozenset({"C-01"})),
    Fault.QUERY_ON_ANY_NOTIFY: ({}, frozenset({"C-02a", "C-02b", "C-03"})),
    Fault.NO_HARDWARE_VERSION: ({}, frozenset({"C-04"})),
    Fault.ACCEPT_SAME_VERSION: ({}, frozenset({"C-05"})),
    Fault.ASSUME_FULL_BLOCKS: ({}, frozenset({"C-06"})),
    Fault.IGNORE_OFFSET: ({}, frozenset({"C-07"})),
    Fault.IGNORE_WAIT_FOR_DATA: ({}, frozenset({"C-08a"})),
    Fault.IGNORE_MIN_BLOCK_PERIOD: ({}, frozenset({"C-08b"})),
    Fault.CONTINUE_AFTER_ABORT: ({}, frozenset({"C-09"})),
    Fault.IGNORE_NO_IMAGE: ({}, frozenset({"C-10"})),
    Fault.NO_RESEND: ({}, frozenset({"C-11"})),
    Fault.SKIP_VERIFICATION: ({}, frozenset({"C-12a", "C-12b"})),
    Fault.NO_UPGRADE_END_ON_INVALID: ({}, frozenset({"C-12a", "C-12b"})),
    Fault.UPGRADE_END_RUNNING_VERSION: ({}, frozenset({"C-13"})),
    Fault.ACTIVATE_WHILE_WAITING: ({}, frozenset({"C-14"})),
    Fault.IGNORE_UPGRADE_TIME: ({}, frozenset({"C-15a", "C-15b"})),
    Fault.ACCEPT_FOREIGN_UPGRADE_END: ({}, frozenset({"C-16"})),
    Fault.IGNORE_ACTIVATION_POLICY: ({"activation_policy": 1}, frozenset({"C-17"})),
    Fault.IGNORE_TIMEOUT_POLICY: ({"timeout_policy": 1}, frozenset({"C-18"})),
    Fault.RESTART_FROM_ZERO: ({}, frozenset({"C-20"})),
    Fault.KEEP_IMAGE_TYPE: ({}, frozenset({"C-21"})),
    Fault.ACTIVATION_FAILS: ({}, frozenset({"C-22a"})),
    Fault.NO_ACTIVATION_ALERT: ({}, frozenset({"C-22b"})),
    Fault.SKIP_HASH_CHECK: ({"kind": "hcalcs", "activation_policy": 1}, frozenset({"C-23c"})),
    Fault.ACTIVATE_WITHOUT_IMAGE: ({"kind": "hcalcs", "activation_policy": 1}, frozenset({"C-23d"})),
    Fault.ACTIVATE_FUTURE_DATED_NOW: ({"kind": "hcalcs", "activation_policy": 1}, frozenset({"C-23e"})),
    Fault.ZERO_DATA_SIZE: ({}, frozenset({"C-06"})),
    Fault.WRONG_TSN: ({}, frozenset({"Z-01"})),
    Fault.WRONG_DIRECTION: ({}, frozenset({"Z-02"})),
    Fault.DEFAULT_RESPONSE_WHEN_DISABLED: ({}, frozenset({"Z-03"})),
    Fault.SILENT_ON_UNSUPPORTED: ({}, frozenset({"Z-04", "Z-05"})),
    Fault.MANUFACTURER_SPECIFIC_FLAG: ({}, frozenset({"Z-05"})),
}

_TABLE: dict[str, tuple[str, float]] = {}


def _run(config: RefConfig, label: str) -> Report:
    began = time.monotonic()
    report = run_device_checks(DeviceTarget(dut=RefClient(config)))
    failed = sorted(r.check.id for r in report.results if r.verdict == Verdict.FAIL)
    _TABLE[label] = (", ".join(failed) or "-", time.monotonic() - began)
    return report


def _by_verdict(report: Report) -> dict[Verdict, set[str]]:
    found: dict[Verdict, set[str]] = {v: set() for v in Verdict}
    for result in report.results:
        found[result.verdict].add(result.check.id)
    return found


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_correct_variant_passes_every_applicable_check(name):
    config, not_applicable = VARIANTS[name]
    report = _run(config, f"correct: {name}")
    found = _by_verdict(report)
    reasons = {r.check.id: r.reason for r in report.results if r.verdict != Verdict.PASS}
    assert found[Verdict.NOT_APPLICABLE] == not_applicable, reasons
    assert found[Verdict.PASS] == set(CHECKS) - not_applicable, reasons
    assert report.passed


@pytest.mark.parametrize("fault", sorted(FAULTS, key=lambda f: f.value), ids=lambda f: f.value)
def test_fault_variant_fails_exactly_its_checks(fault):
    setup, meant = FAULTS[fault]
    config = replace(RefConfig(), faults=frozenset({fault}), **setup)  # type: ignore[arg-type]
    report = _run(config, f"fault: {fault.value}")
    found = _by_verdict(report)
    reasons = {r.check.id: r.reason for r in report.results if r.verdict == Verdict.FAIL}
    assert found[Verdict.FAIL] == meant, reasons


def test_a_download_ended_early_is_never_blamed_on_the_image():
    """A client may end a download with Upgrade End ABORT (a bad link): the image checks cannot decide, and
    say why, instead of failing it for an image it never received."""
    report = run_device_checks(DeviceTarget(dut=RefClient(RefConfig(abort_at=0.3))), ["C-12a", "C-12b", "C-13"])
    for result in report.results:
        assert result.verdict == Verdict.INCONCLUSIVE, result.reason
        assert "Upgrade End ABORT" in result.reason and "byte changed" not in result.reason.split(";")[0]


def test_querying_again_at_once_after_the_server_stops_a_download_is_not_continuing_it():
    """ZCL r7 §11.13.8.4 / §11.13.6.5.2: after ABORT or three NO_IMAGE_AVAILABLE the client returns to querying;
    one that queries at once and is offered the image again starts a new download, which C-09/C-10 accept."""
    report = run_device_checks(DeviceTarget(dut=RefClient(RefConfig(query_at_once=True))), ["C-09", "C-10"])
    for result in report.results:
        assert result.verdict == Verdict.PASS, result.reason
    assert "queried again" in report.results[0].reason


def test_mandatory_attributes_only_judges_activation_from_the_radio():
    """CurrentFileVersion is optional: C-21 and C-22b read the running version from the query after the reboot."""
    config = RefConfig(mandatory_attributes_only=True)
    report = run_device_checks(DeviceTarget(dut=RefClient(config)), ["C-21", "C-22b"])
    results = {r.check.id: r for r in report.results}
    assert results["C-21"].verdict == Verdict.PASS and "Query Next Image Request" in results["C-21"].reason
    assert results["C-22b"].verdict == Verdict.PASS
    assert any(f.name == "query_next_image" for f in results["C-21"].evidence)


def test_harness_without_power_control_or_gbcs_is_inconclusive_with_its_reason():
    config = RefConfig(kind="hcalcs", activation_policy=1, power_cycle=False, gbcs=False)
    report = run_device_checks(DeviceTarget(dut=RefClient(config)), ["C-20", "C-21", "C-23b"])
    for result in report.results:
        assert result.verdict == Verdict.INCONCLUSIVE
    reasons = {r.check.id: r.reason for r in report.results}
    assert "no power control" in reasons["C-20"]
    assert "out-of-band activation" in reasons["C-21"] and "GBCS" in reasons["C-21"]


def test_matrix_table(capsys):
    """The verdict table of the runs above (which checks each variant failed, and what it cost)."""
    if not _TABLE:
        _run(VARIANTS["PPMID"][0], "correct: PPMID")
    width = max(len(label) for label in _TABLE)
    lines = [f"{'variant'.ljust(width)}  failed checks  (wall s)"]
    lines += [f"{label.ljust(width)}  {failed}  ({took:.2f})" for label, (failed, took) in sorted(_TABLE.items())]
    lines.append(f"total wall time {sum(t for _, t in _TABLE.values()):.1f} s for {len(_TABLE)} full runs")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert all(failed == "-" for label, (failed, _) in _TABLE.items() if label.startswith("correct"))
