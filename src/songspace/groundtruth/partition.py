"""A train/val/test partition of songs that keeps annotated quartets whole.

A quartet is usable only when its three songs lie on one side of the split, so quartets are
hyperedges over units (groups of tracks that must stay together) and the split is a 3-way
partition of the units at given sizes that keeps as many hyperedges uncut as it can.

The search is seeded and local: several starting partitions (the hash split, and greedy
growth of the test and validation sides around quartets), each improved by the best single
move of a unit to another side within the size window, then by the best exchange of two
units between sides, until neither keeps more quartets. Exact optimisation is NP-hard;
this is a few seconds for thousands of quartets.
"""
from __future__ import annotations

import numpy as np
from scipy import sparse

N_SIDES = 3
SWAP_CANDIDATES = 8      # units per side and direction whose exchanges are tried exactly
GREEDY_STARTS = 4        # greedy starting partitions besides the given one
MAX_ROUNDS = 10_000      # improving steps per start; each keeps at least one more quartet
SIZE_TOLERANCE = 0.05    # a side may hold its target of tracks +- this share (at least one)
MASS_TOLERANCE = 0.10    # ... and its share of song appearances in quartets +- this share


def incidence(edges: np.ndarray, n_units: int) -> sparse.csr_matrix:
    """(quartets, units) 0/1 matrix from (quartets, 3) unit indices; a unit counts once per
    quartet even when two of its songs are in it."""
    rows = np.repeat(np.arange(len(edges)), edges.shape[1])
    m = sparse.csr_matrix((np.ones(rows.size, np.float32), (rows, edges.ravel())),
                          shape=(len(edges), n_units))
    m.data[:] = 1.0  # duplicates were summed
    return m


def kept_per_side(m: sparse.csr_matrix, side: np.ndarray) -> np.ndarray:
    """(3,) quartets whose units all lie on side 0, 1, 2."""
    counts, k = _counts(m, side)
    whole = counts == k[:, None]
    return whole.sum(axis=0)


