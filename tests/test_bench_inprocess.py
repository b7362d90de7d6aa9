"""tools/bench_inprocess.py runs: a quick subset of its scale table (each row in a fresh process) prints a row per
device count with every device upgraded, and a bad --scale is refused in one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "tools" / "bench_inprocess.py"


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(BENCH), *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=300)


def test_a_quick_scale_table_has_a_row_per_device_count_with_every_device_upgraded() -> None:
    done = run_bench("--part", "scale", "--scale", "1,3", "--scale-size", "2", "--repeat-to", "4")
    assert done.returncode == 0, done.stderr
    rows = {}
    for line in done.stdout.splitlines():
        match = re.match(r"\s+(\d+)\s+(\d+)/(\d+)\s+([\d,]+)\s+([\d,]+)\s+([\d.]+)\s+([\d,]+)\s", line)
        if match:
            rows[int(match[1])] = match
    assert sorted(rows) == [1, 3]
    for count, row in rows.items():
        assert int(row[2]) == int(row[3]) == count  # all upgraded
        assert int(row[4].replace(",", "")) >= count * (2048 // 64)  # every device downloaded the whole image
        assert float(row[6]) > 0
    assert "3 devices: CPU per block" in done.stdout


def test_a_bad_device_count_is_refused() -> None:
    done = run_bench("--scale", "1,ten")
    assert done.returncode == 2
    assert "'1,ten': expected device counts such as 1,10,100" in done.stderr
    assert "Traceback" not in done.stderr
