import math

import pytest
import torch

from ssl_lightning.errors import ConfigError
from ssl_lightning.losses import (
    barlow_twins_loss,
    byol_loss,
    cross_view_info_nce,
    dino_loss,
    info_nce,
    moco_info_nce,
    reconstruction_loss,
    simsiam_loss,
    sinkhorn_knopp,
    vicreg_loss,
)


def nt_xent_loop(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    """NT-Xent written straight from SimCLR's Eq. 1, one anchor at a time, in float64."""
    views = [v / v.norm() for v in torch.cat([z1, z2]).double()]
    n = len(z1)
    total = 0.0
    for i, anchor in enumerate(views):
        positive = (i + n) % (2 * n)
        numerator = math.exp(float(anchor @ views[positive]) / temperature)
        denominator = sum(math.exp(float(anchor @ views[k]) / temperature) for k in range(2 * n) if k != i)
        total += -math.log(numerator / denominator)
    return total / (2 * n)


@pytest.mark.parametrize("n, d, temperature", [(2, 3, 0.5), (5, 8, 0.1), (16, 4, 1.0), (7, 32, 0.07)])
def test_info_nce_matches_the_papers_formula(n, d, temperature):
    g = torch.Generator().manual_seed(n * d)
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    assert info_nce(z1, z2, temperature).item() == pytest.approx(nt_xent_loop(z1, z2, temperature), rel=1e-5)


def test_info_nce_closed_form_for_orthogonal_images():
    # Two images, views identical to their image, images orthogonal: every anchor has
    # sim(positive) = 1 and two negatives with sim 0, so l = -log(e^(1/T) / (e^(1/T) + 2)).
    z1 = torch.eye(2)
    t = 0.5
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2))
    assert info_nce(z1, z1.clone(), t).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_is_scale_invariant_and_differentiable():
    z1 = torch.randn(6, 5, requires_grad=True)
    z2 = torch.randn(6, 5)
    loss = info_nce(z1, z2, 0.2)
    assert info_nce(3 * z1, 0.5 * z2, 0.2).item() == pytest.approx(loss.item(), rel=1e-5)
    loss.backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0


@pytest.mark.parametrize("temperature", [0.0, -0.1])
def test_info_nce_rejects_non_positive_temperature(temperature):
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        info_nce(torch.randn(4, 3), torch.randn(4, 3), temperature)


def test_info_nce_rejects_a_single_image():
    with pytest.raises(ConfigError, match="at least 2 images"):
        info_nce(torch.randn(1, 3), torch.randn(1, 3), 0.5)


def test_info_nce_rejects_mismatched_views():
    with pytest.raises(ConfigError, match="equal shape"):
        info_nce(torch.randn(4, 3), torch.randn(5, 3), 0.5)


def test_info_nce_when_every_similarity_is_equal():
    # All views identical: every logit is 1/T, so the loss is log of the 2N-1 candidates.
    z = torch.ones(5, 3)
    assert info_nce(z, z.clone(), 0.3).item() == pytest.approx(math.log(2 * 5 - 1), rel=1e-6)


def moco_loop(q, k, queue, temperature):
    """MoCo's Eq. 1 one query at a time: -log(exp(q·k+/T) / (exp(q·k+/T) + Σ exp(q·k-/T)))."""
    unit = lambda v: v.double() / v.double().norm()  # noqa: E731
    total = 0.0
    for qi, ki in zip(q, k):
        positive = math.exp(float(unit(qi) @ unit(ki)) / temperature)
        negatives = sum(math.exp(float(unit(qi) @ unit(kj)) / temperature) for kj in queue)
        total += -math.log(positive / (positive + negatives))
    return total / len(q)


@pytest.mark.parametrize("n, d, size, temperature", [(2, 3, 4, 0.2), (6, 8, 12, 0.07), (4, 16, 32, 1.0)])
def test_moco_info_nce_matches_the_papers_formula(n, d, size, temperature):
    g = torch.Generator().manual_seed(size)
    q, k, queue = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g), torch.randn(size, d, generator=g)
    assert moco_info_nce(q, k, queue, temperature).item() == pytest.approx(moco_loop(q, k, queue, temperature), rel=1e-5)


def test_moco_info_nce_when_every_similarity_is_equal():
    q = torch.ones(3, 4)
    assert moco_info_nce(q, 2 * q, torch.ones(10, 4), 0.2).item() == pytest.approx(math.log(1 + 10), rel=1e-6)


def test_moco_info_nce_rejects_bad_input():
    with pytest.raises(ConfigError, match="temperature"):
        moco_info_nce(torch.randn(2, 3), torch.randn(2, 3), torch.randn(4, 3), 0.0)
    with pytest.raises(ConfigError, match="queue"):
        moco_info_nce(torch.randn(2, 3), torch.randn(2, 3), torch.randn(4, 5), 0.2)


