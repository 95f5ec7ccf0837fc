"""Behaviour, not only finiteness: every method overfits one fixed batch of 64 images. Its loss
falls and the positive of nearly every view ranks first (``acc_top1``) on fresh views of the batch
(the autoencoder: its reconstructions come close to the images and each one ranks its own image first).

Plain torch loops over ``compute_loss`` (a Trainer's start-up would cost more than the steps).
The momentum targets move at τ = 0.9 (the papers' 0.99+ hardly moves them in a few dozen steps)."""

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_ENCODER
from ssl_lightning.losses import reconstruction_loss
from ssl_lightning.methods import BYOL, DINO, NNCLR, Autoencoder, BarlowTwins, MoCo, MoCoV3, SimCLR, SimSiam, SwAV, VICReg
from ssl_lightning.metrics import ranking_metrics

# Weak views: a mild square crop and nothing else, so that 64 images can be told apart in a few dozen steps.
WEAK_VIEWS = {"crop_scale": (0.9, 1.0), "crop_ratio": (1.0, 1.0), "flip_prob": 0.0, "jitter_prob": 0.0, "blur_prob": 0.0,
              "solarize_prob": 0.0}
DATA = dict(encoder=TINY_ENCODER, views=WEAK_VIEWS)
# name: (model, lr, steps, images per batch, acc_top1 it must pass[, optimizer: AdamW unless "sgd"])
METHODS = {
    "simclr": (lambda: SimCLR(projection_hidden_dim=32, projection_dim=16, **DATA), 1e-2, 40, 64, 0.9),
    # MoCo sees the 64 images as four batches of 16 in turn with a queue of 48, so that the queue holds the
    # keys of the other 48 images, as in MoCo: a queue of the batch's own earlier keys would make each
    # image its own negative. Its loss never contrasts images of one batch, yet they come apart too.
    "moco": (lambda: MoCo(projection_hidden_dim=32, projection_dim=16, queue_size=48, key_bn_splits=2, target_momentum=0.9, **DATA),
             1e-3, 120, 16, 0.9),
    "byol": (lambda: BYOL(projection_hidden_dim=32, projection_dim=16, target_momentum=0.9, target_momentum_end=0.9, **DATA),
             1e-2, 90, 64, 0.9),
    "barlow_twins": (lambda: BarlowTwins(projector_dim=64, **DATA), 1e-2, 60, 64, 0.9),
    "vicreg": (lambda: VICReg(expander_dim=64, **DATA), 1e-2, 60, 64, 0.9),
    # SimSiam on its paper's SGD: under AdamW its embeddings lose rank within 100 steps here (RankMe 38 -> 4).
    # Without negatives or a target network it separates the images more slowly than the others.
    "moco_v3": (lambda: MoCoV3(projection_hidden_dim=32, projection_dim=16, target_momentum=0.9, target_momentum_end=0.9, **DATA),
                1e-2, 120, 64, 0.9),
    # NNCLR with a support set of the 64 images' past embeddings (one batch): each view's positive is
    # its nearest neighbour among them.
    "nnclr": (lambda: NNCLR(support_size=64, projection_hidden_dim=32, projection_dim=16, predictor_hidden_dim=32, **DATA),
              1e-2, 100, 64, 0.9),
    "simsiam": (lambda: SimSiam(projection_dim=64, predictor_hidden_dim=32, **DATA), 0.1, 250, 64, 0.8, "sgd"),
    # SwAV with two small local crops (the paper: 6), and twice as many prototypes as images.
    "swav": (lambda: SwAV(num_prototypes=128, projection_hidden_dim=32, projection_dim=16, encoder=TINY_ENCODER,
                          views=[WEAK_VIEWS, {**WEAK_VIEWS, "copies": 2}]), 1e-2, 60, 64, 0.9),
}


def fixed_images() -> torch.Tensor:
    """64 smooth random images (8x8 noise upsampled to 16x16) in [0, 1]: a crop keeps each recognisable."""
    generator = torch.Generator().manual_seed(0)
    return F.interpolate(torch.rand(64, 1, 8, 8, generator=generator), size=16, mode="bilinear", align_corners=False)


