"""Invalid arguments to accord.ops raise TypeError / ValueError naming the argument, before any
kernel runs; CUDA data without a usable CUDA build raises RuntimeError. Checked for numpy arrays
and torch tensors (through torch.ops.accord.*) alike."""
from __future__ import annotations

import re
import types

import numpy as np
import pytest

import accord
from accord import _kernels, _op_impl, ops

FRAMEWORKS = ["numpy", "torch"]


def arr(fw, values, dtype="float32"):
    values = np.asarray(values)
    if fw == "numpy":
        return np.ascontiguousarray(values.astype(dtype))
    torch = pytest.importorskip("torch")
    return torch.from_numpy(np.ascontiguousarray(values.astype(np.float64))).to(
        getattr(torch, dtype)) if dtype != "int32" else torch.from_numpy(values.astype(np.int32))


def raises(exc, *words):
    """pytest.raises whose message must contain every word (the argument's name...)."""
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{re.escape(w)})" for w in words))


@pytest.fixture(params=FRAMEWORKS)
def fw(request):
    if request.param == "torch":
        pytest.importorskip("torch")
    return request.param


@pytest.fixture
def ab(fw):
    return arr(fw, np.arange(10.0)), arr(fw, np.ones(10)), np.array([0, 4, 10])


# ------------------------------------------------------------------------------------------
# dtypes, frameworks, layout of the data


@pytest.mark.parametrize("which", ["a", "b"])
def test_unsupported_dtype(fw, which):
    good = arr(fw, np.ones(4))
    if fw == "numpy":
        bads = [np.ones(4, np.int32), np.ones(4, np.complex64), np.ones(4, bool)]
    else:
        import torch
        bads = [torch.ones(4, dtype=torch.int32), torch.ones(4, dtype=torch.complex64),
                torch.ones(4, dtype=torch.bool)]
    for bad in bads:
        args = (bad, good) if which == "a" else (good, bad)
        with raises(TypeError, which, "dtype"):
            ops.segment_dots(*args, [0, 4])
        with raises(TypeError, which, "dtype"):
            ops.adasum_combine(*args, [0, 4])


def test_mixed_dtypes(fw):
    a, b = arr(fw, np.ones(4), "float32"), arr(fw, np.ones(4), "float64")
    for call in (lambda: ops.segment_dots(a, b, [0, 4]), lambda: ops.adasum_combine(a, b, [0, 4]),
                 lambda: ops.axpby(a, b, 1.0, 1.0)):
        with raises(TypeError, "b", "float64", "float32"):
            call()
    with raises(TypeError, "out", "dtype"):
        ops.adasum_combine(a, a, [0, 4], out=b)


def test_mixed_frameworks():
    torch = pytest.importorskip("torch")
    n, t = np.ones(4, np.float32), torch.ones(4)
    for a, b in ((n, t), (t, n)):
        with raises(TypeError, "b", "numpy", "torch"):
            ops.segment_dots(a, b, [0, 4])
        with raises(TypeError, "b", "numpy", "torch"):
            ops.adasum_combine(a, b, [0, 4])
        with raises(TypeError, "y", "numpy", "torch"):
            ops.axpby(a, b, 1.0, 1.0)
        with raises(TypeError, "out", "numpy", "torch"):
            ops.adasum_combine(a, a, [0, 4], out=b)
        with raises(TypeError, "rhs", "numpy", "torch"):
            ops.gram(a.reshape(1, 4), [0, 4], rhs=b)


def test_not_an_array():
    with raises(TypeError, "a", "numpy array or a torch tensor"):
        ops.segment_dots([1.0, 2.0], np.ones(2), [0, 2])
    with raises(TypeError, "b", "numpy array or a torch tensor"):
        ops.segment_dots(np.ones(2), [1.0, 2.0], [0, 2])


