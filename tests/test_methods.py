"""Behaviour that every pretraining method shares, and the state of MoCo and BYOL."""

import pytest
import torch

from pytorch_lightning import Trainer

from conftest import TINY_ENCODER, RandomImages, fit, tiny_pretraining_methods
from ssl_lightning import load_encoder
from ssl_lightning.errors import ConfigError
from ssl_lightning.methods import NNCLR, MoCo, MomentumPretrainMethod, SimCLR

DATA = dict(encoder=TINY_ENCODER)
METHODS = tiny_pretraining_methods()


@pytest.mark.parametrize("name", METHODS)
def test_each_method_trains_logs_and_round_trips(name, random_images, tmp_path):
    torch.manual_seed(0)
    model = METHODS[name]()
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    trainer, checkpoint = fit(model, random_images, tmp_path, max_epochs=2)
    assert any(not torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())
    for stage in ("train", "val"):
        for metric in ("loss", "acc_top1", "acc_top5", "acc_mean_pos"):
            assert torch.isfinite(trainer.logged_metrics[f"{stage}/{metric}"])
    tested = trainer.test(model, datamodule=random_images, verbose=False)[0]
    assert {"test/loss", "test/acc_top1", "test/acc_top5", "test/acc_mean_pos"} <= set(tested)
    restored = type(model).load_from_checkpoint(checkpoint.last_model_path)
    for key, value in model.state_dict().items():  # queue, pointer, target networks included
        assert torch.equal(restored.state_dict()[key], value), key
    x = torch.rand(3, 1, 16, 16)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(load_encoder(checkpoint.last_model_path)(x), model(x), atol=1e-6)


@pytest.mark.parametrize("name", ["simclr", "moco"])  # ranked among 2N-1 and among N candidates
def test_validation_metrics_are_those_of_the_full_batches_whatever_the_remainder(name, tmp_path):
    """The validation sets of 33 and 37 images begin with the 32 of the smallest (the same seeded
    hold-out); at batch size 16 they leave a last batch of 1 (no negatives) and of 5 images."""
    model = METHODS[name]()
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    results = {}
    for val_size in (32, 33, 37):
        torch.manual_seed(1)  # the same views of the shared images
        results[val_size] = trainer.validate(model, datamodule=RandomImages(batch_size=16, val_size=val_size), verbose=False)[0]
    assert set(results[32]) == {"val/loss", "val/acc_top1", "val/acc_top5", "val/acc_mean_pos", "val/embedding_std", "val/rankme"}
    assert results[33] == results[32] and results[37] == results[32]


