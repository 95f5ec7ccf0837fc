"""Self-supervised losses, each a pure function of tensors (no state, no logging)."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_lightning.errors import ConfigError


def check_temperature(temperature: float) -> None:
    """Refuses a temperature <= 0 in one line."""
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}; the papers use 0.07 to 1.0")


def float32_math(tensor: Tensor) -> contextlib.AbstractContextManager:
    """A context in which matrix products on ``tensor``'s device run in float32 even inside an
    autocast region (bf16 or fp16 training): ``.float()`` alone is undone by autocast, which casts
    every ``@``/``einsum`` operand back to the low precision."""
    return torch.autocast(tensor.device.type, enabled=False)


def check_view_pair(z1: Tensor, z2: Tensor) -> None:
    """Refuses embeddings that are not two (N, D) tensors of equal shape with N >= 2."""
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ConfigError(f"expected two (N, D) embeddings of equal shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape[0] < 2:
        raise ConfigError(
            f"a contrastive batch needs at least 2 images (got {z1.shape[0]}): the negatives are the "
            "other images of the batch; raise the batch size"
        )


def positive_index(n: int, device: torch.device | None = None) -> Tensor:
    """For the 2N views ordered [view 1 of images 0..N-1, view 2 of images 0..N-1], the index of
    each view's positive (the other view of the same image)."""
    return torch.cat([torch.arange(n, 2 * n, device=device), torch.arange(0, n, device=device)])  # (2N,)


