"""
Checkpoints that survive failures and kills, and an exact resume: atomic writes (the previous file kept until the
new one is complete), unreadable checkpoints skipped, the final checkpoint written only on success, and a resumed
run bit-identical to an uninterrupted one (random states, best metric, learning-rate schedule restored).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, REPO, run_command
from ignite.engine import Engine, Events
from monai.bundle import ConfigWorkflow

from sparsessp_monai.engines.bundle_utils import latest_checkpoint
from sparsessp_monai.handlers import BestModelSaver, ResumableCheckpoint
from sparsessp_monai.handlers.checkpoint import remove_stale_temporaries

# a tiny training (2 structures, 2 training volumes each: 2 iterations per epoch, a tiny network), seconds per epoch
TINY = {
    "structures": ["nucleoli", "dna"],
    "demo#num_per_structure": 4,
    "demo#shape": [32, 64, 64],
    "patch_size": [32, 32, 32],
    "val_roi_size": [32, 64, 64],
    "samples_per_volume": 2,
    "batch_size": 2,
    "val_interval": 1,
    "network_def#features_3d": [4, 8, 8, 16],
    "network_def#features_2d": [8, 16, 16, 32],
}


class Interrupt(RuntimeError):
    """Raised by a test handler to interrupt a training run."""


def _toy_trainer() -> tuple[Engine, torch.nn.Module, torch.optim.Optimizer]:
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    def step(engine: Engine, batch: torch.Tensor) -> float:
        opt.zero_grad()
        loss = net(batch).pow(2).mean()
        loss.backward()
        opt.step()
        return loss.item()

    engine = Engine(step)
    engine.data_loader = [torch.randn(4, 2) for _ in range(3)]
    return engine, net, opt


def _fail(engine: Engine) -> None:
    raise Interrupt(f"injected failure at epoch {engine.state.epoch}, iteration {engine.state.iteration}")


def _run_toy(
    save_dir: Path, epochs: int, resume: bool = False, fail_at: Events | None = None, on: dict | None = None
) -> torch.nn.Module:
    """A toy trainer with a ResumableCheckpoint; ``fail_at`` raises at that event, ``on`` adds event handlers."""
    engine, net, opt = _toy_trainer()
    ResumableCheckpoint(save_dir, {"model": net, "optimizer": opt}, resume=resume).attach(engine)
    handlers = {**(on or {}), **({fail_at: _fail} if fail_at is not None else {})}
    for event, handler in handlers.items():
        engine.add_event_handler(event, handler)
    engine.run(engine.data_loader, max_epochs=epochs)
    return net


def _half_write_then_fail(obj: object, f: str | os.PathLike, *args: object, **kwargs: object) -> None:
    Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")
    raise OSError(28, "No space left on device")


def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    def break_saving(engine: Engine) -> None:
        nonlocal before
        before = (tmp_path / "checkpoint_epoch=1.pt").read_bytes()
        monkeypatch.setattr(torch, "save", _half_write_then_fail)

    before = b""
    with pytest.raises(OSError, match="No space left"):
        _run_toy(tmp_path, epochs=2, on={Events.EPOCH_STARTED(once=2): break_saving})
    # the epoch-2 checkpoint failed halfway: epoch 1 is intact, nothing else was left (no final checkpoint either)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=1.pt"]
    assert (tmp_path / "checkpoint_epoch=1.pt").read_bytes() == before
    torch.load(tmp_path / "checkpoint_epoch=1.pt", weights_only=True)


def test_a_failed_model_write_keeps_the_previous_model(tmp_path: Path, monkeypatch) -> None:
    net = torch.nn.Linear(2, 1)
    evaluator = Engine(lambda e, b: None)
    evaluator.state.best_metric, evaluator.state.best_metric_epoch, evaluator.state.epoch = 0.5, 1, 1
    saver = BestModelSaver(tmp_path, net)
    saver(evaluator)
    before = (tmp_path / "model.pt").read_bytes()
    evaluator.state.best_metric, evaluator.state.best_metric_epoch, evaluator.state.epoch = 0.6, 2, 2
    monkeypatch.setattr(torch, "save", _half_write_then_fail)
    with pytest.raises(OSError):
        saver(evaluator)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"] and (tmp_path / "model.pt").read_bytes() == before
    # the Model Zoo format: a plain state dict that loads with weights_only
    net.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))


def test_resume_skips_unreadable_newest_checkpoints_with_a_warning(tmp_path: Path, caplog) -> None:
    _run_toy(tmp_path, epochs=1)
    good = tmp_path / "checkpoint_epoch=1.pt"
    blob = good.read_bytes()
    (tmp_path / "checkpoint_epoch=2.pt").write_bytes(blob[: len(blob) // 2])  # truncated
    (tmp_path / "checkpoint_epoch=3.pt").write_bytes(b"")  # killed at creation
    (tmp_path / "checkpoint_epoch=4.pt").write_text("not a torch file")
    for age, name in enumerate(["checkpoint_epoch=4.pt", "checkpoint_epoch=3.pt", "checkpoint_epoch=2.pt"]):
        os.utime(tmp_path / name, ns=(good.stat().st_mtime_ns + 10**9 * (age + 1),) * 2)

    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(tmp_path) == str(good)
    for n, reason in ((2, "truncated or not a torch file"), (3, "0 bytes"), (4, "truncated or not a torch file")):
        assert f"skipping unreadable checkpoint {tmp_path / f'checkpoint_epoch={n}.pt'} ({reason})" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.INFO):
        _run_toy(tmp_path, epochs=2, resume=True)  # resumes from epoch 1 and completes
    assert f"resuming training from {good}" in caplog.text
    final = torch.load(tmp_path / "checkpoint_final.pt", weights_only=True)
    assert final["trainer"]["iteration"] == 2 * 3  # 2 epochs of 3 iterations

    good.unlink(missing_ok=True)  # the resumed run kept only its own newest checkpoint
    for n in (2, 3, 4):
        (tmp_path / f"checkpoint_epoch={n}.pt").write_bytes(b"")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(tmp_path) is None
        _run_toy(tmp_path, epochs=1, resume=True)
    assert "no readable checkpoint" in caplog.text and "training from scratch" in caplog.text


def test_temporaries_of_killed_writes_are_removed_at_the_next_start(tmp_path: Path) -> None:
    dead = tmp_path / ".checkpoint_epoch=2.pt.tmp-999999999-0123abcd"  # above any Linux pid: its writer is gone
    alive = tmp_path / f".model.pt.tmp-{os.getpid()}-0123abcd"  # a write in progress
    other = tmp_path / ".notes.txt.tmp-999999999-0123abcd"
    for path in (dead, alive, other):
        path.write_bytes(b"PK")
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name])
    dead.write_bytes(b"PK")
    _run_toy(tmp_path, epochs=1)  # a training start cleans too (the live writer's file stays)
    assert not dead.exists() and alive.exists()


def test_a_failed_run_keeps_the_previous_final_checkpoint(tmp_path: Path) -> None:
    _run_toy(tmp_path, epochs=2)
    final = (tmp_path / "checkpoint_final.pt").read_bytes()
    with pytest.raises(Interrupt):
        _run_toy(tmp_path, epochs=2, fail_at=Events.ITERATION_COMPLETED(once=1))
    assert (tmp_path / "checkpoint_final.pt").read_bytes() == final
    with pytest.raises(Interrupt):
        _run_toy(tmp_path, epochs=3, resume=True, fail_at=Events.EPOCH_COMPLETED(once=3))
    assert (tmp_path / "checkpoint_final.pt").read_bytes() == final


def _workflow(root: Path, **override: object) -> ConfigWorkflow:
    wf = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"),
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="train",
        bundle_root=str(root),
        **{**TINY, "use_tensorboard": False, "use_progress_bar": False, **override},
    )
    wf.initialize()
    return wf


def _train(root: Path, data: Path, **override: object) -> None:
    """The training workflow of train.json in this process, on the shared demo ``data``; a dict ``on`` maps Ignite
    events to handlers added to the trainer (after the config's handlers)."""
    handlers = override.pop("on", {})
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "data").exists():
        (root / "data").symlink_to(data)
    wf = _workflow(root, **override)
    trainer = wf.parser.get_parsed_content("train#trainer")
    for event, handler in handlers.items():
        trainer.add_event_handler(event, handler)
    try:
        wf.run()
    finally:
        wf.finalize()


