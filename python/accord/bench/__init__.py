"""accord microbenchmarks, launched like nccl-tests::

    mpirun -np 4 python -m accord.bench allreduce -b 4K -e 64M -f 2
    torchrun --nproc-per-node 2 -m accord.bench allreduce --backend gloo --quick

Subcommands:

    allreduce   raw transport allreduce vs accord Sum / Average / Adasum (and the consensus
                aggregator when available) over a size sweep, with a float64 correctness oracle
                (see accord.bench.allreduce)

Output is an nccl-tests style table (``#`` metadata lines, header, one line per size and
implementation) printed by rank 0, optionally also written as JSON (``--json PATH``).
"""
from __future__ import annotations

import sys

__all__ = ["main"]

_COMMANDS = {
    "allreduce": "raw allreduce vs accord Sum / Average / Adasum over a size sweep",
}


def _usage() -> str:
    lines = ["usage: python -m accord.bench COMMAND [options]   (COMMAND --help for its options)",
             "", "commands:"]
    lines += [f"  {name:<12}{what}" for name, what in _COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    """Entry point of ``python -m accord.bench``; ``argv`` excludes the program name."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "allreduce":
        from .allreduce import main as allreduce_main
        return allreduce_main(rest)
    print(f"accord.bench: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
    return 2
