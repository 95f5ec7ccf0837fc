"""One prepared check of ssl-lightning on a GPU (one H100 or H200): one command, under 9 minutes.

    python scripts/gpu_check.py --out DIR [--data-dir FASHION_MNIST_DIR]   # on the GPU machine
    python scripts/gpu_check.py --dry-run --out DIR                        # every step on the CPU, tiny sizes
    python scripts/gpu_check.py --merge DIR/gpu_check.csv [--page docs/speed.md]   # the results into the speed page

scripts/gpu_check.sh readies a machine without internet (wheels, Fashion-MNIST) and runs the first
command there. It writes DIR/gpu_check.md (the report), DIR/gpu_check.csv (one row per number:
step, check, status, seconds, metric, value) and DIR/gpu_check.log (the end of each check's
output), again after every check; run folders and checkpoints go to a scratch folder (--work).
Each check runs in a child forked from this process (the imports are paid once; this process never
touches CUDA), in a process group of its own, inside a time box: an error, a crash or a hang is
recorded as failed, with the last lines of its output, or as timed out, and the next check runs.

The budget (--budget, 525 s from the start of this process: with pip's install of the wheels, 9
minutes on the GPU machine). A check gets at least its need and may run up to its box, but never
into the needs of the checks after it; the needs add up to the budget. In the order they run
(box / need, seconds):
  1. the imports, then the environment: GPU, torch, CUDA, cuDNN, Lightning, kornia, bf16   40 / 25
  2. every method trains: `ssl-lightning fit` of each config for 15 steps, a
     checkpoint, then 15 more resumed from it (bf16-mixed, channels-last, its views) 5 x 45 / 15
  3. host syncs in steps 3-8 of a SimCLR and a MoCo fit                            2 x 30 / 10
  4. throughput, `benchmark.py training` at 32x32x3, width 64, batch 512:
     SimCLR with lightly's pipeline, then each other method                 90 / 35, 4 x 60 / 20
  5. time to accuracy: 4 minutes of simclr_gpu.yaml, then the linear probe        330 / 290
  4. SimCLR's throughput with torch.compile, last, where 90 s are left            150 / 0
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import multiprocessing
import os
import re
import runpy
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
CONFIGS = REPO / "ssl_lightning" / "configs"
# Config names. The 9-minute budget holds these five (each fit and resume needs 15 s, each throughput
# row 20 s); the newer methods' CUDA path is the same EncoderMethod loop, with their own losses.
METHODS = ("simclr", "moco", "byol", "barlow_twins", "supervised")
STEPS = {1: "environment", 2: "every method trains", 3: "host syncs in steps 3-8", 4: "throughput", 5: "time to accuracy"}
README_BEGIN = "<!-- gpu_check results: begin (python scripts/gpu_check.py --merge writes this block) -->"
README_END = "<!-- gpu_check results: end -->"


@dataclass(frozen=True)
class Sizes:
    """What the checks run: the real sizes on a GPU, tiny ones on the CPU for --dry-run."""

    device: str
    precision: str  # the fits of steps 2, 3 and 5, and the throughput of step 4
    fit_args: tuple[str, ...]  # every fit of steps 2 and 3 (empty: the config's own sizes)
    fit_methods: tuple[str, ...]  # step 2: the methods it trains and resumes
    fit_steps: int  # step 2: steps before the checkpoint, and as many again after the resume
    fit_data: tuple[str, ...]  # step 2: epochs of a few steps, so that validation runs, and a resume mid-epoch
    sync_data: tuple[str, ...]  # step 3: no epoch ends before step 10
    throughput_args: tuple[str, ...]
    throughput_methods: tuple[str, ...]  # the others are skipped
    peer: bool  # SimCLR against lightly's pipeline too
    workers: int  # lightly's DataLoader workers
    tta_minutes: float
    tta_args: tuple[str, ...]
    tta_train_images: int
    tta_max_epochs: int  # the schedule's cap
    compile: bool


GPU = Sizes(
    device="cuda", precision="bf16-mixed", fit_args=(), fit_methods=METHODS, fit_steps=15,
    fit_data=("--data.init_args.train_size=2560", "--data.init_args.val_size=1000"),  # 10 steps an epoch
    sync_data=("--data.init_args.val_size=1000",),
    throughput_args=("--image-size", "32", "--channels", "3", "--width", "64", "--batch-size", "512"),
    throughput_methods=METHODS, peer=True, workers=min(8, os.cpu_count() or 1),  # benchmark.py's default
    tta_minutes=4, tta_args=(),
    tta_train_images=55_000,  # Fashion-MNIST's 60,000 less simclr_gpu.yaml's 5,000 validation images
    tta_max_epochs=100, compile=True,  # simclr_gpu.yaml's 100 epochs
)
DRY_RUN = Sizes(
    device="cpu", precision="32-true",  # the dry run checks the plumbing; tests/test_speed.py trains under bf16
    fit_args=("--model.init_args.encoder.width=8", "--data.init_args.batch_size=32", "--trainer.num_sanity_val_steps=0"),
    # A method without and one with momentum targets and a queue show the plumbing; tests/test_resume.py
    # kills and resumes every method on the CPU.
    fit_methods=("simclr", "moco"),
    fit_steps=3, fit_data=("--data.init_args.train_size=128", "--data.init_args.val_size=64"),  # 4 steps an epoch
    sync_data=("--data.init_args.val_size=64",),  # 448 train images: 14 steps an epoch
    throughput_args=("--image-size", "16", "--channels", "3", "--width", "8", "--batch-size", "16", "--warmup", "1", "--steps", "2"),
    throughput_methods=("simclr",),  # one method shows the plumbing; tests/test_cli.py runs the benchmark itself
    peer=False, workers=1,
    tta_minutes=0.5, tta_args=("--model.init_args.encoder.width=8", "--data.init_args.batch_size=32", "--data.init_args.train_size=96",
                               "--data.init_args.val_size=64"),
    tta_train_images=96, tta_max_epochs=1, compile=False,
)
DRY_RUN_IMAGES = {True: 512, False: 200}  # the dry run's Fashion-MNIST: the first images of each split


@dataclass
class Context:
    """What a check gets: the sizes, folders, and the numbers of the checks before it."""

    sizes: Sizes
    work: Path
    data_dir: Path | None
    dry_run: bool
    earlier: dict[tuple[int, str], dict[str, object]] = field(default_factory=dict)  # (step, check) -> its metrics
    results: Path | None = None  # the running check's JSON lines

    def record(self, metric: str, value: object) -> None:
        with open(self.results, "a") as f:
            f.write(json.dumps({"metric": metric, "value": value}) + "\n")

    def data_args(self) -> list[str]:
        return [f"--data.init_args.data_dir={self.data_dir}"] if self.data_dir else []


@dataclass
class Check:
    step: int
    name: str
    run: Callable[[Context], None] | None  # None: skipped, for the reason in `skip`
    box: float  # the most seconds it may take
    need: float  # the seconds that the checks before it leave it
    skip: str = ""
    only_with: float = 0  # run only where this many seconds are left

    @property
    def slug(self) -> str:
        return re.sub(r"\W+", "-", f"{self.step}-{self.name}").strip("-")


@dataclass
class Outcome:
    check: Check
    status: str  # ok, failed, timed out, skipped
    seconds: float
    metrics: dict[str, object]
    note: str  # the end of its output where it did not pass; why, where it was skipped


# --- the checks, each in its own child process ---------------------------------------------------

def environment(ctx: Context) -> None:
    import torch

    cuda = torch.cuda.is_available()
    ctx.record("run", "dry run on the CPU, tiny sizes" if ctx.dry_run else "GPU run")
    ctx.record("date", time.strftime("%Y-%m-%d"))
    ctx.record("gpu", torch.cuda.get_device_name() if cuda else f"none (CPU, {os.cpu_count()} cores)")
    if cuda:
        props = torch.cuda.get_device_properties(0)
        ctx.record("compute capability", f"{props.major}.{props.minor}")
        ctx.record("GPU memory GiB", round(props.total_memory / 2**30, 1))
        ctx.record("bf16", torch.cuda.is_bf16_supported())
        ctx.record("cuDNN", torch.backends.cudnn.version())
    else:
        ctx.record("bf16", "CPU autocast only")
    ctx.record("CPU cores", os.cpu_count())
    ctx.record("python", sys.version.split()[0])
    ctx.record("torch", torch.__version__)
    ctx.record("CUDA", torch.version.cuda or "none")
    for package in ("pytorch-lightning", "torchvision", "torchmetrics", "kornia", "jsonargparse", "torchdata", "lightly"):
        ctx.record(package, metadata.version(package))
    if not cuda and not ctx.dry_run:
        raise RuntimeError("no CUDA device: the other checks would run on the CPU (--dry-run does that on purpose)")


def fit_args(ctx: Context, method: str, runs: Path) -> list[str]:
    return ["fit", "--config", str(CONFIGS / f"{method}.yaml"), f"--trainer.accelerator={ctx.sizes.device}",
            f"--trainer.precision={ctx.sizes.precision}", "--model.init_args.encoder.channels_last=true", *ctx.data_args(),
            *ctx.sizes.fit_args, f"--trainer.default_root_dir={runs}", f"--trainer.logger.init_args.save_dir={runs}"]


def finite_loss(trainer) -> float:
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    bad = [name for name, value in metrics.items() if not math.isfinite(value)]
    if bad or "train/loss" not in metrics:
        raise RuntimeError(f"non-finite or missing metrics {bad or ['train/loss']} in {metrics}")
    return metrics["train/loss"]


def fit_and_resume(ctx: Context, method: str) -> None:
    """``fit_steps`` steps (last.ckpt written at the last), then resumed from it to twice as many."""
    import torch

    from ssl_lightning.checkpoint import read_checkpoint
    from ssl_lightning.cli import make_cli

    steps = ctx.sizes.fit_steps
    args = [*fit_args(ctx, method, ctx.work / f"runs-{method}"), *ctx.sizes.fit_data, f"--checkpoint.save_last_every_n_steps={steps}"]
    first = make_cli([*args, f"--trainer.max_steps={steps}"]).trainer
    device = first.strategy.root_device
    ctx.record("device", str(device))
    ctx.record("precision", first.precision)
    weight = next(p for p in first.lightning_module.encoder.parameters() if p.dim() == 4)
    ctx.record("channels-last", weight.is_contiguous(memory_format=torch.channels_last))
    ctx.record(f"loss at step {steps}", finite_loss(first))
    last = Path(first.checkpoint_callback.last_model_path)
    ctx.record("resumed from step", read_checkpoint(last)["global_step"])
    second = make_cli([*args, f"--trainer.max_steps={2 * steps}", f"--ckpt_path={last}"]).trainer
    ctx.record(f"loss at step {2 * steps}", finite_loss(second))
    ctx.record("final step", second.global_step)
    monitor = second.checkpoint_callback.monitor
    ctx.record(monitor, float(second.callback_metrics[monitor]))  # validation ran
    if device.type == "cuda":
        ctx.record("peak memory MB", torch.cuda.max_memory_allocated() / 2**20)
    if (first.global_step, second.global_step, device.type) != (steps, 2 * steps, ctx.sizes.device):
        raise RuntimeError(f"expected steps {steps} and {2 * steps} on {ctx.sizes.device}, got {first.global_step} and "
                           f"{second.global_step} on {device}")


def host_syncs(ctx: Context, method: str) -> None:
    from cuda_syncs import CudaSyncWatch

    from ssl_lightning.cli import make_cli

    trainer = make_cli([*fit_args(ctx, method, ctx.work / f"sync-{method}"), *ctx.sizes.sync_data, "--trainer.max_steps=10",
                        "--trainer.log_every_n_steps=10", "--trainer.callbacks+=cuda_syncs.CudaSyncWatch",
                        "--trainer.callbacks.start=3", "--trainer.callbacks.stop=9"]).trainer
    watch = next(c for c in trainer.callbacks if isinstance(c, CudaSyncWatch))
    ctx.record("watching", watch.watching)
    ctx.record("steps watched", watch.steps_watched)
    ctx.record("syncs", sum(watch.syncs.values()))
    for place, count in watch.syncs.most_common():
        ctx.record(f"sync at {place}", count)
    if watch.steps_watched != 6:
        raise RuntimeError(f"watched {watch.steps_watched} steps, expected steps 3 to 8")


def run_script(name: str, args: list[str]) -> None:
    """``python scripts/NAME ARGS`` in this process, which has its imports already."""
    sys.argv = [str(SCRIPTS / name), *args]
    runpy.run_path(sys.argv[0], run_name="__main__")


def plain(value: object) -> object:
    """A pandas number or string as Python's own (for JSON)."""
    return value.item() if hasattr(value, "item") else value


