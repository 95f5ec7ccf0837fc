"""Trains the release checkpoints on Fashion-MNIST and packages them into ssl_lightning/checkpoints/
(package data: an installed wheel carries them).

    python scripts/train_release.py                 # train every method, then package
    python scripts/train_release.py --stage package # package the newest finished runs again
    python scripts/train_release.py --resume        # continue unfinished runs from their last.ckpt, skip finished ones
    python scripts/train_release.py --refresh-events  # the shipped runs' TensorBoard data as the current code writes it

train: `ssl-lightning fit` with each method's shipped config (ssl_lightning/configs/<method>.yaml)
and --max_epochs, into --runs_dir (git-ignored), timed.
package: for each run, the encoder alone (fp16) as <out>/<name>.pt, the run's TensorBoard events
(with its HParams row and a small projector of the shipped encoder: ship_tensorboard) and config
under <out>/<name>/, the label-budget sweep on the test split, a model card
<out>/<name>.md, and <out>/manifest.json with every file's sha256 (<out>: --out, by default the
source tree's ssl_lightning/checkpoints/).

On a GPU use --gpu: full-width ResNet-18 (width 64, small-image stem), bf16-mixed.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.plugins.projector import EmbeddingInfo, ProjectorConfig, visualize_embeddings
from tensorboard.summary.writer.record_writer import RecordWriter

from ssl_lightning.callbacks.tensorboard import hparams_summaries
from ssl_lightning.checkpoint import export_encoder, read_checkpoint
from ssl_lightning.data import FashionMNISTDataModule
from ssl_lightning.encoder import load_encoder
from ssl_lightning.evaluation.features import extract_features
from ssl_lightning.evaluation.label_efficiency import evaluate
from ssl_lightning.evaluation.report import markdown_table
from ssl_lightning.logger import EPOCH_TAG, LIGHTNING_EPOCH
from ssl_lightning.optim import LR_TAG
from ssl_lightning.outputs import numbered_folders
from ssl_lightning.shipped import read_manifest, run_selection, write_manifest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "ssl_lightning" / "configs"
SHIPPED = REPO / "ssl_lightning" / "checkpoints"  # the source tree's, not an installed copy's
METHODS = ["simclr", "moco", "byol", "barlow_twins", "vicreg", "simsiam", "moco_v3", "nnclr", "swav", "dino", "autoencoder",
           "supervised"]  # config stems
DATASET = "fashion-mnist"
RESULTS = REPO / "results" / "release"  # the sweep over every release checkpoint, with references
PROJECTOR_IMAGES = 256  # test images in each shipped run's projector: a 16 x 16 sprite, about 0.24 MB a run
STAGES = ("train", "val", "test")
LR_GROUPS = {"pg1": "weights", "pg2": "biases_and_norms"}  # optim.param_groups' names, in order (earlier releases: pg<n>)
HEADLINE = {"linear probe, 10 labels/class": ("linear probe", "10"), "linear probe, all labels": ("linear probe", "all"),
            "kNN, all labels": ("kNN", "all")}


def release_name(method: str) -> str:
    return f"{method.replace('_', '-')}-{DATASET}"


def run_folder(runs_dir: Path, method: str) -> Path | None:
    """The newest version folder of ``method``'s release runs."""
    runs = numbered_folders(runs_dir / method, "version_")
    return runs[0][1] if runs else None


def finished(folder: Path | None, max_epochs: int) -> bool:
    """Whether the release run in ``folder`` trained for ``max_epochs``: its train stage wrote
    ``release-timing.json`` when ``ssl-lightning fit`` returned (a run killed mid-way has none)."""
    timing = folder / "release-timing.json" if folder else None
    return bool(timing and timing.is_file() and json.loads(timing.read_text()).get("max_epochs", 0) >= max_epochs)


