"""Named ranges for profilers: torch.profiler and accord's own Chrome-trace timeline.

Every collective and aggregation step runs inside ``span(name)``:

* under ``torch.profiler.profile()`` (or ``torch.autograd.profiler.profile``) it is a
  ``record_function`` range, so the names (``accord.allreduce``, ``accord.adasum.exchange``,
  ...) show up in the profiler's table and its exported trace;
* with a timeline active (``ACCORD_TIMELINE=path.json`` in the environment, or
  :func:`start_timeline`), it is also recorded as a Chrome-trace complete event.

torch.profiler records the threads it profiles: the asynchronous collectives, which run on
accord's worker thread, show there as the caller's ``accord.wait``; the timeline records every
thread.

When neither is on, ``span`` returns a shared no-op context after two attribute reads, and the
inner loops (Adasum's levels) check :func:`active` once per call and only then swap in traced
versions of their steps.

Timeline files: one per rank, written by that rank (no gathering, so a rank that dies still
leaves its file). ``path.json`` becomes ``path.<rank>.json`` (a path containing ``{rank}`` is
formatted instead). Each event has ``pid`` = rank and ``tid`` = the thread, so the files can be
loaded one by one in ``chrome://tracing`` / Perfetto, or merged into one view with
:func:`merge_timelines` (``python -m accord.profiling merge out.json in.*.json``). The file is
a JSON array, complete after every flush: every few thousand events, at ``accord.shutdown()``,
:func:`flush_timeline`, :func:`stop_timeline` and at exit (a killed process loses only the
events since the last flush).

Names: ``accord.<collective>`` (with ``name=`` appended as ``accord.allreduce[loss]``), the
fusion steps ``accord.fusion.pack`` / ``.unpack``, Adasum's ``accord.adasum.exchange``
(reduce-scatter sendrecvs), ``accord.adasum.allgather``, ``accord.adasum.dots`` /
``.combine`` (kernels), ``accord.adasum.dot_allreduce``, ``accord.compress`` /
``accord.decompress``, the optimizer's ``accord.optimizer.synchronize`` (the wait for the
background reductions), ``accord.optimizer.allreduce`` and ``accord.optimizer.adasum_step``, the
DDP hooks' ``accord.hooks.adasum`` / ``.consensus``, and ``accord.wait`` (synchronize(handle)).
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
import threading
import time

__all__ = ["span", "active", "traced", "start_timeline", "stop_timeline", "flush_timeline",
           "timeline_path",
           "merge_timelines", "set_rank"]

_NULL = contextlib.nullcontext()
_timeline: "_Timeline | None" = None
_rank: int | None = None
_FLUSH_EVERY = 4096


class _Timeline:
    def __init__(self, path: str):
        self.template = path
        self.events: list = []
        self.file = None
        self.path: str | None = None
        self.lock = threading.Lock()
        # Wall-clock microseconds (perf_counter's resolution, time.time's origin): ranks on one
        # host share the time axis when their files are merged.
        self.t0 = time.perf_counter() - time.time()
        self.pid = os.getpid()

    def _open(self):
        rank = _rank if _rank is not None else _env_rank()
        if "{rank}" in self.template:
            self.path = self.template.format(rank=rank)
        else:
            root, ext = os.path.splitext(self.template)
            self.path = f"{root}.{rank}{ext or '.json'}"
        self.file = open(self.path, "w")
        self.rank = rank
        meta = json.dumps({"name": "process_name", "ph": "M", "pid": rank,
                           "args": {"name": f"rank {rank}"}})
        self.file.write("[\n" + meta)
        self.end = self.file.tell()

    def add(self, name: str, start: float, end: float):
        self.events.append((name, start, end, threading.get_ident()))
        if len(self.events) >= _FLUSH_EVERY and _rank is not None:
            self.flush()

    def flush(self):
        """Append the buffered events; the file is a complete JSON array after every flush
        (the closing bracket is rewritten past the new events)."""
        with self.lock:
            events, self.events = self.events, []
            if self.file is None:
                self._open()
            out = [json.dumps({
                "name": name, "cat": name.split("[")[0].rsplit(".", 1)[0], "ph": "X",
                "ts": round((start - self.t0) * 1e6, 3), "dur": round((end - start) * 1e6, 3),
                "pid": self.rank, "tid": tid}) for name, start, end, tid in events]
            self.file.seek(self.end)
            if out:
                self.file.write(",\n" + ",\n".join(out))
            self.end = self.file.tell()
            self.file.write("\n]\n")
            self.file.truncate()
            self.file.flush()

    def close(self):
        self.flush()
        with self.lock:
            self.file.close()


def _env_rank() -> int:
    for var in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "RANK"):
        if var in os.environ:
            try:
                return int(os.environ[var])
            except ValueError:
                pass
    return 0


class _Span:
    __slots__ = ("name", "rf", "start")

    def __init__(self, name: str, profiler_on: bool):
        self.name = name
        self.rf = None
        if profiler_on:
            self.rf = sys.modules["torch"].autograd.profiler.record_function(name)

    def __enter__(self):
        if self.rf is not None:
            self.rf.__enter__()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        end = time.perf_counter()
        tl = _timeline
        if tl is not None:
            tl.add(self.name, self.start, end)
        if self.rf is not None:
            self.rf.__exit__(*exc)
        return False


def _torch_profiling() -> bool:
    torch = sys.modules.get("torch")
    # A module-level flag torch sets while a profiler is recording: no call into C++.
    return torch is not None and torch.autograd.profiler._is_profiler_enabled


def active() -> bool:
    """Whether a span would record anything (a torch profiler or a timeline is on)."""
    return _timeline is not None or _torch_profiling()


def span(name: str):
    """Context manager: a named range (module doc); a shared no-op when nothing records."""
    prof = _torch_profiling()
    if not prof and _timeline is None:
        return _NULL
    return _Span(name, prof)


def traced(fn, name: str):
    """``fn`` wrapped in ``span(name)`` (for swapping into an inner loop when :func:`active`)."""
    def wrapper(*args, **kwargs):
        with span(name):
            return fn(*args, **kwargs)
    return wrapper


def set_rank(rank: int | None) -> None:
    """The rank the timeline file is named after (``accord.init`` sets it)."""
    global _rank
    _rank = rank


def start_timeline(file_path: str, mark_cycles: bool = False) -> None:
    """Start recording a Chrome-trace timeline to ``file_path`` (module doc for the per-rank
    file name). ``mark_cycles`` is accepted for Horovod compatibility and has no effect."""
    global _timeline
    if not isinstance(file_path, (str, os.PathLike)) or not str(file_path):
        raise ValueError(f"file_path must be a file path, got {file_path!r}")
    stop_timeline()
    _timeline = _Timeline(os.fspath(file_path))


def stop_timeline() -> None:
    """Stop the timeline and finish its file (no-op when none is running)."""
    global _timeline
    tl, _timeline = _timeline, None
    if tl is not None:
        tl.close()


def flush_timeline() -> None:
    """Write the buffered events of the running timeline to its file."""
    tl = _timeline
    if tl is not None:
        tl.flush()


def timeline_path() -> str | None:
    """The file the running timeline writes (None before its first flush or when off)."""
    tl = _timeline
    return None if tl is None else tl.path


def merge_timelines(paths, out: str) -> None:
    """Concatenate per-rank timeline files into one Chrome-trace file ``out``."""
    events = []
    for p in paths:
        with open(p) as f:
            text = f.read().rstrip()
        events.extend(json.loads(text))
    with open(out, "w") as f:
        json.dump(events, f)


if os.environ.get("ACCORD_TIMELINE"):
    start_timeline(os.environ["ACCORD_TIMELINE"])
atexit.register(stop_timeline)


def _main(argv) -> int:
    if len(argv) >= 3 and argv[0] == "merge":
        merge_timelines(argv[2:], argv[1])
        return 0
    print("usage: python -m accord.profiling merge OUT.json IN.json [IN.json ...]",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
