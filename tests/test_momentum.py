import math

import pytest
import torch
from torch import nn

from conftest import TINY_ENCODER
from ssl_lightning.errors import ConfigError
from ssl_lightning.momentum import cosine_momentum, momentum_copy, update_momentum
from ssl_lightning.queue import KeyQueue


def test_update_momentum_formula():
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    expected = [0.9 * t.detach() + 0.1 * o.detach() for o, t in zip(online.parameters(), target.parameters())]
    update_momentum(online, target, 0.9)
    for got, want in zip(target.parameters(), expected):
        assert torch.allclose(got, want)


def test_cosine_momentum_endpoints_and_shape():
    assert cosine_momentum(0, 100, 0.996, 1.0) == pytest.approx(0.996)
    assert cosine_momentum(100, 100, 0.996, 1.0) == pytest.approx(1.0)
    assert cosine_momentum(50, 100, 0.996, 1.0) == pytest.approx(0.998)
    assert cosine_momentum(30, 100, 0.99, 0.99) == pytest.approx(0.99)  # MoCo: constant
    taus = [cosine_momentum(k, 10, 0.9, 1.0) for k in range(11)]
    assert all(a <= b for a, b in zip(taus, taus[1:]))
    assert math.isclose(taus[-1], 1.0)


def test_target_gets_no_gradient():
    online = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    target = momentum_copy(online)
    before = [p.clone() for p in target.parameters()]
    loss = (online(torch.randn(8, 4)) - target(torch.randn(8, 4))).pow(2).sum()
    loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in target.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, target.parameters()))


def test_queue_is_first_in_first_out_and_wraps():
    queue = KeyQueue(size=6, dim=2)
    batches = [torch.tensor([[float(i), 1.0], [float(i), -1.0]]) for i in range(1, 5)]
    for batch in batches[:3]:
        queue.enqueue(batch)
    assert int(queue.pointer) == 0  # 3 batches of 2 filled 6 slots: back to the start
    unit = lambda x: torch.nn.functional.normalize(x, dim=1)  # noqa: E731
    assert torch.allclose(queue.keys, unit(torch.cat(batches[:3])))
    queue.enqueue(batches[3])  # overwrites the oldest (batch 1)
    assert torch.allclose(queue.keys[:2], unit(batches[3]))
    assert torch.allclose(queue.keys[2:], unit(torch.cat(batches[1:3])))
    assert int(queue.pointer) == 2 and queue.keys.shape == (6, 2)


def test_queue_stores_detached_keys():
    queue = KeyQueue(size=4, dim=3)
    keys = torch.randn(2, 3, requires_grad=True)
    queue.enqueue(keys * 2)
    assert not queue.keys.requires_grad and queue.keys.grad_fn is None


def test_queue_size_must_be_a_multiple_of_the_batch():
    with pytest.raises(ConfigError, match="multiple of the batch size"):
        KeyQueue(size=10, dim=3).enqueue(torch.randn(4, 3))


def test_byol_moves_its_targets_with_the_cosine_tau_at_every_optimizer_step(random_images, tmp_path):
    """The τ of each update, as used (recorded inside ``update_targets`` and checked on a target
    parameter), against BYOL's τ = 1 − (1 − τ_base)(cos(πk/K) + 1)/2, k the optimizer steps taken
    before this one (τ_base at the first update) and K the run's."""
    from conftest import fit
    from ssl_lightning.methods import BYOL

    model = BYOL(projection_hidden_dim=16, projection_dim=8, target_momentum=0.9, target_momentum_end=1.0, encoder=TINY_ENCODER)
    online, target = model._momentum_pairs[1]  # the projector and its target
    used = []
    real_update = model.update_targets

    def recording_update(tau):
        before = [(o.detach().clone(), t.detach().clone()) for o, t in zip(online.parameters(), target.parameters())]
        real_update(tau)
        for (o, t), t_after in zip(before, target.parameters()):
            torch.testing.assert_close(t_after, tau * t + (1 - tau) * o)
        used.append((model.trainer.global_step, tau))

    model.update_targets = recording_update
    fit(model, random_images, tmp_path, max_epochs=2, limit_val_batches=0)
    total = 8  # 2 epochs of 4 batches
    expected = [1 - (1 - 0.9) * (math.cos(math.pi * k / total) + 1) / 2 for k in range(total)]
    assert [k for k, _ in used] == list(range(total))  # once per optimizer step
    assert [tau for _, tau in used] == pytest.approx(expected)
    assert used[0][1] == pytest.approx(0.9) and used[-1][1] > 0.996
