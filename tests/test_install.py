"""Packaging: accord installs from its source tree, repeatedly, editable, and from the wheel
that ``python -m build`` makes from its sdist, each into a fresh virtual environment.

Every install compiles the extension (CPU only, ACCORD_WITH_CUDA=0), so the module is marked
``slow``. Build dependencies and numpy come from a wheelhouse downloaded once per module from
the package index (or, offline, from the directory named by ACCORD_TEST_WHEELHOUSE); every pip
call then runs with --no-index against it, isolated builds included (pip hands its index
options to the build environment it creates). The builds run on a copy of the source tree, so
the checkout's own build/ and in-place extension are never touched.
"""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 900  # one compile takes ~20 s on an idle machine; a loaded CI box is far slower
# pyproject.toml [build-system] requires, plus numpy (accord's dependency) and `build`
WHEELHOUSE_REQUIREMENTS = ["setuptools>=64", "wheel", "pybind11>=2.12", "cmake>=3.18", "ninja",
                           "numpy", "build"]
BUILD_DEPS = ["setuptools", "wheel", "pybind11", "cmake", "ninja", "build"]
# what a build from the sdist cannot do without
SDIST_MUST_HOLD = ["CMakeLists.txt", "setup.py", "pyproject.toml", "MANIFEST.in",
                   "cmake/AccordCUDA.cmake", "cmake/AccordOpenMP.cmake", "csrc/bindings.cpp",
                   "csrc/cpu/vec.h", "csrc/include/accord/kernels.h", "csrc/cuda/common.cuh",
                   "python/accord/__init__.py", "python/accord/py.typed",
                   "python/accord/bench/__main__.py"]
WHEEL_MUST_HOLD = ["accord/__init__.py", "accord/__main__.py", "accord/py.typed",
                   "accord/testing.py", "accord/bench/__main__.py"]
IGNORED = shutil.ignore_patterns("build", "dist", ".git", ".venv", "*.so", "__pycache__",
                                 "*.egg-info", ".hypothesis", ".pytest_cache", "results")

CHECK = """
import json, accord, accord._C
print(json.dumps({"file": accord.__file__, "C": accord._C.__file__,
                  "info": accord.build_info()}))
"""


def _run(cmd, env, cwd):
    proc = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=TIMEOUT)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
                    f"--- stdout (tail)\n{proc.stdout[-4000:]}\n--- stderr (tail)\n"
                    f"{proc.stderr[-12000:]}")
    return proc.stdout


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    given = os.environ.get("ACCORD_TEST_WHEELHOUSE")
    if given:
        return Path(given).resolve()
    where = tmp_path_factory.mktemp("wheelhouse")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    _run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
          "-d", where, *WHEELHOUSE_REQUIREMENTS], env, where)
    return where


@pytest.fixture(scope="module")
def env(wheelhouse):
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV", "ACCORD_"))}
    e.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse), PIP_DISABLE_PIP_VERSION_CHECK="1",
             ACCORD_WITH_CUDA="0", PYTHONDONTWRITEBYTECODE="1")
    return e


def _source_copy(where: Path) -> Path:
    shutil.copytree(ROOT, where, ignore=IGNORED)
    return where


def _venv(where: Path, env) -> Path:
    _run([sys.executable, "-m", "venv", where], env, where.parent)
    return where / "bin" / "python"


def _pip(python, *args, env, cwd):
    return _run([python, "-m", "pip", "install", "-q", *args], env, cwd)


def _check_import(python, env, cwd) -> dict:
    """Import accord in `python` from a directory outside the source tree."""
    out = json.loads(_run([python, "-c", CHECK], env, cwd).strip().splitlines()[-1])
    assert out["info"]["version"] and out["info"]["cuda"] is False, out
    return out


@pytest.fixture(scope="module")
def dev(tmp_path_factory, env):
    """A source copy and a venv holding the build dependencies (for --no-build-isolation)."""
    base = tmp_path_factory.mktemp("dev")
    python = _venv(base / "venv", env)
    _pip(python, *BUILD_DEPS, "numpy", env=env, cwd=base)
    return _source_copy(base / "src"), python, base


def test_isolated_install_twice(tmp_path, env):
    """`pip install .` with build isolation, then again from the same tree: the second build
    must not trip over the CMake cache the first one left in build/ (its ninja and pybind11
    lived in a build environment pip has deleted since)."""
    src = _source_copy(tmp_path / "src")
    python = _venv(tmp_path / "venv", env)
    _pip(python, src, env=env, cwd=tmp_path)
    first = _check_import(python, env, tmp_path)
    assert Path(first["file"]).is_relative_to(tmp_path / "venv")
    _pip(python, "--force-reinstall", "--no-deps", src, env=env, cwd=tmp_path)
    _check_import(python, env, tmp_path)
    # the first build's directory (its toolchain is gone) was cleaned up by the second
    assert len(list((src / "build").glob("cmake-*"))) == 1


def test_editable_install(dev, env):
    src, python, base = dev
    _pip(python, "--no-build-isolation", "--no-deps", "-e", src, env=env, cwd=base)
    out = _check_import(python, env, base)
    assert Path(out["file"]) == src / "python" / "accord" / "__init__.py"
    assert Path(out["C"]).parent == src / "python" / "accord"


def test_build_sdist_and_wheel(dev, env, tmp_path):
    """`python -m build`: the sdist from the tree, then the wheel from that sdist (so the sdist is
    proven to build), and the wheel installed into a fresh venv."""
    src, python, base = dev
    dist = tmp_path / "dist"
    _run([python, "-m", "build", "--no-isolation", "--outdir", dist, src], env, base)
    (sdist,), (wheel,) = dist.glob("accord-*.tar.gz"), dist.glob("accord-*.whl")

    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    missing = [n for n in SDIST_MUST_HOLD if n not in names]
    assert not missing, f"sdist lacks {missing}"
    assert not [n for n in names if n.endswith(".so") or n.startswith("build/")], names

    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
    missing = [n for n in WHEEL_MUST_HOLD if n not in names]
    assert not missing, f"wheel lacks {missing}"
    assert any(n.startswith("accord/_C.") and n.endswith(".so") for n in names), names

    fresh = _venv(tmp_path / "venv-wheel", env)
    _pip(fresh, wheel, env=env, cwd=tmp_path)
    out = _check_import(fresh, env, tmp_path)
    assert Path(out["file"]).is_relative_to(tmp_path / "venv-wheel"), out
