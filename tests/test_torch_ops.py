"""torch.ops.accord.*: torch.library.opcheck of every custom op (schema, fake/meta
implementation, autograd registration, AOT dispatch with dynamic shapes), and accord.ops under
torch.compile(fullgraph=True).

The compile test uses backend="aot_eager": it traces through the fake implementations and
functionalizes the mutating *_out ops exactly as inductor would, without inductor's C++ codegen
(~35 s on a 2-core machine for these few ops)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import accord._torch_ops  # noqa: E402,F401  (registers torch.ops.accord.*)
from accord import ops  # noqa: E402
from oracle import Case, case_params  # noqa: E402

DEVICES = [pytest.param("cpu"), pytest.param("cuda", marks=pytest.mark.cuda)]
DTYPES = [torch.float32, torch.float64]


def _op_samples(dtype, device):
    """(name, op, args) for every torch.ops.accord op; offsets is a CPU int64 tensor."""
    T = torch.ops.accord
    g = torch.Generator().manual_seed(0)

    def randn(*shape, dt=dtype):
        return torch.randn(*shape, generator=g, dtype=dt).to(device)

    off = torch.tensor([0, 4, 4, 11], dtype=torch.int64)  # an empty segment, odd lengths
    n, L, k = 11, 3, 3
    a, b = randn(n), randn(n)
    dots = T.segment_dots(a, b, off)
    alpha, beta = randn(L, dt=torch.float64), randn(L, dt=torch.float64)
    v, w = randn(k, n), randn(L, k, dt=torch.float64)
    gm = randn(L, k, k, dt=torch.float64)
    gm = gm @ gm.transpose(1, 2)
    rhs = randn(L, k, dt=torch.float64)
    return [
        ("segment_dots", T.segment_dots, (a, b, off)),
        ("adasum_combine", T.adasum_combine, (a, b, off, None, [1.0, 1.0])),
        ("adasum_combine-dots-weights", T.adasum_combine, (a, b, off, dots, [3.0, 1.0])),
        ("adasum_combine_out", T.adasum_combine_out,
         (a, b, off, None, [1.0, 2.0], torch.empty_like(a))),
        ("gram", T.gram, (v, off, None)),
        ("gram-rhs", T.gram, (v, off, randn(n))),
        ("solve_spd", T.solve_spd, (gm, rhs, 0.0)),
        ("solve_spd-ridge", T.solve_spd, (gm, rhs, 0.25)),
        ("weighted_sum", T.weighted_sum, (v, w, off)),
        ("weighted_sum_out", T.weighted_sum_out, (v, w, off, torch.empty(n, dtype=dtype,
                                                                           device=device))),
        ("axpby", T.axpby, (a, b, alpha, beta, off)),
        ("axpby_out", T.axpby_out, (a, b, alpha, beta, off, torch.empty_like(a))),
    ]


def test_every_op_is_covered():
    ops_registered = {n for n in dir(torch.ops.accord)
                      if isinstance(getattr(torch.ops.accord, n), torch._ops.OpOverloadPacket)}
    sampled = {name.split("-")[0] for name, _, _ in _op_samples(torch.float32, "cpu")}
    assert ops_registered == sampled


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("index", range(12))
def test_opcheck(index, dtype, device):
    name, op, args = _op_samples(dtype, device)[index]
    if name.startswith("solve_spd") and dtype != torch.float64:
        pytest.skip("solve_spd takes float64 (gram's output) only")
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_with_requires_grad(device):
    """Inputs that require grad: the ops are not differentiable, but opcheck's autograd
    registration test must still pass (no silently wrong gradients)."""
    for name, op, args in _op_samples(torch.float32, device):
        if name.endswith("_out") or name.startswith("solve_spd"):
            continue
        args = tuple(x.detach().requires_grad_() if isinstance(x, torch.Tensor)
                     and x.is_floating_point() else x for x in args)
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_autograd_registration"))


def _step(a, b, offsets, buf):
    d = ops.segment_dots(a, b, offsets)
    c = ops.adasum_combine(a, b, offsets, dots=d, weights=(2, 1))
    ops.adasum_combine(a, c, offsets, out=buf)
    return ops.axpby(c, buf, 0.5, -1.5) * 2, d


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("offsets_kind", ["tensor", "numpy"])
def test_torch_compile_fullgraph(device, offsets_kind):
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(1)
    a = torch.randn(1000, generator=g).to(device)
    b = torch.randn(1000, generator=g).to(device)
    off = np.array([0, 10, 10, 999, 1000])
    off = torch.from_numpy(off) if offsets_kind == "tensor" else off
    buf_e, buf_c = torch.empty_like(a), torch.empty_like(a)
    want, want_d = _step(a, b, off, buf_e)
    compiled = torch.compile(_step, fullgraph=True, backend="aot_eager")
    got, got_d = compiled(a, b, off, buf_c)
    assert torch.equal(got, want) and torch.equal(got_d, want_d)
    assert torch.equal(buf_c, buf_e)  # the out= mutation survives functionalization
    # a second call with new data reuses the graph and stays right
    a2 = a.flip(0).contiguous()
    want2, _ = _step(a2, b, off, buf_e)
    got2, _ = compiled(a2, b, off, buf_c)
    assert torch.equal(got2, want2)


@pytest.mark.parametrize("case", case_params([Case("torch", d, dev) for dev in ("cpu", "cuda")
                                              for d in ("float16", "bfloat16")]))
def test_torch_ops_low_precision_fake(case):
    """The fake (meta) implementations give the real output's dtype/shape for 16-bit inputs."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    a = case.array(np.linspace(-1, 1, 11))
    off = torch.tensor([0, 4, 11])
    real = [ops.segment_dots(a, a, off), ops.adasum_combine(a, a, off),
            ops.axpby(a, a, 1.0, 2.0, off), ops.weighted_sum(a.reshape(1, 11), [[1.0], [2.0]], off)]
    with FakeTensorMode() as mode:
        fa = mode.from_tensor(a)
        foff = mode.from_tensor(off)
        fake = [torch.ops.accord.segment_dots(fa, fa, foff),
                torch.ops.accord.adasum_combine(fa, fa, foff, None, [1.0, 1.0]),
                torch.ops.accord.axpby(fa, fa, torch.ones(2, dtype=torch.float64, device=a.device),
                                       torch.ones(2, dtype=torch.float64, device=a.device), foff),
                torch.ops.accord.weighted_sum(fa.reshape(1, 11),
                                              torch.ones(2, 1, dtype=torch.float64,
                                                         device=a.device), foff)]
    for r, f in zip(real, fake):
        assert (r.dtype, tuple(r.shape), r.device) == (f.dtype, tuple(f.shape), f.device)


