"""Shared fixtures: paths to the test data under tests/data/."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
GB_VECTORS = DATA / "gb-vectors"


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
