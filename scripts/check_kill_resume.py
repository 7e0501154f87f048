"""
Kill -9 a short bundle training at random moments and check that ``--resume true`` always recovers exactly.

One uninterrupted run of a tiny training (the bundle's ``train.json`` with small overrides) gives the reference.
Then each trial starts the same command in a fresh bundle root, kills it with SIGKILL and runs it again with
``--resume true`` to the end. Even trials kill at a random moment of the run (uniform over the reference run's
wall time, so some land before any checkpoint exists); odd trials kill the instant the k-th checkpoint or
``model.pt`` write has begun (a temporary file has appeared), k random. After the kill and after the resume:

- every ``*.pt`` in ``models/`` loads with ``torch.load(weights_only=True)`` (none unreadable), and a kind of file
  seen before the kill (``model.pt``, an epoch checkpoint, the final checkpoint) is still there (none missing);
- the resumed run exits 0, leaves no temporary file, and its ``checkpoint_final.pt`` weights and ``model.pt``
  equal the reference run's bit for bit (``torch.equal`` on every tensor).

Prints one line per trial and a summary line, and exits non-zero on any failure::

    python scripts/check_kill_resume.py --trials 50
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "bundle" / "configs" / "train.json")

# a tiny training (2 structures x 2 training volumes: 2 iterations an epoch, a tiny network), same code paths
TINY = {
    "structures": "['nucleoli','dna']",
    "demo#num_per_structure": "4",
    "demo#shape": "[32,64,64]",
    "patch_size": "[32,32,32]",
    "val_roi_size": "[32,64,64]",
    "samples_per_volume": "2",
    "batch_size": "2",
    "val_interval": "1",
    "ckpt_interval": "1",
    "network_def#features_3d": "[4,8,8,16]",
    "network_def#features_2d": "[8,16,16,32]",
    "use_progress_bar": "False",
    "use_tensorboard": "False",
}
POLL_S = 0.001


def command(root: Path, epochs: int, resume: bool, run_id: str = "training") -> list[str]:
    """The user's training command into bundle root ``root`` (``run_id`` ``prepare_data``: only make the data)."""
    return [
        sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", TRAIN, "--bundle_root", str(root),
        "--train#trainer#max_epochs", str(epochs), "--resume", str(resume).lower(),
        *(arg for key, value in TINY.items() for arg in (f"--{key}", value)),
    ]  # fmt: skip


def environment() -> dict[str, str]:
    # the same thread count for every run: CPU results are bit-identical only for equal thread counts
    return {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}


def temporaries(models: Path) -> list[str]:
    """Hidden temporary files of writes in progress (or killed) in ``models``."""
    try:
        return sorted(e.name for e in os.scandir(models) if e.name.startswith(".") and ".tmp-" in e.name)
    except FileNotFoundError:
        return []


def kinds(names: list[str] | set[str]) -> set[str]:
    """The kinds of checkpoint files among ``names``: model, epoch, final."""
    found = set()
    for name in names:
        if name == "model.pt":
            found.add("model")
        elif name.startswith("checkpoint_epoch="):
            found.add("epoch")
        elif name == "checkpoint_final.pt":
            found.add("final")
    return found


def integrity(models: Path, seen: set[str]) -> list[str]:
    """Problems with the checkpoint files of ``models``: unreadable ones, and kinds in ``seen`` now missing."""
    problems = []
    present = sorted(p.name for p in models.glob("*.pt")) if models.is_dir() else []
    for name in present:
        try:
            torch.load(models / name, map_location="cpu", weights_only=True)
        except Exception as err:  # any failure to load is a lost checkpoint
            problems.append(f"unreadable {name} ({type(err).__name__})")
    problems += [f"missing {kind} file" for kind in sorted(kinds(seen) - kinds(present))]
    return problems