# ---------------------------------------------------------------------------------------------
# Eager fast path: plain eager calls skip torch.ops dispatch, everything traced keeps it.


class _Dispatched(Exception):
    pass


def _forbid_dispatch(monkeypatch):
    """Make every torch.ops.accord wrapper in accord._torch_ops raise when called."""
    def boom(*args, **kwargs):
        raise _Dispatched
    for name in ("segment_dots", "adasum_combine", "adasum_combine_out", "gram", "solve_spd",
                 "weighted_sum", "weighted_sum_out", "axpby", "axpby_out"):
        monkeypatch.setattr(accord._torch_ops, name, boom)


def _every_public_call():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(11, generator=g), torch.randn(11, generator=g)
    off = np.array([0, 4, 4, 11], np.int64)
    v = torch.randn(3, 11, generator=g)
    gm, rhs = ops.gram(v, off, a)
    w = torch.rand(3, 3, dtype=torch.float64, generator=g)
    out = torch.empty(11)
    return [lambda: ops.segment_dots(a, b, off),
            lambda: ops.segment_dots(a, b, torch.from_numpy(off)),
            lambda: ops.adasum_combine(a, b, off),
            lambda: ops.adasum_combine(a, b, off, out=out, dots=ops.segment_dots(a, b, off)),
            lambda: ops.gram(v, off, a),
            lambda: ops.solve_spd(gm, rhs),
            lambda: ops.weighted_sum(v, w, off, out=out),
            lambda: ops.axpby(a, b, 0.5, 2.0, off),
            lambda: ops.pull_(out, a, 0.25)]


