"""Helpers for distributed worker scripts in tests/mpi (launched by tests/launch.py).

A worker script looks like::

    from _worker import check, setup, worker_main

    def main():
        comm = setup()          # MPI or torch.distributed, whichever launched us
        ...
        check(x == y, "x and y differ")

    if __name__ == "__main__":
        worker_main(main)

``worker_main`` turns any exception on any rank into a traceback tagged with the rank plus
an abort of the whole job, so one failing rank never leaves the others hanging in a
collective. Scripts should be size-agnostic (work for any number of ranks).
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import traceback

import numpy as np


def backend() -> str:
    """The backend the launcher asked for: ``mpi`` (default), ``gloo`` or ``nccl``."""
    return os.environ.get("ACCORD_TEST_BACKEND", "mpi")


def setup(kind: str | None = None):
    """Initialise the transport for ``kind`` (default: :func:`backend`); return a Communicator.

    ``mpi`` wraps ``MPI.COMM_WORLD``; ``gloo``/``nccl`` run
    ``torch.distributed.init_process_group`` from the launcher's env:// variables.
    """
    kind = kind or backend()
    if kind == "mpi":
        from mpi4py import MPI

        from accord.comm import MPICommunicator

        return MPICommunicator(MPI.COMM_WORLD)
    import torch
    import torch.distributed as dist

    from accord.comm import TorchCommunicator

    if not dist.is_initialized():
        if kind == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(kind)
    return TorchCommunicator()


def rank_label() -> str:
    """This process's world rank as a string, from whatever is initialised ("?" if none)."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        return str(mpi.COMM_WORLD.Get_rank())
    tdist = sys.modules.get("torch.distributed")
    if tdist is not None and tdist.is_available() and tdist.is_initialized():
        return str(tdist.get_rank())
    for var in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "RANK"):
        if var in os.environ:
            return os.environ[var]
    return "?"


def abort(code: int = 1) -> None:
    """Kill the whole job now (MPI_Abort under MPI; otherwise exit, and the launcher kills
    the other ranks)."""
    sys.stdout.flush()
    sys.stderr.flush()
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        mpi.COMM_WORLD.Abort(code)
    os._exit(code)


def worker_main(fn, *args) -> None:
    """Run ``fn(*args)``; on any failure print the rank-tagged traceback and abort the job.

    On success, tears down torch.distributed if it is initialised (a barrier, then the process
    group) and exits at once, skipping the interpreter teardown that gloo's threads can abort.
    SIGUSR1 dumps every thread's stack (the launchers send it before killing a job that
    timed out, to show where each rank was stuck).
    """
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        fn(*args)
    except SystemExit as e:
        if e.code not in (None, 0):
            print(f"[rank {rank_label()}] SystemExit({e.code!r})", file=sys.stderr, flush=True)
            abort(e.code if isinstance(e.code, int) else 1)
        raise
    except BaseException:
        label = rank_label()
        text = traceback.format_exc()
        sys.stderr.write("".join(f"[rank {label}] {line}\n" for line in text.splitlines()))
        abort(1)
    tdist = sys.modules.get("torch.distributed")
    if tdist is not None and tdist.is_available() and tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()
        # Skip the interpreter teardown: gloo's threads have once aborted the process there
        # ("terminate called without an active exception") after every check had passed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


class CheckFailed(AssertionError):
    pass


def check(cond, msg: str = "check failed") -> None:
    """Raise :class:`CheckFailed` with ``msg`` unless ``cond`` is true."""
    if not cond:
        raise CheckFailed(msg)


def to_numpy(x) -> np.ndarray:
    """A numpy copy of an array or tensor (bfloat16 widened to float32), for comparisons."""
    if isinstance(x, np.ndarray):
        return x.copy()
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.numpy().copy()
    return np.asarray(x)


def check_equal(actual, expected, msg: str = "") -> None:
    """Check exact (bitwise for floats, NaNs equal) equality of arrays/tensors, with a diff."""
    a, e = to_numpy(actual), to_numpy(expected)
    if a.shape != e.shape or not np.array_equal(a, e, equal_nan=a.dtype.kind in "fc"):
        raise CheckFailed(f"{msg}: not equal\n actual   {_short(a)}\n expected {_short(e)}")


def check_close(actual, expected, rtol: float = 1e-6, atol: float = 0.0, msg: str = "") -> None:
    """Check ``|actual - expected| <= atol + rtol*|expected|`` elementwise, with a diff."""
    a = to_numpy(actual).astype(np.float64)
    e = to_numpy(expected).astype(np.float64)
    if a.shape != e.shape or not np.allclose(a, e, rtol=rtol, atol=atol, equal_nan=True):
        raise CheckFailed(
            f"{msg}: not close (rtol={rtol}, atol={atol})\n actual   {_short(a)}\n"
            f" expected {_short(e)}"
        )


def _short(a: np.ndarray) -> str:
    return f"shape={a.shape} dtype={a.dtype} {np.array2string(a.ravel()[:16], precision=6)}"


def check_identical_across_ranks(comm, arrays, what: str = "result") -> None:
    """Bitwise identity across ranks: gather every rank's bytes and compare with rank 0's."""
    flat = np.ascontiguousarray(np.concatenate([np.ravel(to_numpy(t)) for t in arrays]))
    raw = flat.view(np.uint8)
    every = np.empty(comm.size * raw.size, np.uint8)
    comm.allgather(raw, every)
    for r in range(comm.size):
        check(np.array_equal(every[r * raw.size:(r + 1) * raw.size], every[:raw.size]),
              f"{what}: rank {r} result differs bitwise from rank 0")