def test_non_contiguous(fw):
    big = arr(fw, np.ones(20))
    a, b = big[::2], arr(fw, np.ones(10))
    with raises(ValueError, "a", "contiguous"):
        ops.segment_dots(a, b, [0, 10])
    with raises(ValueError, "b", "contiguous"):
        ops.adasum_combine(b, a, [0, 10])
    v = arr(fw, np.ones((4, 3))).T
    with raises(ValueError, "vectors", "contiguous"):
        ops.gram(v, [0, 4])


def test_shape_mismatch(fw):
    a, b = arr(fw, np.ones(10)), arr(fw, np.ones(11))
    with raises(ValueError, "a", "b", "same shape"):
        ops.segment_dots(a, b, [0, 10])
    with raises(ValueError, "x", "y", "same shape"):
        ops.axpby(a, b, 1.0, 1.0)


def test_out_wrong_shape(ab, fw):
    a, b, off = ab
    with raises(ValueError, "out", "shape"):
        ops.adasum_combine(a, b, off, out=arr(fw, np.ones(9)))
    with raises(ValueError, "out", "shape"):
        ops.axpby(a, b, 1.0, 1.0, off, out=arr(fw, np.ones((2, 5))))
    with raises(ValueError, "out", "n=10"):
        ops.weighted_sum(arr(fw, np.ones((2, 10))), np.ones((2, 2)), off, out=arr(fw, np.ones(3)))


# ------------------------------------------------------------------------------------------
# offsets


@pytest.mark.parametrize("offsets,exc,words", [
    ([1, 4, 10], ValueError, ["offsets[0]", "0"]),
    ([0, 4, 9], ValueError, ["offsets[-1]", "10"]),
    ([0, 4, 11], ValueError, ["offsets[-1]", "10"]),
    ([0, 6, 4, 10], ValueError, ["offsets", "non-decreasing"]),
    ([[0, 4], [4, 10]], ValueError, ["offsets", "1-D"]),
    ([], ValueError, ["offsets", "1-D"]),
    ([0.0, 4.0, 10.0], TypeError, ["offsets", "integers"]),
    ([False, True], TypeError, ["offsets", "integers"]),
])
def test_bad_offsets(ab, fw, offsets, exc, words):
    a, b, _ = ab
    forms = [np.array(offsets)]
    if fw == "torch" and np.array(offsets).dtype != bool and len(offsets):
        import torch
        forms.append(torch.tensor(offsets))
    for off in forms:
        with raises(exc, *words):
            ops.segment_dots(a, b, off)
        with raises(exc, *words):
            ops.adasum_combine(a, b, off)
        with raises(exc, *words):
            ops.axpby(a, b, 1.0, 2.0, off)
        with raises(exc, *words):
            ops.weighted_sum(arr(fw, np.ones((2, 10))), np.ones((max(len(offsets) - 1, 0), 2)),
                             off)


# ------------------------------------------------------------------------------------------
# op-specific arguments


@pytest.mark.parametrize("weights", [(0, 1), (1, -2), (1,), (1, 2, 3), (float("nan"), 1),
                                     (1, float("inf")), ("1", 1), (None, 1)])
def test_bad_weights(ab, weights):
    a, b, off = ab
    with raises(ValueError, "weights"):
        ops.adasum_combine(a, b, off, weights=weights)


def test_bad_dots(ab, fw):
    a, b, off = ab
    for shape in [(2,), (3, 3), (2, 2), (1, 3)]:
        with raises(ValueError, "dots", "shape"):
            ops.adasum_combine(a, b, off, dots=np.zeros(shape))


def test_gram_arguments(fw):
    v = arr(fw, np.ones((3, 10)))
    for bad in (arr(fw, np.ones(10)), arr(fw, np.ones((2, 3, 10))), arr(fw, np.ones((0, 10)))):
        with raises(ValueError, "vectors", "2-D"):
            ops.gram(bad, [0, 10])
    for rhs in (arr(fw, np.ones(9)), arr(fw, np.ones((2, 10)))):
        with raises(ValueError, "rhs", "n=10"):
            ops.gram(v, [0, 10], rhs=rhs)
    with raises(TypeError, "rhs", "float64"):
        ops.gram(v, [0, 10], rhs=arr(fw, np.ones(10), "float64"))


