"""The collapse monitors: hand-computed cases, and a validation run that logs them, telling a
collapsed encoder (a constant output) from a random one."""

import math

import pytest
import torch

from conftest import RandomImages, fit, tiny_pretraining_methods
from ssl_lightning.collapse import CollapseMonitor, mean_entropy, normalized_std, rankme


def test_normalized_std_by_hand():
    # Two embeddings at opposite poles of one axis: that dimension's std is sqrt(2) (unbiased), the other 0.
    z = torch.tensor([[3.0, 0.0], [-5.0, 0.0]])
    assert normalized_std(z).item() == pytest.approx(math.sqrt(2) / 2)
    assert normalized_std(torch.ones(10, 4)).item() == 0.0  # collapsed to a point


def test_rankme_by_hand():
    # Singular values (3, 1): p = (0.75, 0.25), entropy = -(0.75 ln 0.75 + 0.25 ln 0.25).
    z = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert rankme(z).item() == pytest.approx(math.exp(entropy), rel=1e-5)
    assert rankme(torch.eye(6)).item() == pytest.approx(6.0, rel=1e-5)  # every direction equally: full rank
    assert rankme(torch.ones(10, 4)).item() == pytest.approx(1.0, rel=1e-4)  # one direction


def test_mean_entropy_by_hand():
    uniform, one_hot, halves = torch.full((5,), 0.2), torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0]), torch.tensor([0.5, 0.5, 0, 0, 0])
    assert mean_entropy(uniform[None]).item() == pytest.approx(math.log(5))  # uniform collapse: log K
    assert mean_entropy(one_hot[None]).item() == pytest.approx(0.0)
    assert mean_entropy(torch.stack([one_hot, halves])[None]).item() == pytest.approx(math.log(2) / 2)  # the mean over (2, 1)


def test_random_embeddings_look_healthy_and_a_constant_collapsed():
    z = torch.randn(2000, 16, generator=torch.Generator().manual_seed(0))
    assert normalized_std(z).item() == pytest.approx(1 / math.sqrt(16), rel=0.05)  # spread over the sphere
    assert rankme(z).item() > 15  # near D
    assert normalized_std(torch.full((2000, 16), 0.3)).item() == 0.0


def test_the_monitor_computes_over_every_batch_together():
    monitor = CollapseMonitor()
    z = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    for part in z.split(16):
        monitor.update(part)
    computed = monitor.compute()
    assert computed["rankme"].item() == pytest.approx(rankme(z).item(), rel=1e-5)
    assert computed["embedding_std"].item() == pytest.approx(normalized_std(z).item(), rel=1e-5)


@pytest.mark.parametrize("collapsed", [False, True])
def test_validation_logs_both_monitors_and_they_flag_a_constant_encoder(collapsed, tmp_path):
    torch.manual_seed(0)
    model = tiny_pretraining_methods()["simclr"]()
    if collapsed:  # every image gives the same features, so the same embedding
        features = model.encoder.out_dim
        model.encoder.forward = lambda images: torch.ones(len(images), features, device=images.device)
    trainer, _ = fit(model, RandomImages(batch_size=16, val_size=32), tmp_path, max_epochs=1, limit_train_batches=1,
                     num_sanity_val_steps=0)
    logged = trainer.logged_metrics
    if collapsed:
        assert logged["val/embedding_std"].item() < 1e-3 and logged["val/rankme"].item() < 1.01
    else:  # an untrained encoder: its embeddings cluster (std about 0.06, rankme 2.4 of 8), but vary
        assert logged["val/embedding_std"].item() > 0.02 and logged["val/rankme"].item() > 1.5