def train(method: str, args: argparse.Namespace) -> None:
    if args.resume and finished(run_folder(args.runs_dir, method), args.max_epochs):
        print(f"train_release: {method} has trained for {args.max_epochs} epochs already; skipped", flush=True)
        return
    command = [sys.executable, "-m", "ssl_lightning.cli", "fit", "--config", str(CONFIGS / f"{method}.yaml"),
               f"--trainer.max_epochs={args.max_epochs}",
               f"--trainer.default_root_dir={args.runs_dir}",
               f"--trainer.logger.init_args.save_dir={args.runs_dir}",
               f"--trainer.logger.init_args.name={method}"]
    if args.gpu:
        command += ["--model.init_args.encoder.width=64", "--trainer.precision=bf16-mixed"]
    if args.resume:
        command += ["--ckpt_path", "last"]
    command += args.fit_args
    print("+", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, cwd=REPO)
    command_line = " ".join(["ssl-lightning", *command[3:]]).replace(" --ckpt_path last", "")
    (run_folder(args.runs_dir, method) / "release-timing.json").write_text(json.dumps({"command": command_line, "max_epochs": args.max_epochs}))


def training_seconds(folder: Path) -> tuple[float, int]:
    """A run's training time over all its sittings, and their number: each sitting (the first, and
    each resume) writes its own TensorBoard events file, from its first to its last event."""
    spans = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        times = [event.wall_time for event in LegacyEventFileLoader(str(path)).Load() if event.HasField("summary")]
        if times:
            spans.append(max(times) - min(times))
    return sum(spans), len(spans)


def current_tag(tag: str) -> str | None:
    """The name the current code logs ``tag`` under, None where it writes no such scalar: earlier
    releases wrote train_loss, val_acc_top5, target_momentum, epoch, lr-<optimizer>/pg<n>, the
    HParams tab's one-point copies hparams/<metric> and an HParams row of their own (_hparams_/)."""
    if tag.startswith(("hparams/", "_hparams_/")):
        return None
    if tag == LIGHTNING_EPOCH:
        return EPOCH_TAG
    if tag.startswith(("lr-", "lr/")):  # lr/<group>: events written on 2026-12-03
        group = tag.rsplit("/", 1)[-1]
        return f"{LR_TAG}/{LR_GROUPS.get(group, group)}"
    if "/" in tag:
        return tag
    stage, _, name = tag.partition("_")
    return f"{stage}/{name}" if stage in STAGES and name else f"train/{tag}"


def rewrite_events(path: Path, method: str, hparams: dict) -> None:
    """Rewrites the events file ``path`` with every scalar under its ``current_tag`` and the HParams
    row that ``HParamsSummary`` writes for ``method`` and ``hparams``, at the start of the run."""
    events = []
    for event in LegacyEventFileLoader(str(path)).Load():  # the records as written (no migration)
        if event.HasField("summary"):
            values = []
            for value in event.summary.value:
                tag = current_tag(value.tag)
                if tag is not None:
                    value.tag = tag
                    values.append(value)
            if not values:
                continue
            del event.summary.value[:]
            event.summary.value.extend(values)
        events.append(event)
    start = events[0].wall_time  # the file_version record
    events[1:1] = [Event(wall_time=start, step=0, summary=summary) for summary in hparams_summaries(method, hparams)]
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        writer = RecordWriter(f)
        for event in events:
            writer.write(event.SerializeToString())
    partial.replace(path)