def killed_run(root: Path, epochs: int, rng: random.Random, reference_s: float, trial: int) -> dict:
    """Start the training and SIGKILL it: at a random moment (even trials) or at a random write (odd trials)."""
    models = root / "models"
    at_write = trial % 2 == 1
    deadline = rng.uniform(0.0, reference_s)
    nth_write = rng.randint(1, 2 * epochs + 1)  # epoch checkpoints, model.pt updates, the final checkpoint
    seen: set[str] = set()
    writes, active = 0, set()
    proc = subprocess.Popen(
        command(root, epochs, resume=False), env=environment(), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    start = time.monotonic()
    killed = False
    while proc.poll() is None:
        tmp = set(temporaries(models))
        writes += len(tmp - active)
        active = tmp
        if models.is_dir():
            seen |= {e.name for e in os.scandir(models) if not e.name.startswith(".")}
        if (at_write and writes >= nth_write) or (not at_write and time.monotonic() - start >= deadline):
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(POLL_S)
    proc.wait()
    left = temporaries(models)
    return {
        "killed": killed,
        "at": time.monotonic() - start,
        "during_write": killed and bool(left),
        "problems": integrity(models, seen),
    }


def weights_equal(a: Path, b: Path, key: str | None = None) -> bool:
    """Whether two checkpoint files hold bit-identical tensors (of entry ``key`` if given)."""
    x = torch.load(a, map_location="cpu", weights_only=True)
    y = torch.load(b, map_location="cpu", weights_only=True)
    if key is not None:
        x, y = x[key], y[key]
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--work_dir", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    args = parser.parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="kill_resume_"))
    work.mkdir(parents=True, exist_ok=True)

    reference = work / "reference"
    # the demo data first (the config's initialize makes it), so that the reference time is the training's alone
    proc = subprocess.run(command(reference, args.epochs, False, "prepare_data"), env=environment(),
                          capture_output=True, text=True, check=False)  # fmt: skip
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        print("error: making the demo data failed")
        return 2
    start = time.monotonic()
    proc = subprocess.run(command(reference, args.epochs, resume=False), env=environment(), capture_output=True,
                          text=True, check=False)  # fmt: skip
    reference_s = time.monotonic() - start
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        print("error: the uninterrupted reference run failed")
        return 2
    print(f"reference: {args.epochs} epochs in {reference_s:.1f} s ({work})", flush=True)

    rng = random.Random(args.seed)
    totals = {"killed": 0, "during_write": 0, "unreadable_or_missing": 0, "mismatches": 0, "failures": 0}
    for trial in range(args.trials):
        root = work / f"trial_{trial:03d}"
        (root / "data").parent.mkdir(parents=True, exist_ok=True)
        (root / "data").symlink_to(reference / "data")  # the same demo data, made once by the reference run
        kill = killed_run(root, args.epochs, rng, reference_s, trial)
        proc = subprocess.run(command(root, args.epochs, resume=True), env=environment(), capture_output=True,
                              text=True, check=False)  # fmt: skip
        models = root / "models"
        problems = list(kill["problems"])
        failed = proc.returncode != 0
        mismatch = False
        if not failed:
            problems += integrity(models, {"model.pt", "checkpoint_final.pt", "checkpoint_epoch=1.pt"})
            problems += [f"left temporary {name}" for name in temporaries(models)]
            mismatch = not (
                weights_equal(models / "checkpoint_final.pt", reference / "models" / "checkpoint_final.pt", "model")
                and weights_equal(models / "model.pt", reference / "models" / "model.pt")
            )
        totals["killed"] += kill["killed"]
        totals["during_write"] += kill["during_write"]
        totals["unreadable_or_missing"] += bool(problems)
        totals["mismatches"] += mismatch
        totals["failures"] += failed
        how = "at a write" if trial % 2 else "at random"
        where = "during a write" if kill["during_write"] else "not during a write"
        state = "killed" if kill["killed"] else "finished before the kill"
        verdict = f"FAILED (resume exited {proc.returncode})" if failed else ("MISMATCH" if mismatch else "ok")
        print(f"trial {trial}: {state} {how} after {kill['at']:.2f} s ({where}); resume {verdict}"
              + (f"; problems: {problems}" if problems else ""), flush=True)  # fmt: skip
        if failed:
            print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
    print(
        f"trials: {args.trials}, killed: {totals['killed']}, kills during a checkpoint write: "
        f"{totals['during_write']}, unreadable or missing: {totals['unreadable_or_missing']}, "
        f"mismatches: {totals['mismatches']}, failures: {totals['failures']}"
    )
    return 1 if totals["unreadable_or_missing"] or totals["mismatches"] or totals["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
