"""How much is a representation worth when labels are few? The label-budget sweep.

For each encoder (checkpoints, plus the references: raw pixels, their principal components and a
randomly initialised encoder) the frozen features of the train, validation and test images are
computed once (cached). Then for each budget of k labelled images per class and each seed, a
stratified draw of the train images trains a linear probe (weight decay selected on validation)
and votes in a kNN; test accuracy is recorded. The supervised baseline trains the same backbone from scratch on the same draws.
Validation selects; the test split is used only for the reported numbers.

    ssl-lightning evaluate a.ckpt b.ckpt [--supervised_steps 300] [--output_dir DIR]
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ssl_lightning.classification import accuracy
from ssl_lightning.cli.lightning import read_model_config
from ssl_lightning.data.base import ImageData
from ssl_lightning.data.fashion_mnist import FashionMNISTDataModule
from ssl_lightning.data.label_budget import sample_per_class, seeded_subset, stratified_subset
from ssl_lightning.data.labelled import require_labels
from ssl_lightning.data.subset import LabelledSubset, shuffled_loader
from ssl_lightning.encoder import Encoder, EncoderConfig, load_encoder
from ssl_lightning.errors import ConfigError
from ssl_lightning.evaluation.features import DEFAULT_CACHE_DIR, cached_features, loader_features
from ssl_lightning.evaluation.knn import knn_accuracy
from ssl_lightning.evaluation.linear_probe import fit_linear_probe, quiet_lightning, quiet_trainer
from ssl_lightning.evaluation.names import checkpoint_name
from ssl_lightning.evaluation.report import write_report
from ssl_lightning.evaluation.transfer import adapt_channels
from ssl_lightning.methods.supervised import Supervised
from ssl_lightning.outputs import OVERWRITE_HELP, check_can_create, output_folder

Budget = int | Literal["all"]
DEFAULT_BUDGETS: list[Budget] = [10, 20, 50, 100, 200, 500, "all"]
SUPERVISED_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "supervised.yaml"
RAW_PIXELS, PIXEL_PCA, RANDOM_ENCODER, SUPERVISED = "raw pixels", "pixel PCA", "random encoder", "supervised"


@dataclass
class Result:
    """One row of the sweep's CSV."""

    model: str  # checkpoint name, "raw pixels", "pixel PCA", "random encoder" or "supervised"
    evaluator: str  # "linear probe", "kNN" or "supervised"
    labels_per_class: Budget
    train_images: int
    seed: int
    val_acc: float
    test_acc: float
    weight_decay: float | None  # the probe's, selected on validation
    seconds: float


@dataclass
class Split:
    """The images of one sweep, datasets of one data module (each with ``.labels``): the labelled
    pool budgets draw from, validation and test."""

    pool: Dataset
    val: Dataset
    test: Dataset

    @classmethod
    def from_data(cls, data: ImageData, test_size: int | None = None, train_size: int | None = None) -> Split:
        """``train_size``: cap the labelled pool at a stratified, seeded draw of this many images."""
        require_labels(data, "evaluate")
        data.prepare_data()
        data.setup("fit")  # validation is held out of the labelled images before any draw
        data.setup("test")
        pool, test = data.labelled_set, data.test_set
        if train_size is not None:
            pool = LabelledSubset(pool, stratified_subset(pool.labels, train_size))
        if test_size is not None:
            test = LabelledSubset(test, seeded_subset(len(test), test_size).sort().values)
        return cls(pool, data.val_set, test)

    def parts(self) -> dict[str, Dataset]:
        return {"pool": self.pool, "val": self.val, "test": self.test}


def draws(labels: Tensor, budgets: list[Budget], seeds: int) -> Iterator[tuple[Budget, int, Tensor]]:
    """(budget, seed, positions in ``labels``) for every budget and seed; "all" is drawn once."""
    for budget in budgets:
        if budget == "all":
            yield budget, 0, torch.arange(len(labels))
            continue
        for seed in range(seeds):
            yield budget, seed, sample_per_class(labels, budget, seed)


def evaluate_features(
    name: str,
    features: dict[str, Tensor],
    split: Split,
    budgets: list[Budget],
    seeds: int,
    weight_decays: list[float],
    knn_k: int,
    knn_temperature: float,
    num_classes: int,
) -> list[Result]:
    """Probe and kNN rows for one encoder's features {"pool", "val", "test"} (N, D) each."""
    pool_labels, val_labels, test_labels = split.pool.labels, split.val.labels, split.test.labels
    rows = []
    for budget, seed, idx in tqdm(list(draws(pool_labels, budgets, seeds)), desc=name, unit="draw", leave=False):
        train = (features["pool"][idx], pool_labels[idx])
        start = time.perf_counter()
        candidates = [fit_linear_probe(train, (features["val"], val_labels), num_classes, wd) for wd in weight_decays]
        (probe, val_acc), weight_decay = max(zip(candidates, weight_decays), key=lambda c: c[0][1])
        with torch.no_grad():
            test_acc = accuracy(probe(features["test"]), test_labels)
        rows.append(Result(name, "linear probe", budget, len(idx), seed, val_acc, test_acc, weight_decay, time.perf_counter() - start))
        start = time.perf_counter()
        knn_val, knn_test = (
            knn_accuracy(*train, features[part], labels, num_classes, knn_k, knn_temperature)
            for part, labels in (("val", val_labels), ("test", test_labels))
        )
        rows.append(Result(name, "kNN", budget, len(idx), seed, knn_val, knn_test, None, time.perf_counter() - start))
    return rows