def throughput(ctx: Context, method: str, peer: bool, compiled: bool = False) -> None:
    import pandas as pd

    from benchmark import CSV_COLUMNS

    out = ctx.work / f"throughput-{method}{'-compiled' if compiled else ''}"
    args = ["training", "--device", ctx.sizes.device, "--precision", ctx.sizes.precision, *ctx.sizes.throughput_args, "--workers", str(ctx.sizes.workers),
            "--methods", method, *([] if peer else ["--no-peer"]), *(["--compile", "--warmup", "5"] if compiled else [])]
    ctx.record("command", " ".join(["python scripts/benchmark.py", *args]))
    run_script("benchmark.py", [*args, "--out", str(out)])
    row = pd.read_csv(out / "benchmark.csv").iloc[0]
    for column in CSV_COLUMNS:
        ctx.record(column, plain(row[column]))


def tta_epochs(ctx: Context) -> tuple[int, str]:
    """Epochs whose schedule ends inside the limit: 80% of it (validation and checkpoints take the
    rest) at the images/s of SimCLR's `ssl-lightning fit` in step 4 (32x32x3 images, slower than
    Fashion-MNIST's 28x28x1: an under-estimate)."""
    rate = next((m.get("fit_images_per_s") for (step, _), m in ctx.earlier.items() if step == 4 and m.get("method") == "simclr"), None)
    if not isinstance(rate, (int, float)) or not rate > 0:
        return min(20, ctx.sizes.tta_max_epochs), "a guess: no SimCLR throughput was measured"
    epochs = int(0.8 * ctx.sizes.tta_minutes * 60 * rate / ctx.sizes.tta_train_images)
    return max(1, min(epochs, ctx.sizes.tta_max_epochs)), f"80% of the limit at SimCLR's {rate:.0f} images/s in `ssl-lightning fit`"


