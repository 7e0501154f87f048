"""
Export a trained SparseSSP bundle model for one structure as a bioimage.io model package (spec 0.5).

The network is built from the bundle config's ``network_def`` (``bundle/configs/train.json`` by default) and loaded
from ``--weights``; the package's model takes the SPARSE stack of acquired slices ``(batch, channel, z, y, x)``
with ``z = depth / ratio`` and returns the full grid ``z = depth`` (see
:class:`sparsessp_monai.export.SparseStackPredictor`). Written into ``--out`` (replaced whole, published only
once ``bioimageio.core``'s test of the package passed); ``--zip`` also writes ``<out>.zip``.

Example::

    python scripts/export_bioimageio.py --weights bundle/models/model.pt --structure dna --ratio 4 \
        --out dist/dna_r4 --zip
    bioimageio test dist/dna_r4/rdf.yaml

Needs the extras: ``pip install -e ".[bioimageio,onnx]"`` (``--no_onnx`` without the ``onnx`` extra).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import tifffile

from sparsessp_monai.export import bundle_predictor, demo_sparse_stack, export_bioimageio_package, load_bundle_network

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "bundle" / "configs" / "train.json"


def read_sparse_stack(path: Path) -> np.ndarray:
    """A sparse stack ``(Z, Y, X)``, ``(C, Z, Y, X)`` or ``(B, C, Z, Y, X)`` from ``.npy`` or TIFF, as 5-D float32."""
    arr = np.load(path) if path.suffix == ".npy" else tifffile.imread(path)
    arr = np.asarray(arr, dtype=np.float32)
    while arr.ndim < 5:
        arr = arr[None]
    return arr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, type=Path, help="network checkpoint (the bundle's models/model.pt)")
    parser.add_argument("--structure", required=True, help="structure to export (one of the config's structures)")
    parser.add_argument("--ratio", type=int, default=None, help="acquisition ratio (default: the config's ratio)")
    parser.add_argument("--out", required=True, type=Path, help="package folder to write")
    parser.add_argument("--zip", action="store_true", help="also write the zipped package <out>.zip")
    parser.add_argument("--config_file", nargs="+", default=[str(DEFAULT_CONFIG)],
                        help="bundle config(s) with network_def, merged in order (default: bundle/configs/train.json)")
    parser.add_argument("--mode", default=None, help="prefix resampling mode (default: the config's prefix_mode)")
    parser.add_argument("--input", type=Path, default=None,
                        help="test input: a raw sparse stack (.npy or TIFF); default: a synthetic demo stack")
    parser.add_argument("--size", type=int, default=128, help="height and width of the synthetic test input")
    parser.add_argument("--no_onnx", action="store_true", help="TorchScript weights only (no ONNX)")
    parser.add_argument("--skip_test", action="store_true", help="do not run bioimageio.core's test of the package")
    args = parser.parse_args(argv)

    try:
        network, config = load_bundle_network(args.config_file, args.weights, args.ratio)
        ratio = int(config.get_parsed_content("ratio")) if args.ratio is None else args.ratio
        predictor = bundle_predictor(network, config, args.structure, ratio, args.mode)
        step = int(getattr(network, "multiple", 16))
        if args.input is not None:
            test_input = read_sparse_stack(args.input)
        else:
            test_input = demo_sparse_stack(args.structure, predictor.depth, ratio, size=args.size)
        rdf, summary = export_bioimageio_package(
            predictor, args.out, args.structure, REPO / "LICENSE", test_input=test_input, size_step=step,
            with_onnx=not args.no_onnx, zip_path=args.out.with_name(args.out.name + ".zip") if args.zip else None,
            run_test=not args.skip_test,
        )
    except (ValueError, RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {rdf}" + ("" if summary is None else f" (bioimageio.core test: {summary.status})"))
    if args.zip:
        print(f"wrote {args.out.with_name(args.out.name + '.zip')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
