"""The sanitizer run (tests/sanitize/run.sh) as one test: accord._C built with AddressSanitizer
and UndefinedBehaviorSanitizer into build/sanitize, then the kernel tests and a 2-rank Adasum job
against that build. Any sanitizer report fails it. ``make sanitize-test`` runs the same script
alone; the test is ``slow`` (a separate build: a minute or more on two cores)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "sanitize" / "run.sh"
BIN = Path(sys.executable).parent


def _tool(name):
    return shutil.which(name, path=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))


@pytest.mark.skipif(_tool("cmake") is None or _tool("ninja") is None or _tool("c++") is None,
                    reason="needs cmake, ninja and a C++ compiler")
def test_kernels_and_adasum_job_under_sanitizers():
    # the inner pytest must not see this session's (e.g. pytest-xdist's) variables
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(PYTHON=sys.executable, PATH=os.pathsep.join([str(BIN), env.get("PATH", "")]))
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=840)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-12000:]
    assert "== sanitize run:" in output and "passed" in output, output[-4000:]
    print(output.strip().splitlines()[-1])
