"""
Checks of DICOM series folders before MONAI reads them.

MONAI's ``LoadImage`` reads a folder as a DICOM series with ``PydicomReader`` (orientation and spacing from the
headers). That reader skips files that are not DICOM, merges slices of different series and stacks slices across a
gap, so a folder with a stray file, two series or a missing slice yields a volume with the wrong geometry.
:func:`check_dicom_series` refuses each of these, reading headers only: every file in the folder must be DICOM, all
slices must belong to one series, have one size and orientation, and sit at evenly spaced positions along the slice
normal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from monai.config import PathLike
from monai.utils import optional_import

from sparsessp_monai.engines.errors import BundleInputError

pydicom, has_pydicom = optional_import("pydicom")

__all__ = ["check_dicom_series", "is_dicom_series_folder"]


def _visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def is_dicom_series_folder(path: PathLike) -> bool:
    """Whether ``path`` is a folder whose visible files include at least one DICOM file."""
    folder = Path(path)
    if not (has_pydicom and folder.is_dir()):
        return False
    return any(pydicom.misc.is_dicom(str(p)) for p in _visible_files(folder))


def check_dicom_series(folder: PathLike, rtol: float = 0.01) -> dict[str, Any]:
    """Check that ``folder`` holds exactly one complete DICOM series; return its slice count and spacing.

    Raises:
        BundleInputError: a file that is not DICOM, slices of several series, slices of different size or
            orientation, a slice without position, or positions that are not evenly spaced (a missing or
            duplicated slice), each naming the folder (and the file or positions concerned).
    """
    folder = Path(folder)
    files = _visible_files(folder)
    if not files:
        raise BundleInputError(f"{folder}: the DICOM series folder is empty.")
    headers = []
    for path in files:
        if not pydicom.misc.is_dicom(str(path)):
            raise BundleInputError(
                f"{folder}: {path.name} is not a DICOM file; a series folder must hold only its slices."
            )
        headers.append(pydicom.dcmread(str(path), stop_before_pixels=True))
    series = sorted({str(getattr(h, "SeriesInstanceUID", "")) for h in headers})
    if len(series) > 1:
        raise BundleInputError(f"{folder}: slices of {len(series)} DICOM series ({', '.join(series[:3])}); give one "
                               "series per folder.")
    sizes = {(int(getattr(h, "Rows", 0)), int(getattr(h, "Columns", 0))) for h in headers}
    if len(sizes) > 1:
        raise BundleInputError(f"{folder}: slices of different sizes {sorted(sizes)}.")
    try:
        orientations = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers])
        positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
    except AttributeError:
        raise BundleInputError(f"{folder}: a slice has no ImagePositionPatient / ImageOrientationPatient.") from None
    if not np.allclose(orientations, orientations[0], atol=1e-4):
        raise BundleInputError(f"{folder}: slices with different orientations.")
    normal = np.cross(orientations[0][:3], orientations[0][3:])
    depth = np.sort(positions @ normal)
    steps = np.diff(depth)
    if len(steps) == 0:
        return {"slices": 1, "spacing": None}
    step = float(np.median(steps))
    if step <= 0 or not np.allclose(steps, step, rtol=rtol, atol=1e-3):
        bad = [f"{depth[i]:.2f}->{depth[i + 1]:.2f} mm" for i in np.flatnonzero(~np.isclose(steps, step, rtol=rtol))]
        raise BundleInputError(f"{folder}: slice positions are not evenly spaced (median step {step:.3f} mm; gaps "
                               f"or duplicates at {', '.join(bad[:4])}): a slice is missing or repeated.")
    return {"slices": len(headers), "spacing": step}
