"""
All-or-nothing outputs of an inference run: the output folder is checked before the first prediction, the outputs
are staged in a hidden folder inside it while the engine runs and published when the run completes.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from sparsessp_monai.engines.errors import BundleInputError
from sparsessp_monai.io.publish import process_alive, staging_path

__all__ = ["PublishOutputs", "process_alive"]

# `.outputs@<host>.staging-<pid>-<8 hex>`: the name `staging_path` gives a notional `outputs@<host>` entry
STAGING_NAME = re.compile(r"^\.outputs@(?P<host>[A-Za-z0-9-]*)\.staging-(?P<pid>\d+)-[0-9a-f]{8}$")


def _host() -> str:
    # in the staging name so that a run never takes another machine's live staging folder (a shared disk) for stale
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (a dangling link counts: it is something in the way)."""
    while not (path.exists() or path.is_symlink()) and path != path.parent:
        path = path.parent
    return path


def _read_only(folder: Path) -> bool:
    """Whether files cannot be created in ``folder``: no write permission, or a read-only file system (which
    ``os.access`` does not report for root)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return True
    if hasattr(os, "statvfs"):
        try:
            return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
        except OSError:
            return False
    return False


class PublishOutputs:
    """
    Ignite handler that makes a run's outputs all-or-nothing and safe.

    - ``STARTED`` (before the first prediction): :meth:`check` refuses an output folder that cannot be written (a
      file where the folder should be, no write permission, a read-only file system), one that is, holds or sits
      inside ``dataset_dir`` or holds an input file, and a staging folder on another file system; then the staging
      folders that killed runs on this machine left in ``output_dir`` are removed (:meth:`remove_stale_staging`).
    - The run writes to ``staging_dir``, a hidden folder inside ``output_dir`` (:meth:`make_staging_dir`): same
      file system even when ``output_dir`` is a mount point, so publishing is a rename per file.
    - ``COMPLETED``: every staged file is moved to ``output_dir`` (existing files of the same name are replaced
      only now) and the staging folder removed.
    - ``EXCEPTION_RAISED``: the staging folder is deleted (and ``output_dir`` too when this run created it and it
      is empty), and the exception propagates, so no partial prediction is ever left next to earlier results.

    Ignite runs only the first ``EXCEPTION_RAISED`` handler that raises, and MONAI's ``StatsHandler`` raises, so
    attach this handler before any ``StatsHandler`` (first in a bundle's handler list), and before handlers whose
    ``STARTED`` step does real work (e.g. ``CheckpointLoader``).

    Args:
        staging_dir: temporary folder the run writes to (use :meth:`make_staging_dir`).
        output_dir: the final folder.
        inputs: input files (or datalist items with an ``image`` entry) that must never be replaced.
        dataset_dir: the input folder (or file); ``output_dir`` may not be, contain or sit inside it.

    Raises:
        BundleInputError: (from :meth:`check` and :meth:`publish`) the problem, naming the folder or file.
    """

    def __init__(
        self,
        staging_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        inputs: Sequence[Any] | None = None,
        dataset_dir: str | os.PathLike | None = None,
    ) -> None:
        self.staging_dir = Path(staging_dir)
        self.output_dir = Path(output_dir)
        self.inputs = {self._input_path(i) for i in inputs or []}
        self.dataset_dir = None if dataset_dir is None else Path(dataset_dir)
        self.logger = logging.getLogger(__name__)
        self._created: list[Path] = []  # folders this run will create, deepest first

    @staticmethod
    def _input_path(item: Any) -> Path:
        if isinstance(item, Mapping):
            item = item.get("image", "")
        return Path(str(item)).resolve()

    @staticmethod
    def make_staging_dir(output_dir: str | os.PathLike) -> str:
        """A fresh hidden folder name inside ``output_dir`` (``.outputs@<host>.staging-<pid>-<random>``); created
        by the first write, so a run that fails before writing anything leaves nothing behind. Hidden, so an input
        scan of the folder never reads it."""
        return str(staging_path(Path(output_dir) / f"outputs@{_host()}", "staging"))

    def attach(self, engine: Engine) -> None:
        """Check on ``STARTED``, publish on ``COMPLETED``, discard on ``EXCEPTION_RAISED`` (and re-raise)."""
        engine.add_event_handler(Events.STARTED, self.prepare)
        engine.add_event_handler(Events.COMPLETED, self.publish)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.discard)

    def check(self) -> None:
        """Refuse an output folder the run could not publish into, or one that would mix with its inputs. Writes
        nothing."""
        out = self.output_dir.absolute()
        resolved = out.resolve()
        hint = (
            "choose an output_dir outside the inputs (inputs are never written, and a later run would read the "
            "predictions as inputs)."
        )
        if self.dataset_dir is not None and self.dataset_dir.is_dir():
            data = self.dataset_dir.resolve()
            if resolved == data or data in resolved.parents or resolved in data.parents:
                where = "is" if resolved == data else "is inside" if data in resolved.parents else "contains"
                raise BundleInputError(f"output folder {str(out)!r} {where} the input folder {str(data)!r}; {hint}")
        held = sorted(str(i) for i in self.inputs if resolved in i.parents)
        if held:
            raise BundleInputError(f"output folder {str(out)!r} holds the input file {held[0]!r}; {hint}")
        existing = _nearest_existing(out)
        if not existing.is_dir():
            what = "is a file" if existing == out else f"cannot be created: {str(existing)!r} is a file"
            raise BundleInputError(f"output folder {str(out)!r} {what}, not a folder; choose another output_dir.")
        if _read_only(existing):
            what = "is" if existing == out else f"cannot be created: {str(existing)!r} is"
            raise BundleInputError(
                f"output folder {str(out)!r} {what} not writable (read-only); choose another output_dir."
            )
        staging = _nearest_existing(self.staging_dir.absolute())
        if out not in self.staging_dir.absolute().parents and staging.stat().st_dev != existing.stat().st_dev:
            raise BundleInputError(
                f"staging folder {str(self.staging_dir)!r} is on another file system than the output folder "
                f"{str(out)!r}, so outputs could not be moved there; leave staging_dir at its default."
            )

    def remove_stale_staging(self) -> list[Path]:
        """Delete the staging folders in ``output_dir`` left by killed runs: those named by
        :meth:`make_staging_dir` on this machine whose process is gone. Returns them."""
        if not self.output_dir.is_dir():
            return []
        stale = []
        for entry in sorted(self.output_dir.iterdir()):
            match = STAGING_NAME.match(entry.name)
            if match is None or entry.is_symlink() or not entry.is_dir() or match["host"] != _host():
                continue
            if entry.absolute() != self.staging_dir.absolute() and not process_alive(int(match["pid"])):
                shutil.rmtree(entry, ignore_errors=True)
                self.logger.warning(f"removed {str(entry)!r}, left by an interrupted run (process {match['pid']}).")
                stale.append(entry)
        return stale

    def prepare(self, engine: Engine | None = None) -> None:
        """:meth:`check`, note the folders the run will create, then :meth:`remove_stale_staging`."""
        self._created = []
        self.check()
        out = self.output_dir.absolute()
        self._created = [p for p in (out, *out.parents) if p.parents and not (p.exists() or p.is_symlink())]
        self.remove_stale_staging()

    def publish(self, engine: Engine | None = None) -> None:
        """Move every staged file into ``output_dir``."""
        staged = sorted(self.staging_dir.rglob("*")) if self.staging_dir.is_dir() else []
        moves = [(path, self.output_dir / path.relative_to(self.staging_dir)) for path in staged if path.is_file()]
        clash = [str(target) for _, target in moves if target.resolve() in self.inputs]
        if clash:
            # checked before anything moves, so the run stays all-or-nothing; EXCEPTION_RAISED discards the staging
            raise BundleInputError(
                f"refusing to overwrite input file(s) {clash[:3]} with outputs; choose another output_dir."
            )
        self.output_dir.mkdir(parents=True, exist_ok=True)
        moved = 0
        for path, target in moves:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            moved += 1
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        self.logger.info(f"wrote {moved} file(s) to {self.output_dir}")

    def discard(self, engine: Engine, e: Exception) -> None:
        """Delete the staged outputs of a failed run (and the folders it created, when empty) and re-raise its
        exception."""
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:  # not empty (or already gone): not only this run's
                break
        raise e
