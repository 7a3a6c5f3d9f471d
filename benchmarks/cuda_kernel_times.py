#!/usr/bin/env python
"""Device time of the CUDA kernels that decide Adasum's and the subspace solve's cost, for
comparing builds of accord side by side (e.g. kernel variants built into separate trees):

    PYTHONPATH=<tree>/python python benchmarks/cuda_kernel_times.py LABEL

One line per measurement, prefixed with LABEL: segment_dots(out=), adasum_combine(out=, dots=)
and both, at 64 MiB per buffer in 100 random segments, for float32, float16 and bfloat16, with
segment_dots' bytes read as a share of the copy bandwidth measured in the same run; then
solve_spd for k = 4, 8, 16, 32 (100 random SPD systems, condition number up to e^7). Device
time: CUDA events around 20 back-to-back calls (5 for solve_spd) / calls, median of 7 (5).
benchmarks/kernels.py is the full benchmark (bounds, torch baselines, end-to-end times).
"""
import sys

import numpy as np
import torch

from accord import ops


def device_us(fn, batch=20, reps=7):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(batch):
            fn()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end) * 1e3 / batch)
    return float(np.median(out))


def main(label):
    if not torch.cuda.is_available():
        print("cuda_kernel_times.py: torch sees no GPU", file=sys.stderr)
        return 2
    dev = torch.device("cuda")
    nbytes = 64 << 20
    src = torch.ones(2 * nbytes // 4, device=dev)
    dst = torch.empty_like(src)
    copy_bw = 2 * src.numel() * 4 / (device_us(lambda: dst.copy_(src)) * 1e-6)
    rng = np.random.default_rng(1234)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        n = nbytes // torch.empty((), dtype=dtype).element_size()
        cuts = np.sort(rng.choice(n - 1, size=99, replace=False) + 1)
        off = np.concatenate([[0], cuts, [n]]).astype(np.int64)
        a = torch.randn(n, device=dev).to(dtype)
        b = torch.randn(n, device=dev).to(dtype)
        out, d = torch.empty_like(a), ops.segment_dots(a, b, off)
        td = device_us(lambda: ops.segment_dots(a, b, off, out=d))
        tc = device_us(lambda: ops.adasum_combine(a, b, off, out=out, dots=d))
        tf = device_us(lambda: (ops.segment_dots(a, b, off, out=d),
                                ops.adasum_combine(a, b, off, out=out, dots=d)))
        print(f"{label:10s} {str(dtype)[6:]:9s} dots {td:7.1f} us "
              f"({2 * nbytes / (td * 1e-6) / copy_bw * 100:4.0f}% copy)  combine {tc:7.1f}  "
              f"fused {tf:7.1f}  copy_bw {copy_bw / 1e9:.0f} GB/s")
    for k in (4, 8, 16, 32):
        L = 100
        q = np.linalg.qr(rng.standard_normal((L, k, k)))[0]
        lam = np.exp(rng.uniform(0, 7, (L, k)))
        g = np.einsum("lij,lj,lkj->lik", q, lam, q)
        g = (g + g.transpose(0, 2, 1)) / 2
        gt = torch.from_numpy(g).to(dev)
        rt = torch.from_numpy(rng.standard_normal((L, k))).to(dev)
        ts = device_us(lambda: ops.solve_spd(gt, rt), batch=5, reps=5)
        print(f"{label:10s} solve_spd k={k:3d} x100: {ts:8.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "accord"))
