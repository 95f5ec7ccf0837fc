"""End to end through the real console script, in a temporary working directory."""

import logging
import re
import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import CONFIGS, SIMCLR_CONFIG, TINY, TINY_DATA, TINY_ENCODER, TINY_HEADS, RandomImages, cli_here, write_colour_squares
from ssl_lightning import EncoderConfig, load_encoder
from test_image_folder import LIGHTNING_LOG
from ssl_lightning.cli import main, make_cli
from ssl_lightning.errors import ConfigError
from ssl_lightning.evaluation import knn_accuracy
from ssl_lightning.evaluation.features import loader_features
from ssl_lightning.methods import SimCLR

pytestmark = pytest.mark.slow
BENCHMARK = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"
CONSOLE_SCRIPT = shutil.which("ssl-lightning", path=str(Path(sys.executable).parent))


def run_cli(*args, cwd):
    assert CONSOLE_SCRIPT, "the ssl-lightning console script is not installed (make install)"
    return subprocess.run([CONSOLE_SCRIPT, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("method", sorted(TINY_HEADS))
def test_fast_dev_run_of_every_method(method, tmp_path, monkeypatch, capfd):
    args = ["fit", "--config", str(CONFIGS / f"{method}.yaml"), *TINY_DATA, *TINY_HEADS[method], "--trainer.fast_dev_run=true"]
    if method == "simclr":  # one through the installed console script, as a shell starts it
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        said = result.stderr + result.stdout
    else:  # the others in this process: the start-up adds nothing
        cli_here(args, tmp_path, monkeypatch)
        captured = capfd.readouterr()
        said = captured.err + captured.out
    assert "train/loss" in said  # the progress bar shows the loss
    assert "not supported by the model summary" not in said  # Lightning's warning under the bf16 default: silenced
    assert not list(tmp_path.rglob("*.ckpt"))  # fast_dev_run writes no checkpoint


def test_short_fit_leaves_logs_and_checkpoints_and_never_overwrites(tmp_path, monkeypatch, capsys):
    args = ["fit", "--config", str(SIMCLR_CONFIG), *TINY, "--trainer.max_epochs=2",
            "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2", "--trainer.log_every_n_steps=1"]
    for version in range(2):
        cli_here(args, tmp_path, monkeypatch)
        said = capsys.readouterr().err
        assert f"this run's logs, config and checkpoints go to checkpoints/simclr/version_{version}\n" in said
        assert (f"ssl-lightning: stopped at step 6; last.ckpt is in checkpoints/simclr/version_{version}/checkpoints; "
                "the best by val/knn_acc: best-epoch=") in said  # the closing line says where the run is
    runs = sorted(p.name for p in (tmp_path / "checkpoints" / "simclr").iterdir())
    assert runs == ["version_0", "version_1"]

    run = tmp_path / "checkpoints" / "simclr" / "version_0"
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "checkpoints").glob("best-*.ckpt"))

    events = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    for stage in ("train", "val"):
        for name in ("loss", "acc_top1", "acc_top5", "acc_mean_pos"):
            assert f"{stage}/{name}" in scalars
    assert {"train/lr/weights", "train/lr/biases_and_norms"} <= scalars
    assert "views/pairs" in events.Tags()["images"]

    encoder = load_encoder(run / "checkpoints" / "last.ckpt")
    module = SimCLR.load_from_checkpoint(run / "checkpoints" / "last.ckpt").eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(encoder(x), module(x), atol=1e-6)


def test_bad_temperature_is_one_line_without_traceback(tmp_path, monkeypatch, capsys):
    args = ["fit", "--config", str(SIMCLR_CONFIG), *TINY, "--model.init_args.temperature=0"]
    with pytest.raises(SystemExit) as exit_info:
        cli_here(args, tmp_path, monkeypatch)
    assert exit_info.value.code == 1
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "temperature must be > 0" in last_line and last_line.endswith("(run with --verbose for the traceback)")
    with pytest.raises(ValueError, match="temperature must be > 0"):  # --verbose: the exception itself, with its traceback
        cli_here([*args, "--verbose"], tmp_path, monkeypatch)


