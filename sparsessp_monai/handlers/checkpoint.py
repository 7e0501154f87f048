"""
Checkpoints that survive a kill at any moment, and a resume that continues the interrupted run exactly.

Ignite's ``Checkpoint`` removes the previous file before it writes the new one, and MONAI's ``CheckpointSaver``
writes in place (``DiskSaver(atomic=False)``) and saves the "final" checkpoint on an exception too: a kill or a
crash could leave a 0-byte newest checkpoint, no older one, no ``model.pt``, or a failed run's weights as
``checkpoint_final.pt``. Here Ignite's ``Checkpoint`` keeps choosing what to save and under which name, and
:class:`AtomicDiskSaver` does the writing: through :func:`sparsessp_monai.io.atomic_write` (temporary file, fsync,
rename), with removals deferred until the new file is complete.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers.checkpoint import BaseSaveHandler, Checkpoint
from monai.handlers import CheckpointLoader
from torch.optim.lr_scheduler import CosineAnnealingLR

from sparsessp_monai.engines.bundle_utils import as_bool, latest_checkpoint
from sparsessp_monai.handlers.training_state import BestMetricState, RandomStates, follow_cosine_length
from sparsessp_monai.io.publish import atomic_write, process_alive

__all__ = ["AtomicDiskSaver", "BestModelSaver", "ResumableCheckpoint", "remove_stale_temporaries"]

# the temporary names of sparsessp_monai.io.publish.staging_path(..., "tmp"): .<name>.tmp-<pid>-<random>
_TEMPORARY = re.compile(r"^\.(?P<name>.+\.pt)\.tmp-(?P<pid>\d+)-[0-9a-f]+$")


class AtomicDiskSaver(BaseSaveHandler):
    """
    Ignite save handler that writes each checkpoint atomically and removes old ones only after a new one is written.

    ``Checkpoint`` calls :meth:`remove` for the file that the new one supersedes *before* it calls the handler to
    write the new one; the removal is only noted here and carried out after the next write has completed (a file
    that the write replaced under the same name is not removed). A failed write removes nothing. Only rank
    ``save_on_rank`` touches the disk, as with Ignite's ``DiskSaver``.

    Args:
        dirname: folder of the checkpoint files (created if missing).
        save_on_rank: the rank that writes.
    """

    def __init__(self, dirname: str | Path, save_on_rank: int = 0) -> None:
        self.dirname = Path(dirname)
        self.save_on_rank = save_on_rank
        self.pending_removals: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        """Write ``checkpoint`` (``torch.save``) to ``dirname/filename`` atomically, then do the pending removals."""
        pending, self.pending_removals = self.pending_removals, []
        if idist.get_rank() != self.save_on_rank:
            return
        atomic_write(self.dirname / filename, lambda tmp: torch.save(checkpoint, tmp))
        for name in pending:
            if name != filename:
                (self.dirname / name).unlink(missing_ok=True)

    def remove(self, filename: str) -> None:
        """Remove ``filename`` once the next checkpoint is complete."""
        self.pending_removals.append(filename)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary ``.<name>.pt.tmp-<pid>-*`` files of writes killed midway (their process has ended).

    Returns the removed paths. A temporary of a process that is still running (another run writing into the same
    folder) is left alone.
    """
    removed = []
    for path in Path(folder).glob(".*.pt.tmp-*"):
        match = _TEMPORARY.match(path.name)
        if match is None or process_alive(int(match.group("pid"))):
            continue  # not ours, or the writer is still running
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The bare network of a ``DistributedDataParallel`` / ``DataParallel`` wrapper (else ``network``)."""
    if isinstance(network, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        return network.module
    return network


class BestModelSaver:
    """
    Save the network's plain state dict (the Model Zoo ``model.pt``) whenever the evaluator's key metric improves.

    It follows MONAI's own best-metric bookkeeping (``engine.state.best_metric`` / ``best_metric_epoch``, updated
    before the evaluator's handlers run): the model is saved exactly when ``best_metric_epoch`` is the epoch just
    validated. Its state is therefore the evaluator's, which :class:`ResumableCheckpoint` saves and restores (its
    ``evaluator`` argument): after a resume the first validation saves only if it beats the interrupted run's best.
    The file is written atomically, so a kill during the write leaves the previous ``model.pt``; it loads with
    ``torch.load(weights_only=True)`` into the bare network (a DDP wrapper is unwrapped). Only rank 0 writes.

    Args:
        save_dir: folder of the model file.
        network: the network (``DistributedDataParallel`` allowed).
        filename: name of the model file.
    """

    def __init__(self, save_dir: str | Path, network: torch.nn.Module, filename: str = "model.pt") -> None:
        self.saver = AtomicDiskSaver(save_dir)
        self.network = network
        self.filename = filename

    def attach(self, engine: Engine) -> None:
        """Save after every validation epoch of the evaluator ``engine`` that improved the key metric."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Save ``model.pt`` if the epoch just completed holds the best key metric so far."""
        if engine.state.best_metric_epoch != engine.state.epoch:
            return
        self.saver(unwrap(self.network).state_dict(), self.filename)
        engine.logger.info(
            f"key metric improved to {float(engine.state.best_metric):.4f} at epoch {engine.state.epoch}: "
            f"saved {self.saver.dirname / self.filename}"
        )


