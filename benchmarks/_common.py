"""Shared helpers for the scripts in benchmarks/: run metadata and timing.

The table format (``#`` metadata lines, ``#`` column header, aligned data lines, ``#`` notes, the
same rows as JSON) is accord.bench.table's, shared with ``python -m accord.bench allreduce``;
it is re-exported here so a script needs one import:

    meta = collect_metadata(device="cpu", repetitions=7)
    table = Table([Column("size", "(B)", 12, "d"), Column("time", "(us)", 10, ".1f")])
    print_metadata(meta)
    table.print_header()
    table.print_row(size=1024, time=12.5)
    write_json("results/x.json", {"metadata": meta, "rows": table.rows})
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import statistics
import sys
import time
from typing import Callable, Sequence

from accord.bench.table import (Column, Table, cpu_name, human_bytes, load_average, note,  # noqa: F401
                                print_metadata, write_json)

# ---------------------------------------------------------------------------------------------
# Metadata


def collect_metadata(**extra) -> dict:
    """Date, host, interpreter and library versions, accord.build_info(), thread settings.

    ``extra`` entries (device, repetitions, definitions of derived columns...) are appended.
    """
    meta = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "argv": " ".join(sys.argv),
        "load_average": load_average(),
    }
    try:
        import numpy
        meta["numpy"] = numpy.__version__
    except ImportError:  # pragma: no cover
        meta["numpy"] = None
    try:
        import torch
        meta["torch"] = torch.__version__
        meta["torch_threads"] = torch.get_num_threads()
    except ImportError:
        meta["torch"] = None
    try:
        import accord
        meta["accord_build_info"] = accord.build_info()
    except ImportError:  # pragma: no cover
        meta["accord_build_info"] = None
    meta["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "(unset)")
    meta.update(extra)
    return meta



# ---------------------------------------------------------------------------------------------
# Timing


class Timer:
    """Times a callable on the host clock (CPU) or with CUDA events (GPU).

    On the CPU a sample is the wall time of one call. On CUDA a sample is the *device time* of
    one call: events bracket ``batch`` back-to-back calls on the current stream and the span is
    divided by ``batch``, so the host's launch cost overlaps the kernels of the previous call
    and only the GPU's own time is counted (as long as the GPU is the slower side). Each CUDA
    sample also records the *end-to-end* time of one call (device synchronised before, host
    clock until the device is idle again) in :attr:`end_to_end`, keyed like the samples.
    """

    def __init__(self, device: str = "cpu", batch: int = 10):
        self.device = device
        self.batch = batch
        self.end_to_end: dict[str, list[float]] = {}
        if device == "cuda":
            import torch
            self._torch = torch

    def once(self, fn: Callable[[], object], key: str | None = None) -> float:
        """Seconds for one call of fn (device time per call on CUDA, see the class)."""
        if self.device == "cuda":
            torch = self._torch
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            self.end_to_end.setdefault(key, []).append(time.perf_counter() - t0)
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(self.batch):
                fn()
            stop.record()
            stop.synchronize()
            return start.elapsed_time(stop) * 1e-3 / self.batch
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def interleaved(self, fns: dict[str, Callable[[], object]], repetitions: int,
                    warmup: int = 1) -> dict[str, list[float]]:
        """Times every fn ``repetitions`` times, round-robin (fn1, fn2, ..., fn1, fn2, ...), so
        slow drifts (frequency, other tenants) hit all of them alike; returns seconds per call.
        On CUDA :attr:`end_to_end` then holds this call's end-to-end samples."""
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        if self.device == "cuda":
            self._torch.cuda.synchronize()
        self.end_to_end = {}
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(repetitions):
            for key, fn in fns.items():
                times[key].append(self.once(fn, key))
        return times


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)
