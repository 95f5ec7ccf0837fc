"""Image folders as users have them: class folders, flat folders, file lists, odd formats and
colour modes, unreadable files, and streaming that serves the same images as memory."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_lightning.data import ImageFolderDataModule
from ssl_lightning.data.source import UNLABELLED
from ssl_lightning.data.in_memory import InMemoryImages
from ssl_lightning.data.subset import LabelledSubset
from ssl_lightning.errors import ConfigError, DataNotFoundError

# Where rank_zero_info logs; set for each test, whatever another test left Lightning's level at.
LIGHTNING_LOG = "pytorch_lightning.utilities.rank_zero"
FORMATS = ("jpg", "jpeg", "png", "webp", "bmp", "tif")


def write_images(folder: Path, count: int, size=(24, 20), mode="RGB", ext="png", start=0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(start)
    paths = []
    for n in range(start, start + count):
        pixels = torch.randint(0, 256, (size[1], size[0], 3), dtype=torch.uint8, generator=g).numpy()
        image = Image.fromarray(pixels)
        image = image.convert(mode) if mode != "P" else image.quantize(16)
        paths.append(folder / f"{n}.{ext}")
        image.save(paths[-1])
    return paths


def test_auto_reads_class_folders_one_level_down(tmp_path, caplog):
    write_images(tmp_path / "cat", 5)
    write_images(tmp_path / "dog", 4)
    with caplog.at_level(logging.INFO, logger=LIGHTNING_LOG):
        dm = ImageFolderDataModule(str(tmp_path), image_size=16, val_size=2)
    assert dm.classes == ["cat", "dog"] and dm.num_classes == 2 and dm.labelled
    assert dm.files.labels.tolist() == [0] * 5 + [1] * 4
    assert "2 classes from the folders" in caplog.text


@pytest.mark.parametrize("layout", ["flat", "deep", "one folder", "mixed"])
def test_auto_takes_other_layouts_without_labels(layout, tmp_path, caplog):
    if layout in ("flat", "mixed"):
        write_images(tmp_path, 6)
    if layout in ("deep", "mixed"):
        write_images(tmp_path / "2024" / "june", 3, start=10)
    if layout == "one folder":
        write_images(tmp_path / "holiday", 4)
    with caplog.at_level(logging.INFO, logger=LIGHTNING_LOG):
        dm = ImageFolderDataModule(str(tmp_path), image_size=16)
    assert dm.num_classes is None and dm.classes is None and not dm.labelled
    assert (dm.files.labels == UNLABELLED).all()
    assert "no labels" in caplog.text
    with pytest.raises(ConfigError, match="set data.labels=none to pretrain without labels") if layout != "one folder" else _no_error():
        ImageFolderDataModule(str(tmp_path), labels="folders")


def _no_error():
    import contextlib

    return contextlib.nullcontext()


def test_labels_none_ignores_class_folders(tmp_path):
    write_images(tmp_path / "cat", 3)
    write_images(tmp_path / "dog", 3)
    dm = ImageFolderDataModule(str(tmp_path), labels="none", image_size=16, val_size=2, batch_size=2)
    assert dm.num_classes is None
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 16, 16) and labels.tolist() == [UNLABELLED, UNLABELLED]


@pytest.mark.parametrize("ext", FORMATS)
def test_common_extensions_decode(ext, tmp_path):
    write_images(tmp_path, 3, ext=ext)
    (tmp_path / "notes.txt").write_text("not an image")  # other files are ignored
    images, labels = ImageFolderDataModule(str(tmp_path), image_size=8).load_split(train=True)
    assert images.shape == (3, 3, 8, 8) and images.dtype == torch.uint8


@pytest.mark.parametrize(("mode", "channels"), [("L", 3), ("RGBA", 3), ("P", 3), ("RGB", 1), ("RGBA", 1)])
def test_colour_modes_are_converted_and_logged(mode, channels, tmp_path, caplog):
    paths = write_images(tmp_path, 2, mode=mode)
    dm = ImageFolderDataModule(str(tmp_path), image_size=8, num_channels=channels)
    with caplog.at_level(logging.INFO, logger=LIGHTNING_LOG):
        images, _ = dm.load_split(train=True)
    assert images.shape == (2, channels, 8, 8)
    assert f"converting to {'RGB' if channels == 3 else 'L'}: 2 {mode} images" in caplog.text
    # The same pixels as Pillow's own conversion, resized the same way.
    expected = Image.open(paths[0]).convert("RGB" if channels == 3 else "L").resize((10, 8), Image.BILINEAR)
    assert images[0].float().mean().item() == pytest.approx(float(np.asarray(expected).mean()), abs=8)


def test_resize_keeps_the_aspect_and_crops_the_centre(tmp_path):
    # A 40x20 image, white in columns 8-31 only. Shorter side -> 10 (white in columns 4-15 of 20),
    # then the centre crop (columns 5-14) keeps only white.
    image = Image.new("L", (40, 20), 0)
    image.paste(255, (8, 0, 32, 20))
    image.save(tmp_path / "a.png")
    images, _ = ImageFolderDataModule(str(tmp_path), image_size=10, num_channels=1).load_split(train=True)
    assert images.shape == (1, 1, 10, 10) and images.min() >= 250


def test_text_and_csv_file_lists(tmp_path):
    paths = write_images(tmp_path / "pics", 6)
    (tmp_path / "list.txt").write_text("# my images\n" + "".join(f"pics/{p.name}\n" for p in paths[:4]))
    txt = ImageFolderDataModule(file_list=str(tmp_path / "list.txt"), image_size=8)
    assert len(txt.files.paths) == 4 and txt.num_classes is None
    rows = "".join(f"{p},{'a' if i % 2 else 'b'}\n" for i, p in enumerate(paths))  # absolute paths
    (tmp_path / "list.csv").write_text("path,label\n" + rows)
    csv = ImageFolderDataModule(file_list=str(tmp_path / "list.csv"), image_size=8)
    assert csv.classes == ["a", "b"] and csv.files.labels.tolist() == [1, 0, 1, 0, 1, 0]
    assert ImageFolderDataModule(file_list=str(tmp_path / "list.csv"), labels="none").num_classes is None
    (tmp_path / "rel.txt").write_text("".join(f"{p.name}\n" for p in paths))
    assert len(ImageFolderDataModule(data_dir=str(tmp_path / "pics"), file_list=str(tmp_path / "rel.txt")).files.paths) == 6
    with pytest.raises(DataNotFoundError, match=r"1 of the 7 files in .*do not exist \(first: .*gone\.png\)"):
        (tmp_path / "bad.txt").write_text("".join(f"pics/{p.name}\n" for p in paths) + "pics/gone.png\n")
        ImageFolderDataModule(file_list=str(tmp_path / "bad.txt"))
    with pytest.raises(ConfigError, match="'path' column"):
        (tmp_path / "nohead.csv").write_text(f"{paths[0]},a\n")
        ImageFolderDataModule(file_list=str(tmp_path / "nohead.csv"))


def test_a_test_folder_uses_the_train_classes(tmp_path):
    write_images(tmp_path / "train" / "cat", 3)
    write_images(tmp_path / "train" / "dog", 3)
    write_images(tmp_path / "test" / "dog", 2)
    dm = ImageFolderDataModule(str(tmp_path / "train"), test_dir=str(tmp_path / "test"), image_size=8)
    assert dm.test_files.labels.tolist() == [1, 1]  # "dog" is class 1 of the train folders
    write_images(tmp_path / "test" / "bird", 1)
    with pytest.raises(ConfigError, match=r"class folders \['bird'\] that the train folder lacks"):
        ImageFolderDataModule(str(tmp_path / "train"), test_dir=str(tmp_path / "test"))


def test_skip_unreadable_counts_and_lists_the_files(tmp_path, caplog):
    write_images(tmp_path / "pics", 6)
    (tmp_path / "pics" / "2.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "pics" / "4.png").write_bytes(b"")
    truncated = (tmp_path / "pics" / "5.png").read_bytes()
    (tmp_path / "pics" / "5.png").write_bytes(truncated[: len(truncated) // 2])  # its header reads, its data does not
    with pytest.raises(DataNotFoundError, match=r"cannot read image .*2\.png.*skip_unreadable=true"):
        ImageFolderDataModule(str(tmp_path / "pics"), val_size=1).setup("fit")
    dm = ImageFolderDataModule(str(tmp_path / "pics"), val_size=1, batch_size=2, skip_unreadable=True)

    class Run:  # what the data module reads of its trainer
        log_dir = str(tmp_path / "run")

    dm.trainer = Run()
    with caplog.at_level(logging.INFO, logger=LIGHTNING_LOG):
        dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == 3
    assert "skipped 2 unreadable train image(s)" in caplog.text and "skipped 1 unreadable train image(s)" in caplog.text
    listed = (tmp_path / "run" / "skipped_images.txt").read_text().splitlines()
    assert sorted(Path(line.split("\t")[1]).name for line in listed) == ["2.png", "4.png", "5.png"]
    streamed = ImageFolderDataModule(str(tmp_path / "pics"), val_size=1, batch_size=2, skip_unreadable=True, in_memory=False)
    streamed.setup("fit")  # the truncated file passes the header check: met when decoded, and named
    with pytest.raises(DataNotFoundError, match=r"5\.png .*its header reads but its data does not"):
        list(streamed.eval_dataloader(streamed.train_set)) + list(streamed.eval_dataloader(streamed.val_set))


def test_streaming_serves_the_same_batches_as_memory(tmp_path):
    write_images(tmp_path / "a", 20, size=(30, 22))
    write_images(tmp_path / "b", 20, size=(22, 30), ext="jpg", start=50)
    # The shuffle order depends on the worker count (torchdata's sampler), not on where images live.
    kwargs = dict(data_dir=str(tmp_path), image_size=16, val_size=8, batch_size=8, num_workers=2)
    held = ImageFolderDataModule(**kwargs, in_memory=True)
    streamed = ImageFolderDataModule(**kwargs, in_memory=False)
    held.setup("fit")
    streamed.setup("fit")
    assert isinstance(held.train_set, InMemoryImages) and isinstance(streamed.train_set, LabelledSubset)
    for loader in ("train_dataloader", "val_dataloader"):
        for (x1, y1), (x2, y2) in zip(getattr(held, loader)(), getattr(streamed, loader)(), strict=True):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)
    images, labels = streamed.take(streamed.val_set, 5)
    assert torch.equal(images, held.val_set.images[:5]) and torch.equal(labels, held.val_set.labels[:5])


def test_auto_streams_what_exceeds_the_memory_budget(tmp_path, caplog):
    write_images(tmp_path, 10)
    # 10 images of 3x16x16 are 7,680 bytes: a budget of 5,000 bytes holds a batch of 2 but not all.
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, val_size=2, batch_size=2, memory_budget_gb=5e-6)
    with caplog.at_level(logging.INFO, logger=LIGHTNING_LOG):
        dm.setup("fit")
    assert isinstance(dm.train_set, LabelledSubset)
    assert "10 images of 3x16x16 take 7.68e-06 GB decoded (budget 5e-06 GB, in_memory=auto): streamed" in caplog.text
    roomy = ImageFolderDataModule(str(tmp_path), image_size=16, val_size=2, batch_size=2)
    roomy.setup("fit")
    assert isinstance(roomy.train_set, InMemoryImages)
