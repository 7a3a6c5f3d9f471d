"""Profiler ranges and the ACCORD_TIMELINE file on N ranks (the launcher sets ACCORD_TIMELINE)."""
import json
import os

import torch

import accord
from accord import profiling
from _worker import check, worker_main


def main():
    accord.init()
    check(profiling.active(), "ACCORD_TIMELINE starts the timeline")
    # large enough for the pairwise (VHDD) route, whose levels each show up: smaller buffers take
    # the one-allgather route (exchange and combine only)
    from accord.adasum import GATHER_MAX_BYTES
    t = torch.randn(GATHER_MAX_BYTES // 4)
    ts = [torch.randn(100), torch.randn(30)]
    with torch.profiler.profile() as prof:
        accord.allreduce(t, op=accord.Adasum, name="grads")
        accord.grouped_allreduce_(ts, op=accord.Sum)
        accord.synchronize(accord.allreduce_async(t, op=accord.Adasum))
    names = {e.name for e in prof.events()}
    for want in ("accord.allreduce[grads]", "accord.adasum.exchange", "accord.adasum.dots",
                 "accord.adasum.combine", "accord.adasum.dot_allreduce", "accord.fusion.pack",
                 "accord.grouped_allreduce_", "accord.wait"):
        check(want in names, f"{want} not among the profiler's ranges: {sorted(names)}")
    accord.shutdown()  # flushes the timeline
    path = profiling.timeline_path()
    check(path == os.environ["ACCORD_TIMELINE"].replace(".json", f".{accord_rank}.json"),
          f"timeline path {path}")
    with open(path) as f:
        events = json.load(f)
    got = {e["name"] for e in events if e.get("ph") == "X"}
    # the async operation ran on the worker thread: in the timeline, not in torch.profiler
    check({"accord.adasum.exchange", "accord.allreduce[grads]", "accord.allreduce_async"} <= got,
          f"timeline events: {sorted(got)}")
    tids = {e["tid"] for e in events if e.get("name") == "accord.allreduce_async"}
    check(tids and tids.isdisjoint({e["tid"] for e in events
                                     if e.get("name") == "accord.allreduce[grads]"}),
          "the async op is recorded on its own thread")
    check(all(e["pid"] == accord_rank for e in events), "pid is the rank")


if __name__ == "__main__":
    accord_rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("RANK", "0")))
    worker_main(main)
