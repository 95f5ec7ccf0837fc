"""Linear probe, kNN, feature cache, label budgets, online evaluation and the supervised baseline."""

import logging
import math

import pytest
import torch
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint

from conftest import TINY_ENCODER, LabelsApart, RandomImages, UnlabelledRandomImages, fit, save_encoder, write_colour_squares
from ssl_lightning import load_encoder
from ssl_lightning.classification import accuracy
from ssl_lightning.data.label_budget import sample_per_class, seeded_subset, stratified_subset
from ssl_lightning.data.source import UNLABELLED, TensorSource
from ssl_lightning.data.subset import LabelledSubset
from ssl_lightning.errors import ConfigError, UserError
from ssl_lightning.evaluation.features import loader_features
from ssl_lightning.evaluation import features as features_module
from ssl_lightning.evaluation import (
    LinearProbe, OnlineEvaluation, cached_features, extract_features, fit_linear_probe, knn_accuracy, knn_scores,
)
from ssl_lightning.data import ImageFolderDataModule, ShardedDataModule
from ssl_lightning.evaluation.label_efficiency import draws, evaluate
from ssl_lightning.evaluation.linear_probe import feature_loader, quiet_trainer
from ssl_lightning.methods import SimCLR, Supervised
from ssl_lightning.methods.base import ViewBatch


