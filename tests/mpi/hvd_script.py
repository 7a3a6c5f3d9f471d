"""A Horovod PyTorch training script whose only change is its import line."""
import argparse

import torch
import torch.nn.functional as F

import accord as hvd  # was: import horovod.torch as hvd

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--fp16-allreduce", action="store_true")
parser.add_argument("--use-adasum", action="store_true")
parser.add_argument("--batches-per-allreduce", type=int, default=2)
args = parser.parse_args()

hvd.init()
torch.manual_seed(42)
torch.set_num_threads(1)

# synthetic data: a fixed linear teacher, every rank its own shard
g = torch.Generator().manual_seed(7)
teacher = torch.randn(20, 4, generator=g)
x_all = torch.randn(2048, 20, generator=g)
y_all = (x_all @ teacher).argmax(1)
x_train, y_train = x_all[hvd.rank()::hvd.size()], y_all[hvd.rank()::hvd.size()]

model = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
lr_scaler = hvd.size() if not args.use_adasum else 1
optimizer = torch.optim.SGD(model.parameters(), lr=0.01 * lr_scaler, momentum=0.5)

hvd.broadcast_parameters(model.state_dict(), root_rank=0)
hvd.broadcast_optimizer_state(optimizer, root_rank=0)

compression = hvd.Compression.fp16 if args.fp16_allreduce else hvd.Compression.none
optimizer = hvd.DistributedOptimizer(optimizer,
                                     named_parameters=model.named_parameters(),
                                     compression=compression,
                                     op=hvd.Adasum if args.use_adasum else hvd.Average,
                                     gradient_predivide_factor=1.0,
                                     backward_passes_per_step=args.batches_per_allreduce)


def metric_average(val, name):
    tensor = torch.tensor(val)
    avg_tensor = hvd.allreduce(tensor, name=name)
    return avg_tensor.item()


first_loss = None
for epoch in range(1, args.epochs + 1):
    model.train()
    perm = torch.randperm(len(y_train))
    for i in range(0, len(perm) - args.batch_size + 1, args.batch_size):
        idx = perm[i:i + args.batch_size]
        if (i // args.batch_size) % args.batches_per_allreduce == 0:
            optimizer.zero_grad()
        loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
        loss.backward()
        if (i // args.batch_size) % args.batches_per_allreduce == args.batches_per_allreduce - 1:
            optimizer.step()
        if first_loss is None:
            first_loss = metric_average(loss.item(), "first_loss")
    model.eval()
    with torch.no_grad():
        test_loss = F.cross_entropy(model(x_all), y_all).item()
        test_acc = (model(x_all).argmax(1) == y_all).float().mean().item()
    test_loss = metric_average(test_loss, "avg_loss")
    test_acc = metric_average(test_acc, "avg_accuracy")
    summary = hvd.allgather_object({"rank": hvd.rank(), "acc": test_acc})
    if hvd.rank() == 0:
        print(f"epoch {epoch}: loss {test_loss:.4f} accuracy {test_acc:.3f} "
              f"ranks {[s['rank'] for s in summary]}", flush=True)

params = hvd.allgather(torch.cat([p.detach().reshape(-1) for p in model.parameters()])[None])
assert all(torch.equal(params[0], params[k]) for k in range(hvd.size())), "models diverged"
assert test_loss < first_loss, f"did not learn: {first_loss} -> {test_loss}"
if hvd.rank() == 0:
    print(f"HOROVOD SCRIPT OK size={hvd.size()} first_loss={first_loss:.4f} "
          f"final_loss={test_loss:.4f}", flush=True)