@pytest.mark.parametrize("name", ["moco", "byol", "moco_v3"])
def test_targets_are_outside_the_optimizer_and_move_once_per_optimizer_step(name, random_images, tmp_path, monkeypatch):
    import ssl_lightning.methods.base as base

    calls = []
    real_update = base.update_momentum
    monkeypatch.setattr(base, "update_momentum", lambda *a: (calls.append(a[2]), real_update(*a)))
    model = METHODS[name]()
    assert isinstance(model, MomentumPretrainMethod)
    targets = [t for _, t in model._momentum_pairs]
    target_params = {id(p) for t in targets for p in t.parameters()}
    online_params = {id(p) for o, _ in model._momentum_pairs for p in o.parameters()}
    assert target_params and not target_params & online_params
    before = [p.clone() for t in targets for p in t.parameters()]

    trainer, _ = fit(model, random_images, tmp_path, max_steps=2, accumulate_grad_batches=2, limit_val_batches=0)
    optimizer_params = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert not target_params & optimizer_params
    assert len(calls) == 2 * len(targets)  # 2 optimizer steps over 4 batches, each target once per step
    after = [p for t in targets for p in t.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_moco_enqueues_its_keys_in_training_only(random_images, tmp_path):
    model = METHODS["moco"]()
    queue_before = model.queue.keys.clone()
    x = torch.rand(16, 1, 16, 16)
    model.eval()
    model.compute_loss(x, x)
    assert torch.equal(model.queue.keys, queue_before) and int(model.queue.pointer) == 0
    model.train()
    out = model.compute_loss(x, x)
    assert int(model.queue.pointer) == 16
    assert torch.allclose(model.queue.keys[:16], torch.nn.functional.normalize(out.z2, dim=1))
    out.loss.backward()  # enqueueing after the loss does not break backward


def test_moco_key_bn_shuffle_returns_keys_in_input_order():
    model = METHODS["moco"]().eval()  # eval BN: the sub-batch split does not change the keys
    x = torch.rand(8, 1, 16, 16)
    with torch.no_grad():
        direct = model.key_projector(model.key_encoder(x))
    assert torch.allclose(model.keys(x), direct, atol=1e-5)


def test_moco_rejects_a_queue_that_is_not_a_multiple_of_the_batch(random_images, tmp_path):
    model = MoCo(queue_size=40, projection_hidden_dim=16, projection_dim=8, **DATA)
    with pytest.raises(ConfigError, match="multiple of the batch size"):
        fit(model, random_images, tmp_path, max_steps=1)


@pytest.mark.parametrize("name", ["moco", "byol", "nnclr"])
def test_a_resumed_run_starts_from_the_saved_queue_and_targets(name, random_images, tmp_path):
    from pytorch_lightning import Callback

    torch.manual_seed(0)
    first = METHODS[name]()
    _, checkpoint = fit(first, random_images, tmp_path / "first", max_steps=2, limit_val_batches=0)
    saved = {k: v.clone() for k, v in first.state_dict().items()}

    class StateAtStart(Callback):
        def on_train_start(self, trainer, pl_module):
            self.state = {k: v.clone() for k, v in pl_module.state_dict().items()}

    spy = StateAtStart()
    resumed = METHODS[name]()  # fresh random queue and targets, replaced by the checkpoint's
    trainer = Trainer(default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[spy], max_steps=4, limit_val_batches=0)
    trainer.fit(resumed, datamodule=random_images, ckpt_path=checkpoint.last_model_path)
    for key, value in saved.items():
        assert torch.equal(spy.state[key], value), key
    assert trainer.global_step == 4
    queue = {"moco": "queue", "nnclr": "support_set"}.get(name)
    if queue:
        assert int(getattr(resumed, queue).pointer) == (4 * 16) % 32  # it carried on enqueueing from the saved slot


def test_simclr_head_without_batch_norm_is_linear_relu_linear():
    # The UvA tutorial's head, written out: fc (512 -> 512, with bias), ReLU, Linear (512 -> 128).
    model = SimCLR(projection_hidden_dim=16, projection_dim=8, projection_batch_norm=False, **DATA)
    first, second = model.projector.layers[0], model.projector.layers[-1]
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.projector.modules())
    h = torch.randn(5, model.encoder.out_dim)
    expected = torch.relu(h @ first.weight.T + first.bias) @ second.weight.T + second.bias  # (5, 8)
    assert torch.allclose(model.projector(h), expected, atol=1e-6)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in SimCLR(projection_hidden_dim=16, projection_dim=8, **DATA).modules())


def test_the_methods_import_from_the_package_top():
    import ssl_lightning
    import ssl_lightning.methods

    for name in ssl_lightning.methods.METHODS:
        assert getattr(ssl_lightning, name) is getattr(ssl_lightning.methods, name)
    with pytest.raises(AttributeError, match="no attribute 'Simclr'"):
        ssl_lightning.Simclr


def layer_types(head):
    return [(type(m).__name__, getattr(m, "bias", None) is not None) for m in head.layers]


def test_moco_head_is_moco_v2s_linear_relu_linear_without_batch_norm():
    model = METHODS["moco"]()
    expected = [("Linear", True), ("ReLU", False), ("Linear", True)]
    assert layer_types(model.projector) == layer_types(model.key_projector) == expected
    v3_head = MoCo(queue_size=32, projection_hidden_dim=16, projection_dim=8, projection_batch_norm=True, **DATA).projector
    assert layer_types(v3_head) == [("Linear", False), ("BatchNorm1d", True), ("ReLU", False), ("Linear", True)]


def test_barlow_twins_projector_is_the_official_codes_bias_free_mlp():
    projector = METHODS["barlow_twins"]().projector
    assert layer_types(projector) == [("Linear", False), ("BatchNorm1d", True), ("ReLU", False)] * 2 + [("Linear", False)]
    assert [m.out_features for m in projector.layers if isinstance(m, torch.nn.Linear)] == [16, 16, 16]


def test_vicreg_expander_is_the_papers_three_layer_mlp():
    expander = METHODS["vicreg"]().expander
    assert layer_types(expander) == [("Linear", False), ("BatchNorm1d", True), ("ReLU", False)] * 2 + [("Linear", False)]


def test_simsiam_heads_are_the_papers_projector_with_output_bn_and_bottleneck_predictor():
    model = METHODS["simsiam"]()
    assert layer_types(model.projector) == [("Linear", False), ("BatchNorm1d", True), ("ReLU", False)] * 2 + [
        ("Linear", False), ("BatchNorm1d", False)]  # the output BN without affine parameters
    assert not model.projector.layers[-1].affine
    assert layer_types(model.predictor) == [("Linear", False), ("BatchNorm1d", True), ("ReLU", False), ("Linear", True)]
    assert [m.out_features for m in model.predictor.layers if isinstance(m, torch.nn.Linear)] == [4, 16]  # the bottleneck