def blobs(n, dim=16, classes=4, seed=0, spread=0.1):
    """Linearly separable features: tight clusters around random class centres."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 3
    labels = torch.arange(n) % classes
    return centres[labels] + spread * torch.randn(n, dim, generator=g), labels


# --- linear probe ---------------------------------------------------------------------------

@pytest.mark.parametrize("optimizer", ["lbfgs", "adamw"])
def test_probe_separates_separable_features(optimizer):
    probe, val_acc = fit_linear_probe(blobs(200), blobs(100, seed=1), num_classes=4, weight_decay=1e-4,
                                      optimizer=optimizer, max_epochs=None if optimizer == "lbfgs" else 30)
    assert val_acc == 1.0
    test_features, test_labels = blobs(100, seed=2)
    result = quiet_trainer().test(probe, feature_loader(test_features, test_labels), verbose=False)[0]
    assert result["test/acc"] == 1.0


def test_probe_on_random_labels_is_near_chance_on_new_data():
    features, _ = blobs(400, seed=3)
    labels = torch.randint(0, 4, (400,), generator=torch.Generator().manual_seed(0))
    _, val_acc = fit_linear_probe((features[:300], labels[:300]), (features[300:], labels[300:]), 4, weight_decay=1e-2)
    assert val_acc < 0.45  # chance is 0.25: the probe cannot invent signal


def test_probe_logged_accuracy_matches_a_hand_count():
    features, labels = blobs(50, dim=2, seed=4, spread=3.0)  # overlapping: accuracy well below 1
    probe, _ = fit_linear_probe((features, labels), (features, labels), 4, weight_decay=1e-3)
    result = quiet_trainer().test(probe, feature_loader(features, labels, batch_size=7), verbose=False)[0]
    with torch.no_grad():
        by_hand = (probe(features).argmax(1) == labels).float().mean().item()
    assert result["test/acc"] == pytest.approx(by_hand, abs=1e-6) and by_hand < 1


def test_probe_only_trains_the_linear_layer_and_the_encoder_is_unchanged(random_images, tiny_simclr_kwargs):
    encoder = SimCLR(**tiny_simclr_kwargs).encoder
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    random_images.setup("fit")
    train, val = random_images.train_set, random_images.val_set
    train_features = extract_features(encoder, train.images)
    probe, _ = fit_linear_probe((train_features, train.labels), (extract_features(encoder, val.images), val.labels), 4, 1e-3)
    assert [name for name, p in probe.named_parameters() if p.requires_grad] == ["linear.weight", "linear.bias"]
    assert probe.linear.weight.abs().sum() > 0  # it did train
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    assert encoder.training  # extract_features restores the mode it found


def test_probe_rejects_an_unknown_optimizer():
    with pytest.raises(ConfigError, match="lbfgs"):
        LinearProbe(4, 2, optimizer="sgd")


def test_probe_without_labels_says_so_in_one_line():
    features, labels = blobs(20)
    with pytest.raises(ConfigError, match=r"the linear probe needs labelled images, but 20 of the 20 it got have no label \(-1\)"):
        fit_linear_probe((features, torch.full_like(labels, UNLABELLED)), (features, labels), num_classes=4, weight_decay=1e-3)
    with pytest.raises(ConfigError, match="the linear probe needs labelled data, but num_classes is None"):
        LinearProbe(16, None)


# --- kNN ------------------------------------------------------------------------------------

def test_knn_matches_a_hand_computed_case():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    bank_labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[1.0, 0.2]])
    norm = math.hypot(1.0, 0.2)
    s = [1 / norm, 0.2 / norm, 1.2 / (norm * math.sqrt(2))]  # cosine similarities to the three
    # k=2, T=1: the first and the third vote, each with weight exp(s).
    scores = knn_scores(bank, bank_labels, query, num_classes=2, k=2, temperature=1.0)[0]
    assert (scores[1] / scores[0]).item() == pytest.approx(math.exp(s[2]) / math.exp(s[0]), rel=1e-5)
    assert scores.argmax().item() == 0
    # k=3: class 1 gets two votes and wins.
    scores = knn_scores(bank, bank_labels, query, num_classes=2, k=3, temperature=1.0)[0]
    assert (scores[1] / scores[0]).item() == pytest.approx((math.exp(s[1]) + math.exp(s[2])) / math.exp(s[0]), rel=1e-5)
    assert knn_accuracy(bank, bank_labels, query, torch.tensor([1]), 2, k=3, temperature=1.0) == 1.0
    # a lower temperature sharpens the vote towards the nearest neighbour
    assert knn_scores(bank, bank_labels, query, 2, k=3, temperature=0.05)[0].argmax().item() == 0


def test_knn_uses_every_feature_when_k_exceeds_the_bank_and_survives_tiny_temperatures():
    bank, labels = blobs(20)
    scores = knn_scores(bank, labels, bank, 4, k=200, temperature=1e-3)
    assert torch.isfinite(scores).all()
    assert (scores.argmax(1) == labels).all()
    with pytest.raises(ConfigError, match="temperature"):
        knn_scores(bank, labels, bank, 4, temperature=0.0)


# --- label budgets --------------------------------------------------------------------------

def test_budget_sampler_counts_seeds_and_errors():
    labels = torch.arange(100) % 5  # 20 per class
    idx = sample_per_class(labels, 7, seed=0)
    assert torch.bincount(labels[idx]).tolist() == [7] * 5 and len(idx.unique()) == 35
    assert torch.equal(idx, sample_per_class(labels, 7, seed=0))
    assert not torch.equal(idx, sample_per_class(labels, 7, seed=1))
    with pytest.raises(ConfigError, match="class 0 has only 20 images.*at most 20"):
        sample_per_class(labels, 21, seed=0)


def test_budget_draws_come_from_the_train_part_only():
    data = RandomImages(batch_size=8, val_size=32, labels_per_class=5, label_seed=3)
    images, labels = data.load_split(train=True)
    train_idx, val_idx = data.split_indices(labels)
    assert torch.bincount(labels[train_idx]).tolist() == [5] * 4
    assert not set(train_idx.tolist()) & set(val_idx.tolist())
    data.setup("fit")
    data.setup("test")
    assert len(data.train_set) == 20 and len(data.val_set) == 32 and len(data.test_set) == 32
    # the sweep's draws over the pool are the data module's draws, seed by seed
    pool_labels = labels[RandomImages(val_size=32).split_indices(labels)[0]]
    for budget, seed, idx in draws(pool_labels, [5, "all"], seeds=2):
        expected = RandomImages(val_size=32, labels_per_class=None if budget == "all" else budget, label_seed=seed)
        assert torch.equal(expected.split_indices(labels)[0], RandomImages(val_size=32).split_indices(labels)[0][idx])
    test_images = {img.numpy().tobytes() for img in data.test_set.images}
    assert not any(img.numpy().tobytes() in test_images for img in data.train_set.images)


SWEEP_DATA = {
    # case: (data module and encoder config given a folder; budgets; supervised steps)
    # Like STL-10, the labels are drawn from other images than those it pretrains on: the
    # supervised baseline must train on those too.
    "labels apart": (lambda root: (LabelsApart(batch_size=16, val_size=32), dict(in_channels=1)), [2], 1),
    "RGB image folder, streamed": (lambda root: (
        ImageFolderDataModule(data_dir=str(write_colour_squares(root) or root / "train"), test_dir=str(root / "val"), image_size=16,
                              val_size=8, batch_size=8, in_memory=False),
        dict(in_channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)), [2, "all"], 0),
    "shards": (lambda root: (ShardedDataModule(str(write_labelled_shards(root)), batch_size=8), dict(in_channels=1)), [2, "all"], 0),
}


def write_labelled_shards(root):
    """A sharded dataset of 4 classes: 48 train, 16 val and 16 test images of RandomImages' kind."""
    from ssl_lightning.data.prepare import write_shards

    images = RandomImages(val_size=32).source(train=True)
    test = RandomImages(val_size=32).source(train=False)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    write_shards(images, root, train=order[16:64], val=order[:16], test_source=TensorSource(test.images[:16], test.labels[:16]),
                 classes=["a", "b", "c", "d"], chunk_bytes="2KB")
    return root