def _final_weights(root: Path) -> dict[str, torch.Tensor]:
    return torch.load(root / "models" / "checkpoint_final.pt", map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo data of the tiny configuration, made once (by the config's ``initialize``) and shared."""
    root = tmp_path_factory.mktemp("shared")
    _workflow(root).finalize()
    return root / "data"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Path:
    """Three epochs of the bundle's training, uninterrupted."""
    root = tmp_path_factory.mktemp("uninterrupted")
    _train(root, demo_data, **{"train#trainer#max_epochs": 3})
    return root


def test_resume_after_a_failure_is_bit_identical_to_an_uninterrupted_run(
    uninterrupted: Path, demo_data: Path, tmp_path: Path
) -> None:
    # the failure comes at the end of epoch 2, after its validation and before its checkpoint
    with pytest.raises(RuntimeError) as failure:  # the config expression wraps the handler's exception
        _train(tmp_path, demo_data, **{"train#trainer#max_epochs": 3, "on": {Events.EPOCH_COMPLETED(once=2): _fail}})
    assert isinstance(failure.value.__cause__, Interrupt)
    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir()) == ["checkpoint_epoch=1.pt", "model.pt"]

    _train(tmp_path, demo_data, **{"train#trainer#max_epochs": 3, "resume": True})  # replays epoch 2, then epoch 3
    assert sorted(p.name for p in models.iterdir()) == ["checkpoint_epoch=3.pt", "checkpoint_final.pt", "model.pt"]
    expected, got = _final_weights(uninterrupted), _final_weights(tmp_path)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected), "resumed weights differ from uninterrupted"
    model = torch.load(models / "model.pt", weights_only=True)
    reference = torch.load(uninterrupted / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(reference[k], model[k]) for k in reference)


