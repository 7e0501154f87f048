"""
Export a trained SparseSSP bundle network to ONNX and check it against eager PyTorch with onnxruntime.

Without ``--structure`` the bundle's ``network_def`` itself is exported: inputs ``image`` ``(B, 1, D, H, W)`` (the
stack already resampled to the full Z grid) and ``task`` ``(B,)`` int64 structure ids, output ``pred``. With
``--structure`` the bioimage.io form is exported (:class:`sparsessp_monai.export.SparseStackPredictor`): input
``sparse_stack`` ``(B, 1, D / ratio, H, W)``, the structure fixed, output ``prediction`` ``(B, 1, D, H, W)``.
``B``, ``H`` and ``W`` are dynamic (multiples of the network's ``2 ** (levels - 1)``).

Example::

    python scripts/export_onnx.py --weights bundle/models/model.pt --out dist/sparsessp.onnx
    python scripts/export_onnx.py --weights bundle/models/model.pt --structure dna --out dist/dna_r4.onnx

Prints the largest absolute difference to eager PyTorch on a random input; exits 1 above ``--atol``. Needs the
``onnx`` extra: ``pip install -e ".[onnx]"``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from sparsessp_monai.export import (
    bundle_predictor,
    export_network_onnx,
    export_predictor_onnx,
    load_bundle_network,
    onnx_max_abs_diff,
)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "bundle" / "configs" / "train.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, type=Path, help="network checkpoint (the bundle's models/model.pt)")
    parser.add_argument("--out", required=True, type=Path, help="ONNX file to write")
    parser.add_argument("--structure", default=None, help="export the sparse-stack model of this structure")
    parser.add_argument("--ratio", type=int, default=None, help="acquisition ratio (default: the config's ratio)")
    parser.add_argument("--mode", default=None, help="prefix resampling mode (default: the config's prefix_mode)")
    parser.add_argument("--config_file", nargs="+", default=[str(DEFAULT_CONFIG)],
                        help="bundle config(s) with network_def, merged in order (default: bundle/configs/train.json)")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest accepted difference to eager PyTorch")
    args = parser.parse_args(argv)
    try:
        network, config = load_bundle_network(args.config_file, args.weights, args.ratio)
        size = 4 * int(network.multiple)
        if args.structure is None:
            export_network_onnx(network, args.out, size, size)
            x = torch.randn(2, network.in_channels, network.in_depth, size + network.multiple, size)
            inputs = (x, torch.tensor([0, network.num_tasks - 1])) if network.num_tasks else (x,)
            module = network
        else:
            ratio = int(config.get_parsed_content("ratio")) if args.ratio is None else args.ratio
            module = bundle_predictor(network, config, args.structure, ratio, args.mode)
            export_predictor_onnx(module, args.out, size, size, network.in_channels)
            inputs = (torch.randn(2, network.in_channels, module.in_depth, size + network.multiple, size),)
        diff = onnx_max_abs_diff(args.out, module, inputs)
    except (ValueError, RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}; onnxruntime vs eager PyTorch: max abs difference {diff:.3g}")
    return 0 if diff <= args.atol else 1


if __name__ == "__main__":
    sys.exit(main())
