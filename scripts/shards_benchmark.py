"""Sharded datasets (litdata), behind `benchmark.py data`: how fast `write_shards` writes generated
images as shards, and how fast `ShardedDataModule`'s train loader reads them back with 0, 1 and 2
workers. The images are already decoded (random uint8 tensors), so the write rate is litdata's
(serialising, writing, and this package's per-image statistics), not a JPEG decoder's.

    python scripts/shards_benchmark.py [--images 4000] [--side 64] [--chunk-bytes 4MB]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from data_benchmark import epoch_rate
from ssl_lightning.data import ShardedDataModule
from ssl_lightning.data.prepare import write_shards
from ssl_lightning.data.source import TensorSource


def shard_rows(images: int = 4000, side: int = 64, chunk_bytes: str = "4MB", writers: int = 2, batch_size: int = 64) -> list[dict]:
    """One row for writing ``images`` RGB images of ``side`` pixels with ``writers`` processes
    (shards/s, images/s), then one per reading worker count (images/s)."""
    source = TensorSource(torch.randint(0, 256, (images, 3, side, side), dtype=torch.uint8), torch.zeros(images, dtype=torch.long))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "shards"
        start = time.perf_counter()
        held_out = images // 10
        write_shards(source, folder, train=torch.arange(held_out, images), val=torch.arange(held_out), classes=["all"],
                     num_workers=writers, chunk_bytes=chunk_bytes)
        seconds = time.perf_counter() - start
        shards = len(list(folder.glob("*/chunk-*.bin")))
        megabytes = sum(path.stat().st_size for path in folder.glob("*/chunk-*.bin")) / 1e6
        rows = [{"step": "write", "workers": writers, "shards": shards, "MB": megabytes, "seconds": seconds, "batch_size": batch_size,
                 "shards/s": shards / seconds, "images/s": images / seconds}]
        rows += [{"step": "read (train loader)", "workers": workers,
                  "images/s": epoch_rate(ShardedDataModule(str(folder), batch_size=batch_size, num_workers=workers).train_dataloader(), batch_size)}
                 for workers in (0, 1, 2)]
    return rows


def markdown(rows: list[dict], images: int, side: int, chunk_bytes: str) -> str:
    write, *reads = rows
    lines = [f"{images:,} generated {side}x{side} RGB uint8 images, {write['shards']} shards of up to {chunk_bytes} "
             f"({write['MB']:.0f} MB) written by {write['workers']} processes, read back in batches of {write['batch_size']}.", "",
             "| step | workers | shards/s | images/s |", "|---|---:|---:|---:|",
             f"| write (write_shards) | {write['workers']} | {write['shards/s']:.1f} | {write['images/s']:,.0f} |"]
    lines += [f"| read (train loader) | {row['workers']} | | {row['images/s']:,.0f} |" for row in reads]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--chunk-bytes", default="4MB")
    args = parser.parse_args()
    print(markdown(shard_rows(args.images, args.side, args.chunk_bytes), args.images, args.side, args.chunk_bytes))
