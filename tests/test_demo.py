"""`python -m accord.demo` (what `make demo` runs) on 2 ranks, three methods, a few steps: the
table, the per-method sentences, the JSON and the PNG come out, and the numbers are sane."""
import json

import pytest
from launch import requires_mpi, run_mpi

pytestmark = pytest.mark.mpi

STEPS, PERIOD, RANKS = 40, 8, 2
# The MLP 64-64-10: 64*64 + 64 + 64*10 + 10 float32 parameters.
MODEL_BYTES = 4 * (64 * 64 + 64 + 64 * 10 + 10)


@requires_mpi
def test_demo_table_json_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    png, js = tmp_path / "out" / "demo.png", tmp_path / "demo.json"
    # ~50 s on a loaded 2-core machine, almost all of it importing torch on each rank.
    result = run_mpi("demo_worker.py", RANKS, timeout=180, args=(
        "--methods", "average,adasum,cpsgd", "--steps", STEPS, "--period", PERIOD,
        "--evals", 4, "--plot", png, "--json", js, "--progress", "lines"))
    out = result.output
    assert "ms/step median [IQR]" in out and "noisy" in out, out[-3000:]
    for name in ("average:", "adasum:", "cpsgd:"):
        assert name in out, out[-3000:]

    data = json.loads(js.read_text())
    assert data["metadata"]["ranks"] == RANKS
    rows = {r["method"]: r for r in data["rows"]}
    assert list(rows) == ["average", "adasum", "cpsgd"]
    for r in rows.values():
        assert r["steps"] == STEPS and r["diverged_at"] is None
        assert 0.8 < r["test_acc"] <= 1.0, r  # digits: ~90% after 40 steps of 2 x 32 samples
        assert 0.0 < r["train_loss"] < 1.0, r
        assert 0 < r["step_ms_p25"] <= r["step_ms_median"] <= r["step_ms_p75"], r
        steps = [c[0] for c in r["curve"]]
        assert steps[0] == 0 and steps[-1] == STEPS and steps == sorted(steps)
        sent = [c[2] for c in r["curve"]]
        assert sent[0] == 0 and sent == sorted(sent) and sent[-1] == r["bytes_per_rank"]

    # Bytes, as counted by the wrapped communicator: average and Adasum move the model's
    # 2 (N-1)/N share every step (Adasum's small dot-product messages on top), CPSGD once
    # per period; a few small consistency checks come on top of each.
    per_step = 2 * (RANKS - 1) / RANKS * MODEL_BYTES
    assert STEPS * per_step <= rows["average"]["bytes_per_rank"] <= 1.05 * STEPS * per_step
    assert STEPS * per_step <= rows["adasum"]["bytes_per_rank"] <= 1.05 * STEPS * per_step
    syncs = STEPS // PERIOD
    assert rows["cpsgd"]["syncs"] == syncs
    assert syncs * per_step <= rows["cpsgd"]["bytes_per_rank"] <= 1.1 * syncs * per_step

    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
