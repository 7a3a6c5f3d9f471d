"""The demo's data: scikit-learn's bundled digits (1797 8x8 images, no download), split into a
test set and per-rank training shards; and a harder task generated locally (a random teacher
network labels random inputs) with the same interface, used by the convergence studies."""
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
    if not 0 <= rank < size:
        raise ValueError(f"digits_shards: rank {rank} is not in [0, size={size}); pass this "
                         "process's rank and the number of ranks")
    x, y = _digits()
    return _split(x, y, rank, size, seed, skew)


def _teacher(n: int, task_seed: int):
    """n samples of a 10-class task that is hard for a small model: x ~ N(0, I_64); the label is
    the argmax of a fixed random 64-32-10 tanh network plus Gumbel noise of scale 0.1 (about 5%
    of the labels disagree with the teacher's argmax). Logistic regression reaches ~67% test
    accuracy on 8000 samples, the demo's 64-64-10 ReLU MLP ~60% before it starts to overfit."""
    rng = np.random.default_rng(task_seed)
    w1 = rng.standard_normal((64, 32)) * (2.0 / np.sqrt(64))
    w2 = rng.standard_normal((32, 10)) * (3.0 / np.sqrt(32))
    x = rng.standard_normal((n, 64))
    logits = np.tanh(x @ w1) @ w2
    y = np.argmax(logits + 0.1 * rng.gumbel(size=logits.shape), axis=1)
    return x.astype(np.float32), y


def teacher_shards(rank: int, size: int, seed: int = 0, skew: bool = False, n: int = 8000,
                   task_seed: int = 1234):
    """Like :func:`digits_shards` for the teacher task (64 features, 10 classes, ``n``
    samples; the same task for every ``seed``, which only changes the test/train split)."""
    if not 0 <= rank < size:
        raise ValueError(f"teacher_shards: rank {rank} is not in [0, size={size}); pass this "
                         "process's rank and the number of ranks")
    x, y = _teacher(n, task_seed)
    return _split(x, y, rank, size, seed, skew)


def _split(x, y, rank, size, seed, skew):
    import torch

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