def time_to_accuracy(ctx: Context) -> None:
    import pandas as pd

    epochs, why = tta_epochs(ctx)
    warmup = epochs / 10  # simclr_gpu.yaml warms up for 10 of its 100 epochs
    ctx.record("max_epochs", epochs)
    ctx.record("max_epochs from", why)
    ctx.record("warmup_epochs", warmup)
    out = ctx.work / "time_to_accuracy"
    run_script("benchmark.py", ["time-to-accuracy", "--config", str(CONFIGS / "simclr_gpu.yaml"), "--minutes", str(ctx.sizes.tta_minutes),
                                "--out", str(out), f"--trainer.accelerator={ctx.sizes.device}",
                                f"--trainer.precision={ctx.sizes.precision}", f"--trainer.max_epochs={epochs}",
                                f"--model.init_args.optimizer.warmup_epochs={warmup}", *ctx.data_args(), *ctx.sizes.tta_args])
    for name, value in pd.read_csv(out / "results.csv").iloc[0].items():
        ctx.record(name, plain(value))


def checks(sizes: Sizes) -> list[Check]:
    """The checks in the order they run, with their boxes and needs (the module's docstring)."""
    plan = [Check(1, "environment", environment, 40, 25)]  # its need holds the imports before it
    plan += [Check(2, m, (lambda ctx, m=m: fit_and_resume(ctx, m)) if m in sizes.fit_methods else None, 45, 15,
                   skip="" if m in sizes.fit_methods else "dry run: SimCLR and MoCo show the plumbing") for m in METHODS]
    plan += [Check(3, m, lambda ctx, m=m: host_syncs(ctx, m), 30, 10) for m in ("simclr", "moco")]
    for m in METHODS:
        peer = sizes.peer and m == "simclr"
        run = (lambda ctx, m=m, peer=peer: throughput(ctx, m, peer)) if m in sizes.throughput_methods else None
        plan.append(Check(4, f"{m} + lightly" if peer else m, run, 90 if m == "simclr" else 60, 35 if m == "simclr" else 20,
                          skip="" if run else "dry run: SimCLR's benchmark shows the plumbing"))
    plan.append(Check(5, "simclr_gpu.yaml", time_to_accuracy, 330, 290))
    compiled = (lambda ctx: throughput(ctx, "simclr", peer=False, compiled=True)) if sizes.compile else None
    plan.append(Check(4, "simclr, torch.compile", compiled, 150, 0, only_with=90,
                      skip="" if compiled else "dry run: compiling takes about 30 s on a CPU"))
    return plan


