"""Writing files so that a failure never leaves a half-written one behind, and checking output paths before a
command starts its work, so that a path it cannot (or must not) write fails at once with one line."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from emulator.errors import InputError


class _Writes:
    durable = True  # what `durable_writes` sets


def durable_writes(enabled: bool) -> None:
    """Whether `write_atomic` flushes each file to disk (fsync) before renaming it into place; on unless turned
    off. Off, a write is still atomic (a reader sees the old file or the new one, never a part), but a power cut
    may lose the newest version: for state that is thrown away anyway (a test suite's temporary folders, a
    tmpfs), where the flush is only a wait on the disk."""
    _Writes.durable = enabled


def write_atomic(path: str | os.PathLike[str], data: bytes | str, *, mode: int = 0o644) -> None:
    """Write `data` to a temporary file beside `path`, flush it to disk (unless `durable_writes(False)`), then
    rename it over `path`.

    A reader (or a restarted device reading its state) sees either the old file or the new one, never a part.
    `mode` applies to the new file (private keys pass 0o600; the temporary file starts private either way).
    """
    target = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            if _Writes.durable:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# -- output paths, checked before any work starts ------------------------------------------------------------


class OutputPathError(InputError):
    """An output path that cannot be written as the command promises: its folder is missing or not a folder,
    it is a directory where a file is wanted (or the reverse), it cannot be written, or it is one of the inputs."""


def check_output_file(
    path: str | os.PathLike[str],
    what: str,
    *,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    create_parents: bool = False,
) -> None:
    """Refuse, before any work, a file path the command could not write (or should not: an input of the same run,
    which the write would destroy). `what` says what the file is for the error line; with `create_parents` the
    command promises to create missing folders above it."""
    target = Path(path)
    with _path_trouble(target, what):
        _check_file(target, what, inputs, create_parents)


def _check_file(target: Path, what: str, inputs: Iterable[str | os.PathLike[str] | None], create_parents: bool) -> None:
    if target.is_dir():
        raise OutputPathError(f"{target}: is a directory (expected {what})")
    if target.exists() and not target.is_file():
        raise OutputPathError(f"{target}: not a regular file (expected {what})")
    _refuse_inputs(target, what, inputs)
    parent = target.parent
    if not create_parents and not parent.exists():
        raise OutputPathError(f"{target}: folder {parent} does not exist (expected {what} in an existing folder)")
    _check_writable_folder(target, parent, what)


def check_output_dir(
    path: str | os.PathLike[str],
    what: str,
    *,
    create: bool = True,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> None:
    """Refuse, before any work, a folder the command could not use: an existing non-directory, a missing one the
    command does not create (`create=False`), or one it cannot create or write files in."""
    target = Path(path)
    with _path_trouble(target, what):
        _check_dir(target, what, create, inputs)


def _check_dir(target: Path, what: str, create: bool, inputs: Iterable[str | os.PathLike[str] | None]) -> None:
    if target.exists() and not target.is_dir():
        raise OutputPathError(f"{target}: is not a directory (expected {what})")
    if not target.exists() and not create:
        raise OutputPathError(f"{target}: does not exist (expected {what})")
    _refuse_inputs(target, what, inputs)
    _check_writable_folder(target, target, what)


@contextlib.contextmanager
def _path_trouble(target: Path, what: str) -> Iterator[None]:
    """A path the system cannot even look at (a name too long, a loop of links) is bad input too."""
    try:
        yield
    except OSError as exc:
        raise OutputPathError(f"{target}: {exc.strerror or exc} (expected {what})") from None


def _refuse_inputs(target: Path, what: str, inputs: Iterable[str | os.PathLike[str] | None]) -> None:
    for item in inputs:
        if item is None:
            continue
        source = Path(item)
        if _same_file(target, source):
            raise OutputPathError(
                f"{target}: is the same file as the input {source}, which writing it would "
                f"destroy (expected {what} apart from the inputs)"
            )


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        with contextlib.suppress(OSError):
            return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _check_writable_folder(target: Path, folder: Path, what: str) -> None:
    """`folder` (or, when it is to be created, its nearest existing ancestor) must be a directory that accepts a
    new file: tried by creating and removing one, since permission bits alone do not tell (root, /proc, a
    read-only mount)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"{target}: {existing} is not a folder (expected {what})")
    try:
        fd, probe = tempfile.mkstemp(prefix=".ota-emu-probe.", dir=existing)
    except OSError as exc:
        reason = "it accepts no new files" if exc.errno == errno.ENOENT else exc.strerror or str(exc)
        raise OutputPathError(f"{target}: cannot write in {existing} ({reason}; expected {what})") from None
    os.close(fd)
    os.unlink(probe)