def write_projector(folder: Path, weights: Path, images: torch.Tensor, class_names: list[str]) -> None:
    """The Projector tab's data in ``folder``: the features of ``images`` (uint8, one channel) from
    the encoder in ``weights`` (3 significant digits: a small text file), their class names and a
    sprite of the images, beside the events (package data takes a run folder's files, not its folders)."""
    features = extract_features(load_encoder(weights), images, batch_size=256, desc=None).numpy()
    tensors, metadata, sprite = folder / "projector_features.tsv", folder / "projector_classes.tsv", folder / "projector_sprite.png"
    np.savetxt(tensors, features, fmt="%.3g", delimiter="\t")
    metadata.write_text("".join(f"{name}\n" for name in class_names))
    side, (height, width) = int(np.ceil(np.sqrt(len(images)))), images.shape[-2:]
    grid = np.zeros((side * side, height, width), dtype=np.uint8)  # the projector wants a square sprite
    grid[: len(images)] = images[:, 0].numpy()
    tiles = grid.reshape(side, side, height, width).transpose(0, 2, 1, 3).reshape(side * height, side * width)
    Image.fromarray(tiles).quantize(16).save(sprite, optimize=True)  # 16 grey levels: half the bytes of 256, alike as thumbnails
    embedding = EmbeddingInfo(tensor_name="test_features", tensor_path=tensors.name, metadata_path=metadata.name)
    embedding.sprite.image_path = sprite.name
    embedding.sprite.single_image_dim.extend([width, height])
    visualize_embeddings(str(folder), ProjectorConfig(embeddings=[embedding]))


def projector_images() -> tuple[torch.Tensor, list[str]]:
    """The first ``PROJECTOR_IMAGES`` Fashion-MNIST test images and their class names."""
    data = FashionMNISTDataModule()
    images, labels = data.load_split(train=False)
    return images[:PROJECTOR_IMAGES], data.class_names(labels[:PROJECTOR_IMAGES])


def ship_tensorboard(folder: Path, method: str, hparams: dict, weights: Path, projector: tuple[torch.Tensor, list[str]]) -> None:
    """A shipped run's TensorBoard data in ``folder`` as the current code writes it: its events
    under the current tags with the HParams row of ``method`` and ``hparams`` (``rewrite_events``),
    and the projector of the shipped encoder ``weights`` on ``projector`` (``projector_images()``)."""
    for path in folder.glob("events.out.tfevents.*"):
        rewrite_events(path, method, hparams)
    write_projector(folder, weights, *projector)


def run_hparams(folder: Path) -> dict:
    """The hyperparameters of the run in ``folder`` for HParams: its logger's (hparams.yaml, what
    ``HParamsSummary`` wrote), or for a run shipped without them, its config's model and data arguments."""
    if (folder / "hparams.yaml").is_file():
        return yaml.safe_load((folder / "hparams.yaml").read_text())
    config = yaml.safe_load((folder / "config.yaml").read_text())
    return {**config["model"]["init_args"], **config["data"]["init_args"]}


def current_card(card: str) -> str:
    """A model card of an earlier release with its metric table under the current tags."""
    lines = []
    for line in card.splitlines():
        if line.startswith("| `") and line.count("`") >= 2:
            tag = line.split("`")[1]
            line = line.replace(f"`{tag}`", f"`{current_tag(tag) or tag}`", 1)
        lines.append(line)
    return "\n".join(lines).replace("`val_` on the", "`val/` on the") + "\n"


def refresh_events(out: Path) -> None:
    """``--refresh-events``: the TensorBoard data of the runs shipped in ``out`` (``ship_tensorboard``),
    HParams from each run's config, the model cards' metric names alike, and the manifest's hashes."""
    projector = projector_images()
    entries = read_manifest(out)
    for name, entry in entries.items():
        folder = out / name
        ship_tensorboard(folder, entry["method"], run_hparams(folder), out / entry["weights"], projector)
        card = out / entry["card"]
        card.write_text(current_card(card.read_text()))
        entry["files"] = [entry["weights"], entry["card"], *(str(p.relative_to(out)) for p in sorted(folder.iterdir()))]
    write_manifest(entries, out)
    print(f"train_release: refreshed the TensorBoard data of {', '.join(entries)} in {out} (manifest.json)")


def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}; torch {torch.__version__}"
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine()) if Path("/proc/cpuinfo").exists() else platform.machine()
    return f"CPU only: {torch.get_num_threads()} threads on {cpu}; torch {torch.__version__}"


