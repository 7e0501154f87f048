"""Resumable training checkpoints for bundle configs."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader, CheckpointSaver

from sparsessp_monai.engines.bundle_utils import as_bool, latest_checkpoint

__all__ = ["ResumableCheckpoint"]


class ResumableCheckpoint:
    """
    Save the whole training state every ``save_interval`` epochs (and at the end), and optionally resume from it.

    The trainer itself is added to ``save_dict`` when the handler is attached, so a bundle config does not have to
    reference the trainer from inside the trainer's own handler list (a circular reference for the config parser).
    With ``resume=True`` the newest ``checkpoint_epoch=N.pt`` in ``save_dir`` restores network, optimizer, scheduler
    and trainer (epoch, iteration), and training continues at epoch ``N + 1`` up to the configured ``max_epochs``.

    Args:
        save_dir: folder of the checkpoints.
        save_dict: objects to save besides the trainer, e.g. ``{"model": net, "optimizer": opt}``.
        save_interval: epochs between checkpoints; only the newest is kept.
        resume: load the newest checkpoint of ``save_dir`` before training, if there is one.
        map_location: ``torch.load`` map location, so a checkpoint saved on any device loads on this one.
        final_filename: file written when training ends or is interrupted by an exception.
    """

    def __init__(
        self,
        save_dir: str | Path,
        save_dict: Mapping[str, Any],
        save_interval: int = 1,
        resume: bool = False,
        map_location: str | torch.device | None = None,
        final_filename: str = "checkpoint_final.pt",
    ) -> None:
        self.save_dir = str(save_dir)
        self.save_dict = dict(save_dict)
        self.save_interval = int(save_interval)
        self.resume = as_bool(resume)
        self.map_location = map_location
        self.final_filename = final_filename
        self.resumed_from: str | None = None
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Attach the loader (when resuming) and the saver to the trainer ``engine``."""
        objects = {**self.save_dict, "trainer": engine}
        if self.resume:
            self.resumed_from = latest_checkpoint(self.save_dir)
            if self.resumed_from is None:
                self.logger.info(f"resume requested but no checkpoint in {self.save_dir}: training from scratch.")
            else:
                self.logger.info(f"resuming training from {self.resumed_from}")
                CheckpointLoader(self.resumed_from, objects, map_location=self.map_location).attach(engine)
        CheckpointSaver(
            self.save_dir,
            objects,
            save_interval=self.save_interval,
            n_saved=1,
            epoch_level=True,
            save_final=True,
            final_filename=self.final_filename,
        ).attach(engine)
        # the saver keeps one file of its own run; a resumed run must also drop the file it resumed from
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self._drop_older_checkpoints)

    def _drop_older_checkpoints(self, engine: Engine) -> None:
        if idist.get_rank() != 0:
            return
        newest = latest_checkpoint(self.save_dir)
        for path in Path(self.save_dir).glob("*checkpoint_epoch=*.pt"):
            if str(path) != newest and re.search(r"epoch=\d+\.pt$", path.name):
                path.unlink(missing_ok=True)