def train_supervised(
    data: ImageData,
    split: Split,
    encoder_config: dict,
    budgets: list[Budget],
    seeds: int,
    steps: int,
    config: Path,
) -> list[Result]:
    """The supervised baseline on the same draws as the probes: ``steps`` optimizer steps each,
    validated three times; the weights with the best ``val/acc`` are tested."""
    _, model_args = read_model_config(config)
    architecture = EncoderConfig.of(encoder_config).architecture()
    images = {"in_channels": data.num_channels, "input_size": data.image_size, "mean": data.mean, "std": data.std}
    model_args.update(num_classes=data.num_classes, encoder={**model_args.get("encoder", {}), **architecture, **images})
    rows = []
    for budget, seed, idx in tqdm(list(draws(split.pool.labels, budgets, seeds)), desc=SUPERVISED, unit="run", leave=False):
        start = time.perf_counter()
        torch.manual_seed(seed)
        model = Supervised(**model_args)
        with tempfile.TemporaryDirectory() as tmp:
            best = ModelCheckpoint(dirpath=tmp, monitor="val/acc", mode="max")
            trainer = quiet_trainer(max_steps=steps, max_epochs=-1, check_val_every_n_epoch=None, enable_checkpointing=True,
                                    val_check_interval=max(1, steps // 3), callbacks=[best], num_sanity_val_steps=0)
            trainer.fit(model, shuffled_loader(data, split.pool, idx, seed), data.eval_dataloader(split.val))
            model = Supervised.load_from_checkpoint(best.best_model_path, map_location="cpu")
        val_acc = best.best_model_score.item()
        features, test_labels = loader_features(model.encoder, data.eval_dataloader(split.test), desc="supervised test")
        with torch.no_grad():
            test_acc = accuracy(model.classifier(features), test_labels)  # (N, C) logits
        rows.append(Result(SUPERVISED, SUPERVISED, budget, len(idx), seed, val_acc, test_acc, None, time.perf_counter() - start))
    return rows


@quiet_lightning()
def evaluate(
    checkpoints: list[Path],
    names: list[str] | None = None,
    data: ImageData | None = None,
    test_size: int | None = None,
    train_size: int | None = None,
    budgets: list[Budget] | None = None,
    seeds: int = 3,
    weight_decays: list[float] | None = None,
    knn_k: int = 200,
    knn_temperature: float = 0.1,
    references: bool = True,
    supervised_steps: int = 0,
    supervised_config: Path = SUPERVISED_CONFIG,
    output_dir: Path | None = None,
    overwrite: bool = False,
    cache_dir: Path | None = Path(DEFAULT_CACHE_DIR),
) -> pd.DataFrame:
    """Runs the label-budget sweep and writes ``results.csv``, ``results.md`` and ``label_efficiency.png``.

    Args:
        checkpoints: ssl-lightning checkpoints (.ckpt) to evaluate.
        names: a name per checkpoint for the table (default: the method stored in the checkpoint).
        data: the labelled data module (default: Fashion-MNIST with a 5000-image validation split):
            budgets are drawn from its labelled training images, validation selects, its test
            split is scored; features are computed batch by batch (``--data.batch_size``).
        test_size: evaluate on a seeded random subset of this many test images (default: all).
        train_size: draw the budgets from a stratified, seeded subset of this many labelled
            train images (default: all), for a quick look; "all" is then this many.
        budgets: labelled images per class; "all" uses the whole train split.
        seeds: draws per budget; results are mean ± std over them.
        weight_decays: the probe's L2 penalties, one chosen per draw on validation accuracy.
        knn_k, knn_temperature: kNN neighbours and vote temperature (InstDisc: 200, 0.1).
        references: add the reference rows: raw pixels, their top-k principal components (k = the
            first encoder's feature size, fitted on the labelled pool) and a random encoder.
        supervised_steps: train the supervised baseline for this many steps per draw (0: skip).
        supervised_config: YAML whose model init_args configure the supervised baseline; its
            backbone, width and stem are taken from the first checkpoint.
        output_dir: where the CSV, markdown table and plot go (default: a new results/evaluate/run_N);
            a folder that holds files already is refused unless ``overwrite``.
        overwrite: write into an ``output_dir`` that holds files (replacing the sweep's own).
        cache_dir: feature cache (None: no cache).
    """
    start = time.perf_counter()
    if not checkpoints:
        raise ConfigError("give at least one checkpoint: ssl-lightning evaluate path/to/last.ckpt")
    if names is not None and len(names) != len(checkpoints):
        raise ConfigError(f"--names needs one name per checkpoint ({len(checkpoints)}), got {len(names)}")
    if train_size is not None and train_size < 1:
        raise ConfigError(f"--train_size must be >= 1 (labelled images to draw the budgets from), got {train_size}")
    output_dir = output_folder("evaluate", output_dir, overwrite)
    if cache_dir is not None:
        check_can_create(Path(cache_dir).expanduser(), "--cache_dir (or --cache_dir null: no cache)")
    budgets = DEFAULT_BUDGETS if budgets is None else budgets
    weight_decays = weight_decays or [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    data = data or FashionMNISTDataModule()
    loaded = {}
    for name, path in zip(names or [None] * len(checkpoints), checkpoints):
        encoder = load_encoder(path)  # first: it explains a missing or foreign file in one line
        loaded[name or checkpoint_name(Path(path))] = encoder
    if len(loaded) != len(checkpoints):
        raise ConfigError("two checkpoints got the same name; tell them apart with --names")
    split = Split.from_data(data, test_size, train_size)
    list(draws(split.pool.labels, budgets, seeds))  # a budget larger than a class stops here, before any encoding
    first_config = next(iter(loaded.values())).config
    if references:
        with torch.random.fork_rng(devices=[]):  # a seeded random encoder; the caller's RNG stays as it was
            torch.manual_seed(0)
            loaded[RANDOM_ENCODER] = Encoder(first_config).eval()
    encoders = {name: adapt_channels(encoder, data.num_channels) for name, encoder in loaded.items()}
    for name, encoder in encoders.items():
        if encoder is not loaded[name]:
            print(f"evaluate: {name}'s encoder takes {encoder.config['in_channels']}-channel images: {encoder.adaptation}")

    rows: list[Result] = []
    parts = split.parts()
    feature_sets = {name: {part: cached_features(encoder, data, dataset, part, cache_dir) for part, dataset in parts.items()}
                    for name, encoder in encoders.items()}
    if references:  # each image's pixels in [0, 1], flattened: (N, C*H*W)
        feature_sets[RAW_PIXELS] = {part: loader_features(nn.Flatten(), data.eval_dataloader(dataset), desc=f"{RAW_PIXELS} {part}")[0]
                                    for part, dataset in parts.items()}
        feature_sets[PIXEL_PCA] = principal_components(feature_sets[RAW_PIXELS], feature_sets[RANDOM_ENCODER]["pool"].shape[1])
    for name, features in feature_sets.items():
        rows += evaluate_features(name, features, split, budgets, seeds, weight_decays, knn_k, knn_temperature, data.num_classes)
    if supervised_steps > 0:
        rows += train_supervised(data, split, first_config, budgets, seeds, supervised_steps, supervised_config)

    table = pd.DataFrame([asdict(row) for row in rows])
    write_report(table, output_dir, per_class_all=len(split.pool) / data.num_classes)
    print(f"label-efficiency sweep: {len(rows)} results in {time.perf_counter() - start:.0f} s -> {output_dir}/results.md")
    return table


def principal_components(pixels: dict[str, Tensor], k: int) -> dict[str, Tensor]:
    """Each part's projection on the top ``k`` principal components of the pool's pixels
    (scikit-learn's PCA, fitted on the pool only: the labelled training images), (N, k) float32."""
    from sklearn.decomposition import PCA

    pool = pixels["pool"].numpy()
    pca = PCA(n_components=min(k, *pool.shape), random_state=0).fit(pool)
    return {part: torch.from_numpy(pca.transform(values.numpy())).float() for part, values in pixels.items()}


def main(args: list[str] | None = None) -> None:
    """``ssl-lightning evaluate CKPT [CKPT ...] [--option value ...] [--config sweep.yaml]``."""
    from jsonargparse import ActionConfigFile

    from ssl_lightning.cli.parsing import argument_parser, parse

    parser = argument_parser("ssl-lightning evaluate", description=evaluate.__doc__.split("\n")[0])
    # Lists as space-separated values, the way shells pass them.
    parser.add_argument("checkpoints", nargs="+", help="ssl-lightning checkpoints (.ckpt) to evaluate")
    parser.add_argument("--names", nargs="+", help="a name per checkpoint (default: the method stored in it)")
    parser.add_argument("--budgets", nargs="+", type=Budget, metavar="N|all",
                        help=f"labelled images per class (default: {' '.join(map(str, DEFAULT_BUDGETS))})")
    parser.add_argument("--weight_decays", nargs="+", type=float, help="the probe's L2 penalties to select from on validation")
    parser.add_function_arguments(evaluate, skip={"checkpoints", "names", "budgets", "weight_decays", "overwrite"})
    parser.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    parser.set_defaults(data={"class_path": "ssl_lightning.data.FashionMNISTDataModule"})  # so --data.val_size=... works
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file with any of the options")
    config = parse(parser, args)
    del config["config"]
    evaluate(**parser.instantiate_classes(config).as_dict())