# --- running them --------------------------------------------------------------------------------

def _child(check: Check, ctx: Context, log: Path) -> None:
    os.setpgrp()  # one group with whatever it starts, so that a timeout ends them all
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)  # the output of C code and of the processes it starts, too
    os.dup2(fd, 2)
    sys.stdout, sys.stderr = open(1, "w", buffering=1, closefd=False), open(2, "w", buffering=1, closefd=False)
    check.run(ctx)


def run_boxed(check: Check, ctx: Context, seconds: float) -> Outcome:
    """The check in a forked child with at most ``seconds``; its metrics come back as JSON lines."""
    import torch

    if torch.cuda.is_initialized():
        raise RuntimeError("CUDA was initialised in the parent process: forked checks could not use it")
    log, ctx.results = ctx.work / f"{check.slug}.log", ctx.work / f"{check.slug}.jsonl"
    start = time.monotonic()
    child = multiprocessing.get_context("fork").Process(target=_child, args=(check, ctx, log))
    child.start()
    child.join(seconds)
    status = "ok" if child.exitcode == 0 else "failed"
    if child.exitcode is None:
        status = "timed out"
        for kill in (lambda: os.killpg(child.pid, signal.SIGKILL), child.kill):
            try:
                kill()
            except ProcessLookupError:
                pass
        child.join()
    metrics = {}
    if ctx.results.is_file():
        for line in ctx.results.read_text().splitlines():
            entry = json.loads(line)
            metrics[entry["metric"]] = entry["value"]
    note = "" if status == "ok" or not log.is_file() else "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    return Outcome(check, status, time.monotonic() - start, metrics, note)