class ResumableCheckpoint:
    """
    Save the whole training state at the end of every ``save_interval``-th epoch and, once training has completed,
    ``final_filename``; with ``resume=True`` continue the newest readable ``checkpoint_epoch=N.pt`` exactly.

    What a checkpoint holds: the entries of ``save_dict`` (network, optimizer, scheduler), the trainer (epoch,
    iteration), ``random_states`` (:class:`~sparsessp_monai.handlers.training_state.RandomStates`: torch, numpy,
    Python and every random transform of the training pipeline, of every rank) and, given an ``evaluator``,
    ``best_metric`` (its best key metric and epoch, which decides whether the next validation replaces
    ``model.pt``, see :class:`BestModelSaver`). The trainer is added when the handler is attached, so a bundle
    config does not reference the trainer from inside the trainer's own handler list.

    Exactness: the epoch checkpoint is taken after every other end-of-epoch handler of the trainer (the handler
    registers it when the run starts, whatever its place in the handler list), i.e. after the learning-rate step
    and the validation of that epoch, so the saved generators are those the next epoch starts from. A run killed
    at any moment and resumed repeats the epochs after its last checkpoint exactly: on CPU its final weights are
    bit-identical to those of an uninterrupted run with the same seed.

    Writing: every file is written atomically (:class:`AtomicDiskSaver`), the previous epoch checkpoint is removed
    only after the new one is complete (a resumed run also removes the one it resumed from), and temporaries of
    killed writes are removed at the start. ``final_filename`` is written only when training completes: a run that
    fails or is interrupted leaves a previous run's final checkpoint as it was.

    Resuming: checkpoints are tried newest first; an unreadable one (0 bytes, truncated, not a torch file) is
    skipped with a warning naming it, and with no readable one training starts from scratch with a warning. Every
    rank of a distributed run loads the checkpoint. The configured ``max_epochs`` wins over the checkpoint's;
    when it has grown, a ``CosineAnnealingLR`` in ``save_dict`` follows the new length: its ``T_max`` becomes the
    configured one (``T_max = max_epochs`` in the bundle config), its progress is kept and the learning rate
    continues on the cosine of the new length (:func:`~sparsessp_monai.handlers.training_state.follow_cosine_length`),
    instead of climbing back up past the old end. Entries missing from an older checkpoint are reported and left
    as configured (the resume is then not exact).

    Args:
        save_dir: folder of the checkpoints.
        save_dict: objects to save besides the trainer, e.g. ``{"model": net, "optimizer": opt}``.
        save_interval: epochs between checkpoints; only the newest is kept.
        resume: load the newest readable checkpoint of ``save_dir`` before training, if there is one.
        map_location: ``torch.load`` map location, so a checkpoint saved on any device loads on this one.
        final_filename: file written when training completes.
        evaluator: the validation engine whose best key metric is saved and restored (``None``: not saved).
    """

    def __init__(
        self,
        save_dir: str | Path,
        save_dict: Mapping[str, Any],
        save_interval: int = 1,
        resume: bool = False,
        map_location: str | torch.device | None = None,
        final_filename: str = "checkpoint_final.pt",
        evaluator: Engine | None = None,
    ) -> None:
        self.save_dir = str(save_dir)
        self.save_dict = dict(save_dict)
        self.save_interval = int(save_interval)
        self.resume = as_bool(resume)
        self.map_location = map_location
        self.final_filename = final_filename
        self.evaluator = evaluator
        self.resumed_from: str | None = None
        self.logger = logging.getLogger(__name__)
        self.objects: dict[str, Any] = {}
        self.interval_checkpoint: Checkpoint | None = None
        self.final_checkpoint: Checkpoint | None = None
        self.epoch_saver_registered = False

    def attach(self, engine: Engine) -> None:
        """Attach the loader (when resuming) and the savers to the trainer ``engine``."""
        objects = {**self.save_dict, "trainer": engine}
        objects["random_states"] = RandomStates(lambda: getattr(engine, "data_loader", None) or engine.state.dataloader)
        if self.evaluator is not None:
            objects["best_metric"] = BestMetricState(self.evaluator)
        self.objects = objects
        self.interval_checkpoint = Checkpoint(
            objects, AtomicDiskSaver(self.save_dir), score_function=lambda e: e.state.epoch, score_name="epoch"
        )
        self.final_checkpoint = Checkpoint(
            objects, AtomicDiskSaver(self.save_dir), filename_pattern=self.final_filename
        )
        if idist.get_rank() == 0:
            for path in remove_stale_temporaries(self.save_dir):
                self.logger.info(f"removed {path}, left by an interrupted checkpoint write")
        if self.resume:
            self.resumed_from = latest_checkpoint(self.save_dir)
            if self.resumed_from is None:
                self.logger.warning(
                    f"resume requested but no readable checkpoint in {self.save_dir}: training from scratch."
                )
            else:
                self.logger.info(f"resuming training from {self.resumed_from}")
                engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.STARTED, self.register_epoch_saver)
        engine.add_event_handler(Events.COMPLETED, self.final_checkpoint)

    def register_epoch_saver(self, engine: Engine) -> None:
        """Save at epoch ends after the handlers attached so far (registered once, at the first run)."""
        if not self.epoch_saver_registered:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self.save_epoch)
            self.epoch_saver_registered = True

    def save_epoch(self, engine: Engine) -> None:
        """Write ``checkpoint_epoch=N.pt``, then remove every other epoch checkpoint (e.g. the one resumed from)."""
        self.interval_checkpoint(engine)
        if idist.get_rank() != 0:
            return
        newest = Path(self.interval_checkpoint.last_checkpoint)
        for path in Path(self.save_dir).glob("*checkpoint_epoch=*.pt"):
            if path.name != newest.name and re.search(r"epoch=\d+\.pt$", path.name):
                path.unlink(missing_ok=True)

    def load(self, engine: Engine) -> None:
        """Restore every saved entry from ``resumed_from`` (when the run starts, on every rank)."""
        saved = set(torch.load(self.resumed_from, map_location="cpu", weights_only=True, mmap=True))
        missing = sorted(set(self.objects) - saved)
        if missing:
            self.logger.warning(f"{self.resumed_from} has no {missing}: these restart as configured (inexact resume).")
        to_load = {key: obj for key, obj in self.objects.items() if key in saved}
        lengths = {key: obj.T_max for key, obj in to_load.items() if isinstance(obj, CosineAnnealingLR)}
        CheckpointLoader(self.resumed_from, to_load, name=engine.logger.name, map_location=self.map_location)(engine)
        for key, t_max in lengths.items():
            if follow_cosine_length(to_load[key], t_max):
                self.logger.info(f"{key}: cosine schedule follows the configured length T_max={t_max}")
