"""`--count N` copies of the bundled profiles get EUI-64s of their own, and a clash says where each came from."""

from __future__ import annotations

import pytest
import zigpy.types as t

from emulator.han.network import expand
from emulator.profiles import bundled, load_device


def test_the_bundled_ppmid_and_hcalcs_never_meet_at_any_allowed_count() -> None:
    ppmid, hcalcs = load_device(bundled("ppmid")), load_device(bundled("hcalcs"))
    devices = expand([ppmid, hcalcs], 10000)
    assert len({d.ieee for d in devices}) == 20000
    assert devices[1].ieee == t.EUI64.convert("00:DB:12:34:56:78:90:A5")
    assert devices[10000].ieee == hcalcs.ieee


def test_a_clash_names_both_origins_without_blaming_the_profile() -> None:
    ppmid = load_device(bundled("ppmid"))
    neighbour = load_device(bundled("hcalcs")).replace(ieee=t.EUI64.convert("00:DB:12:34:56:78:90:A6"))
    with pytest.raises(ValueError) as caught:
        expand([ppmid, neighbour], 3)
    message = str(caught.value)
    assert message.startswith(f"PPMID copy 3 of {ppmid.source} (--count counts up from 00:db:12:34:56:78:90:a4) and ")
    assert f"the HCALCS of {neighbour.source} would both be 00:db:12:34:56:78:90:a6" in message
    assert message.endswith("(change the ieee of one profile, or use a smaller --count)")


def test_the_same_profile_twice_is_named_as_such() -> None:
    ppmid = load_device(bundled("ppmid"))
    with pytest.raises(
        ValueError,
        match=r"the PPMID of .*ppmid\.toml and the PPMID of .*ppmid\.toml would both be "
        r"00:db:12:34:56:78:90:a4, .* \(change the ieee of one profile\)$",
    ):
        expand([ppmid, ppmid], 1)