@pytest.mark.parametrize("case", sorted(SWEEP_DATA))
def test_sweep_on_any_labelled_data_module(case, tmp_path):
    make, budgets, supervised_steps = SWEEP_DATA[case]
    data, encoder_config = make(tmp_path / "bees")
    checkpoint = save_encoder(tmp_path / "encoder.pt", width=8, input_size=16, **encoder_config)
    table = evaluate([checkpoint], data=data, budgets=budgets, seeds=1, weight_decays=[1e-3], knn_k=5,
                     supervised_steps=supervised_steps, output_dir=tmp_path / "out", cache_dir=None)
    labelled = len(data.labelled_set)
    assert labelled == {"labels apart": 64, "shards": 48}.get(case, 24)  # the pool is the labelled set (train_set has none there)
    assert set(table["model"]) == {"SimCLR", "random encoder", "raw pixels", "pixel PCA"} | ({"supervised"} if supervised_steps else set())
    assert len(table) == 4 * 2 * len(budgets) + (len(budgets) if supervised_steps else 0)
    assert set(table.loc[table["labels_per_class"] == "all", "train_images"]) <= {labelled}
    assert set(table.loc[table["labels_per_class"] == 2, "train_images"]) == {2 * data.num_classes}
    assert table["test_acc"].between(0, 1).all() and (tmp_path / "out" / "results.md").is_file()


def test_the_pca_reference_projects_every_part_on_the_pools_top_components():
    from ssl_lightning.evaluation.label_efficiency import principal_components

    g = torch.Generator().manual_seed(0)
    directions = torch.linalg.qr(torch.randn(20, 3, generator=g))[0].T  # (3, 20): orthonormal
    spread = torch.tensor([5.0, 2.0, 1.0])
    pool = (torch.randn(200, 3, generator=g) * spread) @ directions + 0.01 * torch.randn(200, 20, generator=g)
    test = torch.randn(7, 3, generator=g) @ directions
    out = principal_components({"pool": pool, "test": test}, k=2)
    assert out["pool"].shape == (200, 2) and out["test"].shape == (7, 2) and out["pool"].dtype == torch.float32
    # The two components are the two widest directions: the test points' coordinates along them, up to sign.
    expected = (test - pool.mean(0)) @ directions[:2].T
    assert torch.allclose(out["test"].abs(), expected.abs(), atol=0.05)
    assert principal_components({"pool": pool[:5]}, k=64)["pool"].shape == (5, 5)  # at most min(N, D) components


def test_sweep_adapts_an_rgb_folder_to_a_grayscale_encoder_and_caps_the_pool(tmp_path, capsys):
    """As transfer does: the luma of RGB images feeds a grayscale encoder; ``train_size`` draws the
    budgets from a stratified part of the labelled pool (24 images here, 12 per class)."""
    write_colour_squares(tmp_path / "bees")
    data = ImageFolderDataModule(data_dir=str(tmp_path / "bees" / "train"), test_dir=str(tmp_path / "bees" / "val"), image_size=16,
                                 val_size=8, batch_size=8)
    checkpoint = save_encoder(tmp_path / "encoder.pt", width=8, input_size=16, in_channels=1)
    table = evaluate([checkpoint], data=data, train_size=10, budgets=[2, "all"], seeds=1, weight_decays=[1e-3], knn_k=5,
                     references=False, output_dir=tmp_path / "out", cache_dir=None)
    assert "SimCLR's encoder takes 1-channel images: RGB -> grayscale (luma" in capsys.readouterr().out
    assert set(table.loc[table["labels_per_class"] == "all", "train_images"]) == {10}
    assert table["test_acc"].between(0, 1).all()


