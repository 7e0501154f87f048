"""
Training state that a resumable checkpoint holds besides network, optimizer, scheduler and trainer: the random
number generators, the evaluator's best key metric, and the length of a cosine learning-rate schedule.

Each class is a small ``state_dict`` / ``load_state_dict`` object, so Ignite's ``Checkpoint`` saves and restores it
like any other entry of ``to_save``. Every state is made of tensors, numbers, strings, lists and dicts only, so a
checkpoint still loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine
from monai.transforms import Randomizable
from torch.optim.lr_scheduler import CosineAnnealingLR

__all__ = ["BestMetricState", "RandomStates", "follow_cosine_length", "randomizable_objects"]


def randomizable_objects(root: Any) -> list[Randomizable]:
    """Every MONAI ``Randomizable`` reachable from ``root`` (a data loader, a dataset, a ``Compose``), once each, in
    a fixed traversal order.

    The traversal follows attributes, lists and tuples like ``monai.data.utils.set_rnd`` (which seeds the same
    transforms when a ``monai.data.DataLoader`` is built), but also descends into ``Compose`` and into transforms
    that wrap other transforms (e.g. the cropper inside ``RandSpatialCropSamplesd``).
    """
    found: list[Randomizable] = []
    visited: set[int] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in visited or isinstance(obj, (torch.Tensor, np.ndarray, str, bytes, dict)):
            continue  # dicts are data (datalist items, cached samples), not transforms
        visited.add(id(obj))
        if isinstance(obj, (list, tuple)):
            stack.extend(reversed(obj))
            continue
        if not hasattr(obj, "__dict__"):
            continue
        if isinstance(obj, Randomizable):
            found.append(obj)
        stack.extend(reversed([v for k, v in vars(obj).items() if not k.startswith("__")]))
    return found


def _numpy_state(state: dict[str, Any]) -> dict[str, Any]:
    # the dict form of a Mersenne Twister state, its key as a tensor: weights_only checkpoints refuse numpy arrays
    return {
        "key": torch.from_numpy(state["state"]["key"].astype(np.int64)),
        "pos": int(state["state"]["pos"]),
        "has_gauss": int(state["has_gauss"]),
        "gauss": float(state["gauss"]),
    }


def _numpy_state_back(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "bit_generator": "MT19937",
        "state": {"key": state["key"].numpy().astype(np.uint32), "pos": state["pos"]},
        "has_gauss": state["has_gauss"],
        "gauss": state["gauss"],
    }


def _transform_states(objects: list[Randomizable]) -> list[dict[str, Any]]:
    # one entry per transform; a transform sharing its generator with an earlier one (e.g. MONAI's class-level
    # default before any seeding) records that, so the restore rebuilds the same sharing
    first_user: dict[int, int] = {}
    states: list[dict[str, Any]] = []
    for i, obj in enumerate(objects):
        if id(obj.R) in first_user:
            states.append({"same_as": first_user[id(obj.R)]})
        else:
            first_user[id(obj.R)] = i
            states.append({"state": _numpy_state(obj.R.get_state(legacy=False))})
    return states


def _restore_transform_states(objects: list[Randomizable], states: list[dict[str, Any]]) -> None:
    claimed: set[int] = set()
    for obj, saved in zip(objects, states):
        if "same_as" in saved:
            obj.R = objects[saved["same_as"]].R
            continue
        if id(obj.R) in claimed:  # shared here, not when saved (e.g. a sub-transform not yet re-seeded)
            obj.R = np.random.RandomState()
        obj.R.set_state(_numpy_state_back(saved["state"]))
        claimed.add(id(obj.R))


class RandomStates:
    """
    The random number generators of a training run, for an exact resume: torch (CPU and CUDA), numpy's global
    generator, Python's ``random``, and the ``R`` state of every MONAI ``Randomizable`` transform reachable from
    the training data loader (crops, flips, rotations, the random Z subsampling).

    The data loader's shuffling needs nothing more: with ``num_workers=0`` the sampler draws its permutation from
    torch's global generator when an epoch starts, and a ``DistributedSampler`` derives it from its seed and the
    epoch. Under ``torch.distributed`` every rank has its own generators (the multi-GPU config seeds each rank
    differently), so :meth:`state_dict` gathers the states of all ranks (a collective: every rank calls it, as
    Ignite's ``Checkpoint`` does) and :meth:`load_state_dict` gives each rank its own; a checkpoint saved with a
    different number of ranks restores the ranks it has states for.

    Args:
        source: returns the object the transforms are reached from (the trainer's data loader), called at save
            and load time, so the handler can be built before the data loader is known.
    """

    def __init__(self, source: Callable[[], Any]) -> None:
        self.source = source

    def local_state(self) -> dict[str, Any]:
        """The generator states of this process."""
        version, mt_state, gauss = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": _numpy_state(np.random.get_state(legacy=False)),
            "python": {"version": version, "state": list(mt_state), "gauss": gauss},
            "transforms": _transform_states(randomizable_objects(self.source())),
        }

    def load_local_state(self, state: dict[str, Any]) -> None:
        """Restore the generator states of this process from :meth:`local_state`."""
        transforms = randomizable_objects(self.source())
        if len(transforms) != len(state["transforms"]):
            raise ValueError(
                f"the checkpoint holds the states of {len(state['transforms'])} random transforms but the training "
                f"pipeline has {len(transforms)}: it was saved with different training transforms."
            )
        torch.set_rng_state(state["torch"].cpu())
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
        np.random.set_state(_numpy_state_back(state["numpy"]))
        python = state["python"]
        random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
        _restore_transform_states(transforms, state["transforms"])

    def state_dict(self) -> dict[str, Any]:
        """``{"ranks": [state of rank 0, state of rank 1, ...]}`` (one entry without torch.distributed)."""
        local = self.local_state()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            ranks: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(ranks, local)
            return {"ranks": ranks}
        return {"ranks": [local]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore this rank's states (a rank the checkpoint has no state for keeps its own seeding)."""
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if rank < len(state_dict["ranks"]):
            self.load_local_state(state_dict["ranks"][rank])


class BestMetricState:
    """
    The best key metric of an evaluator and the epoch it was reached at (``engine.state.best_metric`` /
    ``best_metric_epoch``, which MONAI's workflows update after each validation). Restoring it on resume makes the
    first validation after the resume compare against the best metric of the interrupted run, so a worse model
    does not replace ``model.pt`` (see :class:`~sparsessp_monai.handlers.BestModelSaver`, which saves exactly when
    this state improves).
    """

    def __init__(self, evaluator: Engine) -> None:
        self.evaluator = evaluator

    def state_dict(self) -> dict[str, float | int]:
        """``{"best_metric": float, "best_metric_epoch": int}``."""
        state = self.evaluator.state
        return {"best_metric": float(state.best_metric), "best_metric_epoch": int(state.best_metric_epoch)}

    def load_state_dict(self, state_dict: dict[str, float | int]) -> None:
        """Set the evaluator's best metric and its epoch."""
        self.evaluator.state.best_metric = float(state_dict["best_metric"])
        self.evaluator.state.best_metric_epoch = int(state_dict["best_metric_epoch"])


def follow_cosine_length(scheduler: CosineAnnealingLR, t_max: int) -> bool:
    """Make a restored cosine schedule follow a new length ``t_max`` (a resume with a larger ``max_epochs``).

    The restored progress (``last_epoch``) is kept and the learning rate becomes the closed-form cosine value of the
    new length at that progress: from here on the run follows exactly the schedule a run configured with
    ``t_max`` from the start would have, down to ``eta_min`` at the new last epoch. Without this, the checkpoint's
    ``T_max`` is kept and the cosine climbs back towards the base learning rate past the old end (a restart).
    Returns whether anything changed.
    """
    if scheduler.T_max == t_max:
        return False
    state = scheduler.state_dict()
    lrs = [
        scheduler.eta_min + (base - scheduler.eta_min) * (1 + math.cos(math.pi * scheduler.last_epoch / t_max)) / 2
        for base in scheduler.base_lrs
    ]
    scheduler.load_state_dict({**state, "T_max": t_max, "_last_lr": lrs})
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    return True
