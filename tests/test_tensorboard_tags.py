"""What a run writes to TensorBoard: every scalar in a group, learning rates named by parameter group
(not by optimizer), no one-point copies for the HParams tab, the same HParams columns in every run."""

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from conftest import CONFIGS, TINY_DATA, TINY_HEADS, cli_here
from ssl_lightning.callbacks.checkpointing import with_metric_names
from ssl_lightning.callbacks.tensorboard import HPARAMS_METRICS, tensorboard_hparams

RANKING = ("loss", "acc_top1", "acc_top5", "acc_mean_pos")


def test_a_fit_writes_grouped_scalars_and_the_hparams_columns(tmp_path, monkeypatch):
    # BYOL: LARS (an optimizer whose name LearningRateMonitor would put in the tags) and a target momentum.
    cli_here(["fit", "--config", str(CONFIGS / "byol.yaml"), *TINY_DATA, *TINY_HEADS["byol"], "--trainer.max_epochs=2",
              "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.log_every_n_steps=1",
              "--online_eval.eval_images=64", "--projector.num_images=0"], tmp_path, monkeypatch)
    run = tmp_path / "checkpoints" / "byol" / "version_0"
    events = EventAccumulator(str(run), size_guidance={"scalars": 0, "tensors": 0}).Reload()

    expected = {*(f"{stage}/{name}" for stage in ("train", "val") for name in RANKING),
                "train/target_momentum", "train/online_probe_loss", "train/epoch", "val/online_probe_acc", "val/knn_acc",
                "lr/weights", "lr/biases_and_norms"}
    assert set(events.Tags()["scalars"]) == expected

    plugin = {tag: HParamsPluginData.FromString(content) for tag, content in events.PluginTagToContent("hparams").items()}
    columns = [info.name.tag for info in plugin["_hparams_/experiment"].experiment.metric_infos]
    assert columns == list(HPARAMS_METRICS) and {"val/knn_acc", "val/acc_top5"} <= set(columns)
    hparams = plugin["_hparams_/session_start_info"].session_start_info.hparams
    assert hparams["method"].string_value == "BYOL" and hparams["target_momentum"].number_value == 0.99  # the model's
    assert hparams["batch_size"].number_value == 32 and not [name for name in hparams if name.startswith("_")]  # the data's

    # Chosen by val/knn_acc; its file name has "_" for "/", in the checkpoints folder itself.
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    assert best.name.startswith("best-epoch=") and "-val_knn_acc=" in best.name


def test_checkpoint_file_names_write_a_metric_s_slash_as_an_underscore():
    assert with_metric_names("best-{epoch}-{step}-{val/knn_acc:.4f}") == "best-epoch={epoch}-step={step}-val_knn_acc={val/knn_acc:.4f}"
    assert with_metric_names("last") == "last"


def test_hyperparameters_are_flattened_and_shown_as_text_where_not_numbers():
    flat = tensorboard_hparams({"lr": 0.1, "views": {"crop_scale": [0.2, 1.0], "blur": None}, "small_images": True,
                                "_instantiator": "pytorch_lightning.cli.instantiate_module"})
    assert flat == {"lr": 0.1, "views/crop_scale": "[0.2, 1.0]", "views/blur": "None", "small_images": True}
