"""All-or-nothing outputs of an inference run: staged while the engine runs, published when it completes."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["PublishOutputs"]


class PublishOutputs:
    """
    Ignite handler that makes a run's outputs all-or-nothing: everything is written to ``staging_dir`` and moved to
    ``output_dir`` when the engine completes; if the run fails, the staging folder is deleted and the exception
    propagates, so no partial prediction is ever left next to earlier results. Existing files in ``output_dir`` are
    only replaced by a completed run.

    Ignite runs only the first ``EXCEPTION_RAISED`` handler that raises, and MONAI's ``StatsHandler`` raises, so
    attach this handler before any ``StatsHandler`` (first in a bundle's handler list).

    Args:
        staging_dir: temporary folder the run writes to (same file system as ``output_dir``).
        output_dir: the final folder.
        inputs: input files (or datalist items with an ``image`` entry) that must never be replaced: a run whose
            outputs would land on one of them fails before anything is moved.
    """

    def __init__(
        self,
        staging_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        inputs: Sequence[Any] | None = None,
    ) -> None:
        self.staging_dir = Path(staging_dir)
        self.output_dir = Path(output_dir)
        self.inputs = {self._input_path(i) for i in inputs or []}
        self.logger = logging.getLogger(__name__)

    @staticmethod
    def _input_path(item: Any) -> Path:
        if isinstance(item, Mapping):
            item = item.get("image", "")
        return Path(str(item)).resolve()

    @staticmethod
    def make_staging_dir(output_dir: str | os.PathLike) -> str:
        """A fresh hidden folder name beside ``output_dir``; created by the first write, so a run that fails
        before writing anything leaves nothing behind."""
        out = Path(output_dir).resolve()
        return str(out.parent / f".{out.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}")

    def attach(self, engine: Engine) -> None:
        """Publish on ``COMPLETED``; discard on ``EXCEPTION_RAISED`` (and re-raise)."""
        engine.add_event_handler(Events.COMPLETED, self.publish)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.discard)

    def publish(self, engine: Engine | None = None) -> None:
        """Move every staged file into ``output_dir``."""
        staged = sorted(self.staging_dir.rglob("*")) if self.staging_dir.is_dir() else []
        moves = [(path, self.output_dir / path.relative_to(self.staging_dir)) for path in staged if path.is_file()]
        clash = [str(target) for _, target in moves if target.resolve() in self.inputs]
        if clash:
            # checked before anything moves, so the run stays all-or-nothing; EXCEPTION_RAISED discards the staging
            raise ValueError(
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
        """Delete the staged outputs of a failed run and re-raise its exception."""
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        raise e