def test_simsiams_predictor_keeps_its_learning_rate_while_the_rest_decays(tmp_path):
    trainer, _ = fit(METHODS["simsiam"](), RandomImages(batch_size=16, val_size=32), tmp_path, max_epochs=1, limit_train_batches=4,
                     limit_val_batches=0)
    rates = {group["name"]: group["lr"] for group in trainer.optimizers[0].param_groups}
    peak = 0.05 * 16 / 256  # the paper's 0.05 x batch / 256
    assert rates["predictor/weights"] == rates["predictor/biases_and_norms"] == pytest.approx(peak)
    assert rates["weights"] < 0.5 * peak  # the cosine schedule, near its end after 4 of 4 steps


def test_moco_v3_heads_are_the_papers_bias_free_mlps_with_bn_on_the_projectors_output():
    model = METHODS["moco_v3"]()
    expected_projector = [("Linear", False), ("BatchNorm1d", True), ("ReLU", False), ("Linear", False), ("BatchNorm1d", False)]
    assert layer_types(model.projector) == layer_types(model.key_projector) == expected_projector
    assert not model.projector.layers[-1].affine
    assert layer_types(model.predictor) == [("Linear", False), ("BatchNorm1d", True), ("ReLU", False), ("Linear", False)]
    assert not hasattr(model, "key_predictor")  # the predictor is on the query branch only


def test_moco_v3_loss_is_the_symmetric_ctr_scaled_by_2t():
    from ssl_lightning.losses import cross_view_info_nce

    model = METHODS["moco_v3"]().eval()
    x1, x2 = torch.rand(8, 1, 16, 16), torch.rand(8, 1, 16, 16)
    out = model.compute_loss(x1, x2)
    with torch.no_grad():
        q1, q2 = (model.predictor(model.projector(model.encoder(x))) for x in (x1, x2))
        k1, k2 = (model.key_projector(model.key_encoder(x)) for x in (x1, x2))
    t = model.temperature
    expected = 2 * t * (cross_view_info_nce(q1, k2, t) + cross_view_info_nce(q2, k1, t))
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_nnclr_positive_is_the_nearest_neighbour_in_the_support_set_and_it_grows_in_training_only():
    model = METHODS["nnclr"]()
    support = model.support_set.keys
    z = support[[3, 7, 3]] * 5 + 1e-3 * torch.randn(3, support.shape[1])  # near entries 3, 7, 3 (scaled: cosine)
    assert torch.equal(model.nearest_neighbours(z), support[[3, 7, 3]])
    x = torch.rand(16, 1, 16, 16)
    before = support.clone()
    model.eval()
    model.compute_loss(x, x)
    assert torch.equal(model.support_set.keys, before)
    model.train()
    out = model.compute_loss(x, x)
    assert int(model.support_set.pointer) == 16 and not torch.equal(model.support_set.keys[:16], before[:16])
    out.loss.backward()  # no gradient through the neighbours; the predictions carry it
    assert model.predictor.layers[0].weight.grad is not None


def test_nnclr_rejects_a_support_set_that_is_not_a_multiple_of_the_batch(random_images, tmp_path):
    model = NNCLR(support_size=40, projection_hidden_dim=16, projection_dim=8, predictor_hidden_dim=16, **DATA)
    with pytest.raises(ConfigError, match="NNCLR support_size .40. must be a multiple of the batch size"):
        fit(model, random_images, tmp_path, max_steps=1)


class KeySubBatches:
    """Records the sizes of the sub-batches that MoCo's key encoder sees."""

    def __init__(self, model):
        self.sizes = []
        model.key_encoder.register_forward_pre_hook(lambda module, args: self.sizes.append(len(args[0])))


@pytest.mark.parametrize(("batch", "sizes"), [(16, [8, 8]), (12, [4, 4, 4]), (14, [7, 7]), (7, [7]), (2, [2])])
def test_moco_cuts_any_key_batch_into_equal_sub_batches_of_two_or_more(batch, sizes):
    model = MoCo(queue_size=32, projection_hidden_dim=16, projection_dim=8, key_bn_splits=3 if batch == 12 else 2, **DATA)
    recorded = KeySubBatches(model)
    keys = model.keys(torch.rand(batch, 1, 16, 16))
    assert recorded.sizes == sizes and keys.shape == (batch, 8)


@pytest.mark.parametrize("splits", [3, 16])
def test_moco_refuses_key_splits_that_do_not_cut_the_batch_into_pairs_or_more(splits, random_images, tmp_path):
    model = MoCo(queue_size=32, projection_hidden_dim=16, projection_dim=8, key_bn_splits=splits, **DATA)
    with pytest.raises(ConfigError, match=f"key_bn_splits={splits} does not cut a batch of 16 into equal sub-batches of 2"):
        fit(model, random_images, tmp_path, max_steps=1)


