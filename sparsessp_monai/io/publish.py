"""
The one way this package writes files safely.

- :func:`atomic_write` / :func:`atomic_write_text` / :func:`atomic_write_bytes`: one file, written to a hidden
  temporary file in the target's folder, flushed to disk and renamed into place, so a reader (or a run killed
  half-way) never sees half a file, and a failure leaves nothing behind.
- :func:`staged_folder`: a whole output folder (a generated dataset, a prepared dataset) written into a hidden
  staging folder beside it and published at the end, with a done-marker written last; :func:`is_complete` tells a
  later run that the folder is finished and was made with the same parameters.
- :func:`staging_path`: the hidden sibling name both use (same file system as the target, so renames are atomic).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DONE_MARKER",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "csv_text",
    "is_complete",
    "process_alive",
    "publish_folder",
    "staged_folder",
    "staging_path",
]

DONE_MARKER = ".sparsessp-complete.json"
"""File written last into a published folder: the parameters it was made with and the files it holds."""


def staging_path(target: str | os.PathLike, kind: str = "staging") -> Path:
    """A fresh hidden sibling of ``target`` (``.<name>.<kind>-<pid>-<random>``), on the same file system."""
    target = Path(target).absolute()
    return target.parent / f".{target.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (``True`` when that cannot be told, to stay on the safe side)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError: alive, owned by someone else
        return True
    return True


def _fsync_dir(folder: Path) -> None:
    # makes a rename durable; not every platform / file system lets a folder be opened for this
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any], mode: int = 0o644) -> Path:
    """Call ``write(tmp)`` to write a temporary file beside ``path``, flush it to disk, then rename it over ``path``.

    The file gets ``mode`` (0644: as readable as any other output; ``mkstemp`` would make it owner-only). The
    previous ``path``, if any, is replaced only once the new file is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_path(path, "tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, blob: bytes) -> Path:
    """Write ``blob`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(blob))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write`); line ends are written as given."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    return atomic_write(path, write)


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """CSV text of a header and rows (``csv`` module quoting, ``\\r\\n`` line ends as the module writes them)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _jsonable(record: Mapping[str, Any]) -> Any:
    # compare records after a JSON round trip, so tuples and lists (or ints and floats written alike) match
    return json.loads(json.dumps(record, sort_keys=True))


def is_complete(folder: str | os.PathLike, record: Mapping[str, Any]) -> bool:
    """Whether ``folder`` was published by :func:`publish_folder` with this ``record`` and still holds its files."""
    folder = Path(folder)
    try:
        marker = json.loads((folder / DONE_MARKER).read_text(encoding="utf-8"))
        if marker.get("record") != _jsonable(record):
            return False
        return all((folder / name).is_file() for name in marker["files"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _files_below(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != DONE_MARKER)


def publish_folder(staging: str | os.PathLike, out_dir: str | os.PathLike, record: Mapping[str, Any],
                   replace: bool = False, mark: bool = True) -> Path:
    """Move a fully written ``staging`` folder to ``out_dir`` and mark it complete.

    A new ``out_dir`` is one atomic rename. An existing one is either replaced whole (``replace=True``: the old
    folder is moved aside and deleted only after the new one is in place) or updated entry by entry (the staging
    folder's top-level entries replace the same-named ones, other files in ``out_dir`` are left alone). In every
    case the done-marker is removed first and written last, so an interruption never leaves a folder that
    :func:`is_complete` accepts with partial content. ``mark=False`` writes no marker, for a folder whose format
    has no room for one (a Model Zoo bundle); it must then be published whole (``replace=True``, or a new folder).
    """
    staging, out = Path(staging), Path(out_dir)
    files = _files_below(staging)
    marker = {"record": _jsonable(record), "files": files}
    if not mark and not replace:
        raise ValueError("a folder published without its done-marker must be published whole (replace=True).")
    if not out.exists():
        if mark:
            atomic_write_text(staging / DONE_MARKER, json.dumps(marker, indent=2))
        try:
            os.rename(staging, out)
            _fsync_dir(out.parent)
            return out
        except OSError:
            if not out.exists():
                raise
            # another run created out_dir meanwhile: fall through and update it
            (staging / DONE_MARKER).unlink(missing_ok=True)
    if replace:
        old = staging_path(out, "old")
        os.rename(out, old)
        try:
            if mark:
                atomic_write_text(staging / DONE_MARKER, json.dumps(marker, indent=2))
            os.rename(staging, out)
        except BaseException:
            os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return out
    (out / DONE_MARKER).unlink(missing_ok=True)
    trash = staging_path(out, "old")
    trash.mkdir()
    try:
        for entry in sorted(staging.iterdir()):
            target = out / entry.name
            if target.exists() or target.is_symlink():
                os.rename(target, trash / entry.name)
            os.rename(entry, target)
        atomic_write_text(out / DONE_MARKER, json.dumps(marker, indent=2))
    finally:
        shutil.rmtree(trash, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
    return out


@contextlib.contextmanager
def staged_folder(
    out_dir: str | os.PathLike, record: Mapping[str, Any], replace: bool = False, mark: bool = True
) -> Iterator[Path]:
    """Context manager: yields a fresh staging folder beside ``out_dir``; on normal exit it is published with
    :func:`publish_folder`, on an exception it is deleted (``out_dir`` is then untouched)."""
    out = Path(out_dir)
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    staging = staging_path(out)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish_folder(staging, out, record, replace=replace, mark=mark)
