"""Build accord: setuptools drives CMake + ninja for the `accord._C` extension.

Environment switches (all optional):
  ACCORD_WITH_CUDA=0|1     force the CUDA kernels off or on (default: on when nvcc is found)
  ACCORD_CUDA_ARCHS="80;90" CUDA architectures (default Ampere + Hopper)
  ACCORD_BUILD_TYPE=Release|Debug|RelWithDebInfo
  ACCORD_SANITIZE=address,undefined  compile and link the host code with these -fsanitize=
                           checks (passed to CMake as -DACCORD_SANITIZE; unset or empty: none;
                           tests/sanitize/run.sh runs the tests under such a build)
  CMAKE_BUILD_PARALLEL_LEVEL=N  parallel compile jobs
No torch and no CUDA toolkit are needed at build time.

CMake and ninja are taken from the `cmake` / `ninja` Python packages of the environment running
the build when they are installed there (pip's isolated build environment included), else from
the directory of the running Python, else from PATH.

Each toolchain (Python environment, cmake, ninja, pybind11) gets its own CMake build directory,
build/cmake-<hash>/, shared by regular and editable builds; build directories whose toolchain
no longer exists are deleted. See CMakeBuild.build_extension for why.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
VERSION = "0.1.0"
TOOLCHAIN_FILE = "accord-toolchain.json"


def _cuda_switch():
    value = os.environ.get("ACCORD_WITH_CUDA", "").strip().lower()
    if value in ("", "auto"):
        return "AUTO"
    if value in ("1", "on", "true", "yes"):
        return "ON"
    if value in ("0", "off", "false", "no"):
        return "OFF"
    raise SystemExit(f"ACCORD_WITH_CUDA={value!r}: use 0 (off), 1 (on) or leave it unset (auto)")


def _find_tool(name, module, attr):
    """Absolute path of the `name` executable: the `module` package's copy when it is installed
    in this environment, else the one next to this Python, else the first on PATH."""
    try:
        mod = __import__(module)
        candidate = Path(getattr(mod, attr)) / name
        if candidate.is_file():
            return str(candidate.resolve())
    except (ImportError, AttributeError, TypeError):
        pass
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(name, path=search)
    if found is None:
        raise SystemExit(f"accord build: no `{name}` executable found; install it into the "
                         f"build environment (pip install {module}) or put it on PATH")
    return str(Path(found).resolve())


def _cached(cache: Path, key: str):
    """The value of `key` in a CMakeCache.txt, or None."""
    try:
        for line in cache.read_text(errors="replace").splitlines():
            name, sep, value = line.partition("=")
            if sep and name.split(":", 1)[0] == key:
                return value
    except OSError:
        pass
    return None


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        import pybind11

        cmake = _find_tool("cmake", "cmake", "CMAKE_BIN_DIR")
        ninja = _find_tool("ninja", "ninja", "BIN_DIR")
        toolchain = {"python": sys.prefix, "python_version": sys.version, "cmake": cmake,
                     "ninja": ninja, "pybind11": pybind11.get_cmake_dir()}

        # A CMake cache records absolute paths of the tools and packages it was configured
        # with (CMAKE_MAKE_PROGRAM, pybind11's headers, the Python found). pip's isolated build
        # environment lives in a temporary directory that is deleted after the build, while
        # build/ stays in the source tree: reconfiguring such a cache fails at `project()`
        # because the cached ninja is gone. So every toolchain gets its own build directory
        # (a cache is only reused by the toolchain that wrote it, which keeps incremental
        # builds in a development venv), CMAKE_MAKE_PROGRAM is always passed explicitly, and
        # directories whose toolchain has disappeared are deleted (they can never be reused).
        # The directory is under the source tree's build/ rather than self.build_temp because
        # setuptools gives editable builds a throw-away build_temp: there, `pip install -e .`
        # after an edit recompiles only what changed.
        key = hashlib.sha256(json.dumps(toolchain, sort_keys=True).encode()).hexdigest()[:12]
        parent = ROOT / "build"
        build_dir = parent / f"cmake-{key}"
        self._prune_stale(parent, keep=build_dir)
        cache = build_dir / "CMakeCache.txt"
        if cache.exists() and _cached(cache, "CMAKE_MAKE_PROGRAM") != ninja:
            # written by hand or by another tool at this path: start that directory afresh
            shutil.rmtree(build_dir)
        build_dir.mkdir(parents=True, exist_ok=True)
        (build_dir / TOOLCHAIN_FILE).write_text(json.dumps(toolchain, indent=1) + "\n")

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DCMAKE_BUILD_TYPE={os.environ.get('ACCORD_BUILD_TYPE', 'Release')}",
            f"-DCMAKE_MAKE_PROGRAM={ninja}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={toolchain['pybind11']}",
            f"-DACCORD_WITH_CUDA={_cuda_switch()}",
            f"-DACCORD_VERSION={VERSION}",
            # Always passed, empty when unset: a -D value stays in the CMake cache, so
            # leaving the variable out would keep the sanitizers of an earlier build.
            f"-DACCORD_SANITIZE={os.environ.get('ACCORD_SANITIZE', '').strip()}",
            "-G", "Ninja",
        ]
        if os.environ.get("ACCORD_CUDA_ARCHS"):
            args.append(f"-DACCORD_CUDA_ARCHS={os.environ['ACCORD_CUDA_ARCHS']}")
        subprocess.run([cmake, "-S", str(ROOT), "-B", str(build_dir), *args], check=True)
        build = [cmake, "--build", str(build_dir), "--target", "_C"]
        if "CMAKE_BUILD_PARALLEL_LEVEL" not in os.environ:
            build += ["--parallel", str(os.cpu_count() or 1)]
        subprocess.run(build, check=True)

    @staticmethod
    def _prune_stale(parent: Path, keep: Path):
        """Delete the cmake-* build directories under `parent` whose recorded toolchain is gone
        (and those without a record, from a build interrupted before it was written)."""
        if not parent.is_dir():
            return
        for other in parent.glob("cmake-*"):
            if other == keep or not other.is_dir():
                continue
            try:
                recorded = json.loads((other / TOOLCHAIN_FILE).read_text())
                paths = [v for k, v in recorded.items() if k != "python_version"]
                stale = not all(Path(p).exists() for p in paths)
            except (OSError, ValueError, AttributeError):
                stale = True
            if stale:
                shutil.rmtree(other, ignore_errors=True)


setup(
    name="accord",
    version=VERSION,
    description="Adaptive gradient aggregation (Adasum, ACGA, Leader SGD, ADPSGD) for "
    "data-parallel PyTorch over MPI and torch.distributed",
    python_requires=">=3.9",
    packages=find_packages("python"),
    package_dir={"": "python"},
    package_data={"accord": ["py.typed"]},
    ext_modules=[CMakeExtension("accord._C")],
    cmdclass={"build_ext": CMakeBuild},
    install_requires=["numpy"],
    extras_require={"mpi": ["mpi4py"], "torch": ["torch"]},
    zip_safe=False,
)
