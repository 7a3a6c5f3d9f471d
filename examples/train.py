"""Data-parallel training with Adasum: a digits MLP on every rank, updates combined by accord.

    mpirun -np 2 --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 python examples/train.py
    torchrun --standalone --nproc_per_node=2 examples/train.py
"""
import torch
import torch.nn.functional as F

import accord
from accord.demo import digits_shards

accord.init()  # mpirun -> MPI; torchrun -> torch.distributed (gloo), set up here
torch.manual_seed(0)
(x, y), _, (x_test, y_test) = digits_shards(accord.rank(), accord.size(), seed=0)

model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
optimizer = accord.DistributedOptimizer(
    torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
    named_parameters=model.named_parameters(),
    op=accord.Adasum,                       # or accord.Average, accord.Sum
    compression=accord.Compression.fp16)    # 16-bit exchanges, float32 math
accord.broadcast_parameters(model.state_dict(), root_rank=0)
accord.broadcast_optimizer_state(optimizer, root_rank=0)

for step in range(200):
    batch = torch.randint(0, len(y), (32,))
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x[batch]), y[batch])
    loss.backward()
    optimizer.step()
    if step % 50 == 49:
        avg = accord.allreduce(loss.detach(), name="loss")  # Average over ranks
        if accord.rank() == 0:
            print(f"step {step + 1}: loss {avg.item():.3f}")

accuracy = (model(x_test).argmax(1) == y_test).float().mean()
accuracy = accord.allreduce(accuracy, name="accuracy")
if accord.rank() == 0:
    print(f"test accuracy {accuracy.item():.3f} on {accord.size()} ranks")
accord.shutdown()
