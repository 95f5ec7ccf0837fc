"""Data-side measurements behind `benchmark.py data`: decoding, streaming loaders and memory.

- decode: images/s of one process decoding generated JPEGs (resize + centre crop to the target),
  Pillow (what ImageFolderDataModule uses) next to torchvision.io;
- loader: images/s of a streaming ImageFolderDataModule's train loader with 0, 1 and 2 workers,
  next to the images/s of a SimCLR training step (ResNet-18, forward + backward + AdamW) on the
  same images, so one sees whether the loader can feed the model;
- memory: peak memory (PSS of the process and its workers, so shared pages count once) of a short
  `ssl-lightning fit` on N and 10 x N generated images, streamed and held in memory.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ssl_lightning.data import ImageFolderDataModule

REPO = Path(__file__).resolve().parents[1]
# (output side, generated JPEG size): an STL-10-sized image, and a typical photo for ImageNet-style 224.
SIZES = ((96, (96, 96)), (224, (500, 375)))


def write_jpegs(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> None:
    """``count`` JPEGs of smooth random colour fields (they compress like photos, unlike noise)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for n in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        coarse.resize(size, Image.BICUBIC).save(folder / f"{n:06d}.jpg", quality=90)


def decode_rates(folder: Path, side: int, seconds: float = 3.0) -> dict[str, float]:
    from torchvision.io import ImageReadMode, decode_image, read_file
    from torchvision.transforms.v2.functional import center_crop, resize

    files = sorted(folder.glob("*.jpg"))
    source = ImageFolderDataModule(str(folder), labels="none", image_size=side).source(train=True)

    def torchvision_io(i: int) -> torch.Tensor:
        image = decode_image(read_file(str(files[i])), mode=ImageReadMode.RGB)
        return center_crop(resize(image, [side], antialias=True), [side, side])

    rates = {}
    for name, decode in (("Pillow", source.decode), ("torchvision.io", torchvision_io)):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            decode(count % len(files))
            count += 1
        rates[name] = count / (time.perf_counter() - start)
    return rates


def loader_rate(folder: Path, side: int, workers: int, batch_size: int = 32) -> float:
    """Images/s of one epoch of the streaming train loader, after its first batch (workers started)."""
    data = ImageFolderDataModule(str(folder), labels="none", image_size=side, in_memory=False, num_workers=workers,
                                 batch_size=batch_size, val_size=1, persistent_workers=False)
    data.setup("fit")
    return epoch_rate(data.train_dataloader(), batch_size)


def epoch_rate(loader: Iterable, batch_size: int) -> float:
    """Images/s of one epoch of ``loader``, after its first batch (workers started)."""
    batches_left = iter(loader)
    next(batches_left)
    start, batches = time.perf_counter(), 0
    for batches, _ in enumerate(batches_left, 1):
        pass
    elapsed = time.perf_counter() - start
    del batches_left  # its workers end now, not inside a later fork
    return batches * batch_size / elapsed


