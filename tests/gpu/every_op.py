"""Every accord op once on small CUDA tensors (ragged tiles, an empty segment), every dtype, for
compute-sanitizer (tests/gpu/run_gpu_tests.sh): memcheck reports any out-of-bounds or
misaligned access the kernels make. Exits non-zero if a result is non-finite."""
import numpy as np
import torch

from accord import ops

dev = torch.device("cuda")
g = torch.Generator().manual_seed(0)
n, k = 2 * 8192 + 33, 3
off = np.array([0, 5, 5, 9000, n], np.int64)
L = len(off) - 1
for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
    a = torch.randn(n, generator=g).to(dev, dtype)
    b = torch.randn(n, generator=g).to(dev, dtype)
    v = torch.randn(k, n, generator=g).to(dev, dtype)
    d = ops.segment_dots(a, b, off)
    c = ops.adasum_combine(a, b, off, weights=(3, 1))
    c2 = ops.adasum_combine(a, b, off, out=torch.empty_like(a), dots=d)
    gm, r = ops.gram(v, off, a)
    x = ops.solve_spd(gm, r, ridge=1e-3)
    w = ops.weighted_sum(v, x, off)
    y = ops.axpby(a, b, 0.5, torch.full((L,), 2.0, dtype=torch.float64, device=dev), off)
    ops.pull_(y, a, 0.25)
    torch.cuda.synchronize()
    for name, t in (("dots", d), ("combine", c), ("combine dots=", c2), ("gram", gm),
                    ("solve", x), ("weighted_sum", w), ("axpby", y)):
        assert bool(torch.isfinite(t).all()), f"{name} {dtype}: non-finite"
print("every_op: ok")
