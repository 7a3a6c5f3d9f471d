"""accord demo: `mpirun -np 4 python -m accord.demo` (what `make demo` runs).

Trains one small MLP on scikit-learn's bundled digits data (no download) once per aggregation
method, over the ranks mpirun started, and compares them: test accuracy, training loss, bytes
communicated per rank and time per step, as a table, a JSON file and a two-panel PNG.

    average      gradients averaged every step (what DDP does), lr tuned for one rank
    average-xN   the same with the lr scaled linearly by the rank count N
    adasum       DistributedOptimizer(op=accord.Adasum), the single-rank lr
    acga         DistributedOptimizer(op=accord.Consensus) with ConsensusAggregator(keep_scale=True)
    lsgd         local SGD steps + accord.LeaderSGD (pull toward the best worker every 4 steps)
    cpsgd        local SGD steps + accord.PeriodicAverager (average the parameters every 8 steps)
    adpsgd       local SGD steps + accord.AdaptivePeriodicAverager (same number of syncs at most)

``digits_shards(rank, size, seed, skew)`` (the data) is also used by benchmarks and tests;
``teacher_shards(rank, size, seed, skew)`` gives a harder task with the same interface (random
inputs labelled by a fixed random network), used by the convergence studies.
"""
from .data import digits_shards, teacher_shards

__all__ = ["digits_shards", "main", "teacher_shards"]


def main(argv=None):
    from .cli import main as _main

    return _main(argv)
