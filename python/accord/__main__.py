"""``python -m accord``: what this installation of accord can do.

Prints one line per capability: the accord version and location, the CUDA kernels (compiled
in or not, their architectures, visible GPUs), OpenMP, the CPU SIMD level, mpi4py and the MPI
library under it, torch and its torch.distributed backends (gloo, NCCL, MPI). Optional pieces
that are missing are reported as ``no`` with the reason; the command itself only fails when
accord's own extension cannot be loaded.

MPI is not initialised: the MPI library's version is one of the few calls the MPI standard
allows before MPI_Init, so this works without mpirun and leaves no MPI process state behind.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys

__all__ = ["capabilities", "main"]

_WIDTH = 20


def _yes(flag: bool, detail: str = "") -> str:
    text = "yes" if flag else "no"
    return f"{text} ({detail})" if detail else text


def _error(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _mpi():
    """(mpi4py line, MPI library line)."""
    try:
        import mpi4py
    except ImportError as e:
        return _yes(False, f"not installed: {_error(e)}; pip install mpi4py"), \
            _yes(False, "unknown without mpi4py")
    version = getattr(mpi4py, "__version__", "unknown version")
    try:
        # Importing mpi4py.MPI would call MPI_Init unless told not to; the library version
        # needs no initialisation.
        if "mpi4py.MPI" not in sys.modules:
            mpi4py.rc.initialize = False
            mpi4py.rc.finalize = False
        from mpi4py import MPI
        library = " ".join(MPI.Get_library_version().split())
        major, minor = MPI.Get_version()
        return _yes(True, version), _yes(True, f"{library}; MPI standard {major}.{minor}")
    except Exception as e:  # a broken or missing libmpi must not stop the report
        return _yes(True, version), _yes(False, f"mpi4py.MPI failed to load: {_error(e)}")


def _torch():
    """(lines about torch, GPUs torch sees or None when unknown)."""
    try:
        import torch
    except ImportError as e:
        return [("torch", _yes(False, f"not installed: {_error(e)}")),
                ("torch.distributed", _yes(False, "needs torch"))], None
    lines = [("torch", _yes(True, torch.__version__))]
    gpus = None
    try:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a CUDA driver problem: leave the GPU count to accord's own view
        gpus = None
    try:
        import torch.distributed as dist
        available = dist.is_available()
    except Exception as e:
        return lines + [("torch.distributed", _yes(False, _error(e)))], gpus
    lines.append(("torch.distributed", _yes(available)))
    for name, probe in (("gloo", "is_gloo_available"), ("NCCL", "is_nccl_available"),
                        ("MPI", "is_mpi_available")):
        check = getattr(dist, probe, None) if available else None
        try:
            ok = bool(check()) if check is not None else False
        except Exception:
            ok = False
        lines.append((f"  {name} backend", _yes(ok)))
    return lines, gpus


def capabilities() -> list[tuple[str, str]]:
    """The report as (label, value) pairs, in print order."""
    import accord

    info = accord.build_info()
    where = os.path.dirname(os.path.abspath(accord.__file__))
    lines = [("accord", f"{info['version']} ({where})"),
             ("Python", f"{platform.python_version()} ({sys.executable})")]
    try:
        import numpy
        lines.append(("numpy", _yes(True, numpy.__version__)))
    except ImportError as e:
        lines.append(("numpy", _yes(False, _error(e))))

    cuda = bool(info.get("cuda"))
    archs = str(info.get("cuda_archs") or "").replace(";", ",")
    lines.append(("CUDA kernels", _yes(cuda, f"architectures {archs}" if cuda else
                                       "this build is CPU-only; rebuild with ACCORD_WITH_CUDA=1")))
    torch_lines, torch_gpus = _torch()
    if cuda:
        n = int(info.get("cuda_devices") or 0)
        lines.append(("GPUs visible", _yes(n > 0, f"{n} to accord")))
    elif torch_gpus is not None:
        lines.append(("GPUs visible", _yes(torch_gpus > 0, f"{torch_gpus} to torch; accord's "
                                                          "build has no CUDA kernels")))
    else:
        lines.append(("GPUs visible", _yes(False, "unknown: no CUDA build and no torch")))

    threads = info.get("omp_max_threads")
    lines.append(("OpenMP", _yes(bool(info.get("openmp")), f"{threads} threads by default"
                                 if info.get("openmp") else "kernels run on one thread")))
    isa, best = info.get("cpu_isa", "unknown"), info.get("cpu_isa_best", "unknown")
    lines.append(("CPU SIMD", f"{isa} (best this CPU supports: {best})"))

    mpi4py_line, mpi_line = _mpi()
    lines += [("mpi4py", mpi4py_line), ("MPI library", mpi_line)]
    lines += torch_lines
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m accord",
        description="Print what this installation of accord can do: CUDA kernels and GPUs, "
                    "OpenMP, CPU SIMD level, MPI (mpi4py) and torch.distributed backends.")
    parser.parse_args(sys.argv[1:] if argv is None else argv)
    for label, value in capabilities():
        print(f"{label + ':':<{_WIDTH}}{value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