def _counts(m: sparse.csr_matrix, side: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    onehot = np.zeros((m.shape[1], N_SIDES), np.float32)
    onehot[np.arange(m.shape[1]), side] = 1.0
    counts = np.asarray(m @ onehot)
    return counts, np.asarray(m.sum(axis=1)).ravel()


def size_window(targets: np.ndarray, tolerance: float = SIZE_TOLERANCE
                ) -> tuple[np.ndarray, np.ndarray]:
    tol = np.maximum(1, np.round(tolerance * targets))
    return targets - tol, targets + tol


class _Search:
    """Local search state: sides of units, quartet counts per side, loads per side.

    sizes: (units, 2) tracks and quartet appearances per unit; low, high: (3, 2) the window of
    each side's load. A move is allowed when it does not take the loads further out of their
    windows (measured relative to the window widths).
    """

    def __init__(self, m: sparse.csr_matrix, sizes: np.ndarray, low: np.ndarray,
                 high: np.ndarray, weights: np.ndarray, side: np.ndarray):
        self.m, self.mt, self.sizes, self.low, self.high = m, m.T.tocsr(), sizes, low, high
        self.scale = np.maximum(high - low, 1.0)
        self.w = weights.astype(np.float64)
        self.side = side.copy()
        self.counts, self.k = _counts(m, self.side)
        self.load = np.stack([np.bincount(self.side, weights=sizes[:, d], minlength=N_SIDES)
                              for d in range(sizes.shape[1])], axis=1)

    def violation(self, load: np.ndarray) -> float:
        out = np.maximum(0.0, self.low - load) + np.maximum(0.0, load - self.high)
        return float((out / self.scale).sum())

    def _moved_load(self, units: list[int], to: list[int]) -> np.ndarray:
        load = self.load.copy()
        for u, b in zip(units, to):
            load[self.side[u]] -= self.sizes[u]
            load[b] += self.sizes[u]
        return load

    def value(self) -> float:
        """Weighted quartets kept: sum over sides of weight x quartets whole there."""
        return float(((self.counts == self.k[:, None]) @ self.w).sum())

    def move_gains(self) -> np.ndarray:
        """(units, 3): value after moving each unit to each side, minus now."""
        whole = (self.counts == self.k[:, None]) @ self.w
        near = (self.counts == (self.k - 1)[:, None]) * self.w
        gains = np.asarray(self.mt @ near) - np.asarray(self.mt @ whole)[:, None]
        gains[np.arange(len(self.side)), self.side] = -np.inf
        return gains

    def fits(self, units: list[int], to: list[int]) -> bool:
        return self.violation(self._moved_load(units, to)) <= self.violation(self.load) + 1e-9

    def exact_gain(self, units: list[int], to: list[int]) -> float:
        rows = np.unique(np.concatenate([self.mt[u].indices for u in units]))
        before = self.counts[rows]
        after = before.copy()
        pos = {q: i for i, q in enumerate(rows)}
        for u, b in zip(units, to):
            idx = [pos[q] for q in self.mt[u].indices]
            after[idx, self.side[u]] -= 1
            after[idx, b] += 1
        k = self.k[rows][:, None]
        return float(((after == k) @ self.w).sum() - ((before == k) @ self.w).sum())

    def apply(self, units: list[int], to: list[int]) -> None:
        for u, b in zip(units, to):
            a = self.side[u]
            q = self.mt[u].indices
            self.counts[q, a] -= 1
            self.counts[q, b] += 1
            self.load[a] -= self.sizes[u]
            self.load[b] += self.sizes[u]
            self.side[u] = b

    def repair(self) -> None:
        """Bring the loads into their windows (or as near as unit sizes allow) by the moves
        that reduce the overshoot most, the least harmful first among equals."""
        for _ in range(len(self.side) * N_SIDES):
            now = self.violation(self.load)
            if now == 0:
                return
            gains = self.move_gains()
            best = (now - 1e-9, 0.0, None)
            for u in range(len(self.side)):
                for b in range(N_SIDES):
                    if b == self.side[u]:
                        continue
                    v = self.violation(self._moved_load([u], [b]))
                    if v < best[0] - 1e-9 or (abs(v - best[0]) <= 1e-9 and gains[u, b] > best[1]):
                        best = (v, gains[u, b], (u, b))
            if best[2] is None:
                return
            self.apply([best[2][0]], [best[2][1]])

    def improve(self) -> None:
        for _ in range(MAX_ROUNDS):
            if not self._best_move() and not self._best_swap():
                return

    def _best_move(self) -> bool:
        gains = self.move_gains()
        for flat in np.argsort(-gains, axis=None, kind="stable"):
            u, b = divmod(int(flat), N_SIDES)
            if gains[u, b] <= 1e-9:
                return False
            if self.fits([u], [b]):
                self.apply([u], [b])
                return True
        return False

    def _best_swap(self) -> bool:
        gains = self.move_gains()
        best = (0, None)
        for a in range(N_SIDES):
            for b in range(a + 1, N_SIDES):
                in_a, in_b = np.flatnonzero(self.side == a), np.flatnonzero(self.side == b)
                top_a = in_a[np.argsort(-gains[in_a, b], kind="stable")[:SWAP_CANDIDATES]]
                top_b = in_b[np.argsort(-gains[in_b, a], kind="stable")[:SWAP_CANDIDATES]]
                for u in top_a:
                    for v in top_b:
                        if gains[u, b] + gains[v, a] <= best[0]:
                            continue  # shared quartets only lower the sum: u, v end apart
                        pair = ([int(u), int(v)], [b, a])
                        if not self.fits(*pair):
                            continue
                        g = self.exact_gain(*pair)
                        if g > best[0] + 1e-9:
                            best = (g, pair)
        if best[1] is None:
            return False
        self.apply(*best[1])
        return True


def _grow(m: sparse.csr_matrix, sizes: np.ndarray, targets: np.ndarray,
          rng: np.random.Generator) -> np.ndarray:
    """A starting partition: side 2 (test) then side 1 (val) grown unit by unit around the
    quartets they already hold; the rest is side 0 (train)."""
    mt = m.T.tocsr()
    k = np.asarray(m.sum(axis=1)).ravel()
    side = np.zeros(m.shape[1], int)
    free = np.ones(m.shape[1], bool)
    for s in (2, 1):
        inside = np.zeros(m.shape[0], np.float32)
        load = 0
        while load < targets[s]:
            fits = free & (load + sizes <= targets[s] + max(1, round(SIZE_TOLERANCE * targets[s])))
            if not fits.any():
                break
            complete = np.asarray(mt @ (inside == k - 1).astype(np.float32)).ravel()
            affinity = np.asarray(mt @ (inside / k)).ravel()
            score = complete + 0.1 * affinity + 1e-3 * rng.random(len(side))
            score[~fits] = -np.inf
            u = int(np.argmax(score))
            side[u], free[u] = s, False
            load += sizes[u]
            inside[mt[u].indices] += 1
    return side


def partition(edges: np.ndarray, sizes: np.ndarray, targets: np.ndarray,
              start: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Side (0 train, 1 val, 2 test) per unit, keeping many quartets whole.

    edges: (quartets, 3) unit index of each song; sizes: (units,) tracks per unit;
    targets: (3,) tracks wanted per side (sum = sizes.sum()); start: (units,) a partition to
    improve on (the hash split). Each side ends within SIZE_TOLERANCE of its target where the
    unit sizes allow it.

    Each side also holds its share of the songs' appearances in quartets, within
    MASS_TOLERANCE, and a quartet kept on a side is worth 1 / (that side's share of the
    tracks): maximising the plain count would give the big training side the songs that
    appear in most quartets and starve test and validation, which the evaluation and early
    stopping need. Returns the best of the improved starts (ties: the
    earliest).
    """
    targets = np.asarray(targets)
    m = incidence(np.asarray(edges), len(sizes))
    mass = np.asarray(m.sum(axis=0)).ravel()  # (units,) quartets each unit appears in
    loads = np.stack([sizes, mass], axis=1).astype(np.float64)
    mass_targets = targets / targets.sum() * mass.sum()
    low_t, high_t = size_window(targets.astype(np.float64))
    low_m, high_m = size_window(mass_targets, MASS_TOLERANCE)
    low, high = np.stack([low_t, low_m], axis=1), np.stack([high_t, high_m], axis=1)
    weights = targets.sum() / np.maximum(targets, 1)
    best_side, best_value = None, -np.inf
    starts = [start] + [_grow(m, sizes, targets, rng) for _ in range(GREEDY_STARTS)]
    for s in starts:
        search = _Search(m, loads, low, high, weights, s)
        search.repair()
        search.improve()
        if search.value() > best_value + 1e-9:
            best_side, best_value = search.side.copy(), search.value()
    return best_side
