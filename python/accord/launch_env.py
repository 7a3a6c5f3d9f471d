"""What launched this process, read from the environment, and how ``accord.init()`` joins it.

``accord.init()`` with no communicator decides in this order:

1. ``backend=`` given: ``"mpi"`` uses MPI; anything else (``"gloo"``, ``"nccl"``,
   ``"cpu:gloo,cuda:nccl"``) initialises torch.distributed with that backend from the env://
   variables, unless torch.distributed is already initialised (then its group is used as is).
2. torch.distributed already initialised by the program: its default group.
3. torchrun or another env:// launcher (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
   ``MASTER_PORT`` all set): ``torch.distributed.init_process_group`` with ``gloo``, or with
   ``cpu:gloo,cuda:nccl`` when CUDA is available and ``LOCAL_RANK`` names a visible GPU (that
   GPU becomes the current device), so CPU tensors go through gloo and CUDA tensors through
   NCCL.
4. Otherwise MPI's ``COMM_WORLD`` (a private duplicate): under mpirun/srun (Open MPI's
   ``OMPI_COMM_WORLD_SIZE``, PMI's ``PMI_SIZE``, PMIx's ``PMIX_RANK``, MVAPICH's
   ``MV2_COMM_WORLD_SIZE``), or a single process started by hand.

Whatever was chosen, a launcher that announced several processes (``WORLD_SIZE``,
``OMPI_COMM_WORLD_SIZE``, ``PMI_SIZE``, ``MV2_COMM_WORLD_SIZE``) must get that many ranks: if the
communicator has another size, or the rendezvous cannot complete within ``timeout`` seconds
(``ACCORD_INIT_TIMEOUT``, default 300), ``init`` raises RuntimeError naming the variables it
found and what to do, instead of running N independent single-process jobs.
"""
from __future__ import annotations

import os
import sys

__all__ = ["LaunchInfo", "detect", "init_torch_distributed", "check_size", "init_timeout"]

# Variables that announce a torch env:// rendezvous, an MPI launch, and the world size.
TORCH_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")
MPI_VARS = ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_SIZE", "PMI_RANK", "PMIX_RANK",
            "MV2_COMM_WORLD_SIZE")
_SIZE_VARS = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
_DEFAULT_TIMEOUT = 300.0


class LaunchInfo:
    """The launcher-related variables of the environment and what they imply."""

    def __init__(self, env=None):
        env = os.environ if env is None else env
        self.vars = {k: env[k] for k in TORCH_VARS + MPI_VARS if k in env}
        self.torch_env = all(k in env for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                "MASTER_PORT"))
        self.mpi_env = any(k in env for k in MPI_VARS)

    def expected_sizes(self) -> dict:
        """{variable: announced world size} for every size variable that parses as an int."""
        out = {}
        for k in _SIZE_VARS:
            try:
                out[k] = int(self.vars[k])
            except (KeyError, ValueError):
                pass
        return out

    def describe(self) -> str:
        if not self.vars:
            return "no launcher variables"
        return ", ".join(f"{k}={v}" for k, v in self.vars.items())


def detect(env=None) -> LaunchInfo:
    return LaunchInfo(env)


def init_timeout(timeout: float | None) -> float:
    """``timeout`` or ``ACCORD_INIT_TIMEOUT`` (seconds), validated."""
    if timeout is None:
        raw = os.environ.get("ACCORD_INIT_TIMEOUT")
        if raw is None:
            return _DEFAULT_TIMEOUT
        try:
            timeout = float(raw)
        except ValueError:
            raise ValueError(f"ACCORD_INIT_TIMEOUT must be a number of seconds, got {raw!r}") \
                from None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def _auto_torch_backend(torch, info: LaunchInfo) -> str:
    """gloo, or gloo + NCCL when LOCAL_RANK names a visible GPU (module doc, rule 3)."""
    if not torch.cuda.is_available():
        return "gloo"
    try:
        local = int(info.vars.get("LOCAL_RANK", ""))
    except ValueError:
        return "gloo"
    if 0 <= local < torch.cuda.device_count():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def init_torch_distributed(backend: str | None, timeout: float, info: LaunchInfo) -> str:
    """Initialise torch.distributed's default group from the env:// variables; return the
    backend used. Raises RuntimeError naming the variables when the rendezvous fails."""
    import datetime

    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError("accord.init(): this torch build has no torch.distributed; launch "
                           "with mpirun instead (accord then uses MPI)")
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
               if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"accord.init(backend={backend!r}): torch.distributed needs the env:// variables "
            f"RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; {', '.join(missing)} not set "
            f"(found {info.describe()}). Launch with torchrun, or set them, or call "
            "torch.distributed.init_process_group() yourself before accord.init()")
    chosen = backend or _auto_torch_backend(torch, info)
    if "nccl" in chosen and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    try:
        dist.init_process_group(chosen, timeout=datetime.timedelta(seconds=timeout))
    except Exception as e:  # the store or the backend could not reach the other processes
        raise RuntimeError(
            f"accord.init(): torch.distributed.init_process_group({chosen!r}) failed within "
            f"{timeout:g} s with the launcher variables {info.describe()}: "
            f"{type(e).__name__}: {e}. Check that all WORLD_SIZE processes were started and "
            "reach MASTER_ADDR:MASTER_PORT (torchrun --nproc_per_node=N script.py does both); "
            "raise the limit with accord.init(timeout=...) or ACCORD_INIT_TIMEOUT") from e
    return chosen


def check_size(size: int, transport: str, info: LaunchInfo) -> None:
    """Raise if the launcher announced another number of processes than ``size``."""
    wrong = {k: v for k, v in info.expected_sizes().items() if v != size}
    if not wrong:
        return
    if transport == "mpi":
        hint = ("mpi4py's MPI may not be the MPI of the launcher (rebuild mpi4py against it: "
                "pip install --no-binary mpi4py mpi4py), or the processes were started by "
                "torchrun, which needs no MPI: then RANK, WORLD_SIZE, MASTER_ADDR and "
                "MASTER_PORT must all be set")
        if "WORLD_SIZE" in wrong and not info.mpi_env:
            hint = ("WORLD_SIZE is set but MASTER_ADDR/MASTER_PORT/RANK are not, so there is no "
                    "torch.distributed rendezvous to join: launch with torchrun "
                    "--nproc_per_node=N, or with mpirun -np N, or unset WORLD_SIZE")
    else:
        hint = "the launcher's variables and torch.distributed's group disagree"
    raise RuntimeError(
        f"accord.init(): the environment announces {sorted(set(wrong.values()))} processes "
        f"({info.describe()}) but the {transport} communicator has {size}; refusing to run as "
        f"{size} independent process(es). {hint}")


def torch_distributed_initialized() -> bool:
    """Whether the program initialised torch.distributed (never imports torch)."""
    tdist = sys.modules.get("torch.distributed")
    return tdist is not None and tdist.is_available() and tdist.is_initialized()
