import math

import pytest
import torch
import torch.nn.functional as F

from songspace import losses


def test_triplet_loss_equals_per_triplet_loop():
    g = torch.Generator().manual_seed(0)
    b, d, margin = 6, 8, 0.3
    emb = torch.randn(3 * b, d, generator=g)
    got = losses.build("triplet", margin=margin)(emb)
    unit = F.normalize(emb, dim=1)  # pytorch-metric-learning's default: L2 on normalised vectors
    terms = []
    for i in range(b):
        a, p, n = unit[i], unit[i + b], unit[i + 2 * b]
        terms.append(max(0.0, float((a - p).norm() - (a - n).norm()) + margin))
    positive = [t for t in terms if t > 0]  # the library averages over non-zero triplets
    assert float(got) == pytest.approx(sum(positive) / len(positive), rel=1e-5)


def test_triplet_mining_needs_labels_and_mines():
    loss = losses.build("triplet", margin=0.2, mining="hard")
    emb = torch.randn(12, 4, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="labels"):
        loss(emb)
    assert float(loss(emb, torch.tensor([0, 1, 2] * 4))) >= 0.0


def test_nt_xent_equals_formula():
    g = torch.Generator().manual_seed(2)
    v1, v2, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g), 0.5
    got = float(losses.build("contrastive", temperature=t)(v1, v2))
    z = F.normalize(torch.cat([v1, v2]), dim=1)
    sim = z @ z.T / t
    n, total = len(v1), 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        others = [k for k in range(2 * n) if k != i]
        total += -float(sim[i, j]) + math.log(sum(math.exp(float(sim[i, k])) for k in others))
    assert got == pytest.approx(total / (2 * n), rel=1e-4)


def test_contrastive_loss_decreases_on_tiny_data():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    data = torch.randn(32, 16, generator=g)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    loss_fn = losses.build("contrastive", temperature=0.2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    history = []
    for _ in range(40):
        v1 = data + 0.3 * torch.randn(data.shape, generator=g)
        v2 = data + 0.3 * torch.randn(data.shape, generator=g)
        loss = loss_fn(net(v1), net(v2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    assert sum(history[-5:]) / 5 < 0.6 * sum(history[:5]) / 5


def test_unknown_loss_lists_valid_ones():
    with pytest.raises(ValueError, match="triplet, contrastive"):
        losses.build("arcface")