def run_all(args: argparse.Namespace, started: float) -> list[Outcome]:
    sizes = DRY_RUN if args.dry_run else GPU
    ctx = Context(sizes, args.work, args.data_dir, args.dry_run)
    plan, outcomes = checks(sizes), []
    for i, check in enumerate(plan):
        reserve = sum(c.need for c in plan[i + 1:] if c.run)
        seconds = max(min(check.box, started + args.budget - time.monotonic() - reserve), min(check.need, check.box))
        no_gpu = bool(outcomes) and outcomes[0].status != "ok" and not args.dry_run
        if check.run is None or no_gpu or seconds < max(check.only_with, 1):
            why = check.skip or ("the environment check failed" if no_gpu else f"{max(seconds, 0):.0f} s were left for it")
            outcomes.append(Outcome(check, "skipped", 0.0, {}, why))
        else:
            print(f"[{time.monotonic() - started:5.0f} s] {check.step}. {STEPS[check.step]}: {check.name} (box {seconds:.0f} s)", flush=True)
            outcomes.append(run_boxed(check, ctx, seconds))
            ctx.earlier[check.step, check.name] = outcomes[-1].metrics
            print(f"        {outcomes[-1].status} in {outcomes[-1].seconds:.1f} s", flush=True)
        write_outputs(outcomes, args, time.monotonic() - started)
    return outcomes


def small_fashion_mnist(source: Path, target: Path) -> None:
    """Fashion-MNIST's four files in their own format, holding only the first ``DRY_RUN_IMAGES`` of
    each split (bytes only: this process keeps away from torch's threads before it forks)."""
    from ssl_lightning.data.fashion_mnist import FILES

    target.mkdir(parents=True, exist_ok=True)
    for train, names in FILES.items():
        for name in names:
            data = gzip.decompress((source / name).read_bytes())
            header = 4 + 4 * data[3]  # magic (2 zero bytes, dtype, ndim), then a 4-byte size per dimension
            item = math.prod(int.from_bytes(data[i: i + 4], "big") for i in range(8, header, 4))
            n = DRY_RUN_IMAGES[train]
            (target / name).write_bytes(gzip.compress(data[:4] + n.to_bytes(4, "big") + data[8:header] + data[header: header + n * item]))


# --- what it writes ------------------------------------------------------------------------------

def write_outputs(outcomes: list[Outcome], args: argparse.Namespace, elapsed: float) -> None:
    import pandas as pd

    args.out.mkdir(parents=True, exist_ok=True)
    rows = [{"step": o.check.step, "check": o.check.name, "status": o.status, "seconds": round(o.seconds, 1), "metric": k, "value": v}
            for o in outcomes for k, v in (o.metrics.items() or [("", "")])]
    pd.DataFrame(rows, columns=["step", "check", "status", "seconds", "metric", "value"]).to_csv(args.out / "gpu_check.csv", index=False)
    try:
        text = report(outcomes, args, elapsed)
    except Exception:  # a report that cannot be written must not stop the checks still to run
        text = f"# ssl-lightning GPU check\n\nThe report could not be written (the numbers are in gpu_check.csv):\n\n```\n{traceback.format_exc()}```\n"
    (args.out / "gpu_check.md").write_text(text)
    logs = []
    for o in outcomes:
        log = args.work / f"{o.check.slug}.log"
        text = log.read_text(errors="replace")[-20_000:] if log.is_file() else o.note
        logs.append(f"===== {o.check.step}. {STEPS[o.check.step]}: {o.check.name}: {o.status}, {o.seconds:.1f} s\n{text}")
    (args.out / "gpu_check.log").write_text("\n".join(logs))