def test_missing_dataset_is_one_line(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", offline)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(SIMCLR_CONFIG), *TINY, "--trainer.fast_dev_run=true",
              f"--data.init_args.data_dir={tmp_path / 'nowhere'}", f"--data.init_args.download_dir={tmp_path / 'cache'}"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ssl-lightning: error: Fashion-MNIST is not in")
    assert "apt-get install dataset-fashion-mnist" in err[-1]


def test_a_batch_of_one_image_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(SIMCLR_CONFIG), *TINY, "--trainer.fast_dev_run=true", "--data.init_args.batch_size=1"])
    assert exit_info.value.code == 1
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "needs batches of at least 2 images" in last_line and "raise data.init_args.batch_size" in last_line  # at setup


def test_supervised_baseline_fits_and_tests_through_the_cli(tmp_path, monkeypatch, capsys):
    args = ["fit", "--config", str(CONFIGS / "supervised.yaml"), *TINY_DATA, "--data.init_args.labels_per_class=5",
            "--trainer.max_epochs=2"]
    cli_here(args, tmp_path, monkeypatch)
    run = tmp_path / "checkpoints" / "supervised" / "version_0"
    events = EventAccumulator(str(run), size_guidance={"scalars": 0}).Reload()
    assert {"train/acc", "val/acc", "val/online_probe_acc", "val/knn_acc"} <= set(events.Tags()["scalars"])
    capsys.readouterr()
    cli_here(["test", "--config", str(CONFIGS / "supervised.yaml"), *TINY_DATA, "--ckpt_path", str(run / "checkpoints" / "last.ckpt")],
             tmp_path, monkeypatch)
    assert "test/acc" in capsys.readouterr().out


FIT_CONFIGS = sorted(path.stem for path in CONFIGS.glob("*.yaml") if "model" in yaml.safe_load(path.read_text()))
RANDOM_DATA = ["--data.init_args.batch_size=16", "--data.init_args.val_size=32"]


@pytest.mark.parametrize("labels", ["labelled", "unlabelled"])
@pytest.mark.parametrize("config", FIT_CONFIGS)
def test_every_config_monitors_a_metric_its_runs_log(config, labels, tmp_path, monkeypatch):
    """One step and one validation batch of each config, on labelled and on unlabelled data: the
    checkpoint's monitored metric is logged (Lightning would stop the run at the first validation
    otherwise). The supervised baseline refuses unlabelled data before training."""
    monkeypatch.chdir(tmp_path)
    data = [f"--data.class_path=conftest.{'RandomImages' if labels == 'labelled' else 'UnlabelledRandomImages'}", *RANDOM_DATA]
    if config == "supervised":
        data.append(f"--model.init_args.num_classes={RandomImages.num_classes}")
    cli = make_cli(["--config", str(CONFIGS / f"{config}.yaml"), "--model.init_args.encoder.width=8", *TINY_HEADS.get(config.removesuffix("_gpu"), []),
                    *data, "--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1",
                    "--trainer.num_sanity_val_steps=0", "--projector.num_images=0", "--trainer.enable_progress_bar=false"], run=False)
    if config == "supervised" and labels == "unlabelled":
        with pytest.raises(ConfigError, match="the supervised baseline needs labelled data, but UnlabelledRandomImages"):
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        assert cli.trainer.global_step == 0
        return
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    chosen = cli.trainer.checkpoint_callback
    # A monitor the config names wins; otherwise kNN accuracy with labels, the loss without.
    expected = ("val/acc", "max") if config == "supervised" else ("val/knn_acc", "max") if labels == "labelled" else ("val/loss", "min")
    assert (chosen.monitor, chosen.mode) == expected and chosen.monitor in cli.trainer.callback_metrics
    assert chosen.best_model_path  # a best checkpoint was chosen on it


