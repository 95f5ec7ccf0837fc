"""Benchmarks that write tables to benchmarks/ (or --out). Targets live here, not in tests.

    python scripts/benchmark.py training [--quick] [--out DIR] [--device cpu|cuda] [--batch-size N] ...
    python scripts/benchmark.py label-efficiency [--checkpoint PATH]
    python scripts/benchmark.py time-to-accuracy [--config YAML] [--minutes 10] [fit overrides ...]
    python scripts/benchmark.py data [--images 400] [--memory-images 5000] [--skip-memory]

training: for each method, with the same backbone, batch size and image size, in a fresh process
each (so that peak memory is the method's own):
  (a) pipeline images/s: Lightning's loop with the in-memory loader, views on the device, forward,
      backward and optimizer step (no logger, checkpoints or progress bar);
  (b) model-only images/s: forward, backward and optimizer step on views made in advance;
  (c) for SimCLR, the same model fed by lightly's standard pipeline (SimCLRTransform in DataLoader
      workers, NTXentLoss): the peer, installed with the `bench` extra;
  peak memory: RSS on CPU (the main process plus its largest worker), max_memory_allocated on GPU.
Writes DIR/benchmark.csv and DIR/benchmark.md. Target (issue 7): (a) >= 0.9 x (b) for every method.

label-efficiency: the label-budget sweep for one checkpoint on Fashion-MNIST (7 budgets x 3 seeds,
linear probe with its weight-decay selection, and kNN) with the features cached; target <= 60 s on
2 CPU cores (issue 5). Feature extraction (once per checkpoint) is timed apart.

time-to-accuracy: `ssl-lightning fit` with a wall-clock limit (Lightning's max_time), then the linear
probe on all the labels of the fit's training images (its data module, read back from the checkpoint:
the same folder and split), scored on the test split; the online kNN and probe accuracy after each
epoch, against minutes of training, from the run's TensorBoard events. Writes DIR/results.md,
DIR/results.csv (the same numbers) and DIR/curve.csv. Target (issue 7):
>= 90% within 10 minutes on an H100. Choose --trainer.max_epochs so that the schedule ends inside
the limit (a run cut by the limit ends with its learning rate still high).

data: decoding (Pillow and torchvision.io), streaming loaders with 0/1/2 workers next to the model
step, and peak memory of a streaming fit as the dataset grows tenfold (scripts/data_benchmark.py).
Target: streamed peak memory flat (within 10%) for 10 x the images.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

from ssl_lightning import load_encoder
from ssl_lightning.data import FashionMNISTDataModule
from ssl_lightning.evaluation.features import cached_features
from ssl_lightning.evaluation.label_efficiency import DEFAULT_BUDGETS, Split, evaluate_features

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "benchmarks"
CSV_COLUMNS = ["method", "precision", "device", "batch_size", "image_size", "pipeline_images_per_s", "model_only_images_per_s",
               "fit_images_per_s", "peer_images_per_s", "peak_mem_mb", "peer_peak_mem_mb"]  # benchmark.csv


def hardware() -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU only, {os.cpu_count()} cores ({platform.processor() or platform.machine()})"
    return f"{device}; torch {torch.__version__}; {time.strftime('%Y-%m-%d')}"


def label_efficiency(checkpoint: str, seeds: int = 3) -> str:
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    data = FashionMNISTDataModule()
    split = Split.from_data(data)
    encoder = load_encoder(checkpoint)
    parts = split.parts()
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        for part, dataset in parts.items():
            cached_features(encoder, data, dataset, part, cache)
        extract_s = time.perf_counter() - start
        start = time.perf_counter()
        features = {part: cached_features(encoder, data, dataset, part, cache) for part, dataset in parts.items()}
        load_s = time.perf_counter() - start
    start = time.perf_counter()
    rows = evaluate_features("checkpoint", features, split, DEFAULT_BUDGETS, seeds, [1e-5, 1e-4, 1e-3, 1e-2, 1e-1], 200, 0.1, data.num_classes)
    sweep_s = time.perf_counter() - start
    table = pd.DataFrame([vars(row) for row in rows])
    per_budget = table.groupby(["labels_per_class", "evaluator"], sort=False)["seconds"].sum().unstack()
    lines = [
        "# Label-efficiency sweep on cached features",
        "",
        f"Checkpoint: `{checkpoint}` (encoder {encoder.config['backbone']}, width {encoder.config['width']}, {encoder.out_dim}-d features).",
        f"Hardware: {hardware()}.",
        "Command: `python scripts/benchmark.py label-efficiency`",
        "",
        "| step | seconds |",
        "|---|---:|",
        f"| feature extraction, {sum(len(dataset) for dataset in parts.values())} images (once per checkpoint) | {extract_s:.1f} |",
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


def training(args: argparse.Namespace) -> str:
    """Runs every measurement in its own process; writes benchmark.csv and returns the markdown."""
    from training_benchmark import Spec

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    common = dict(device=device, batch_size=args.batch_size, image_size=args.image_size, channels=args.channels,
                  width=args.width, small_images=not args.imagenet_stem, warmup=args.warmup, steps=args.steps,
                  workers=args.workers, channels_last=not args.no_channels_last, compile=args.compile)
    precisions = args.precision or default_precisions(device)
    specs = [Spec(method=m, precision=p, **common) for m in args.methods for p in precisions]
    if "simclr" in args.methods and not args.no_peer:
        specs += [Spec(method="simclr", precision=p, peer=True, **common) for p in precisions]
    rows: dict[tuple[str, str], dict] = {}
    for spec in specs:
        label = f"{spec.method}, {spec.precision}{' (lightly pipeline)' if spec.peer else ''}"
        print(f"measuring {label} ...", flush=True)
        result = subprocess.run([sys.executable, str(Path(__file__).with_name("training_benchmark.py")), json.dumps(asdict(spec))],
                                capture_output=True, text=True)
        if result.returncode:
            raise SystemExit(f"{label} failed:\n{result.stderr[-3000:]}")
        rows.setdefault((spec.method, spec.precision), {}).update(json.loads(result.stdout.strip().splitlines()[-1]))
    table = pd.DataFrame(rows.values())
    for column in ("peer_images_per_s", "peer_peak_mem_mb"):
        if column not in table:
            table[column] = float("nan")
    args.out.mkdir(parents=True, exist_ok=True)
    table[CSV_COLUMNS].to_csv(args.out / "benchmark.csv", index=False, float_format="%.1f")

    first = specs[0]
    stem = "ImageNet stem" if args.imagenet_stem else "small-image stem"
    data = "Fashion-MNIST" if (first.image_size, first.channels) == (28, 1) else f"synthetic {first.channels}-channel images"
    lines = [
        "# Training throughput",
        "",
        f"ResNet-18 (width {first.width}, {stem}), batch {first.batch_size}, {first.image_size}x{first.image_size} {data}, "
        f"{' and '.join(precisions)}, {'channels-last' if first.channels_last else 'NCHW'}{', torch.compile' if first.compile else ''}; "
        f"each method's heads, views and optimizer from its config. {first.steps} timed steps after "
        f"{first.warmup} warm-up steps, each method in a fresh process. Pipeline: Lightning's loop alone (no logger, "
        "progress bar or callbacks); `ssl-lightning fit`: the same steps as the CLI runs the config (TensorBoard, "
        "progress bar, online evaluation, checkpoint callbacks).",
        f"Hardware: {hardware()}.",
        f"Command: `{' '.join(['python scripts/benchmark.py', *sys.argv[1:]])}`",
        "",
        *throughput_tables(table, first.workers),
    ]
    return "\n".join(lines) + "\n"


def default_precisions(device: str) -> list[str]:
    """The precisions worth comparing on ``device``: a GPU's default alone (fp32 is not a choice there),
    fp32 and bf16 on a CPU that computes in bf16 natively (the CLI's default there), else fp32."""
    from ssl_lightning.cli.run_defaults import cpu_bf16_instructions

    if device == "cuda":
        return ["bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"]
    return ["32-true", "bf16-mixed"] if cpu_bf16_instructions() else ["32-true"]


def throughput_tables(table: pd.DataFrame, workers: int) -> list[str]:
    """Markdown lines of the per-method table and, where SimCLR's peer was measured, the table of
    SimCLR against lightly's pipeline; ``table`` has benchmark.csv's columns, a row per method."""
    lines = [
        "| method | precision | pipeline img/s | model-only img/s | pipeline / model-only (target >= 0.9) | `ssl-lightning fit` img/s | fit / model-only | peak memory MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for _, row in table.iterrows():
        ratio = row["pipeline_images_per_s"] / row["model_only_images_per_s"]
        lines.append(f"| {row['method']} | {row['precision']} | {row['pipeline_images_per_s']:.0f} | {row['model_only_images_per_s']:.0f} | "
                     f"{ratio:.2f} | {row['fit_images_per_s']:.0f} | {row['fit_images_per_s'] / row['model_only_images_per_s']:.2f} | "
                     f"{row['peak_mem_mb']:.0f} |")
    peers = table[(table["method"] == "simclr") & table["peer_images_per_s"].notna()]
    if len(peers):
        lines += [
            "",
            f"SimCLR fed by lightly's pipeline (SimCLRTransform in {workers} DataLoader workers, NTXentLoss; the same "
            "model, optimizer and view parameters), peak memory in MB of the main process plus the largest worker:",
            "",
            "| precision | ssl-lightning (views on the device) img/s | lightly img/s | **ratio ssl-lightning / lightly** | ssl-lightning memory | lightly memory |",
            "|---|---:|---:|---:|---:|---:|",
            *(f"| {row['precision']} | {row['pipeline_images_per_s']:.0f} | {row['peer_images_per_s']:.0f} | "
              f"**{row['pipeline_images_per_s'] / row['peer_images_per_s']:.2f}** | {row['peak_mem_mb']:.0f} | {row['peer_peak_mem_mb']:.0f} |"
              for _, row in peers.iterrows()),
        ]
    return lines


def max_time(minutes: float) -> str:
    """Lightning's DD:HH:MM:SS for a number of minutes."""
    seconds = round(minutes * 60)
    return f"{seconds // 86400:02d}:{seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def fit_and_probe(config: Path, fit_args: list[str], runs: Path, budgets: tuple = ("all",), seeds: int = 1) -> tuple[dict, pd.DataFrame]:
    """Trains with `ssl-lightning fit --config config *fit_args` into ``runs``, probes the last
    checkpoint on the fit's own data (its folder and validation split: the data module read back
    from the checkpoint) at each label budget, and returns the numbers and the online accuracy
    curve (kNN and probe after each epoch, against minutes since the fit started)."""
    from pytorch_lightning import LightningDataModule
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ssl_lightning.checkpoint import read_checkpoint
    from ssl_lightning.evaluation.label_efficiency import evaluate
    from ssl_lightning.evaluation.online import KNN_METRIC, PROBE_METRIC

    # This interpreter, whether or not the console script is installed (a PYTHONPATH checkout).
    command = [sys.executable, "-m", "ssl_lightning.cli", "fit", "--config", str(config),
               f"--trainer.default_root_dir={runs}", f"--trainer.logger.init_args.save_dir={runs}", *fit_args]
    print(" ".join(command), flush=True)
    started = time.time()  # the events' wall_time is on this clock
    subprocess.run(command, check=True)
    process_s = time.time() - started
    last = next(Path(runs).rglob("last.ckpt"))
    state = read_checkpoint(last)
    events = EventAccumulator(str(last.parents[1]), size_guidance={"scalars": 0}).Reload()
    data = LightningDataModule.load_from_checkpoint(last)  # the fit's data module, as its config made it
    start = time.perf_counter()
    table = evaluate([last], names=["trained"], data=data, budgets=list(budgets), seeds=seeds, references=False,
                     output_dir=Path(runs) / "evaluation", cache_dir=None)
    probe_s = time.perf_counter() - start

    # The online evaluation logs both accuracies at the end of every validation epoch.
    knn, probe = events.Scalars(KNN_METRIC), events.Scalars(PROBE_METRIC)
    curve = pd.DataFrame({"minutes": [(p.wall_time - started) / 60 for p in knn], "val_knn_acc": [p.value for p in knn],
                          "val_online_probe_acc": [p.value for p in probe]}, index=[p.step for p in knn])
    curve.index.name = "step"
    probes = table[table["evaluator"] == "linear probe"].copy()
    probes["budget"] = probes["labels_per_class"].astype(str)
    accuracy = {f"linear_probe_{budget}_test_acc": acc for budget, acc in probes.groupby("budget")["test_acc"].mean().items()}
    knn_all = table[(table["evaluator"] == "kNN") & (table["labels_per_class"].astype(str) == "all")]["test_acc"]
    results = {"fit_minutes": process_s / 60, "epochs": state["global_step"] / (curve.index[0] + 1),  # the first validation ends the first epoch
               "steps": state["global_step"], "images": state["global_step"] * int(state["datamodule_hyper_parameters"]["batch_size"]),
               **accuracy, "knn_test_acc": float(knn_all.mean()) if len(knn_all) else float("nan"),
               "train_images": int(probes["train_images"].max()), "val_images": data.val_size,
               "test_images": len(data.load_split(train=False)[1]), "evaluation_minutes": probe_s / 60}
    return results, curve


def time_to_accuracy(config: Path, minutes: float, fit_args: list[str], out: Path) -> str:
    """Trains with `ssl-lightning fit` for at most ``minutes``, probes the last checkpoint on the
    fit's own data (``fit_and_probe``), and writes ``out/curve.csv`` (online accuracy per epoch
    against minutes) and ``out/results.csv`` (the table's numbers); returns the markdown."""
    with tempfile.TemporaryDirectory() as runs:
        results, curve = fit_and_probe(config, [f"--trainer.max_time={max_time(minutes)}", *fit_args], Path(runs))
    out.mkdir(parents=True, exist_ok=True)
    curve.to_csv(out / "curve.csv", float_format="%.4f")
    results = {"minutes_limit": minutes, **results}
    pd.DataFrame([results]).to_csv(out / "results.csv", index=False, float_format="%.4f")
    train_images, test_images, val_images = results["train_images"], results["test_images"], results["val_images"]
    probe_s, process_s = 60 * results["evaluation_minutes"], 60 * results["fit_minutes"]
    lines = [
        "# Time to accuracy",
        "",
        f"`ssl-lightning fit --config {config.relative_to(REPO) if config.is_relative_to(REPO) else config}` "
        f"{' '.join(fit_args)} with a limit of {minutes:g} minutes of training, then a linear probe on the "
        f"frozen features of all {train_images:,} training images of the fit (weight decay chosen on its "
        f"{val_images:,} validation images), scored on the {test_images:,} test images.",
        f"Hardware: {hardware()}.",
        f"Command: `{' '.join(['python scripts/benchmark.py', *sys.argv[1:]])}`",
        "",
        "| what | value |",
        "|---|---:|",
        f"| training limit (Lightning max_time) | {minutes:g} min |",
        f"| the fit process, start to end (data loading, validation, checkpoints) | {process_s / 60:.1f} min |",
        f"| epochs | {results['epochs']:.1f} |",
        f"| optimizer steps | {results['steps']} ({results['images']:,} images) |",
        f"| **linear probe, test accuracy (target >= 90% in 10 min on an H100)** | **{100 * results['linear_probe_all_test_acc']:.1f}%** |",
        f"| kNN (k=200), test accuracy | {100 * results['knn_test_acc']:.1f}% |",
        f"| probe + kNN evaluation (features of {train_images + val_images + test_images:,} images, not counted above) | {probe_s / 60:.1f} min |",
        "",
        "Online accuracy on the validation images after each epoch (minutes since the fit command started):",
        "",
        "| step | minutes | online kNN | online probe |",
        "|---:|---:|---:|---:|",
        *(f"| {step} | {row.minutes:.1f} | {100 * row.val_knn_acc:.1f}% | {100 * row.val_online_probe_acc:.1f}% |"
          for step, row in curve.iterrows()),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="benchmark", required=True)
    tr = sub.add_parser("training", help="images/s of every method: pipeline, model alone, lightly's pipeline")
    tr.add_argument("--quick", action="store_true", help="batch 128, 2 + 8 steps: under 2 minutes on 2 CPU cores")
    tr.add_argument("--out", type=Path, default=OUTPUT / "training", help="folder for benchmark.csv and benchmark.md")
    tr.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    tr.add_argument("--methods", nargs="+", default=None, help="config names (default: every method)")
    tr.add_argument("--batch-size", type=int, default=256)
    tr.add_argument("--image-size", type=int, default=28, help="28 with --channels 1 is Fashion-MNIST; other sizes are synthetic")
    tr.add_argument("--channels", type=int, default=1)
    tr.add_argument("--width", type=int, default=16, help="ResNet-18 width (64 is the standard network)")
    tr.add_argument("--imagenet-stem", action="store_true", help="7x7 stride-2 stem with max-pool instead of the small-image stem")
    tr.add_argument("--warmup", type=int, default=3)
    tr.add_argument("--steps", type=int, default=20)
    tr.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="the peer's DataLoader workers")
    tr.add_argument("--no-peer", action="store_true", help="skip lightly's pipeline")
    tr.add_argument("--precision", nargs="+", default=None,
                    help="Lightning precisions, each measured (default: bf16-mixed on a GPU with bf16; 32-true and bf16-mixed on a CPU with native bf16; else 32-true)")
    tr.add_argument("--no-channels-last", action="store_true", help="keep the convolutions in the NCHW layout")
    tr.add_argument("--compile", action="store_true", help="torch.compile the backbones (add warm-up steps: compiling is slow)")
    le = sub.add_parser("label-efficiency", help="the label-budget sweep on cached features")
    le.add_argument("--checkpoint", default="simclr-fashion-mnist", help="a checkpoint file or a shipped checkpoint's name")
    le.add_argument("--seeds", type=int, default=3)
    ta = sub.add_parser("time-to-accuracy", help="minutes of training to a linear-probe accuracy on Fashion-MNIST",
                        description="Further arguments go to `ssl-lightning fit`, e.g. --trainer.max_epochs=5.")
    ta.add_argument("--config", type=Path, default=REPO / "ssl_lightning/configs/simclr.yaml")
    ta.add_argument("--minutes", type=float, default=10.0, help="the training time limit")
    ta.add_argument("--out", type=Path, default=OUTPUT / "time_to_accuracy", help="folder for results.md and curve.csv")
    da = sub.add_parser("data", help="decoding, streaming loaders and memory of image folders")
    da.add_argument("--images", type=int, default=400, help="generated JPEGs per size for the decoding and loader rows")
    da.add_argument("--width", type=int, default=64, help="ResNet-18 width of the model-step column")
    da.add_argument("--memory-images", type=int, default=5000, help="the smaller dataset of the memory rows (the other is 10x)")
    da.add_argument("--skip-memory", action="store_true", help="leave out the memory rows (minutes: they generate and fit)")
    da.add_argument("--out", type=Path, default=OUTPUT / "data", help="folder for benchmark.md")
    args, fit_args = parser.parse_known_args()
    if fit_args and args.benchmark != "time-to-accuracy":
        parser.error(f"unrecognized arguments: {' '.join(fit_args)}")
    if args.benchmark == "time-to-accuracy":
        report = time_to_accuracy(args.config.resolve(), args.minutes, fit_args, args.out)
        path = args.out / "results.md"
    elif args.benchmark == "data":
        from data_benchmark import report as data_report

        args.out.mkdir(parents=True, exist_ok=True)
        report = data_report(args)
        path = args.out / "benchmark.md"
    elif args.benchmark == "training":
        from training_benchmark import METHODS

        args.methods = args.methods or list(METHODS)
        if args.quick:
            args.batch_size, args.warmup, args.steps = 128, 2, 8
        report = training(args)
        path = args.out / "benchmark.md"
    else:
        OUTPUT.mkdir(exist_ok=True)
        report = label_efficiency(args.checkpoint, args.seeds)
        path = OUTPUT / "label_efficiency.md"
    path.write_text(report)
    print(report)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
