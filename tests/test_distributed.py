"""Distributed training: the gather helper, and one DDP step on 2 CPU processes (gloo) against
one process on the concatenated batch, for every method; a non-finite loss in one process stops all."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ddp_step import MAKERS, freeze_batch_norm_statistics
from ssl_lightning.distributed import gather

TESTS = Path(__file__).resolve().parent


def test_gather_is_the_identity_in_one_process():
    x = torch.randn(4, 3, requires_grad=True)
    assert gather(x) is x


@pytest.fixture(scope="session")  # once per pytest worker, however make test spreads the tests
def ddp_results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    result = subprocess.run([sys.executable, str(TESTS / "ddp_step.py"), str(out)], cwd=TESTS.parent,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def single_process_step(method: str, saved: list[dict]) -> tuple[torch.Tensor, dict, torch.nn.Module]:
    """The loss and gradients of one process on the concatenation of what the 2 processes saw."""
    model = MAKERS[method]()
    model.load_state_dict(saved[0]["initial_state"])
    model.train()
    freeze_batch_norm_statistics(model)
    inputs = [torch.cat(parts) for parts in zip(*(s["inputs"] for s in saved))]  # rank 0's images, then rank 1's
    if method == "supervised":
        x, labels = inputs
        loss = F.cross_entropy(model.classifier(model.encoder(x)), labels)
    else:
        *views, _labels, _images = inputs
        loss = model.compute_loss(*views).loss
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}, model


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(MAKERS))
def test_one_ddp_step_equals_one_process_on_the_whole_batch(method, ddp_results):
    saved = [torch.load(ddp_results / f"{method}-{rank}.pt", weights_only=True) for rank in (0, 1)]
    loss, grads, model = single_process_step(method, saved)

    ddp_loss = torch.stack([s["loss"] for s in saved]).mean()  # what DDP's averaged gradients descend
    assert torch.allclose(ddp_loss, loss, rtol=1e-5, atol=1e-6), (ddp_loss, loss)
    assert saved[0]["grads"].keys() == grads.keys()
    scale = max(grad.norm() for grad in grads.values())
    assert scale > 0
    for name, grad in grads.items():
        for rank in (0, 1):
            # float32 sums in another order: relative error of the whole tensor (a gather off by
            # 1/world_size gives 0.5), with a floor for gradients that are zero up to rounding
            # (Barlow Twins' last bias: its loss standardises the embeddings).
            error = (saved[rank]["grads"][name] - grad).norm()
            assert error <= 1e-4 * grad.norm() + 1e-6 * scale, (name, rank, error / grad.norm())
    labels = torch.cat([s["inputs"][1 if method == "supervised" else -2] for s in saved])  # [*views, labels, images]
    assert saved[0]["gathered_labels"].dtype == torch.long and torch.equal(saved[0]["gathered_labels"], labels)
    assert torch.equal(saved[1]["gathered_labels"], labels)
    # online evaluation trains on the features of both processes: the same classifier everywhere
    assert torch.equal(saved[0]["online_classifier"], saved[1]["online_classifier"])
    if method == "moco":  # the queue received the keys of both processes, in rank order
        assert torch.equal(saved[0]["queue"], saved[1]["queue"])
        assert torch.allclose(saved[0]["queue"], model.queue.keys, atol=1e-6)
    if method == "dino":  # the center moved towards the mean teacher output of both processes' images
        assert torch.equal(saved[0]["center"], saved[1]["center"])
        assert saved[0]["center"].abs().sum() > 0 and torch.allclose(saved[0]["center"], model.center, atol=1e-6)


@pytest.mark.slow
def test_a_non_finite_loss_in_one_process_stops_every_process_at_the_same_step(ddp_results):
    stopped = [torch.load(ddp_results / f"diverged-{rank}.pt", weights_only=True) for rank in (0, 1)]
    for rank in (0, 1):  # both stopped after the bad step (2), process 0 on process 1's record
        assert stopped[rank]["global_step"] == 3, stopped
        assert stopped[rank]["message"].startswith("the training loss is nan in process 1 at step 2 (epoch 0)"), stopped


@pytest.mark.parametrize("method", ["moco", "byol"])
def test_sync_batchnorm_keeps_the_momentum_targets_paired(method):
    """Lightning's ``sync_batchnorm=True`` swaps every BatchNorm for a SyncBatchNorm in place: the
    EMA pairs must still be the model's modules, so the targets follow the converted layers."""
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(MAKERS[method]())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    for online, target in model._momentum_pairs:
        assert any(online is m for m in model.modules()) and any(target is m for m in model.modules())
    target_encoder = model._momentum_pairs[0][1]  # (MoCo v2's key head has no BatchNorm)
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in target_encoder.modules())
    bn = model.encoder.backbone.bn1
    with torch.no_grad():
        bn.weight.fill_(2.0)
    from ssl_lightning.momentum import update_momentum

    online, target = model._momentum_pairs[0]
    update_momentum(online, target, 0.0)  # τ = 0: the target becomes a copy of the online module
    assert torch.equal(target.backbone.bn1.weight, bn.weight)
