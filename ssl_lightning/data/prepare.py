"""``ssl-lightning prepare``: images decoded once to a fixed size and written as litdata shards,
which ``ShardedDataModule`` reads (see ``ssl_lightning.data.shards`` for the folder's layout).

    ssl-lightning prepare --data_dir FOLDER --output_dir SHARDS --image_size N [--labels folders|none] [--test_dir FOLDER] [...]
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import pickle
import random
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ssl_lightning.data.image_files import LabelMode
from ssl_lightning.data.shards import LABELS_FILE, METADATA_FILE, ShardsMetadata
from ssl_lightning.data.source import ImageSource
from ssl_lightning.errors import ConfigError, UserError

IMAGES_PER_TASK = 64  # what a litdata worker decodes in one go: a step of the progress bar, one stats file
ERROR_FILE = "error.pickle"  # a user error met in a worker, so the caller can raise it as itself


class WriteTask:
    """What each litdata worker runs on a task (a list of image positions in ``source``): decodes
    the images and yields them as shard items, then saves the task's per-channel pixel sums and sums
    of squares (for the mean and std) in ``stats_dir``.

    A user error (an unreadable image) is saved in ``stats_dir`` rather than raised, and every
    worker then stops: litdata ends its workers without their helper processes when one raises.
    """

    def __init__(self, source: ImageSource, stats_dir: Path) -> None:
        self.source = source
        self.stats_dir = stats_dir
        self.shape = (source.num_channels, source.image_size, source.image_size)

    def __call__(self, task: list[int]) -> Iterator[dict[str, Any]]:
        sums = torch.zeros(2, self.shape[0], dtype=torch.float64)  # (2, C): sum, sum of squares
        error = self.stats_dir / ERROR_FILE
        for index in task:
            if error.exists():  # another task met one
                return
            try:
                image = self.source.decode(index)  # (C, S, S) uint8
                if image.shape != self.shape or image.dtype != torch.uint8:
                    raise ConfigError(f"{self.source.name(index)} decoded to {tuple(image.shape)} {image.dtype}, not "
                                      f"{self.shape} uint8; its source's decode must give fixed-size images")
            except UserError as err:
                error.write_bytes(pickle.dumps(err))
                return
            pixels = image.flatten(1).double() / 255  # (C, S*S)
            sums += torch.stack([pixels.sum(1), pixels.square().sum(1)])
            yield {"image": image, "label": int(self.source.labels[index])}
        np.save(self.stats_dir / f"{task[0]}.npy", sums.numpy())


@contextlib.contextmanager
def process_state_kept() -> Iterator[None]:
    """litdata's ``optimize`` seeds the global random generators, sets the multiprocessing start
    method and an environment variable of the process that calls it: all are put back afterwards."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    start_method = multiprocessing.get_start_method(allow_none=True)
    environ = dict(os.environ)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        multiprocessing.set_start_method(start_method, force=True)
        for key in set(os.environ) - set(environ):
            del os.environ[key]
        os.environ.update(environ)


def write_split(source: ImageSource, indices: Tensor, output: Path, num_workers: int, chunk_bytes: str, name: str) -> Tensor:
    """Writes the images ``indices`` of ``source``, in that order, as litdata shards in ``output``,
    with their labels; returns the per-channel pixel sums and sums of squares (2, C), in [0, 1] units."""
    print(f"ssl-lightning: writing the {name} split: {len(indices)} images", file=sys.stderr)
    with tempfile.TemporaryDirectory() as stats:
        stats_dir = Path(stats)
        # litdata prints its steps, and an advertisement, on stdout; its progress bar is on stderr.
        with process_state_kept(), contextlib.redirect_stdout(io.StringIO()):
            from litdata import optimize  # its import sets the multiprocessing start method too

            optimize(WriteTask(source, stats_dir), indices.tolist(), output_dir=str(output), chunk_bytes=chunk_bytes,
                     num_workers=num_workers, batch_size=IMAGES_PER_TASK,
                     keep_data_ordered=True,  # each worker a contiguous run, so the shards keep the order of indices
                     # fork: spawn would import torch again in every worker (seconds each)
                     start_method="fork" if sys.platform.startswith("linux") else None)
        if (stats_dir / ERROR_FILE).is_file():
            raise pickle.loads((stats_dir / ERROR_FILE).read_bytes())
        sums = sum(torch.from_numpy(np.load(path)) for path in stats_dir.glob("*.npy"))
    np.save(output / LABELS_FILE, source.labels[indices].numpy())
    return sums


def check_output_dir(output: Path) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(f"{output} already exists and is not empty; choose another --output_dir (nothing was written)")


