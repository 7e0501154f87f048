"""
Inferers: run any MONAI inferer with the network under ``torch.autocast`` (bf16 on CPU or CUDA), average it over
mirrored copies of the input (test-time flips), and Gaussian sliding windows one slab at a time for volumes too
large for a full-size weight map.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Callable

import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers import Inferer, SlidingWindowInferer
from monai.utils import (
    BlendMode,
    convert_to_dst_type,
    convert_to_tensor,
    ensure_tuple_rep,
    look_up_option,
    optional_import,
)

from sparsessp_monai.engines.bundle_utils import as_bool

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["AutocastInferer", "FlipAveragingInferer", "SlabSlidingWindowInferer", "window_starts"]


class AutocastInferer(Inferer):
    """
    Wrap a MONAI inferer so that every network call runs under ``torch.autocast`` and returns float32.

    Only the network's forward is autocast: a sliding-window inferer still stitches windows in float32, and losses
    and metrics see float32 predictions. On CPUs with AMX, bf16 autocast runs convolutions several times faster.

    Args:
        inferer: the inferer to wrap (``SimpleInferer``, ``SlidingWindowInferer``, ...).
        enabled: ``False`` makes this a pass-through, so configs can switch precision with one flag.
        dtype: the autocast dtype, ``torch.bfloat16`` by default (``"bfloat16"`` / ``"float16"`` strings work too).
    """

    def __init__(self, inferer: Inferer, enabled: bool = True, dtype: torch.dtype | str = torch.bfloat16) -> None:
        self.inferer = inferer
        self.enabled = as_bool(enabled)
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return self.inferer(inputs, network, *args, **kwargs)

        def autocast_forward(x: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
            with torch.autocast(device_type=x.device.type, dtype=self.dtype):
                return network(x, *a, **k).float()

        return self.inferer(inputs, autocast_forward, *args, **kwargs)


class FlipAveragingInferer(Inferer):
    """
    Test-time flips: run a MONAI inferer on the input and on its mirror images along every subset of
    ``spatial_axes``, flip each prediction back and return their mean (``2 ** len(spatial_axes)`` passes).

    A model trained with random flips along those axes is nearly, not exactly, equivariant to them; the mean of the
    mirrored predictions keeps what they agree on and averages out what depends on the orientation, as nnU-Net's
    mirroring does at inference. Use only axes along which flipped data is as plausible as the original (all three
    for CT; not the depth axis of brightfield stacks, whose defocus is not symmetric about focus).

    Args:
        inferer: the inferer to wrap (``SlidingWindowInferer``, :class:`AutocastInferer`, ...).
        spatial_axes: spatial axes to mirror (0 = the first spatial axis of ``(B, C, *spatial)``); empty makes this a
            pass-through.

    Shapes: whatever the wrapped inferer takes and returns; the prediction has the input's spatial shape.
    """

    def __init__(self, inferer: Inferer, spatial_axes: Sequence[int] = ()) -> None:
        self.inferer = inferer
        axes = [int(a) for a in spatial_axes]
        if len(set(axes)) != len(axes) or any(a < 0 for a in axes):
            raise ValueError(f"spatial_axes must be distinct non-negative axes, got {list(spatial_axes)}.")
        self.spatial_axes = tuple(axes)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.spatial_axes and max(self.spatial_axes) >= inputs.ndim - 2:  # before any pass is paid for
            raise ValueError(f"spatial_axes {list(self.spatial_axes)} for an input of shape {tuple(inputs.shape)}.")
        first = self.inferer(inputs, network, *args, **kwargs)
        if not self.spatial_axes:
            return first
        total = convert_to_tensor(first, dtype=torch.float32, track_meta=False).clone()
        count = 1
        for r in range(1, len(self.spatial_axes) + 1):
            for axes in itertools.combinations(self.spatial_axes, r):
                dims = [2 + a for a in axes]
                pred = self.inferer(torch.flip(inputs, dims), network, *args, **kwargs)
                pred = convert_to_tensor(pred, dtype=torch.float32, track_meta=False)
                total += torch.flip(pred, dims).to(total.device)
                count += 1
        return convert_to_dst_type(total / count, dst=first)[0]


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Window starts along one axis: MONAI's ``dense_patch_slices`` with the scan interval its sliding windows use
    (``int(roi * (1 - overlap))``, at least 1; the last window flush with the end)."""
    if roi >= size:
        return [0]
    interval = max(int(roi * (1 - overlap)), 1)
    return sorted({s[0][0] for s in dense_patch_slices((size,), (roi,), (interval,), return_slice=False)})


def _finalise(out: torch.Tensor, ring: torch.Tensor, start: int, stop: int) -> int:
    """Divide output slices ``[start, stop)`` by their weight sums (ring entry ``k % depth``) in place, one slice at a
    time (no temporaries), and clear those ring entries for the slices one window depth further on."""
    depth = ring.shape[0]
    for k in range(start, stop):
        out[:, :, k] /= ring[k % depth]
        ring[k % depth] = 0
    return stop