def test_solve_spd_arguments(fw):
    g, r = arr(fw, np.stack([np.eye(3)] * 2), "float64"), arr(fw, np.ones((2, 3)), "float64")
    with raises(TypeError, "gram", "float64"):
        ops.solve_spd(arr(fw, np.stack([np.eye(3)] * 2), "float32"), arr(fw, np.ones((2, 3))))
    with raises(TypeError, "rhs"):
        ops.solve_spd(g, arr(fw, np.ones((2, 3)), "float32"))
    for bad in (arr(fw, np.eye(3), "float64"), arr(fw, np.ones((2, 3, 4)), "float64"),
                arr(fw, np.ones((1, 2, 3, 3)), "float64")):
        with raises(ValueError, "gram", "[L, k, k]"):
            ops.solve_spd(bad, r)
    for bad in (arr(fw, np.ones((2, 4)), "float64"), arr(fw, np.ones((3, 3)), "float64"),
                arr(fw, np.ones(3), "float64")):
        with raises(ValueError, "rhs", "[L, k]"):
            ops.solve_spd(g, bad)
    k = 129
    with raises(ValueError, "k <= 128", "129"):
        ops.solve_spd(arr(fw, np.eye(k)[None], "float64"), arr(fw, np.ones((1, k)), "float64"))
    for ridge in (-1e-3, float("nan"), float("inf")):
        with raises(ValueError, "ridge"):
            ops.solve_spd(g, r, ridge)


def test_weighted_sum_arguments(fw):
    v, off = arr(fw, np.ones((2, 10))), np.array([0, 4, 10])
    for w in (np.ones((2, 3)), np.ones(2), np.ones((3, 2))):
        with raises(ValueError, "weights", "shape"):
            ops.weighted_sum(v, w, off)


def test_axpby_arguments(ab):
    a, b, off = ab
    for alpha in (np.ones(3), np.ones(1), np.ones((2, 1))):
        with raises(ValueError, "alpha", "shape"):
            ops.axpby(a, b, alpha, 1.0, off)
    with raises(ValueError, "beta", "shape"):
        ops.axpby(a, b, 1.0, np.ones(5), off)
    for bad in (float("nan"), float("inf")):
        with raises(ValueError, "alpha", "finite"):
            ops.axpby(a, b, bad, 1.0, off)
        with raises(ValueError, "beta", "finite"):
            ops.axpby(a, b, 1.0, bad, off)
        with raises(ValueError, "strength", "finite"):
            ops.pull_(a, b, bad, off)


def test_no_partial_write_on_error(ab, fw):
    """A rejected call leaves out= untouched (validation runs before the kernel)."""
    a, b, _ = ab
    out = arr(fw, np.full(10, 7.0))
    with pytest.raises(ValueError):
        ops.adasum_combine(a, b, [0, 4, 11], out=out)
    assert np.all(np.asarray(out.tolist()) == 7.0)


# ------------------------------------------------------------------------------------------
# CUDA data without a usable CUDA build


def _fake_buf(device):
    buf = object.__new__(_kernels.Buf)
    buf.device = device
    buf.cuda_index = 0 if device == _kernels.CUDA else None
    return buf


class _FakeC:
    """Stands in for accord._C in check_cuda_available: what the build reports."""

    def __init__(self, cuda, devices):
        self._info = {"cuda": cuda, "cuda_devices": devices}

    def build_info(self):
        return dict(self._info)

    def cuda_device_count(self):
        return self._info["cuda_devices"]


def _use_c(monkeypatch, fake):
    """Swap accord._C for check_cuda_available; its cached (built, device count) answer is
    dropped now and again after the test."""
    monkeypatch.setattr(_kernels, "_C", fake)
    _kernels._cuda_state.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_cuda_state():
    yield
    _kernels._cuda_state.cache_clear()


