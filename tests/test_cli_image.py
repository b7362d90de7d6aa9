"""`ota-emu image ...` and `ota-emu keys ...` as a user runs them, good input and bad."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from zigpy.ota.image import OTAImage, parse_ota_image

from conftest import assert_one_line_error
from emulator import keys
from emulator.cli import main
from emulator.ota.image import load, parse

ESME_IMAGE_HASH = "7542f475e3f12eae887d81e32c46d313741d67076b13caec2f82e00ba5e1bb36"
PPMID_BUILD = [
    "--manufacturer",
    "0x121D",
    "--image-type",
    "0x0084",
    "--file-version",
    "0xACDCACDC",
    "--header-string",
    "I am a GFI PPMID firmware image ",
    "--hw-min",
    "0x1111",
    "--hw-max",
    "4625",
]


def run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], prog_name="ota-emu")


@pytest.fixture
def key_pair(tmp_path: Path) -> tuple[Path, Path]:
    result = run("keys", "generate", "-o", tmp_path / "keys")
    assert result.exit_code == 0, result.output
    return tmp_path / "keys" / "signer.key.pem", tmp_path / "keys" / "signer.pub.pem"


# --- inspect -----------------------------------------------------------------------------------------------------


def test_inspect_json_reports_the_ppmid_sample_facts(ppmid_image_path: Path) -> None:
    result = run("image", "inspect", "--json", ppmid_image_path)
    assert result.exit_code == 0, result.output
    [facts] = json.loads(result.stdout)
    header = facts["header"]
    assert facts["valid"] is True
    assert facts["kind"] == "gb"
    assert facts["file_size"] == 295
    assert header["header_length"] == 60
    assert header["field_control"] == 0x0004
    assert (header["minimum_hardware_version"], header["maximum_hardware_version"]) == (0x1111, 0x1211)
    assert header["manufacturer_id"] == 0x121D
    assert header["image_type"] == 0x0084
    assert header["file_version"] == 0xACDCACDC
    assert header["stack_version"] == 2
    assert header["header_string"] == "I am a GFI PPMID firmware image "
    assert header["image_size"] == 295
    assert facts["signature"] == {"present": False}
    assert facts["manufacturer_image"] == {"offset": 60, "length": 235, "sha256": ESME_IMAGE_HASH}
    assert facts["subelements"] is None
    assert facts["problems"] == []


def test_inspect_json_reports_the_esme_trailer(esme_image_path: Path) -> None:
    [facts] = json.loads(run("image", "inspect", "--json", esme_image_path).stdout)
    signature = facts["signature"]
    assert (signature["present"], signature["trailer_offset"], signature["offset"], signature["length"]) == (
        True,
        295,
        297,
        64,
    )
    assert signature["hex"] == esme_image_path.read_bytes()[-64:].hex()
    assert facts["header"]["image_type"] == 0
    assert facts["manufacturer_image"]["sha256"] == ESME_IMAGE_HASH


def test_inspect_table_shows_each_file(ppmid_image_path: Path, esme_image_path: Path) -> None:
    result = run("image", "inspect", ppmid_image_path, esme_image_path)
    assert result.exit_code == 0, result.output
    for text in (
        "ppmid-upgrade-image.bin",
        "esme-upgrade-image-signed.bin",
        "GB Upgrade Image",
        "0x121D",
        "0xACDCACDC",
        "0x1111..0x1211",
        "I am a GFI PPMID firmware image",
        "235 bytes at offset 60",
        "64 bytes at offset 297",
    ):
        assert text in result.stdout


def test_inspect_lists_zigbee_subelements(tmp_path: Path) -> None:
    payload = tmp_path / "fw.bin"
    payload.write_bytes(b"\x01" * 20)
    out = tmp_path / "z.ota"
    assert (
        run(
            "image",
            "build",
            "--format",
            "zigbee",
            "--manufacturer",
            1,
            "--image-type",
            2,
            "--file-version",
            3,
            "--payload",
            payload,
            "-o",
            out,
        ).exit_code
        == 0
    )
    [facts] = json.loads(run("image", "inspect", "--json", out).stdout)
    assert facts["kind"] == "zigbee"
    assert facts["subelements"] == [{"offset": 56, "tag": 0, "name": "UPGRADE_IMAGE", "length": 20}]
    assert facts["manufacturer_image"]["offset"] == 62


def test_inspect_shows_problems_then_fails(tmp_path: Path, ppmid_image_path: Path) -> None:
    cut = tmp_path / "cut.ota"
    cut.write_bytes(ppmid_image_path.read_bytes()[:100])
    result = run("image", "inspect", "--json", ppmid_image_path, cut)
    assert_one_line_error(result, f"{cut}: 1 problem: @52 total image size is 295, expected the file length 100")
    good, bad = json.loads(result.stdout)
    assert good["valid"] is True
    assert bad["valid"] is False
    assert bad["header"]["manufacturer_id"] == 0x121D
    assert bad["problems"] == [
        {"offset": 52, "field": "image_size", "message": "total image size is 295, expected the file length 100"}
    ]


# --- build -------------------------------------------------------------------------------------------------------


def test_build_gb_reproduces_the_ppmid_sample(tmp_path: Path, ppmid_image_path: Path) -> None:
    payload = tmp_path / "image.bin"
    payload.write_bytes(ppmid_image_path.read_bytes()[60:])
    out = tmp_path / "ppmid.ota"
    result = run("image", "build", "--format", "gb", *PPMID_BUILD, "--payload", payload, "-o", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == ppmid_image_path.read_bytes()


@pytest.mark.parametrize("fc_bits", list(itertools.product((False, True), repeat=3)))
def test_build_zigbee_files_parse_with_zigpy(tmp_path: Path, fc_bits: tuple[bool, bool, bool]) -> None:
    with_credential, with_destination, with_hw = fc_bits
    payload = tmp_path / "fw.bin"
    payload.write_bytes(bytes(range(256)) * 3)
    options = [
        "--manufacturer",
        "0x1002",
        "--image-type",
        "0x5678",
        "--file-version",
        "0x00000005",
        "--stack-version",
        "2",
        "--header-string",
        "zigpy interop",
    ]
    if with_credential:
        options += ["--security-credential-version", "0x01"]
    if with_destination:
        options += ["--destination", "00:0D:6F:00:00:19:8B:36"]
    if with_hw:
        options += ["--hw-min", "0x0100", "--hw-max", "0x0200"]
    out = tmp_path / "z.ota"
    result = run("image", "build", "--format", "zigbee", *options, "--payload", payload, "-o", out)
    assert result.exit_code == 0, result.output
    theirs, rest = parse_ota_image(out.read_bytes())
    assert isinstance(theirs, OTAImage)
    assert rest == b""
    header = theirs.header
    assert (header.manufacturer_id, header.image_type, header.file_version, header.stack_version) == (
        0x1002,
        0x5678,
        5,
        2,
    )
    assert header.header_string.rstrip(b"\x00") == b"zigpy interop"
    assert header.image_size == len(out.read_bytes())
    assert header.header_length == 56 + with_credential + 8 * with_destination + 4 * with_hw
    assert header.security_credential_version == (1 if with_credential else None)
    assert str(header.upgrade_file_destination) == ("00:0d:6f:00:00:19:8b:36" if with_destination else "None")
    assert (header.minimum_hardware_version, header.maximum_hardware_version) == (
        (0x0100, 0x0200) if with_hw else (None, None)
    )
    assert bytes(theirs.subelements[0].data) == payload.read_bytes()
    assert load(out).header == header


# --- sign, verify, hash ------------------------------------------------------------------------------------------


def test_verify_accepts_the_esme_sample(esme_image_path: Path, dcc_signer_cert_path: Path) -> None:
    result = run("image", "verify", "--signer", dcc_signer_cert_path, esme_image_path)
    assert result.exit_code == 0, result.output
    assert "valid: signature verifies with trusted signer 1 of 1" in result.stdout


@pytest.mark.parametrize("offset", [60, 177, 294, 297, 330, 360])
def test_verify_rejects_a_flipped_byte(
    tmp_path: Path, esme_image_path: Path, dcc_signer_cert_path: Path, offset: int
) -> None:
    data = bytearray(esme_image_path.read_bytes())
    data[offset] ^= 0xFF
    tampered = tmp_path / "tampered.ota"
    tampered.write_bytes(bytes(data))
    result = run("image", "verify", "--signer", dcc_signer_cert_path, tampered)
    assert result.exit_code == 1
    assert "NOT valid: signature does not verify with any of 1 trusted signer" in result.stdout


def test_verify_without_trailer_fails_with_the_reason(ppmid_image_path: Path, dcc_signer_cert_path: Path) -> None:
    result = run("image", "verify", "--signer", dcc_signer_cert_path, ppmid_image_path)
    assert result.exit_code == 1
    assert "NOT valid: no signature trailer" in result.stdout


def test_hash_prints_the_manufacturer_image_hash(esme_image_path: Path) -> None:
    result = run("image", "hash", esme_image_path)
    assert result.exit_code == 0
    assert result.stdout == ESME_IMAGE_HASH + "\n"


def test_sign_then_verify_with_a_generated_key(
    tmp_path: Path, ppmid_image_path: Path, dcc_signer_cert_path: Path, key_pair: tuple[Path, Path]
) -> None:
    private, public = key_pair
    out = tmp_path / "signed.ota"
    result = run("image", "sign", "--key", private, ppmid_image_path, "-o", out)
    assert result.exit_code == 0, result.output
    signed = out.read_bytes()
    assert len(signed) == 361
    assert signed[:52] == ppmid_image_path.read_bytes()[:52]
    assert parse(signed).signature is not None
    assert run("image", "verify", "--signer", public, out).exit_code == 0
    both = run("image", "verify", "--signer", dcc_signer_cert_path, "--signer", public, out)
    assert both.exit_code == 0
    assert "trusted signer 2 of 2" in both.stdout
    assert run("image", "verify", "--signer", dcc_signer_cert_path, out).exit_code == 1
    assert run("image", "hash", out).stdout.strip() == ESME_IMAGE_HASH


def test_signing_a_zigbee_file_is_refused(tmp_path: Path, key_pair: tuple[Path, Path]) -> None:
    payload = tmp_path / "fw.bin"
    payload.write_bytes(b"fw")
    zigbee = tmp_path / "z.ota"
    run(
        "image",
        "build",
        "--format",
        "zigbee",
        "--manufacturer",
        1,
        "--image-type",
        1,
        "--file-version",
        1,
        "--payload",
        payload,
        "-o",
        zigbee,
    )
    out = tmp_path / "signed.ota"
    result = run("image", "sign", "--key", key_pair[0], zigbee, "-o", out)
    assert_one_line_error(result, str(zigbee), "expected a GB Upgrade Image")
    assert not out.exists()


# --- keys --------------------------------------------------------------------------------------------------------


def test_keys_generate_writes_a_usable_pair(key_pair: tuple[Path, Path]) -> None:
    private, public = key_pair
    key = keys.load_private_key(private)
    assert keys.public_key_pem(key.public_key()) == public.read_bytes()
    assert keys.verify(keys.load_public_key(public), b"data", keys.sign(key, b"data"))


def test_keys_generate_refuses_to_overwrite_without_force(key_pair: tuple[Path, Path]) -> None:
    private, public = key_pair
    before = private.read_bytes(), public.read_bytes()
    result = run("keys", "generate", "-o", private.parent)
    assert_one_line_error(result, str(private), "already exists", "--force")
    assert (private.read_bytes(), public.read_bytes()) == before
    assert run("keys", "generate", "-o", private.parent, "--force").exit_code == 0
    assert private.read_bytes() != before[0]
    assert public.read_bytes() != before[1]


def test_keys_generate_into_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    assert_one_line_error(run("keys", "generate", "-o", target), str(target), "is not a directory")


# --- bad input as a new user would give it -----------------------------------------------------------------------


@pytest.fixture
def bad_images(tmp_path: Path, ppmid_image_path: Path) -> dict[str, tuple[Path, str]]:
    empty = tmp_path / "empty.ota"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.ota"
    truncated.write_bytes(ppmid_image_path.read_bytes()[:40])
    folder = tmp_path / "folder"
    folder.mkdir()
    return {
        "missing": (tmp_path / "missing.ota", "no such file (expected an OTA upgrade file)"),
        "directory": (folder, "is a directory (expected an OTA upgrade file)"),
        "empty": (empty, "file is empty (expected an OTA upgrade file)"),
        "truncated": (truncated, "@20 file ends at 40, too short for the 32-byte header string"),
    }


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "truncated"])
@pytest.mark.parametrize("command", ["inspect", "inspect --json", "hash", "sign", "verify"])
def test_bad_image_files_get_one_line(
    tmp_path: Path, bad_images: dict, key_pair: tuple[Path, Path], command: str, case: str
) -> None:
    path, expected = bad_images[case]
    out = tmp_path / "out.ota"
    extra = {
        "sign": ["--key", key_pair[0], "-o", out],
        "verify": ["--signer", key_pair[1]],
    }.get(command.split(maxsplit=1)[0], [])
    result = run("image", *command.split(), *extra, path)
    assert_one_line_error(result, f"{path}: ", expected)
    assert not out.exists()


def test_a_key_that_is_not_pem_is_refused_and_nothing_is_written(tmp_path: Path, ppmid_image_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("this is not a key\n")
    out = tmp_path / "out.ota"
    assert_one_line_error(run("image", "sign", "--key", key, ppmid_image_path, "-o", out), str(key), "PEM")
    assert not out.exists()
    assert_one_line_error(run("image", "verify", "--signer", key, ppmid_image_path), str(key), "PEM")


def test_a_key_on_the_wrong_curve_leaves_an_existing_output_untouched(tmp_path: Path, ppmid_image_path: Path) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    key = tmp_path / "p384.pem"
    key.write_bytes(
        p384.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    out = tmp_path / "out.ota"
    out.write_bytes(b"previous content")
    result = run("image", "sign", "--key", key, ppmid_image_path, "-o", out)
    assert_one_line_error(result, str(key), "secp384r1", "expected P-256")
    assert out.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ota", "p384.pem"]
    public = tmp_path / "p384.pub.pem"
    public.write_bytes(
        p384.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert_one_line_error(run("image", "verify", "--signer", public, ppmid_image_path), str(public), "P-256")


def test_a_manufacturer_code_too_wide_is_refused(tmp_path: Path) -> None:
    payload = tmp_path / "fw.bin"
    payload.write_bytes(b"fw")
    out = tmp_path / "out.ota"
    result = run(
        "image",
        "build",
        "--format",
        "gb",
        "--manufacturer",
        "0x1FFFF",
        "--image-type",
        1,
        "--file-version",
        1,
        "--payload",
        payload,
        "-o",
        out,
    )
    assert_one_line_error(result, "--manufacturer", "0x1FFFF", "expected 0..0xFFFF")
    assert not out.exists()


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        (["--hw-min", "1"], ["--hw-min and --hw-max"]),
        (["--hw-min", "3", "--hw-max", "2"], ["hw_min 0x0003 is above hw_max 0x0002"]),
        (["--header-string", "x" * 33], ["header string is 33 bytes", "at most 32"]),
        (["--destination", "12:34"], ["--destination", "expected an EUI-64 of 16 hex digits", "'12:34'"]),
        (["--file-version", "ten"], ["--file-version", "'ten' is not a number"]),
    ],
)
def test_bad_build_values_are_refused(tmp_path: Path, options: list[str], fragments: list[str]) -> None:
    payload = tmp_path / "fw.bin"
    payload.write_bytes(b"fw")
    out = tmp_path / "out.ota"
    out.write_bytes(b"keep me")
    base = ["--manufacturer", "1", "--image-type", "1", "--file-version", "1"]
    result = run("image", "build", "--format", "zigbee", *base, *options, "--payload", payload, "-o", out)
    assert_one_line_error(result, *fragments)
    assert out.read_bytes() == b"keep me"


def test_a_missing_payload_is_refused(tmp_path: Path) -> None:
    payload = tmp_path / "nope.bin"
    result = run(
        "image",
        "build",
        "--format",
        "gb",
        "--manufacturer",
        1,
        "--image-type",
        1,
        "--file-version",
        1,
        "--payload",
        payload,
        "-o",
        tmp_path / "out.ota",
    )
    assert_one_line_error(result, f"{payload}: no such file (expected a firmware payload file)")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "command",
    [[], ["inspect"], ["build"], ["sign"], ["verify"], ["hash"]],
)
def test_every_image_command_explains_itself(command: list[str]) -> None:
    result = run("image", *command, "--help")
    assert result.exit_code == 0
    assert "Usage: ota-emu image" in result.stdout
    assert "Manufacturer Image" in result.stdout or "upgrade file" in result.stdout


def test_keys_commands_explain_themselves() -> None:
    for command in ([], ["generate"]):
        result = run("keys", *command, "--help")
        assert result.exit_code == 0
        assert "P-256" in result.stdout


def test_inspect_prints_header_text_literally(tmp_path: Path) -> None:
    payload = tmp_path / "fw.bin"
    payload.write_bytes(b"fw")
    out = tmp_path / "odd.ota"
    run(
        "image",
        "build",
        "--format",
        "gb",
        "--manufacturer",
        1,
        "--image-type",
        1,
        "--file-version",
        1,
        "--header-string",
        "[bold]x[/bold]",
        "--payload",
        payload,
        "-o",
        out,
    )
    result = run("image", "inspect", out)
    assert result.exit_code == 0
    assert "'[bold]x[/bold]'" in result.stdout
