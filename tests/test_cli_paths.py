"""Output paths are checked before any work: a folder that is missing (where the command does not create it), a
directory where a file is wanted, a plain file in the way, a place nothing can be written (/proc), and an output
that is one of the command's inputs all fail with one line and exit 2, and leave every file as it was."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conftest import assert_one_line_error, image_file
from emulator.cli import main
from emulator.files import OutputPathError, check_output_dir, check_output_file
from emulator.profiles import bundled, load_device

SAME = "is the same file as the input"


def run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], prog_name="ota-emu")


@pytest.fixture
def key(tmp_path: Path) -> Path:
    assert run("keys", "generate", "-o", tmp_path / "keys").exit_code == 0
    return tmp_path / "keys" / "signer.key.pem"


@pytest.fixture
def ppmid_image(tmp_path: Path) -> Path:
    return image_file(tmp_path / "ppmid.ota", load_device(bundled("ppmid")), size=600, signed=False)


@pytest.fixture
def plain_file(tmp_path: Path) -> Path:
    path = tmp_path / "plain"
    path.write_text("not a folder")
    return path


def build_args(payload: Path, out: object) -> list[object]:
    return ["image", "build", "--format", "gb", "--manufacturer", "1", "--image-type", "2", "--file-version", "3",
            "--payload", payload, "-o", out]  # fmt: skip


# -- an output that is an input --------------------------------------------------------------------------------


def test_signing_over_the_private_key_is_refused_and_the_key_kept(key: Path, ppmid_image: Path) -> None:
    before = key.read_bytes()
    assert_one_line_error(run("image", "sign", "--key", key, ppmid_image, "-o", key), str(key), SAME)
    assert key.read_bytes() == before


def test_signing_over_the_key_through_another_spelling_or_a_link(key: Path, ppmid_image: Path) -> None:
    before = key.read_bytes()
    link = key.parent / "link.pem"
    os.link(key, link)
    spelled = key.parent / ".." / key.parent.name / key.name
    for out in (link, spelled):
        assert_one_line_error(run("image", "sign", "--key", key, ppmid_image, "-o", out), SAME)
    assert key.read_bytes() == before


def test_signing_in_place_is_refused(key: Path, ppmid_image: Path) -> None:
    before = ppmid_image.read_bytes()
    assert_one_line_error(run("image", "sign", "--key", key, ppmid_image, "-o", ppmid_image), SAME)
    assert ppmid_image.read_bytes() == before


def test_building_over_the_payload_is_refused(tmp_path: Path) -> None:
    payload = tmp_path / "firmware.bin"
    payload.write_bytes(b"\x01" * 100)
    assert_one_line_error(run(*build_args(payload, payload)), str(payload), SAME)
    assert payload.read_bytes() == b"\x01" * 100


@pytest.mark.parametrize("option", ["--alert-log", "--pcap"])
def test_run_logs_over_the_image_are_refused(ppmid_image: Path, option: str) -> None:
    before = ppmid_image.read_bytes()
    result = run("run", "--device", "ppmid", "--image", ppmid_image, option, ppmid_image)
    assert_one_line_error(result, str(ppmid_image), SAME)
    assert ppmid_image.read_bytes() == before


def test_run_pcap_and_alert_log_must_differ(tmp_path: Path, ppmid_image: Path) -> None:
    both = tmp_path / "out.log"
    result = run("run", "--device", "ppmid", "--image", ppmid_image, "--pcap", both, "--alert-log", both)
    assert_one_line_error(result, str(both), SAME)
    assert not both.exists()


def test_chf_pcap_over_the_image_is_refused(ppmid_image: Path) -> None:
    result = run("chf", "--port", "tcp://127.0.0.1:1", "--image", ppmid_image, "--target", "00:DB:12:34:56:78:90:A4",
                 "--pcap", ppmid_image)  # fmt: skip
    assert_one_line_error(result, str(ppmid_image), SAME)


# -- folders that are missing, are files, or take no files ---------------------------------------------------


@pytest.mark.parametrize(
    ("where", "fragment"),
    [
        ("missing/out.ota", "folder {tmp}/missing does not exist"),
        ("plain/out.ota", "{tmp}/plain is not a folder"),
        ("plain/deeper/out.ota", "folder {tmp}/plain/deeper does not exist"),
        ("folder", "is a directory"),
        ("/proc/out.ota", "cannot write in /proc"),
    ],
)
def test_image_build_and_sign_output_paths(tmp_path: Path, plain_file: Path, key: Path, ppmid_image: Path,
                                           where: str, fragment: str) -> None:  # fmt: skip
    (tmp_path / "folder").mkdir()
    out = tmp_path / where
    expected = fragment.format(tmp=tmp_path)
    assert_one_line_error(run(*build_args(ppmid_image, out)), str(out), expected)
    assert_one_line_error(run("image", "sign", "--key", key, ppmid_image, "-o", out), str(out), expected)
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize(
    ("where", "fragment"),
    [
        ("plain", "is not a directory"),
        ("plain/keys", "{tmp}/plain is not a folder"),
        ("/proc/ota-emu-keys", "cannot write in /proc"),
    ],
)
def test_keys_generate_output_folders(tmp_path: Path, plain_file: Path, where: str, fragment: str) -> None:
    out = tmp_path / where
    assert_one_line_error(run("keys", "generate", "-o", out), str(out), fragment.format(tmp=tmp_path))
    assert plain_file.read_text() == "not a folder"


def test_keys_generate_creates_a_missing_folder(tmp_path: Path) -> None:
    result = run("keys", "generate", "-o", tmp_path / "a" / "b")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a" / "b" / "signer.pub.pem").is_file()


def test_run_state_dir_under_proc(ppmid_image: Path) -> None:
    result = run("run", "--device", "ppmid", "--image", ppmid_image, "--state-dir", "/proc/sd")
    assert_one_line_error(result, "/proc/sd", "cannot write in /proc")


def test_run_state_dir_under_a_plain_file(ppmid_image: Path, plain_file: Path) -> None:
    result = run("run", "--device", "ppmid", "--image", ppmid_image, "--state-dir", plain_file / "sd")
    assert_one_line_error(result, f"{plain_file} is not a folder")


def test_demo_out_under_proc() -> None:
    assert_one_line_error(run("demo", "--out", "/proc/demo"), "/proc/demo", "cannot write in /proc")


def test_run_pcap_in_a_missing_folder_and_alert_log_under_a_file(tmp_path: Path, ppmid_image: Path,
                                                                  plain_file: Path) -> None:  # fmt: skip
    pcap = tmp_path / "missing" / "run.pcap"
    result = run("run", "--device", "ppmid", "--image", ppmid_image, "--pcap", pcap)
    assert_one_line_error(result, str(pcap), "does not exist")
    log = plain_file / "alerts.jsonl"
    result = run("run", "--device", "ppmid", "--image", ppmid_image, "--alert-log", log)
    assert_one_line_error(result, str(log), f"{plain_file} is not a folder")


# -- the checks themselves -------------------------------------------------------------------------------------


def test_the_checks_accept_what_can_be_written(tmp_path: Path) -> None:
    existing = tmp_path / "old.bin"
    existing.write_bytes(b"old")
    check_output_file(existing, "a file", inputs=[tmp_path / "other.bin", None])
    check_output_file(tmp_path / "a" / "b" / "new.bin", "a file", create_parents=True)
    check_output_dir(tmp_path / "x" / "y", "a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.bin"]  # no probe file or folder left behind
    with pytest.raises(OutputPathError, match="does not exist"):
        check_output_dir(tmp_path / "x", "a folder", create=False)
    with pytest.raises(OutputPathError, match="not a regular file"):
        check_output_file("/dev/null", "a file")
