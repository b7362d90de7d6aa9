"""`ota-emu demo` and `ota-emu run` as a user runs them."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import image_file, sign_for_tests
from emulator.cli import main
from emulator.ota.image import build_gb
from emulator.profiles import bundled, load_device


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ota-emu: error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def ppmid_image(tmp_path: Path) -> Path:
    return image_file(tmp_path / "ppmid.ota", load_device(bundled("ppmid")), size=3000)


def test_demo_upgrades_a_ppmid_and_activates_an_hcalcs(tmp_path):
    result = invoke("demo", "--json", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    kinds = {d["kind"]: d for d in report["devices"]}
    assert kinds["ppmid"]["result"] == "upgraded" and kinds["ppmid"]["version"] == 2
    assert kinds["hcalcs"]["result"] == "upgraded" and kinds["hcalcs"]["version"] == 2
    assert report["settled"] is True and report["protocol_time_s"] > 0
    assert {p.name for p in tmp_path.glob("*.ota")} == {"ppmid-0x00000002.ota", "hcalcs-0x00000002.ota"}
    assert (tmp_path / "demo-signer.key.pem").stat().st_mode & 0o777 == 0o600


def test_run_with_loss_and_count_writes_a_capture(tmp_path, ppmid_image):
    pcap = tmp_path / "run.pcap"
    result = invoke(
        "run",
        "--device",
        str(bundled("ppmid")),
        "--count",
        "3",
        "--image",
        str(ppmid_image),
        "--loss",
        "0.1",
        "--seed",
        "4",
        "--pcap",
        str(pcap),
        "--json",
    )
    assert result.exit_code == 0, result.output
    devices = json.loads(result.stdout)["devices"]
    assert [d["result"] for d in devices] == ["upgraded"] * 3
    assert all(d["offset"] == d["size"] == ppmid_image.stat().st_size for d in devices)
    data = pcap.read_bytes()
    magic, _, _, _, _, _, linktype = struct.unpack_from("<IHHiIII", data)
    assert (magic, linktype) == (0xA1B2C3D4, 195)
    assert len(data) > 100 * 40  # well over a hundred frames


def test_run_table_shows_protocol_and_wall_time(ppmid_image):
    result = invoke("run", "--device", str(bundled("ppmid")), "--image", str(ppmid_image))
    assert result.exit_code == 0, result.output
    assert "upgraded" in result.stdout and "protocol time" in result.stdout and "wall time" in result.stdout


def test_run_exits_1_when_a_device_fails(tmp_path):
    profile = load_device(bundled("ppmid"))
    wrong_hardware = build_gb(
        profile.manufacturer_code, profile.image_type, 2, payload=b"x" * 500, hw_min=0x2000, hw_max=0x2100
    )
    wrong_hardware = sign_for_tests(wrong_hardware)
    path = tmp_path / "other-hw.ota"
    path.write_bytes(wrong_hardware.serialize())
    result = invoke("run", "--device", str(bundled("ppmid")), "--image", str(path), "--json")
    assert result.exit_code == 1
    [device] = json.loads(result.stdout)["devices"]
    assert device["result"] == "failed" and "hardware version" in device["reason"]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["run"], ["no image to serve"]),
        (["run", "--loss", "1.5"], ["--loss", "1.5"]),
        (["run", "--device", "/nonexistent.toml"], ["/nonexistent.toml", "no such profile file"]),
        (["run", "--image", "/nonexistent.ota"], ["/nonexistent.ota"]),
        (["run", "--count", "0"], ["--count"]),
    ],
)
def test_run_bad_input_is_one_line(args, fragments):
    one_line_error(invoke(*args), *fragments)


def test_run_rejects_a_truncated_image(tmp_path, ppmid_image):
    broken = tmp_path / "broken.ota"
    broken.write_bytes(ppmid_image.read_bytes()[:40])
    one_line_error(invoke("run", "--image", str(broken)), str(broken))
