"""
Build the self-contained MONAI Model Zoo bundle from the development bundle and the installed package.

Train and evaluate first (the metrics of the shipped weights come from the evaluation's CSV)::

    python -m monai.bundle run training --config_file bundle/configs/train.json
    python -m monai.bundle run evaluating --config_file "['bundle/configs/train.json','bundle/configs/evaluate.json']"
    python scripts/export_zoo_bundle.py --out /path/to/model-zoo/models [--weights_url URL]

The bundle is written to ``OUT/brightfield_sparse_z_fluorescence_prediction`` (``--name`` to change it). Without
``--weights_url`` the weights are marked as not hosted yet (empty URL in ``large_files.yml``, said in the docs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sparsessp_monai.engines.zoo_export import ZOO_BUNDLE_NAME, export_zoo_bundle

BUNDLE = Path(__file__).resolve().parent.parent / "bundle"


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, export, print the bundle folder; 2 with a one-line error for a missing input."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="parent folder of the exported bundle (e.g. model-zoo/models)")
    parser.add_argument("--weights", default=str(BUNDLE / "models" / "model.pt"), help="state dict to ship")
    parser.add_argument(
        "--metrics",
        default=str(BUNDLE / "eval" / "metrics_per_structure.csv"),
        help="metrics_per_structure.csv of these weights (written by the evaluate config)",
    )
    parser.add_argument("--weights_url", default=None, help="public download URL of the weights, once hosted")
    parser.add_argument("--name", default=ZOO_BUNDLE_NAME, help="bundle folder name")
    parser.add_argument("--bundle", default=str(BUNDLE), help="development bundle to export")
    parser.add_argument(
        "--protocol",
        default="validation split of the training data, evaluate.json",
        help="how the metrics were measured (for the docs and eval_metrics)",
    )
    args = parser.parse_args(argv)
    try:
        out = export_zoo_bundle(
            args.out, args.bundle, args.weights, args.metrics, args.weights_url, args.name, args.protocol
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    if not args.weights_url:
        print("note: no --weights_url: large_files.yml has an empty url (weights not hosted yet).", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