def test_eager_calls_skip_dispatch(monkeypatch):
    def results(calls):  # cloned: some calls write into a shared out
        return [tuple(x.clone() for x in (r if isinstance(r, tuple) else (r,)))
                for r in (call() for call in calls)]
    with monkeypatch.context() as m:  # the reference goes through torch.ops.accord
        m.setattr(ops, "_eager", lambda *tensors: False)
        expected = results(_every_public_call())
    _forbid_dispatch(monkeypatch)
    got = results(_every_public_call())
    for g, e in zip(got, expected):
        assert all(torch.equal(x, y) for x, y in zip(g, e))


def test_traced_calls_keep_dispatch(monkeypatch):
    from torch._subclasses.fake_tensor import FakeTensorMode
    _forbid_dispatch(monkeypatch)
    a = torch.randn(8)
    with pytest.raises(_Dispatched):  # requires_grad with grad mode on: the custom op decides
        ops.segment_dots(a.clone().requires_grad_(), a, [0, 8])
    with FakeTensorMode() as mode:  # a dispatch mode is active, the tensors are fake
        fa = mode.from_tensor(a)
        with pytest.raises(_Dispatched):
            ops.segment_dots(fa, fa, torch.tensor([0, 8]))
    with pytest.raises(_Dispatched):  # functorch transforms see the op through dispatch
        torch.func.vmap(lambda x: ops.segment_dots(x, x, torch.tensor([0, 8])))(a[None])


def test_requires_grad_behaviour():
    """Grad mode on + an input that requires grad: the custom op's behaviour (an output with a
    grad_fn whose backward raises). Grad mode off: the fast path, no graph."""
    a, b = torch.randn(8, requires_grad=True), torch.randn(8)
    d = ops.segment_dots(a, b, [0, 8])
    assert d.requires_grad and d.grad_fn is not None
    with pytest.raises(RuntimeError, match="no autograd formula"):
        d.sum().backward()
    with torch.no_grad():
        d2 = ops.segment_dots(a, b, [0, 8])
    assert not d2.requires_grad and torch.equal(d.detach(), d2)


def test_segment_dots_out():
    a, b = torch.randn(11), torch.randn(11)
    off = np.array([0, 4, 4, 11], np.int64)
    out = torch.empty(3, 3, dtype=torch.float64)
    assert ops.segment_dots(a, b, off, out=out) is out
    assert torch.equal(out, ops.segment_dots(a, b, off))
    with pytest.raises(ValueError, match="float64 with shape"):
        ops.segment_dots(a, b, off, out=torch.empty(3, 3))
    on = np.empty((3, 3))
    assert ops.segment_dots(a.numpy(), b.numpy(), off, out=on) is on
    assert np.array_equal(on, out.numpy())


@pytest.mark.cuda
def test_cuda_graph_capture_dots_combine():
    """segment_dots(out=) + adasum_combine(out=, dots=) captured in a CUDA graph: replays
    follow new inputs and give the eager results bit for bit."""
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(3)
    n = 3 * 8192 + 77  # several tiles, a ragged one
    off = np.array([0, 100, 100, 9000, n], np.int64)
    a = torch.randn(n, generator=g).to(dev)
    b = torch.randn(n, generator=g).to(dev)
    dots = torch.empty(4, 3, dtype=torch.float64, device=dev)
    out = torch.empty_like(a)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on the capturing stream: plan, workspace
        ops.segment_dots(a, b, off, out=dots)
        ops.adasum_combine(a, b, off, out=out, dots=dots)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        ops.segment_dots(a, b, off, out=dots)
        ops.adasum_combine(a, b, off, out=out, dots=dots)
    for _ in range(3):
        a.copy_(torch.randn(n, generator=g).to(dev))
        b.copy_(torch.randn(n, generator=g).to(dev))
        graph.replay()
        torch.cuda.synchronize()
        ref_dots = ops.segment_dots(a, b, off)
        assert torch.equal(dots, ref_dots)
        assert torch.equal(out, ops.adasum_combine(a, b, off, dots=ref_dots))