class SlabSlidingWindowInferer(Inferer):
    """
    Sliding-window inference with MONAI's windows and weights (:class:`~monai.inferers.SlidingWindowInferer`: the
    same window positions, importance map and weighted average, so the same result up to float rounding and the
    same compute), stitched one slab of depth at a time. MONAI keeps a weight sum the size of the whole output
    (one more output-sized volume: 512 MiB for 128 x 1024 x 1024 in float32); here windows are visited depth-major
    and the weight sum is a ring of one window depth: once the windows starting at depth ``s`` are reached, every
    slice above ``s`` is final and is divided in place.

    Args:
        roi_size: window size ``(D, H, W)``.
        sw_batch_size: windows per network call (within one depth position).
        overlap: overlap of neighbouring windows, one value or one per axis, as in MONAI.
        mode: window weight, ``"gaussian"`` or ``"constant"``, as in MONAI.
        sigma_scale: Gaussian sigma as a fraction of the window size, one value or one per axis, as in MONAI.
        sw_device: device of the network calls (default: the input's).
        device: device of the stitched output (default: the input's).
        progress: a progress bar over the windows (needs tqdm).

    Shapes: ``inputs`` ``(B, C, D, H, W)`` with ``H, W`` at least the window's (smaller inputs, or inputs no deeper
    than one window, go to MONAI's inferer as they are); the network maps ``(b, C, d, h, w)`` windows to
    ``(b, C', d, h, w)``; returns ``(B, C', D, H, W)``, a MetaTensor with the input's meta when the input is one.
    """

    def __init__(
        self,
        roi_size: Sequence[int],
        sw_batch_size: int = 1,
        overlap: Sequence[float] | float = 0.25,
        mode: str = "gaussian",
        sigma_scale: Sequence[float] | float = 0.125,
        sw_device: torch.device | str | None = None,
        device: torch.device | str | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__()
        self.mode = look_up_option(mode, BlendMode)
        self.roi_size = tuple(int(r) for r in roi_size)
        if len(self.roi_size) != 3:
            raise ValueError(f"roi_size must have 3 entries (D, H, W), got {roi_size}.")
        self.overlap = tuple(float(o) for o in ensure_tuple_rep(overlap, 3))
        if not all(0 <= o < 1 for o in self.overlap):
            raise ValueError(f"overlap must be in [0, 1), got {overlap}.")
        self.sigma_scale = tuple(float(s) for s in ensure_tuple_rep(sigma_scale, 3))
        self.sw_batch_size = max(int(sw_batch_size), 1)
        self.sw_device, self.device = sw_device, device
        self.progress = as_bool(progress)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        if inputs.ndim != 5:
            raise ValueError(f"inputs must be (B, C, D, H, W), got {tuple(inputs.shape)}.")
        size = tuple(int(n) for n in inputs.shape[2:])
        if size[0] <= self.roi_size[0] or any(n < r for n, r in zip(size[1:], self.roi_size[1:])):
            # one depth position, or padding needed: nothing to save, MONAI's inferer as it is
            monai_inferer = SlidingWindowInferer(
                roi_size=list(self.roi_size),
                sw_batch_size=self.sw_batch_size,
                overlap=list(self.overlap),
                mode=self.mode,
                sigma_scale=list(self.sigma_scale),
                sw_device=self.sw_device,
                device=self.device,
                progress=self.progress,
            )
            return monai_inferer(inputs, network, *args, **kwargs)
        sw_device = torch.device(self.sw_device) if self.sw_device is not None else inputs.device
        device = torch.device(self.device) if self.device is not None else inputs.device
        raw = inputs.as_tensor() if hasattr(inputs, "as_tensor") else inputs
        roi_d, roi_h, roi_w = self.roi_size
        starts = [window_starts(n, r, o) for n, r, o in zip(size, self.roi_size, self.overlap)]
        plane = [(y, x) for y in starts[1] for x in starts[2]]
        weight = compute_importance_map(
            self.roi_size, mode=self.mode, sigma_scale=self.sigma_scale, device=device, dtype=torch.float32
        )
        out = ring = None
        done = 0  # slices [0, done) of out are final
        # one bar over all windows, as MONAI's inferer shows it
        bar = tqdm(total=len(starts[0]) * len(plane)) if self.progress and has_tqdm else None
        nb = raw.shape[0]
        for z in starts[0]:
            if out is not None:  # no later window reaches above z: those slices are final
                done = _finalise(out, ring, done, z)
            # the ring holds slice k at k % roi_d: this depth's window slices are at most two contiguous runs
            first = z % roi_d
            split = roi_d - first
            for i in range(0, len(plane), self.sw_batch_size):
                batch = plane[i : i + self.sw_batch_size]
                windows = torch.cat([raw[:, :, z : z + roi_d, y : y + roi_h, x : x + roi_w] for y, x in batch]).to(
                    sw_device
                )
                pred = network(windows, *args, **kwargs)
                if bar is not None:
                    bar.update(len(batch))
                pred = (pred.as_tensor() if hasattr(pred, "as_tensor") else pred).to(device, torch.float32)
                if pred.shape[2:] != windows.shape[2:]:
                    raise ValueError(
                        f"the network maps {tuple(windows.shape[2:])} windows to {tuple(pred.shape[2:])}: "
                        "this inferer needs the output grid of the input (use MONAI's SlidingWindowInferer)."
                    )
                if out is None:
                    out = torch.zeros((raw.shape[0], pred.shape[1], *size), dtype=torch.float32, device=device)
                    ring = torch.zeros((roi_d, *size[1:]), dtype=torch.float32, device=device)
                for j, (y, x) in enumerate(batch):
                    out[:, :, z : z + roi_d, y : y + roi_h, x : x + roi_w] += pred[j * nb : (j + 1) * nb] * weight
                    ring[first:, y : y + roi_h, x : x + roi_w] += weight[:split]
                    ring[: roi_d - split, y : y + roi_h, x : x + roi_w] += weight[split:]
        if bar is not None:
            bar.close()
        _finalise(out, ring, done, size[0])
        return convert_to_dst_type(out, inputs, device=device)[0]
