"""How long each device check is expected to take, for the progress line and the ETA of a run.

The figures are the protocol seconds each check took for the bundled PPMID and HCALCS (0 where the check does
not apply to the kind), rounded up to 10 s, as measured and printed by
`python tools/bench_conformance.py --durations`. On a real device protocol time is wall time, so they are what
an operator waits, give or take how quickly the device answers; on virtual time they pass in a moment.
"""

from __future__ import annotations

EXPECTED_S: dict[str, dict[str, float]] = {
    "C-01": {"ppmid": 10, "hcalcs": 10},
    "C-02a": {"ppmid": 70, "hcalcs": 70},
    "C-02b": {"ppmid": 40, "hcalcs": 40},
    "C-03": {"ppmid": 580, "hcalcs": 490},
    "C-04": {"ppmid": 10, "hcalcs": 10},
    "C-05": {"ppmid": 70, "hcalcs": 70},
    "C-06": {"ppmid": 10, "hcalcs": 10},
    "C-07": {"ppmid": 20, "hcalcs": 20},
    "C-08a": {"ppmid": 40, "hcalcs": 40},
    "C-08b": {"ppmid": 10, "hcalcs": 10},
    "C-09": {"ppmid": 70, "hcalcs": 70},
    "C-10": {"ppmid": 70, "hcalcs": 70},
    "C-11": {"ppmid": 30, "hcalcs": 30},
    "C-12a": {"ppmid": 70, "hcalcs": 70},
    "C-12b": {"ppmid": 70, "hcalcs": 70},
    "C-13": {"ppmid": 10, "hcalcs": 10},
    "C-14": {"ppmid": 3910, "hcalcs": 3910},
    "C-15a": {"ppmid": 130, "hcalcs": 10},
    "C-15b": {"ppmid": 130, "hcalcs": 10},
    "C-16": {"ppmid": 70, "hcalcs": 70},
    "C-17": {"ppmid": 10, "hcalcs": 70},
    "C-18": {"ppmid": 5460, "hcalcs": 14440},
    "C-20": {"ppmid": 230, "hcalcs": 150},
    "C-21": {"ppmid": 10, "hcalcs": 20},
    "C-22a": {"ppmid": 10, "hcalcs": 0},
    "C-22b": {"ppmid": 10, "hcalcs": 0},
    "C-23a": {"ppmid": 0, "hcalcs": 3910},
    "C-23b": {"ppmid": 0, "hcalcs": 10},
    "C-23c": {"ppmid": 0, "hcalcs": 70},
    "C-23d": {"ppmid": 0, "hcalcs": 40},
    "C-23e": {"ppmid": 0, "hcalcs": 3610},
    "Z-01": {"ppmid": 80, "hcalcs": 80},
    "Z-02": {"ppmid": 80, "hcalcs": 80},
    "Z-03": {"ppmid": 80, "hcalcs": 80},
    "Z-04": {"ppmid": 80, "hcalcs": 80},
    "Z-05": {"ppmid": 80, "hcalcs": 80},
    "C-PAGE": {"ppmid": 10, "hcalcs": 10},
    "SE-01": {"ppmid": 40, "hcalcs": 40},
    "SE-02": {"ppmid": 10, "hcalcs": 10},
    "SE-03": {"ppmid": 40, "hcalcs": 40},
    "SE-04": {"ppmid": 40, "hcalcs": 40},
    "SE-05": {"ppmid": 40, "hcalcs": 40},
    "SE-06": {"ppmid": 90, "hcalcs": 90},
}


def expected_seconds(check_id: str, kind: str | None = None) -> float | None:
    """The protocol seconds `check_id` is expected to take for a device of `kind` (the longest of the kinds
    when unknown); None for a check not measured."""
    figures = EXPECTED_S.get(check_id)
    if figures is None:
        return None
    return figures[kind] if kind in figures else max(figures.values())
