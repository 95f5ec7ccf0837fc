"""Pictures of what an encoder learned, and of what a config's views look like.

    ssl-lightning visualize embeddings SOURCE [--num_images 2000]    t-SNE and PCA, coloured by class
    ssl-lightning visualize neighbours SOURCE [--queries 10 --k 8]   retrieval grid, wrong classes marked
    ssl-lightning visualize views --config CONFIG.yaml [overrides]   each view's augmentations, row by row

SOURCE is a checkpoint path or a shipped name; the images are Fashion-MNIST's unless ``--data``
names another labelled data module (embeddings and neighbours need labels; views do not). Each
command writes PNGs to a folder (``--output_dir``, default a new ``results/visualize/run_N/``) and
prints it; an ``--output_dir`` that holds files already is refused unless ``--overwrite``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import seaborn as sns
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.figure import Figure  # not pyplot: no global figure state, no display backend
from torch import Tensor, nn
from torch.utils.data import Dataset

from ssl_lightning.augment import ViewPipelines, describe_view
from ssl_lightning.data.base import ImageData
from ssl_lightning.data.fashion_mnist import FashionMNISTDataModule
from ssl_lightning.data.label_budget import sample_per_class, seeded_subset
from ssl_lightning.data.labelled import require_labels
from ssl_lightning.data.subset import LabelledSubset
from ssl_lightning.encoder import load_encoder
from ssl_lightning.evaluation.features import DEFAULT_CACHE_DIR, cached_features
from ssl_lightning.errors import ConfigError
from ssl_lightning.evaluation.names import data_name, source_name
from ssl_lightning.evaluation.transfer import adapt_channels
from ssl_lightning.methods.base import EncoderMethod
from ssl_lightning.outputs import check_can_create, output_folder


def pca_figure(features: Tensor, names: list[str], title: str) -> Figure:
    """The (N, D) features' first two principal components, a colour per class; each axis says
    how much of the features' variance its component holds."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=0)
    xy = pca.fit_transform(features.numpy())  # (N, 2)
    xlabel, ylabel = (f"PC{i + 1} ({100 * share:.1f}% of variance)" for i, share in enumerate(pca.explained_variance_ratio_))
    return scatter_figure(xy, names, f"PCA of encoder features ({title})", xlabel, ylabel)


def tsne_figure(features: Tensor, names: list[str], title: str) -> Figure:
    """A t-SNE map of the (N, D) features, a colour per class."""
    from sklearn.manifold import TSNE

    points = features.numpy()
    xy = TSNE(n_components=2, init="pca", perplexity=min(30, len(points) - 1), random_state=0).fit_transform(points)  # (N, 2)
    return scatter_figure(xy, names, f"t-SNE of encoder features ({title})", "t-SNE 1 (arbitrary units)", "t-SNE 2 (arbitrary units)")


def scatter_figure(xy: np.ndarray, names: list[str], title: str, xlabel: str, ylabel: str) -> Figure:
    """(N, 2) points coloured by their class ``names``, with a legend of the classes."""
    figure = Figure(figsize=(7.5, 6))
    axis = figure.subplots()
    sns.scatterplot(x=xy[:, 0], y=xy[:, 1], hue=names, hue_order=sorted(set(names)), s=8, linewidth=0, palette="tab10", ax=axis)
    axis.set(title=title, xlabel=xlabel, ylabel=ylabel, xticks=[], yticks=[])
    axis.legend(title="class", loc="center left", bbox_to_anchor=(1, 0.5), frameon=False, markerscale=2)
    figure.tight_layout()
    return figure


def embedding_plots(features: Tensor, names: list[str], out_dir: Path, title: str) -> list[Path]:
    """``pca.png`` and ``tsne.png`` in ``out_dir``: the (N, D) features projected to 2-d, a colour per class."""
    paths = []
    for stem, make_figure in (("pca", pca_figure), ("tsne", tsne_figure)):
        paths.append(out_dir / f"{stem}.png")
        make_figure(features, names, title).savefig(paths[-1], dpi=120)
    return paths


def retrieval_grid(
    queries: tuple[Tensor, Tensor], gallery: Dataset, query_features: Tensor, gallery_features: Tensor,
    names: list[str], k: int, path: Path, title: str,
) -> Path:
    """A row per query (uint8 images (Q, C, H, W), labels (Q,)): the query image, then its ``k``
    nearest ``gallery`` images (a dataset with ``.labels``) by cosine similarity; a neighbour of
    another class has a red frame and its class written under it."""
    similarity = F.normalize(query_features, dim=1) @ F.normalize(gallery_features, dim=1).T  # (Q, G)
    neighbours = similarity.topk(k, dim=1).indices  # (Q, k)
    query_images, query_labels = queries
    figure = Figure(figsize=(1.3 * (k + 1), 1.45 * len(query_images)))
    axes = figure.subplots(len(query_images), k + 1, squeeze=False)
    for row, (image, label) in enumerate(zip(query_images, query_labels)):
        hits = gallery.labels[neighbours[row]] == label
        show(axes[row, 0], image, edge="black", caption=f"{names[label]}\n{int(hits.sum())}/{k} same class")
        for col, (index, hit) in enumerate(zip(neighbours[row].tolist(), hits.tolist()), start=1):
            wrong = names[gallery.labels[index]]
            show(axes[row, col], gallery[index][0], edge="tab:green" if hit else "red", caption="" if hit else f"✗ {wrong}")
    figure.suptitle(f"Nearest neighbours in feature space ({title}); red: another class", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def show(axis: Axes, image: Tensor, edge: str, caption: str) -> None:
    """One uint8 (C, H, W) image in a coloured frame, with a caption below."""
    pixels = image.permute(1, 2, 0).squeeze(-1).numpy()
    axis.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=255)
    axis.set_xticks([])
    axis.set_yticks([])
    for spine in axis.spines.values():
        spine.set(color=edge, linewidth=3)
    axis.set_xlabel(caption, fontsize=7, color="red" if caption.startswith("✗") else "black")


def view_rows(images: Tensor, views: ViewPipelines, draws: int) -> list[tuple[str, Tensor]]:
    """(header, batch) rows: the images (float (N, C, H, W) in [0, 1]), then ``draws`` random draws
    of each view, each made by that view's own pipeline and headed with the settings that tell the
    views apart (``describe_view``)."""
    with torch.no_grad():
        drawn = [views(images) for _ in range(draws)]  # draws x views x (N, C, S_i, S_i)
    return [("original", images)] + [
        (f"view {v + 1}\n({describe_view(config, views.image_size)})" + (f"\ndraw {d + 1}" if draws > 1 else ""), made[v])
        for v, config in enumerate(views.configs) for d, made in enumerate(drawn)
    ]


