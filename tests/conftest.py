"""Shared fixtures: paths to the test data under tests/data/; and the one-line-error check of bad CLI input."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import Result

DATA = Path(__file__).parent / "data"
GB_VECTORS = DATA / "gb-vectors"


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
