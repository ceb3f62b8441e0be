"""Analyse a finished (or partial) sweep: tables and figures under OUT/analysis/, and OUT/REPORT.md.

    python analysis/analyse.py results/cnn_search-20250101-120000

A smoke sweep's folder takes under a minute on a 2-core CPU, most of it for
the t-SNE maps. `--no-embeddings` leaves those and the feature maps out.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cifar_ray.analysis import analyse_sweep
from cifar_ray.analysis.pipeline import TSNE_SAMPLES


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python analysis/analyse.py", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, metavar="OUT_FOLDER", help="output folder of a sweeps/*.py run (the one that contains sweep.json)")
    parser.add_argument(
        "--tsne-samples", type=int, default=TSNE_SAMPLES, help=f"test images per t-SNE map, stratified (default {TSNE_SAMPLES})"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the t-SNE subset, t-SNE and the importance forest (default 0)")
    parser.add_argument("--no-embeddings", action="store_true", help="skip the t-SNE maps and feature maps (no model files or data needed)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return parser


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.tsne_samples < 10:
        print(f"error: --tsne-samples must be at least 10, got {args.tsne_samples}", file=sys.stderr)
        return 2
    try:
        result = analyse_sweep(args.out, tsne_samples=args.tsne_samples, seed=args.seed, embeddings=not args.no_embeddings)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    print(f"\nreport: {result['report']}")
    print(f"{len(result['tables'])} tables and {len(result['figures'])} figures under {args.out / 'analysis'}")
    for check in result["ray_check"]:
        print(f"Ray check, {check['stage']}: {check['outcome']} ({check['note']})")
    if result["skipped"]:
        print(f"skipped {len(result['skipped'])}:")
        for skip in result["skipped"]:
            print(f"  {skip['item']}: {skip['reason']}")
    print(f"finished in {result['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
