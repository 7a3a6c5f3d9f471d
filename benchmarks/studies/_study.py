"""Pieces the convergence studies share: the tasks, the model, evaluating the mean of the
workers, and the driver that starts a study's workers under mpirun."""
from __future__ import annotations

import os
import subprocess
import sys
import time

TASKS = ("digits", "teacher")


def shards(task, rank, size, seed, skew):
    from accord.demo.data import digits_shards, teacher_shards

    fn = {"digits": digits_shards, "teacher": teacher_shards}[task]
    return fn(rank, size, seed=seed, skew=skew)


def mlp(seed):
    """The demo's 64-64-10 MLP (both tasks have 64 features and 10 classes), seeded."""
    import torch

    from accord.demo.train import mlp as _mlp

    torch.manual_seed(seed)
    return _mlp(64)


def accuracy(model, xy):
    import torch

    with torch.no_grad():
        out = model(xy[0])
        return float((out.argmax(1) == xy[1]).float().mean()), bool(torch.isfinite(out).all())


class MeanEvaluator:
    """Test accuracy of the mean of the workers' parameters, identical on every rank. Its
    allreduce is measurement: it runs on the plain communicator and outside the timed loop."""

    def __init__(self, model, comm, test):
        import copy

        self.model, self.comm, self.test = model, comm, test
        self.eval_model = copy.deepcopy(model)

    def __call__(self, params=None):
        import torch

        import accord

        if params is None:
            params = accord.grouped_allreduce([p.detach() for p in self.model.parameters()],
                                              op=accord.Average, comm=self.comm)
        with torch.no_grad():
            for p, v in zip(self.eval_model.parameters(), params):
                p.copy_(v)
        return accuracy(self.eval_model, self.test)


def launch(script, worker_args, np_, out):
    """Run ``script --worker worker_args`` on ``np_`` ranks (the venv's mpirun when there is
    one); returns the wall time in seconds."""
    os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
    mpirun = os.path.join(os.path.dirname(sys.executable), "mpirun")
    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = [mpirun if os.path.exists(mpirun) else "mpirun", "--oversubscribe", "--bind-to",
           "none", "-x", "OMP_NUM_THREADS", "-x", "PYTHONPATH", "-np", str(np_),
           sys.executable, os.path.abspath(script), "--worker", *worker_args]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - t0


def mean_std(xs):
    import statistics

    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def savefig(fig, path, dpi=70):
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
