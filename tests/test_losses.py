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


def test_multi_similarity_equals_formula_on_labelled_items_and_on_triplets():
    g = torch.Generator().manual_seed(4)
    emb, labels = torch.randn(9, 5, generator=g), torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    alpha, beta, base = 2.0, 50.0, 0.5
    s = F.normalize(emb, dim=1) @ F.normalize(emb, dim=1).T  # cosine similarity

    def anchor_term(i, positives, negatives):
        pos = sum(math.exp(-alpha * (float(s[i, j]) - base)) for j in positives)
        neg = sum(math.exp(beta * (float(s[i, j]) - base)) for j in negatives)
        return math.log1p(pos) / alpha + math.log1p(neg) / beta

    want = sum(anchor_term(i, [j for j in range(9) if labels[j] == labels[i] and j != i],
                           [j for j in range(9) if labels[j] != labels[i]]) for i in range(9)) / 9
    assert float(losses.build("multisimilarity", from_labels=True)(emb, labels)) == pytest.approx(want, rel=1e-4)
    # ground-truth triplets [anchors; positives; negatives]: each anchor's one positive and negative pair
    b = 3
    trip = torch.randn(3 * b, 5, generator=g)
    s = F.normalize(trip, dim=1) @ F.normalize(trip, dim=1).T
    # the library averages over every embedding of the batch, positives and negatives included (no pairs of their own)
    want = sum(anchor_term(i, [i + b], [i + 2 * b]) for i in range(b)) / (3 * b)
    assert float(losses.build("multisimilarity")(trip)) == pytest.approx(want, rel=1e-4)


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
    with pytest.raises(ValueError, match="triplet, multisimilarity, contrastive"):
        losses.build("arcface")