def test_stratified_subset_keeps_each_class_share():
    labels = torch.tensor([0] * 30 + [1] * 10)
    chosen = stratified_subset(labels, 8, seed=0)
    assert torch.bincount(labels[chosen]).tolist() == [6, 2] and len(set(chosen.tolist())) == 8
    assert torch.equal(chosen, stratified_subset(labels, 8, seed=0)) and not torch.equal(chosen, stratified_subset(labels, 8, seed=1))
    assert torch.equal(stratified_subset(labels, 50), torch.arange(40))


def test_draws_repeat_all_only_once():
    seen = [(budget, seed) for budget, seed, _ in draws(torch.arange(40) % 4, [2, "all"], seeds=3)]
    assert seen == [(2, 0), (2, 1), (2, 2), ("all", 0)]


# --- extract_features' inputs, load_encoder's device and dtype --------------------------------

@pytest.fixture
def tiny_encoder_file(tmp_path):
    return save_encoder(tmp_path / "encoder.pt", width=8, input_size=16)


def test_features_of_uint8_and_of_unit_floats_are_the_same(tiny_encoder_file):
    encoder = load_encoder(tiny_encoder_file)
    images = torch.randint(0, 256, (6, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    from_uint8 = extract_features(encoder, images, batch_size=4)
    assert torch.allclose(from_uint8, extract_features(encoder, images.float() / 255, batch_size=4))
    assert torch.allclose(from_uint8, extract_features(encoder, images.double() / 255), atol=1e-6)


@pytest.mark.parametrize("images, message", [
    (torch.arange(256.0).view(1, 1, 16, 16), r"float images must lie in \[0, 1\], got values from 0 to 255;"),  # 0-255 floats
    (torch.linspace(-1, 1, 256).view(1, 1, 16, 16), r"must lie in \[0, 1\], got values from -1 to 1;.*unnormalised"),  # normalised
    (torch.full((4, 1, 16, 16), float("nan")), r"must lie in \[0, 1\], got values from nan"),
    (torch.arange(256).view(1, 1, 16, 16), r"uint8 in \[0, 255\] or float in \[0, 1\], got dtype torch.int64"),
    (torch.ones(4, 1, 16, 16, dtype=torch.bool), "got dtype torch.bool"),
])
def test_extract_features_refuses_other_images_in_one_line(tiny_encoder_file, images, message):
    with pytest.raises(UserError, match=message) as error:
        extract_features(load_encoder(tiny_encoder_file), images)
    assert "\n" not in str(error.value)


def test_load_encoder_casts_and_moves(tiny_encoder_file):
    reference = load_encoder(tiny_encoder_file)
    half = load_encoder(tiny_encoder_file, dtype=torch.bfloat16)
    assert {p.dtype for p in half.state_dict().values() if p.is_floating_point()} == {torch.bfloat16}
    images = torch.randint(0, 256, (4, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert half(images.float() / 255).dtype == torch.bfloat16  # float32 images are cast to the encoder's dtype
    features, expected = extract_features(half, images), extract_features(reference, images)
    assert features.dtype == torch.float32 and torch.allclose(features, expected, atol=0.05 * expected.abs().max().item())
    assert not half.training
    meta = load_encoder(tiny_encoder_file, device="meta")  # any device: meta needs no hardware
    assert {t.device.type for t in meta.state_dict().values()} == {"meta"}
    with pytest.raises(ConfigError, match="floating type"):
        load_encoder(tiny_encoder_file, dtype=torch.int8)


# --- feature cache --------------------------------------------------------------------------

def test_cache_is_reused_and_invalidated_when_the_images_or_the_checkpoint_change(random_images, tiny_simclr_kwargs, tmp_path, monkeypatch):
    _, checkpoint = fit(SimCLR(**tiny_simclr_kwargs), random_images, tmp_path, max_steps=1, limit_val_batches=0)
    path = checkpoint.last_model_path
    data = RandomImages(batch_size=16, val_size=32)
    data.setup("fit")
    calls = []
    real_features = features_module.loader_features
    monkeypatch.setattr(features_module, "loader_features", lambda *a, **k: calls.append(1) or real_features(*a, **k))

    first = cached_features(load_encoder(path), data, data.val_set, "val", tmp_path / "cache")
    again = cached_features(load_encoder(path), data, data.val_set, "val", tmp_path / "cache")
    assert len(calls) == 1 and torch.equal(first, again)
    assert torch.allclose(first, extract_features(load_encoder(path), data.val_set.images), atol=1e-6)  # batch by batch = all at once
    cached_features(load_encoder(path), data, LabelledSubset(data.val_set, torch.arange(5)), "val", tmp_path / "cache")
    assert len(calls) == 2  # other images: other features
    other_split = RandomImages(batch_size=16, val_size=32, seed=1)
    other_split.setup("fit")
    cached_features(load_encoder(path), other_split, other_split.val_set, "val", tmp_path / "cache")
    assert len(calls) == 3  # another seed holds out other images

    state = torch.load(path, weights_only=False)
    name = next(k for k in state["state_dict"] if k.startswith("encoder.") and k.endswith("conv1.weight"))
    state["state_dict"][name] = state["state_dict"][name] * 2
    torch.save(state, path)
    changed = cached_features(load_encoder(path), data, data.val_set, "val", tmp_path / "cache")
    assert len(calls) == 4 and not torch.allclose(changed, first)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 4 and not list((tmp_path / "cache").glob("*.tmp"))


def test_streamed_and_in_memory_images_give_the_same_features(tiny_simclr_kwargs):
    encoder = SimCLR(**tiny_simclr_kwargs).encoder
    features = {}
    for in_memory in (True, False):
        data = RandomImages(batch_size=16, val_size=32, in_memory=in_memory)
        data.setup("fit")
        subset = LabelledSubset(data.val_set, torch.tensor([3, 0, 17, 31]))
        features[in_memory] = loader_features(encoder, data.eval_dataloader(subset), desc=None)
    assert type(data.val_set).__name__ == "LabelledSubset"  # streamed: decoded item by item
    assert torch.allclose(features[True][0], features[False][0], atol=1e-6) and torch.equal(features[True][1], features[False][1])
    assert torch.equal(features[False][1], data.val_set.labels[[3, 0, 17, 31]])


# --- online evaluation ----------------------------------------------------------------------

def train_simclr(kwargs, data, tmp_path, callbacks, **trainer_kwargs):
    """A seeded tiny SimCLR fit on the CPU, by default without logger or checkpoints: (model, trainer)."""
    torch.manual_seed(0)
    model = SimCLR(**kwargs)
    trainer = Trainer(default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=callbacks, **{"max_epochs": 2, "enable_checkpointing": False, **trainer_kwargs})
    trainer.fit(model, datamodule=data)
    return model, trainer


def assert_same_encoder(a, b):
    for (name, x), y in zip(a.encoder.state_dict().items(), b.encoder.state_dict().values()):
        assert torch.equal(x, y), name


def test_online_evaluation_logs_and_never_changes_the_encoder(tiny_simclr_kwargs, tmp_path):
    """Labelled training data: the probe trains on the training batches; the kNN bank is the final
    encoder's clean features of (a seeded subset of) the training images, the queries every
    validation image, exactly as computed here from the in-memory tensors."""
    online = OnlineEvaluation(eval_images=40, knn_k=5)
    data = RandomImages(batch_size=16, val_size=32)
    with_callback, trainer = train_simclr(tiny_simclr_kwargs, data, tmp_path, [online])
    without_callback, _ = train_simclr(tiny_simclr_kwargs, RandomImages(batch_size=16, val_size=32), tmp_path, [])
    # Same seed, same data: the encoder's weights (hence every gradient step) are bit-identical.
    assert_same_encoder(with_callback, without_callback)
    metrics = trainer.callback_metrics
    assert online.mode == "training batches" and 0 <= metrics["val/online_probe_acc"] <= 1
    assert online.classifier.weight.abs().sum() > 0  # the probe trained
    keep = seeded_subset(len(data.train_set), 40).sort().values  # 64 training images: the bank capped at 40
    bank = extract_features(with_callback.encoder, data.train_set.images[keep])
    queries = extract_features(with_callback.encoder, data.val_set.images)
    expected_knn = knn_accuracy(bank, data.train_set.labels[keep], queries, data.val_set.labels, 4, k=5, temperature=0.1)
    assert metrics["val/knn_acc"].item() == pytest.approx(expected_knn, abs=1e-6)


def test_online_evaluation_without_labels_turns_itself_off_and_says_so_once(tiny_simclr_kwargs, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pytorch_lightning")  # evaluate() quiets Lightning's logger
    online = OnlineEvaluation()
    data = UnlabelledRandomImages(batch_size=16, val_size=32)
    model, trainer = train_simclr(tiny_simclr_kwargs, data, tmp_path, [online], max_epochs=1)
    trainer.validate(model, datamodule=data, verbose=False)  # a second stage: no second line
    assert online.mode == "off" and online.classifier is None
    assert "val/acc_top5" in trainer.callback_metrics  # the ranking metrics need no labels
    assert not {"val/online_probe_acc", "val/knn_acc", "train/online_probe_loss"} & set(trainer.callback_metrics)
    lines = [record.getMessage() for record in caplog.records if "online evaluation is off" in record.getMessage()]
    assert len(lines) == 1 and "UnlabelledRandomImages() has no labels" in lines[0] and "--online_eval.eval_data" in lines[0]


def test_online_evaluation_on_a_separate_labelled_data_module(tiny_simclr_kwargs, tmp_path):
    """Pretraining on unlabelled images, evaluated on another module's labelled ones: the logged
    numbers are those of the final encoder's clean features of that module's images (computed
    here from its in-memory tensors), and the encoder trains exactly as without the callback."""
    eval_data = RandomImages(batch_size=16, val_size=32)
    online = OnlineEvaluation(eval_data=eval_data, eval_images=40, eval_probe_steps=20, knn_k=5)
    model, trainer = train_simclr(tiny_simclr_kwargs, UnlabelledRandomImages(batch_size=16, val_size=32), tmp_path, [online], max_epochs=1)
    without_callback, _ = train_simclr(tiny_simclr_kwargs, UnlabelledRandomImages(batch_size=16, val_size=32), tmp_path, [], max_epochs=1)
    assert_same_encoder(model, without_callback)

    bank_set, query_set = eval_data.labelled_set, eval_data.val_set  # 64 and 32 images: the bank capped at 40
    keep = seeded_subset(len(bank_set), 40).sort().values
    bank, bank_labels = extract_features(model.encoder, bank_set.images[keep]), bank_set.labels[keep]
    queries = extract_features(model.encoder, query_set.images)
    metrics = trainer.callback_metrics
    expected_knn = knn_accuracy(bank, bank_labels, queries, query_set.labels, 4, k=5, temperature=0.1)
    assert metrics["val/knn_acc"].item() == pytest.approx(expected_knn, abs=1e-6)
    with torch.no_grad():
        expected_probe = accuracy(online.classifier(queries), query_set.labels)
    assert metrics["val/online_probe_acc"].item() == pytest.approx(expected_probe, abs=1e-6)
    assert online.classifier.weight.abs().sum() > 0 and "train/online_probe_loss" not in metrics


def test_online_evaluation_of_a_module_that_pretrains_apart_from_its_labels(tiny_simclr_kwargs, tmp_path):
    """Like STL-10 (train_set unlabelled, labelled_set labelled), with no eval_data: the module's own
    labelled images are the bank and the probe's training set, as an eval_data module's would be."""
    online = OnlineEvaluation(eval_images=40, eval_probe_steps=20, knn_k=5)
    data = LabelsApart(batch_size=16, val_size=32)
    model, trainer = train_simclr(tiny_simclr_kwargs, data, tmp_path, [online], max_epochs=1)
    keep = seeded_subset(len(data.labelled_set), 40).sort().values
    bank = extract_features(model.encoder, data.labelled_set.images[keep])
    queries = extract_features(model.encoder, data.val_set.images)
    expected_knn = knn_accuracy(bank, data.labelled_set.labels[keep], queries, data.val_set.labels, 4, k=5, temperature=0.1)
    assert online.mode == "eval data" and trainer.callback_metrics["val/knn_acc"].item() == pytest.approx(expected_knn, abs=1e-6)


def test_online_evaluation_refuses_eval_data_it_cannot_use(tiny_simclr_kwargs, tmp_path):
    with pytest.raises(ConfigError, match="online evaluation's eval_data needs labelled data, but UnlabelledRandomImages"):
        train_simclr(tiny_simclr_kwargs, RandomImages(batch_size=16, val_size=32), tmp_path,
                     [OnlineEvaluation(eval_data=UnlabelledRandomImages(batch_size=16, val_size=32))], max_steps=1)
    three_channels = type("RGBRandomImages", (RandomImages,), {"num_channels": 3})(batch_size=16, val_size=32)
    with pytest.raises(ConfigError, match="has 3-channel images but the encoder takes 1"):
        train_simclr(tiny_simclr_kwargs, RandomImages(batch_size=16, val_size=32), tmp_path,
                     [OnlineEvaluation(eval_data=three_channels)], max_steps=1)


def test_a_checkpoint_cannot_monitor_online_metrics_that_will_not_exist(tiny_simclr_kwargs, tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/knn_acc", mode="max")
    with pytest.raises(ConfigError, match="checkpoint.monitor is val/knn_acc.*monitor val/loss"):
        train_simclr(tiny_simclr_kwargs, UnlabelledRandomImages(batch_size=16, val_size=32), tmp_path,
                     [checkpoint, OnlineEvaluation()], max_steps=1, enable_checkpointing=True)
    assert not (tmp_path / "ckpt").exists()  # refused before any training step


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # a bare step, no Trainer to log to
def test_training_step_hands_out_features_without_a_graph(tiny_simclr_kwargs):
    model = SimCLR(**tiny_simclr_kwargs)
    x = torch.rand(8, 1, 16, 16)
    out = model.training_step(ViewBatch([x, x.flip(-1)], torch.zeros(8, dtype=torch.long), x), 0)
    assert out["features"].shape == (8, model.encoder.out_dim)
    assert not out["features"].requires_grad and out["loss"].requires_grad


def test_online_evaluation_resumes_its_classifier(tiny_simclr_kwargs, tmp_path):
    online = OnlineEvaluation()
    _, checkpoint = fit(SimCLR(**tiny_simclr_kwargs), RandomImages(batch_size=16, val_size=32), tmp_path,
                        max_steps=3, callbacks_extra=[online])
    resumed = OnlineEvaluation()
    fit(SimCLR(**tiny_simclr_kwargs), RandomImages(batch_size=16, val_size=32), tmp_path / "resumed",
        max_steps=3, callbacks_extra=[resumed], ckpt_path=checkpoint.last_model_path)
    assert torch.equal(resumed.classifier.weight, online.classifier.weight)  # restored, and max_steps was reached


# --- supervised baseline --------------------------------------------------------------------

def test_supervised_trains_on_a_label_budget_and_round_trips(tmp_path):
    data = RandomImages(batch_size=8, val_size=32, labels_per_class=3, drop_last=False)
    model = Supervised(num_classes=4, encoder=TINY_ENCODER)
    trainer, checkpoint = fit(model, data, tmp_path, max_epochs=2)
    assert len(data.train_set) == 12 and trainer.global_step == 4  # 12 images in batches of 8, last one kept
    assert {"train/acc", "val/acc", "val/loss"} <= set(trainer.callback_metrics)
    result = trainer.test(model, datamodule=data, verbose=False)[0]
    assert 0 <= result["test/acc"] <= 1
    encoder = load_encoder(checkpoint.last_model_path)
    assert torch.equal(encoder.backbone.conv1.weight, model.encoder.backbone.conv1.weight)


def test_supervised_checks_the_number_of_classes(tmp_path):
    model = Supervised(num_classes=10, encoder=TINY_ENCODER)
    with pytest.raises(ConfigError, match="4 classes.*num_classes=10"):
        fit(model, RandomImages(batch_size=8, val_size=32), tmp_path, max_steps=1)


def test_the_probe_fits_quietly_and_leaves_logging_and_warnings_as_they_were(capfd, caplog):
    import logging
    import warnings

    lightning = logging.getLogger("pytorch_lightning")
    level, filters = lightning.level, list(warnings.filters)
    with caplog.at_level(logging.INFO):
        fit_linear_probe(blobs(64), blobs(32, seed=1), num_classes=4, weight_decay=1e-3)
    said = capfd.readouterr().err + caplog.text
    assert "GPU available" not in said and "Tip" not in said and "LeafSpec" not in said
    assert lightning.level == level and warnings.filters == filters