def cosine_similarity_matrix(z1: Tensor, z2: Tensor) -> Tensor:
    """Cosine similarities between all 2N views, with each view's similarity to itself set to -inf
    so that it is never a candidate."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, D)
    sim = z @ z.T  # (2N, 2N)
    self_mask = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    return sim.masked_fill(self_mask, float("-inf"))  # (2N, 2N)


def info_nce(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """SimCLR's NT-Xent loss (arXiv:2002.05709, Eq. 1), averaged over all 2N anchors.

    For anchor i with positive j(i), and sim the cosine similarity:
        l_i = -log( exp(sim(i, j(i)) / T) / sum_{k != i} exp(sim(i, k) / T) )
    The 2N-2 views of the other images are the negatives.

    Args:
        z1: (N, D) embeddings of the first views; row n comes from image n.
        z2: (N, D) embeddings of the second views, row for row.
        temperature: T > 0.
    Returns:
        scalar loss.
    """
    check_temperature(temperature)
    check_view_pair(z1, z2)
    logits = cosine_similarity_matrix(z1, z2) / temperature  # (2N, 2N)
    return F.cross_entropy(logits, positive_index(z1.shape[0], z1.device))


def cross_view_info_nce(anchors: Tensor, candidates: Tensor, temperature: float) -> Tensor:
    """InfoNCE across two sets, one direction: each anchor's positive is the candidate of the same
    row, its negatives the other N-1 candidates (MoCo v3's ``ctr``, arXiv:2104.02057 Alg. 1; NNCLR's
    loss, arXiv:2104.14548, with the nearest neighbours as anchors):

        l_n = -log( exp(a_n · c_n / T) / Σ_k exp(a_n · c_k / T) ),  a, c L2-normalised

    Args:
        anchors: (N, D); candidates: (N, D), row n the positive of anchor n.
        temperature: T > 0.
    Returns:
        scalar: cross-entropy, mean over the N anchors.
    """
    check_temperature(temperature)
    check_view_pair(anchors, candidates)
    logits = F.normalize(anchors, dim=1) @ F.normalize(candidates, dim=1).T / temperature  # (N, N)
    return F.cross_entropy(logits, torch.arange(len(anchors), device=anchors.device))


def moco_info_nce(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo's InfoNCE (arXiv:1911.05722, Eq. 1): each query's positive is its key, the negatives
    are the K past keys in the queue.

        logits_n = [q_n · k_n, q_n · queue_1, ..., q_n · queue_K] / T,  positive at index 0

    Args:
        q: (N, D) queries; k: (N, D) keys of the same images; queue: (K, D) past keys.
            All three are L2-normalised here.
        temperature: T > 0.
    Returns:
        scalar: cross-entropy, mean over the N queries.
    """
    check_temperature(temperature)
    if q.shape != k.shape or q.dim() != 2 or queue.dim() != 2 or queue.shape[1] != q.shape[1]:
        raise ConfigError(f"expected q, k (N, D) and queue (K, D), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(queue.shape)}")
    q, k, queue = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(queue, dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)  # (N, 1)
    negatives = q @ queue.T  # (N, K)
    logits = torch.cat([positive, negatives], dim=1) / temperature  # (N, 1 + K)
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL's regression loss (arXiv:2006.07733, Eq. 2): the mean over the batch of
    ‖p/‖p‖ − z/‖z‖‖² = 2 − 2·cos(p, z). ``z`` is the target: pass it without gradient.

    Args:
        p: (N, D) online predictions; z: (N, D) target projections.
    """
    if p.shape != z.shape or p.dim() != 2:
        raise ConfigError(f"expected two (N, D) tensors of equal shape, got {tuple(p.shape)} and {tuple(z.shape)}")
    return (2 - 2 * F.cosine_similarity(p, z, dim=1)).mean()


def barlow_twins_loss(z1: Tensor, z2: Tensor, lambd: float = 5e-3) -> Tensor:
    """Barlow Twins (arXiv:2103.03230, Eq. 1) on the cross-correlation C of the batch-standardised
    embeddings (as BatchNorm without affine parameters does, eps 1e-5):

        C = z1ᵀ z2 / N,   loss = Σᵢ (1 − Cᵢᵢ)² + λ Σᵢ Σⱼ≠ᵢ Cᵢⱼ²

    Args:
        z1: (N, D) embeddings of the first views, N >= 2.
        z2: (N, D) embeddings of the second views, row for row.
        lambd: λ, the weight of the redundancy-reduction term.
    """
    check_view_pair(z1, z2)
    n = z1.shape[0]
    z1 = F.batch_norm(z1, None, None, training=True)  # (N, D), each dimension standardised
    z2 = F.batch_norm(z2, None, None, training=True)
    c = z1.T @ z2 / n  # (D, D)
    on_diag = (1 - c.diagonal()).pow(2).sum()
    off_diag = c.pow(2).sum() - c.diagonal().pow(2).sum()
    return on_diag + lambd * off_diag


def vicreg_loss(z1: Tensor, z2: Tensor, sim_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0) -> Tensor:
    """VICReg (arXiv:2105.04906), as its official code computes it:

        invariance  s = mean over N and D of (z1 - z2)²
        variance    v = ½ Σ_b mean_d relu(1 - sqrt(Var(z_b[:, d]) + 1e-4))   (unbiased variance)
        covariance  c = Σ_b Σ_{i != j} C(z_b)ᵢⱼ² / D,  C(z) = (z - z̄)ᵀ (z - z̄) / (N - 1)
        loss = sim_weight·s + var_weight·v + cov_weight·c

    Args:
        z1: (N, D) expander outputs of the first views, N >= 2 (the method gathers the global batch).
        z2: (N, D) of the second views, row for row.
        sim_weight: λ, the invariance term's weight (the paper: 25).
        var_weight: μ, the variance term's weight (the paper: 25).
        cov_weight: ν, the covariance term's weight (the paper: 1).
    """
    check_view_pair(z1, z2)
    n, d = z1.shape
    invariance = F.mse_loss(z1, z2)
    variance, covariance = z1.new_zeros(()), z1.new_zeros(())
    for z in (z1, z2):
        z = z - z.mean(dim=0)  # (N, D)
        std = torch.sqrt(z.var(dim=0) + 1e-4)  # (D,)
        variance = variance + F.relu(1 - std).mean() / 2
        cov = z.T @ z / (n - 1)  # (D, D)
        covariance = covariance + (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / d
    return sim_weight * invariance + var_weight * variance + cov_weight * covariance


def simsiam_loss(p: Tensor, z: Tensor) -> Tensor:
    """SimSiam's negative cosine similarity (arXiv:2011.10566, Eq. 1), the mean over the batch of
    -cos(p, z). ``z`` is the stop-gradient side: the method passes it detached and symmetrises
    (L = ½ D(p1, z2) + ½ D(p2, z1)).

    Args:
        p: (N, D) predictor outputs; z: (N, D) projector outputs of the other view.
    """
    if p.shape != z.shape or p.dim() != 2:
        raise ConfigError(f"expected two (N, D) tensors of equal shape, got {tuple(p.shape)} and {tuple(z.shape)}")
    return -F.cosine_similarity(p, z, dim=1).mean()


def cross_entropy_across_crops(targets: Tensor, logits: Tensor, temperature: float) -> Tensor:
    """The multi-crop cross-entropy that SwAV and DINO share: the target distribution of each of the
    first A crops predicted from every other crop,

        ℓ(a, v) = -mean_n Σ_k targets[a, n, k] · log softmax(logits[v, n] / T)_k,
        loss = mean over the pairs (a, v) with v != a of ℓ(a, v)   (float32, whatever the autocast).

    Args:
        targets: (A, N, K) distributions over K (rows sum to 1) for crops 0..A-1; no gradient.
        logits: (V, N, K) of every crop, the A target crops first (V > A or V >= 2).
        temperature: T > 0.
    """
    check_temperature(temperature)
    if targets.dim() != 3 or logits.dim() != 3 or targets.shape[1:] != logits.shape[1:] or not 1 <= len(targets) <= len(logits) or len(logits) < 2:
        raise ConfigError(f"expected targets (A, N, K) and logits (V, N, K) with 1 <= A <= V and V >= 2, got "
                          f"{tuple(targets.shape)} and {tuple(logits.shape)}")
    with float32_math(logits):
        log_probs = F.log_softmax(logits.float() / temperature, dim=-1)  # (V, N, K)
        cross = -torch.einsum("ank,vnk->avn", targets.float(), log_probs).mean(dim=2)  # (A, V): ℓ(a, v)
    other = ~torch.eye(*cross.shape, dtype=torch.bool, device=cross.device)  # v != a
    return cross[other].mean()


def dino_loss(student_logits: Tensor, teacher_logits: Tensor, center: Tensor, student_temperature: float = 0.1,
              teacher_temperature: float = 0.04) -> Tensor:
    """DINO's loss (arXiv:2104.14294, Eq. 3 and Algorithm 1): for every teacher crop t and student
    crop s != t, H(P_t, P_s) = -Σ_k P_t(k) log P_s(k), with

        P_t = softmax((teacher_t - center) / T_t),   P_s = softmax(student_s / T_s),

    the mean over the batch, then the mean over the pairs (``cross_entropy_across_crops``).

    Args:
        student_logits: (V_s, N, K) of all crops; the global crops are the first V_t.
        teacher_logits: (V_t, N, K) of the global crops (pass them without gradient).
        center: (K,) the running mean of the teacher's outputs.
        student_temperature: T_s (the paper: 0.1).
        teacher_temperature: T_t (the paper: 0.04 warming up to 0.07).
    """
    check_temperature(teacher_temperature)
    if center.shape[-1] != teacher_logits.shape[-1]:
        raise ConfigError(f"the center has {center.shape[-1]} entries for {teacher_logits.shape[-1]} outputs")
    teacher_probs = F.softmax((teacher_logits.float() - center.float()) / teacher_temperature, dim=-1)  # (V_t, N, K)
    return cross_entropy_across_crops(teacher_probs, student_logits, student_temperature)


@torch.no_grad()
def sinkhorn_knopp(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """SwAV's codes (arXiv:2006.09882, Sec. 3.1; its code's ``distributed_sinkhorn``): the soft
    assignment of B embeddings to K prototypes that spreads the batch equally over the prototypes.
    Q = exp(scores / ε)ᵀ, normalised to sum 1, then ``iterations`` times its rows scaled to sum 1/K
    and its columns to sum 1/B; returned as B·Qᵀ, each row a distribution. Float32 even under bf16:
    exp(s / ε) with ε = 0.05 needs its range.

    Args:
        scores: (B, K) cosine similarities of embeddings and prototypes (the global batch's).
        epsilon: ε, the entropy regularisation (the paper: 0.05).
        iterations: Sinkhorn-Knopp iterations (the paper: 3).
    Returns:
        (B, K) float32 codes.
    """
    if epsilon <= 0 or iterations < 1:
        raise ConfigError(f"Sinkhorn-Knopp needs epsilon > 0 and iterations >= 1, got {epsilon} and {iterations}")
    q = torch.exp(scores.float() / epsilon).T  # (K, B)
    k, b = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True) * k  # each prototype gets 1/K of the batch
        q /= q.sum(dim=0, keepdim=True) * b  # each embedding spreads 1/B
    return (q * b).T  # (B, K)


def reconstruction_loss(logits: Tensor, target: Tensor) -> Tensor:
    """An autoencoder's binary cross-entropy between the decoder's logits l and the target
    pixels x in [0, 1] (Vincent et al. 2008, "Extracting and Composing Robust Features with
    Denoising Autoencoders", the reconstruction cross-entropy), averaged over every pixel:

        loss = mean over n, c, h, w of -[x log σ(l) + (1 − x) log(1 − σ(l))]

    It is smallest, the targets' mean binary entropy, where σ(l) = x; 0 only for 0/1 pixels.
    Taken from the logits (``F.binary_cross_entropy_with_logits``): σ's saturation leaves no log(0).

    Args:
        logits: (N, C, H, W) decoder outputs, before the sigmoid.
        target: (N, C, H, W) the clean images, in [0, 1].
    Returns:
        scalar loss.
    """
    if logits.shape != target.shape:
        raise ConfigError(f"expected logits and target of equal shape, got {tuple(logits.shape)} and {tuple(target.shape)}")
    return F.binary_cross_entropy_with_logits(logits, target)