def test_best_checkpoint_is_chosen_by_an_online_knn_that_the_offline_knn_reproduces(tmp_path, monkeypatch):
    """A short SimCLR fit on 256 digits: its best checkpoint is named by and records val/knn_acc,
    and the offline kNN (load_encoder; clean features of the same training images as the bank and
    of every validation image, the last batch of 52 included) of that file gives the same
    accuracy, well above chance (10%)."""
    monkeypatch.chdir(tmp_path)
    cli = make_cli(["--config", str(SIMCLR_CONFIG), "--model.init_args.encoder.width=8", *TINY_HEADS["simclr"], "--data.class_path=DigitsDataModule",
                    "--data.init_args.batch_size=64", "--data.init_args.train_size=256", "--data.init_args.val_size=180",
                    "--online_eval.knn_k=20", "--trainer.max_epochs=2", "--trainer.num_sanity_val_steps=0", "--projector.num_images=0",
                    "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    assert re.fullmatch(r"best-epoch=\d-step=\d+-val_knn_acc=0\.\d{4}\.ckpt", best.name), best.name
    saved = next(state for key, state in torch.load(best, weights_only=False)["callbacks"].items() if key.startswith("RunCheckpoint"))
    assert saved["monitor"] == "val/knn_acc"

    data, online = cli.datamodule, next(c for c in cli.trainer.callbacks if type(c).__name__ == "OnlineEvaluation")
    encoder = load_encoder(best)
    (bank, bank_labels), (queries, labels) = (loader_features(encoder, data.eval_dataloader(dataset), desc=None)
                                              for dataset in (data.train_set, data.val_set))
    assert len(bank) == 256 <= online.eval_images and len(queries) == 180  # the whole bank, every query
    offline = knn_accuracy(bank, bank_labels, queries, labels, data.num_classes, online.knn_k, online.knn_temperature)
    assert offline > 0.4
    assert float(saved["best_model_score"]) == pytest.approx(offline, abs=0.01)


def test_pretraining_logs_online_evaluation(tmp_path, monkeypatch):
    cli_here(["fit", "--config", str(SIMCLR_CONFIG), *TINY, "--trainer.max_epochs=1", "--trainer.log_every_n_steps=1"], tmp_path, monkeypatch)
    events = EventAccumulator(str(tmp_path / "checkpoints" / "simclr" / "version_0"), size_guidance={"scalars": 0}).Reload()
    assert {"val/online_probe_acc", "val/knn_acc", "train/online_probe_loss"} <= set(events.Tags()["scalars"])


def test_pretraining_on_unlabelled_images_with_a_labelled_eval_data_module_from_yaml(tmp_path, monkeypatch, caplog):
    """Unlabelled RGB photos (a flat folder) pretrain; a labelled image folder given in YAML as
    online_eval.eval_data is what online evaluation scores. The view grid and the projector need
    no labels (the projector then has no metadata)."""
    from PIL import Image

    photos = tmp_path / "photos" / "2026"
    photos.mkdir(parents=True)
    for n in range(48):
        Image.new("RGB", (24, 20), (n * 5, 100, 240 - n * 5)).save(photos / f"{n}.jpg")
    write_colour_squares(tmp_path / "bees")
    (tmp_path / "eval.yaml").write_text(f"""
online_eval:
  eval_data:
    class_path: ImageFolderDataModule
    init_args:
      data_dir: {tmp_path / 'bees' / 'train'}
      image_size: 16
      val_size: 8
      batch_size: 8
""")
    with caplog.at_level(logging.INFO, logger=LIGHTNING_LOG):
        cli_here(["fit", "--config", str(SIMCLR_CONFIG), "--config", str(tmp_path / "eval.yaml"), "--model.init_args.encoder.width=8",
                  *TINY_HEADS["simclr"], "--data.class_path=ImageFolderDataModule", f"--data.init_args.data_dir={tmp_path / 'photos'}",
                  "--data.init_args.labels=none", "--data.init_args.image_size=16", "--data.init_args.val_size=16",
                  "--data.init_args.batch_size=16", "--trainer.max_epochs=1", "--projector.num_images=10"], tmp_path, monkeypatch)
    run = tmp_path / "checkpoints" / "simclr" / "version_0"
    events = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0}).Reload()
    assert {"val/acc_top5", "val/online_probe_acc", "val/knn_acc"} <= set(events.Tags()["scalars"])
    assert len(events.Scalars("val/knn_acc")) == 1 and all(0 <= p.value <= 1 for p in events.Scalars("val/knn_acc"))
    assert "train/online_probe_loss" not in events.Tags()["scalars"]  # no labels in the training batches
    assert "views/pairs" in events.Tags()["images"]
    projector = (run / "projector_config.pbtxt").read_text()
    assert "val_features" in projector and "sprite" in projector and "metadata" not in projector
    assert "ImageFolderDataModule: 48 train images" in caplog.text and "online evaluation is off" not in caplog.text
    assert list((run / "checkpoints").glob("best-*-val_knn_acc=*.ckpt"))  # selected on eval_data's kNN accuracy


