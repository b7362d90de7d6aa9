"""Shared fixtures: paths to the test data under tests/data/; the one-line-error check of bad CLI input; signing
with the test-only key the bundled profiles trust (profiles/keys/README.md); and the upgrade images the runs serve
(`held_image`, `image_file`)."""

from __future__ import annotations

import gc
import os
import random
from collections.abc import Iterable
from pathlib import Path

import pytest
import zigpy.types as t
from click.testing import Result

from emulator import files, keys
from emulator.chf.store import HeldImage
from emulator.ota.image import UpgradeImage, build_gb
from emulator.ota.signing import sign_image
from emulator.profiles import DeviceProfile

DATA = Path(__file__).parent / "data"
GB_VECTORS = DATA / "gb-vectors"
TEST_KEYS = Path(__file__).resolve().parent.parent / "profiles" / "keys"
TEST_IMAGE_KEY = TEST_KEYS / "test-image-signer.key.pem"
TEST_SUPPLIER_KEY = TEST_KEYS / "test-supplier.key.pem"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "virtual_time: runs on the virtual clock (emulator.clock)")
    config.addinivalue_line("markers", "soak: many devices on a lossy air to the end (virtual time; runs in CI)")
    config.addinivalue_line("markers", "long: several seconds of wall time; scheduled first (see below)")
    # Every file a test writes lives in a temporary folder: writes stay atomic (what readers and restarts rely
    # on), without waiting on the disk to make each one survive a power cut (devices save state at every
    # checkpoint: some 1,500 flushes a run of the suite).
    files.durable_writes(False)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject addopts): one worker more than the cores this process may run on. A fifth of the
    suite's wall time is spent in tests that wait on real processes, sockets and ptys; the extra worker keeps the
    cores busy meanwhile."""
    return len(os.sched_getaffinity(0)) + 1 if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1) + 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The `long` tests first, the rest in their order: xdist hands tests out in collection order, and a
    long test handed out last keeps the whole suite waiting on one worker after the others are done."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """What importing zigpy, bellows and the test modules built lives as long as the session: moving it out of
    the garbage collector's view spares every later full collection from walking it again."""
    gc.collect()
    gc.freeze()


def sign_for_tests(image: UpgradeImage) -> UpgradeImage:
    """`image` signed with the test-only manufacturer key that the bundled PPMID and HCALCS profiles trust."""
    return sign_image(image, keys.load_private_key(TEST_IMAGE_KEY))


def held_image(
    profile: DeviceProfile,
    *,
    version: int = 2,
    size: int = 2048,
    payload: bytes | None = None,
    device_ids: Iterable[t.EUI64] | None = None,
    signed: bool = True,
) -> HeldImage:
    """An upgrade for `profile` as the CHF holds it: a GB Upgrade Image of `version` for the profile's manufacturer,
    image type and the bundled hardware range 0x1111..0x1211, whose firmware is `payload` (default: `size` bytes
    drawn from a generator seeded with the image type, the same on every call), signed with the test-only key the
    bundled profiles trust unless `signed` is False, held for `device_ids` (default: the profile's device).
    ECDSA signatures differ on every call: compare against the image a run served, not a fresh one."""
    firmware = random.Random(profile.image_type).randbytes(size) if payload is None else payload
    image = build_gb(
        profile.manufacturer_code, profile.image_type, version, payload=firmware, hw_min=0x1111, hw_max=0x1211
    )
    if signed:
        image = sign_for_tests(image)
    targets = (profile.ieee,) if device_ids is None else tuple(device_ids)
    return HeldImage(image, image.serialize(), frozenset(targets))


def image_file(path: Path, profile: DeviceProfile, **options: object) -> Path:
    """`held_image(profile, **options)` written to `path`, for a command's --image."""
    path.write_bytes(held_image(profile, **options).data)
    return path


def assert_one_line_error(result: Result, *fragments: str) -> None:
    """Bad input fails as the CLI promises: exit code 2 and one stderr line "ota-emu: error: ..." containing each
    fragment, never a traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ota-emu: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def ppmid_image_path() -> Path:
    """DCC DUIS SR 11.4 sample: unsigned GB Upgrade Image, 295 bytes (see tests/data/gb-vectors/README.md)."""
    return GB_VECTORS / "ppmid-upgrade-image.bin"


@pytest.fixture
def esme_image_path() -> Path:
    """DCC DUIS SR 11.1 sample: GB Upgrade Image with signature trailer, 361 bytes."""
    return GB_VECTORS / "esme-upgrade-image-signed.bin"


@pytest.fixture
def dcc_signer_cert_path() -> Path:
    """X.509 certificate of the DCC test signer 90-B3-D5-1F-30-01-00-00, which signed the ESME sample."""
    return GB_VECTORS / "signer-90b3d51f30010000-cert.pem"
