"""Fashion-MNIST (Xiao et al., arXiv:1708.07747): 60k train / 10k test, 28x28 grayscale, 10 classes."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from ssl_lightning.data.base import ImageDataModule
from ssl_lightning.data.idx import read_idx
from ssl_lightning.errors import DataNotFoundError

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist package
FILES = {
    True: ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    False: ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


class FashionMNISTDataModule(ImageDataModule):
    """Fashion-MNIST read from the IDX files in ``data_dir`` (by default Debian's package).

    Where the files are missing, torchvision downloads the dataset into ``download_dir``.
    """

    can_stream = False  # read whole from one archive: always held in memory

    num_channels = 1
    image_size = 28
    num_classes = 10
    mean = (0.2860,)  # of the 60k train images
    std = (0.3530,)
    classes = CLASSES

    def __init__(
        self,
        data_dir: str = DEBIAN_DIR,
        download_dir: str = "~/.cache/ssl-lightning/datasets",
        **kwargs,
    ) -> None:
        """
        Args:
            data_dir: folder with the four ``*-ubyte.gz`` files.
            download_dir: where torchvision downloads the dataset if ``data_dir`` lacks the files.
            **kwargs: batch size, split sizes and loader settings (see ``ImageDataModule``).
        """
        super().__init__(**kwargs)
        self.data_dir = Path(data_dir).expanduser()
        self.download_dir = Path(download_dir).expanduser()

    def prepare_data(self) -> None:
        if not self._have_files():
            self._download(train=True)
            self._download(train=False)

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        if self._have_files():
            images_file, labels_file = FILES[train]
            images = read_idx(self.data_dir / images_file).unsqueeze(1)  # (N, 1, 28, 28)
            labels = read_idx(self.data_dir / labels_file).long()  # (N,)
            return images, labels
        dataset = self._download(train)
        return dataset.data.unsqueeze(1), dataset.targets.long()

    def _have_files(self) -> bool:
        return all((self.data_dir / name).is_file() for pair in FILES.values() for name in pair)

    def _download(self, train: bool):  # noqa: ANN202 (torchvision.datasets.FashionMNIST)
        from torchvision.datasets import FashionMNIST

        try:
            return FashionMNIST(str(self.download_dir), train=train, download=True)
        except Exception as err:  # torchvision raises URLError, RuntimeError or OSError offline
            raise DataNotFoundError(
                f"Fashion-MNIST is not in {self.data_dir} and could not be downloaded ({type(err).__name__}); "
                "install Debian's package (sudo apt-get install dataset-fashion-mnist, or make install) "
                "or set data.data_dir to a folder with the four *-ubyte.gz files"
            ) from err
