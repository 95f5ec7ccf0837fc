"""Pictures: the visualize commands write PNGs, and a run's TensorBoard gets projector and HParams data."""

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import CONFIGS, SIMCLR_CONFIG, TINY, TINY_DATA, cli_here, save_encoder, write_colour_squares
from ssl_lightning.cli import main


@pytest.fixture
def fashion_encoder(tmp_path):
    """A random width-8 encoder for 28x28 Fashion-MNIST, saved as an encoder-only checkpoint."""
    return save_encoder(tmp_path / "tiny.pt", width=8, in_channels=1, input_size=28)


def assert_png(path, min_side=100):
    assert path.stat().st_size > 5_000
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) >= min_side


def test_embeddings_writes_pca_and_tsne(fashion_encoder, tmp_path, capsys):
    out = tmp_path / "pictures"
    main(["visualize", "embeddings", str(fashion_encoder), "--num_images=150", f"--output_dir={out}", "--cache_dir=null"])
    assert_png(out / "pca.png")
    assert_png(out / "tsne.png")
    assert str(out) in capsys.readouterr().out  # the folder is printed


def test_neighbours_grid_marks_wrong_classes(fashion_encoder, tmp_path):
    out = tmp_path / "pictures"
    main(["visualize", "neighbours", str(fashion_encoder), "--queries=4", "--k=3", "--gallery_size=300",
          f"--output_dir={out}", "--cache_dir=null"])
    assert_png(out / "neighbours.png")