def model_rate(side: int, width: int, batch_size: int = 32, steps: int = 3) -> float:
    """SimCLR training steps (both views) on (batch_size, 3, side, side) images, ImageNet stem."""
    from ssl_lightning.encoder import EncoderConfig
    from ssl_lightning.methods import SimCLR

    model = SimCLR(encoder=EncoderConfig(width=width, small_images=False, in_channels=3, input_size=side, mean=(0.5,) * 3, std=(0.5,) * 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(batch_size, 3, side, side)
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()
        loss = model.compute_loss(*model.views(x)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - start)


def peak_pss_mb(command: list[str], cwd: Path) -> tuple[float, int]:
    """Runs ``command``; the peak over time of the summed PSS of it and its descendants, in MB."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, sum(_pss_kb(pid) for pid in _tree(process.pid)) / 1024)
        time.sleep(0.2)
    stderr = process.stderr.read()
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    return peak, process.returncode


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split() if Path(f"/proc/{pid}").exists() else []:
        pids += _tree(int(child))
    return pids


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def memory_rows(base_count: int, side: int, workers: int) -> list[dict]:
    """Peak memory of a 20-step SimCLR fit (width 16, batch 64) on base_count and 10 x base_count images."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in (base_count, 10 * base_count):
            folder = Path(tmp) / f"images_{count}"
            write_jpegs(folder, count, (side + side // 4, side), seed=count)
            for in_memory in ("false", "true"):
                command = [str(Path(sys.executable).with_name("ssl-lightning")), "fit", "--config", str(REPO / "ssl_lightning/configs/simclr.yaml"),
                           "--data.class_path=ImageFolderDataModule", f"--data.init_args.data_dir={folder}",
                           f"--data.init_args.image_size={side}", f"--data.init_args.in_memory={in_memory}",
                           f"--data.init_args.num_workers={workers}", "--data.init_args.batch_size=64", "--data.init_args.val_size=256",
                           "--trainer.max_steps=20", "--trainer.limit_val_batches=2", "--trainer.enable_progress_bar=false",
                           "--projector.num_images=0", f"--trainer.default_root_dir={tmp}/runs",
                           f"--trainer.logger.init_args.save_dir={tmp}/runs"]
                start = time.perf_counter()
                peak, _ = peak_pss_mb(command, cwd=Path(tmp))
                rows.append({"images": count, "in_memory": in_memory, "peak_mb": peak, "seconds": time.perf_counter() - start,
                             "decoded_mb": count * 3 * side * side / 1e6})
    return rows


def report(args) -> str:  # noqa: ANN001 (benchmark.py's argparse namespace)
    from benchmark import hardware

    lines = ["# Data pipeline", "", f"Hardware: {hardware()}.", f"Command: `python scripts/benchmark.py data {' '.join(sys.argv[2:])}`", ""]
    lines += ["## Decoding and streaming loaders", "",
              "Generated JPEGs, decoded, resized (shorter side) and centre-cropped to the output side, RGB. "
              f"Model step: SimCLR, ResNet-18 width {args.width} with the ImageNet stem, fp32, forward + backward + AdamW, "
              "both views of each image.", "",
              "| output side (JPEG size) | Pillow img/s (1 process) | torchvision.io img/s | loader 0 workers | loader 1 worker | "
              "loader 2 workers | model step img/s |", "|---|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for side, jpeg in SIZES:
            folder = Path(tmp) / str(side)
            write_jpegs(folder, args.images, jpeg)
            decode = decode_rates(folder, side)
            loaders = [loader_rate(folder, side, workers) for workers in (0, 1, 2)]
            model = model_rate(side, args.width)
            lines.append(f"| {side} ({jpeg[0]}x{jpeg[1]}) | {decode['Pillow']:.0f} | {decode['torchvision.io']:.0f} | "
                         + " | ".join(f"{rate:.0f}" for rate in loaders) + f" | {model:.0f} |")
    if not args.skip_memory:
        rows = memory_rows(args.memory_images, side=64, workers=2)
        lines += ["", "## Peak memory as the dataset grows tenfold", "",
                  "`ssl-lightning fit` of simclr.yaml (width 16, batch 64, 20 steps) on generated 80x64 JPEGs at 64 px, "
                  "2 workers; peak PSS of the process and its workers.", "",
                  "| images | decoded size MB | in_memory | peak memory MB | run s |", "|---:|---:|---|---:|---:|"]
        lines += [f"| {r['images']:,} | {r['decoded_mb']:.0f} | {r['in_memory']} | {r['peak_mb']:.0f} | {r['seconds']:.0f} |" for r in rows]
        streamed = [r["peak_mb"] for r in rows if r["in_memory"] == "false"]
        lines.append(f"\nStreamed: {streamed[1] / streamed[0]:.2f} x the peak memory for 10 x the images.")
    return "\n".join(lines) + "\n"
