import gzip
import shutil
import urllib.error
from pathlib import Path

import pytest
import torch

from ssl_lightning.data import FashionMNISTDataModule
from ssl_lightning.data.fashion_mnist import DEBIAN_DIR, FILES
from ssl_lightning.data.idx import read_idx
from ssl_lightning.errors import ConfigError, DataNotFoundError

needs_debian_files = pytest.mark.skipif(
    not Path(DEBIAN_DIR, FILES[True][0]).is_file(), reason="Debian's dataset-fashion-mnist is not installed (make install)"
)


@needs_debian_files
def test_reads_the_real_debian_files():
    dm = FashionMNISTDataModule()
    train_images, train_labels = dm.load_split(train=True)
    test_images, test_labels = dm.load_split(train=False)
    assert train_images.shape == (60000, 1, 28, 28) and train_images.dtype == torch.uint8
    assert test_images.shape == (10000, 1, 28, 28)
    assert len(train_labels) == 60000 and len(test_labels) == 10000
    assert sorted(train_labels.unique().tolist()) == list(range(10))
    assert torch.bincount(train_labels).tolist() == [6000] * 10
    assert torch.bincount(test_labels).tolist() == [1000] * 10
    # the normalisation constants the model uses are the train split's
    x = train_images.float() / 255
    assert x.mean().item() == pytest.approx(dm.mean[0], abs=1e-4)
    assert x.std().item() == pytest.approx(dm.std[0], abs=1e-4)


@needs_debian_files
def test_validation_is_a_seeded_held_out_part_of_train():
    def split(seed):
        dm = FashionMNISTDataModule(val_size=1000, seed=seed)
        dm.setup("fit")
        return dm

    a, b, c = split(0), split(0), split(1)
    assert len(a.train_set) == 59000 and len(a.val_set) == 1000
    assert torch.equal(a.val_set.images, b.val_set.images)
    assert not torch.equal(a.val_set.images, c.val_set.images)
    assert a.test_set is None  # the test split is not touched while fitting
    # no validation image is also a training image
    train_keys = {img.numpy().tobytes() for img in a.train_set.images}
    assert sum(img.numpy().tobytes() in train_keys for img in a.val_set.images) <= 5  # the dataset has a few exact duplicates


@needs_debian_files
def test_loaders_give_whole_uint8_batches():
    dm = FashionMNISTDataModule(batch_size=64, val_size=100, train_size=1000)
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (64, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (64,) and labels.dtype == torch.int64
    assert len(dm.train_dataloader()) == 1000 // 64  # incomplete last train batch dropped
    assert sum(len(batch[0]) for batch in dm.val_dataloader()) == 100  # validation keeps every image


@needs_debian_files
def test_bad_split_sizes_are_explained():
    with pytest.raises(ConfigError, match="val_size"):
        FashionMNISTDataModule(val_size=60000).setup("fit")
    with pytest.raises(ConfigError, match="train_size"):
        FashionMNISTDataModule(val_size=1000, train_size=59001).setup("fit")
    dm = FashionMNISTDataModule(batch_size=512, val_size=1000, train_size=100)
    dm.setup("fit")
    with pytest.raises(ConfigError, match="fewer than batch_size"):
        dm.train_dataloader()


def offline(*args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_missing_dataset_offline_fails_with_one_line(tmp_path, monkeypatch):
    # Only the network boundary is faked: torchvision's downloader fails as it does offline.
    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", offline)
    dm = FashionMNISTDataModule(data_dir=str(tmp_path / "nowhere"), download_dir=str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert "\n" not in message
    assert "apt-get install dataset-fashion-mnist" in message and "data.data_dir" in message


@needs_debian_files
def test_falls_back_to_torchvision_download(tmp_path, monkeypatch):
    # Stand-in for the network: "download" copies the Debian files to where torchvision wants them.
    def fake_download(url, download_root, filename=None, **kwargs):
        name = Path(url).name
        shutil.copy(Path(DEBIAN_DIR, name), Path(download_root, name))
        with gzip.open(Path(download_root, name), "rb") as src, open(Path(download_root, name[:-3]), "wb") as dst:
            shutil.copyfileobj(src, dst)

    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", fake_download)
    dm = FashionMNISTDataModule(data_dir=str(tmp_path / "nowhere"), download_dir=str(tmp_path / "cache"))
    dm.prepare_data()
    images, labels = dm.load_split(train=False)
    assert images.shape == (10000, 1, 28, 28) and images.dtype == torch.uint8
    expected = read_idx(Path(DEBIAN_DIR, FILES[False][0])).unsqueeze(1)
    assert torch.equal(images, expected)


def test_truncated_idx_file_is_reported(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    header = (0x0803).to_bytes(4, "big") + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    with gzip.open(path, "wb") as f:
        f.write(header + bytes(100))
    with pytest.raises(DataNotFoundError, match="truncated"):
        read_idx(path)


def write_image_folder(root: Path, classes=("cat", "dog"), per_class=6, size=(20, 30)) -> None:
    """PNG images of random colours, in root/<class>/<n>.png."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for n in range(per_class):
            pixels = torch.randint(0, 256, (*size, 3), dtype=torch.uint8, generator=g).numpy()
            Image.fromarray(pixels).save(root / c / f"{n}.png")


def test_image_folder_is_decoded_resized_and_labelled(tmp_path):
    from ssl_lightning.data import ImageFolderDataModule

    write_image_folder(tmp_path / "train")
    write_image_folder(tmp_path / "test", per_class=2)
    dm = ImageFolderDataModule(str(tmp_path / "train"), test_dir=str(tmp_path / "test"), image_size=16, batch_size=4, val_size=4)
    assert dm.classes == ["cat", "dog"] and dm.num_classes == 2 and dm.num_channels == 3
    images, labels = dm.load_split(train=True)
    assert images.shape == (12, 3, 16, 16) and images.dtype == torch.uint8
    assert labels.tolist() == [0] * 6 + [1] * 6
    grey = ImageFolderDataModule(str(tmp_path / "train"), image_size=16, num_channels=1)
    assert grey.load_split(train=True)[0].shape == (12, 1, 16, 16) and grey.mean == (0.5,)
    dm.setup("test")
    assert len(dm.test_set) == 4
    with pytest.raises(ConfigError, match="no test split"):
        grey.setup("test")


def test_image_folder_errors_name_the_problem(tmp_path):
    from ssl_lightning.data import ImageFolderDataModule

    with pytest.raises(DataNotFoundError, match="image folder not found"):
        ImageFolderDataModule(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="no images in .*empty"):
        ImageFolderDataModule(str(tmp_path / "empty"))
    (tmp_path / "no_images" / "cat").mkdir(parents=True)
    (tmp_path / "no_images" / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(DataNotFoundError, match="no images in .*no_images"):
        ImageFolderDataModule(str(tmp_path / "no_images"))
    write_image_folder(tmp_path / "broken")
    bad = tmp_path / "broken" / "dog" / "3.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataNotFoundError, match=r"cannot read image .*dog/3\.png"):
        ImageFolderDataModule(str(tmp_path / "broken")).load_split(train=True)