def step_on(model, images):
    out = model.compute_loss(*model.views(images))  # the method's views, each image its own draw
    return out, ranking_metrics(out.z1, out.z2, cross_view=model.cross_view_ranking)["acc_top1"].item()


@pytest.fixture
def one_thread():
    """One intra-op thread, as a pytest-xdist worker has on 2 cores: the float sums, and so the
    trajectories, are then the same however the tests are run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", METHODS)
def test_each_method_overfits_a_fixed_batch(name, one_thread):
    make, lr, steps, batch, passing, *optimizer_name = METHODS[name]
    torch.manual_seed(0)
    model = make().train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9) if optimizer_name == ["sgd"] else torch.optim.AdamW(params, lr=lr)
    batches = fixed_images().split(batch)
    losses, accuracies = [], []
    for step in range(steps):
        out, accuracy = step_on(model, batches[step % len(batches)])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        if hasattr(model, "update_targets"):
            model.update_targets(model.target_momentum)
        if hasattr(model, "prototypes"):  # SwAV's, after every step
            model.prototypes.normalize_()
        losses.append(out.loss.item())
        accuracies.append(accuracy)
    with torch.no_grad():  # fresh views of every batch
        finals = [step_on(model, images) for _ in range(2) for images in batches]
    final_loss = sum(out.loss.item() for out, _ in finals) / len(finals)
    final_accuracy = sum(accuracy for _, accuracy in finals) / len(finals)
    early_loss = sum(losses[2:5]) / 3  # after MoCo's queue holds real keys
    assert final_loss < 0.9 * early_loss, (early_loss, final_loss)
    assert accuracies[0] < 0.6 and final_accuracy > passing, (accuracies[0], final_accuracy)


def test_dino_overfits_a_fixed_batch_by_agreeing_with_its_teacher(one_thread):
    """DINO clusters rather than tells images apart: on 64 images its centred, sharpened teacher
    settles on a few outputs, each shared by many images, so the positive cannot rank first. What
    it learns is agreement: the loss falls and the student's most likely output becomes the
    teacher's for nearly every image, on more than one output (the center keeps it from collapsing)."""
    torch.manual_seed(0)
    model = DINO(out_dim=1024, head_hidden_dim=32, head_bottleneck_dim=16, target_momentum=0.9, target_momentum_end=0.9,
                 encoder=TINY_ENCODER, views=[WEAK_VIEWS, WEAK_VIEWS, {**WEAK_VIEWS, "copies": 2}]).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    images, losses, agreements = fixed_images(), [], []
    for _ in range(80):
        out = model.compute_loss(*model.views(images))
        agreements.append((out.z1.argmax(dim=1) == out.z2.argmax(dim=1)).float().mean().item())
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        model.update_targets(model.target_momentum)
        losses.append(out.loss.item())
    with torch.no_grad():
        out = model.compute_loss(*model.views(images))  # out.z1: the student's P_s of crop 1, out.z2: the teacher's P_t of crop 2
    agreement = (out.z1.argmax(dim=1) == out.z2.argmax(dim=1)).float().mean().item()
    assert out.loss.item() < 0.2 * losses[0], (losses[0], out.loss.item())
    assert agreements[0] < 0.8 and agreement > 0.9 and out.z2.argmax(dim=1).unique().numel() > 1, (agreements[0], agreement, out.z2)


def test_the_autoencoder_overfits_a_fixed_batch(one_thread):
    """Its loss has a floor above 0, the images' own mean binary entropy (``reconstruction_loss`` of
    σ(l) = x): the excess over it falls to a small share of its start, and each reconstruction
    becomes the nearest, among the 64 images, to its own."""
    torch.manual_seed(0)
    model = Autoencoder(decoder_channels=32, encoder=TINY_ENCODER).train()  # its one view: the images themselves
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    images = fixed_images()
    floor = reconstruction_loss(torch.logit(images), images).item()
    excess, accuracies = [], []
    for _ in range(40):
        out, accuracy = step_on(model, images)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        excess.append(out.loss.item() - floor)
        accuracies.append(accuracy)
    with torch.no_grad():
        out, final_accuracy = step_on(model, images)
    assert out.loss.item() - floor < 0.25 * excess[0], (excess[0], out.loss.item() - floor)
    assert accuracies[0] < 0.6 and final_accuracy > 0.9, (accuracies[0], final_accuracy)
