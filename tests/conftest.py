"""Shared pytest setup for accord's tests.

* ``import accord`` works from a source checkout (python/ is added to sys.path when accord is not
  installed), and ``import oracle`` works from every test module (this directory is on sys.path).
* ``@pytest.mark.cuda`` tests (and ``cuda`` cells of the ops test matrix) are skipped cleanly
  unless accord was built with CUDA, sees a GPU, and torch has CUDA.
* Under pytest-xdist (``make test`` runs ``-n 2 --dist loadgroup``) every test that launches a
  distributed job (``mpi`` marker) is in one group, so those jobs run one after another on one
  worker: they oversubscribe the cores on their own, and two at once would only slow each other
  (MPI ranks poll while they wait). Every other module is a group of its own (its module-scoped
  fixtures, such as test_install's wheelhouse, are built once) and runs on the other worker
  meanwhile: builds, installs, the sanitizer run and the in-process kernel tests.
* ``case`` fixture: one (framework, dtype, device) cell of the kernel test matrix
  (``oracle.all_cases``): numpy x {float32, float64, float16} on cpu, torch x {float32, float64,
  float16, bfloat16} x {cpu, cuda}.
"""
from __future__ import annotations

import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
try:
    import accord  # noqa: F401
except ImportError:  # source checkout without an install: use python/ (needs the built _C)
    sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "python"))

import oracle  # noqa: E402


def _cuda_usable() -> bool:
    try:
        import accord
        info = accord.build_info()
        if not info["cuda"] or info["cuda_devices"] == 0:
            return False
        import torch
        return bool(torch.cuda.is_available())
    except Exception:
        return False


CUDA_USABLE = _cuda_usable()
_CUDA_SKIP = ("needs accord built with CUDA, a visible GPU and torch with CUDA "
              "(accord.build_info()['cuda'] / ['cuda_devices'], torch.cuda.is_available())")


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason=_CUDA_SKIP)
    grouped = config.pluginmanager.hasplugin("xdist")
    for item in items:
        if not CUDA_USABLE and item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
        if grouped:
            group = "distributed-jobs" if item.get_closest_marker("mpi") else item.module.__name__
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(params=oracle.case_params())
def case(request):
    """One (framework, dtype, device) cell: ``case.array(float64 values)`` builds an input."""
    if request.param.torch:
        pytest.importorskip("torch")
    return request.param


@pytest.fixture
def rng(request):
    """A numpy Generator seeded from the test's node id: reproducible, different per test."""
    import zlib

    import numpy as np
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