def test_check_cuda_available_without_cuda_build(monkeypatch):
    _use_c(monkeypatch, _FakeC(cuda=False, devices=0))
    with raises(RuntimeError, "grads", "built without CUDA"):
        _kernels.check_cuda_available(_fake_buf(_kernels.CUDA), "grads")
    _kernels.check_cuda_available(_fake_buf(_kernels.CPU), "grads")  # CPU data: fine


def test_check_cuda_available_without_gpu(monkeypatch):
    _use_c(monkeypatch, _FakeC(cuda=True, devices=0))
    with raises(RuntimeError, "grads", "no usable GPU"):
        _kernels.check_cuda_available(_fake_buf(_kernels.CUDA), "grads")
    _use_c(monkeypatch, _FakeC(cuda=True, devices=2))
    _kernels.check_cuda_available(_fake_buf(_kernels.CUDA), "grads")


def _fake_cuda_tensor(n=8):
    """A duck-typed 'CUDA tensor' (mpi4py-style fake device array): a torch-module type with the
    attributes Buf reads; its data pointer is never dereferenced because validation stops it."""
    torch = pytest.importorskip("torch")
    cls = type("FakeCudaTensor", (), {"__module__": "torch.fake"})
    t = cls()
    t.dtype, t.shape = torch.float32, torch.Size([n])
    t.device = types.SimpleNamespace(type="cuda", index=0)
    t.is_cpu, t.is_cuda = False, True
    t.get_device = lambda: 0
    t.is_contiguous = lambda: True
    t.data_ptr = lambda: 0xDEAD0000
    t.numel = lambda: n
    return t


def test_cuda_data_rejected_before_any_kernel(monkeypatch):
    """Through the real validation path: the kernel (which would dereference the fake device
    pointer) must never be reached, whatever this build is."""
    fake_a, fake_b = _fake_cuda_tensor(), _fake_cuda_tensor()
    _use_c(monkeypatch, _FakeC(cuda=True, devices=0))
    with raises(RuntimeError, "x", "no usable GPU"):
        _op_impl.axpby(fake_a, fake_b, 1.0, 1.0, None, None)


def test_cuda_tensor_without_cuda_build(monkeypatch):
    """A CUDA tensor handed to an accord built without CUDA kernels: every op refuses it with an
    error naming the argument and the fix, before any kernel runs."""
    fake_a, fake_b = _fake_cuda_tensor(), _fake_cuda_tensor()
    off = np.array([0, 8])
    _use_c(monkeypatch, _FakeC(cuda=False, devices=0))
    with raises(RuntimeError, "a", "CUDA tensor", "without CUDA", "ACCORD_WITH_CUDA"):
        _op_impl.segment_dots(fake_a, fake_b, off)
    with raises(RuntimeError, "a", "CUDA tensor", "without CUDA"):
        _op_impl.adasum_combine(fake_a, fake_b, off, None, None, (1, 1))
    with raises(RuntimeError, "vectors", "CUDA tensor", "without CUDA"):
        _op_impl.gram(_fake_2d(), off, None)
    with raises(RuntimeError, "x", "CUDA tensor", "without CUDA"):
        _op_impl.axpby(fake_a, fake_b, 1.0, 1.0, None, None)


def _fake_2d():
    import torch
    t = _fake_cuda_tensor()
    t.shape = torch.Size([1, 8])
    return t


@pytest.mark.cuda
def test_cuda_device_mismatches():
    import torch
    a, c = torch.ones(8, device="cuda"), torch.ones(8)
    with raises(ValueError, "b", "cuda", "cpu"):
        ops.segment_dots(a, c, [0, 8])
    with raises(ValueError, "offsets", "CPU"):
        ops.segment_dots(a, a, torch.tensor([0, 8], device="cuda"))
    with raises(ValueError, "out", "cpu"):
        ops.adasum_combine(a, a, [0, 8], out=c)