@pytest.mark.parametrize("name", ["swav", "dino"])
def test_multi_crop_methods_refuse_fewer_than_two_global_crops(name):
    """Their losses compare each global crop with the others and the ranking metrics crops 1 and 2:
    one global crop (and local ones) is a ConfigError at construction, not a shape error later."""
    from ssl_lightning.methods import DINO, SwAV

    views = [{"copies": 1}, {"copies": 2}] if name == "swav" else [{"copies": 1}, {"copies": 0}, {"copies": 2}]
    method = {"swav": SwAV, "dino": DINO}[name]
    with pytest.raises(ConfigError, match=f"{method.__name__} needs at least 2 global crops .*got 1 of 16 px"):
        method(encoder=TINY_ENCODER, views=views)


def test_swav_rejects_a_queue_that_is_not_a_multiple_of_the_batch(random_images, tmp_path):
    from ssl_lightning.methods import SwAV

    model = SwAV(num_prototypes=12, projection_hidden_dim=16, projection_dim=8, queue_size=40, encoder=TINY_ENCODER,
                 views=[{}, {"copies": 2}])
    with pytest.raises(ConfigError, match=r"SwAV queue_size \(40\) must be a multiple of the batch size"):
        fit(model, random_images, tmp_path, max_steps=1)


@pytest.mark.parametrize("name", ["swav", "dino"])
def test_swav_prototypes_and_dinos_last_layer_are_held_in_the_first_epoch_only(name, monkeypatch):
    """Their gradients are dropped before the optimizer step of epoch 0 (neither updated nor decayed), kept from epoch 1."""
    model = METHODS[name]().train()
    held = model.prototypes if name == "swav" else model.head.last_layer
    for epoch, dropped in ((0, True), (1, False)):
        monkeypatch.setattr(type(model), "current_epoch", epoch)
        model.zero_grad()
        model.compute_loss(*model.views(torch.rand(8, 1, 16, 16))).loss.backward()
        assert held.weight.grad is not None
        model.on_before_optimizer_step(None)
        assert (held.weight.grad is None) == dropped
        assert all(p.grad is not None for p in model.encoder.parameters())  # the rest still learns


def test_swav_prototypes_are_unit_vectors_after_every_step():
    from ssl_lightning.heads import Prototypes

    prototypes = Prototypes(8, 5)
    assert torch.allclose(prototypes.weight.norm(dim=1), torch.ones(5))
    with torch.no_grad():
        prototypes.weight.mul_(3.0)
    prototypes.normalize_()
    assert torch.allclose(prototypes.weight.norm(dim=1), torch.ones(5))


def test_swav_uses_its_queue_once_full_and_a_restored_one_as_full_as_it_was():
    model = METHODS["swav"]().train()  # queue of 32 past embeddings per global crop, from epoch 0
    images = torch.rand(16, 1, 16, 16)
    for _ in range(2):  # two batches of 16 fill it
        model.compute_loss(*model.views(images))
    assert model._queued == 32 == int(model.queued)
    restored = METHODS["swav"]()
    restored.load_state_dict(model.state_dict())
    restored.on_load_checkpoint({"state_dict": model.state_dict()})
    assert restored._queued == 32


@pytest.mark.parametrize("head_batch_norm", [False, True])
def test_dino_logs_the_papers_collapse_terms_the_teacher_entropy_and_the_kl(head_batch_norm, monkeypatch):
    """H(P_t) over both global crops from the teacher's own outputs, and KL = loss - H(P_t)."""
    import torch.nn.functional as F

    from ssl_lightning.methods import DINO

    model = DINO(out_dim=24, head_hidden_dim=16, head_bottleneck_dim=8, head_batch_norm=head_batch_norm,
                 encoder=TINY_ENCODER, views=[{}, {}, {"copies": 2}]).eval()
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.head.modules()) == head_batch_norm
    logged = {}
    monkeypatch.setattr(model, "log", lambda name, value, **kwargs: logged.__setitem__(name, value.item()))
    monkeypatch.setattr(DINO, "current_epoch", 0)  # T_t = the warm-up's 0.04
    views = model.views(torch.rand(8, 1, 16, 16))
    out = model.compute_loss(*views)
    with torch.no_grad():
        teacher = model.teacher_head(model.teacher_encoder(torch.cat(views[:2])))[1]
    p = F.softmax(teacher.double() / 0.04, dim=1)  # the center is still 0
    entropy = -(p * p.log()).sum(dim=1).mean().item()
    assert logged["val/teacher_entropy"] == pytest.approx(entropy, rel=1e-4)
    assert logged["val/kl"] == pytest.approx(out.loss.item() - entropy, rel=1e-4, abs=1e-5)
