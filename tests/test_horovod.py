"""Horovod compatibility: launchers, the horovod.torch surface, compression, profiling, README.

Distributed parts run worker scripts in tests/mpi under mpirun (run_mpi) and torchrun.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch import (_kill_sessions, _worker_env, free_port, requires_mpi, requires_torch_dist,
                    run_mpi)

ROOT = Path(__file__).resolve().parent.parent
WORKERS = Path(__file__).resolve().parent / "mpi"
torch = pytest.importorskip("torch")
import accord  # noqa: E402

pytestmark = pytest.mark.mpi


def _torchrun(script, nprocs, args=(), timeout=240, env=None):
    """``torchrun --standalone --nproc_per_node=nprocs script args``; fail with its output."""
    exe = Path(sys.executable).parent / "torchrun"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]
    cmd += ["--standalone", f"--nproc_per_node={nprocs}", str(script), *args]
    full = _worker_env("gloo", env)
    full["PYTHONPATH"] = os.pathsep.join([str(WORKERS), full.get("PYTHONPATH", "")])
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full,
                          start_new_session=True, text=True) as proc:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_sessions([proc], leaders_are_workers=False)
            pytest.fail(f"torchrun x{nprocs} {Path(script).name} timed out")
    if proc.returncode != 0:
        pytest.fail(f"torchrun x{nprocs} {Path(script).name} exited {proc.returncode}:\n"
                    f"{out[-6000:]}")
    return out


# ---------------------------------------------------------------------------------------------
# launchers


@requires_torch_dist
@pytest.mark.parametrize("nprocs", [2])
def test_torchrun_init_without_process_group(nprocs):
    _torchrun(WORKERS / "horovod_api_worker.py", nprocs, ["--expect", "gloo"])


@requires_mpi
@pytest.mark.parametrize("nprocs", [2, 3])
def test_mpirun_init(nprocs):
    run_mpi("horovod_api_worker.py", nprocs, args=("--expect", "mpi"), timeout=300)


def _python(code, env, timeout=90):
    full = _worker_env("mpi", env)
    for var in ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_SIZE", "PMI_RANK",
                "PMIX_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        if var not in env:
            full.pop(var, None)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full, timeout=timeout)
    return proc, time.monotonic() - start


@requires_torch_dist
def test_world_size_without_peers_fails_fast():
    """WORLD_SIZE=2 with a rendezvous nobody else joins: a clear error within the timeout."""
    env = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "ACCORD_INIT_TIMEOUT": "5"}
    proc, wall = _python("import accord; accord.init()", env)
    assert proc.returncode != 0
    assert "WORLD_SIZE=2" in proc.stderr and "MASTER_PORT=" in proc.stderr, proc.stderr[-3000:]
    assert "torchrun" in proc.stderr
    assert wall < 80


def test_world_size_without_rendezvous_refuses_single_process():
    """WORLD_SIZE=2 alone (no MASTER_ADDR/PORT): MPI would give one process; init refuses."""
    pytest.importorskip("mpi4py")
    proc, _ = _python("import accord; accord.init()", {"WORLD_SIZE": "2"})
    assert proc.returncode != 0
    assert "WORLD_SIZE=2" in proc.stderr and "independent" in proc.stderr, proc.stderr[-3000:]


def test_mpi_launcher_size_mismatch_is_an_error():
    """An MPI launcher announcing 2 processes while mpi4py sees 1 (another MPI): an error."""
    pytest.importorskip("mpi4py")
    proc, _ = _python("import accord; accord.init(backend='mpi')",
                      {"PMI_SIZE": "2", "PMI_RANK": "0"})
    assert proc.returncode != 0
    assert "PMI_SIZE=2" in proc.stderr and "mpi4py" in proc.stderr, proc.stderr[-3000:]


def test_init_backend_argument_is_checked():
    with pytest.raises(ValueError, match="backend"):
        accord.init(backend="")


# ---------------------------------------------------------------------------------------------
# the Horovod script and the README example


@requires_mpi
@pytest.mark.parametrize("flags", [(), ("--fp16-allreduce", "--use-adasum")])
def test_horovod_script_runs_with_only_the_import_changed(flags):
    script = WORKERS / "hvd_script.py"
    source = script.read_text()
    assert "import accord as hvd" in source and "horovod" not in source.replace(
        "# was: import horovod.torch as hvd", "").replace("Horovod", "")
    res = run_mpi(script, 2, args=flags, timeout=300)
    assert "HOROVOD SCRIPT OK size=2" in res.output, res.output[-3000:]


@requires_mpi
def test_readme_example_runs():
    res = run_mpi(ROOT / "examples" / "train.py", 2, timeout=300)
    m = re.search(r"test accuracy ([0-9.]+) on 2 ranks", res.output)
    assert m, res.output[-3000:]
    assert float(m.group(1)) > 0.8


def test_readme_shows_the_example_verbatim():
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "train.py").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert example in blocks, "README's example block differs from examples/train.py"


def test_horovod_doc_covers_the_names():
    """Every horovod.torch name the mapping lists as supported exists in accord."""
    doc = (ROOT / "docs" / "horovod.md").read_text()
    rows = re.findall(r"^\| `hvd\.([A-Za-z_.0-9]+)[^|]*\| (supported|accepted)", doc, flags=re.M)
    assert len(rows) >= 30
    for name, _ in rows:
        obj = accord
        for part in name.split("."):
            assert hasattr(obj, part), f"docs/horovod.md lists hvd.{name} as supported"
            obj = getattr(obj, part)


# ---------------------------------------------------------------------------------------------
# compression, ops, single process


def test_compression_interface():
    t = torch.randn(10, dtype=torch.float64)
    for comp, dt in ((accord.Compression.fp16, torch.float16),
                     (accord.Compression.bf16, torch.bfloat16)):
        small, ctx = comp.compress(t)
        assert small.dtype == dt
        back = comp.decompress(small, ctx)
        assert back.dtype == torch.float64
        assert torch.allclose(back, t, rtol=1e-2, atol=1e-2)
    i = torch.arange(4)
    assert accord.Compression.fp16.compress(i)[0] is i  # non-float passes through
    same, ctx = accord.Compression.none.compress(t)
    assert same is t and accord.Compression.none.decompress(same, ctx) is t
    import numpy as np
    with pytest.raises(TypeError, match="fp16"):
        accord.Compression.bf16.compress(np.ones(3, np.float32))


def test_optimizer_arguments():
    accord.init()
    try:
        model = torch.nn.Linear(2, 2)
        with pytest.raises(ValueError, match="Consensus"):
            accord.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                        compression=accord.Compression.fp16, op=accord.Consensus)
        with pytest.raises(ValueError, match="op must be"):
            accord.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                        op=accord.Max)
        with pytest.raises(TypeError, match="process_set"):
            accord.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                        process_set="evens")
        emb = torch.nn.Embedding(10, 3, sparse=True)
        opt = accord.DistributedOptimizer(torch.optim.SGD(emb.parameters(), lr=0.1),
                                          sparse_as_dense=True)
        emb(torch.tensor([1, 2])).sum().backward()
        opt.step()
        opt.close()
    finally:
        accord.shutdown()


def test_name_in_errors_and_scale_factor_checks():
    accord.init()
    try:
        with pytest.raises(ValueError, match=r"allreduce\(name='w'\).*op must be"):
            accord.allreduce(torch.ones(2), name="w", op="mean")
        with pytest.raises(ValueError, match="prescale_factor"):
            accord.allreduce(torch.ones(2), prescale_factor=float("nan"))
        with pytest.raises(ValueError, match="not both"):
            accord.allreduce(torch.ones(2), average=True, op=accord.Sum)
        with pytest.raises(TypeError, match="synchronize"):
            accord.synchronize(3)
    finally:
        accord.shutdown()


# ---------------------------------------------------------------------------------------------
# profiling


def test_profiler_ranges_single_process():
    accord.init()
    try:
        with torch.profiler.profile() as prof:
            accord.allreduce(torch.ones(3), name="loss")
            accord.grouped_allreduce_([torch.ones(3), torch.ones(2)])
        names = {e.name for e in prof.events()}
        assert {"accord.allreduce[loss]", "accord.grouped_allreduce_",
                "accord.fusion.pack"} <= names, names
        from accord import profiling
        assert not profiling.active()
        assert profiling.span("x") is profiling.span("y")  # the shared no-op when off
    finally:
        accord.shutdown()


def test_timeline_api(tmp_path):
    from accord import profiling
    path = tmp_path / "tl_{rank}.json"
    accord.start_timeline(str(path))
    accord.init()
    try:
        accord.allreduce(torch.ones(3), name="m")
        accord.stop_timeline()
    finally:
        accord.shutdown()
    events = json.loads((tmp_path / "tl_0.json").read_text())
    assert any(e["name"] == "accord.allreduce[m]" and e["ph"] == "X" and e["dur"] >= 0
               for e in events)
    merged = tmp_path / "all.json"
    profiling.merge_timelines([tmp_path / "tl_0.json"], str(merged))
    assert json.loads(merged.read_text()) == events


@requires_mpi
def test_profiler_and_timeline_under_mpirun(tmp_path):
    base = tmp_path / "timeline.json"
    run_mpi("profiling_worker.py", 2, env={"ACCORD_TIMELINE": str(base)}, timeout=200,
            mpirun_args=("-x", "ACCORD_TIMELINE"))
    for r in range(2):
        events = json.loads((tmp_path / f"timeline.{r}.json").read_text())
        names = {e["name"] for e in events}
        assert {"accord.adasum.exchange", "accord.adasum.combine", "accord.wait"} <= names