def write_shards(
    source: ImageSource,
    output_dir: str | Path,
    train: Tensor,
    val: Tensor,
    test_source: ImageSource | None = None,
    classes: Sequence[str] | None = None,
    num_workers: int = 1,
    chunk_bytes: str = "64MB",
) -> ShardsMetadata:
    """Writes images of ``source`` as a sharded dataset in ``output_dir``: those at positions
    ``train`` as the train split and ``val`` as the val split, each in that order; ``test_source``'s
    images, in their order, as the test split; and ``metadata.json`` with the images' facts and the
    train split's per-channel mean and std, measured while writing.

    Give ``train`` in a random order: litdata shuffles chunks, then images within a chunk, so chunks
    written class by class would give batches of one class.

    The dataset is written into a temporary folder next to ``output_dir`` and renamed to it when
    complete, so ``output_dir`` never holds half a dataset; an existing non-empty one is refused.

    Args:
        source: the train and validation images.
        output_dir: the folder to create (``ShardedDataModule``'s ``input_dir``).
        train, val: positions in ``source`` (M,) of the train and the validation images.
        test_source: the test images, with the same classes (None: no test split).
        classes: the class names of the labels (None: the images have no labels).
        num_workers: processes that decode and write.
        chunk_bytes: the size of a shard (litdata's chunk), e.g. "64MB".
    """
    output = Path(output_dir).expanduser()
    check_output_dir(output)
    if num_workers < 1:
        raise ConfigError(f"--num_workers must be >= 1, got {num_workers}")
    splits = {"train": (source, train), "val": (source, val)}
    if test_source is not None:
        splits["test"] = (test_source, torch.arange(len(test_source)))
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        sums = {name: write_split(images, indices, partial / name, num_workers, chunk_bytes, name)
                for name, (images, indices) in splits.items()}
        pixels = len(splits["train"][1]) * source.image_size**2
        mean = sums["train"][0] / pixels  # (C,)
        std = (sums["train"][1] / pixels - mean.square()).clamp(min=0).sqrt()
        metadata = ShardsMetadata(
            num_channels=source.num_channels, image_size=source.image_size, mean=tuple(mean.tolist()), std=tuple(std.tolist()),
            classes=tuple(classes) if classes is not None else None, sizes={name: len(indices) for name, (_, indices) in splits.items()},
        )
        (partial / METADATA_FILE).write_text(metadata.to_json())
        partial.rename(output)  # replaces an empty output_dir
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return metadata


def prepare(
    output_dir: str,
    image_size: int,
    data_dir: str | None = None,
    labels: LabelMode = "auto",
    file_list: str | None = None,
    test_dir: str | None = None,
    test_file_list: str | None = None,
    num_channels: int = 3,
    skip_unreadable: bool = False,
    val_size: int = 5000,
    seed: int = 0,
    num_workers: int | None = None,
    chunk_bytes: str = "64MB",
) -> ShardsMetadata:
    """Writes an image folder (or file list) as a sharded dataset for ``ShardedDataModule``.

    The images are read as ``ImageFolderDataModule`` reads them.

    Args:
        output_dir: the folder to create (it must not exist, or be empty).
        image_size: side of the square uint8 images written (shorter side resized, centre-cropped).
        data_dir: the folder of train images (any depth); with ``file_list``, where its paths start.
        labels: "folders" (data_dir/<class>/<image>), "none", or "auto" (folders where every image
            sits in one of at least two class folders, or the file list has a label column).
        file_list: a .txt list of image paths, or a .csv with a path and an optional label column.
        test_dir: the test images, with the same classes (None: no test split).
        test_file_list: the test images as a list.
        num_channels: 3 (RGB) or 1 (grayscale); images are converted to it.
        skip_unreadable: skip files that cannot be read (False: stop at the first, naming it).
        val_size: train images held out for validation: the images ImageFolderDataModule holds
            out with the same ``val_size`` and ``seed``.
        seed: seed of the hold-out and of the order the images are written in.
        num_workers: processes that decode and write (None: one per CPU core).
        chunk_bytes: the size of one shard, e.g. "64MB".
    """
    from ssl_lightning.data.image_folder import ImageFolderDataModule

    if image_size < 1:
        raise ConfigError(f"--image_size must be a positive number of pixels, got {image_size}; e.g. --image_size 32")
    output = Path(output_dir).expanduser()
    check_output_dir(output)  # before reading a large folder
    data = ImageFolderDataModule(data_dir=data_dir, labels=labels, file_list=file_list, test_dir=test_dir, test_file_list=test_file_list,
                                 image_size=image_size, num_channels=num_channels, skip_unreadable=skip_unreadable,
                                 val_size=val_size, seed=seed)
    source = data.source(train=True)
    train, val = data.split_indices(source.labels)  # the hold-out ImageFolderDataModule makes with this seed, both shuffled
    test = data.source(train=False) if data.test_files is not None else None
    metadata = write_shards(source, output, train, val, test_source=test, classes=data.classes,
                            num_workers=num_workers or os.cpu_count() or 1, chunk_bytes=chunk_bytes)
    sizes = ", ".join(f"{split} {count:,}" for split, count in metadata.sizes.items())
    print(f"ssl-lightning: wrote {output} ({sizes} images); train on it with --data.class_path=ShardedDataModule "
          f"--data.init_args.input_dir={output}", file=sys.stderr)
    return metadata


def main(args: list[str] | None = None) -> None:
    """``ssl-lightning prepare --data_dir FOLDER --output_dir SHARDS --image_size N [--option value ...]``."""
    from ssl_lightning.cli.parsing import argument_parser, parse

    parser = argument_parser("ssl-lightning prepare", description=prepare.__doc__.split("\n")[0])
    parser.add_function_arguments(prepare)
    prepare(**parse(parser, args).as_dict())