def test_label_efficiency_sweep_end_to_end_on_a_tiny_subset(tmp_path, monkeypatch, capsys):
    cli_here(["fit", "--config", str(SIMCLR_CONFIG), *TINY, "--trainer.max_steps=2", "--trainer.limit_val_batches=1"], tmp_path, monkeypatch)
    checkpoint = tmp_path / "checkpoints" / "simclr" / "version_0" / "checkpoints" / "last.ckpt"
    out = tmp_path / "sweep"
    cli_here(["evaluate", str(checkpoint), "--data.val_size=100", "--data.train_size=300", "--test_size=200",
              "--budgets", "2", "5", "all", "--seeds=2", "--weight_decays", "1e-3", "1e-1",
              "--supervised_steps=2", "--cache_dir", str(tmp_path / "cache"), "--output_dir", str(out)], tmp_path, monkeypatch)
    table = pd.read_csv(out / "results.csv")
    # 3 encoders x (probe + kNN) x (2 budgets x 2 seeds + all once) + supervised x 5 draws
    assert len(table) == 4 * 2 * 5 + 5
    assert set(table["model"]) == {"SimCLR", "random encoder", "raw pixels", "pixel PCA", "supervised"}
    assert table["test_acc"].between(0, 1).all() and table["val_acc"].between(0, 1).all()
    assert set(table.loc[table["labels_per_class"] == "2", "train_images"]) == {20}
    assert set(table.loc[table["labels_per_class"] == "all", "train_images"]) == {300}
    markdown = (out / "results.md").read_text()
    assert "| SimCLR | linear probe |" in markdown and " ± " in markdown
    assert (out / "label_efficiency.png").stat().st_size > 10_000
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2 * 3  # SimCLR and random encoder x pool/val/test
    # a second run reads every feature from the cache
    capsys.readouterr()
    cli_here(["evaluate", str(checkpoint), "--data.val_size=100", "--data.train_size=300", "--test_size=200",
              "--budgets", "2", "--seeds=1", "--references=false", "--cache_dir", str(tmp_path / "cache"),
              "--output_dir", str(tmp_path / "again")], tmp_path, monkeypatch)
    assert "batch/s" not in capsys.readouterr().err  # no feature-extraction progress bar: nothing was encoded


def test_sweep_input_errors_are_one_line(tmp_path, monkeypatch, capsys):
    def error_line(*args):
        with pytest.raises(SystemExit) as exit_info:
            cli_here(["evaluate", *args], tmp_path, monkeypatch)
        assert exit_info.value.code == 1
        return capsys.readouterr().err.strip().splitlines()[-1]

    assert "checkpoint not found" in error_line(str(tmp_path / "missing.ckpt"))
    model = SimCLR(encoder=EncoderConfig(width=8), projection_hidden_dim=16, projection_dim=8)
    checkpoint = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": model.state_dict(), "encoder_config": model.encoder.config}, checkpoint)
    line = error_line(str(checkpoint), "--data.val_size=100", "--data.train_size=300", "--budgets", "100", "--references=false",
                      "--cache_dir", str(tmp_path / "cache"))
    assert line.startswith("ssl-lightning: error: ") and "100 labels per class asked for, but class" in line and "use at most" in line


