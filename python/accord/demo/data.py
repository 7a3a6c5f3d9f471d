"""The demo's data: scikit-learn's bundled digits (1797 8x8 images, no download), split into a
test set and per-rank training shards."""
from __future__ import annotations

import numpy as np


def _digits():
    """sklearn's digits (bundled with scikit-learn): float32 features in [0, 1], labels."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y


def digits_shards(rank: int, size: int, seed: int = 0, skew: bool = False):
    """(this rank's training shard, the whole training set, the test set) as (x, y) torch
    tensor pairs: a fifth of a seeded permutation is the test set; shards take every size-th
    training sample, or with ``skew`` contiguous blocks of the label-sorted training set (each
    rank sees few classes). Used by benchmarks/averaging.py and the averaging/leader tests."""
    import torch

    if not 0 <= rank < size:
        raise ValueError(f"digits_shards: rank {rank} is not in [0, size={size}); pass this "
                         "process's rank and the number of ranks")
    x, y = _digits()
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = len(y) // 5
    test, train = perm[:n_test], perm[n_test:]
    if skew:
        shard = np.array_split(train[np.argsort(y[train], kind="stable")], size)[rank]
    else:
        shard = train[rank::size]

    def pair(idx):
        return torch.from_numpy(x[idx]), torch.from_numpy(y[idx])

    return pair(shard), pair(train), pair(test)