@pytest.mark.cuda
def test_ops_run_on_the_callers_current_stream():
    """A side stream is busy (a long sleep kernel) and then writes the inputs; ops called under
    that stream must queue behind the write. Had they launched on another stream (the default
    one does not wait for torch's non-blocking side streams) they would read the old inputs."""
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(5)
    n = 5 * 8192 + 3
    off = np.array([0, 7, 20000, n], np.int64)
    new_a, new_b = (torch.randn(n, generator=g).to(dev) for _ in range(2))
    a, b = torch.zeros(n, device=dev), torch.zeros(n, device=dev)
    v = torch.zeros(2, n, device=dev)
    ops.segment_dots(a, b, off)  # plan and workspace exist before the timed part
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU time on this stream only
        a.copy_(new_a)
        b.copy_(new_b)
        v[0].copy_(new_a)
        v[1].copy_(new_b)
        dots = ops.segment_dots(a, b, off)
        comb = ops.adasum_combine(a, b, off, dots=dots)
        gm = ops.gram(v, off)
        ws = ops.weighted_sum(v, torch.full((3, 2), 0.5, dtype=torch.float64, device=dev), off)
        ax = ops.axpby(a, b, 2.0, 1.0, off)
    side.synchronize()
    a64, b64 = new_a.cpu().double(), new_b.cpu().double()
    ref = ops.segment_dots(a64, b64, off)
    tol = dict(rtol=1e-10, atol=1e-10 * float(ref.abs().max()))
    assert torch.allclose(dots.cpu(), ref, **tol)
    assert torch.allclose(gm[:, 0, 1].cpu(), ref[:, 0], **tol)
    close32 = dict(rtol=1e-5, atol=1e-5)
    assert torch.allclose(comb.cpu(), ops.adasum_combine(new_a.cpu(), new_b.cpu(), off,
                                                         dots=dots.cpu()), **close32)
    assert torch.allclose(ws.cpu(), (0.5 * (a64 + b64)).float(), **close32)
    assert torch.allclose(ax.cpu(), (2 * a64 + b64).float(), **close32)


@pytest.mark.cuda
def test_ops_on_second_gpu_leave_current_device():
    """Buffers on cuda:1 with cuda:0 current: the kernels run on cuda:1, on its current stream,
    and the current device stays cuda:0."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    torch.cuda.set_device(0)
    a = torch.randn(5000, device="cuda:1")
    b = torch.randn(5000, device="cuda:1")
    off = np.array([0, 1000, 5000], np.int64)
    d = ops.segment_dots(a, b, off)
    out = ops.adasum_combine(a, b, off, dots=d)
    assert d.device == out.device == torch.device("cuda:1")
    assert torch.cuda.current_device() == 0
    ref = ops.segment_dots(a.cpu(), b.cpu(), off)
    assert torch.allclose(d.cpu(), ref, rtol=1e-10)


def test_layout_cache_survives_caller_mutating_offsets():
    a, b = torch.randn(12), torch.randn(12)
    off = np.array([0, 5, 12], np.int64)
    first = ops.segment_dots(a, b, off).clone()
    off[1] = 7  # the caller reuses its array for another layout
    second = ops.segment_dots(a, b, off)
    assert torch.equal(second, ops.segment_dots(a, b, np.array([0, 7, 12], np.int64)))
    assert torch.equal(ops.segment_dots(a, b, np.array([0, 5, 12], np.int64)), first)
