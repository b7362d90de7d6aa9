"""Profiles: the bundled ones load, every key and fault is documented, and errors name file, key and rule."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import zigpy.types as t
from zigpy.zcl.clusters.general import UpgradeActivationPolicy, UpgradeTimeoutPolicy

from emulator.device.faults import DeviceFault
from emulator.profiles import (
    ActivationKind,
    ActivationTime,
    ChfProfile,
    DeviceProfile,
    ImageEntry,
    ProfileError,
    bundled,
    documented_keys,
    load_chf,
    load_device,
)

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

VALID_DEVICE = """
[device]
kind = "ppmid"
ieee = "00:DB:12:34:56:78:90:A4"
manufacturer_code = "0x121D"
image_type = "0x0084"
file_version = 1
"""


def test_bundled_profiles_load_with_gb_defaults():
    ppmid = load_device(bundled("ppmid"))
    hcalcs = load_device(bundled("hcalcs"))
    chf = load_chf(bundled("chf"))
    assert (ppmid.kind, ppmid.effective_device_id, ppmid.profile_id) == ("ppmid", 0x0506, 0x0109)
    assert (hcalcs.kind, hcalcs.effective_device_id) == ("hcalcs", 0x0504)
    assert ppmid.ieee == t.EUI64.convert("00:db:12:34:56:78:90:a4")
    assert (chf.ppmid_activation, chf.hcalcs_activation) == (ActivationTime.NOW, ActivationTime.WAIT)
    assert chf.untargeted == "no_image"


@pytest.mark.parametrize("cls", [DeviceProfile, ChfProfile, ImageEntry])
def test_every_key_is_documented_in_the_readme(cls):
    for key, _, _ in documented_keys(cls):
        assert f"| `{key}` |" in README, key


def test_every_fault_is_documented_in_the_readme():
    for fault in DeviceFault:
        assert f"| `{fault.value}` | {fault.description} |" in README, fault


def test_faults_and_policies_are_typed_however_the_profile_is_made(tmp_path):
    path = _write(tmp_path, VALID_DEVICE + 'faults = ["no_resend"]\nupgrade_activation_policy = 1\n')
    loaded = load_device(path)
    assert loaded.faults == {DeviceFault.NO_RESEND}
    assert loaded.upgrade_activation_policy is UpgradeActivationPolicy.Out_of_band_allowed
    assert loaded.upgrade_timeout_policy is UpgradeTimeoutPolicy.Apply_after_timeout
    replaced = loaded.replace(faults=frozenset({"ignore_offset"}), upgrade_timeout_policy=1)
    assert replaced.faults == {DeviceFault.IGNORE_OFFSET}
    assert replaced.upgrade_timeout_policy is UpgradeTimeoutPolicy.Do_not_apply_after_timeout
    with pytest.raises(ValueError, match="unknown fault 'ignore_ofset'"):
        loaded.replace(faults=frozenset({"ignore_ofset"}))


@pytest.mark.parametrize(
    ("text", "kind", "times"),
    [
        ("now", ActivationKind.NOW, (1000, 1000)),
        ("wait", ActivationKind.WAIT, (1000, 0xFFFFFFFF)),
        ("+120", ActivationKind.AFTER, (0, 120)),
        ("2000-01-01T01:00:00", ActivationKind.AT, (1000, 3600)),  # UTC when no zone is given
        ("2000-01-01T02:00:00+01:00", ActivationKind.AT, (1000, 3600)),
        ("1999-12-31T23:00:00Z", ActivationKind.AT, (1000, 1000)),  # past: at once, never before now
    ],
)
def test_activation_times_load_typed_and_give_the_upgrade_end_times(tmp_path, text, kind, times):
    chf = load_chf(_write(tmp_path, f'[chf]\nppmid_activation = "{text}"\n'))
    epoch = datetime(2000, 1, 1, tzinfo=UTC)  # ZCL time 0
    assert chf.ppmid_activation.kind is kind
    assert chf.ppmid_activation.upgrade_times(1000, epoch) == times
    assert ActivationTime.parse(str(chf.ppmid_activation)) == chf.ppmid_activation
    assert chf.replace(hcalcs_activation=text).hcalcs_activation == chf.ppmid_activation


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profile.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (VALID_DEVICE.replace('"ppmid"', '"ihd"'), "key 'device.kind': expected one of ppmid, hcalcs, got 'ihd'"),
        (VALID_DEVICE.replace('"0x121D"', '"0x1FFFF"'), "key 'device.manufacturer_code': expected 0..0xFFFF"),
        (VALID_DEVICE.replace('"00:DB:12:34:56:78:90:A4"', '"00:DB"'), "key 'device.ieee': expected an EUI-64"),
        (VALID_DEVICE + "colour = 1\n", "unknown key 'device.colour'"),
        (
            VALID_DEVICE + 'faults = ["fly"]\n',
            "key 'device.faults': unknown fault 'fly' (known: accept_foreign_upgrade_end, accept_same_version, ",
        ),
        (
            VALID_DEVICE + "upgrade_activation_policy = 2\n",
            "key 'device.upgrade_activation_policy': expected 0 (the OTA server may activate) or 1 (out of band only)",
        ),
        (VALID_DEVICE + "sleepy = 1\n", "key 'device.sleepy': expected true or false"),
        (VALID_DEVICE.replace("file_version = 1\n", ""), "missing required key 'device.file_version'"),
        ("[device\n", "not valid TOML"),
        ("[chf]\n", "missing table [device]"),
    ],
)
def test_device_profile_errors_name_file_key_and_rule(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ProfileError) as info:
        load_device(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[chf]\nchannel = 30\n", "key 'chf.channel': expected 11..26, got 30"),
        ('[chf]\nppmid_activation = "later"\n', "key 'chf.ppmid_activation': expected \"now\""),
        ('[chf]\nnetwork_key = "00"\n', "key 'chf.network_key': expected 16 bytes of hex"),
        ('[[images]]\ndevice_ids = ["00:DB:12:34:56:78:90:A4"]\n', "missing required key 'images[0].path'"),
        ("[chf]\n[extra]\n", "unknown table 'extra'"),
    ],
)
def test_chf_profile_errors(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ProfileError) as info:
        load_chf(path)
    assert message in str(info.value)


def test_missing_and_directory_profiles(tmp_path):
    with pytest.raises(ProfileError, match="no such profile file"):
        load_device(tmp_path / "absent.toml")
    with pytest.raises(ProfileError, match="is a directory"):
        load_chf(tmp_path)


def test_image_entries_resolve_relative_to_the_profile(tmp_path):
    path = _write(tmp_path, '[[images]]\npath = "fw/ppmid.ota"\ndevice_ids = ["00:DB:12:34:56:78:90:A4"]\n')
    chf = load_chf(path)
    [(image_path, entry)] = chf.image_paths()
    assert image_path == tmp_path / "fw" / "ppmid.ota"
    assert entry.device_ids == (t.EUI64.convert("00:db:12:34:56:78:90:a4"),)
