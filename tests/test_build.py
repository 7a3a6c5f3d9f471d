"""The build: ACCORD_WITH_CUDA=1 without nvcc is a clear configure error, the automatic mode
quietly builds CPU-only, build_info() and ``python -m accord`` report what was compiled, and
setup.py's CMake invocation (build directory per toolchain, ACCORD_SANITIZE pass-through).
Installing from the tree, sdist and wheel is tests/test_install.py."""
import json
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
    # the version compiled into the extension is the package's (setup.py's VERSION)
    setup_py = (ROOT / "setup.py").read_text()
    declared = re.search(r'^VERSION = "([^"]+)"', setup_py, re.M).group(1)
    assert info["version"] == declared
    assert accord.__version__ == declared
    if info["cuda"]:
        assert info["cuda_archs"] and info["cuda_devices"] >= 0
    else:
        assert info["cuda_archs"] == "" and info["cuda_devices"] == 0


def _python_m_accord(*prelude):
    """Output of ``python -m accord`` as {label: value}, run after the ``prelude`` statements."""
    code = "; ".join([*prelude, "import runpy", "runpy.run_module('accord', run_name='__main__')"])
    root = Path(accord.__file__).resolve().parents[1]
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    env.pop("OMPI_COMM_WORLD_SIZE", None)  # as when typed at a shell, not under mpirun
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {}
    for line in proc.stdout.splitlines():
        label, _, value = line.partition(":")
        lines[label.strip()] = value.strip()
    return lines, proc.stdout


def _yes_no(value):
    assert value.split(" ", 1)[0] in ("yes", "no"), value
    return value.startswith("yes")


def test_python_m_accord_reports_capabilities():
    lines, out = _python_m_accord()
    info = accord.build_info()
    assert lines["accord"].startswith(f"{info['version']} ("), out
    for label in ("numpy", "CUDA kernels", "GPUs visible", "OpenMP", "mpi4py", "MPI library",
                  "torch"):
        assert label in lines, out
        _yes_no(lines[label])
    assert _yes_no(lines["CUDA kernels"]) == info["cuda"]
    if info["cuda"]:
        assert info["cuda_archs"].replace(";", ",") in lines["CUDA kernels"]
    assert _yes_no(lines["OpenMP"]) == info["openmp"]
    assert lines["CPU SIMD"].startswith(f"{info['cpu_isa']} (best this CPU supports: "
                                        f"{info['cpu_isa_best']})")
    try:
        import mpi4py
        from mpi4py import MPI
    except ImportError:
        assert not _yes_no(lines["MPI library"])
    else:
        assert lines["mpi4py"] == f"yes ({mpi4py.__version__})"
        assert _yes_no(lines["MPI library"])
        assert " ".join(MPI.Get_library_version().split()) in lines["MPI library"]
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        assert not _yes_no(lines["torch"])
    else:
        assert lines["torch"] == f"yes ({torch.__version__})"
        for name, probe in (("gloo", dist.is_gloo_available), ("NCCL", dist.is_nccl_available),
                            ("MPI", dist.is_mpi_available)):
            assert _yes_no(lines[f"{name} backend"]) == probe(), out


def test_python_m_accord_without_torch_and_mpi4py():
    # None in sys.modules makes `import torch` / `import mpi4py` raise ImportError
    lines, out = _python_m_accord("import sys", "sys.modules['torch'] = None",
                                  "sys.modules['mpi4py'] = None")
    assert lines["torch"].startswith("no (not installed"), out
    assert lines["torch.distributed"] == "no (needs torch)", out
    assert lines["mpi4py"].startswith("no (not installed") and "pip install mpi4py" in out, out
    assert lines["MPI library"].startswith("no"), out
    assert "backend" not in out
    assert lines["OpenMP"].startswith("yes" if accord.build_info()["openmp"] else "no"), out


def test_python_m_accord_rejects_arguments():
    proc = subprocess.run([sys.executable, "-m", "accord", "--bogus"], capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(accord.__file__).parents[1])})
    assert proc.returncode == 2 and "unrecognized arguments: --bogus" in proc.stderr


def _setup_py_with_fake_cmake(tmp_path, env_extra):
    """Run setup.py build_ext (copied alone into tmp_path) against a `cmake` that only records
    its arguments; returns the recorded command lines."""
    pytest.importorskip("pybind11")
    shutil.copy(ROOT / "setup.py", tmp_path / "setup.py")
    fake = tmp_path / "fake"
    (fake / "cmake").mkdir(parents=True, exist_ok=True)
    (fake / "bin").mkdir(exist_ok=True)
    log = tmp_path / "cmake-calls.txt"
    script = fake / "bin" / "cmake"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\n')
    script.chmod(0o755)
    # the `cmake` package setup.py prefers, pointing at the recording script
    (fake / "cmake" / "__init__.py").write_text(f"CMAKE_BIN_DIR = {str(fake / 'bin')!r}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
    env.update(PYTHONPATH=str(fake), ACCORD_WITH_CUDA="0", **env_extra)
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_ext"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    calls = log.read_text().splitlines()
    log.unlink()
    return calls


def test_setup_py_passes_sanitize_and_make_program(tmp_path):
    configure, build = _setup_py_with_fake_cmake(tmp_path, {"ACCORD_SANITIZE": "address,undefined"})
    args = configure.split()
    assert "-DACCORD_SANITIZE=address,undefined" in args
    ninja = next(a for a in args if a.startswith("-DCMAKE_MAKE_PROGRAM=")).split("=", 1)[1]
    assert Path(ninja).is_absolute() and Path(ninja).name == "ninja" and Path(ninja).exists()
    build_dir = Path(args[args.index("-B") + 1])
    assert build_dir.parent == tmp_path / "build" and build_dir.name.startswith("cmake-")
    recorded = json.loads((build_dir / "accord-toolchain.json").read_text())
    assert recorded["ninja"] == ninja and recorded["python"] == sys.prefix
    assert build.split()[:2] == ["--build", str(build_dir)]
    # unset: passed empty, so a sanitizer cached by an earlier build is switched off again
    configure, _ = _setup_py_with_fake_cmake(tmp_path, {})
    assert "-DACCORD_SANITIZE=" in configure.split()


def test_setup_py_prunes_build_dirs_of_vanished_toolchains(tmp_path):
    gone = tmp_path / "build" / "cmake-0123456789ab"
    alive = tmp_path / "build" / "cmake-ba9876543210"
    for d, where in ((gone, tmp_path / "deleted-build-env"), (alive, tmp_path)):
        d.mkdir(parents=True)
        (d / "accord-toolchain.json").write_text(json.dumps(
            {"python": str(where), "python_version": sys.version, "cmake": str(where),
             "ninja": str(where), "pybind11": str(where)}))
    (tmp_path / "build" / "cmake-unrecorded").mkdir()  # interrupted before the record
    configure, _ = _setup_py_with_fake_cmake(tmp_path, {})
    left = sorted(p.name for p in (tmp_path / "build").glob("cmake-*"))
    used = Path(configure.split()[configure.split().index("-B") + 1]).name
    assert left == sorted([alive.name, used])
    # a cache in the toolchain's own directory written with another make program is discarded
    cache = tmp_path / "build" / used / "CMakeCache.txt"
    cache.write_text("CMAKE_MAKE_PROGRAM:FILEPATH=/nonexistent/ninja\n")
    _setup_py_with_fake_cmake(tmp_path, {})
    assert not cache.exists()
