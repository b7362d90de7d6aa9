"""tools/bench_inprocess.py runs: a quick subset of its scale table (each row in a fresh process) prints a row per
device count with every device upgraded, and a bad --scale is refused in one line.

The tool's `main` runs in this process (the interpreter start and imports of a process around it would prove
nothing the tool's own code does not); the rows it starts are still fresh processes, as the tool makes them."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "tools" / "bench_inprocess.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """tools/bench_inprocess.py as a module, loaded from its file (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_inprocess", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_a_quick_scale_table_has_a_row_per_device_count_with_every_device_upgraded(
    bench: ModuleType, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the row processes import the package from this checkout
    bench.main(["--part", "scale", "--scale", "1,3", "--scale-size", "2", "--repeat-to", "4"])
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        match = re.match(r"\s+(\d+)\s+(\d+)/(\d+)\s+([\d,]+)\s+([\d,]+)\s+([\d.]+)\s+([\d,]+)\s", line)
        if match:
            rows[int(match[1])] = match
    assert sorted(rows) == [1, 3]
    for count, row in rows.items():
        assert int(row[2]) == int(row[3]) == count  # all upgraded
        assert int(row[4].replace(",", "")) >= count * (2048 // 64)  # every device downloaded the whole image
        assert float(row[6]) > 0
    assert "3 devices: CPU per block" in out


def test_a_bad_device_count_is_refused(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        bench.main(["--scale", "1,ten"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "'1,ten': expected device counts such as 1,10,100" in err
    assert "Traceback" not in err