def final_metrics(events: list[Path]) -> dict[str, float]:
    """The last logged value of every loss and accuracy of a run (not the learning rates; nor the
    HParams tab's copies that runs of earlier releases wrote, nor their lr-<optimizer> names)."""
    metrics: dict[str, tuple[int, float]] = {}
    for path in events:
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            last = accumulator.Scalars(tag)[-1]
            if not tag.startswith((LR_TAG, "lr/", "lr-", "hparams/")) and (tag not in metrics or last.step >= metrics[tag][0]):
                metrics[tag] = (last.step, last.value)
    return {tag: value for tag, (_, value) in sorted(metrics.items())}


def headline(rows: pd.DataFrame) -> dict[str, float]:
    budgets = rows["labels_per_class"].astype(str)
    return {label: round(float(rows[(rows["evaluator"] == evaluator) & (budgets == budget)]["test_acc"].mean()), 4)
            for label, (evaluator, budget) in HEADLINE.items()}


def model_card(name: str, method: str, folder: Path, encoder: dict, rows: pd.DataFrame, note: str | None, selection: dict) -> str:
    timing = json.loads((folder / "release-timing.json").read_text())
    seconds, sittings = training_seconds(folder)
    metrics = final_metrics(sorted(folder.glob("events.out.tfevents.*")))
    epoch = metrics.pop(EPOCH_TAG, metrics.pop(LIGHTNING_EPOCH, -1))  # the older runs' events name it "epoch"
    epochs = int(epoch) + 1
    metric_lines = [f"| `{tag}` | {value:.4f} |" for tag, value in metrics.items()]
    return "\n".join([
        f"# {name}",
        "",
        f"{method} pretrained on the Fashion-MNIST train split (55,000 images; 5,000 held out for validation), "
        f"{epochs} epochs. Encoder: {encoder['backbone']}, width {encoder['width']}, "
        f"{'small-image stem' if encoder['small_images'] else 'ImageNet stem'}, {encoder['in_channels']}x{encoder['input_size']}x{encoder['input_size']} input, "
        "normalised inside the encoder. The file holds the encoder alone in float16 (no heads or optimizer state).",
        "",
        "```python",
        "import ssl_lightning",
        f'encoder = ssl_lightning.load_encoder("{name}")  # float images in [0, 1], shaped (N, 1, 28, 28)',
        "```",
        "",
        "## Training",
        "",
        f"- Command: `{timing['command'].replace(f'{REPO}/', '')}` (run by `python scripts/train_release.py`)",
        f"- Hardware: {hardware()}",
        f"- Training time: {seconds / 60:.1f} min (wall clock from the first to the last logged point, validation included"
        + (f", over {sittings} sittings" if sittings > 1 else "") + ")" + (f"; {note}" if note else ""),
        f"- Config (resolved): [`{name}/config.yaml`]({name}/config.yaml); TensorBoard events: `tensorboard --logdir ssl_lightning/checkpoints/{name}`",
        f"- Weights: the run's last checkpoint. Its best checkpoint (`{selection['best_checkpoint']}`, not shipped) was chosen by "
        f"`{selection['monitor']}` (best {selection['best_score']:.4f}).",
        "",
        "Final logged metrics (the last value of each; `val/` on the 5,000 held-out images):",
        "",
        "| metric | value |",
        "|---|---:|",
        *metric_lines,
        "",
        "## Evaluation on the test split",
        "",
        "Test accuracy in % on the Fashion-MNIST test split of a linear probe and a kNN classifier (k=200, temperature 0.1) "
        "on the frozen features of this file, with k labelled images per class drawn from the train split "
        f"(mean ± std over {rows['seed'].nunique()} draws; 'all' is every train image, once). The probe's weight decay is "
        "chosen on the validation split. All checkpoints and the reference rows (random encoder, raw pixels): [results/release/results.md](../../results/release/results.md).",
        "",
        markdown_table(rows).rstrip(),
        "",
        f"Measured by `python scripts/train_release.py --stage package` on {hardware()}.",
        "",
    ])


