"""Shared helpers for accord's benchmarks: metadata, timing, an nccl-tests style table, JSON.

The table prints ``#`` comment lines first (metadata, then the column header), then one aligned,
uncommented line per measurement, like nccl-tests; the same rows go to a JSON file so results can
be compared across runs and machines:

    meta = collect_metadata(device="cpu", repetitions=7)
    table = Table([Column("size", "(B)", 12, "d"), Column("time", "(us)", 10, ".1f")])
    print_metadata(meta)
    table.print_header()
    table.print_row(size=1024, time=12.5)
    write_json("results/x.json", {"metadata": meta, "rows": table.rows})
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

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
        "cpu": _cpu_name(),
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


def load_average() -> str:
    """The 1/5/15-minute load averages (other work on the machine makes timings noisy)."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except (OSError, AttributeError):
        return "n/a"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_metadata(meta: dict, file=None) -> None:
    """One ``# key: value`` line per entry (dicts inline as ``k=v`` pairs)."""
    width = max((len(k) for k in meta), default=0)
    for key, value in meta.items():
        if isinstance(value, dict):
            value = " ".join(f"{k}={v}" for k, v in value.items())
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        text = str(value).splitlines() or [""]
        print(f"# {key:<{width}} : {text[0]}", file=file)
        for cont in text[1:]:
            print(f"# {'':<{width}}   {cont}", file=file)
    print("#", file=file, flush=True)


# ---------------------------------------------------------------------------------------------
# Table


@dataclass
class Column:
    """One table column: key (row dict key and header name), unit line, width and a format spec
    (``"d"``, ``".1f"``, ``"s"``...). None and NaN print as ``-``."""
    key: str
    unit: str = ""
    width: int = 10
    fmt: str = "s"
    title: str | None = None

    def header(self) -> str:
        return f"{(self.title or self.key):>{self.width}}"

    def format(self, value) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return f"{'-':>{self.width}}"
        try:
            return f"{value:>{self.width}{self.fmt}}"
        except (ValueError, TypeError):
            return f"{str(value):>{self.width}}"


class Table:
    """nccl-tests style table: ``#`` header lines (names, units), then aligned data lines.

    Rows are printed as they are added (long benchmarks show progress) and kept in ``rows`` (a
    list of dicts, with any extra keys the caller passed) for the JSON dump.
    """

    def __init__(self, columns: Sequence[Column], sep: str = " ", file=None):
        self.columns = list(columns)
        self.sep = sep
        self.file = file
        self.rows: list[dict] = []

    def _line(self, cells: Sequence[str]) -> str:
        return self.sep.join(cells)

    def header_lines(self) -> list[str]:
        names = self._line(c.header() for c in self.columns)
        units = self._line(f"{c.unit:>{c.width}}" for c in self.columns)
        # the leading "#" takes the place of the first column's first character
        return ["#" + names[1:], "#" + units[1:]]

    def print_header(self) -> None:
        for line in self.header_lines():
            print(line, file=self.file)
        sys.stdout.flush()

    def format_row(self, row: dict) -> str:
        return self._line(c.format(row.get(c.key)) for c in self.columns)

    def print_row(self, row: dict | None = None, **values) -> dict:
        row = dict(row or {}, **values)
        self.rows.append(row)
        print(self.format_row(row), file=self.file, flush=True)
        return row


def note(text: str = "", file=None) -> None:
    """A ``#`` comment line (section titles, verdicts) between table rows."""
    print(f"# {text}".rstrip(), file=file, flush=True)


# ---------------------------------------------------------------------------------------------
# Timing


class Timer:
    """Times a callable on the host clock (CPU) or with CUDA events (GPU).

    For CUDA the device is synchronised before each timed region and the events bracket the call
    on the current stream, so queued work from earlier calls is never charged to this one.
    """

    def __init__(self, device: str = "cpu"):
        self.device = device
        if device == "cuda":
            import torch
            self._torch = torch

    def once(self, fn: Callable[[], object]) -> float:
        """Seconds for one call of fn."""
        if self.device == "cuda":
            torch = self._torch
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            stop.record()
            torch.cuda.synchronize()
            return start.elapsed_time(stop) * 1e-3
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def interleaved(self, fns: dict[str, Callable[[], object]], repetitions: int,
                    warmup: int = 1) -> dict[str, list[float]]:
        """Times every fn ``repetitions`` times, round-robin (fn1, fn2, ..., fn1, fn2, ...), so
        slow drifts (frequency, other tenants) hit all of them alike; returns seconds per call."""
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        if self.device == "cuda":
            self._torch.cuda.synchronize()
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(repetitions):
            for key, fn in fns.items():
                times[key].append(self.once(fn))
        return times


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


# ---------------------------------------------------------------------------------------------
# Output


def write_json(path: str | os.PathLike, payload: dict) -> Path:
    """Write payload as indented JSON, creating parent folders; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w") as f:
        json.dump(payload, f, indent=2, default=_json_default)
        f.write("\n")
    return p


def _json_default(obj):
    try:
        import numpy as np
        if isinstance(obj, np.generic):
            return obj.item()
    except ImportError:  # pragma: no cover
        pass
    return str(obj)


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:g} {unit}" if unit == "B" else f"{n:.4g} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover
