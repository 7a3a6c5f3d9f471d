"""The build's CUDA switch: ACCORD_WITH_CUDA=1 without nvcc is a clear configure error, the
automatic mode quietly builds CPU-only, and build_info() reports what was compiled."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import accord

ROOT = Path(__file__).resolve().parents[1]
CMAKE = shutil.which("cmake", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                    os.environ.get("PATH", "")]))


def _configure(tmp_path, cuda_switch, *extra):
    pybind11 = pytest.importorskip("pybind11")
    # no nvcc anywhere: a bare PATH and a CUDA_HOME that does not exist
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"),
           "CUDA_HOME": str(tmp_path / "no-cuda")}
    return subprocess.run(
        [CMAKE, "-S", str(ROOT), "-B", str(tmp_path / "build"), f"-DACCORD_WITH_CUDA={cuda_switch}",
         f"-DPython_EXECUTABLE={sys.executable}", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
         *extra],
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


@pytest.mark.skipif(CMAKE is None, reason="cmake not found")
def test_sanitize_option_instruments_host_code(tmp_path):
    """-DACCORD_SANITIZE=address,undefined puts -fsanitize=... (aborting on every report) on
    the host sources and the link; the default adds nothing; a malformed list is refused."""
    proc = _configure(tmp_path, "OFF", "-DACCORD_SANITIZE=address,undefined", "-G", "Ninja")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "host code built with -fsanitize=address,undefined" in proc.stdout
    cmd = subprocess.run([shutil.which("ninja") or "ninja", "-C", str(tmp_path / "build"),
                          "-t", "commands", "_C"], capture_output=True, text=True, timeout=60)
    compiles = [c for c in cmd.stdout.splitlines() if "segment_dots_cpu.cpp" in c]
    assert compiles and "-fsanitize=address,undefined" in compiles[0]
    assert "-fno-sanitize-recover=all" in compiles[0]
    assert any("-fsanitize=address,undefined" in c and " -o " in c and "_C" in c
               for c in cmd.stdout.splitlines()[-3:])
    plain = _configure(tmp_path / "plain", "OFF")
    assert plain.returncode == 0 and "-fsanitize" not in plain.stdout
    bad = _configure(tmp_path / "bad", "OFF", "-DACCORD_SANITIZE=address -O0")
    assert bad.returncode != 0 and "ACCORD_SANITIZE=address -O0" in bad.stderr


def test_build_info_fields():
    info = accord.build_info()
    assert set(info) >= {"version", "cuda", "cuda_archs", "cuda_devices", "openmp",
                         "omp_max_threads", "cpu_tile_size"}
    assert info["version"] == accord.__version__
    if info["cuda"]:
        assert info["cuda_archs"] and info["cuda_devices"] >= 0
    else:
        assert info["cuda_archs"] == "" and info["cuda_devices"] == 0
