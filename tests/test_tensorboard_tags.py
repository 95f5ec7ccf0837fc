"""What a run writes to TensorBoard: every scalar in a group, learning rates named by parameter group
(not by optimizer), no one-point copies for the HParams tab, the same HParams columns in every run;
and what TensorBoard itself serves of it."""

import json
import re
import subprocess
import sys
import time
import urllib.request

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from conftest import CONFIGS, TINY_DATA, TINY_HEADS, cli_here
from ssl_lightning.callbacks.checkpointing import with_metric_names
from ssl_lightning.callbacks.tensorboard import HPARAMS_METRICS, EmbeddingProjector, tensorboard_hparams
from ssl_lightning.errors import ConfigError

RANKING = ("loss", "acc_top1", "acc_top5", "acc_mean_pos")
SCALARS = {*(f"{stage}/{name}" for stage in ("train", "val") for name in RANKING),
           "train/target_momentum", "train/online_probe_loss", "train/epoch", "val/online_probe_acc", "val/knn_acc",
           "train/lr/weights", "train/lr/biases_and_norms", "val/embedding_std", "val/rankme"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The run folder of a tiny BYOL fit: LARS (an optimizer whose name LearningRateMonitor would put
    in the tags), a target momentum, view pairs and a projector of 32 images."""
    folder = tmp_path_factory.mktemp("tensorboard")
    with pytest.MonkeyPatch.context() as monkeypatch:
        cli_here(["fit", "--config", str(CONFIGS / "byol.yaml"), *TINY_DATA, *TINY_HEADS["byol"], "--trainer.max_epochs=2",
                  "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.log_every_n_steps=1",
                  "--online_eval.eval_images=64", "--projector.num_images=32"], folder, monkeypatch)
    return folder / "checkpoints" / "byol" / "version_0"


def test_a_fit_writes_grouped_scalars_and_the_hparams_columns(tiny_run):
    events = EventAccumulator(str(tiny_run), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    assert set(events.Tags()["scalars"]) == SCALARS

    plugin = {tag: HParamsPluginData.FromString(content) for tag, content in events.PluginTagToContent("hparams").items()}
    columns = [info.name.tag for info in plugin["_hparams_/experiment"].experiment.metric_infos]
    assert columns == list(HPARAMS_METRICS) and {"val/knn_acc", "val/acc_top5"} <= set(columns)
    declared = {info.name for info in plugin["_hparams_/experiment"].experiment.hparam_infos}
    assert {"method", "optimizer/lr", "temperature", "queue_size", "lambd", "num_classes", "data_dir"} <= declared  # every method's, in a BYOL run
    hparams = plugin["_hparams_/session_start_info"].session_start_info.hparams
    assert hparams["method"].string_value == "BYOL" and hparams["target_momentum"].number_value == 0.99  # the model's
    assert hparams["batch_size"].number_value == 32 and not [name for name in hparams if name.startswith("_")]  # the data's

    # Chosen by val/knn_acc; its file name has "_" for "/", in the checkpoints folder itself.
    (best,) = (tiny_run / "checkpoints").glob("best-*.ckpt")
    assert best.name.startswith("best-epoch=") and "-val_knn_acc=" in best.name


def test_checkpoint_file_names_write_a_metric_s_slash_as_an_underscore():
    assert with_metric_names("best-{epoch}-{step}-{val/knn_acc:.4f}") == "best-epoch={epoch}-step={step}-val_knn_acc={val/knn_acc:.4f}"
    assert with_metric_names("last") == "last"


def test_hyperparameters_are_flattened_and_shown_as_text_where_not_numbers():
    flat = tensorboard_hparams({"lr": 0.1, "views": {"crop_scale": [0.2, 1.0], "blur": None}, "small_images": True,
                                "_instantiator": "pytorch_lightning.cli.instantiate_module"})
    assert flat == {"lr": 0.1, "views/crop_scale": "[0.2, 1.0]", "views/blur": "None", "small_images": True}


def test_a_negative_projector_size_is_refused():
    with pytest.raises(ConfigError, match="num_images must be >= 0"):
        EmbeddingProjector(num_images=-1)


def get_json(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def poll(read, done, seconds: float):
    """``read()`` again until ``done`` of it holds (TensorBoard loads runs and finds the projector's
    data in the background), for at most ``seconds``; the last reading."""
    deadline = time.monotonic() + seconds
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.25)
        value = read()
    return value


@pytest.mark.slow
def test_tensorboard_serves_the_scalars_images_hparams_and_projector_of_a_run(tiny_run):
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(tiny_run.parent), "--host", "127.0.0.1",
                               "--port", "0", "--load_fast=false"],  # port 0: one the system picks, printed at start
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output = ""
        while (found := re.search(r"http://127\.0\.0\.1:(\d+)/", output)) is None:
            line = server.stdout.readline()
            assert line, f"TensorBoard ended before serving:\n{output}"
            output += line
        base = f"http://127.0.0.1:{found.group(1)}/data"
        plugins = poll(lambda: get_json(f"{base}/plugins_listing"),
                       lambda listing: all(listing.get(name, {}).get("enabled") for name in ("scalars", "images", "hparams", "projector")), 15)
        assert {name for name, plugin in plugins.items() if plugin["enabled"]} >= {"scalars", "images", "hparams", "projector"}, plugins

        tags = poll(lambda: get_json(f"{base}/plugin/scalars/tags"), lambda runs: tiny_run.name in runs, 10)
        assert set(tags[tiny_run.name]) == SCALARS
        assert "views/pairs" in get_json(f"{base}/plugin/images/tags")[tiny_run.name]

        experiment = get_json(f"{base}/plugin/hparams/experiment", {"experimentName": ""})
        assert [info["name"]["tag"] for info in experiment["metricInfos"]] == list(HPARAMS_METRICS)
        hparams = {info["name"] for info in experiment["hparamInfos"]}
        assert {"method", "target_momentum", "optimizer/lr", "batch_size"} <= hparams
    finally:
        server.terminate()
        server.wait(timeout=10)
