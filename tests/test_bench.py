"""Smoke tests of ``python -m accord.bench allreduce`` (2 ranks, --quick) and its helpers."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from launch import requires_mpi, requires_torch_dist, run_mpi, run_torch

import accord
from accord.bench import allreduce as bench
from accord.bench.table import Column, Table, human_bytes, parse_bytes
from accord.testing import adasum_pair, adasum_tree

IMPLS = ("accord-sum", "accord-avg", "accord-adasum", "adasum-fp16")
PARTS = ("adasum-exchange", "adasum-compute")  # halves of Adasum alone: never checked


def _env():
    # the workers import accord from wherever this test session found it
    root = os.path.dirname(os.path.dirname(os.path.abspath(accord.__file__)))
    return {"PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


def _data_rows(output):
    """The table's data lines: (impl, #wrong) for every line with 9 columns."""
    rows = []
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 9 and parts[0].isdigit() and parts[1].isdigit():
            rows.append((parts[4], parts[8]))
    return rows


def _check_output(output, raw_name, json_path, largest, check_targets):
    assert "#wrong" in output and "busbw" in output, output[-3000:]
    assert "# ranks" in output and "# transport" in output and "# warmup/iters" in output
    rows = _data_rows(output)
    impls = {impl for impl, _ in rows}
    assert set(IMPLS) | {raw_name, *PARTS} <= impls, rows
    assert rows and all(wrong == ("-" if impl in PARTS else "0") for impl, wrong in rows), rows
    assert f"adasum/{raw_name} at {largest}: " in output and "adasum at 4 KiB: " in output
    assert "measured alone: adasum-exchange" in output
    assert "out of bounds values : 0 OK" in output
    # performance targets only when asked for; the quick sweep never reaches 64 MiB
    assert ("target adasum latency at 4 KiB" in output) == check_targets
    assert ("target adasum/" in output) == check_targets
    assert ("PASS" in output or "MISS" in output) == check_targets
    if check_targets:
        assert "time at 64 MiB <= 0.7x: NOT MEASURED" in output
    data = json.loads(json_path.read_text())
    assert ("targets" in data) == check_targets
    assert data["metadata"]["ranks"] == 2
    assert len(data["rows"]) == len(rows)
    assert all(r["wrong"] == (None if r["impl"] in PARTS else 0) for r in data["rows"])
    assert all(r["time_us"] > 0 and r["busbw"] == pytest.approx(r["algbw"]) for r in data["rows"])


@pytest.mark.mpi
@requires_mpi
def test_bench_allreduce_mpi_check_targets(tmp_path):
    # --check-targets on a sweep that stops at 256 KiB: the 64 MiB target is not measured,
    # which fails the run (status 1) after the full table
    out = tmp_path / "ar.json"
    result = run_mpi("bench_smoke_worker.py", 2,
                     args=("allreduce", "--quick", "--check-targets", "--json", str(out)),
                     env=_env(), timeout=180, check=False)
    assert result.returncode == 1 and not result.timed_out, result.output[-3000:]
    _check_output(result.output, "mpi-raw", out, "256 KiB", check_targets=True)


@pytest.mark.mpi
@requires_torch_dist
def test_bench_allreduce_gloo(tmp_path):
    out = tmp_path / "ar.json"
    result = run_torch("bench_smoke_worker.py", 2,
                       args=("allreduce", "--quick", "--backend", "gloo", "-e", "16K",
                             "--json", str(out)), env=_env(), timeout=180)
    _check_output(result.output, "gloo-raw", out, "16 KiB", check_targets=False)


class _FakeSetup:
    def __init__(self, n, dtype="float32"):
        self.N, self.dtype, self.raw_name = n, dtype, "mpi-raw"


def _rows(times):
    """Table rows from {(size, impl): time_us}."""
    return [{"size": s, "impl": i, "time_us": t} for (s, i), t in times.items()]


