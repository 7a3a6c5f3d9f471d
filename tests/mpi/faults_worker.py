"""Faults on one rank must end the job with a clear error, never a hang (tests/test_faults.py).

Deliberately NOT run through ``_worker.worker_main``: that wrapper aborts the job itself on an
exception, and what is tested here is that ``accord.init()`` alone makes every fault end the job.

Usage: faults_worker.py MODE
  raise-adasum     the last rank raises (uncaught) in the middle of an Adasum loop
  raise-optimizer  the last rank raises in the middle of a DistributedOptimizer loop
  raise-thread     the last rank raises in a helper thread while the main thread communicates
  early-exit       the last rank leaves the loop early and exits normally
  stall            the last rank sleeps in the middle of the loop (run with a short ACCORD_TIMEOUT)
  threads          two threads per rank run collectives on the same communicator
  threads-split    two threads per rank, each on its own communicator: must be correct
  ok               the same loop everywhere, no fault: exits 0
  long             a slow loop of small allreduces for up to 5 minutes (the test cuts a link)
"""
import os
import sys
import threading
import time

import numpy as np
from _worker import setup

import accord

STEPS = 40


def fault_now():
    """Mark the moment of the fault (the test measures how long the job takes to end after it)."""
    print(f"FAULT_AT={time.time():.3f}", flush=True)


def log(msg):
    print(f"[rank {accord.rank()}] {msg}", flush=True)


def finish():
    accord.shutdown()
    tdist = sys.modules.get("torch.distributed")
    if tdist is not None and tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()
        sys.stdout.flush()
        os._exit(0)


def adasum_loop(mode):
    n, last = accord.size(), accord.size() - 1
    x = np.ones(1024, np.float32)  # 4 KiB
    for step in range(STEPS):
        if accord.rank() == last and step == 5:
            fault_now()
            if mode == "raise-adasum":
                raise RuntimeError(f"deliberate failure on rank {last} at step {step}")
            if mode == "early-exit":
                log(f"leaving the loop early at step {step}")
                return  # exits normally, with accord still initialised
            if mode == "stall":
                log("stalling")
                time.sleep(600)
        x[:] = 1.0
        accord.allreduce_(x, op=accord.Adasum)
        y = accord.allreduce(np.full(8, float(accord.rank())), op=accord.Sum)
        assert y[0] == n * (n - 1) / 2
    log("loop done")
    finish()


def raise_thread():
    last = accord.size() - 1

    def helper():
        time.sleep(0.5)
        fault_now()
        raise ValueError(f"deliberate failure in a helper thread of rank {last}")

    if accord.rank() == last:
        threading.Thread(target=helper, name="helper").start()
    x = np.ones(1024, np.float32)
    for _ in range(100000):
        accord.allreduce_(x, op=accord.Sum)
        time.sleep(0.001)


def raise_optimizer():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
    opt = accord.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.01),
                                      named_parameters=model.named_parameters())
    last = accord.size() - 1
    g = torch.Generator().manual_seed(accord.rank())
    for step in range(STEPS):
        if accord.rank() == last and step == 3:
            fault_now()
            raise RuntimeError(f"deliberate failure on rank {last} in the training loop")
        opt.zero_grad()
        model(torch.randn(8, 16, generator=g)).pow(2).mean().backward()
        opt.step()
    opt.close()
    finish()


def threads(split):
    """Two threads per rank: a big Sum and small Adasum reductions, checked exactly."""
    n = accord.size()
    comm = accord.communicator()
    comms = [comm.split(0), comm.split(1 + 0 * accord.rank())] if split else [comm, comm]
    errors = []

    def work(k):
        c = comms[k]
        try:
            for i in range(20):
                if k == 0:
                    big = np.full(1 << 20, float(accord.rank() + i), np.float64)
                    accord.allreduce_(big, op=accord.Sum, comm=c)
                    want = n * i + n * (n - 1) / 2
                    if not np.all(big == want):
                        errors.append(f"thread {k} step {i}: Sum wrong")
                else:
                    x = np.full(1024, 2.0, np.float32)
                    accord.allreduce_(x, op=accord.Adasum, comm=c)
                    if not np.all(x == 2.0):
                        errors.append(f"thread {k} step {i}: Adasum wrong")
        except BaseException as e:
            errors.append(f"thread {k}: {type(e).__name__}")
            raise

    if not split:
        fault_now()  # the fault: both threads enter one communicator from here on
    ts = [threading.Thread(target=work, args=(k,), name=f"worker-{k}") for k in (0, 1)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise RuntimeError("; ".join(errors))
    log("threads OK")
    finish()


def main():
    mode = sys.argv[1]
    setup()
    accord.init()
    if mode in ("raise-adasum", "early-exit", "stall", "ok"):
        adasum_loop(mode)
    elif mode == "raise-optimizer":
        raise_optimizer()
    elif mode == "raise-thread":
        raise_thread()
    elif mode == "long":
        x = np.ones(256, np.float32)
        for step in range(6000):
            accord.allreduce_(x, op=accord.Sum)
            x[:] = 1.0
            if step % 10 == 0:
                log(f"step {step}")
            time.sleep(0.05)
        finish()
    elif mode in ("threads", "threads-split"):
        threads(mode == "threads-split")
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
