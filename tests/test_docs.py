"""The developer docs name files and symbols that exist: every `path` and `path: Name` written in
docs/architecture.md and CONTRIBUTING.md resolves in this checkout, so the docs cannot silently drift from the code."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("docs/architecture.md", "CONTRIBUTING.md")
# `emulator/chf/server.py: OtaServer._activation_for`, `tests/conftest.py`, `profiles/faults/`
REFERENCE = re.compile(r"`((?:emulator|tests|profiles|tools|stubs|docs)/[\w./-]*)(?:: ([\w.]+))?`")


def references() -> list[tuple[str, str, str | None]]:
    found = []
    for doc in DOCS:
        for match in REFERENCE.finditer((ROOT / doc).read_text(encoding="utf-8")):
            found.append((doc, match.group(1), match.group(2)))
    return found


def test_the_docs_reference_files() -> None:
    # The pattern itself must keep finding what the docs are written with.
    assert len(references()) > 40


@pytest.mark.parametrize(("doc", "path", "symbol"), references(), ids=str)
def test_reference_resolves(doc: str, path: str, symbol: str | None) -> None:
    assert (ROOT / path).exists(), f"{doc}: {path} does not exist"
    if symbol is None:
        return
    module_name = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    value: object = importlib.import_module(module_name)
    for part in symbol.split("."):
        assert hasattr(value, part), f"{doc}: {path} has no {symbol}"
        value = getattr(value, part)
