"""Thin wrappers that choose pytorch-metric-learning losses by name.

- `triplet`: TripletMarginLoss on ground-truth (anchor, positive, negative) triplets, or, from
  labels (P x K batches, or `mining` set), on every valid triplet of the batch or those a miner
  picks: `semihard` / `hard` (TripletMarginMiner), `batch_hard` (BatchHardMiner: the hardest
  positive and negative of each anchor).
- `multisimilarity`: MultiSimilarityLoss (Wang et al., 2019; its authors' alpha 2, beta 50,
  base 0.5) on the same pairs as `triplet`: every positive and negative pair of a P x K batch,
  softly weighted by how hard it is (or the pairs of the miner `mining` names), or the pairs of
  ground-truth triplets.
- `supcon`: supervised contrastive loss (SupConLoss): every same-label item of the batch is a
  positive.
- `contrastive`: NT-Xent (SimCLR): two augmented views of a track are the positive pair, every other
  view in the batch is a negative. Single process: pytorch-metric-learning's SelfSupervisedLoss.
  Under DDP: DistributedLossWrapper gathers the views of all processes, so negatives come from the
  global batch (SelfSupervisedLoss's signature does not fit that wrapper, so the wrapped loss gets
  explicit labels that make the same pairs).
"""
from __future__ import annotations

import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.utils import distributed as pml_dist

from songspace import config


class TripletLoss(torch.nn.Module):
    """Triplet margin loss (`kind` "triplet") or multi-similarity loss ("multisimilarity") over
    `(3B, d)` embeddings laid out as [anchors; positives; negatives], or over labelled items."""

    def __init__(self, margin: float, mining: str = "none", from_labels: bool = False, kind: str = "triplet"):
        super().__init__()
        self.loss = pml_losses.TripletMarginLoss(margin=margin) if kind == "triplet" \
            else pml_losses.MultiSimilarityLoss(alpha=2.0, beta=50.0, base=0.5)
        self.from_labels = from_labels or mining != "none"
        self.miner = None
        if mining == "batch_hard":
            self.miner = pml_miners.BatchHardMiner()
        elif mining != "none":
            self.miner = pml_miners.TripletMarginMiner(margin=margin, type_of_triplets=mining)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """`embeddings (3B, d)` as [anchors; positives; negatives], or `(B, d)` with `labels (B,)`
        when triplets come from labels."""
        if self.from_labels:
            if labels is None:
                raise ValueError("triplets from labels need the tracks' labels")
            if self.miner is None:  # every valid triplet of the batch
                return self.loss(embeddings, labels)
            return self.loss(embeddings, labels, self.miner(embeddings, labels))
        b = embeddings.shape[0] // 3
        idx = torch.arange(b, device=embeddings.device)
        return self.loss(embeddings, indices_tuple=(idx, idx + b, idx + 2 * b))


class ContrastiveLoss(torch.nn.Module):
    """NT-Xent over two views: `view1 (B, d)`, `view2 (B, d)`; row i of both is one track."""

    def __init__(self, temperature: float, distributed: bool = False):
        super().__init__()
        self.distributed = distributed
        if distributed:
            self.loss = pml_dist.DistributedLossWrapper(pml_losses.NTXentLoss(temperature=temperature))
        else:
            self.loss = pml_losses.SelfSupervisedLoss(pml_losses.NTXentLoss(temperature=temperature))

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        if not self.distributed:
            return self.loss(view1, view2)
        rank = torch.distributed.get_rank()
        # Labels unique across processes: both views of a track share one.
        labels = torch.arange(view1.shape[0], device=view1.device) + rank * 1_000_000
        return self.loss(torch.cat([view1, view2]), torch.cat([labels, labels]))


class SupConLoss(torch.nn.Module):
    """Supervised contrastive loss over `(B, d)` projections with labels `(B,)`; under DDP the
    other processes' items join as positives and negatives (DistributedLossWrapper)."""

    def __init__(self, temperature: float, distributed: bool = False):
        super().__init__()
        loss = pml_losses.SupConLoss(temperature=temperature)
        self.loss = pml_dist.DistributedLossWrapper(loss) if distributed else loss

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(embeddings, labels)


# The names are config.LOSSES (params are checked without importing torch); the classes here.
LOSSES = dict(zip(config.LOSSES, (TripletLoss, TripletLoss, ContrastiveLoss, SupConLoss), strict=True))


def build(name: str, margin: float = 0.2, mining: str = "none", temperature: float = 0.1,
          distributed: bool = False, from_labels: bool = False) -> torch.nn.Module:
    """The loss called `name` (see LOSSES)."""
    if name in config.TRIPLET_LOSSES:
        return TripletLoss(margin, mining, from_labels, kind=name)
    if name == "contrastive":
        return ContrastiveLoss(temperature, distributed)
    if name == "supcon":
        return SupConLoss(temperature, distributed)
    raise ValueError(f"unknown loss '{name}'; choose one of: {', '.join(LOSSES)}")