def summary(o: Outcome) -> str:
    """One line of an outcome for the report's first table."""
    m = o.metrics
    if o.status == "skipped":
        return o.note
    if o.check.step == 1:
        return (f"{m.get('gpu')}; torch {m.get('torch')}, CUDA {m.get('CUDA')}, cuDNN {m.get('cuDNN', '-')}, Lightning "
                f"{m.get('pytorch-lightning')}, kornia {m.get('kornia')}; bf16 {m.get('bf16')}")
    if o.check.step == 2:
        losses = " / ".join(f"{v:.3f} at step {k.split()[-1]}" for k, v in m.items() if k.startswith("loss at"))
        resumed = f", resumed from step {m['resumed from step']}" if "resumed from step" in m else ""
        return f"loss {losses or '-'}{resumed}; {m.get('precision', '?')} on {m.get('device', '?')}"
    if o.check.step == 3:
        return f"{m.get('syncs', '?')} syncs in {m.get('steps watched', '?')} steps ({m.get('watching', '')})"
    if o.check.step == 4 and "pipeline_images_per_s" in m:
        peer = f", lightly {m['peer_images_per_s']:.0f}" if math.isfinite(m["peer_images_per_s"]) else ""
        return f"pipeline {m['pipeline_images_per_s']:.0f} / model-only {m['model_only_images_per_s']:.0f} img/s{peer}"
    if o.check.step == 5 and "linear_probe_all_test_acc" in m:
        return f"linear probe {100 * m['linear_probe_all_test_acc']:.1f}%, kNN {100 * m['knn_test_acc']:.1f}% after {m['epochs']:.1f} epochs"
    return ""


def throughput_frame(outcomes: list[Outcome], compiled: bool):
    """benchmark.csv's rows of the throughput checks that measured something (pandas DataFrame)."""
    import pandas as pd

    from benchmark import CSV_COLUMNS

    rows = [o.metrics for o in outcomes if o.check.step == 4 and ("compile" in o.check.name) == compiled and "method" in o.metrics]
    return pd.DataFrame(rows, columns=CSV_COLUMNS)


def throughput_command(outcomes: list[Outcome]) -> str:
    command = next((o.metrics["command"] for o in outcomes if o.check.step == 4 and "command" in o.metrics), "")
    return re.sub(r"--methods \w+", "--methods METHOD", command)


def report(outcomes: list[Outcome], args: argparse.Namespace, elapsed: float) -> str:
    from benchmark import throughput_tables

    sizes = DRY_RUN if args.dry_run else GPU
    env = outcomes[0].metrics
    lines = [
        "# ssl-lightning GPU check", "",
        f"{env.get('gpu', '?')}, {env.get('date', '?')}; {env.get('run', '?')}; {elapsed:.0f} s of a {args.budget:.0f} s budget.",
        f"Command: `python scripts/gpu_check.py {' '.join(sys.argv[1:])}`", "",
        "| step | check | status | seconds | result |", "|---|---|---|---:|---|",
        *(f"| {o.check.step}. {STEPS[o.check.step]} | {o.check.name} | {o.status} | {o.seconds:.1f} | {summary(o)} |" for o in outcomes),
        "", "## 1. Environment", "", "| what | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in env.items()),
        "", f"## 2. Every method trains: {sizes.fit_steps} steps, last.ckpt, {sizes.fit_steps} more resumed from it", "",
        f"`ssl-lightning fit --config ssl_lightning/configs/METHOD.yaml`, {sizes.precision}, channels-last, the config's views, "
        f"{' '.join((*sizes.fit_args, *sizes.fit_data))}.", "",
        "| method | status | metric | value |", "|---|---|---|---|",
        *(f"| {o.check.name} | {o.status} | {k} | {v:.4g} |" if isinstance(v, float) else f"| {o.check.name} | {o.status} | {k} | {v} |"
          for o in outcomes if o.check.step == 2 for k, v in o.metrics.items()),
        "", "## 3. Host syncs between logging steps (steps 3 to 8, logging every 10)", "",
    ]
    for o in (o for o in outcomes if o.check.step == 3):
        places = [f"- {k.removeprefix('sync at ')}: {v}" for k, v in o.metrics.items() if k.startswith("sync at ")]
        lines += [f"{o.check.name}: {o.status}, {summary(o)}", *places, ""]
    table, compiled = throughput_frame(outcomes, compiled=False), throughput_frame(outcomes, compiled=True)
    lines += ["## 4. Throughput", "", f"`{throughput_command(outcomes)}`, each method in a check of its own.", "",
              *(throughput_tables(table, sizes.workers) if len(table) else ["(nothing measured)"]), ""]
    if len(compiled):
        lines += ["SimCLR with `--compile`:", "", *throughput_tables(compiled, workers=0), ""]
    lines += ["## 5. Time to accuracy", ""]
    tta = next((o for o in outcomes if o.check.step == 5), None)
    results = args.work / "time_to_accuracy" / "results.md"
    if tta and tta.status == "ok" and results.is_file():
        lines += [f"max_epochs {tta.metrics['max_epochs']} ({tta.metrics['max_epochs from']}), warmup_epochs "
                  f"{tta.metrics['warmup_epochs']:g}.", "", *results.read_text().splitlines()[2:]]
    else:
        lines += [tta.status if tta else "not run", ""]
    failed = [o for o in outcomes if o.status in ("failed", "timed out")]
    if failed:
        lines += ["## What did not pass (the end of its output; more in gpu_check.log)", ""]
        for o in failed:
            lines += [f"{o.check.step}. {STEPS[o.check.step]}: {o.check.name}: {o.status} after {o.seconds:.1f} s", "", "```", o.note, "```", ""]
    return "\n".join(lines) + "\n"


