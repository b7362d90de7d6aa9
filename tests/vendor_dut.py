"""A vendor's own harness as the bench meets it: a module outside the package whose factories return a
`DeviceUnderTest` (here the independent reference client, once correct and once with a ZCL fault), loaded with
`ota-emu conform device --dut-plugin vendor_dut:make_dut` or `pytest --ota-emu-dut vendor_dut:make_dut`."""

from __future__ import annotations

from refclient import Fault, RefClient, RefConfig


class VendorHcalcs(RefClient):
    """An HCALCS behind a vendor's harness: out-of-band activation (UpgradeActivationPolicy 1), no power relay."""

    def __init__(self, config: RefConfig) -> None:
        super().__init__(config)
        self.description = "vendor HCALCS on its test harness"


def make_dut() -> VendorHcalcs:
    return VendorHcalcs(RefConfig(kind="hcalcs", activation_policy=1, timeout_policy=1, power_cycle=False))


def make_faulty() -> VendorHcalcs:
    """The same device with a firmware bug: its ZCL answers do not echo the request's TSN."""
    config = RefConfig(kind="hcalcs", activation_policy=1, timeout_policy=1, faults=frozenset({Fault.WRONG_TSN}))
    return VendorHcalcs(config)


def not_a_dut() -> str:
    return "a string, not a DeviceUnderTest"
