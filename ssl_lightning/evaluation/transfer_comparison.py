"""``ssl-lightning transfer``: fine-tuning vs feature extraction vs training from scratch, on one target.

For each source (checkpoint path, shipped name or torchvision weights name) a ``finetune`` and a
``feature_extract`` run, plus one run from scratch with the first source's architecture. Each run
keeps the weights of its best validation epoch (val/acc) and is tested once, at the end. All runs
log to TensorBoard side by side (``<log_dir>/<target>/run_N/<run>``); the table (results.csv,
results.md) and one plot of validation accuracy per epoch go to ``--output_dir`` (default: a new
``results/transfer/run_N/``).

    ssl-lightning transfer --config ssl_lightning/configs/transfer_digits.yaml
    ssl-lightning transfer --sources simclr-fashion-mnist --data DigitsDataModule --max_epochs 30
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure  # not pyplot: no global figure state, no display backend
from matplotlib.ticker import MaxNLocator
from pytorch_lightning import Callback, Trainer, seed_everything
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

from ssl_lightning.augment import ViewConfig
from ssl_lightning.callbacks import HParamsSummary
from ssl_lightning.data.base import ImageData
from ssl_lightning.data.labelled import require_labels
from ssl_lightning.data.subset import shuffled_loader
from ssl_lightning.errors import ConfigError
from ssl_lightning.encoder import EncoderConfig, load_encoder
from ssl_lightning.evaluation.names import data_name, source_name
from ssl_lightning.evaluation.transfer import RANDOM, TransferClassifier, is_timm_weights, is_torchvision_weights
from ssl_lightning.logger import GroupedTensorBoardLogger
from ssl_lightning.optim import OptimizerConfig
from ssl_lightning.outputs import OVERWRITE_HELP, check_can_create, next_run_folder, output_folder

SCRATCH = "scratch"
# The plot pairs a source's two runs by colour and tells the modes apart by line style.
MODE_STYLES = {"finetune": ("-", "fine-tuned"), "feature_extract": ("--", "feature extraction"), SCRATCH: (":", "from scratch")}


class ValidationHistory(Callback):
    """Validation accuracy after every epoch (not the sanity check)."""

    def __init__(self) -> None:
        self.history: list[tuple[int, float]] = []

    def on_validation_epoch_end(self, trainer: Trainer, module: Any) -> None:
        if not trainer.sanity_checking:
            self.history.append((trainer.current_epoch + 1, trainer.callback_metrics["val/acc"].item()))


def plan(sources: list[str], scratch: bool) -> list[tuple[str, str, str]]:
    """(run name, source, mode) of every run."""
    runs = [(f"{source_name(s)} {mode}", s, mode) for s in sources for mode in ("finetune", "feature_extract")]
    return runs + ([(SCRATCH, RANDOM, "finetune")] if scratch else [])


def compare(
    sources: list[str],
    data: ImageData,
    max_epochs: int = 30,
    lr: float = 1e-3,
    backbone_lr: float = 1e-4,
    weight_decay: float = 1e-4,
    warmup_epochs: float = 0.0,
    views: ViewConfig | None = None,
    resize_to: int | None = None,
    scratch: bool = True,
    seed: int = 0,
    output_dir: Path | None = None,
    overwrite: bool = False,
    log_dir: Path = Path("checkpoints/transfer"),
    accelerator: str = "auto",
    limit_train_batches: int | float = 1.0,
) -> pd.DataFrame:
    """Runs every (source, mode) and the from-scratch baseline on ``data``; writes the table and plot.

    Args:
        sources: checkpoints (paths or shipped names) or torchvision weights names.
        data: the target, any labelled data module (its labelled training images train,
            validation selects the epoch, the test split is evaluated once per run); its name
            (``data_name``) names the output folders.
        max_epochs: epochs of every run.
        lr: the head's peak learning rate (and every layer's from scratch).
        backbone_lr: the pretrained encoder's peak learning rate when fine-tuning.
        weight_decay, warmup_epochs: as in ``OptimizerConfig``.
        views, resize_to: see ``TransferClassifier``.
        scratch: add the run from scratch (the first source's architecture and input size, every
            layer at ``lr``).
        seed: seeds each run the same way.
        output_dir: where the table and plot go (default: a new results/transfer/run_N); a folder
            that holds files already is refused unless ``overwrite``.
        overwrite: write into an ``output_dir`` that holds files (replacing the comparison's own).
        log_dir: TensorBoard logs and checkpoints go to ``log_dir/<target>/run_N/<run>/``.
        accelerator: Lightning's ("auto": a GPU when there is one).
        limit_train_batches: Lightning's (for quick trials).
    """
    if not sources:
        raise ConfigError("give at least one source: ssl-lightning transfer --sources simclr-fashion-mnist [...]")
    out = output_folder("transfer", output_dir, overwrite)  # checked before any run, as the log folder is
    check_can_create(log_dir, "--log_dir")
    for source in sources:  # a missing or foreign checkpoint stops here, not after the runs before it
        if source != RANDOM and not is_torchvision_weights(source) and not is_timm_weights(source):
            load_encoder(source)
    require_labels(data, "transfer")
    data.prepare_data()
    data.setup("fit")
    data.setup("test")  # a target without test images fails here, before any run
    target = data_name(data)
    logs = Path(log_dir) / target
    run_folder = next_run_folder(logs).name  # a new folder per comparison: earlier logs stay
    images = EncoderConfig(in_channels=data.num_channels, input_size=data.image_size, mean=data.mean, std=data.std)
    optimizer = OptimizerConfig(lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs)
    common = {"num_classes": data.num_classes, "optimizer": optimizer, "views": views, "resize_to": resize_to}
    rows, history = [], []
    scratch_args: dict[str, Any] = {}  # the first source's architecture and input size
    for run, source, mode in plan(sources, scratch):
        seed_everything(seed, verbose=False)
        if source == RANDOM:
            model = TransferClassifier(source=RANDOM, mode=mode, backbone_lr=lr, **{"encoder": images, **common, **scratch_args})
        else:
            model = TransferClassifier(source=source, mode=mode, backbone_lr=backbone_lr, encoder=images, **common)
            config = EncoderConfig.of(model.encoder.config)
            scratch_args = scratch_args or {"encoder": replace(images, **config.architecture()), "resize_to": config.input_size}
        logger = GroupedTensorBoardLogger(logs, name=run_folder, version=run.replace(" ", "_"), default_hp_metric=False)
        best = ModelCheckpoint(dirpath=Path(logger.log_dir) / "checkpoints", monitor="val/acc", mode="max", filename="best-{epoch}")
        validation = ValidationHistory()
        trainer = Trainer(max_epochs=max_epochs, accelerator=accelerator, devices=1, logger=logger, num_sanity_val_steps=0,
                          callbacks=[best, validation, LearningRateMonitor("step"), HParamsSummary()],
                          limit_train_batches=limit_train_batches,
                          log_every_n_steps=1, enable_model_summary=False)
        start = time.perf_counter()
        # The labelled training images (not train_dataloader's: a module may pretrain on unlabelled ones).
        train = shuffled_loader(data, data.labelled_set, torch.arange(len(data.labelled_set)), seed)
        trainer.fit(model, train, data.val_dataloader())
        seconds = time.perf_counter() - start
        test_acc = trainer.test(model, data.test_dataloader(), ckpt_path=best.best_model_path, verbose=False)[0]["test/acc"]
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        best_epoch, best_val = max(validation.history, key=lambda h: h[1])
        rows.append({"run": run, "source": source_name(source), "mode": mode, "trainable_params": trainable,
                     "best_val_acc": best_val, "best_epoch": best_epoch, "test_acc": test_acc, "train_seconds": seconds,
                     "adaptation": model.adaptation})
        history += [{"run": run, "mode": "scratch" if source == RANDOM else mode, "epoch": epoch, "val_acc": acc}
                    for epoch, acc in validation.history]
    table = pd.DataFrame(rows)
    write_comparison(table, pd.DataFrame(history), out, f"{target}, {max_epochs} epochs")
    print(f"transfer comparison on {target}: {out}/results.md, {out}/val_accuracy.png; TensorBoard: tensorboard --logdir {logs / run_folder}")
    return table


def write_comparison(table: pd.DataFrame, history: pd.DataFrame, out: Path, title: str) -> None:
    """results.csv, results.md (the table), val_accuracy.csv and .png (every run's validation curve)."""
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "results.csv", index=False)
    lines = ["| run | trainable parameters | best val acc | at epoch | test acc | train time |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.run} | {r.trainable_params:,} | {100 * r.best_val_acc:.1f} | {r.best_epoch} | {100 * r.test_acc:.1f} | "
              f"{r.train_seconds:.0f} s |" for r in table.itertuples()]
    adaptations = "; ".join(sorted(set(table["adaptation"])))
    (out / "results.md").write_text("\n".join([*lines, "", f"Input adaptation: {adaptations}.", ""]))
    history.to_csv(out / "val_accuracy.csv", index=False)
    validation_figure(table, history, title).savefig(out / "val_accuracy.png", dpi=120)


def validation_figure(table: pd.DataFrame, history: pd.DataFrame, title: str) -> Figure:
    """Validation accuracy per epoch of every run: a colour per source (its fine-tuned run solid,
    its feature-extraction run dashed), the run from scratch black and dotted."""
    sources = list(dict.fromkeys(table.loc[table["run"] != SCRATCH, "source"]))
    colours = dict(zip(sources, sns.color_palette("tab10" if len(sources) <= 10 else "husl", len(sources))))
    figure = Figure(figsize=(10, 4.5))
    axis = figure.subplots()
    for run in table.itertuples():
        curve = history[history["run"] == run.run]
        mode = SCRATCH if run.run == SCRATCH else run.mode
        style, mode_label = MODE_STYLES[mode]
        axis.plot(curve["epoch"], curve["val_acc"], linestyle=style, marker="o", markersize=3, color=colours.get(run.source, "black"),
                  label=mode_label if mode == SCRATCH else f"{run.source}, {mode_label}")
    axis.set(title=f"Validation accuracy per epoch ({title})", xlabel="epoch", ylabel="validation accuracy")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.legend(title="source, mode", loc="center left", bbox_to_anchor=(1, 0.5), frameon=False, fontsize=8, title_fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def main(args: list[str] | None = None) -> None:
    """``ssl-lightning transfer --sources SRC [SRC ...] [--data ...] [--option value ...] [--config transfer.yaml]``."""
    from jsonargparse import ActionConfigFile

    from ssl_lightning.cli.parsing import argument_parser, parse

    parser = argument_parser("ssl-lightning transfer", description=compare.__doc__.split("\n")[0])
    parser.add_argument("--sources", nargs="+", help="checkpoints (paths or shipped names) or torchvision weights names")
    parser.add_function_arguments(compare, skip={"sources", "overwrite"})
    parser.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    parser.set_defaults(data={"class_path": "ssl_lightning.data.DigitsDataModule"})
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file with any of the options")
    config = parse(parser, args)
    del config["config"]
    compare(**parser.instantiate_classes(config).as_dict())
