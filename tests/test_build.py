"""The build's CUDA switch: ACCORD_WITH_CUDA=1 without nvcc is a clear configure error, the
automatic mode quietly builds CPU-only, and build_info() reports what was compiled."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import accord

ROOT = Path(__file__).resolve().parents[1]
CMAKE = shutil.which("cmake", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                    os.environ.get("PATH", "")]))


def _configure(tmp_path, cuda_switch):
    pybind11 = pytest.importorskip("pybind11")
    # no nvcc anywhere: a bare PATH and a CUDA_HOME that does not exist
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"),
           "CUDA_HOME": str(tmp_path / "no-cuda")}
    return subprocess.run(
        [CMAKE, "-S", str(ROOT), "-B", str(tmp_path / "build"), f"-DACCORD_WITH_CUDA={cuda_switch}",
         f"-DPython_EXECUTABLE={sys.executable}", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}"],
        capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.skipif(CMAKE is None, reason="cmake not found")
def test_cuda_forced_on_without_nvcc_fails_clearly(tmp_path):
    proc = _configure(tmp_path, "ON")
    assert proc.returncode != 0
    assert "ACCORD_WITH_CUDA=1 but no CUDA compiler (nvcc) was found" in proc.stderr


@pytest.mark.skipif(CMAKE is None, reason="cmake not found")
def test_cuda_auto_without_nvcc_builds_cpu_only(tmp_path):
    proc = _configure(tmp_path, "AUTO")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "accord: CUDA kernels OFF" in proc.stdout


def test_build_info_fields():
    info = accord.build_info()
    assert set(info) >= {"version", "cuda", "cuda_archs", "cuda_devices", "openmp",
                         "omp_max_threads", "cpu_tile_size"}
    # the version compiled into the extension is the package's (setup.py's VERSION)
    setup_py = (ROOT / "setup.py").read_text()
    declared = re.search(r'^VERSION = "([^"]+)"', setup_py, re.M).group(1)
    assert info["version"] == declared
    assert accord.__version__ == declared
    if info["cuda"]:
        assert info["cuda_archs"] and info["cuda_devices"] >= 0
    else:
        assert info["cuda_archs"] == "" and info["cuda_devices"] == 0