@pytest.fixture(scope="module")
def extended(
    uninterrupted: Path, demo_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[float]]:
    """Resume the finished 3-epoch run with ``max_epochs`` 6, its saved best metric raised to an unbeatable 0.99."""
    root = tmp_path_factory.mktemp("extended")
    (root / "models").mkdir()
    shutil.copy(uninterrupted / "models" / "model.pt", root / "models" / "model.pt")
    ckpt = torch.load(uninterrupted / "models" / "checkpoint_epoch=3.pt", weights_only=True)
    ckpt["best_metric"] = {"best_metric": 0.99, "best_metric_epoch": 1}  # R2 0.99: no tiny run gets near
    torch.save(ckpt, root / "models" / "checkpoint_epoch=3.pt")

    lrs: list[float] = []

    def record_lr(engine: Engine) -> None:
        lrs.append(engine.optimizer.param_groups[0]["lr"])

    _train(root, demo_data, **{"train#trainer#max_epochs": 6, "resume": True, "on": {Events.EPOCH_STARTED: record_lr}})
    return root, lrs


def test_first_validation_after_resume_keeps_a_better_model(uninterrupted: Path, extended) -> None:
    root, _ = extended
    assert (root / "models" / "model.pt").read_bytes() == (uninterrupted / "models" / "model.pt").read_bytes()
    final = torch.load(root / "models" / "checkpoint_final.pt", weights_only=True)
    assert final["best_metric"] == {"best_metric": 0.99, "best_metric_epoch": 1}


def test_extending_max_epochs_continues_the_cosine_schedule(extended) -> None:
    root, lrs = extended
    from monai.bundle import ConfigParser

    base = float(ConfigParser.load_config_file(str(CONFIGS / "train.json"))["learning_rate"])  # the config's own
    eta_min, t_max = base * 0.05, 6
    expected = [eta_min + (base - eta_min) * (1 + math.cos(math.pi * t / t_max)) / 2 for t in (3, 4, 5)]
    assert lrs == pytest.approx(expected, rel=1e-9), "the lr of epochs 4..6 follows the cosine of length 6"
    assert lrs[0] > lrs[1] > lrs[2] > eta_min  # no restart towards the base learning rate
    scheduler = torch.load(root / "models" / "checkpoint_final.pt", weights_only=True)["lr_scheduler"]
    assert scheduler["T_max"] == 6 and scheduler["last_epoch"] == 6
    assert scheduler["_last_lr"][0] == pytest.approx(eta_min, rel=1e-9)


def test_check_kill_resume_script_two_trials(tmp_path: Path) -> None:
    proc = run_command(
        [sys.executable, "scripts/check_kill_resume.py", "--trials", "2", "--epochs", "2", "--work_dir", str(tmp_path)],
        timeout=600,
        env={"PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "trials: 2" in proc.stdout and "mismatches: 0" in proc.stdout and "failures: 0" in proc.stdout