def test_embeddings_and_neighbours_of_an_rgb_image_folder_each_in_a_new_folder(tmp_path, monkeypatch):
    """Any labelled data module (class names come from it); each command writes to a new results/visualize/run_N."""
    from ssl_lightning import visualize

    write_colour_squares(tmp_path / "bees")
    source = save_encoder(tmp_path / "rgb.pt", width=8, in_channels=3, input_size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    plotted = {}
    real_plots, real_grid = visualize.embedding_plots, visualize.retrieval_grid
    monkeypatch.setattr(visualize, "embedding_plots", lambda features, names, *a: plotted.update(names=names) or real_plots(features, names, *a))
    monkeypatch.setattr(visualize, "retrieval_grid", lambda *a: plotted.update(grid_names=a[4], queries=a[0][1]) or real_grid(*a))
    monkeypatch.chdir(tmp_path)
    data = ["--data.class_path=ImageFolderDataModule", f"--data.init_args.data_dir={tmp_path / 'bees' / 'train'}",
            f"--data.init_args.test_dir={tmp_path / 'bees' / 'val'}", "--data.init_args.image_size=16", "--data.init_args.val_size=8",
            "--data.init_args.batch_size=8", "--cache_dir=null"]
    main(["visualize", "embeddings", str(source), "--num_images=10", *data])
    main(["visualize", "neighbours", str(source), "--queries=2", "--k=3", *data])
    assert_png(tmp_path / "results" / "visualize" / "run_0" / "pca.png")
    assert_png(tmp_path / "results" / "visualize" / "run_1" / "neighbours.png")
    assert len(plotted["names"]) == 10 and set(plotted["names"]) == {"red", "blue"}
    assert plotted["grid_names"] == ["blue", "red"] and sorted(plotted["queries"].tolist()) == [0, 1]  # one query per class


@pytest.mark.slow
@pytest.mark.parametrize("config", ["simclr", "supervised"])
def test_views_preview_of_a_config_through_the_cli(config, tmp_path, monkeypatch, capsys):
    given = config if config == "simclr" else str(CONFIGS / f"{config}.yaml")  # a packaged config's name, and a path
    cli_here(["visualize", "views", "--config", given, *TINY_DATA, "--num_images=3", "--draws=2"], tmp_path, monkeypatch)
    path = tmp_path / "results" / "visualize" / "run_0" / "views.png"
    assert "results/visualize/run_0" in capsys.readouterr().out
    assert_png(path)
    with Image.open(path) as image:  # rows: the images, then 2 draws of each view (SimCLR: 2 views, supervised: 1)
        # 126.5 px a row; the saved figure is cropped to what it draws (a few px less than its size)
        assert image.height == pytest.approx(110 * (0.6 + 1.15 * (1 + 2 * (2 if config == "simclr" else 1))), abs=15)


def test_view_rows_show_each_view_from_its_own_pipeline():
    """BYOL's asymmetric views: a row of images, then each view's draws, headed with its settings."""
    from ssl_lightning.augment import BYOL_VIEWS, SIMCLR_VIEW, ViewPipelines
    from ssl_lightning.visualize import view_rows

    images = torch.rand(3, 1, 20, 20)
    small = {**SIMCLR_VIEW, "crop_size": 8}
    rows = view_rows(images, ViewPipelines([*BYOL_VIEWS, small], channels=1, image_size=20), draws=2)
    headers = [header for header, _ in rows]
    assert headers[0] == "original" and torch.equal(rows[0][1], images)
    assert headers[1:] == [f"view {v}\n({settings})\ndraw {d}" for v, settings in (
        (1, "crop 0.08-1.0, blur 1.0, solarize 0.0"), (2, "crop 0.08-1.0, blur 0.1, solarize 0.2"),
        (3, "8 px, crop 0.08-1.0, blur 0.5, solarize 0.0")) for d in (1, 2)]
    assert [tuple(batch.shape) for _, batch in rows] == [(3, 1, 20, 20)] * 5 + [(3, 1, 8, 8)] * 2
    assert not torch.equal(rows[1][1], rows[2][1])  # two draws of view 1


@pytest.mark.slow
def test_a_run_logs_the_projector_and_hparams(tmp_path, monkeypatch):
    cli_here(["fit", "--config", str(SIMCLR_CONFIG), *TINY, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
              "--trainer.limit_val_batches=1", "--projector.num_images=40"], tmp_path, monkeypatch)
    run = tmp_path / "checkpoints" / "simclr" / "version_0"
    config = (run / "projector_config.pbtxt").read_text()
    assert "val_features" in config and "sprite" in config and "metadata" in config
    [folder] = [p.parent for p in run.glob("*/val_features/sprite.png")]
    metadata = (folder / "metadata.tsv").read_text().splitlines()
    assert len(metadata) == 40 and set(metadata) <= {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                                     "Sneaker", "Bag", "Ankle boot"}
    assert len((folder / "tensors.tsv").read_text().splitlines()) == 40
    events = EventAccumulator(str(run), size_guidance={"scalars": 0}).Reload()
    assert not [tag for tag in events.Tags()["scalars"] if tag.startswith("hparams/")]  # no one-point copies
    assert events.PluginTagToContent("hparams")  # the HParams tab has the run


def test_log_view_pairs_shows_every_view_of_each_image_side_by_side(tmp_path):
    """Three views, the third a smaller crop: each image's views in a row, the small one enlarged
    to the first's side, and a text naming each view's settings."""
    from types import SimpleNamespace

    from pytorch_lightning.loggers import TensorBoardLogger

    from ssl_lightning.augment import BYOL_VIEWS, SIMCLR_VIEW, ViewPipelines
    from ssl_lightning.callbacks import LogViewPairs
    from ssl_lightning.methods import ViewBatch

    logger = TensorBoardLogger(tmp_path, name="run")
    views = [torch.zeros(5, 1, 16, 16), torch.full((5, 1, 16, 16), 0.5), torch.ones(5, 1, 8, 8)]
    configs = [*BYOL_VIEWS, {**SIMCLR_VIEW, "crop_size": 8}]
    LogViewPairs(num_pairs=4).on_validation_batch_start(
        SimpleNamespace(logger=logger, global_step=0), SimpleNamespace(views=ViewPipelines(configs, channels=1, image_size=16)),
        ViewBatch(views, torch.zeros(5), torch.zeros(5, 1, 16, 16)), batch_idx=0)
    logger.experiment.flush()
    events = EventAccumulator(str(tmp_path / "run" / "version_0"), size_guidance={"images": 0, "tensors": 0}).Reload()
    (grid,) = events.Images("views/pairs")
    # 3 views x 2 images per grid row, 4 images: 6 columns and 2 rows of 16 px tiles with 2 px padding.
    assert (grid.width, grid.height) == (6 * 18 + 2, 2 * 18 + 2)
    (text,) = events.Tensors("views/configs/text_summary")  # add_text's tag
    legend = text.tensor_proto.string_val[0].decode()
    assert "view 2: crop 0.08-1.0, blur 0.1, solarize 0.2" in legend and "view 3: 8 px" in legend