def test_byol_loss_is_the_normalised_squared_distance():
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    by_loop = sum(float(((pi / pi.norm() - zi / zi.norm()) ** 2).sum()) for pi, zi in zip(p, z)) / 7
    assert byol_loss(p, z).item() == pytest.approx(by_loop, rel=1e-5)
    assert byol_loss(p, 3 * p).item() == pytest.approx(0.0, abs=1e-6)  # same direction
    assert byol_loss(p, -p).item() == pytest.approx(4.0, rel=1e-6)  # opposite: 2 - 2 * (-1)


def barlow_twins_loop(z1, z2, lambd, eps=1e-5):
    """The paper's Eq. 1 entry by entry, with each dimension standardised over the batch."""
    n, d = z1.shape
    a, b = z1.double(), z2.double()
    a = (a - a.mean(0)) / torch.sqrt(a.var(0, unbiased=False) + eps)
    b = (b - b.mean(0)) / torch.sqrt(b.var(0, unbiased=False) + eps)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c_ij = sum(float(a[s, i] * b[s, j]) for s in range(n)) / n
            loss += (1 - c_ij) ** 2 if i == j else lambd * c_ij**2
    return loss


@pytest.mark.parametrize("n, d, lambd", [(4, 3, 5e-3), (16, 6, 0.1), (9, 5, 1.0)])
def test_barlow_twins_loss_matches_the_papers_formula(n, d, lambd):
    g = torch.Generator().manual_seed(n + d)
    z1, z2 = 3 * torch.randn(n, d, generator=g) + 1, torch.randn(n, d, generator=g)
    assert barlow_twins_loss(z1, z2, lambd).item() == pytest.approx(barlow_twins_loop(z1, z2, lambd), rel=1e-4)


def test_barlow_twins_loss_is_zero_for_identical_decorrelated_views():
    # Columns ±1 patterns that are orthogonal and zero-mean: standardised C is the identity.
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert barlow_twins_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-4)


def vicreg_loop(z1, z2, sim_weight, var_weight, cov_weight):
    """The paper's Eq. 1-6 entry by entry, in float64: s, then v and c per branch."""
    n, d = z1.shape
    a, b = z1.double(), z2.double()
    invariance = sum(float((a[i, k] - b[i, k]) ** 2) for i in range(n) for k in range(d)) / (n * d)
    variance = covariance = 0.0
    for z in (a, b):
        mean = [sum(float(z[i, k]) for i in range(n)) / n for k in range(d)]
        cov = [[sum((float(z[i, j]) - mean[j]) * (float(z[i, k]) - mean[k]) for i in range(n)) / (n - 1) for k in range(d)]
               for j in range(d)]
        variance += sum(max(0.0, 1 - math.sqrt(cov[k][k] + 1e-4)) for k in range(d)) / d / 2
        covariance += sum(cov[j][k] ** 2 for j in range(d) for k in range(d) if j != k) / d
    return sim_weight * invariance + var_weight * variance + cov_weight * covariance


@pytest.mark.parametrize("n, d, weights", [(4, 3, (25.0, 25.0, 1.0)), (12, 6, (1.0, 2.0, 3.0)), (9, 5, (0.0, 0.0, 1.0))])
def test_vicreg_loss_matches_the_papers_formula(n, d, weights):
    g = torch.Generator().manual_seed(n + d)
    z1, z2 = 0.3 * torch.randn(n, d, generator=g) + 1, torch.randn(n, d, generator=g)  # one spread < 1: the hinge is active
    assert vicreg_loss(z1, z2, *weights).item() == pytest.approx(vicreg_loop(z1, z2, *weights), rel=1e-4)


def test_vicreg_loss_closed_form_cases():
    # Identical views with unit-variance, uncorrelated columns: every term is 0 but the hinge's sqrt(1 + 1e-4) - 1 > 0.
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]) * math.sqrt(3 / 4)  # unbiased variance 1
    assert vicreg_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-6)
    # A collapsed batch (every row equal): variance term at its maximum, relu(1 - sqrt(1e-4)) = 0.99, times 25.
    collapsed = torch.ones(8, 4)
    assert vicreg_loss(collapsed, collapsed.clone()).item() == pytest.approx(25 * 0.99, rel=1e-6)


def test_simsiam_loss_is_the_negative_mean_cosine():
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    by_loop = -sum(float(pi @ zi / (pi.norm() * zi.norm())) for pi, zi in zip(p, z)) / 7
    assert simsiam_loss(p, z).item() == pytest.approx(by_loop, rel=1e-5)
    assert simsiam_loss(p, 2 * p).item() == pytest.approx(-1.0, rel=1e-6)  # its minimum, the same direction
    with pytest.raises(ConfigError, match="equal shape"):
        simsiam_loss(p, z[:, :3])