def test_call_overhead_benchmark(tmp_path):
    """benchmarks/call_overhead.py: one row per framework and op, plus the stub's own row."""
    pytest.importorskip("torch")
    out = tmp_path / "co.json"
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "benchmarks", "call_overhead.py")
    proc = subprocess.run([sys.executable, script, "--calls", "20", "--rounds", "2", "--json",
                           str(out)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1", **_env()))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert {(r["framework"], r["redop"]) for r in rows} == {
        ("numpy", "sum"), ("torch", "sum"), ("numpy", "adasum"), ("torch", "adasum"),
        ("stub", "sum")}
    assert all(r["time_us"] > 0 and r["size"] == 4096 and r["ranks"] == 2 for r in rows)


def test_targets_and_ratios():
    big, small = 64 << 20, 4 << 10
    times = {(big, "accord-adasum"): 600.0, (big, "mpi-raw"): 1000.0,
             (big, "adasum-exchange"): 400.0, (big, "adasum-compute"): 150.0,
             (small, "accord-adasum"): 80.0, (small, "mpi-raw"): 40.0}
    info = bench.ratios(_rows(times), _FakeSetup(2))
    assert info[0].startswith("adasum/mpi-raw at 64 MiB: 0.60x")
    assert info[1] == "  measured alone: adasum-exchange 0.40x, adasum-compute 0.15x; sum 0.55x"
    assert info[2] == "adasum at 4 KiB: 80.0 us (2 ranks)"
    assert not any("PASS" in line or "MISS" in line or "target" in line for line in info)

    lines, met = bench.targets(_rows(times), _FakeSetup(2))
    assert met and all(line.endswith("PASS") for line in lines), lines
    # each target alone can fail the check
    for key, slow in (((big, "accord-adasum"), 800.0), ((small, "accord-adasum"), 100.0)):
        lines, met = bench.targets(_rows({**times, key: slow}), _FakeSetup(2))
        assert not met and sum(line.endswith("MISS") for line in lines) == 1, lines
    # the latency target is for 2 ranks only: not applicable (not failed) on 4
    lines, met = bench.targets(_rows({**times, (small, "accord-adasum"): 500.0}), _FakeSetup(4))
    assert met and "n/a with 4 ranks" in lines[1], lines
    # not measured counts as not met
    lines, met = bench.targets(_rows({k: v for k, v in times.items() if k[0] == small}),
                               _FakeSetup(2))
    assert not met and "NOT MEASURED" in lines[0] and "-e 64M" in lines[0], lines


def test_parse_bytes_and_sizes():
    assert parse_bytes("4096") == 4096
    assert parse_bytes("4K") == 4096 and parse_bytes("64M") == 64 << 20
    assert parse_bytes("1g") == 1 << 30 and parse_bytes("16MiB") == 16 << 20
    with pytest.raises(ValueError):
        parse_bytes("12Q")
    assert bench.sizes(4096, 65536, 4) == [4096, 16384, 65536]
    assert human_bytes(4096) == "4 KiB" and human_bytes(64 << 20) == "64 MiB"
    assert human_bytes(1000) == "1000 B"


def test_parse_args_quick_and_defaults():
    a = bench.parse_args(["--quick"])
    assert (a.minbytes, a.maxbytes, a.iters) == (4096, 256 << 10, 5)
    a = bench.parse_args(["-b", "8K", "-e", "1M", "-f", "2", "-n", "3", "-w", "0"])
    assert (a.minbytes, a.maxbytes, a.stepfactor, a.iters, a.warmup) == (8192, 1 << 20, 2, 3, 0)
    with pytest.raises(SystemExit):
        bench.parse_args(["-b", "1M", "-e", "4K"])


def test_tree_oracle_meaning():
    rng = np.random.default_rng(0)
    offsets = np.array([0, 5, 12], dtype=np.int64)
    x = rng.standard_normal(12)
    assert bench.adasum_tree is adasum_tree  # the benchmark checks itself with accord.testing's
    # parallel inputs give the mean, orthogonal ones the sum (any rank count)
    for n in (1, 2, 3, 4, 5):
        np.testing.assert_allclose(adasum_tree([x] * n, offsets), x, rtol=1e-12)
        basis = [np.eye(12)[i] * (i + 1) for i in range(n)]
        np.testing.assert_allclose(adasum_tree(basis, offsets), np.sum(basis, axis=0),
                                   atol=1e-12)


def test_tree_oracle_segments_and_weights():
    rng = np.random.default_rng(1)
    offsets = [0, 3, 7]
    a, b, c = (rng.standard_normal(7) for _ in range(3))
    # segments get their own coefficients: the same as reducing each segment on its own
    whole = adasum_tree([a, b, c], offsets)
    for s, e in zip(offsets[:-1], offsets[1:]):
        np.testing.assert_allclose(whole[s:e], adasum_tree([a[s:e], b[s:e], c[s:e]], [0, e - s]),
                                   rtol=1e-12)
    # 3 ranks: (a, b) folded first, then combined with c weighted 2:1
    ab = adasum_pair(a, b, [0, 7])
    dot = ab @ c
    want = (1 - 2 / 3 * dot / (ab @ ab)) * ab + (1 - 1 / 3 * dot / (c @ c)) * c
    np.testing.assert_allclose(adasum_tree([a, b, c], [0, 7]), want, rtol=1e-12)
    # a zero input leaves the other one unchanged (its coefficient is 1)
    np.testing.assert_array_equal(adasum_pair(np.zeros(7), a, [0, 7]), a)
    with pytest.raises(ValueError, match="offsets must run from 0 to 7"):
        adasum_pair(a, b, [0, 5])
    with pytest.raises(ValueError, match="inputs is empty"):
        adasum_tree([], [0])


def test_table_format(capsys):
    t = Table([Column("size", "(B)", 8, "d"), Column("t", "(us)", 8, ".1f"),
               Column("wrong", "", 6, "d", title="#wrong")])
    t.print_header()
    t.print_row(size=4096, t=1.25, wrong=None)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("#") and "#wrong" in lines[0]
    assert lines[2].split() == ["4096", "1.2", "-"]