# --- the speed page ----------------------------------------------------------------------------------------

def outcomes_from_csv(path: Path) -> list[Outcome]:
    """The outcomes as gpu_check.csv holds them (numbers as numbers)."""
    import pandas as pd

    outcomes: dict[tuple[int, str], Outcome] = {}
    for row in pd.read_csv(path, dtype=str, keep_default_na=False).itertuples():
        key = (int(row.step), row.check)
        if key not in outcomes:
            outcomes[key] = Outcome(Check(int(row.step), row.check, None, 0, 0), row.status, float(row.seconds), {}, "")
        if row.metric:
            try:
                outcomes[key].metrics[row.metric] = float(row.value or "nan")  # pandas writes NaN as nothing
            except ValueError:
                outcomes[key].metrics[row.metric] = row.value
    return list(outcomes.values())


def readme_block(outcomes: list[Outcome]) -> str:
    """The speed page's block of results: where and with what it ran, which checks passed, the throughput
    tables and the time to accuracy."""
    from benchmark import throughput_tables

    env = {k: str(int(v)) if isinstance(v, float) and v.is_integer() else v for k, v in outcomes[0].metrics.items()}  # as it ran
    ran = [o for o in outcomes if o.status != "skipped"]
    bad = [f"{o.check.name} ({STEPS[o.check.step]}: {o.status})" for o in ran if o.status != "ok"]
    fits = [o for o in outcomes if o.check.step == 2]
    precision = next((o.metrics["precision"] for o in fits if "precision" in o.metrics), "?")
    syncs = [o for o in outcomes if o.check.step == 3]
    watching = next((o.metrics["watching"] for o in syncs if "watching" in o.metrics), "?")
    lines = [
        README_BEGIN,
        f"### Measured by the GPU check: {env.get('gpu')}, {env.get('date')}",
        "",
        f"`python scripts/gpu_check.py` ({env.get('run')}; torch {env.get('torch')}, CUDA {env.get('CUDA')}, cuDNN "
        f"{env.get('cuDNN', '-')}, Lightning {env.get('pytorch-lightning')}, kornia {env.get('kornia')}): {len(ran) - len(bad)} "
        f"of {len(ran)} checks passed{'; not passed: ' + ', '.join(bad) if bad else ''}.",
        "",
        f"- Every method trains (`ssl-lightning fit`, {precision}, channels-last, through a checkpoint and a resume): "
        + ", ".join(f"{o.check.name} {o.status}" for o in fits) + ".",
        f"- Host syncs in steps 3 to 8 between logging steps ({watching}): "
        + ", ".join(f"{o.check.name} {o.metrics['syncs']:.0f}" if "syncs" in o.metrics else f"{o.check.name} {o.status}" for o in syncs)
        + " (where: the check's report).",
    ]
    table, compiled = throughput_frame(outcomes, compiled=False), throughput_frame(outcomes, compiled=True)
    if len(table):
        workers = int(re.search(r"--workers (\d+)", throughput_command(outcomes)).group(1))
        lines += [f"- Throughput, `{throughput_command(outcomes)}`:", "", *throughput_tables(table, workers), ""]
    if len(compiled):
        lines += [f"- SimCLR with `--compile`: pipeline {compiled['pipeline_images_per_s'].iloc[0]:.0f} img/s, model-only "
                  f"{compiled['model_only_images_per_s'].iloc[0]:.0f} img/s."]
    tta = next((o.metrics for o in outcomes if o.check.step == 5 and "linear_probe_all_test_acc" in o.metrics), None)
    if tta:
        lines += [f"- Time to accuracy, `simclr_gpu.yaml` with a limit of {tta['minutes_limit']:g} minutes (max_epochs "
                  f"{tta['max_epochs']:.0f}): {tta['epochs']:.1f} epochs in a fit of {tta['fit_minutes']:.1f} min, then the "
                  f"linear probe on all the fit's labels: **{100 * tta['linear_probe_all_test_acc']:.1f}%** on the test split "
                  f"(kNN {100 * tta['knn_test_acc']:.1f}%)."]
    return "\n".join([*lines, README_END])


