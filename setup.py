"""Build accord: setuptools drives CMake + ninja for the `accord._C` extension.

Environment switches (all optional):
  ACCORD_WITH_CUDA=0|1     force the CUDA kernels off or on (default: on when nvcc is found)
  ACCORD_CUDA_ARCHS="80;90" CUDA architectures (default Ampere + Hopper)
  ACCORD_BUILD_TYPE=Release|Debug|RelWithDebInfo
  ACCORD_SANITIZE=address,undefined  host code built with these sanitizers (tests/sanitize/run.sh)
  CMAKE_BUILD_PARALLEL_LEVEL=N  parallel compile jobs
No torch and no CUDA toolkit are needed at build time.
"""
import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
VERSION = "0.1.0"


def _cuda_switch():
    value = os.environ.get("ACCORD_WITH_CUDA", "").strip().lower()
    if value in ("", "auto"):
        return "AUTO"
    if value in ("1", "on", "true", "yes"):
        return "ON"
    if value in ("0", "off", "false", "no"):
        return "OFF"
    raise SystemExit(f"ACCORD_WITH_CUDA={value!r}: use 0 (off), 1 (on) or leave it unset (auto)")


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DCMAKE_BUILD_TYPE={os.environ.get('ACCORD_BUILD_TYPE', 'Release')}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DACCORD_WITH_CUDA={_cuda_switch()}",
            f"-DACCORD_VERSION={VERSION}",
            "-G", "Ninja",
        ]
        if os.environ.get("ACCORD_CUDA_ARCHS"):
            args.append(f"-DACCORD_CUDA_ARCHS={os.environ['ACCORD_CUDA_ARCHS']}")
        if os.environ.get("ACCORD_SANITIZE"):
            args.append(f"-DACCORD_SANITIZE={os.environ['ACCORD_SANITIZE']}")
        subprocess.run(["cmake", str(ROOT), *args], cwd=build_dir, check=True)
        build = ["cmake", "--build", ".", "--target", "_C"]
        if "CMAKE_BUILD_PARALLEL_LEVEL" not in os.environ:
            build += ["--parallel", str(os.cpu_count() or 1)]
        subprocess.run(build, cwd=build_dir, check=True)


setup(
    name="accord",
    version=VERSION,
    description="Adaptive gradient aggregation (Adasum, ACGA, Leader SGD, ADPSGD) for "
    "data-parallel PyTorch over MPI and torch.distributed",
    python_requires=">=3.9",
    packages=find_packages("python"),
    package_dir={"": "python"},
    ext_modules=[CMakeExtension("accord._C")],
    cmdclass={"build_ext": CMakeBuild},
    install_requires=["numpy"],
    extras_require={"mpi": ["mpi4py"], "torch": ["torch"]},
    zip_safe=False,
)