def view_grid(images: Tensor, views: ViewPipelines, draws: int, path: Path, title: str) -> Path:
    """The ``view_rows`` as a figure: a column per image, a row per view and draw, headers on the left."""
    rows = view_rows(images, views, draws)
    figure = Figure(figsize=(2.4 + 1.1 * len(images), 0.6 + 1.15 * len(rows)))
    axes = figure.subplots(len(rows), len(images), squeeze=False)
    for row, (header, batch) in enumerate(rows):
        axes[row, 0].set_ylabel(header, rotation=0, ha="right", va="center", fontsize=7)
        for col, image in enumerate(batch):
            show(axes[row, col], (image.clamp(0, 1) * 255).round().to(torch.uint8), edge="lightgrey", caption="")
            if row == 0:
                axes[row, col].set_title(f"image {col + 1}", fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")  # the whole of long row headers (multi-crop's)
    return path


def picture_folder(output_dir: Path | None, overwrite: bool, cache_dir: Path | None = None) -> Path:
    """Where a visualize command writes (see ``output_folder``); it and the feature cache are checked before any work."""
    if cache_dir is not None:
        check_can_create(Path(cache_dir).expanduser(), "--cache_dir (or --cache_dir null: no cache)")
    return output_folder("visualize", output_dir, overwrite)


def at_least(value: int, minimum: int, option: str, why: str) -> None:
    if value < minimum:
        raise ConfigError(f"--{option} must be >= {minimum} ({why}), got {value}")


def labelled_data_and_encoder(source: str, data: ImageData | None, purpose: str) -> tuple[ImageData, nn.Module]:
    """``data`` (default: Fashion-MNIST), checked for labels and prepared, and the encoder of
    ``source`` adapted to its channels."""
    data = data or FashionMNISTDataModule()
    require_labels(data, purpose)
    encoder = adapt_channels(load_encoder(source), data.num_channels)
    data.prepare_data()
    return data, encoder


def embeddings(source: str, data: ImageData | None = None, num_images: int = 2000, output_dir: Path | None = None,
               overwrite: bool = False, cache_dir: Path | None = Path(DEFAULT_CACHE_DIR)) -> list[Path]:
    """t-SNE and PCA of the encoder's features of ``num_images`` test images (a seeded subset)."""
    at_least(num_images, 2, "num_images", "a 2-d projection needs 2 points")
    folder = picture_folder(output_dir, overwrite, cache_dir)
    data, encoder = labelled_data_and_encoder(source, data, "visualize embeddings (it colours the points by class)")
    data.setup("test")
    test = LabelledSubset(data.test_set, seeded_subset(len(data.test_set), num_images).sort().values)
    features = cached_features(encoder, data, test, f"test-{num_images}", cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return embedding_plots(features, data.class_names(test.labels), folder, f"{source_name(source)}, {len(test)} test images")


def neighbours(source: str, data: ImageData | None = None, queries: int = 10, k: int = 8, gallery_size: int = 10000,
               output_dir: Path | None = None, overwrite: bool = False, cache_dir: Path | None = Path(DEFAULT_CACHE_DIR)) -> Path:
    """Test images (one per class, up to ``queries``) and their ``k`` nearest labelled train images."""
    at_least(queries, 1, "queries", "the test images whose neighbours are shown")
    at_least(k, 1, "k", "the neighbours shown per query")
    at_least(gallery_size, k, "gallery_size", f"the train images searched, at least k={k}")
    folder = picture_folder(output_dir, overwrite, cache_dir)
    data, encoder = labelled_data_and_encoder(source, data, "visualize neighbours (it marks the neighbours of another class)")
    data.setup("fit")
    data.setup("test")
    gallery = LabelledSubset(data.labelled_set, seeded_subset(len(data.labelled_set), gallery_size).sort().values)
    if len(gallery) < k:
        raise ConfigError(f"--k {k} is more than the {len(gallery)} labelled train images to search; lower --k")
    query = LabelledSubset(data.test_set, sample_per_class(data.test_set.labels, 1, seed=0)[:queries])
    gallery_features = cached_features(encoder, data, gallery, f"train-{gallery_size}", cache_dir)
    query_features = cached_features(encoder, data, query, f"queries-{queries}", cache_dir)
    names = data.class_names(torch.arange(data.num_classes))  # by label
    folder.mkdir(parents=True, exist_ok=True)
    return retrieval_grid(data.take(query, len(query)), gallery, query_features, gallery_features, names, k, folder / "neighbours.png",
                          f"{source_name(source)}, {len(gallery)} train images")


def views(model: EncoderMethod, data: ImageData, num_images: int = 8, draws: int = 2,
          output_dir: Path | None = None, overwrite: bool = False) -> Path:
    """The views ``model`` (a method, as a config builds it) makes of ``num_images`` validation
    images of ``data``: ``draws`` random draws of each of its views, a row each, headed with that
    view's settings."""
    folder = views_folder(num_images, draws, output_dir, overwrite)
    data.prepare_data()
    data.setup("fit")
    torch.manual_seed(0)
    images = data.take(data.val_set, num_images)[0].float() / 255  # (N, C, H, W)
    name = type(model).__name__
    title = f"{name}'s {len(model.view_configs)} view(s) of {num_images} {data_name(data)} validation images, {draws} random draw(s) each"
    folder.mkdir(parents=True, exist_ok=True)
    return view_grid(images, model.views, draws, folder / "views.png", title)


def views_folder(num_images: int, draws: int, output_dir: Path | None, overwrite: bool) -> Path:
    """The folder ``views`` writes to, once its counts are checked (one-line errors, before any work)."""
    at_least(num_images, 1, "num_images", "the images shown")
    at_least(draws, 1, "draws", "the random draws of each view")
    return picture_folder(output_dir, overwrite)