def merge(csv: Path, page: Path) -> None:
    """Writes the results block into the speed page (docs/speed.md), in place of an earlier one,
    else before its "The GPU targets" section, else at its end."""
    text = page.read_text()
    if not text.startswith("# Speed\n"):
        raise SystemExit(f"gpu_check: {page} is not the speed page ('# Speed'); give --page the project's docs/speed.md")
    block = readme_block(outcomes_from_csv(csv))
    if README_BEGIN in text:
        before, rest = text.split(README_BEGIN, 1)
        text = before + block + rest.split(README_END, 1)[1]
    else:
        anchor = text.find("\n## The GPU targets")
        at = len(text) if anchor == -1 else anchor
        text = text[:at] + "\n" + block + "\n" + text[at:]
    page.write_text(text)
    print(f"wrote the results of {csv} into {page}")


def main() -> None:
    started = time.monotonic()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="folder for gpu_check.md, gpu_check.csv and gpu_check.log")
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU with tiny sizes (a few steps, width 8)")
    parser.add_argument("--data-dir", type=Path, help="folder with Fashion-MNIST's four *-ubyte.gz files (default: the data module's)")
    parser.add_argument("--budget", type=float, default=525, help="seconds for everything, from the start")
    parser.add_argument("--work", type=Path, help="scratch folder for runs and checkpoints (default: a temporary one, removed at the end)")
    parser.add_argument("--merge", type=Path, metavar="CSV", help="write the results of this gpu_check.csv into --page")
    parser.add_argument("--page", type=Path, default=REPO / "docs" / "speed.md")
    args = parser.parse_args()
    if args.merge:
        if not args.merge.is_file():
            raise SystemExit(f"gpu_check: {args.merge} not found; give --merge the gpu_check.csv that a run wrote into its --out folder")
        merge(args.merge, args.page)
        return
    if args.out is None:
        parser.error("give --out DIR (or --merge CSV)")
    if args.data_dir is not None and len(list(args.data_dir.glob("*-ubyte.gz"))) < 4:  # before minutes of work
        raise SystemExit(f"gpu_check: {args.data_dir} lacks Fashion-MNIST; give --data-dir a folder with its four *-ubyte.gz files")
    # Imported once, here, before any check is forked.
    import benchmark  # noqa: F401
    import cuda_syncs  # noqa: F401
    import torch
    import training_benchmark  # noqa: F401
    from tensorboard.backend.event_processing import event_accumulator  # noqa: F401

    import ssl_lightning.cli  # noqa: F401
    from ssl_lightning.data.fashion_mnist import DEBIAN_DIR

    args.data_dir = args.data_dir.resolve() if args.data_dir else None
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as scratch:
        args.work = (args.work or Path(scratch)).resolve()
        args.work.mkdir(parents=True, exist_ok=True)
        if args.dry_run:
            small_fashion_mnist(args.data_dir or Path(DEBIAN_DIR), args.work / "fashion-mnist")
            args.data_dir = args.work / "fashion-mnist"
            # One thread per process: the dry run's timings mean nothing, and on a shared CPU threads
            # that wait on each other cost more than they give (a tiny fit: 8 s with one, 64 s with two).
            os.environ["OMP_NUM_THREADS"] = "1"  # the processes that the benchmark starts
            torch.set_num_threads(1)  # this one and the checks forked from it
        outcomes = run_all(args, started)
    print(f"report: {args.out / 'gpu_check.md'}")
    sys.exit(0 if all(o.status in ("ok", "skipped") for o in outcomes) else 1)


if __name__ == "__main__":
    main()