@pytest.mark.parametrize("loss", ["info_nce", "vicreg", "simsiam"])
def test_losses_match_lightlys_on_the_same_inputs(loss):
    """An independent implementation: lightly's NTXentLoss, VICRegLoss and NegativeCosineSimilarity."""
    from lightly.loss import NegativeCosineSimilarity, NTXentLoss, VICRegLoss

    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(16, 8, generator=g), 0.5 * torch.randn(16, 8, generator=g)
    ours, theirs = {
        "info_nce": (lambda: info_nce(z1, z2, 0.2), lambda: NTXentLoss(temperature=0.2)(z1, z2)),
        "vicreg": (lambda: vicreg_loss(z1, z2), lambda: VICRegLoss()(z1, z2)),
        "simsiam": (lambda: simsiam_loss(z1, z2), lambda: NegativeCosineSimilarity()(z1, z2)),
    }[loss]
    assert ours().item() == pytest.approx(theirs().item(), rel=1e-5)


@pytest.mark.parametrize("n, d, temperature", [(2, 3, 1.0), (8, 5, 0.2), (16, 4, 0.1)])
def test_cross_view_info_nce_matches_the_papers_formula(n, d, temperature):
    """MoCo v3's ctr / NNCLR's Eq. 2 term by term: each anchor against the N candidates."""
    g = torch.Generator().manual_seed(n)
    a, c = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    cos = lambda x, y: float(x @ y / (x.norm() * y.norm()))  # noqa: E731
    by_loop = sum(-math.log(math.exp(cos(a[i], c[i]) / temperature) / sum(math.exp(cos(a[i], c[k]) / temperature) for k in range(n)))
                  for i in range(n)) / n
    assert cross_view_info_nce(a, c, temperature).item() == pytest.approx(by_loop, rel=1e-5)


def test_cross_view_info_nce_closed_forms():
    # Orthonormal anchors, each its own candidate: l = -log(e^(1/T) / (e^(1/T) + (N-1))).
    n, t = 4, 0.5
    assert cross_view_info_nce(torch.eye(n), torch.eye(n), t).item() == pytest.approx(-math.log(math.e ** 2 / (math.e ** 2 + n - 1)))
    z = torch.ones(5, 3)  # every similarity equal: log N
    assert cross_view_info_nce(z, z, 0.2).item() == pytest.approx(math.log(5), rel=1e-6)
    with pytest.raises(ConfigError, match="temperature"):
        cross_view_info_nce(z, z, 0.0)


def _log_softmax(row, t):
    m = max(x / t for x in row)
    return [x / t - m - math.log(sum(math.exp(y / t - m) for y in row)) for x in row]


@pytest.mark.parametrize("v_s, v_t, n, k", [(2, 2, 3, 4), (6, 2, 4, 5), (3, 1, 2, 3)])
def test_dino_loss_matches_the_papers_formula(v_s, v_t, n, k):
    """Eq. 3 by loop: every (teacher crop t, student crop s != t), -Σ_k P_t log P_s, mean over the
    batch, then over the pairs."""
    g = torch.Generator().manual_seed(v_s * 10 + n)
    student, teacher, center = torch.randn(v_s, n, k, generator=g), torch.randn(v_t, n, k, generator=g), torch.randn(k, generator=g)
    ts, tt = 0.1, 0.05
    pairs = []
    for t in range(v_t):
        for s in range(v_s):
            if s == t:
                continue
            per_image = []
            for i in range(n):
                p_t = [math.exp(x) for x in _log_softmax((teacher[t, i] - center).tolist(), tt)]
                log_p_s = _log_softmax(student[s, i].tolist(), ts)
                per_image.append(-sum(a * b for a, b in zip(p_t, log_p_s)))
            pairs.append(sum(per_image) / n)
    assert dino_loss(student, teacher, center, ts, tt).item() == pytest.approx(sum(pairs) / len(pairs), rel=1e-5)


def test_dino_loss_closed_forms_and_errors():
    # Equal logits everywhere: P_t and P_s are uniform, the cross-entropy is log K.
    assert dino_loss(torch.zeros(4, 3, 7), torch.zeros(2, 3, 7), torch.zeros(7)).item() == pytest.approx(math.log(7))
    # A sharp teacher and a student that puts all its mass on the same class: close to 0.
    logits = torch.full((2, 1, 5), -50.0)
    logits[..., 2] = 50.0
    assert dino_loss(logits, logits, torch.zeros(5), 0.1, 0.04).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError, match="center has 4 entries"):
        dino_loss(torch.zeros(4, 3, 7), torch.zeros(2, 3, 7), torch.zeros(4))
    with pytest.raises(ConfigError, match="V >= 2"):
        dino_loss(torch.zeros(1, 3, 7), torch.zeros(1, 3, 7), torch.zeros(7))


