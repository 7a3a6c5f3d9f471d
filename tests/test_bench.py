"""Smoke tests of ``python -m accord.bench allreduce`` (2 ranks, --quick) and its helpers."""
import json
import os

import numpy as np
import pytest
from launch import requires_mpi, requires_torch_dist, run_mpi, run_torch

import accord
from accord.bench import allreduce as bench
from accord.bench.table import Column, Table, human_bytes, parse_bytes

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


def _check_output(output, raw_name, json_path):
    assert "#wrong" in output and "busbw" in output, output[-3000:]
    assert "# ranks" in output and "# transport" in output and "# warmup/iters" in output
    rows = _data_rows(output)
    impls = {impl for impl, _ in rows}
    assert set(IMPLS) | {raw_name, *PARTS} <= impls, rows
    assert rows and all(wrong == ("-" if impl in PARTS else "0") for impl, wrong in rows), rows
    assert "target adasum latency at 4 KiB" in output
    assert "out of bounds values : 0 OK" in output
    data = json.loads(json_path.read_text())
    assert data["metadata"]["ranks"] == 2
    assert len(data["rows"]) == len(rows)
    assert all(r["wrong"] == (None if r["impl"] in PARTS else 0) for r in data["rows"])
    assert all(r["time_us"] > 0 and r["busbw"] == pytest.approx(r["algbw"]) for r in data["rows"])


@requires_mpi
def test_bench_allreduce_mpi(tmp_path):
    out = tmp_path / "ar.json"
    result = run_mpi("bench_smoke_worker.py", 2,
                     args=("allreduce", "--quick", "--json", str(out)), env=_env(), timeout=180)
    _check_output(result.output, "mpi-raw", out)


@requires_torch_dist
def test_bench_allreduce_gloo(tmp_path):
    out = tmp_path / "ar.json"
    result = run_torch("bench_smoke_worker.py", 2,
                       args=("allreduce", "--quick", "--backend", "gloo", "-e", "16K",
                             "--json", str(out)), env=_env(), timeout=180)
    _check_output(result.output, "gloo-raw", out)


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
    # parallel inputs give the mean, orthogonal ones the sum (any rank count)
    for n in (2, 3, 4, 5):
        np.testing.assert_allclose(bench.adasum_tree([x] * n, offsets), x, rtol=1e-12)
        basis = [np.eye(12)[i] * (i + 1) for i in range(n)]
        np.testing.assert_allclose(bench.adasum_tree(basis, offsets), np.sum(basis, axis=0),
                                   atol=1e-12)


def test_table_format(capsys):
    t = Table([Column("size", "(B)", 8, "d"), Column("t", "(us)", 8, ".1f"),
               Column("wrong", "", 6, "d", title="#wrong")])
    t.print_header()
    t.print_row(size=4096, t=1.25, wrong=None)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("#") and "#wrong" in lines[0]
    assert lines[2].split() == ["4096", "1.2", "-"]