def package(methods: list[str], args: argparse.Namespace) -> None:
    out: Path = args.out
    runs = {}
    for method in methods:
        folder = run_folder(args.runs_dir, method)
        if folder is None or not (folder / "checkpoints" / "last.ckpt").is_file() or not (folder / "release-timing.json").is_file():
            sys.exit(f"train_release: no finished release run of {method} in {args.runs_dir}; run the train stage first")
        runs[release_name(method)] = (method, folder)
    selections = {}
    projector = projector_images()
    for name, (_, folder) in runs.items():
        export_encoder(folder / "checkpoints" / "last.ckpt", out / f"{name}.pt")
        selections[name] = run_selection(read_checkpoint(folder / "checkpoints" / "last.ckpt"))
        shutil.rmtree(out / name, ignore_errors=True)  # the previous release's events and config
        (out / name).mkdir(parents=True)
        for path in [folder / "config.yaml", *folder.glob("events.out.tfevents.*")]:
            shutil.copy2(path, out / name / path.name)
        ship_tensorboard(out / name, read_checkpoint(out / f"{name}.pt")["method"], run_hparams(folder), out / f"{name}.pt", projector)
    names = list(runs)
    sweep = {}
    if args.quick:  # for tests: 1,000 train images, no feature cache
        sweep = {"data": FashionMNISTDataModule(train_size=1000, val_size=200), "budgets": [10, "all"], "seeds": 1,
                 "test_size": 500, "cache_dir": None}
    # results/release is rewritten on purpose: it is this script's output. It covers every encoder
    # in --out, those packaged now and those of earlier sittings (a release may go method by method).
    shipped = sorted(set(read_manifest(out)) | set(names), key=lambda name: (name not in names, name))
    table = evaluate([out / f"{name}.pt" for name in shipped], names=shipped, output_dir=args.results, overwrite=True, **sweep)
    entries = {}
    for name, (method, folder) in runs.items():
        checkpoint = read_checkpoint(out / f"{name}.pt")
        encoder, method_class = checkpoint["encoder_config"], checkpoint["method"]
        rows = table[table["model"] == name]
        (out / f"{name}.md").write_text(model_card(name, method_class, folder, encoder, rows, args.card_note, selections[name]))
        files = [f"{name}.pt", f"{name}.md", *(str(p.relative_to(out)) for p in sorted((out / name).iterdir()))]
        entries[name] = {"weights": f"{name}.pt", "card": f"{name}.md", "method": method_class,
                         "encoder": f"{encoder['backbone']} w{encoder['width']}", "headline": headline(rows), "selection": selections[name], "files": files}
    write_manifest(entries, out)
    print(f"train_release: packaged {', '.join(names)} into {out} (manifest.json); sweep: {args.results}/results.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--max_epochs", type=int, default=8)
    parser.add_argument("--runs_dir", type=Path, default=REPO / "checkpoints" / "release-runs")
    parser.add_argument("--out", type=Path, default=SHIPPED)
    parser.add_argument("--stage", choices=["all", "train", "package"], default="all")
    parser.add_argument("--gpu", action="store_true", help="full-width ResNet-18 in bf16-mixed (for a GPU)")
    parser.add_argument("--resume", action="store_true",
                        help="continue each method's newest unfinished run from its last.ckpt; skip those that trained for --max_epochs")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the sweep over all checkpoints goes")
    parser.add_argument("--fit_args", nargs=argparse.REMAINDER, default=[], help="passed on to `ssl-lightning fit` (last)")
    parser.add_argument("--card_note", help="a remark on the training time for every model card (e.g. other work on the machine)")
    parser.add_argument("--refresh-events", action="store_true",
                        help="only rewrite the TensorBoard data of the runs shipped in --out as the current code writes it (ship_tensorboard)")
    parser.add_argument("--quick", action="store_true", help="a small sweep (1,000 train images, 2 budgets, 1 seed, 500 test images), for tests")
    args = parser.parse_args()
    if args.refresh_events:
        refresh_events(args.out)
        return
    if args.stage in ("all", "train"):
        for method in args.methods:
            train(method, args)
    if args.stage in ("all", "package"):
        package(args.methods, args)


if __name__ == "__main__":
    main()
