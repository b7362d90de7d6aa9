"""Bundled profiles by name: resolution from a checkout and from an installed wheel's layout, `--device NAME` and
`--chf NAME` on the commands, and `ota-emu profiles list|show|export`."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conftest import assert_one_line_error, image_file
from emulator.cli import main
from emulator.profiles import ProfileError, bundled, bundled_names, bundled_root, load_device, resolve_profile

CHECKOUT = Path(__file__).parent.parent
SHIPPED = CHECKOUT / "profiles"


def run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], prog_name="ota-emu")


@pytest.fixture
def wheel_package(tmp_path: Path) -> Path:
    """The `emulator` folder as the wheel installs it: profiles/ copied where pyproject's force-include puts them,
    and no profiles/ beside the package."""
    pyproject = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())
    include = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    site = tmp_path / "site-packages"
    shutil.copytree(CHECKOUT / "profiles", site / include["profiles"])
    return site / "emulator"


def test_names_resolve_in_a_checkout() -> None:
    assert bundled_root() == SHIPPED
    names = bundled_names()
    assert names[:3] == ["chf", "hcalcs", "ppmid"]
    assert "faults/ignore-wait-for-data" in names
    assert len(names) == len(list(SHIPPED.rglob("*.toml")))
    assert resolve_profile("faults/ignore-wait-for-data") == SHIPPED / "faults" / "ignore-wait-for-data.toml"


def test_names_resolve_in_the_wheel_layout(wheel_package: Path) -> None:
    assert bundled_root(wheel_package) == wheel_package / "_profiles"
    assert bundled_names(wheel_package) == bundled_names()
    path = resolve_profile("faults/ignore-wait-for-data", wheel_package)
    assert path == wheel_package / "_profiles" / "faults" / "ignore-wait-for-data.toml"
    assert load_device(path).faults == {"ignore_wait_for_data"}
    assert bundled("hcalcs", wheel_package).read_bytes() == (SHIPPED / "hcalcs.toml").read_bytes()


def test_a_path_wins_over_a_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("ppmid").write_text((SHIPPED / "hcalcs.toml").read_text())
    assert resolve_profile("ppmid") == Path("ppmid")


def test_an_unknown_name_lists_the_bundled_ones() -> None:
    with pytest.raises(ProfileError, match=r"ppmd: no such profile file and no bundled profile .*chf, hcalcs, ppmid"):
        resolve_profile("ppmd")
    with pytest.raises(ProfileError, match=r"faults/ignore-wait-for-date: .*faults/ignore-wait-for-data"):
        resolve_profile("faults/ignore-wait-for-date")


def test_run_takes_bundled_names(tmp_path: Path) -> None:
    profile = load_device(bundled("ppmid"))
    path = image_file(tmp_path / "ppmid.ota", profile, size=800)  # signed with the test-only key it trusts
    result = run("run", "--chf", "chf", "--device", "faults/ignore-wait-for-data", "--image", path, "--json")
    assert result.exit_code == 0, result.output
    [device] = json.loads(result.stdout)["devices"]
    assert (device["ieee"], device["result"]) == (str(profile.ieee), "upgraded")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["run", "--device", "ppmd"], ["--device", "ppmd: no such profile file", "chf, hcalcs, ppmid"]),
        (["run", "--chf", "chf.tom"], ["--chf", "chf.tom"]),
        (["ncp", "--device", "faults/nope"], ["--device", "faults/ignore-offset"]),
        (["activate", "--device", "hcalc", "--state-dir", ".", "--hash", "00"], ["--device", "hcalc"]),
    ],
)
def test_unknown_names_on_the_commands_are_one_line(args: list[str], fragments: list[str]) -> None:
    assert_one_line_error(run(*args), *fragments)


def test_list_json_names_every_profile_with_its_kind() -> None:
    result = run("profiles", "list", "--json")
    assert result.exit_code == 0, result.output
    listed = {p["name"]: p for p in json.loads(result.stdout)}
    assert list(listed) == bundled_names()
    assert (listed["chf"]["kind"], listed["hcalcs"]["kind"], listed["ppmid"]["kind"]) == ("chf", "hcalcs", "ppmid")
    assert listed["faults/ignore-wait-for-data"]["summary"].startswith("A deliberately non-conforming PPMID")


def test_list_table_and_show() -> None:
    table = run("profiles", "list")
    assert table.exit_code == 0 and "faults/skip-hash-check" in table.stdout
    shown = run("profiles", "show", "hcalcs")
    assert shown.exit_code == 0
    assert shown.stdout.rstrip("\n") == (SHIPPED / "hcalcs.toml").read_text().rstrip("\n")
    assert_one_line_error(run("profiles", "show", "nope"), "nope: no bundled profile", "chf, hcalcs, ppmid")


def test_export_copies_every_profile_and_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    result = run("profiles", "export", target, "--json")
    assert result.exit_code == 0, result.output
    written = [Path(p) for p in json.loads(result.stdout)]
    keys = sorted(f"keys/{k.name}" for k in (SHIPPED / "keys").iterdir())
    assert sorted(p.relative_to(target).as_posix() for p in written) == sorted(
        [*(f"{n}.toml" for n in bundled_names()), *keys]
    )
    # The exported profiles load on their own: the signing keys they name came along.
    assert load_device(target / "faults" / "no-resend.toml").signer_paths()[0].is_file()
    assert (target / "keys" / "test-image-signer.key.pem").stat().st_mode & 0o077 == 0
    assert (target / "faults" / "no-resend.toml").read_bytes() == (SHIPPED / "faults" / "no-resend.toml").read_bytes()
    (target / "ppmid.toml").write_text("# mine\n")
    assert_one_line_error(run("profiles", "export", target), "chf.toml: already exists", "--force")
    assert (target / "ppmid.toml").read_text() == "# mine\n"
    assert run("profiles", "export", target, "--force").exit_code == 0
    assert (target / "ppmid.toml").read_bytes() == (SHIPPED / "ppmid.toml").read_bytes()


def test_export_into_a_file_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert_one_line_error(run("profiles", "export", plain), str(plain), "is not a directory")
    assert_one_line_error(run("profiles", "export", plain / "sub"), f"{plain} is not a folder")
