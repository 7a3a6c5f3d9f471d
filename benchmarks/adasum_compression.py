"""Convergence of the digits MLP with Adasum, with and without 16-bit exchanges.

    mpirun -np 4 --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 \\
        python benchmarks/adasum_compression.py --steps 300

Every run starts from the same weights and draws the same batches; only ``compression``
differs. Prints, per compression: final training loss (mean over ranks of the last 20 steps),
test accuracy, and the largest parameter difference from the uncompressed run.
"""
import argparse

import torch
import torch.nn.functional as F

import accord
from accord.demo import digits_shards


def train(compression, steps, lr, skew):
    torch.manual_seed(0)
    (x, y), _, (xt, yt) = digits_shards(accord.rank(), accord.size(), seed=0, skew=skew)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 10))
    opt = accord.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9),
                                      named_parameters=model.named_parameters(),
                                      op=accord.Adasum, compression=compression)
    accord.broadcast_parameters(model.state_dict(), root_rank=0)
    g = torch.Generator().manual_seed(1000 + accord.rank())
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(y), (32,), generator=g)
        opt.zero_grad()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    tail = accord.allreduce(torch.tensor(sum(losses[-20:]) / 20), name="loss").item()
    with torch.no_grad():
        acc = (model(xt).argmax(1) == yt).float().mean().item()
    opt.close()
    return tail, acc, torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--skew", action="store_true", help="label-sorted shards")
    args = ap.parse_args()
    accord.init()
    base = None
    for name in ("none", "fp16", "bf16"):
        loss, acc, params = train(getattr(accord.Compression, name), args.steps, args.lr,
                                  args.skew)
        base = params if base is None else base
        if accord.rank() == 0:
            print(f"{accord.size()} ranks, {args.steps} steps, skew={args.skew}, "
                  f"compression={name:5s}: final loss {loss:.4f}, test accuracy {acc:.4f}, "
                  f"max |param - uncompressed| {float((params - base).abs().max()):.2e}",
                  flush=True)
    accord.shutdown()


if __name__ == "__main__":
    main()
