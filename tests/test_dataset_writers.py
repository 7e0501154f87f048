"""Every dataset writer publishes through sparsessp_monai.io.publish: a generation that fails (or is killed) half-way
leaves neither its output folder nor its staging folder, and is_complete stays False for its parameters."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import pytest

# pytest puts tests/ on sys.path (rootdir import mode): the raw AllenCell-like files of the preparation tests
from test_allencell import make_raw_dataset

import sparsessp_monai.io as sio
from sparsessp_monai.ct import write_sparse_nifti
from sparsessp_monai.data import generate_demo_dataset, prepare_allencell, write_sparse_stacks
from sparsessp_monai.data import synthetic_ct as sct
from sparsessp_monai.io import DONE_MARKER, OmeTiffWriter, is_complete

TINY_SHAPE = (8, 16, 16)
CT_SHAPE = (12, 10, 16)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    demo = generate_demo_dataset(root / "demo", num_per_structure=2, shape=TINY_SHAPE, structures=["dna", "actin"])
    ct = Path(sct.generate_ct_dataset(root / "ct", num_train=1, num_val=1, shape=CT_SHAPE))
    make_raw_dataset(root / "raw", {"tom20": 3})
    return {"demo": demo, "ct": ct, "raw": root / "raw"}


def _fail_on_second_call(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, error: BaseException) -> None:
    """Let the first call of ``owner.name`` through and raise ``error`` from the second (half-way through)."""
    real = getattr(owner, name)
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, flaky)


# writer name -> (write(sources, out), what to break, the error the caller then sees)
WRITERS: dict[str, tuple[Callable[[dict[str, Path], Path], Any], Callable[[], tuple[Any, str]], type]] = {
    "demo_dataset": (
        lambda src, out: generate_demo_dataset(out, num_per_structure=2, shape=TINY_SHAPE, structures=["dna"]),
        lambda: (sio, "write_ome_tiff"),
        KeyboardInterrupt,
    ),
    "sparse_stacks": (
        lambda src, out: write_sparse_stacks(src["demo"], out, ratio=2, split="training"),
        # SaveImage reports a failing writer as a RuntimeError
        lambda: (OmeTiffWriter, "write"),
        RuntimeError,
    ),
    "allencell": (
        lambda src, out: prepare_allencell(src["raw"] / "csvs", out, data_root=src["raw"]),
        lambda: (sio, "write_ome_tiff"),
        KeyboardInterrupt,
    ),
    "ct_phantoms": (
        lambda src, out: sct.generate_ct_dataset(out, num_train=1, num_val=1, shape=CT_SHAPE),
        lambda: (sct, "make_ct_phantom"),
        KeyboardInterrupt,
    ),
    "sparse_nifti": (
        lambda src, out: write_sparse_nifti(src["ct"].parent, out, ratio=3),
        lambda: (nib, "save"),
        KeyboardInterrupt,
    ),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_failed_generation_leaves_nothing_behind(
    writer: str, sources: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write, target, error = WRITERS[writer]
    # a finished run: its done-marker holds the parameters that is_complete compares against
    write(sources, tmp_path / "good")
    record = json.loads((tmp_path / "good" / DONE_MARKER).read_text())["record"]
    assert is_complete(tmp_path / "good", record)

    owner, name = target()
    _fail_on_second_call(monkeypatch, owner, name, error("killed") if error is RuntimeError else error())
    out = tmp_path / "out"
    with pytest.raises(error):
        write(sources, out)
    assert not out.exists(), "a failed generation must not leave its output folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good"], "nor its staging folder"
    assert not is_complete(out, record)

    # once the fault is gone the same call publishes a complete folder
    monkeypatch.undo()
    write(sources, out)
    assert is_complete(out, record)
