"""benchmarks/kernels.py runs (its --quick mode) and writes the JSON its docs describe."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_kernel_benchmark_quick(tmp_path):
    out = tmp_path / "k.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernels.py"), "--quick",
                           "--json", str(out)], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "section 1" in proc.stdout and proc.stdout.lstrip().startswith("#")
    data = json.loads(out.read_text())
    assert {"adasum", "gram", "adasum_16bit"} <= set(data), sorted(data)
