"""Benchmarks that write markdown tables to benchmarks/. Targets live here, not in tests.

    python scripts/benchmark.py label-efficiency [--checkpoint PATH]

label-efficiency: the label-budget sweep for one checkpoint on Fashion-MNIST (7 budgets x 3 seeds,
linear probe with its weight-decay selection, and kNN) with the features cached; target <= 60 s on
2 CPU cores (issue 5). Feature extraction (once per checkpoint) is timed apart.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from ssl_lightning import load_encoder
from ssl_lightning.data import FashionMNISTDataModule
from ssl_lightning.evaluation.features import cached_features
from ssl_lightning.evaluation.label_efficiency import DEFAULT_BUDGETS, Split, evaluate_features

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "benchmarks"


def hardware() -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU only, {os.cpu_count()} cores ({platform.processor() or platform.machine()})"
    return f"{device}; torch {torch.__version__}; {time.strftime('%Y-%m-%d')}"


def label_efficiency(checkpoint: Path, seeds: int = 3) -> str:
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    data = FashionMNISTDataModule()
    split = Split.from_data(data)
    encoder = load_encoder(checkpoint)
    parts = {"pool": split.pool, "val": split.val, "test": split.test}
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        for part, (images, _) in parts.items():
            cached_features(encoder, images, "FashionMNIST", part, cache)
        extract_s = time.perf_counter() - start
        start = time.perf_counter()
        features = {part: cached_features(encoder, images, "FashionMNIST", part, cache) for part, (images, _) in parts.items()}
        load_s = time.perf_counter() - start
    start = time.perf_counter()
    rows = evaluate_features("checkpoint", features, split, DEFAULT_BUDGETS, seeds, [1e-5, 1e-4, 1e-3, 1e-2, 1e-1], 200, 0.1, data.num_classes)
    sweep_s = time.perf_counter() - start
    table = pd.DataFrame([vars(row) for row in rows])
    per_budget = table.groupby(["labels_per_class", "evaluator"], sort=False)["seconds"].sum().unstack()
    lines = [
        "# Label-efficiency sweep on cached features",
        "",
        f"Checkpoint: `{checkpoint.resolve().relative_to(REPO) if checkpoint.resolve().is_relative_to(REPO) else checkpoint}` (encoder {encoder.config['backbone']}, width {encoder.config['width']}, {encoder.out_dim}-d features).",
        f"Hardware: {hardware()}.",
        "Command: `python scripts/benchmark.py label-efficiency`",
        "",
        "| step | seconds |",
        "|---|---:|",
        f"| feature extraction, {sum(len(p[1]) for p in parts.values())} images (once per checkpoint) | {extract_s:.1f} |",
        f"| reading the cached features | {load_s:.2f} |",
        f"| **sweep: {len(DEFAULT_BUDGETS)} budgets x {seeds} seeds, probe + kNN (target <= 60)** | **{sweep_s:.1f}** |",
        "",
        "Per budget (seconds, summed over seeds; 'all' is drawn once):",
        "",
        "| labels per class | linear probe (5 weight decays) | kNN |",
        "|---|---:|---:|",
        *(f"| {budget} | {row['linear probe']:.1f} | {row['kNN']:.1f} |" for budget, row in per_budget.iterrows()),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="benchmark", required=True)
    le = sub.add_parser("label-efficiency", help="the label-budget sweep on cached features")
    le.add_argument("--checkpoint", type=Path, default=REPO / "checkpoints/simclr/version_0/checkpoints/last.ckpt")
    le.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    OUTPUT.mkdir(exist_ok=True)
    report = label_efficiency(args.checkpoint, args.seeds)
    path = OUTPUT / "label_efficiency.md"
    path.write_text(report)
    print(report)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