def test_training_benchmark_writes_its_table(tmp_path):
    out = tmp_path / "bench"
    result = subprocess.run([sys.executable, str(BENCHMARK), "training",
                             "--out", str(out), "--methods", "simclr", "--batch-size=16", "--width=8",
                             "--warmup=1", "--steps=2", "--workers=1", "--precision", "bf16-mixed"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(out / "benchmark.csv")
    assert list(table.columns) == ["method", "precision", "device", "batch_size", "image_size", "pipeline_images_per_s",
                                   "model_only_images_per_s", "fit_images_per_s", "peer_images_per_s", "peak_mem_mb",
                                   "peer_peak_mem_mb"]
    assert list(table["method"]) == ["simclr"] and list(table["precision"]) == ["bf16-mixed"]
    assert (table[["pipeline_images_per_s", "model_only_images_per_s", "peak_mem_mb"]] > 0).all().all()
    assert (table["fit_images_per_s"] > 0).all()
    assert (table["peer_images_per_s"] > 0).all() and (table["peer_peak_mem_mb"] > 0).all()
    report = (out / "benchmark.md").read_text()
    assert "ratio ssl-lightning / lightly" in report and "`ssl-lightning fit` img/s" in report
    assert "| simclr | bf16-mixed |" in report and "\n| bf16-mixed | " in report  # the method table's row, the peer table's


def test_training_benchmark_on_synthetic_colour_images(tmp_path):
    """The GPU target's shape (3 channels, 32 pixels), here 3 x 16: synthetic images, also through the CLI."""
    out = tmp_path / "bench"
    result = subprocess.run([sys.executable, str(BENCHMARK), "training", "--out", str(out), "--methods", "supervised",
                             "--image-size=16", "--channels=3", "--batch-size=16", "--width=8", "--warmup=1", "--steps=2",
                             "--no-peer"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "16x16 synthetic 3-channel images" in (out / "benchmark.md").read_text()
    assert (pd.read_csv(out / "benchmark.csv")[["pipeline_images_per_s", "model_only_images_per_s"]] > 0).all().all()


@pytest.mark.slow
def test_time_to_accuracy_benchmark_trains_probes_and_writes_the_curve(tmp_path):
    # The limit is far above the 8 steps' need (seconds), so the run ends by its epochs even on a busy machine.
    out = tmp_path / "tta"
    result = subprocess.run([sys.executable, str(BENCHMARK), "time-to-accuracy", "--minutes", "3", "--out", str(out),
                             "--model.init_args.encoder.width=8", "--data.init_args.train_size=1024", "--data.init_args.val_size=256",
                             "--trainer.max_epochs=2"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    curve = pd.read_csv(out / "curve.csv")
    assert list(curve["step"]) == [3, 7] and (curve["minutes"] > 0).all()  # 1024 images / 256 per batch = 4 steps an epoch
    assert curve["val_knn_acc"].between(0.1, 1).all()
    report = (out / "results.md").read_text()
    assert "| epochs | 2.0 |" in report and "| optimizer steps | 8 (2,048 images) |" in report
    assert "all 1,024 training images of the fit (weight decay chosen on its 256 validation images)" in report  # the fit's data
    probe = float(re.search(r"linear probe, test accuracy .*\*\*(\d+\.\d)%\*\*", report).group(1))
    assert 30 < probe < 100  # 10 classes: chance is 10%
    results = pd.read_csv(out / "results.csv").iloc[0]
    assert results["steps"] == 8 and results["linear_probe_all_test_acc"] == pytest.approx(probe / 100, abs=0.0006)


# --- the command itself: subcommands, help, parsing, predict and embed ---------------------------

from ssl_lightning.cli import COMMANDS  # noqa: E402
from ssl_lightning.predictions import load_features  # noqa: E402
from conftest import save_encoder  # noqa: E402


def test_top_level_help_lists_every_subcommand_and_loads_neither_torch_nor_lightning():
    code = ("import sys; from ssl_lightning.cli import main\n"
            "for args in (['--help'], ['checkpoints']):\n"
            "    try: main(args)\n"
            "    except SystemExit as e: assert e.code == 0, e.code\n"
            "print(sorted(m for m in ('torch', 'pytorch_lightning', 'lightning_fabric') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
    listed = re.findall(r"^  (\w+)  +\S", result.stdout, re.M)
    assert listed == list(COMMANDS) and len(listed) == 10
    assert {"fit", "evaluate", "transfer", "visualize", "checkpoints", "prepare", "embed"} <= set(listed)


@pytest.mark.parametrize("args", [[name] for name in COMMANDS] + [["visualize", name] for name in COMMANDS["visualize"].subcommands],
                         ids=" ".join)
def test_every_subcommand_has_a_clean_help(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out and " at 0x" not in out and "<function" not in out
    if args == ["checkpoints"]:
        assert "test accuracy on Fashion-MNIST" not in out  # the help, not the table


@pytest.mark.parametrize("value, parsed", [("1", 1), ("3", 3), ("0.5", 0.5), ("1.0", 1.0)])
def test_trainer_limits_keep_integers_as_batch_counts(value, parsed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = make_cli(["--config", str(SIMCLR_CONFIG), *TINY, f"--trainer.limit_val_batches={value}", "--trainer.accelerator=cpu"], run=False)
    assert cli.trainer.limit_val_batches == parsed and type(cli.trainer.limit_val_batches) is type(parsed)


PREDICT_DATA = ["--data.class_path=conftest.RandomImages", *RANDOM_DATA, "--model.init_args.encoder.width=8", "--trainer.accelerator=cpu"]


@pytest.mark.parametrize("config", ["simclr", "moco", "byol", "barlow_twins", "supervised"])
def test_predict_saves_encoder_features_and_labels_and_leaves_no_run_folder(config, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    extra = [f"--model.init_args.num_classes={RandomImages.num_classes}"] if config == "supervised" else TINY_HEADS[config]
    args = ["predict", "--config", str(CONFIGS / f"{config}.yaml"), *PREDICT_DATA, *extra]
    method = {"barlow_twins": "barlowtwins"}.get(config, config)
    if config == "simclr":  # an earlier file stays; the new one gets the next name
        (tmp_path / "predictions").mkdir()
        (tmp_path / "predictions" / "simclr-test.pt").write_text("earlier")
    main(args)
    written = f"{method}-test-1.pt" if config == "simclr" else f"{method}-test.pt"
    assert f"predictions/{written}" in capsys.readouterr().out
    saved = load_features(tmp_path / "predictions" / written)
    assert saved["features"].dtype == torch.float32 and saved["features"].shape == (32, 64)  # width 8: 8 * 8 features
    assert torch.equal(saved["labels"], torch.arange(32) % 4) and torch.equal(saved["index"], torch.arange(32))
    assert "paths" not in saved  # images from no files
    assert not (tmp_path / "checkpoints").exists()
    assert config != "simclr" or (tmp_path / "predictions" / "simclr-test.pt").read_text() == "earlier"


@pytest.mark.parametrize("subcommand", ["validate", "test"])
def test_validate_and_test_leave_no_run_folder(subcommand, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main([subcommand, "--config", str(SIMCLR_CONFIG), *PREDICT_DATA, *TINY_HEADS["simclr"]])
    assert f"{'val' if subcommand == 'validate' else 'test'}/loss" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_embed_saves_the_features_of_a_split_of_a_data_module_named_on_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = save_encoder(tmp_path / "encoder.ckpt", width=8, in_channels=1, input_size=16, mean=(0.5,), std=(0.29,))
    main(["embed", str(source), "--data", "conftest.UnlabelledRandomImages", "--data.val_size=32", "--split", "val",
          "--output", str(tmp_path / "val.pt")])
    saved = load_features(tmp_path / "val.pt")
    assert saved["features"].shape == (32, 64) and saved["split"] == "val"
    assert torch.equal(saved["labels"], torch.full((32,), -1))


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_embed_of_an_image_folder_names_each_images_file(split, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_colour_squares(tmp_path / "bees")
    (tmp_path / "bees" / "train" / "red" / "broken.png").write_bytes(b"not an image")  # skipped: the paths skip it too
    source = save_encoder(tmp_path / "encoder.ckpt", width=8, in_channels=3, input_size=16, mean=(0.5,) * 3, std=(0.29,) * 3)
    main(["embed", str(source), "--data", "ImageFolderDataModule", f"--data.data_dir={tmp_path / 'bees' / 'train'}",
          f"--data.test_dir={tmp_path / 'bees' / 'val'}", "--data.image_size=16", "--data.val_size=8", "--data.skip_unreadable=true",
          "--split", split, "--output", str(tmp_path / "f.pt")])
    saved = load_features(tmp_path / "f.pt")
    paths = [Path(path) for path in saved["paths"]]
    assert len(paths) == len(saved["features"]) == {"train": 24, "val": 8, "test": 12}[split]
    assert all(path.is_file() and path.name != "broken.png" and path.parts[-3] == ("val" if split == "test" else "train") for path in paths)
    classes = ["blue", "red"]  # the folders, sorted
    assert [classes[label] for label in saved["labels"].tolist()] == [path.parent.name for path in paths]  # file and label agree
    if split != "test":  # train and val split one folder: apart, and together every readable image
        other = "val" if split == "train" else "train"
        main(["embed", str(source), "--data", "ImageFolderDataModule", f"--data.data_dir={tmp_path / 'bees' / 'train'}",
              "--data.image_size=16", "--data.val_size=8", "--data.skip_unreadable=true", "--split", other, "--output", str(tmp_path / "g.pt")])
        others = set(load_features(tmp_path / "g.pt")["paths"])
        readable = {str(path) for path in (tmp_path / "bees" / "train").rglob("*.png") if path.name != "broken.png"}
        assert not others & set(map(str, paths)) and others | set(map(str, paths)) == readable


def test_predict_from_a_checkpoint_saves_that_encoders_features(tmp_path, monkeypatch):
    from pytorch_lightning import Trainer

    monkeypatch.chdir(tmp_path)
    model = SimCLR(encoder=TINY_ENCODER, projection_hidden_dim=32, projection_dim=16)
    trainer = Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0)
    data = RandomImages(batch_size=16, val_size=32)
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(tmp_path / "simclr.ckpt")
    main(["predict", "--config", str(SIMCLR_CONFIG), *PREDICT_DATA, *TINY_HEADS["simclr"], "--ckpt_path", str(tmp_path / "simclr.ckpt"),
          "--features.path", str(tmp_path / "features.pt"), "--trainer.precision=32-true"])  # bf16 would round them
    data.setup("test")
    with torch.no_grad():
        expected = load_encoder(tmp_path / "simclr.ckpt")(data.test_set.images.float() / 255)
    saved = load_features(tmp_path / "features.pt")
    assert torch.allclose(saved["features"], expected, atol=1e-5)
    assert saved["source"] == str(tmp_path / "simclr.ckpt")


def test_a_packaged_config_is_found_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    cli_here(["fit", "--config", "simclr", *TINY, "--trainer.max_steps=1", "--trainer.limit_val_batches=1",
              "--trainer.enable_progress_bar=false"], tmp_path, monkeypatch)
    assert (tmp_path / "checkpoints" / "simclr" / "version_0" / "checkpoints" / "last.ckpt").is_file()  # named as simclr.yaml's runs
    with pytest.raises(SystemExit) as exit_info:
        cli_here(["fit", "--config", "ssl_lightning/configs/simclr.yml", *TINY], tmp_path, monkeypatch)
    assert exit_info.value.code == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "config file not found: ssl_lightning/configs/simclr.yml" in line and "cifar10/moco, " in line


def test_read_model_config_parses_a_config_as_fit_does_and_builds_and_seeds_nothing():
    from ssl_lightning.cli.lightning import read_model_config

    torch.manual_seed(1)
    expected = torch.rand(1)
    torch.manual_seed(1)
    class_path, args = read_model_config("barlow_twins")  # a packaged name, as --config takes it
    assert torch.equal(torch.rand(1), expected)  # its seed_everything: 42 is not applied
    assert class_path == "ssl_lightning.BarlowTwins" and args["projector_dim"] == 1024  # the YAML's
    assert args["optimizer"]["name"] == "lars" and args["optimizer"]["lr"] == 0.2 and args["optimizer"]["lars_clip"] is False  # a default
    assert args["encoder"]["width"] == 16
