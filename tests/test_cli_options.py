"""One vocabulary for options across commands: the renamed spellings still work as hidden aliases with one
deprecation line, every command's --help has an example, every command that prints a result has --json, and
float options refuse NaN and the infinities."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from conftest import assert_one_line_error
from emulator.cli import main
from emulator.cli.params import rewrite_aliases
from emulator.ota.image import load

OTHERS = {"conform", "gbcs"}  # commands whose options are kept elsewhere


def run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], prog_name="ota-emu")


def commands() -> list[list[str]]:
    """Every command line path of ours: `[]` (the main group), `["image"]`, `["image", "build"]`, ..."""
    paths: list[list[str]] = [[]]
    ctx = click.Context(main)
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        if name in OTHERS:
            continue
        paths.append([name])
        if isinstance(command, click.Group):
            paths.extend([name, sub] for sub in command.list_commands(ctx))
    return paths


@pytest.mark.parametrize("path", commands(), ids=lambda p: " ".join(p) or "ota-emu")
def test_every_help_has_an_example(path: list[str]) -> None:
    result = run(*path, "--help")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() in ("Example:", "Examples:"))
    assert lines[start + 1].strip().startswith("ota-emu " + " ".join(path[:1]))


def test_renamed_options_are_hidden_from_help() -> None:
    assert "--output" not in run("image", "build", "--help").stdout
    chf = run("chf", "--help").stdout
    assert "--port" in chf and "--chf" in chf and "--profile" not in chf and "--device" not in chf
    ncp = run("ncp", "--help").stdout
    assert "--state-dir" in ncp and "--state " not in ncp


def test_rewrite_aliases_keeps_values_and_stops_at_double_dash(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--output=a", "-o", "b", "--output", "c", "--", "--output"]
    assert rewrite_aliases(args, {"--output": "--out"}) == ["--out=a", "-o", "b", "--out", "c", "--", "--output"]
    assert capsys.readouterr().err.count("deprecated") == 1


def test_image_build_and_sign_take_the_old_output_spelling(tmp_path: Path, esme_image_path: Path) -> None:
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"\x5a" * 300)
    built = tmp_path / "built.ota"
    result = run("image", "build", "--format", "gb", "--manufacturer", "1", "--image-type", "2", "--file-version",
                 "3", "--payload", payload, "--output", built)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "ota-emu: warning: --output is deprecated, use --out (the old spelling goes in a future release)"
    ]
    assert load(built).manufacturer_image == payload.read_bytes()
    keys_dir = tmp_path / "keys"
    assert run("keys", "generate", "--output", keys_dir).exit_code == 0
    signed = tmp_path / "signed.ota"
    result = run("image", "sign", "--key", keys_dir / "signer.key.pem", built, f"--output={signed}")
    assert result.exit_code == 0 and "--output is deprecated" in result.stderr
    assert load(signed).signature is not None


def test_json_results_of_keys_and_image_commands(tmp_path: Path, ppmid_image_path: Path) -> None:
    generated = run("keys", "generate", "-o", tmp_path, "--name", "lab", "--json")
    assert generated.exit_code == 0, generated.output
    key_files = json.loads(generated.stdout)
    assert key_files == {"private_key": str(tmp_path / "lab.key.pem"), "public_key": str(tmp_path / "lab.pub.pem")}

    signed = tmp_path / "signed.ota"
    result = run("image", "sign", "--key", key_files["private_key"], ppmid_image_path, "-o", signed, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["file"] == str(signed) and document["size"] == signed.stat().st_size
    assert document["replaced_signature"] is False
    assert bytes.fromhex(document["signature"]) == load(signed).signature

    verified = run("image", "verify", "--signer", key_files["public_key"], signed, "--json")
    assert verified.exit_code == 0
    assert json.loads(verified.stdout) | {"reason": ""} == {"file": str(signed), "valid": True, "reason": "",
                                                             "signer": key_files["public_key"]}  # fmt: skip
    unsigned = run("image", "verify", "--signer", key_files["public_key"], ppmid_image_path, "--json")
    assert unsigned.exit_code == 1 and json.loads(unsigned.stdout)["valid"] is False

    hashed = run("image", "hash", ppmid_image_path, "--json")
    plain = run("image", "hash", ppmid_image_path)
    digest = plain.stdout.strip()
    assert json.loads(hashed.stdout) == {"file": str(ppmid_image_path), "manufacturer_image_sha256": digest}

    payload = tmp_path / "payload.bin"
    payload.write_bytes(bytes(range(200)))
    built = run("image", "build", "--format", "zigbee", "--manufacturer", "1", "--image-type", "2", "--file-version",
                "3", "--payload", payload, "-o", tmp_path / "z.ota", "--json")  # fmt: skip
    assert built.exit_code == 0, built.output
    facts = json.loads(built.stdout)
    assert (facts["kind"], facts["manufacturer_image_size"], facts["size"]) == ("zigbee", 200, 56 + 6 + 200)


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--latency", "nan"],
        ["run", "--loss", "nan"],
        ["run", "--duplicate", "NaN"],
        ["run", "--until", "inf"],
        ["run", "--activate-after", "infinity"],
        ["chf", "--port", "tcp://127.0.0.1:1", "--until", "inf"],
    ],
)
def test_float_options_refuse_nan_and_infinity(args: list[str]) -> None:
    assert_one_line_error(run(*args), args[-2], args[-1])