def test_sinkhorn_knopp_by_loop_and_its_marginals():
    """SwAV's Algorithm by hand: Q = exp(S/ε)ᵀ / ΣQ, then rows to 1/K and columns to 1/B, times B."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 4, generator=g).clamp(-1, 1)
    eps, iterations = 0.5, 3
    q = [[math.exp(float(scores[b, k]) / eps) for b in range(6)] for k in range(4)]  # K x B
    total = sum(map(sum, q))
    q = [[x / total for x in row] for row in q]
    for _ in range(iterations):
        q = [[x / (sum(row) * 4) for x in row] for row in q]
        cols = [sum(q[k][b] for k in range(4)) for b in range(6)]
        q = [[q[k][b] / (cols[b] * 6) for b in range(6)] for k in range(4)]
    expected = torch.tensor([[6 * q[k][b] for k in range(4)] for b in range(6)])
    codes = sinkhorn_knopp(scores, eps, iterations)
    assert torch.allclose(codes, expected, atol=1e-6)
    assert torch.allclose(codes.sum(dim=1), torch.ones(6), atol=1e-6)  # each row a distribution
    # Many iterations: every prototype gets the same share of the batch (equipartition).
    assert torch.allclose(sinkhorn_knopp(scores, 0.05, 200).sum(dim=0), torch.full((4,), 6 / 4), atol=1e-3)
    assert sinkhorn_knopp(scores.bfloat16(), 0.05, 3).dtype == torch.float32  # float32 even from bf16 scores


def test_dino_and_swav_losses_match_lightlys_on_the_same_inputs():
    """An independent implementation: lightly's DINOLoss and SwaVLoss (with its sinkhorn)."""
    from lightly.loss import DINOLoss, SwaVLoss

    from ssl_lightning.losses import cross_entropy_across_crops

    g = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(6, 8, 16, generator=g), torch.randn(2, 8, 16, generator=g)
    theirs = DINOLoss(output_dim=16, teacher_temp=0.05, student_temp=0.1)(list(teacher), list(student), teacher_temp=0.05)
    assert dino_loss(student, teacher, torch.zeros(16), 0.1, 0.05).item() == pytest.approx(theirs.item(), rel=1e-5)
    scores = torch.nn.functional.normalize(torch.randn(6, 8, 5, generator=g), dim=-1)  # crops x batch x prototypes
    codes = torch.stack([sinkhorn_knopp(s) for s in scores[:2]])
    ours = cross_entropy_across_crops(codes, scores, 0.1)
    theirs = SwaVLoss(temperature=0.1)(list(scores[:2]), list(scores[2:]))
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


def test_the_multi_crop_cross_entropy_is_float32_under_bf16_autocast():
    """The training precision on CPU is bf16 autocast, which would run the einsum in bf16: a loss
    near log K = 8.3 would then move in steps of 0.03 and hide training progress."""
    g = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(4, 16, 4096, generator=g), torch.randn(2, 16, 4096, generator=g)
    want = dino_loss(student, teacher, torch.zeros(4096), 0.1, 0.04)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = dino_loss(student, teacher, torch.zeros(4096), 0.1, 0.04)
    assert got.dtype == torch.float32 and got.item() == pytest.approx(want.item(), rel=1e-6)


@pytest.mark.parametrize("shape", [(2, 1, 3, 3), (4, 3, 5, 2)])
def test_reconstruction_loss_matches_the_formula(shape):
    """-[x log σ(l) + (1 − x) log(1 − σ(l))] pixel by pixel, in float64, averaged."""
    g = torch.Generator().manual_seed(len(shape) + shape[1])
    logits, target = 3 * torch.randn(shape, generator=g), torch.rand(shape, generator=g)
    sigmoid = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    terms = [-(x * math.log(sigmoid(l)) + (1 - x) * math.log(1 - sigmoid(l)))
             for l, x in zip(logits.double().flatten().tolist(), target.double().flatten().tolist())]
    assert reconstruction_loss(logits, target).item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_reconstruction_loss_closed_forms():
    x = torch.tensor([0.0, 0.25, 0.5, 1.0]).view(1, 1, 2, 2)
    # A perfect reconstruction σ(l) = x costs the targets' mean binary entropy (0 for 0/1 pixels).
    entropy = sum(-(p * math.log(p) + (1 - p) * math.log(1 - p)) for p in (0.25, 0.5)) / 4
    assert reconstruction_loss(torch.logit(x, eps=1e-7), x).item() == pytest.approx(entropy, abs=1e-5)
    assert reconstruction_loss(torch.zeros_like(x), x).item() == pytest.approx(math.log(2), rel=1e-6)  # σ(0) = 1/2
    binary = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2)
    assert reconstruction_loss(torch.tensor([-100.0, 100.0]).view(1, 1, 1, 2), binary).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError, match="equal shape"):
        reconstruction_loss(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 3))
